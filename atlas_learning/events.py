"""Events a session emits as it goes, for progress views and adapters.

Subscribe a callable to an :class:`EventBus`; it receives every :class:`AtlasEvent` synchronously, in order.
A subscriber that raises is logged and skipped: a progress bar never breaks a run. Every event is also
stored as a trajectory event of its session, except ``model_call`` (a supervision call, stored as a model-call row).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .store.tables import utcnow

__all__ = ["AtlasEvent", "EventBus", "EventType", "Subscriber"]

log = logging.getLogger("atlas_learning.events")

EventType = Literal[
    "session_started",
    "lane_chosen",
    "plan_reviewed",
    "step",
    "model_call",
    "verdict",
    "retry",
    "escalated",
    "reward",
    "lesson_added",
    "lesson_refined",
    "lesson_confirmed",
    "lesson_activated",
    "lesson_retired",
    "lesson_refused",
    "supervision_budget_reached",
    "supervision_stopped",
    "retry_skipped",
    "drift_alert",
    "session_finished",
    "store_degraded",
    "span",
]


@dataclass(frozen=True)
class AtlasEvent:
    """Something that happened in a session. ``payload`` holds JSON-ready details."""

    type: EventType
    session_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)


Subscriber = Callable[[AtlasEvent], None]


class EventBus:
    """Fan-out of events to subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone listens: a publisher with nobody to tell skips making the event (the hot path)."""
        return bool(self._subscribers)

    def publish(self, event: AtlasEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a subscriber must never break a run
                log.exception("event subscriber %r failed on %s", subscriber, event.type)
