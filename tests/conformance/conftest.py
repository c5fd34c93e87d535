"""Fixtures of the conformance suite: the scripted supervisor (tests/support.py, on SQLite and PostgreSQL) and
one driver class per integration (tests/conformance/_integrations.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import local_agents_tracing, make_supervisor  # noqa: F401 - the fixture

from ._integrations import INTEGRATIONS, Integration


@pytest.fixture(params=list(INTEGRATIONS))
def integration(request: pytest.FixtureRequest) -> type[Integration]:
    """The driver class of one integration: ``integration(supervisor, student)`` builds the agent."""
    return INTEGRATIONS[request.param]


@pytest.fixture(autouse=True, scope="module")
def _agents_sdk_tracing_stays_local() -> Iterator[None]:
    """Agents SDK tracing on, with no processor but the one Atlas adds; restored afterwards."""
    yield from local_agents_tracing()
