"""Per-call session options that reach :meth:`Supervisor.begin` from any integration.

An integration that cannot carry extra arguments through the user's own call (a decorated class's ``run``, a
framework entry point with a fixed signature) still lets the caller say which task family, learning key or
metadata the next sessions belong to::

    with session_options(task_family="refunds", metadata={"ticket": 42}):
        agent.run("Refund order 1234")

Options nest: an inner block adds to (and overrides) the outer one. They follow ``contextvars`` rules, so they
reach threads and asyncio tasks started inside the block by frameworks that copy the context (LangGraph,
LangChain and the Agents SDK do). Explicit arguments to ``begin`` win over these.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SessionOptions", "current_session_options", "session_options"]


@dataclass(frozen=True)
class SessionOptions:
    """What the caller said about the sessions begun inside a :func:`session_options` block."""

    task_family: str | None = None
    learning_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


_NONE = SessionOptions()
_CURRENT: ContextVar[SessionOptions | None] = ContextVar("atlas_session_options", default=None)


def current_session_options() -> SessionOptions:
    """The options in force here (empty outside any block)."""
    return _CURRENT.get() or _NONE


@contextmanager
def session_options(*, task_family: str | None = None, learning_key: str | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Iterator[SessionOptions]:
    """Sessions begun inside the block get this task family, learning key and metadata (unless the call that
    begins them passes its own)."""
    outer = current_session_options()
    options = SessionOptions(task_family=task_family or outer.task_family, learning_key=learning_key or outer.learning_key,
                             metadata={**outer.metadata, **(metadata or {})})
    token = _CURRENT.set(options)
    try:
        yield options
    finally:
        _CURRENT.reset(token)
