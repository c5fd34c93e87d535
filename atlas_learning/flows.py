"""Supervision logic written once, run sync or async.

Each step of the loop (probe, plan review, validation, judging, synthesis) is a generator that yields
:class:`Ask` (a model call for a role) or :class:`AskHuman` and receives an :class:`Answer`, or yields
:class:`AskAll` (independent model calls, made concurrently) and receives their answers in order; it returns its
result.
:func:`drive` and :func:`adrive` run such a flow with a caller that performs the asks. A failed call arrives as
an Answer with ``error`` set and no output, so every flow decides what a failure means (fail open, no reward, no
lesson) instead of crashing the user's run.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["Ask", "AskAll", "AskHuman", "Answer", "Flow", "drive", "adrive"]

T = TypeVar("T")


@dataclass(frozen=True)
class Ask:
    """A model call a flow needs: which role, for what, the messages, and the structured output wanted."""

    role: str
    purpose: str
    messages: list[dict[str, str]]
    output_type: type[BaseModel] | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class AskHuman:
    """A decision only a person can make (escalation to a human)."""

    task: str
    context: dict[str, Any]


@dataclass(frozen=True)
class AskAll:
    """Model calls that do not depend on each other (a judge's samples): made at once, answered in order."""

    asks: tuple[Ask, ...]


@dataclass(frozen=True)
class Answer:
    """What came back: the text and validated output, or ``error``, a one-line reason the call failed."""

    output: Any = None
    text: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Flow = Generator["Ask | AskAll | AskHuman", Any, T]


def drive(flow: Flow[T], perform: Callable[[Ask | AskHuman], Answer]) -> T:
    """Run a flow synchronously; the calls of an :class:`AskAll` run in threads, at once."""
    try:
        request = next(flow)
        while True:
            request = flow.send(_perform_all(request.asks, perform) if isinstance(request, AskAll) else perform(request))
    except StopIteration as done:
        return done.value


async def adrive(flow: Flow[T], perform: Callable[[Ask | AskHuman], Awaitable[Answer]]) -> T:
    """Run a flow asynchronously; the calls of an :class:`AskAll` are gathered."""
    try:
        request = next(flow)
        while True:
            if isinstance(request, AskAll):
                answered: Any = list(await asyncio.gather(*(perform(ask) for ask in request.asks)))
            else:
                answered = await perform(request)
            request = flow.send(answered)
    except StopIteration as done:
        return done.value


_pool: Any = None
_pool_lock = threading.Lock()


def _perform_all(asks: tuple[Ask, ...], perform: Callable[[Ask | AskHuman], Answer]) -> list[Answer]:
    """The asks at once: all but the first on a shared thread pool (threads are started once, not per ask), the
    first in this thread. When the pool takes no work (the interpreter is exiting), they are asked in turn."""
    global _pool
    if len(asks) < 2:
        return [perform(ask) for ask in asks]
    with _pool_lock:
        if _pool is None:
            try:
                from concurrent.futures import ThreadPoolExecutor

                _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="atlas-ask")
            except RuntimeError:  # first needed during interpreter exit: no new executors then
                return [perform(ask) for ask in asks]
    futures: list[Any] = []
    for ask in asks[1:]:
        try:
            futures.append(_pool.submit(contextvars.copy_context().run, perform, ask))
        except RuntimeError:  # shut down at interpreter exit
            futures.append(None)
    first = perform(asks[0])
    return [first, *(f.result() if f is not None else perform(ask) for f, ask in zip(futures, asks[1:], strict=True))]
