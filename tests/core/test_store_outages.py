"""Fault tests: a store that hangs, drops connections or is locked never holds a user's call past its budget.

A user's call here is ``Supervisor(...)``, ``begin`` and ``end``: the first two wait for store reads at most
``storage.read_budget_s`` (1 s in these tests) and ``end`` returns at once. Each stall is measured, asserted
against budget + 1 s and printed (read them with ``pytest -s``). After the outage ends, every session the
supervisor produced is in the database, read directly (spooled rows replay): nothing is lost.

PostgreSQL outages go through :class:`FaultProxy`, a TCP proxy in front of the server that can ``freeze`` (keep
every connection, accept new ones, forward nothing: a hung server or a black-holed path) and ``drop`` (reset every
connection and every new one: a crashed server). SQLite outages are another connection holding the file's lock.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from atlas_learning.config import AtlasConfig
from atlas_learning.store import Store
from atlas_learning.supervisor import Supervisor
from tests.support import ScriptedRoles, default_answers

BUDGET_S = 1.0
#: What a budgeted call may take: the budget plus scheduling slack.
MOST_S = BUDGET_S + 1.0
#: ``end`` queues the finish and returns: "at once", with room for a loaded CI machine.
AT_ONCE_S = 0.5
TASK = "Read the report and summarise it"


# ------------------------------------------------------------------------------------------------ helpers
class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``, whose mode switches at runtime:

    ``pass`` forwards bytes both ways; ``freeze`` forwards nothing (bytes already read are held, not lost) and
    keeps every connection open, accepting new ones too; ``drop`` resets every open connection and every new one.
    One thread per connection does both directions, so only that thread ever closes its sockets.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self._generation = 0  # bumped by drop: connections of an older generation reset themselves
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True)
        self._acceptor.start()

    def url_for(self, url: str) -> str:
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def freeze(self) -> None:
        self.mode = "freeze"

    def drop(self) -> None:
        with self._lock:
            self.mode = "drop"
            self._generation += 1
            threads = list(self._threads)
        for thread in threads:  # each notices within one poll (50 ms) and resets its sockets
            thread.join(timeout=2)

    def restore(self) -> None:
        self.mode = "pass"

    def close(self) -> None:
        self._closed.set()
        self.drop()
        self._acceptor.join(timeout=2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "drop":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=3)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                thread = threading.Thread(target=self._serve, args=(client, server, self._generation),
                                          name="fault-proxy-conn", daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, server: socket.socket, generation: int) -> None:
        import select

        peer = {client: server, server: client}
        try:
            while generation == self._generation and not self._closed.is_set():
                if self.mode == "freeze":
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([client, server], [], [], 0.05)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    while self.mode == "freeze" and generation == self._generation:
                        time.sleep(0.05)  # read just as the freeze began: held until it ends
                    if generation != self._generation:
                        return
                    peer[source].sendall(data)
        except OSError:
            return
        finally:
            _reset(client)
            _reset(server)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (linger 0), as a crashed peer's kernel answers."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


#: How long a user's call is waited for before the test fails, so that a call that hangs fails the test instead of
#: hanging the run (pytest-timeout is not installed).
HANG_S = 10.0


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()`` and the seconds it took; it runs in a daemon thread, and taking over HANG_S fails the test."""
    outcome: list[tuple[bool, Any, float]] = []

    def target() -> None:
        started = time.perf_counter()
        try:
            value = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome.append((False, exc, time.perf_counter() - started))
        else:
            outcome.append((True, value, time.perf_counter() - started))

    thread = threading.Thread(target=target, name="user-call", daemon=True)
    thread.start()
    thread.join(HANG_S)
    if not outcome:
        pytest.fail(f"a user's call was still blocked after {HANG_S:g} s")
    ok, value, seconds = outcome[0]
    if not ok:
        raise value
    return value, seconds


class Sessions:
    """Runs user sessions on a supervisor, timing the user's calls and keeping the ids produced."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.produced: list[str] = []
        self.stalls: dict[str, float] = {}  # outage -> the longest begin seen under it
        self.ends: dict[str, float] = {}  # outage -> the longest end seen under it

    def one(self, outage: str, *, expect_unavailable: bool | None = None) -> str:
        run, begin_s = _timed(lambda: self.supervisor.begin(TASK, agent_name="a", learning_key="k"))
        self.produced.append(run.session_id)
        run.final_answer("x")
        pending, end_s = _timed(lambda: run.end("x"))
        assert pending.final_answer == "x"
        self.stalls[outage] = max(self.stalls.get(outage, 0.0), begin_s)
        self.ends[outage] = max(self.ends.get(outage, 0.0), end_s)
        print(f"[{outage}] begin {begin_s:.3f} s, end {end_s:.3f} s, store_unavailable: {run._history.unavailable!r}")  # noqa: SLF001
        assert begin_s < MOST_S, f"begin took {begin_s:.2f} s under {outage} (budget {BUDGET_S} s)"
        assert end_s < AT_ONCE_S, f"end took {end_s:.2f} s under {outage}"
        if expect_unavailable is not None:
            assert (run._history.unavailable is not None) is expect_unavailable, run._history.unavailable  # noqa: SLF001
        return run.session_id

    def report(self, case: str) -> None:
        for outage, seconds in self.stalls.items():
            print(f"{case}: longest begin under {outage}: {seconds:.3f} s; longest end: {self.ends[outage]:.3f} s")


def _config(url: str, tmp_path: Path) -> AtlasConfig:
    return AtlasConfig.load({
        "storage": {"url": url, "spool_dir": str(tmp_path / "spool"), "read_budget_s": BUDGET_S},
        "supervision": {"lane": "auto", "history_cache_s": 0, "drain_timeout_s": 15},
        "playbook": {"trial_explore_rate": 0.0, "explore_rate": 0.0},
    }, environ={})


def _supervisor(config: AtlasConfig) -> Supervisor:
    return Supervisor(config, models=ScriptedRoles(config, default_answers()))


def _wait_for(read: Callable[[], dict[str, dict[str, Any]]], wanted: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """The stored sessions once every wanted id is there with its final answer (or whatever is there at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = read()
        except Exception:  # noqa: BLE001 - the database is still locked: try again
            rows = {}
        if all(rows.get(i, {}).get("final_answer") == "x" for i in wanted) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _settle_and_check(sessions: Sessions, read: Callable[[], dict[str, dict[str, Any]]], unavailable: list[str]) -> None:
    """After an outage: the writer's retry interval passes, a later session runs, everything drains; then every
    produced session is stored (and no other), and those begun during the outage say the store was unavailable."""
    time.sleep(1.2)  # past the recorder's retry_interval_s (1 s): its next write tries the store again
    sessions.one("after", expect_unavailable=False)
    drained, drain_s = _timed(lambda: sessions.supervisor.drain(timeout=20))
    print(f"drain after the outage: {drained} in {drain_s:.2f} s")
    rows = _wait_for(read, sessions.produced, timeout=10)
    missing = [i for i in sessions.produced if rows.get(i, {}).get("final_answer") != "x"]
    assert not missing, f"{len(missing)} of {len(sessions.produced)} sessions not stored: {missing}"
    assert sorted(rows) == sorted(sessions.produced), "produced sessions == stored sessions"
    for session_id in unavailable:
        metadata = rows[session_id]["session_metadata"] or {}
        assert "store_unavailable" in metadata, (session_id, metadata)


# ------------------------------------------------------------------------------------------------ PostgreSQL
@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[FaultProxy]:
    url = make_url(postgres_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 5432))
    yield proxy
    proxy.close()


def _pg_reader(real_url: str) -> Callable[[], dict[str, dict[str, Any]]]:
    import psycopg

    def read() -> dict[str, dict[str, Any]]:
        with psycopg.connect(real_url.replace("+psycopg", ""), connect_timeout=3) as connection:
            found = connection.execute("SELECT id, final_answer, session_metadata FROM sessions").fetchall()
        return {row[0]: {"final_answer": row[1], "session_metadata": row[2]} for row in found}

    return read


# Measured (PostgreSQL 15 on localhost, read_budget_s 1): longest begin under freeze 0.982 s (the first one waits
# out the budget less its 2 % reserve, later ones 0.001 s: the stuck read), under drop 0.005 s; longest end 0.000 s; drain after restore
# 0.5-0.9 s. Before the budget existed, the frozen begin was still blocked at HANG_S (10 s).
@pytest.mark.postgres
def test_a_frozen_or_dropped_postgres_never_holds_a_call_past_the_budget(postgres_url: str, pg_proxy: FaultProxy, tmp_path) -> None:
    started = time.monotonic()
    supervisor = _supervisor(_config(pg_proxy.url_for(postgres_url), tmp_path))
    try:
        sessions = Sessions(supervisor)
        sessions.one("healthy", expect_unavailable=False)
        assert supervisor.drain(timeout=10)

        pg_proxy.freeze()
        frozen = [sessions.one("freeze", expect_unavailable=True) for _ in range(3)]

        pg_proxy.drop()
        # The read stuck since the freeze fails with its reset connection; until it has, begins would not try the
        # store at all (a stuck read makes later ones go on at once), so the drop would not be exercised.
        deadline = time.monotonic() + 3
        while supervisor.store._stuck_reads and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.05)
        dropped = [sessions.one("drop", expect_unavailable=True) for _ in range(3)]

        deadline = time.monotonic() + 8
        while not supervisor.recorder.degraded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert supervisor.recorder.degraded, "the writer should spool while connections are refused"

        pg_proxy.restore()
        _settle_and_check(sessions, _pg_reader(postgres_url), [*frozen, *dropped])
        sessions.report("postgres")
    finally:
        pg_proxy.restore()
        supervisor.close()
    assert time.monotonic() - started < 20


# Measured: Supervisor(...) on a frozen PostgreSQL 0.984 s (inside the budget), its first begin 0.003 s, end
# 0.000 s; construction + first begin 0.988 s. Before the budget: construction 5.0 s (connect_timeout), begin blocked > 10 s.
@pytest.mark.postgres
def test_a_supervisor_starts_on_a_frozen_postgres_within_the_budget(postgres_url: str, pg_proxy: FaultProxy, tmp_path) -> None:
    started = time.monotonic()
    pg_proxy.freeze()
    supervisor, construct_s = _timed(lambda: _supervisor(_config(pg_proxy.url_for(postgres_url), tmp_path)))
    constructed = time.monotonic()
    print(f"[freeze] Supervisor(...) {construct_s:.3f} s, store_problem: {supervisor.store_problem!r}")
    try:
        assert construct_s < MOST_S, f"Supervisor(...) took {construct_s:.2f} s on a frozen store"
        assert supervisor.store_problem is not None
        sessions = Sessions(supervisor)
        first = sessions.one("freeze", expect_unavailable=True)
        assert construct_s + sessions.stalls["freeze"] < MOST_S
        print(f"postgres: Supervisor(...) + first begin on a frozen store: {construct_s + sessions.stalls['freeze']:.3f} s")

        pg_proxy.restore()
        time.sleep(max(0.0, supervisor.store_retry_s - (time.monotonic() - constructed)) + 0.2)  # the next begin tries the store again
        _settle_and_check(sessions, _pg_reader(postgres_url), [first])
        sessions.report("postgres start")
    finally:
        pg_proxy.restore()
        supervisor.close()
    assert time.monotonic() - started < 20


# ------------------------------------------------------------------------------------------------ SQLite
def _sqlite_reader(path: Path) -> Callable[[], dict[str, dict[str, Any]]]:
    def read() -> dict[str, dict[str, Any]]:
        connection = sqlite3.connect(path, timeout=1)
        try:
            found = connection.execute("SELECT id, final_answer, session_metadata FROM sessions").fetchall()
        finally:
            connection.close()
        return {row[0]: {"final_answer": row[1], "session_metadata": json.loads(row[2]) if row[2] else None} for row in found}

    return read


def _exclusive_lock(path: Path, *, locking_mode: bool) -> sqlite3.Connection:
    """Another connection holding the file: ``BEGIN EXCLUSIVE`` (in WAL, readers go on, writers wait) or, with
    ``locking_mode``, ``PRAGMA locking_mode=EXCLUSIVE`` plus a write (nobody else can even read; SQLite grants it
    only while no other connection has the file open)."""
    holder = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    if locking_mode:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE").close()
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE atlas_meta SET value = value WHERE key = 'schema_version'")
        holder.execute("COMMIT")  # the exclusive lock stays until the connection closes
    else:
        holder.execute("BEGIN EXCLUSIVE")
    return holder


# Measured: under BEGIN EXCLUSIVE (WAL readers go on) longest begin 0.005-0.006 s, end 0.001 s, over ~6.5 s of lock;
# the writer's commits wait out the 5 s busy timeout in its own thread, then spool; drain after release 0.00 s.
def test_an_exclusive_sqlite_transaction_never_holds_a_call_past_the_budget(tmp_path) -> None:
    started = time.monotonic()
    path = tmp_path / "atlas.db"
    supervisor = _supervisor(_config(f"sqlite:///{path}", tmp_path))
    holder = None
    try:
        sessions = Sessions(supervisor)
        sessions.one("healthy", expect_unavailable=False)
        assert supervisor.drain(timeout=10)

        holder = _exclusive_lock(path, locking_mode=False)
        # Held past the busy timeout: the writer's commits give up and spool, and sessions go on meanwhile.
        locked_until = time.monotonic() + supervisor.config.storage.lock_timeout_s + 1.5
        while time.monotonic() < locked_until or not supervisor.recorder.degraded:
            sessions.one("BEGIN EXCLUSIVE")
            time.sleep(0.5)
            assert time.monotonic() < locked_until + 5, "the writer never spooled"
        holder.execute("ROLLBACK")
        holder.close()
        holder = None

        _settle_and_check(sessions, _sqlite_reader(path), [])
        sessions.report("sqlite BEGIN EXCLUSIVE")
    finally:
        if holder is not None:
            holder.close()
        supervisor.close()
    assert time.monotonic() - started < 20


# Measured: with the file held in locking_mode=EXCLUSIVE, Supervisor(...) 0.983 s (inside the budget), begins
# 0.001 s until the store is tried again (store_retry_s), that begin 0.982 s (inside the budget again); end 0.001 s. Before the
# budget, the first begin was still blocked at HANG_S (10 s).
def test_a_sqlite_file_held_exclusively_never_holds_a_call_past_the_budget(tmp_path) -> None:
    started = time.monotonic()
    path = tmp_path / "atlas.db"
    Store(f"sqlite:///{path}").close()  # a migrated database, then nobody has it open
    holder: sqlite3.Connection | None = _exclusive_lock(path, locking_mode=True)
    supervisor = None
    try:
        supervisor, construct_s = _timed(lambda: _supervisor(_config(f"sqlite:///{path}", tmp_path)))
        constructed = time.monotonic()
        print(f"[locking_mode=EXCLUSIVE] Supervisor(...) {construct_s:.3f} s, store_problem: {supervisor.store_problem!r}")
        assert construct_s < MOST_S, f"Supervisor(...) took {construct_s:.2f} s on a locked store"
        sessions = Sessions(supervisor)
        unavailable = [sessions.one("locking_mode=EXCLUSIVE", expect_unavailable=True) for _ in range(3)]
        assert construct_s + sessions.stalls["locking_mode=EXCLUSIVE"] < 2 * MOST_S
        time.sleep(max(0.0, supervisor.store_retry_s - (time.monotonic() - constructed)) + 0.2)
        unavailable.append(sessions.one("locking_mode=EXCLUSIVE", expect_unavailable=True))  # the store tried again: still locked

        assert holder is not None
        holder.close()
        holder = None
        time.sleep(supervisor.store_retry_s + 0.2)  # the next begin tries the store again
        _settle_and_check(sessions, _sqlite_reader(path), unavailable)
        sessions.report("sqlite locking_mode=EXCLUSIVE")
    finally:
        if holder is not None:
            holder.close()
        if supervisor is not None:
            supervisor.close()
    assert time.monotonic() - started < 20
