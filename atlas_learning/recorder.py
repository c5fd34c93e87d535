"""The recorder: every row a session produces reaches the store, in order, and nothing is lost.

Callers enqueue rows (plain dicts, secrets already redacted) and return at once; a writer thread commits them in
batches, one transaction per batch. When the store fails (unreachable, locked, read-only), the batch is appended
to a JSONL spool file under ``storage.spool_dir`` and every later row follows it there, so order is kept; the
writer retries the store at most once a second, and on success replays the spool in one transaction and
deletes it. A spool left by an earlier process (a crash, an outage that outlived the run) is replayed by the
next :meth:`Recorder.replay_spool`, which the supervisor calls on start. A replay writes each spooled line
once: the file's mark (how many of its lines are stored) is written in the transaction that stores them, and
read before the next replay of that file, wherever a crash stopped the last one; inserts also use ON CONFLICT
DO NOTHING.

Non-finite floats become None (PostgreSQL's JSON refuses them). A row the database rejects as such (a
constraint it breaks, a value it cannot take) is written to ``rejected-*.jsonl`` beside the spool
with the database's reason, instead of blocking the rows behind it.

:meth:`Recorder.flush` waits until everything enqueued so far is committed or spooled; a session's ``finish``
calls it, so a finished session is durable.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import json
import logging
import math
import mmap
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import JSON, String, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlmodel import SQLModel

from .errors import StoreError
from .redact import Redactor
from .store import SpoolMarkRecord, Store
from .store.tables import UTCDateTime

__all__ = ["Recorder", "TableSpec"]

log = logging.getLogger("atlas_learning.recorder")

try:  # advisory locks keep two processes from replaying the same spool file; POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class TableSpec:
    """What the recorder needs to know of a table to build, write and replay its rows quickly."""

    _cache: dict[type[SQLModel], TableSpec] = {}

    def __init__(self, model: type[SQLModel]) -> None:
        self.model = model
        self.table = model.__table__  # type: ignore[attr-defined]
        self.name: str = self.table.name
        self.primary_key: str = next(iter(self.table.primary_key.columns)).name
        self.datetime_columns = frozenset(c.name for c in self.table.columns if isinstance(c.type, UTCDateTime))
        self.json_columns = frozenset(c.name for c in self.table.columns if isinstance(c.type, JSON))
        self.string_lengths = {c.name: getattr(c.type, "length", None) for c in self.table.columns
                               if isinstance(c.type, String) or isinstance(getattr(c.type, "impl", None), String)}
        self._defaults: list[tuple[str, Any, Callable[[], Any] | None]] = []
        for name, info in model.model_fields.items():
            factory = info.default_factory
            self._defaults.append((name, None if factory else info.default, factory))  # type: ignore[arg-type]
        # Read once: rows are built on the caller's thread (write-ahead), several per model call.
        self._columns = frozenset(model.model_fields)
        #: What makes a new row's key when the caller gives none (steps' ids), or None.
        self.key_factory: Callable[[], Any] | None = model.model_fields[self.primary_key].default_factory  # type: ignore[assignment]
        self._database_assigns_key = self.primary_key == "id" and self.table.primary_key.columns[self.primary_key].type.python_type is int

    @classmethod
    def of(cls, model: type[SQLModel]) -> TableSpec:
        spec = cls._cache.get(model)
        if spec is None:
            spec = cls._cache[model] = TableSpec(model)
        return spec

    def check_columns(self, fields: Mapping[str, Any]) -> None:
        """Raise ValueError naming the first of ``fields``' names that is not a column of this table."""
        unknown = fields.keys() - self._columns
        if unknown:
            raise ValueError(f"{self.name} has no column {sorted(unknown)[0]!r}")

    def row(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A complete row: the table's defaults, overridden by ``fields``; unknown names are an error."""
        self.check_columns(fields)
        row = {name: (factory() if factory else default) for name, default, factory in self._defaults if name not in fields}
        for name, value in fields.items():
            row[name] = self.storable(name, value)
        if self._database_assigns_key and row.get(self.primary_key) is None:
            row.pop(self.primary_key, None)  # let the database assign it
        return row

    def storable(self, column: str, value: Any) -> Any:
        """``value`` as every backend takes it in ``column``: JSON-safe, no NUL bytes, within the column's length."""
        if column in self.json_columns:
            return _json_safe(value)
        if isinstance(value, str):
            return _clean_text(value, self.string_lengths.get(column))
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    def decode(self, row: dict[str, Any]) -> dict[str, Any]:
        """A spooled row as it was: ISO timestamps back to datetimes."""
        for name in self.datetime_columns & row.keys():
            if isinstance(row[name], str):
                row[name] = datetime.fromisoformat(row[name])
        return row


_TABLES: dict[str, type[SQLModel]] = {}


def _table_named(name: str) -> type[SQLModel]:
    if not _TABLES:
        from .store import tables

        for value in vars(tables).values():
            if isinstance(value, type) and issubclass(value, SQLModel) and hasattr(value, "__table__"):
                _TABLES[value.__table__.name] = value  # type: ignore[attr-defined]
    return _TABLES[name]


class _Insert:
    """A new row. Given as ``fields`` (:meth:`Recorder.insert_later`), it is redacted and completed when the
    writer first reads it, off the caller's thread."""

    __slots__ = ("spec", "_row", "_fields", "_redactor")

    def __init__(self, spec: TableSpec, row: dict[str, Any] | None = None, *, fields: dict[str, Any] | None = None,
                 redactor: Redactor | None = None) -> None:
        self.spec = spec
        self._row = row
        self._fields = fields
        self._redactor = redactor

    @property
    def row(self) -> dict[str, Any]:
        if self._row is None:
            fields = self._fields or {}
            self._row = self.spec.row(self._redactor.columns(fields) if self._redactor is not None else fields)
            self._fields = None
        return self._row

    def as_json(self) -> dict[str, Any]:
        return {"op": "insert", "table": self.spec.name, "row": self.row}

    def journal(self) -> dict[str, Any]:
        """The journal line's data, on the caller's thread (write-ahead): the fields redacted, not yet completed.
        Completing a row (defaults, JSON-safe values, column lengths) is a pure function of its redacted fields,
        so the writer, or a replay, does it from the same fields; the caller pays for the redaction only."""
        if self._row is not None:
            return self.as_json()
        if self._redactor is not None:
            self._fields, self._redactor = self._redactor.columns(self._fields or {}), None
        return {"op": "insert", "table": self.spec.name, "fields": self._fields or {}}


class _Update:
    """New values for columns of one row. Given with a ``redactor`` (:meth:`Recorder.update`), its values are
    redacted and made storable when the writer first reads them, off the caller's thread."""

    __slots__ = ("spec", "key", "only_if", "_fields", "_then", "_redactor")

    def __init__(self, spec: TableSpec, key: Any, fields: dict[str, Any], only_if: dict[str, Any] | None = None,
                 then: dict[str, Any] | None = None, *, redactor: Redactor | None = None) -> None:
        self.spec = spec
        self.key = key
        #: Columns the row must still hold for the update to apply (a reviewer's decision is never overwritten).
        self.only_if = only_if
        self._fields = fields
        #: A row inserted in the same transaction only when the update applied (the log of what it changed).
        self._then = then
        self._redactor = redactor

    def _complete(self) -> None:
        redactor = self._redactor
        if redactor is None:
            return
        # Computed first and published after: a reader on another thread sees the raw values only together with
        # the redactor, so it completes them too (the same result) instead of reading them raw.
        fields = {name: self.spec.storable(name, value) for name, value in redactor.columns(self._fields).items()}
        then = self._then
        if then is not None:
            then = {"table": then["table"], "row": TableSpec.of(_table_named(then["table"])).row(redactor.columns(then["row"]))}
        self._fields, self._then = fields, then
        self._redactor = None

    @property
    def fields(self) -> dict[str, Any]:
        self._complete()
        return self._fields

    @property
    def then(self) -> dict[str, Any] | None:
        self._complete()
        return self._then

    def as_json(self) -> dict[str, Any]:
        data = {"op": "update", "table": self.spec.name, "key": self.key, "fields": self.fields}
        if self.only_if is not None:
            data.update(only_if=self.only_if, then=self.then)
        return data


@dataclass(frozen=True)
class _Increment:
    """Add ``deltas`` to numeric columns of the rows with these keys (counters: impact statistics)."""

    spec: TableSpec
    keys: tuple[Any, ...]
    deltas: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return {"op": "increment", "table": self.spec.name, "keys": list(self.keys), "deltas": self.deltas}


_Write = _Insert | _Update | _Increment


def _journal_data(write: _Write) -> dict[str, Any]:
    return write.journal() if isinstance(write, _Insert) else write.as_json()


def _decode_op(line: dict[str, Any]) -> _Write:
    spec = TableSpec.of(_table_named(line["table"]))
    if line["op"] == "insert":
        if "fields" in line:  # journaled before completion (write-ahead): completed as the writer would have
            return _Insert(spec, fields=spec.decode(line["fields"]))
        return _Insert(spec, spec.decode(line["row"]))
    if line["op"] == "increment":
        return _Increment(spec, tuple(line["keys"]), dict(line["deltas"]))
    then = line.get("then")
    if then is not None:
        then = {"table": then["table"], "row": TableSpec.of(_table_named(then["table"])).decode(then["row"])}
    return _Update(spec, line["key"], spec.decode(line["fields"]), line.get("only_if"), then)


class Recorder:
    """Background, ordered, loss-free writes of session rows. One per supervisor; thread-safe."""

    #: Seconds between attempts to reach a failed store.
    retry_interval_s = 1.0
    #: Seconds the writer lets writes gather before committing them (a flush does not wait for it).
    linger_s = 0.05
    #: Queued writes that wake the writer at once.
    wake_at = 500

    #: A fully stored journal this many lines long is deleted and a new one begun.
    rotate_lines = 20_000
    #: Bytes of the journal written through a shared memory map (a sparse file: disk is used only as it fills).
    journal_map_bytes = 64 * 1024 * 1024

    def __init__(self, store: Store, *, spool_dir: str | os.PathLike[str], redactor: Redactor | None = None,
                 write_ahead: bool = True) -> None:
        self.store = store
        self.configured_spool_dir = Path(spool_dir)
        #: Where this recorder's journal goes: the configured folder, or the first fallback that can be written.
        self.spool_dir = self.configured_spool_dir
        self.redactor = redactor or Redactor()
        #: Every write is appended to the journal before the recording call returns (SIGKILL loses nothing);
        #: without it, writes reach the journal only when the store fails (a crash loses the last ``linger_s``).
        self.write_ahead = write_ahead
        #: Writes waiting for the writer, in order. Only the first write of a burst wakes the writer (a thread
        #: switch per row would cost the caller more than the row); it then lets the burst gather for ``linger_s``,
        #: less when a flush, close or a long queue hurries it.
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._queue_lock = threading.Lock()
        #: The journal (spool file) of this process: its path, file descriptor and lines written so far.
        self._journal_path: Path | None = None
        self._journal_fd: int | None = None
        #: The journal's first ``journal_map_bytes`` are memory-mapped: an append is a copy into the page cache
        #: (kept by the kernel when the process is killed), not a system call. Past them, lines are appended.
        self._journal_map: mmap.mmap | None = None
        self._journal_offset = 0
        self._journal_lines = 0
        self._journal_failed = False
        #: Lines of the journal stored (or rejected): the writer's mark; and the last line held while degraded.
        self._handled = 0
        self._held_through = 0
        #: The last resort when no folder can take a journal: rows kept in memory until the store takes them.
        self._held: list[_Write] = []
        self._degraded = False
        self._last_attempt = 0.0
        self._migrated = False
        self._closed = False
        self._closed_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="atlas-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ------------------------------------------------------------------------------------------ callers
    @property
    def degraded(self) -> bool:
        """True while rows are going to the spool instead of the store."""
        return self._degraded

    @property
    def journal_path(self) -> Path | None:
        """This process's journal (a spool file other processes replay if this one dies), once it has one."""
        return self._journal_path

    def insert(self, table: type[SQLModel], /, **fields: Any) -> dict[str, Any]:
        """Enqueue a new row (secrets redacted) and return it, with its id when the writer makes ids."""
        spec = TableSpec.of(table)
        row = spec.row(self.redactor.columns(fields))
        self._submit(_Insert(spec, row))
        return row

    def insert_soon(self, table: type[SQLModel], /, **fields: Any) -> dict[str, Any]:
        """Enqueue a new row and return its fields (secrets redacted, its id made now) for the caller to keep;
        the row is completed for the store (defaults, JSON-safe values, column lengths) in the writer's thread.
        For a table whose id a default factory makes (steps). Unknown column names are an error now."""
        spec = TableSpec.of(table)
        spec.check_columns(fields)
        redacted = self.redactor.columns(fields)
        if redacted.get(spec.primary_key) is None and spec.key_factory is not None:
            redacted[spec.primary_key] = spec.key_factory()
        self._submit(_Insert(spec, fields=dict(redacted)))
        return redacted

    def insert_later(self, table: type[SQLModel], /, **fields: Any) -> None:
        """Enqueue a new row that nobody reads back (an event): it is redacted and completed in the writer's
        thread, not the caller's. Unknown column names are an error now."""
        spec = TableSpec.of(table)
        spec.check_columns(fields)
        self._submit(_Insert(spec, fields=fields, redactor=self.redactor))

    def update(self, table: type[SQLModel], key: Any, /, *, only_if: dict[str, Any] | None = None,
               then: tuple[type[SQLModel], dict[str, Any]] | None = None, **fields: Any) -> None:
        """Enqueue new values for columns of one row; with ``only_if``, only while the row still holds those
        values, and then (in the same transaction) insert ``then``'s row (a table and its fields)."""
        spec = TableSpec.of(table)
        spec.check_columns(fields)
        logged = None
        if then is not None:
            logged = {"table": TableSpec.of(then[0]).name, "row": dict(then[1])}
        # Redacted and made storable in the writer's thread: the values given must not change after the call
        # (the top-level mapping is copied here).
        self._submit(_Update(spec, key, dict(fields), dict(only_if) if only_if is not None else None, logged,
                             redactor=self.redactor))

    def increment(self, table: type[SQLModel], keys: Iterable[Any], /, **deltas: float) -> None:
        """Enqueue ``column = column + delta`` for the rows with these keys. Ordered with the other writes and
        spooled like them (a replay applies each spooled increment once)."""
        spec = TableSpec.of(table)
        spec.check_columns(deltas)
        keys = tuple(keys)
        if keys:
            self._submit(_Increment(spec, keys, {name: float(delta) for name, delta in deltas.items()}))

    def _submit(self, write: _Write) -> None:
        data = _encode(_journal_data(write)) if self.write_ahead else None
        with self._queue_lock:  # the closed check, the append and the wake-up are one step: none is lost
            if not self._closed:
                line = self._journal_append(data) if data is not None else None
                self._queue.append((write, line))
                queued = len(self._queue)
                if queued == 1 or queued >= self.wake_at:
                    self._wake.set()
                if queued >= self.wake_at:
                    self._hurry.set()
                return
        with self._closed_lock:  # the writer thread is gone: write (or spool) in the caller's thread
            log.warning("recorder used after close(); writing a %s row synchronously", write.spec.name)
            self._write([(write, None)])

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything enqueued before this call is committed or spooled. False on timeout."""
        done = threading.Event()
        with self._queue_lock:
            if self._closed:
                return True
            self._queue.append(done)
            self._wake.set()
            self._hurry.set()
        return done.wait(timeout)

    def close(self) -> None:
        """Flush, stop the writer and close the spool file. Safe to call twice."""
        if self._closed:
            return
        self.flush()
        with self._queue_lock:  # nothing is queued after the stop: later writes go the synchronous way
            self._closed = True
            self._queue.append(None)
            self._wake.set()
            self._hurry.set()
        self._thread.join(timeout=30)
        with self._queue_lock:
            self._retire_journal_if_stored()
        if self._journal_fd is not None:  # not all stored: it stays, for the next process to replay
            self._sync_journal()
            self._close_journal()
        atexit.unregister(self.close)

    def replay_spool(self) -> int:
        """Write spool files left by earlier runs to the store, oldest first; returns the rows replayed.

        Files another live process is still writing are skipped. Raises StoreError when the store is down.
        """
        self._ensure_schema()
        replayed = 0
        folders = dict.fromkeys([self.configured_spool_dir, *_fallback_dirs(self.store), self.spool_dir])
        for path in sorted(p for folder in folders for p in folder.glob("spool-*.jsonl")):
            if path == self._journal_path:
                continue
            replayed += self._replay_file(path)
        return replayed

    # ------------------------------------------------------------------------------------------- writer
    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._hurry.wait(self.linger_s)
            self._hurry.clear()
            with self._queue_lock:
                batch = [self._queue.popleft() for _ in range(min(1000, len(self._queue)))]
                if not self._queue:
                    self._wake.clear()  # the next write wakes the writer again (under this lock: never lost)
            writes: list[tuple[_Write, int | None]] = []
            for entry in batch:
                if entry is None:
                    self._write(writes)
                    return
                if isinstance(entry, threading.Event):
                    self._write(writes)
                    writes = []
                    entry.set()
                else:
                    writes.append(entry)
            self._write(writes)

    def _write(self, entries: list[tuple[_Write, int | None]]) -> None:
        """Commit, or hold (in the journal), or reject: whatever happens, never raise (the writer must not die).
        ``entries`` are writes with their journal line (None: not journaled)."""
        if not entries:
            return
        writes = [write for write, _ in entries]
        lines = [line for _, line in entries]
        journal = self._journal_path.name if self._journal_path is not None else None
        last = max((line for line in lines if line is not None), default=None)
        try:
            if self.degraded:
                if time.monotonic() - self._last_attempt < self.retry_interval_s:
                    self._hold(entries)
                    return
                self._recover()
            try:
                self._commit(writes, mark=(journal, last) if journal and last else None)
            except (IntegrityError, DataError):
                marks = [(journal, line) for line in lines] if journal and all(lines) else None
                self._commit_one_by_one(writes, marks=marks)  # type: ignore[arg-type]
            if last is not None:
                self._handled = last
                with self._queue_lock:
                    if self._journal_lines >= self.rotate_lines:
                        self._retire_journal_if_stored()
        except _STORE_DOWN as exc:
            self._last_attempt = time.monotonic()
            # The next attempt starts over: fresh connections (a SQLite file made writable again, a restarted
            # server) and the schema checked again (a database re-created empty gets it).
            self._migrated = False
            self.store.engine.dispose()
            if not self.degraded:
                log.warning("store unavailable, keeping writes in %s: %s", self.spool_dir, str(exc).splitlines()[0])
            self._degraded = True
            self._hold(entries)
        except Exception as exc:  # a bug or a value nothing could store: keep the rows, keep the thread
            log.exception("recorder could not write %d rows; keeping them in %s", len(writes), self._rejected_path())
            self._reject(writes, exc)

    def _hold(self, entries: list[tuple[_Write, int | None]]) -> None:
        """Keep writes the store cannot take now: journaled ones are already on disk; the others go to the
        journal now, or (when no folder takes one) stay in memory."""
        for write, line in entries:
            if line is None:
                with self._queue_lock:
                    line = self._journal_append(_encode(_journal_data(write)))
                if line is None:
                    self._held.append(write)
                    continue
            self._held_through = max(self._held_through, line)
        self._sync_journal()

    def _ensure_schema(self) -> None:
        if not self._migrated:
            self.store.migrate()
            self._migrated = True

    def _commit(self, writes: Iterable[_Write], *, replay: bool = False, mark: tuple[str, int] | None = None) -> None:
        """Write ``writes`` in one transaction; with ``mark`` (a spool file's name, its lines now stored), record
        it in the same transaction, so a later replay of that file starts after them."""
        self._ensure_schema()
        with self.store.engine.begin() as connection:
            if mark is not None:
                marks = SpoolMarkRecord.__table__  # type: ignore[attr-defined]
                name, lines = mark
                if not connection.execute(update(marks).where(marks.c.name == name).values(lines=lines)).rowcount:
                    connection.execute(insert(marks), [{"name": name, "lines": lines}])
            group: list[dict[str, Any]] = []
            group_spec: TableSpec | None = None
            for write in [*writes, None]:
                if group and (write is None or not isinstance(write, _Insert) or write.spec is not group_spec):
                    assert group_spec is not None
                    connection.execute(self._insert_statement(group_spec, replay), group)
                    group = []
                if isinstance(write, _Insert):
                    group_spec = write.spec
                    group.append(write.row)
                elif isinstance(write, _Update):
                    key_column = write.spec.table.c[write.spec.primary_key]
                    statement = update(write.spec.table).where(key_column == write.key)
                    for name, value in (write.only_if or {}).items():
                        statement = statement.where(write.spec.table.c[name] == value)
                    applied = connection.execute(statement.values(**write.fields)).rowcount
                    if write.then is not None and applied:
                        then_spec = TableSpec.of(_table_named(write.then["table"]))
                        connection.execute(insert(then_spec.table), [write.then["row"]])
                elif isinstance(write, _Increment):
                    table = write.spec.table
                    connection.execute(update(table).where(table.c[write.spec.primary_key].in_(write.keys))
                                       .values({table.c[name]: table.c[name] + delta for name, delta in write.deltas.items()}))

    def _insert_statement(self, spec: TableSpec, replay: bool) -> Any:
        if not replay:
            return insert(spec.table)
        if self.store.backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(spec.table).on_conflict_do_nothing()

    def _commit_one_by_one(self, writes: list[_Write], *, replay: bool = False, marks: list[tuple[str, int]] | None = None) -> None:
        """Commit rows singly, moving those the database refuses to the rejected file; ``marks`` (one per write)
        are the spool marks each commit records."""
        for position, write in enumerate(writes):
            mark = marks[position] if marks is not None else None
            try:
                self._commit([write], replay=replay, mark=mark)
            except (IntegrityError, DataError) as exc:
                log.error("store rejected a %s row: %s", write.spec.name, _reason(exc))
                self._reject([write], exc)
                if mark is not None:
                    self._commit([], mark=mark)  # rejected is handled: a replay does not reject it again
            except _STORE_DOWN:
                raise  # the caller holds them all; what was committed is marked, and a replay skips it

    # ------------------------------------------------------------------------------------------ journal
    def _journal_append(self, data: bytes) -> int | None:
        """Append one line to this process's journal (under the queue lock, so the file keeps the queue's order)
        and return its number; None when no folder can take a journal (then rows are kept in memory)."""
        if self._journal_fd is None and not self._open_journal():
            return None
        assert self._journal_fd is not None
        end = self._journal_offset + len(data)
        try:
            if self._journal_map is not None and end <= len(self._journal_map):
                self._journal_map[self._journal_offset:end] = data
                self._journal_offset = end
            else:  # past the mapped part (the store has been down long): appended after it
                os.write(self._journal_fd, data)
        except (OSError, ValueError) as exc:
            log.error("cannot write the journal %s (%s); keeping rows in memory until the store takes them",
                      self._journal_path, exc)
            self._close_journal()
            self._journal_failed = True
            return None
        self._journal_lines += 1
        return self._journal_lines

    def _sync_journal(self) -> None:
        """Push the journal to disk (while the store is down, and at close): a power cut then loses nothing
        either."""
        if self._journal_map is not None:
            self._journal_map.flush()
        if self._journal_fd is not None:
            os.fsync(self._journal_fd)

    def _close_journal(self) -> None:
        if self._journal_map is not None:
            self._journal_map.close()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._journal_map, self._journal_fd, self._journal_offset = None, None, 0

    def _open_journal(self) -> bool:
        if self._journal_failed:
            return False
        for folder in dict.fromkeys([self.configured_spool_dir, *_fallback_dirs(self.store)]):
            path = folder / f"spool-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                log.warning("cannot keep a journal in %s (%s); trying the next folder", folder, exc.strerror or exc)
                continue
            if fcntl is not None:  # held while this process lives: another process's replay skips it
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # a sparse file: the unwritten rest reads as NUL bytes, which replays skip
                os.ftruncate(fd, self.journal_map_bytes)
                self._journal_map = mmap.mmap(fd, self.journal_map_bytes)
            except (OSError, ValueError) as exc:  # no shared maps here: every line is a write() instead
                log.debug("journal %s is not memory-mapped (%s)", path, exc)
                self._journal_map = None
            self._journal_offset = 0
            if folder != self.configured_spool_dir:
                log.warning("storage.spool_dir %s cannot be written; keeping the journal in %s", self.configured_spool_dir, folder)
            self.spool_dir = folder
            self._journal_path, self._journal_fd, self._journal_lines = path, fd, 0
            self._handled = self._held_through = 0
            return True
        self._journal_failed = True
        log.error("no folder can take a journal (storage.spool_dir %s, and the fallbacks); rows are kept in memory "
                  "only until the store takes them: a crash now loses them", self.configured_spool_dir)
        return False

    def _retire_journal_if_stored(self) -> None:
        """Delete the journal once every line of it is stored (under the queue lock); the next write begins a
        new one."""
        if self._journal_fd is None or self._degraded or self._handled < self._journal_lines or self._queue:
            return
        path = self._journal_path
        assert path is not None
        self._close_journal()
        self._journal_path, self._journal_lines = None, 0
        self._handled = self._held_through = 0
        path.unlink(missing_ok=True)
        self._forget_mark(path)

    def _recover(self) -> None:
        """Store what was held while the store was down (raising if it still is), then leave degraded mode: the
        journal's lines up to the last one held (from the store's mark on), then rows kept in memory."""
        if self._journal_path is not None and self._held_through:
            lines = _lines_of(self._journal_path.read_text(encoding="utf-8", errors="replace"))
            count = self._replay_lines(lines[: self._held_through], self._journal_path)
            self._handled = self._held_through
            log.warning("store reachable again: stored %d rows kept in the journal", count)
        if self._held:
            self._commit(self._held, replay=True)
            log.warning("store reachable again: stored %d rows kept in memory", len(self._held))
            self._held = []
        self._degraded = False
        if not self.write_ahead:  # the journal only held what the store could not take: all of it is stored now
            with self._queue_lock:
                self._retire_journal_if_stored()

    def _replay_file(self, path: Path) -> int:
        with open(path, "r+", encoding="utf-8", errors="replace") as handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return 0  # a live process is still spooling here
            count = self._replay_lines(_lines_of(handle.read()), path)
            path.unlink()
        self._forget_mark(path)
        return count

    def _replay_lines(self, lines: list[str], source: Path) -> int:
        """Write spooled lines in one transaction, or row by row when some are refused; raises if the store is down.

        Exactly once: the file's mark (its lines already stored) is read first and written with the rows, so a
        replay interrupted anywhere (before its commit, after it, before the file's deletion) is taken up where
        it stopped, and no line is written twice (increments and review logs included)."""
        self._ensure_schema()
        marks = SpoolMarkRecord.__table__  # type: ignore[attr-defined]
        done = self.store.read(select(marks.c.lines).where(marks.c.name == source.name))
        start = done[0][0] if done else 0
        writes: list[_Write] = []
        positions: list[tuple[str, int]] = []
        for number, line in enumerate(lines[start:], start + 1):
            if not line.strip():
                continue
            try:
                writes.append(_decode_op(json.loads(line)))
                positions.append((source.name, number))
            except (ValueError, KeyError, TypeError) as exc:  # a torn last line after a crash, or a foreign file
                self._append(self._rejected_path(), [{"source": f"{source.name}:{number}", "line": line, "error": str(exc)}])
        try:
            self._commit(writes, replay=True, mark=(source.name, len(lines)))
        except (IntegrityError, DataError):
            self._commit_one_by_one(writes, replay=True, marks=positions)
            self._commit([], mark=(source.name, len(lines)))
        return len(writes)

    def _forget_mark(self, source: Path) -> None:
        """The file is gone: its mark is not needed (best effort; a mark left behind only takes a row)."""
        marks = SpoolMarkRecord.__table__  # type: ignore[attr-defined]
        try:
            with self.store.engine.begin() as connection:
                connection.execute(marks.delete().where(marks.c.name == source.name))
        except SQLAlchemyError as exc:
            log.debug("could not delete the spool mark of %s: %s", source.name, _reason(exc))

    def _reject(self, writes: list[_Write], cause: Exception) -> None:
        try:
            self._append(self._rejected_path(), [{**w.as_json(), "error": _reason(cause)} for w in writes])
        except OSError:
            log.error("could not write rejected rows either; %d rows lost: %s", len(writes), _reason(cause))

    def _rejected_path(self) -> Path:
        return self.spool_dir / f"rejected-{os.getpid()}.jsonl"

    @staticmethod
    def _append(path: Path, lines: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(line, default=str) + "\n")


_STORE_DOWN = (OperationalError, InterfaceError, StoreError, OSError, SQLAlchemyError)


def _lines_of(text: str) -> list[str]:
    """A journal's lines: the memory-mapped part's unwritten rest (NUL bytes, never inside a JSON line) dropped."""
    return text.replace("\x00", "").splitlines()


def _encode(data: dict[str, Any]) -> bytes:
    """One journal line. Values JSON has no type for are written as :func:`_json_safe` stores them."""
    try:
        return orjson.dumps(data, default=_json_safe, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):  # a value orjson refuses (an int past 64 bits, a lone surrogate): the slow way
        return (json.dumps(data, default=_json_safe) + "\n").encode("utf-8", "replace")


def _fallback_dirs(store: Store) -> list[Path]:
    """Folders for a journal when ``storage.spool_dir`` cannot be written, one per store (by its URL): the
    user's state folder, then the temporary folder. A later process looks there too when it replays."""
    url = store.url
    if store.backend == "sqlite" and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return [state / "atlas-plugins" / "spool" / digest, Path(tempfile.gettempdir()) / f"atlas-plugins-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / digest]


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _clean_text(value: str, limit: int | None = None) -> str:
    """Text any backend stores: no NUL bytes (PostgreSQL refuses them), no lone surrogates, within ``limit``."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():  # only non-ASCII text can hold a lone surrogate
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit] if limit is not None and len(value) > limit else value


def _json_safe(value: Any) -> Any:
    """A JSON value every backend takes: containers rebuilt, non-finite floats None, other objects as text."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        return {_clean_text(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return _clean_text(value.decode("utf-8", "replace"))
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _json_safe(dump(mode="json"))
    return _clean_text(str(value))
