"""Plugin tests use the scripted supervisor fixtures shared with the core tests (tests/support.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from atlas_learning.store import SessionRecord
from atlas_learning.supervisor import SupervisedRun, Supervisor
from tests.support import make_supervisor, record_begun  # noqa: F401 - the fixture


class BeginSpy:
    """Every session a supervisor begins, as an adapter asked for it: ``begin`` and ``abegin`` still do their
    work, and the SupervisedRun they return is kept in :attr:`runs`."""

    def __init__(self, supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
        self.supervisor = supervisor
        self.runs: list[SupervisedRun] = record_begun(supervisor, monkeypatch.setattr)

    def identities(self) -> list[tuple[str, str | None]]:
        """(learning key, task family) of each session begun, in order; each checked against its stored row (the
        stored family too, once the store records one)."""
        found = []
        self.supervisor.drain()  # sessions finish in the background
        for run in self.runs:
            stored = self.supervisor.store.get(SessionRecord, run.session_id)
            assert stored is not None and stored.learning_key == run.learning_key
            if getattr(stored, "task_family", None) is not None:
                assert stored.task_family == run.task_family
            found.append((run.learning_key, run.task_family))
        return found

    def metadata(self, index: int) -> dict[str, Any]:
        """The stored metadata of the index-th session begun."""
        stored = self.supervisor.store.get(SessionRecord, self.runs[index].session_id)
        assert stored is not None
        return dict(stored.session_metadata or {})


@pytest.fixture
def spy_begin(monkeypatch: pytest.MonkeyPatch) -> Callable[[Supervisor], BeginSpy]:
    """``spy_begin(supervisor)``: a :class:`BeginSpy` on that supervisor, undone at the end of the test."""
    return lambda supervisor: BeginSpy(supervisor, monkeypatch)
