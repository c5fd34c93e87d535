"""LangGraph's control flow: the exceptions that are how a graph pauses or hands off, never failures.

``interrupt()`` raises ``GraphInterrupt`` (``NodeInterrupt`` is its deprecated form) and ``Command(graph=PARENT)``
raises ``ParentCommand``; both are ``GraphBubbleUp``s, which LangGraph itself lets through its error handling. An
interrupt raised inside Atlas's human escalation callback must pass through the core unchanged (the run pauses and
resumes with ``Command(resume=...)``), and one raised by the user's graph must not end its session as failed. The
core knows no framework: :func:`register_control_flow` adds these types to ``supervisor.control_flow``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

__all__ = ["control_flow_types", "is_control_flow", "register_control_flow"]

#: The names in ``langgraph.errors`` that are control flow; those a LangGraph version lacks are skipped.
_NAMES = ("GraphBubbleUp", "GraphInterrupt", "NodeInterrupt", "ParentCommand")
_lock = threading.Lock()


@functools.cache
def control_flow_types() -> tuple[type[BaseException], ...]:
    """LangGraph's control-flow exception types (empty without LangGraph)."""
    try:
        from langgraph import errors
    except ImportError:  # pragma: no cover - the adapter needs LangGraph anyway
        return ()
    found = []
    for name in _NAMES:
        kind = getattr(errors, name, None)  # the class itself: NodeInterrupt warns only when raised
        if isinstance(kind, type) and issubclass(kind, BaseException):
            found.append(kind)
    return tuple(found)


def is_control_flow(exc: BaseException) -> bool:
    """Whether ``exc`` is LangGraph pausing or handing off (to pass through), not a failure."""
    return isinstance(exc, control_flow_types())


def register_control_flow(supervisor: Any) -> None:
    """Add LangGraph's control-flow types to ``supervisor.control_flow``, once: the types already there stay
    as they are, so wrapping many graphs with one supervisor adds nothing twice."""
    with _lock:
        missing = tuple(kind for kind in control_flow_types() if kind not in supervisor.control_flow)
        if missing:
            supervisor.control_flow += missing
