"""The ``conformance`` fixture: one pattern run bare and under ``with_atlas``, in each supervision setting:
the forced ``auto`` lane and the default lanes (coach while a key warms up, then the probe's ``paired``; the
teacher accepts), on SQLite, and the default lanes on PostgreSQL too (``make_supervisor`` on the store). The
default lanes are the ones that read and write the store most; auto on PostgreSQL as well would add a third
to the suite's time for the same code paths.

The stores are shared by the folder's tests (one SQLite file, one PostgreSQL schema: migrating a fresh one
per test would take most of the suite's time); each test supervises under an agent name of its own, and its
sessions are those stored under that name."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from atlas_learning.store import SessionRecord
from atlas_learning.supervisor import Supervisor
from atlas_plugins.langgraph import with_atlas
from tests.conftest import fresh_schema
from tests.support import make_supervisor  # noqa: F401 - the fixture

from ._harness import Built, Driver, Factory, Transcript, assert_same, drive_pattern

LANES = {"auto": {"supervision": {"lane": "auto"}}, "default": {}}


@dataclass
class Outcome:
    bare: Transcript
    wrapped: Transcript
    built: Built  # the wrapped run's
    supervisor: Supervisor
    agent_name: str

    def sessions(self) -> list[SessionRecord]:
        """The test's stored sessions, once every finish is done."""
        assert self.supervisor.drain(10)
        return self.supervisor.store.rows(SessionRecord, SessionRecord.agent_name == self.agent_name, order_by=SessionRecord.started_at)


class Conformance:
    def __init__(self, make: Any, lane: str) -> None:
        self.make_supervisor = make
        self.lane = lane

    async def check(self, build: Factory, drive: Driver, api: str = "sync", *, sessions: int | None = None) -> Outcome:
        """Run the pattern bare and wrapped; assert equal transcripts, then the sessions: none left running,
        one per user-visible run (``sessions`` overrides the count, for agents used inside a parent graph),
        and one ``atlas_session`` announcement at top level per finished run streamed in ``custom`` mode."""
        bare, _ = await drive_pattern(build, drive, lambda graph, **kwargs: graph, api)
        assert not any(label == "driver failed" for label, _ in bare.steps), f"the pattern itself is broken: {bare.steps[-2]}"

        supervisor = self.make_supervisor(**LANES[self.lane])
        agent_name = f"conformance-{uuid.uuid4().hex[:12]}"
        wrapped_graphs: list[Any] = []

        def atlas(graph: Any, **kwargs: Any) -> Any:
            wrapped_graphs.append(with_atlas(graph, supervisor=supervisor, agent_name=agent_name, **kwargs))
            return wrapped_graphs[-1]

        wrapped, built = await drive_pattern(build, drive, atlas, api)
        outcome = Outcome(bare, wrapped, built, supervisor, agent_name)
        problems = []  # all of them in one failure: what the user sees, then the sessions
        try:
            assert_same(bare, wrapped)
        except AssertionError as difference:
            problems.append(str(difference))
        stored = [(s.status, s.task[:60]) for s in outcome.sessions()]
        if running := [task for status, task in stored if status == "running"]:
            problems.append(f"wrapped runs left their sessions running: {running}")
        expected = bare.runs if sessions is None else sessions
        if len(stored) != expected:
            problems.append(f"{len(stored)} sessions stored for {expected} runs: {stored}")
        if built.app in wrapped_graphs:  # the user calls the wrapped graph itself
            if any(announced != [()] for announced in wrapped.announcements):
                problems.append(f"a finished run streamed in custom mode announces its session once, at top level: "
                                f"namespaces {wrapped.announcements}")
        if problems:
            raise AssertionError("\n".join(problems))
        return outcome


@pytest.fixture(scope="session")
def shared_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('conformance') / 'atlas.db'}"


@pytest.fixture(scope="session")
def shared_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """One schema of the ``test`` database for the folder (as tests/conftest.py's ``postgres_url`` makes one per test)."""
    yield from fresh_schema(postgres_admin_url, "atlas_conformance")


SETTINGS = [pytest.param(("sqlite", "auto"), id="sqlite-auto"), pytest.param(("sqlite", "default"), id="sqlite-default"),
            pytest.param(("postgres", "default"), id="postgres-default", marks=pytest.mark.postgres)]


@pytest.fixture(params=SETTINGS)
def setting(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(store backend, lane)."""
    return request.param


@pytest.fixture
def store_url(setting: tuple[str, str], request: pytest.FixtureRequest) -> str:
    """Overrides tests/conftest.py's: the folder's shared database of the setting's backend."""
    return request.getfixturevalue(f"shared_{setting[0]}_url")


@pytest.fixture
def lane(setting: tuple[str, str]) -> str:
    return setting[1]


@pytest.fixture
def conformance(make_supervisor: Any, lane: str) -> Conformance:  # noqa: F811 - the fixture above
    return Conformance(make_supervisor, lane)

