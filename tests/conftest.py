"""Fixtures shared by every test package.

``store`` runs a test on SQLite and on PostgreSQL. Each PostgreSQL test gets a schema of its own in the ``test``
database (``search_path`` set on connect), dropped afterwards. When ``CI=true`` an unreachable server fails the
run; elsewhere those tests skip with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from atlas_learning.store import Store

PG_ADMIN_URL = os.environ.get("ATLAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_unavailable_reason() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'atlas-plugins[postgres]')"
    try:
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).strip().splitlines()[0]}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    reason = _pg_unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}", pytrace=False)
        pytest.skip(reason)
    return PG_ADMIN_URL


def fresh_schema(admin_url: str, prefix: str = "atlas_test") -> Iterator[str]:
    """A URL whose connections see an empty schema of their own, dropped afterwards (a fixture's body)."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    plain = admin_url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in admin_url else "?"
    yield f"{admin_url}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A URL whose connections see an empty schema of their own."""
    yield from fresh_schema(postgres_admin_url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'atlas.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, once per backend."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated, empty store, once on SQLite and once on PostgreSQL."""
    with Store(store_url) as opened:
        yield opened
