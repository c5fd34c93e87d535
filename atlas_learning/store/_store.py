"""The :class:`Store`: one class over SQLite and PostgreSQL, with an ordered, versioned migration chain."""

from __future__ import annotations

import contextvars
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, SQLModel, col, select

from ..background import DeadlinePassed, run_with_deadline
from ..config import AtlasConfig, StorageConfig
from ..errors import StoreError, StoreNotFoundError
from .tables import MetaRecord, SessionRecord, SpoolMarkRecord

__all__ = ["Store", "SessionFilter", "REVIEW_GATE", "Migration", "MIGRATIONS", "SCHEMA_VERSION"]

R = TypeVar("R", bound=SQLModel)

#: When reads in this context must be done by (time.monotonic()), set by :meth:`Store.read_budget`.
_read_deadline: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("atlas_store_read_deadline", default=None)
#: The share of a read budget kept for the call's own work once the store has been given up on (raising, logging,
#: recording the session without history): waits end this much before the budget, so the whole call stays inside
#: it. Measured: 1-7 ms of that work after a 1 s wait on this project's 2-core machines; 2 % of 1 s is 20 ms.
_AFTER_WAIT_SHARE = 0.02


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history. ``upgrade`` runs inside a transaction on a database at ``version - 1``."""

    version: int
    description: str
    upgrade: Callable[[Connection], None]


def _create_initial_schema(connection: Connection) -> None:
    SQLModel.metadata.create_all(connection)


#: Columns added by version 2: task families, verified outcomes, worked examples, reasons in playbook history.
_V2_COLUMNS = (
    ("sessions", "task_family", "VARCHAR(128)"),
    ("sessions", "checks_passed", "BOOLEAN"),
    ("sessions", "explored", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("playbook_entries", "kind", "VARCHAR(16) NOT NULL DEFAULT 'lesson'"),
    ("playbook_entries", "task_family", "VARCHAR(128)"),
    ("playbook_versions", "reason", "TEXT"),
    ("attempts", "checks", "TEXT"),
)


def _add_task_families(connection: Connection) -> None:
    present = {table: {c["name"] for c in inspect(connection).get_columns(table)} for table, _, _ in _V2_COLUMNS}
    for table, column, ddl in _V2_COLUMNS:
        if column not in present[table]:
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
    if "ix_sessions_key_family_started" not in {i["name"] for i in inspect(connection).get_indexes("sessions")}:
        connection.execute(text("CREATE INDEX ix_sessions_key_family_started ON sessions (learning_key, task_family, started_at)"))


def _add_owners_and_spool_marks(connection: Connection) -> None:
    if "owner" not in {c["name"] for c in inspect(connection).get_columns("sessions")}:
        connection.execute(text("ALTER TABLE sessions ADD COLUMN owner VARCHAR(160)"))
    if "ix_sessions_status" not in {i["name"] for i in inspect(connection).get_indexes("sessions")}:
        connection.execute(text("CREATE INDEX ix_sessions_status ON sessions (status)"))
    SpoolMarkRecord.__table__.create(connection, checkfirst=True)  # type: ignore[attr-defined]


#: The schema's history, oldest first. Append a Migration for every change to the tables; never edit one that
#: has shipped. A new database is created from the current tables and stamped with the latest version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _create_initial_schema),
    Migration(2, "task families, checks in the loop, worked examples, playbook history reasons", _add_task_families),
    Migration(3, "session owners (abandoned sessions), spool marks (replays write each line once)", _add_owners_and_spool_marks),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
_MIGRATION_LOCK_ID = 7_274_527  # PostgreSQL advisory lock serialising concurrent migrators


class _ReviewGate(tuple):  # noqa: SLOT001 - a marker value, compared by identity
    """The unset ``review_status`` of a :class:`SessionFilter`: the API's own default applies."""

    def __repr__(self) -> str:
        return "REVIEW_GATE"


#: ``SessionFilter.review_status`` when the caller did not set it.
REVIEW_GATE: Any = _ReviewGate()


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions a listing, export or training query wants. Every field is optional."""

    learning_key: str | None = None
    lane: str | None = None
    #: Review statuses to take; None: every status (an explicit opt-out of the review gate). Left unset
    #: (:data:`REVIEW_GATE`), listings take every status and everything that produces training data (exports,
    #: ``atlas train``) takes approved sessions only.
    review_status: Sequence[str] | None = REVIEW_GATE  # type: ignore[assignment]
    #: The sessions' own status: ``running``, ``completed``, ``failed``.
    status: Sequence[str] | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    offset: int = 0

    def gated(self, statuses: Sequence[str]) -> SessionFilter:
        """This filter with ``statuses`` as its review statuses when the caller left them unset."""
        return replace(self, review_status=tuple(statuses)) if self.review_status is REVIEW_GATE else self

    def apply(self, statement: Any) -> Any:
        """Add this filter's conditions, newest-first order, limit and offset to a select of sessions."""
        if self.learning_key is not None:
            statement = statement.where(SessionRecord.learning_key == self.learning_key)
        if self.lane is not None:
            statement = statement.where(SessionRecord.lane == self.lane)
        if self.review_status is not None and self.review_status is not REVIEW_GATE:
            statement = statement.where(col(SessionRecord.review_status).in_(list(self.review_status)))
        if self.status is not None:
            statement = statement.where(col(SessionRecord.status).in_(list(self.status)))
        if self.min_reward is not None:
            statement = statement.where(col(SessionRecord.reward) >= self.min_reward)
        if self.max_reward is not None:
            statement = statement.where(col(SessionRecord.reward) <= self.max_reward)
        if self.since is not None:
            statement = statement.where(col(SessionRecord.started_at) >= self.since)
        if self.until is not None:
            statement = statement.where(col(SessionRecord.started_at) < self.until)
        statement = statement.order_by(col(SessionRecord.started_at).desc(), col(SessionRecord.id))
        if self.offset:
            statement = statement.offset(self.offset)
        if self.limit is not None:
            statement = statement.limit(self.limit)
        return statement


_owners: dict[int, str] = {}


def process_owner() -> str:
    """This process as a session's owner: ``host:pid:start``, where ``start`` is the process's start time in
    clock ticks since boot on Linux (a reused pid is then another owner) and 0 elsewhere."""
    pid = os.getpid()
    owner = _owners.get(pid)
    if owner is None:
        owner = _owners[pid] = f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"
    return owner


def _start_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by ``owner`` still runs: None when it cannot be told (another host)."""
    parts = owner.split(":")
    try:
        host, pid, start = ":".join(parts[:-2]), int(parts[-2]), int(parts[-1])
    except (ValueError, IndexError):
        return None
    if host != socket.gethostname():
        return None
    if start and Path("/proc").is_dir():
        return _start_ticks(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _redact_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _sqlite_path(url: str) -> Path | None:
    if url in ("sqlite://", "sqlite:///:memory:"):
        return None
    return Path(url.split("sqlite:///", 1)[1]) if url.startswith("sqlite:///") else None


class Store:
    """Persistent storage of sessions and everything they produce.

    ``Store()`` opens the default SQLite file ``.atlas/atlas.db``; ``Store("postgresql+psycopg://...")`` opens
    PostgreSQL. Opening creates or upgrades the schema in place (``migrate=False`` skips that). With
    ``create=False`` (readers: ``atlas sessions``, ``atlas export``) nothing is created: no SQLite file or folder,
    no schema in an empty database; a store that is not there raises
    :class:`~atlas_learning.errors.StoreNotFoundError`, and one at an older schema version is still upgraded.
    Failures surface as :class:`~atlas_learning.errors.StoreError` with one line saying what to do.
    """

    def __init__(self, url: str | StorageConfig | AtlasConfig | None = None, *, echo: bool = False, migrate: bool = True,
                 create: bool = True) -> None:
        if isinstance(url, AtlasConfig):
            url = url.storage
        storage = url if isinstance(url, StorageConfig) else StorageConfig(url=url) if url else StorageConfig()
        self.url = storage.url
        self.storage = storage
        self.backend = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self._create = create
        self.engine = self._create_engine(echo or storage.echo)
        self._migrate_lock = threading.Lock()
        #: Budgeted reads that ran past their budget and have not returned yet, and since when the oldest runs.
        self._stuck_reads = 0
        self._stuck_since = 0.0
        self._stuck_lock = threading.Lock()
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Store({_redact_url(self.url)!r})"

    # ----------------------------------------------------------------------------------------- lifecycle
    def _create_engine(self, echo: bool) -> Engine:
        if self.backend == "sqlite":
            path = _sqlite_path(self.url)
            if path is not None and not self._create and not path.is_file():
                raise StoreNotFoundError(str(path.absolute()), "no such file")
            if path is not None and self._create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create {path.parent} for the SQLite store ({exc.strerror}); fix storage.url") from None
            engine = create_engine(self.url, echo=echo, connect_args={"check_same_thread": False,
                                                                      "timeout": self.storage.lock_timeout_s})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        storage = self.storage
        # Every wait is bounded: connecting, locks and statements (by the server), and a path that went silent
        # (TCP keepalives notice an idle connection whose peer vanished; tcp_user_timeout, unacknowledged sends).
        options = f"-c statement_timeout={round(storage.statement_timeout_s * 1000)} -c lock_timeout={round(storage.lock_timeout_s * 1000)}"
        given = make_url(self.url).query.get("options")  # the URL's own options (a search_path) stay, and win
        if given:
            options = " ".join([options, *([given] if isinstance(given, str) else given)])
        return create_engine(self.url, echo=echo, pool_pre_ping=True, connect_args={
            "connect_timeout": max(1, math.ceil(storage.connect_timeout_s)), "options": options,
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
            "tcp_user_timeout": round(max(storage.statement_timeout_s, storage.connect_timeout_s) * 1000)})

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- migrations
    def schema_version(self) -> int:
        """The schema version the database is at; 0 for an empty database."""
        with self._connect() as connection:
            return _read_version(connection)

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> int:
        """Bring the schema to the latest version in place and return it. Safe to run concurrently."""
        latest = migrations[-1].version
        with self._migrate_lock, self._connect() as connection, connection.begin():
            if self.backend == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            current = _read_version(connection)
            if current > latest:
                raise StoreError(
                    f"the database at {_redact_url(self.url)} has schema version {current}, newer than this "
                    f"atlas-plugins supports ({latest}); upgrade atlas-plugins"
                )
            if current == 0 and not self._create:
                raise StoreNotFoundError(_redact_url(self.url), "the database has no Atlas schema")
            if current == 0:
                if inspect(connection).has_table(SessionRecord.__tablename__):
                    raise StoreError(f"{_redact_url(self.url)} has a sessions table but no Atlas schema version; use an empty database")
                SQLModel.metadata.create_all(connection)
            else:
                for migration in migrations:
                    if migration.version > current:
                        migration.upgrade(connection)
            if current != latest:
                _write_version(connection, latest)
        return latest

    # ------------------------------------------------------------------------------------------- access
    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                yield connection
        except (OperationalError, DBAPIError) as exc:
            raise self.as_store_error(exc) from None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back on an error. Objects stay usable after."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise self.as_store_error(exc) from None

    def add(self, *records: R) -> tuple[R, ...]:
        """Insert records in one transaction and return them with their generated keys."""
        with self.transaction() as session:
            session.add_all(records)
            session.flush()
            for record in records:
                session.refresh(record)
        return records

    def get(self, table: type[R], key: Any) -> R | None:
        """One row by primary key, or None."""
        with self.transaction() as session:
            return session.get(table, key)

    def rows(self, table: type[R], *conditions: Any, order_by: Any = None, limit: int | None = None) -> list[R]:
        """Rows of ``table`` matching ``conditions`` (SQLAlchemy expressions), in ``order_by`` order."""
        statement = select(table)
        for condition in conditions:
            statement = statement.where(condition)
        if order_by is not None:
            statement = statement.order_by(order_by)
        if limit is not None:
            statement = statement.limit(limit)
        with self.transaction() as session:
            return list(session.exec(statement).all())

    def read(self, statement: Any) -> list[Any]:
        """Rows of a read-only SELECT, without an ORM session (the supervisor's hot path). Inside
        :meth:`read_budget` it waits at most what is left of the budget (StoreError after that)."""
        budget = _read_deadline.get()
        if budget is None:
            return self._read_now(statement)
        deadline, seconds = budget
        with self._stuck_lock:
            stuck, since = self._stuck_reads, self._stuck_since
        if stuck:
            raise StoreError(f"the store at {_redact_url(self.url)} has not answered a read for "
                             f"{time.monotonic() - since:.0f} s; going on without what it holds until it does")
        state = {"late": False, "done": False}

        def watched() -> list[Any]:
            try:
                return self._read_now(statement)
            finally:
                with self._stuck_lock:
                    state["done"] = True
                    if state["late"]:
                        self._stuck_reads -= 1

        try:
            return run_with_deadline(max(0.0, deadline - time.monotonic()), watched)
        except DeadlinePassed:
            with self._stuck_lock:  # past the budget, the read counts as stuck until it returns
                if not state["done"]:
                    state["late"] = True
                    if not self._stuck_reads:
                        self._stuck_since = time.monotonic()
                    self._stuck_reads += 1
            raise StoreError(f"the store at {_redact_url(self.url)} did not answer within "
                             f"{seconds:g} s (storage.read_budget_s); going on without what it holds") from None

    def _read_now(self, statement: Any) -> list[Any]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(statement))
        except SQLAlchemyError as exc:
            raise self.as_store_error(exc) from None

    @staticmethod
    def budget_left() -> float | None:
        """Seconds left of the :meth:`read_budget` in force (never below 0), or None outside one."""
        budget = _read_deadline.get()
        return None if budget is None else max(0.0, budget[0] - time.monotonic())

    @contextmanager
    def read_budget(self, seconds: float | None = None) -> Iterator[None]:
        """Reads (:meth:`read`) in this block wait at most ``seconds`` in all (``storage.read_budget_s`` by default):
        past it they raise StoreError, and while one such read is still stuck, later budgeted reads fail at once.
        For reads on a user's call, which must go on without what the store holds rather than wait for it.
        Waits end a small share of the budget early, kept for the call's own work; a budget opened inside another
        ends no later than the outer one."""
        seconds = self.storage.read_budget_s if seconds is None else seconds
        deadline = time.monotonic() + seconds * (1 - _AFTER_WAIT_SHARE)
        outer = _read_deadline.get()
        if outer is not None and outer[0] <= deadline:  # a budget inside a budget never extends it
            deadline, seconds = outer
        token = _read_deadline.set((deadline, seconds))
        try:
            yield
        finally:
            _read_deadline.reset(token)

    def update_session(self, session_id: str, **fields: Any) -> SessionRecord:
        """Set fields of a session and return it; StoreError if it does not exist."""
        with self.transaction() as session:
            record = session.get(SessionRecord, session_id)
            if record is None:
                raise StoreError(f"no session {session_id!r} in {_redact_url(self.url)}; list them with `atlas sessions`")
            for name, value in fields.items():
                if name not in SessionRecord.model_fields:
                    raise StoreError(f"sessions have no field {name!r}")
                setattr(record, name, value)
            session.add(record)
        return record

    def list_sessions(self, where: SessionFilter | None = None) -> list[SessionRecord]:
        """Sessions matching ``where``, newest first."""
        with self.transaction() as session:
            return list(session.exec((where or SessionFilter()).apply(select(SessionRecord))).all())

    def count_sessions(self, where: SessionFilter | None = None) -> int:
        """How many sessions match ``where`` (ignoring its limit and offset)."""
        from sqlalchemy import func

        where = where or SessionFilter()
        unpaged = SessionFilter(**{**where.__dict__, "limit": None, "offset": 0})
        statement = unpaged.apply(select(func.count()).select_from(SessionRecord)).order_by(None)
        with self.transaction() as session:
            return int(session.exec(statement).one())

    def mark_abandoned(self, *, older_than_s: float) -> int:
        """Mark ``abandoned`` the sessions left ``running`` by processes that died, and return how many: at once
        for this host's dead processes; after ``older_than_s`` since their start for owners that cannot be
        checked (another host, no owner recorded). Each keeps whatever it recorded."""
        me = process_owner()
        running = SessionRecord.__table__  # type: ignore[attr-defined]
        with self._connect() as connection, connection.begin():
            owners = [row[0] for row in connection.execute(
                select(running.c.owner).where(running.c.status == "running").distinct())]
            alive = {owner: owner_alive(owner) for owner in owners if owner is not None and owner != me}
            dead = [owner for owner, state in alive.items() if state is False]
            kept = [me, *(owner for owner, state in alive.items() if state is True)]
            now = datetime.now(timezone.utc)
            unknown = (running.c.started_at < now - timedelta(seconds=older_than_s)) & (
                running.c.owner.is_(None) | running.c.owner.not_in(kept))
            condition = running.c.owner.in_(dead) | unknown if dead else unknown
            statement = running.update().where(running.c.status == "running", condition).values(status="abandoned", finished_at=now)
            return connection.execute(statement).rowcount or 0

    def as_store_error(self, exc: Exception) -> StoreError:
        """A one-line StoreError for a database exception; ``retryable`` when it was a lost race."""
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = _redact_url(self.url)
        lost_race = isinstance(exc, IntegrityError) or any(
            marker in detail.lower() for marker in ("database is locked", "could not serialize", "deadlock detected")
        )
        if lost_race:
            return StoreError(f"store conflict at {where}: {detail}", retryable=True)
        if isinstance(exc, OperationalError) and self.backend == "postgresql":
            return StoreError(f"cannot use PostgreSQL at {where}: {detail}; start the server or fix storage.url")
        if isinstance(exc, OperationalError):
            return StoreError(f"cannot use the SQLite store at {where}: {detail}; check the path and its permissions")
        return StoreError(f"store error at {where}: {detail}")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _read_version(connection: Connection) -> int:
    if not inspect(connection).has_table(MetaRecord.__tablename__):
        return 0
    row = connection.execute(text("SELECT value FROM atlas_meta WHERE key = 'schema_version'")).first()
    return int(row[0]) if row else 0


def _write_version(connection: Connection, version: int) -> None:
    updated = connection.execute(text("UPDATE atlas_meta SET value = :v WHERE key = 'schema_version'"), {"v": str(version)})
    if updated.rowcount == 0:
        connection.execute(text("INSERT INTO atlas_meta (key, value) VALUES ('schema_version', :v)"), {"v": str(version)})
