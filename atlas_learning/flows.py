"""Supervision logic written once, run sync or async.

Each step of the loop (probe, plan review, validation, judging, synthesis) is a generator that yields
:class:`Ask` (a model call for a role) or :class:`AskHuman` and receives an :class:`Answer`; it returns its result.
:func:`drive` and :func:`adrive` run such a flow with a caller that performs the asks. A failed call arrives as
an Answer with ``error`` set and no output, so every flow decides what a failure means (fail open, no reward, no
lesson) instead of crashing the user's run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["Ask", "AskHuman", "Answer", "Flow", "drive", "adrive"]

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
class Answer:
    """What came back: the text and validated output, or ``error``, a one-line reason the call failed."""

    output: Any = None
    text: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Flow = Generator["Ask | AskHuman", Answer, T]


def drive(flow: Flow[T], perform: Callable[[Ask | AskHuman], Answer]) -> T:
    """Run a flow synchronously."""
    try:
        request = next(flow)
        while True:
            request = flow.send(perform(request))
    except StopIteration as done:
        return done.value


async def adrive(flow: Flow[T], perform: Callable[[Ask | AskHuman], Awaitable[Answer]]) -> T:
    """Run a flow asynchronously."""
    try:
        request = next(flow)
        while True:
            request = flow.send(await perform(request))
    except StopIteration as done:
        return done.value
