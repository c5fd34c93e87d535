"""Export: stored sessions as JSONL traces, chat-format SFT records or GRPO prompt records.

>>> from atlas_learning.export import export_sessions, session_trace
>>> export_sessions(store, "traces.jsonl")                      # approved sessions only (the review gate)
>>> export_sessions(store, "sft.jsonl", format="messages", where=SessionFilter(review_status=None))  # every status
>>> session_trace(store, session_id)["steps"][0]["tool_params"]

**Review gate.** Only approved sessions are exported unless asked: ``where=None``, or a
:class:`~atlas_learning.store.SessionFilter` that leaves ``review_status`` unset, takes approved sessions only;
pending and quarantined sessions appear only when the filter names them in ``review_status`` or sets it to None
(every status, an explicit opt-out).

**Trace format.** One JSON object per line, shaped like the Atlas SDK's ``AtlasSessionTrace`` (its
``to_dict()``: ``task``, ``final_answer``, ``plan``, ``steps``, ``session_metadata``, ``session_reward``,
``trajectory_events``, ``student_learning``, ``teacher_learning``, ``learning_history``, ``adaptive_summary``),
so Atlas Core's ``load_runtime_traces`` reads it. Each step is an ``AtlasStepTrace`` (``step_id``,
``description``, ``trace``, ``output``, ``reward``, ``tool``, ``tool_params``, ``context``, ``validation``,
``attempts``, ``guidance``, ``metadata``, ``runtime``) and every reward an ``AtlasRewardBreakdown`` (``score``,
``rationale``, ``judges``, ``raw``). The SDK exporter's top-level extras are there too (``learning_key``,
``review_status``, ``review_notes``, ``drift``, ``drift_alert``, ``execution_mode``), plus this project's own
(``session_id``, ``lane``, ``attempts``, ``guidance``, ``usage_by_role``, tokens, cost, timestamps). The
JSON Schema is ``session_trace.schema.json`` beside this module (:func:`trace_schema`). How the store maps:

- ``step_id`` is the step's 1-based position (an int, as in Atlas); the store's hex id is ``id`` (with ``kind``
  and ``name``: extra step keys, which Atlas Core's reader folds into the step's metadata).
- ``trace`` is what the step was given (its ``input`` as text); ``output`` its result; ``runtime`` holds
  status, error, tokens, times and duration; ``attempts`` is the answer attempt the step belongs to.
- ``validation`` is the teacher's verdict on that step (``accepted``, ``guidance``, ``reason``; ``{}`` when the
  teacher did not check it); ``guidance`` the teacher's notes on it; ``reward`` its step reward (score None
  when the step was not scored).
- ``session_reward.judges`` groups the stored judge samples by judge (``judge_small``, ``judge_large``); each
  sample keeps its parts (outcome, process, efficiency, confidence) and gets ``score``, the parts weighted
  with the default ``judges.weights`` (the stored sample has no score of its own), and ``uncertainty`` =
  1 - confidence. ``status``, ``breakdown`` (with verifiable ``checks``) and ``escalated`` are as stored;
  ``raw`` is null. A session that no judge could score has ``score`` null: never a made-up 0.
- ``student_learning`` / ``teacher_learning`` are the playbook lessons the session was given, rendered as they
  were injected, from the entries' current text (a lesson refined since shows its new wording).
- ``session_metadata`` is the stored metadata plus what Atlas Core reads from there: ``session_id``,
  ``learning_key``, ``status``, ``review_status``, ``created_at``, ``completed_at``, ``drift_alert``, ``drift``
  and ``teacher_notes`` (every guidance note's text). ``adaptive_summary`` is the lane decision (``adaptive_mode``,
  confidence, reason, source, the probe's signals); ``learning_history`` the lessons used and the learning note.
- ``trajectory_events`` are ``{seq, event_type, actor, payload, created_at}`` in order; ``actor`` is who acted
  (student, teacher, judge, probe, synthesizer, atlas).
- Times are ISO 8601 strings in UTC, ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, formatted by the database.

**Messages format** (SFT, TRL's conversational tool-calling layout): ``{"messages", "tools", "session_id",
"learning_key", "lane", "session_reward"}``, what the student's model was sent and what it produced, each model call
once. ``messages``: the system prompt of the first model call (the integration's own with Atlas's instructions in
it, as the adapter recorded it; absent when it had none), the task as the user, then per model call its output (an
assistant message with ``tool_calls`` ``[{"id", "type": "function", "function": {"name", "arguments"}}]``,
arguments as an object, or its text), each tool result as ``{"role": "tool", "tool_call_id", "name", "content"}``
(with ``"status": "error"`` when the tool raised or its result was marked an error; a handoff answers the transfer call with what the framework returned for it), and the final answer last. When the
system prompt changed between two calls (a rejected step's or answer's guidance, another agent after a handoff),
the new one is a system message before the call that got it: guidance appears where and as the student saw it,
never as a user turn. Rejected answers stay, once, as the model gave them. Calls of a nested agent (an agent used
as a tool) are left out. ``tools``: every tool schema the session's model calls were offered, once by name, as
``[{"type": "function", "function": {"name", "description", "parameters"}}]`` (``[]`` when none was recorded).
For sessions whose integration recorded no system prompt (older sessions; an agent that reports only its tools),
the instructions are rebuilt with :func:`~atlas_learning.student.render_instructions` (lessons, reviewed plan,
concerns, and the guidance from where it was given), the one renderer the run used. Known gap: a framework that
re-runs the agent from its input on a retry (``with_atlas`` on a graph) did not show the model its rejected
attempt; the record keeps it before the retry.

**GRPO format**: prompt-only records for TRL's GRPOTrainer: ``prompt`` (the messages the teacher gets when it
executes a task itself, with its lessons), and the columns reward functions read: ``task``, ``final_answer``,
``session_reward``, ``learning_key``, ``session_id``, ``lane``, ``verifiable_outcome`` (mean of the session's
verifiable checks, null without checks), ``checks`` (``{name: score}`` or null) and ``ground_truth``
(``session_metadata["ground_truth"]`` or ``["expected_answer"]``, else null).

**Scale.** Sessions are read a page at a time with keyset pagination on ``(started_at, id)``, oldest first,
and each page's children with one query per child table (the page's ids as one parameter, each query compiled
once per export), so memory stays flat whatever the count. On PostgreSQL two reader threads fetch the next pages'
children while one is built, each on a connection of its own, all in the one REPEATABLE READ snapshot the export
exports (at most four pages in memory). Child rows come from the driver's cursor as plain tuples; JSON and time
columns are read as text (no ORM objects, no decoding into Python and encoding again where a value passes
through unchanged); in the trace format the database assembles each step's JSON, and a trace line is assembled
as text; :func:`session_trace` and :func:`get_training_sessions` parse those lines. Key order inside stored JSON
values is the backend's (PostgreSQL's JSONB orders keys its own way), and inside a step ``reward``,
``validation`` and ``guidance`` come last.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import json
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, TextIO

import orjson
from sqlalchemy import (
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from .config import JudgesConfig
from .store import SessionFilter, Store
from .store.tables import (
    AttemptRecord,
    GuidanceRecord,
    PlanRecord,
    PlaybookEntryRecord,
    RewardRecord,
    SessionRecord,
    StepRecord,
    TrajectoryEventRecord,
)

__all__ = [
    "EXPORT_FORMATS",
    "DEFAULT_REVIEW_STATUSES",
    "SCHEMA_PATH",
    "session_trace",
    "export_sessions",
    "iter_records",
    "get_training_sessions",
    "trace_schema",
]

EXPORT_FORMATS = ("trace", "messages", "grpo")
#: What export and training read when not told otherwise: the review gate.
DEFAULT_REVIEW_STATUSES: tuple[str, ...] = ("approved",)
SCHEMA_PATH = Path(__file__).with_name("session_trace.schema.json")
#: Sessions per page: children are fetched for a page at a time.
PAGE_SIZE = 500
#: Threads that read pages ahead on PostgreSQL, each on a connection of its own (in the export's snapshot).
READERS = 2

_S = SessionRecord.__table__  # type: ignore[attr-defined]
_STEPS = StepRecord.__table__  # type: ignore[attr-defined]
_REWARDS = RewardRecord.__table__  # type: ignore[attr-defined]
_PLANS = PlanRecord.__table__  # type: ignore[attr-defined]
_ATTEMPTS = AttemptRecord.__table__  # type: ignore[attr-defined]
_GUIDANCE = GuidanceRecord.__table__  # type: ignore[attr-defined]
_EVENTS = TrajectoryEventRecord.__table__  # type: ignore[attr-defined]
_ENTRIES = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False).encode
try:  # the C encoder made once, not per call as JSONEncoder.encode does: a third faster on small values
    from json.encoder import c_make_encoder

    _C_ENCODE = c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, False)
    if "".join(_C_ENCODE({"a": [1.5, None, True, "é"]}, 0)) == _DUMPS({"a": [1.5, None, True, "é"]}):
        _DUMPS = lambda value: "".join(_C_ENCODE(value, 0))  # noqa: E731
except (ImportError, TypeError):  # pragma: no cover - another Python's json internals
    pass
_PY_DUMPS = _DUMPS
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _DUMPS(value: Any) -> str:  # noqa: N802 - the encoder's name above
    """``value`` as compact JSON text (non-ASCII as it is): orjson, three times the C encoder's speed; what it
    refuses (an int past 64 bits, a lone surrogate) the json module writes. Non-finite floats are null."""
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _PY_DUMPS(value)


_STR = encode_basestring  # a str as a JSON string literal (the C encoder)
_LARGEST = 1.7976931348623157e308  # the largest finite float
#: The default judge weights, for a score per judge sample (samples store their parts only).
_WEIGHTS: dict[str, float] = dict(JudgesConfig().weights)
_NO_STEP_REWARD = '{"score":null,"rationale":null,"judges":[],"raw":null}'
#: Event type -> its ``"event_type":...,"actor":...`` JSON members, made once per type.
_EVENT_KINDS: dict[str, str] = {}

#: Who acts in each kind of trajectory event (the SDK's ``actor``).
_ACTORS = {
    "session_started": "atlas",
    "lane_chosen": "probe",
    "plan_reviewed": "teacher",
    "step": "student",
    "model_call": "student",
    "span": "student",
    "verdict": "teacher",
    "retry": "teacher",
    "escalated": "teacher",
    "reward": "judge",
    "lesson_added": "synthesizer",
    "lesson_refined": "synthesizer",
    "lesson_confirmed": "synthesizer",
    "lesson_activated": "synthesizer",
    "lesson_retired": "synthesizer",
    "drift_alert": "atlas",
    "session_finished": "atlas",
    "store_degraded": "atlas",
}


# ------------------------------------------------------------------------------------------------ public API
def trace_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of one trace record."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def session_trace(store: Store, session_id: str) -> dict[str, Any] | None:
    """One session as an AtlasSessionTrace-shaped dict, whatever its review status; None if there is none."""
    try:
        with store.engine.connect() as connection:
            reader = _Reader(connection)
            rows = connection.execute(select(*reader.session_columns()).where(_S.c.id == session_id)).all()
            if not rows:
                return None
            return json.loads(reader.page(rows, "trace").records("trace")[0])
    except SQLAlchemyError as exc:
        raise store.as_store_error(exc) from None


def iter_records(store: Store, *, format: str = "trace", where: SessionFilter | None = None,
                 page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
    """The records :func:`export_sessions` writes, as dicts, one page of ``page_size`` sessions in memory at a time."""
    for page in _iter_pages(store, format, where, page_size):
        for line in page:
            yield json.loads(line) if isinstance(line, str) else line


def export_sessions(
    store: Store,
    destination: str | os.PathLike[str] | TextIO,
    *,
    format: str = "trace",
    where: SessionFilter | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write matching sessions to ``destination`` as JSONL, oldest first, and return how many were written.

    ``destination`` is a path (written to a temporary file beside it and renamed at the end, so a failed export
    leaves no half file) or an open text file. ``format`` is one of :data:`EXPORT_FORMATS`. ``where=None`` is the
    review gate: approved sessions only. ``progress`` is called with the running count after every page.
    """
    _check_format(format)
    if hasattr(destination, "write"):
        return _write(store, destination, format, where, progress)
    path = Path(os.fspath(destination))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as handle:
            count = _write(store, handle, format, where, progress)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def get_training_sessions(
    db_url: str | Store,
    *,
    min_reward: float | None = None,
    learning_key: str | None = None,
    review_status: Sequence[str] | None = DEFAULT_REVIEW_STATUSES,
    since: datetime | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Trace dicts for training, oldest first: approved sessions unless ``review_status`` says otherwise.

    ``review_status=None`` reads every status (an explicit opt-out of the review gate). ``db_url`` is a store URL
    (reading neither creates nor upgrades the schema) or an open :class:`Store`.
    """
    if isinstance(review_status, str):
        review_status = (review_status,)
    where = SessionFilter(learning_key=learning_key, review_status=review_status, min_reward=min_reward,
                          since=since, limit=limit, offset=offset)
    if isinstance(db_url, Store):
        return list(iter_records(db_url, where=where))
    with Store(db_url, migrate=False) as store:
        return list(iter_records(store, where=where))


# -------------------------------------------------------------------------------------------------- paging
def _check_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")


def _write(store: Store, handle: Any, format: str, where: SessionFilter | None, progress: Callable[[int], None] | None) -> int:
    count = 0
    for page in _iter_pages(store, format, where, PAGE_SIZE):
        if format == "trace":
            handle.write("\n".join(page))
        else:
            handle.write("\n".join([_DUMPS(record) for record in page]))
        handle.write("\n")
        count += len(page)
        if progress is not None:
            progress(count)
    return count


def _iter_pages(store: Store, format: str, where: SessionFilter | None, page_size: int) -> Iterator[list[Any]]:
    """Pages of records: JSON lines for ``trace``, dicts for the other formats.

    On PostgreSQL, :data:`READERS` threads read the next pages (each on a connection of its own, all in the
    export's one snapshot) while this one is built: at most ``READERS + 2`` pages in memory."""
    _check_format(format)
    where = (where or SessionFilter()).gated(DEFAULT_REVIEW_STATUSES)

    def fetched() -> Iterator[_Page]:
        with store.engine.connect() as connection:
            reader = _Reader(connection)
            for rows in reader.session_pages(where, page_size):
                yield reader.page(rows, format)

    # PostgreSQL works in its own processes, so reading ahead overlaps its work with ours; SQLite works in this
    # process (and an in-memory SQLite database is a different one in another thread): read in turn.
    pages = _postgres_pages(store, format, where, page_size) if store.backend == "postgresql" else fetched()
    try:
        while True:
            with _collector_paused():  # reading and building a page, never while the caller holds one
                page = next(pages, None)
                if page is None:
                    return
                records = page.records(format)
            yield records
    except SQLAlchemyError as exc:
        raise store.as_store_error(exc) from None
    finally:
        pages.close()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a page is read and built: tens of thousands of short-lived rows,
    strings and dicts, none in a cycle, set off a collection every 700 allocations (a tenth of an export's time at
    10,000 sessions). Restored as it was; a page takes tens of milliseconds."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _snapshot_reader(connection: Connection) -> None:
    """Start ``connection``'s REPEATABLE READ transaction as an export reads: a page's children are a few rows
    of each child table found by session id through its index, which the planner prices, for 500 ids, above a
    full scan of the table per page (measured: 14 against 9 ms per page of steps at 5,000 sessions, and the scan
    grows with the table). For this transaction only."""
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")


def _postgres_pages(store: Store, format: str, where: SessionFilter, page_size: int) -> Iterator[_Page]:
    """Pages read by :data:`READERS` threads, in order: session pages on this thread's connection, each page's
    children on a reader's. Every connection reads the snapshot this one exports (``pg_export_snapshot``), so the
    export is one consistent view; where a server cannot export one (a standby), one thread reads ahead on this
    connection instead."""
    from concurrent.futures import Future, ThreadPoolExecutor

    with store.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
        try:
            snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        except SQLAlchemyError:  # a hot standby exports no snapshot
            connection.rollback()
            snapshot = None
        _snapshot_reader(connection)
        keys = _Reader(connection)
        if snapshot is None or READERS < 1:
            def in_turn() -> Iterator[_Page]:
                for rows in keys.session_pages(where, page_size):
                    yield keys.page(rows, format)

            yield from _read_ahead(in_turn())
            return
        local = threading.local()
        opened: list[Connection] = []
        opened_lock = threading.Lock()

        def read(rows: list[Any]) -> _Page:
            reader = getattr(local, "reader", None)
            if reader is None:
                own = store.engine.connect().execution_options(isolation_level="REPEATABLE READ")
                with opened_lock:
                    opened.append(own)
                own.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                _snapshot_reader(own)
                reader = local.reader = _Reader(own)
            return reader.page(rows, format)

        pool = ThreadPoolExecutor(READERS, thread_name_prefix="atlas-export-reader")
        pending: collections.deque[Future[_Page]] = collections.deque()
        try:
            for rows in keys.session_pages(where, page_size):
                pending.append(pool.submit(read, rows))
                if len(pending) > READERS:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            for own in opened:
                own.close()


def _read_ahead(pages: Iterator[_Page], depth: int = 1) -> Iterator[_Page]:
    """``pages`` produced by a thread of their own, ``depth`` pages ahead; its errors are raised here."""
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        slots.put(("page", page), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put(("error", exc))
        finally:
            pages.close()

    thread = threading.Thread(target=produce, name="atlas-export-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "page":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class _Reader:
    """Core selects whose JSON and time columns come back as text, on SQLite and PostgreSQL alike."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"
        #: Each child query compiled once for the whole export: (SQL, parameter order, constant parameters).
        self._compiled: dict[str, tuple[str, Any, dict[str, Any]]] = {}

    def among(self, column: Any) -> Any:
        """``column`` is one of the ids given as the ``among`` parameter (:meth:`among_value`): one parameter,
        whatever the number of ids, so one statement and one plan serve every page. PostgreSQL: ``= ANY(array)``;
        SQLite: ``IN (SELECT value FROM json_each(?))``, searched through the same index as an IN list."""
        if self.postgres:
            return column == any_(bindparam("among", type_=ARRAY(String)))
        return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam("among", type_=Text))))

    def among_value(self, ids: list[str]) -> Any:
        return ids if self.postgres else json.dumps(ids)

    def json(self, column: Any) -> Any:
        """A JSON column as its JSON text (None for SQL NULL)."""
        return cast(column, Text) if self.postgres else type_coerce(column, Text)

    def time(self, column: Any) -> Any:
        """A time column as a JSON literal made by the database: ``"YYYY-MM-DDTHH:MM:SS.ffffff+00:00"`` (UTC) or ``null``.

        SQLite holds times as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC: how SQLAlchemy writes them (UTCDateTime)."""
        if self.postgres:
            iso = func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
            return func.coalesce(literal('"') + iso + literal('"'), literal("null"))
        text_ = type_coerce(column, Text)
        return case((text_.is_(None), literal("null")), else_=literal('"') + func.replace(text_, " ", "T") + literal('+00:00"'))

    def string(self, column: Any) -> Any:
        """A text column as a JSON string literal (``null`` for NULL), made by the database: the same string as
        Python's encoder gives (control characters, quotes and backslashes escaped, other characters as they are)."""
        if self.postgres:
            return func.coalesce(cast(func.to_json(column), Text), _sql("null"))
        return func.json_quote(column)

    def step_head(self) -> Any:
        """A step as its trace JSON up to ``"duration_ms":`` (the rest, with its reward, validation and guidance, is
        added in Python): one text column instead of nineteen, assembled by the database."""
        t, string, json_ = _STEPS.c, self.string, self.json

        def number(column: Any) -> Any:
            return func.coalesce(cast(column, Text), _sql("null"))

        def nothing(text: Any) -> Any:
            return or_(text.is_(None), text == "null")

        given, args, metadata = json_(t.input), json_(t.tool_args), json_(t.step_metadata)
        trace = case((nothing(given), _sql('""')), (func.substr(given, 1, 1) == '"', given), else_=string(given))
        params = case((nothing(args), _sql("{}")), (func.substr(args, 1, 1) == "{", args),
                      else_=_concat(_sql('{"args":'), args, _sql("}")))
        return _concat(
            _sql('{"step_id":'), number(t.step_index + 1), _sql(',"description":'),
            string(func.coalesce(func.nullif(t.description, ""), t.name)), _sql(',"trace":'), trace,
            _sql(',"output":'), string(func.coalesce(t.output, "")), _sql(',"tool":'), string(t.tool_name),
            _sql(',"tool_params":'), params, _sql(',"context":{},"attempts":'), number(t.attempt),
            _sql(',"metadata":'), case((nothing(metadata), _sql("{}")), else_=metadata),
            _sql(',"id":'), string(t.id), _sql(',"kind":'), string(t.kind), _sql(',"name":'), string(t.name),
            _sql(',"runtime":{"status":'), string(t.status), _sql(',"error":'), string(t.error),
            _sql(',"input_tokens":'), number(t.input_tokens), _sql(',"output_tokens":'), number(t.output_tokens),
            _sql(',"started_at":'), self.time(t.started_at), _sql(',"ended_at":'), self.time(t.ended_at),
            _sql(',"duration_ms":'),
        )

    def session_columns(self) -> list[Any]:
        c = _S.c
        return [
            c.id, c.started_at.label("key_started_at"), c.learning_key, c.agent_name, c.task, c.lane, c.lane_confidence,
            c.lane_reason, c.lane_source, c.status, c.final_answer, c.reward, c.review_status, c.review_note, c.drift_alert,
            c.drift_reason, c.interventions, c.retries, self.json(c.lessons_used).label("lessons_used"),
            self.json(c.usage_by_role).label("usage_by_role"), c.total_tokens, c.total_cost_usd,
            self.json(c.session_metadata).label("session_metadata"), self.time(c.started_at).label("started_at"),
            self.time(c.finished_at).label("finished_at"),
        ]

    def session_pages(self, where: SessionFilter, page_size: int) -> Iterator[list[Any]]:
        """Pages of session rows in (started_at, id) order: keyset pagination after the filter's offset, up to its limit."""
        base = dataclasses.replace(where, limit=None, offset=0).apply(select(*self.session_columns())).order_by(None)
        remaining = where.limit
        after: tuple[datetime, str] | None = None
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            statement = base
            if after is not None:
                started, last_id = after  # the plain >= lets the (review_status, started_at) index bound the scan
                statement = statement.where(_S.c.started_at >= started,
                                            or_(_S.c.started_at > started, and_(_S.c.started_at == started, _S.c.id > last_id)))
            elif where.offset:
                statement = statement.offset(where.offset)
            rows = self.connection.execute(statement.order_by(_S.c.started_at, _S.c.id).limit(size)).all()
            if not rows:
                return
            yield rows
            if len(rows) < size:
                return
            if remaining is not None:
                remaining -= len(rows)
            after = (rows[-1].key_started_at, rows[-1].id)

    def grouped(self, name: str, build: Callable[[], Any], ids: list[str], *, raw: bool = True) -> dict[str, list[Any]]:
        """The rows of the child query ``name`` (``build()`` makes it, once per export) for the sessions ``ids``,
        grouped by their first column, a session id (order kept).

        ``raw``: the statement runs on the driver's own cursor in this connection's transaction and its rows are
        the driver's tuples, without SQLAlchemy's row objects and result processing (half the time of a page's
        steps and rewards); only for columns whose driver values are the values wanted (text, numbers; a SQLite
        boolean comes back as 0/1: ``raw=False``)."""
        if raw:
            rows: Any = self._driver_rows(name, build, ids)
        else:
            rows = self.connection.execute(build(), {"among": self.among_value(ids)})
        groups: dict[str, list[Any]] = {}
        for row in rows:
            group = groups.get(row[0])
            if group is None:
                groups[row[0]] = [row]
            else:
                group.append(row)
        return groups

    def _driver_rows(self, name: str, build: Callable[[], Any], ids: list[str]) -> list[tuple[Any, ...]]:
        compiled = self._compiled.get(name)
        if compiled is None:
            statement = build().compile(dialect=self.connection.dialect)
            constants = statement.construct_params({"among": self.among_value([])})  # the ids are set per page
            compiled = self._compiled[name] = (statement.string, statement.positiontup, constants)
        sql, order, constants = compiled
        params: Any = {**constants, "among": self.among_value(ids)}
        if order is not None:  # SQLite's qmark style
            params = [params[key] for key in order]
        cursor = self.connection.connection.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            cursor.close()

    def page(self, sessions: list[Any], format: str) -> _Page:
        """A page of sessions with their children: every child table read once for the whole page."""
        ids = [s.id for s in sessions]
        json_, time_, among, grouped = self.json, self.time, self.among, self.grouped
        steps = plans = attempts = guidance = events = step_rewards = {}
        s, p, a, g, e, r = _STEPS.c, _PLANS.c, _ATTEMPTS.c, _GUIDANCE.c, _EVENTS.c, _REWARDS.c
        if format == "trace":
            steps = grouped("trace steps", lambda: select(s.session_id, s.id, self.step_head(), s.duration_ms)
                            .where(among(s.session_id)).order_by(s.session_id, s.step_index), ids)
        elif format != "grpo":
            steps = grouped("steps", lambda: select(
                s.session_id, s.id, s.step_index, s.attempt, s.kind, s.name, s.description, s.tool_name, json_(s.tool_args),
                json_(s.input), s.output, s.error, s.status, s.input_tokens, s.output_tokens, time_(s.started_at),
                time_(s.ended_at), s.duration_ms, json_(s.step_metadata),
            ).where(among(s.session_id)).order_by(s.session_id, s.step_index), ids)
        if format != "grpo":
            plans = grouped("plans", lambda: select(p.session_id, p.kind, json_(p.steps), json_(p.concerns))
                            .where(among(p.session_id)).order_by(p.session_id, p.id), ids)
            attempts = grouped("attempts", lambda: select(a.session_id, a.attempt, a.answer, a.accepted, a.verdict_reason, a.guidance,
                                                          time_(a.created_at), a.checks)
                               .where(among(a.session_id)).order_by(a.session_id, a.attempt, a.id), ids, raw=False)
            guidance = grouped("guidance", lambda: select(g.session_id, g.step_id, g.source, g.kind, g.content, time_(g.created_at))
                               .where(among(g.session_id)).order_by(g.session_id, g.id), ids)
        if format == "trace":
            events = grouped("events", lambda: select(e.session_id, e.seq, e.event_type, json_(e.payload), time_(e.created_at))
                             .where(among(e.session_id)).order_by(e.session_id, e.seq), ids)
            step_rewards = grouped("step rewards", lambda: select(r.session_id, r.step_id, r.score, r.reason)
                                   .where(among(r.session_id), r.scope == "step").order_by(r.session_id, r.scope, r.id), ids)
        # the session's reward in full; steps' rewards (trace only) with what a step shows
        rewards = grouped("rewards", lambda: select(r.session_id, r.step_id, r.scope, r.score, r.status, r.reason, json_(r.breakdown),
                                                    json_(r.samples), r.escalated, time_(r.created_at))
                          .where(among(r.session_id), r.scope == "session").order_by(r.session_id, r.scope, r.id), ids)
        lessons_used = {row.id: _load(row.lessons_used) or [] for row in sessions}
        wanted = sorted({entry_id for used in lessons_used.values() for entry_id in used})
        entries: dict[str, Any] = {}
        t = _ENTRIES.c
        if wanted:
            statement = select(t.id, t.audience, t.kind, t.lesson, t.applies_when).where(among(t.id))
            for row in self.connection.execute(statement, {"among": self.among_value(wanted)}):
                entries[row.id] = row
        return _Page(sessions, lessons_used, entries, steps, rewards, step_rewards, plans, attempts, guidance, events)


def _sql(text: str) -> Any:
    """A constant SQL text literal (written into the statement, not a parameter)."""
    return literal_column("'" + text.replace("'", "''") + "'", Text)


def _concat(*parts: Any) -> Any:
    """SQL ``a || b || ...`` (NULL if any part is NULL: every part here has its own NULL case)."""
    expression = parts[0]
    for part in parts[1:]:
        expression = expression.op("||")(part)
    return expression


@dataclasses.dataclass
class _Page:
    """A page of sessions and their children (raw rows grouped by session id)."""

    sessions: list[Any]
    lessons_used: dict[str, list[str]]
    entries: dict[str, Any]
    steps: dict[str, list[Any]]
    rewards: dict[str, list[Any]]
    step_rewards: dict[str, list[Any]]
    plans: dict[str, list[Any]]
    attempts: dict[str, list[Any]]
    guidance: dict[str, list[Any]]
    events: dict[str, list[Any]]

    def records(self, format: str) -> list[Any]:
        none: list[Any] = []
        records = []
        for s in self.sessions:
            sid = s.id
            used = [self.entries[i] for i in self.lessons_used[sid] if i in self.entries]
            if format == "trace":
                records.append(_trace_line(s, used, self.steps.get(sid, none), self.rewards.get(sid, none),
                                           self.step_rewards.get(sid, none), self.plans.get(sid, none),
                                           self.attempts.get(sid, none), self.guidance.get(sid, none), self.events.get(sid, none)))
            elif format == "messages":
                records.append(_messages(s, used, self.steps.get(sid, none), self.rewards.get(sid, none), self.plans.get(sid, none),
                                         self.attempts.get(sid, none), self.guidance.get(sid, none)))
            else:
                records.append(_grpo(s, used, self.rewards.get(sid, none)))
        return records


# ----------------------------------------------------------------------------------------------- encoding
def _load(raw: str | None) -> Any:
    """A JSON column's text as Python (None for SQL NULL or JSON null). SQLite gives a bare JSON number back as a
    number (the column's numeric affinity): it is its own value."""
    if not isinstance(raw, str):
        return raw
    if raw == "null":
        return None
    if raw == "{}":
        return {}
    if raw == "[]":
        return []
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # a number past 64 bits, which the json module reads
        return json.loads(raw)


def _raw(raw: str | None, empty: str) -> str:
    """A JSON column's text to splice into a line as it is; ``empty`` for SQL NULL or JSON null."""
    return empty if raw is None or raw == "null" else raw


def _ostr(value: str | None) -> str:
    return "null" if value is None else _STR(value)


def _num(value: float | int | None) -> str:
    """A number as JSON (null for None, NaN and the infinities, which the comparison leaves out)."""
    if value is not None and -_LARGEST <= value <= _LARGEST:
        return repr(value)
    return "null"


def _iso(time_json: str) -> str | None:
    """A time read by :meth:`_Reader.time` as a plain string (None for null)."""
    return None if time_json == "null" else time_json[1:-1]


# ------------------------------------------------------------------------------------------------ builders
def _lessons(entries: list[Any], audience: str) -> str | None:
    """Playbook entries of one audience rendered as they are injected; None when there are none."""
    chosen = [e for e in entries if e.audience == audience]
    if not chosen:
        return None
    from .playbook import render_playbook

    return render_playbook(chosen)


def _sample_score(sample: dict[str, Any]) -> float | None:
    """A judge sample's score: its own, else its parts weighted with the default judge weights; None without either."""
    score = sample.get("score")
    if isinstance(score, (int, float)):
        return float(score)
    total = weight = 0.0
    for part, part_weight in _WEIGHTS.items():
        value = sample.get(part)
        if isinstance(value, (int, float)):
            total += value * part_weight
            weight += part_weight
    return total / weight if weight else None


def _judges(samples: list[dict[str, Any]], escalated: bool, reason: str | None) -> list[dict[str, Any]]:
    """Stored judge samples as AtlasJudgeBreakdown dicts, one per judge, in the order the judges answered."""
    judges: dict[str, dict[str, Any]] = {}
    for sample in samples:
        converted = dict(sample)
        name = str(converted.pop("judge", None) or "judge")
        judge = judges.get(name)
        if judge is None:
            judge = judges[name] = {"identifier": f"judge_{name}", "score": None, "rationale": "", "principles": [],
                                    "samples": [], "escalated": False, "escalation_reason": None}
        confidence = sample.get("confidence")
        rationale = sample.get("rationale")
        converted["score"] = _sample_score(sample)
        converted["rationale"] = rationale or sample.get("error") or ""
        converted["principles"] = sample.get("principles") or []
        converted["uncertainty"] = 1.0 - confidence if isinstance(confidence, (int, float)) else None
        converted["temperature"] = sample.get("temperature")
        judge["samples"].append(converted)
        if rationale and not judge["rationale"]:
            judge["rationale"] = rationale
    for judge in judges.values():
        scores = [s["score"] for s in judge["samples"] if s["score"] is not None]
        judge["score"] = sum(scores) / len(scores) if scores else None
    small = judges.get("small")
    if escalated and small is not None:
        small["escalated"], small["escalation_reason"] = True, reason
    return list(judges.values())


def _session_reward(row: Any) -> str:
    """The session reward row as an AtlasRewardBreakdown JSON object."""
    _, _, _, score, status, reason, breakdown, samples, escalated, created_at = row
    judges = _judges(_load(samples) or [], bool(escalated), reason)
    return (f'{{"score":{_num(score)},"rationale":{_ostr(reason)},"judges":{_DUMPS(judges)},"raw":null,'
            f'"status":{_STR(status)},"breakdown":{_raw(breakdown, "{}")},"escalated":{"true" if escalated else "false"},'
            f'"created_at":{created_at}}}')


def _session_reward_row(rewards: list[Any]) -> Any:
    return rewards[-1] if rewards else None


def _plan_rows(plans: list[Any]) -> tuple[Any, Any, Any]:
    """(the plan followed: the teacher's reviewed plan, else the student's; the proposal; the review)."""
    proposed = next((p for p in plans if p[1] == "proposed"), None)
    reviewed = next((p for p in reversed(plans) if p[1] == "reviewed"), None)
    return reviewed or (plans[-1] if plans else None), proposed, reviewed


def _trace_line(s: Any, entries: list[Any], steps: list[Any], rewards: list[Any], step_reward_rows: list[Any], plans: list[Any],
                attempts: list[Any], guidance: list[Any], events: list[Any]) -> str:
    """One session as a JSON line (AtlasSessionTrace), assembled as text; the schema is session_trace.schema.json."""
    validations: dict[str, str] = {}
    event_parts = []
    for _, seq, event_type, payload, created_at in events:
        if event_type == "verdict":
            verdict = _load(payload) or {}
            if verdict.get("step_id"):
                validations[verdict["step_id"]] = _DUMPS({"accepted": verdict.get("accepted"), "guidance": verdict.get("guidance") or "",
                                                          "reason": verdict.get("reason") or ""})
        kind = _EVENT_KINDS.get(event_type)
        if kind is None:
            kind = _EVENT_KINDS[event_type] = f'"event_type":{_STR(event_type)},"actor":"{_ACTORS.get(event_type, "atlas")}"'
        event_parts.append(f'{{"seq":{seq},{kind},"payload":{_raw(payload, "{}")},"created_at":{created_at}}}')
    step_rewards = {row[1]: row for row in step_reward_rows}
    step_guidance: dict[str, list[str]] = {}
    notes = []
    for _, step_id, source, kind, content, created_at in guidance:
        if step_id is not None:
            step_guidance.setdefault(step_id, []).append(content)
        notes.append({"kind": kind, "source": source, "content": content, "step_id": step_id, "created_at": _iso(created_at)})

    step_parts = []
    num, ostr, reward_of = _num, _ostr, step_rewards.get
    for _, step_id, head, duration_ms in steps:  # the step's JSON up to its duration, made by the database
        reward = reward_of(step_id)
        reward_json = _NO_STEP_REWARD if reward is None else f'{{"score":{num(reward[2])},"rationale":{ostr(reward[3])},"judges":[],"raw":null}}'
        notes_for_step = step_guidance.get(step_id) if step_guidance else None
        step_parts.append(
            f'{head}{num(duration_ms)}}},"reward":{reward_json},'
            f'"validation":{validations.get(step_id, "{}") if validations else "{}"},'
            f'"guidance":{_DUMPS(notes_for_step) if notes_for_step else "[]"}}}'
        )

    chosen, proposed, reviewed = _plan_rows(plans)
    plan = (f'{{"steps":{_raw(chosen[2], "[]") if chosen else "[]"},"concerns":{_raw(reviewed[3], "[]") if reviewed else "[]"},'
            f'"reviewed":{"true" if reviewed else "false"},"proposed_steps":{_raw(proposed[2], "[]") if proposed else "null"}}}')
    session_reward = _session_reward_row(rewards)
    started_at, finished_at = _iso(s.started_at), _iso(s.finished_at)
    drift = {"drift_alert": bool(s.drift_alert), "reason": s.drift_reason}
    drift_json = f'{{"drift_alert":{"true" if s.drift_alert else "false"},"reason":{_ostr(s.drift_reason)}}}'
    metadata = _load(s.session_metadata) or {}
    signals = metadata.get("lane_signals")
    learning_note = metadata.get("learning")
    metadata.update({
        "session_id": s.id, "learning_key": s.learning_key, "agent_name": s.agent_name, "status": s.status,
        "review_status": s.review_status, "created_at": started_at, "completed_at": finished_at,
        "drift_alert": drift["drift_alert"], "drift": drift, "teacher_notes": [note["content"] for note in notes],
    })
    adaptive = {"adaptive_mode": s.lane, "confidence": s.lane_confidence, "reason": s.lane_reason, "source": s.lane_source,
                "signals": signals if isinstance(signals, dict) else {}}
    attempts_json = _DUMPS([{"attempt": a[1], "answer": a[2], "accepted": a[3], "verdict_reason": a[4], "guidance": a[5],
                             "created_at": _iso(a[6]), "checks": a[7]} for a in attempts]) if attempts else "[]"
    used = _raw(s.lessons_used, "[]")
    lane = _ostr(s.lane)
    return (
        f'{{"task":{_STR(s.task)},"final_answer":{_ostr(s.final_answer)},"plan":{plan},"steps":[{",".join(step_parts)}],'
        f'"session_metadata":{_DUMPS(metadata)},"session_reward":{_session_reward(session_reward) if session_reward else "null"},'
        f'"trajectory_events":[{",".join(event_parts)}],"student_learning":{_ostr(_lessons(entries, "student")) if entries else "null"},'
        f'"teacher_learning":{_ostr(_lessons(entries, "teacher")) if entries else "null"},'
        f'"learning_history":{{"lessons_used":{used},"note":{_ostr(learning_note) if learning_note is None or isinstance(learning_note, str) else _DUMPS(learning_note)}}},"adaptive_summary":{_DUMPS(adaptive)},'
        f'"session_id":{_STR(s.id)},"learning_key":{_STR(s.learning_key)},"agent_name":{_STR(s.agent_name)},'
        f'"status":{_STR(s.status)},"lane":{lane},"execution_mode":{lane},"review_status":{_STR(s.review_status)},'
        f'"review_notes":{_ostr(s.review_note)},"drift_alert":{"true" if drift["drift_alert"] else "false"},"drift":{drift_json},'
        f'"attempts":{attempts_json},"guidance":{_DUMPS(notes) if notes else "[]"},"usage_by_role":{_raw(s.usage_by_role, "{}")},'
        f'"total_tokens":{s.total_tokens},"total_cost_usd":{_num(s.total_cost_usd)},"interventions":{s.interventions},'
        f'"retries":{s.retries},"lessons_used":{used},"started_at":{s.started_at},"finished_at":{s.finished_at}}}'
    )


def _model_output(output: str | None) -> tuple[str, list[dict[str, Any]]]:
    """A model call's stored output as (text, tool calls): the core's turn layout (``{"content", "tool_calls"}``,
    :func:`~atlas_learning.student.model_turn`), also as older sessions stored it (a message as JSON), else text."""
    if not output:
        return "", []
    if output[0] == "{":
        try:
            value = json.loads(output)
        except ValueError:
            return output, []
        from .student import model_turn

        turn = model_turn(value) if isinstance(value, dict) else value
        if isinstance(turn, str):
            return turn, []
        if isinstance(turn, dict) and isinstance(turn.get("tool_calls"), list) and isinstance(turn.get("content"), str):
            return turn["content"], [c for c in turn["tool_calls"] if isinstance(c, dict) and c.get("name")]
    return output, []


def _arguments(value: Any) -> Any:
    """Tool arguments as an object (TRL's layout): an object as it is, JSON text of one parsed, else under ``args``."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"args": value}
        value = parsed
    if isinstance(value, dict):
        return value
    return {} if value is None else {"args": value}


def _messages(s: Any, entries: list[Any], steps: list[Any], rewards: list[Any], plans: list[Any], attempts: list[Any],
              guidance: list[Any]) -> dict[str, Any]:
    """One session as a conversational SFT record: what the student's model was given and produced (module docs)."""
    from .student import render_instructions, tool_schema

    chosen, _, reviewed = _plan_rows(plans)
    plan = [p.get("description", "") for p in ((_load(reviewed[2]) or []) if reviewed else [])]
    concerns = (_load(reviewed[3]) or []) if reviewed else []
    student = [e for e in entries if e.audience == "student"]
    given = {step[1]: _load(step[18]) for step in steps if step[18] not in (None, "{}", "null")}  # steps' metadata
    systems = [g["system"] for g in given.values() if isinstance(g, dict) and isinstance(g.get("system"), str)]
    recorded = bool(systems)  # the integration recorded the system prompt of its model calls
    shown = systems[0] if recorded else render_instructions(student, plan, concerns)
    messages: list[dict[str, Any]] = [{"role": "system", "content": shown}] if shown else []
    messages.append({"role": "user", "content": s.task})
    tools: dict[str, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = []  # the last model turn's tool calls that no tool result answered yet
    step_guidance: dict[str, list[str]] = {}
    for _, step_id, _source, kind, content, _created in guidance:
        if step_id is not None and kind == "step":
            step_guidance.setdefault(step_id, []).append(content)

    def show(system: str) -> None:
        """The system prompt changed (guidance came in): the model saw the new one from here on."""
        nonlocal shown
        if system != shown and system:
            messages.append({"role": "system", "content": system})
        shown = system

    def add_steps(chosen_steps: Iterable[Any]) -> None:
        for step in chosen_steps:
            step_id, index, kind, name, tool_name, tool_args, output, error = (step[1], step[2], step[4], step[5], step[7],
                                                                               step[8], step[10], step[11])
            metadata = given.get(step_id)
            if isinstance(metadata, dict) and metadata.get("nested"):
                continue  # a nested agent's work inside a tool call: not this model's conversation
            if kind == "model_call" and error:
                continue  # a call that raised (its out-of-schema output is kept on the step) was no turn of the chat
            if kind == "model_call":
                if isinstance(metadata, dict):
                    if isinstance(metadata.get("system"), str):
                        show(metadata["system"])
                    for tool in metadata.get("tools") or ():
                        try:
                            schema = tool_schema(tool)
                        except (TypeError, ValueError):
                            continue
                        tools.setdefault(schema["function"]["name"], schema)
                text, calls = _model_output(output)
                if calls:
                    pending.clear()
                    made = [{"id": f"call_{index}_{number}", "type": "function",
                             "function": {"name": str(call["name"]), "arguments": _arguments(call.get("arguments"))}}
                            for number, call in enumerate(calls)]
                    pending.extend(made)
                    messages.append({"role": "assistant", "content": text, "tool_calls": made})
                elif text:
                    messages.append({"role": "assistant", "content": text})
            elif tool_name or kind == "tool_call":
                called, arguments = tool_name or name, _arguments(_load(tool_args))
                # the call it answers: the unanswered one of that name with these arguments, else the first of that name
                named = [c for c in pending if c["function"]["name"] == called]
                call = next((c for c in named if c["function"]["arguments"] == arguments), named[0] if named else None)
                if call is None:  # no recorded model turn asked for it (an agent that reports its tools only)
                    call = {"id": f"call_{index}", "type": "function", "function": {"name": called, "arguments": arguments}}
                    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
                else:
                    pending.remove(call)
                    known = (metadata.get("tool_call_id") or metadata.get("call_id")) if isinstance(metadata, dict) else None
                    if isinstance(known, str) and known:
                        call["id"] = known
                failed = bool(error) or (isinstance(metadata, dict) and metadata.get("tool_status") == "error")
                messages.append({"role": "tool", "tool_call_id": call["id"], "name": called,
                                 "content": f"ERROR: {error}" if error else (output or ""), **({"status": "error"} if failed else {})})
            elif kind == "handoff" and pending:  # a handoff answers the transfer call that asked for it
                call = pending.pop(0)
                messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                                 "content": output or ""})
            if step_id in step_guidance and not recorded:  # the next model call's instructions held it
                show(render_instructions(student, plan, concerns, step_guidance[step_id]))

    def answered(text: str) -> bool:
        last = messages[-1]
        return last["role"] == "assistant" and not last.get("tool_calls") and last["content"] == text

    final = s.final_answer or ""
    placed = 0  # steps of attempts up to this number are in the messages
    for position, (_, number, answer, accepted, _reason, attempt_guidance, _created, _checks) in enumerate(attempts):
        add_steps(step for step in steps if placed < step[3] <= number)
        placed = max(placed, number)
        if position == len(attempts) - 1 and (answer or "") == final:
            break  # the last attempt is the final answer, added below
        if not answered(answer or ""):
            messages.append({"role": "assistant", "content": answer or ""})
        if accepted is False and not recorded:  # the retry's instructions held the guidance
            show(render_instructions(student, plan, concerns, [attempt_guidance or "The teacher rejected the answer; try again."]))
    add_steps(step for step in steps if step[3] > placed)
    if final and not answered(final):
        messages.append({"role": "assistant", "content": final})
    reward = _session_reward_row(rewards)
    return {"messages": messages, "tools": list(tools.values()), "session_id": s.id, "learning_key": s.learning_key,
            "lane": s.lane, "session_reward": reward[3] if reward is not None else s.reward}


def _grpo(s: Any, entries: list[Any], rewards: list[Any]) -> dict[str, Any]:
    """A prompt-only GRPO record: the teacher's execution prompt and the columns reward functions read."""
    from .prompts import execution_messages
    from .rewards import expected_answer_value

    reward = _session_reward_row(rewards)
    breakdown = (_load(reward[6]) or {}) if reward is not None else {}
    checks = breakdown.get("checks") if isinstance(breakdown.get("checks"), dict) else None
    scored = [v for v in (checks or {}).values() if isinstance(v, (int, float))]
    metadata = _load(s.session_metadata) or {}
    truth = expected_answer_value(metadata)
    return {
        "prompt": execution_messages(s.task, _lessons(entries, "teacher") or ""),
        "task": s.task,
        "final_answer": s.final_answer,
        "session_reward": reward[3] if reward is not None else s.reward,
        "learning_key": s.learning_key,
        "session_id": s.id,
        "lane": s.lane,
        "verifiable_outcome": sum(scored) / len(scored) if scored else None,
        "checks": checks,
        "ground_truth": None if truth is None else truth if isinstance(truth, str) else _DUMPS(truth),
    }
