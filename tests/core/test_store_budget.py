"""Store reads on a user's call are bounded (``storage.read_budget_s``), on SQLite and PostgreSQL.

A read held up inside the driver (here: a patched ``_read_now`` that waits on an event, the way a frozen socket or
a lock would) costs the caller the budget at most; while it stays stuck, later budgeted reads fail at once; once it
returns, budgeted reads work again. PostgreSQL's server-side timeouts come from the config."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import literal, select, text

from atlas_learning.config import StorageConfig
from atlas_learning.errors import StoreError
from atlas_learning.store import Store


def test_a_stuck_read_costs_the_budget_then_later_reads_fail_at_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = store._read_now  # noqa: SLF001

    def stuck(statement):
        release.wait(10)
        return real(statement)

    monkeypatch.setattr(store, "_read_now", stuck)
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"did not answer within 0.3 s \(storage.read_budget_s\)"), store.read_budget(0.3):
        store.read(select(literal(1)))
    first = time.monotonic() - started
    assert 0.25 <= first < 1.3
    started = time.monotonic()
    with pytest.raises(StoreError, match="has not answered a read for"), store.read_budget(5):
        store.read(select(literal(1)))
    assert time.monotonic() - started < 0.2  # no second wait behind the stuck read
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the stuck read returns, and budgeted reads work again
        try:
            with store.read_budget(1):
                assert store.read(select(literal(3))) == [(3,)]
            break
        except StoreError:
            time.sleep(0.05)
    else:
        pytest.fail("budgeted reads never recovered after the stuck read returned")


def test_budget_left_counts_down_inside_a_budget_only(store: Store) -> None:
    assert Store.budget_left() is None
    with store.read_budget(2):
        left = Store.budget_left()
        assert left is not None and 1.5 < left <= 2
    assert Store.budget_left() is None


def test_a_budget_keeps_a_reserve_and_one_opened_inside_it_never_extends_it(store: Store) -> None:
    with store.read_budget(1):
        left = Store.budget_left()
        assert left is not None and left < 0.99  # the waits end early: the call's own work fits in the budget
        with store.read_budget(10):  # a reconnect inside a begin shares the begin's budget
            inner = Store.budget_left()
            assert inner is not None and inner <= left
        with store.read_budget(0.1):  # a shorter one inside is honoured
            shorter = Store.budget_left()
            assert shorter is not None and shorter < 0.1
        assert Store.budget_left() <= left  # the outer budget is back as it was
    assert Store.budget_left() is None


@pytest.mark.postgres
def test_postgres_statements_and_locks_time_out_on_the_server(postgres_url: str) -> None:
    with Store(StorageConfig(url=postgres_url, statement_timeout_s=0.5, lock_timeout_s=0.25), migrate=False) as store:
        with store.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "500ms"
            assert connection.execute(text("SHOW lock_timeout")).scalar() == "250ms"
            # the URL's own options (the test schema's search_path) are kept
            assert "atlas_test_" in connection.execute(text("SHOW search_path")).scalar()
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.read(select(text("pg_sleep(5)")))
        assert time.monotonic() - started < 3


def test_sqlite_busy_timeout_is_the_lock_timeout(tmp_path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Store(StorageConfig(url=url, lock_timeout_s=0.3)) as store:
        holder = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="locked"), store.transaction() as tx:
                tx.exec(text("INSERT INTO atlas_meta (key, value) VALUES ('x', 'y')"))
            assert time.monotonic() - started < 2.5
        finally:
            holder.execute("ROLLBACK")
            holder.close()
