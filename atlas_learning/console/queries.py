"""What the console's pages read from the store: one indexed, keyset-paged query per session-list page, one session
in full, a key's playbook with its history, and a key's learning curve.

The list is paged by keyset on ``(started_at, id)`` (the ``ix_sessions_started`` index and the per-filter indexes
that end in ``started_at``), newest first, so page 2,000 costs what page 1 costs; the count is capped
(:data:`COUNT_CAP`): "10,000+ sessions" needs no full scan of a large table.
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, func, or_, select

from .._commands._common import LANES, REVIEW_STATUSES, parse_since, step_counts, supervision_tokens
from ..errors import AtlasError, UsageError
from ..store import SESSION_STATUSES, SessionFilter, SessionRecord, Store

#: Counting stops here: past it the page says "10,000+".
COUNT_CAP = 10_000
PAGE_SIZES = (25, 50, 100, 200)
#: The most sessions a filtered bulk review takes at once.
BULK_LIMIT = 10_000
#: The most sessions of a key the learning page draws (the newest ones).
CURVE_LIMIT = 5_000

_LIST_COLUMNS = (SessionRecord.id, SessionRecord.learning_key, SessionRecord.task_family, SessionRecord.lane, SessionRecord.status,
                 SessionRecord.reward, SessionRecord.review_status, SessionRecord.drift_alert, SessionRecord.total_tokens,
                 SessionRecord.started_at, SessionRecord.agent_name)


@dataclass(frozen=True)
class ListQuery:
    """The session-list filters, as the page's query string carries them (every field optional)."""

    key: str | None = None
    family: str | None = None
    lane: str | None = None
    status: str | None = None
    review: str | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    since: str | None = None
    until: str | None = None
    per_page: int = 50
    #: A keyset cursor (``started_at|id``): the page after (older than) it, or before (newer than) it.
    after: str | None = None
    before: str | None = None

    @classmethod
    def from_params(cls, params: Any) -> ListQuery:
        """From a query string or form (a Starlette ``QueryParams`` / ``FormData``); bad values raise UsageError."""

        def text(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            return value or None

        def reward(name: str) -> float | None:
            value = text(name)
            if value is None:
                return None
            try:
                number = float(value)
            except ValueError:
                raise UsageError(f"{name}: expected a reward between 0 and 1, got {value!r}") from None
            if not 0.0 <= number <= 1.0:
                raise UsageError(f"{name}: expected a reward between 0 and 1, got {value!r}")
            return number

        def choice(name: str, choices: tuple[str, ...]) -> str | None:
            value = text(name)
            if value is not None and value not in choices:
                raise UsageError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
            return value

        per_page = text("per_page") or "50"
        if not per_page.isdigit() or int(per_page) not in PAGE_SIZES:
            raise UsageError(f"per_page: expected one of {', '.join(map(str, PAGE_SIZES))}, got {per_page!r}")
        query = cls(key=text("key"), family=text("family"), lane=choice("lane", LANES), status=choice("status", SESSION_STATUSES),
                    review=choice("review", REVIEW_STATUSES), min_reward=reward("min_reward"), max_reward=reward("max_reward"),
                    since=text("since"), until=text("until"), per_page=int(per_page), after=text("after"), before=text("before"))
        query.filter()  # dates and cursors are checked now, with one line on what to fix
        for cursor in (query.after, query.before):
            if cursor is not None:
                _cursor(cursor)
        return query

    def filter(self) -> SessionFilter:
        """The store's filter for these fields (without paging)."""
        until = _parse_until(self.until)
        return SessionFilter(learning_key=self.key, lane=self.lane, review_status=[self.review] if self.review else None,
                             status=[self.status] if self.status else None, min_reward=self.min_reward, max_reward=self.max_reward,
                             since=parse_since(self.since, option="since"), until=until)

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of these filters (with ``changes``), without empty fields, for links."""
        merged = {**self.__dict__, **changes}
        return {k: str(v) for k, v in merged.items() if v is not None and v != "" and not (k == "per_page" and v == 50)}

    @property
    def filtered(self) -> bool:
        return any(getattr(self, name) is not None for name in ("key", "family", "lane", "status", "review", "min_reward",
                                                                 "max_reward", "since", "until"))


def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = parse_since(value, option="until")
    assert moment is not None
    if len(value.strip()) == 10:  # a date: the whole day is included
        moment += timedelta(days=1)
    return moment


def _cursor(value: str) -> tuple[datetime, str]:
    try:
        moment, session_id = value.split("|", 1)
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        raise UsageError(f"page cursor {value!r} is not one this console made; start from the first page") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)), session_id


def _selected(query: ListQuery, *columns: Any) -> Any:
    """A select of ``columns`` from the sessions matching the filters, unordered and unpaged."""
    statement = query.filter().apply(select(*columns)).order_by(None)
    if query.family is not None:
        statement = statement.where(SessionRecord.task_family == query.family)
    return statement


@dataclass
class SessionPage:
    """One page of the session list: its rows, the capped count, and the cursors around it."""

    rows: list[dict[str, Any]]
    count: int
    count_capped: bool
    newer: str | None
    older: str | None
    query: ListQuery
    seconds: dict[str, float] = field(default_factory=dict)


def session_page(store: Store, query: ListQuery) -> SessionPage:
    """A page of sessions matching ``query``, newest first, by keyset."""
    import time

    order_newest = (SessionRecord.started_at.desc(), SessionRecord.id.desc())  # type: ignore[attr-defined]
    statement = _selected(query, *_LIST_COLUMNS, func.substr(SessionRecord.task, 1, 140).label("task"))
    reverse = False
    if query.before is not None:  # the page newer than the cursor: read oldest-first from it, then flip
        moment, session_id = _cursor(query.before)
        statement = statement.where(or_(SessionRecord.started_at > moment,
                                        and_(SessionRecord.started_at == moment, SessionRecord.id > session_id)))
        statement = statement.order_by(SessionRecord.started_at.asc(), SessionRecord.id.asc())  # type: ignore[attr-defined]
        reverse = True
    else:
        if query.after is not None:
            moment, session_id = _cursor(query.after)
            statement = statement.where(or_(SessionRecord.started_at < moment,
                                            and_(SessionRecord.started_at == moment, SessionRecord.id < session_id)))
        statement = statement.order_by(*order_newest)
    started = time.perf_counter()
    rows = [dict(row._mapping) for row in store.read(statement.limit(query.per_page + 1))]
    seconds = {"rows": time.perf_counter() - started}
    more = len(rows) > query.per_page
    rows = rows[: query.per_page]
    if reverse:
        rows.reverse()
    started = time.perf_counter()
    counts = step_counts(store, [r["id"] for r in rows])
    for row in rows:
        kinds = counts.get(row["id"], {})
        row["steps"] = sum(kinds.values())
        row["tool_calls"] = kinds.get("tool_call", 0)
    seconds["steps"] = time.perf_counter() - started
    started = time.perf_counter()
    count = capped_count(store, query)
    seconds["count"] = time.perf_counter() - started

    def cursor(row: dict[str, Any]) -> str:
        return f"{row['started_at'].isoformat()}|{row['id']}"

    if reverse:  # came from an older page: there is one; a newer one only if more rows were there
        newer = cursor(rows[0]) if rows and more else None
        older = cursor(rows[-1]) if rows else None
    else:
        newer = cursor(rows[0]) if rows and query.after is not None else None
        older = cursor(rows[-1]) if rows and more else None
    return SessionPage(rows=rows, count=min(count, COUNT_CAP), count_capped=count > COUNT_CAP, newer=newer, older=older, query=query,
                       seconds=seconds)


def capped_count(store: Store, query: ListQuery) -> int:
    """How many sessions match, counting at most COUNT_CAP + 1 of them (an index-only scan of that many rows)."""
    statement = select(func.count()).select_from(_selected(query, SessionRecord.id).limit(COUNT_CAP + 1).subquery())
    return int(store.read(statement)[0][0])


def matching_ids(store: Store, query: ListQuery, limit: int = BULK_LIMIT) -> list[str]:
    """The ids of every session matching the filters (at most ``limit``; more is an error), for a bulk review."""
    statement = _selected(query, SessionRecord.id)
    ids = [row[0] for row in store.read(statement.limit(limit + 1))]
    if len(ids) > limit:
        raise UsageError(f"the filter matches more than {limit} sessions; narrow it (a key, a date range) to review them at once")
    return ids


def known_values(store: Store) -> dict[str, list[str]]:
    """The learning keys and task families there are sessions of (for the filters' suggestions)."""
    keys = [row[0] for row in store.read(select(SessionRecord.learning_key).distinct().order_by(SessionRecord.learning_key).limit(500))]
    families = [row[0] for row in store.read(select(SessionRecord.task_family).where(SessionRecord.task_family.is_not(None))  # type: ignore[union-attr]
                                             .distinct().order_by(SessionRecord.task_family).limit(500))]
    return {"keys": keys, "families": families}


# ------------------------------------------------------------------------------------------------ one session
def session_detail(store: Store, session_id: str) -> dict[str, Any]:
    """Everything one session recorded, and its timeline (plan, steps, model calls, verdicts, guidance, rewards,
    review changes) in time order."""
    from .._commands.sessions import _details
    from ..store import ModelCallRecord, PlaybookEntryRecord, TrajectoryEventRecord

    record = store.get(SessionRecord, session_id)
    if record is None:
        raise AtlasError(f"no session {session_id}; it may have been deleted")
    details = _details(store, session_id)
    calls = store.rows(ModelCallRecord, ModelCallRecord.session_id == session_id, order_by=ModelCallRecord.id)
    events = store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session_id,
                        TrajectoryEventRecord.event_type.in_(("lane_chosen", "retry", "escalated", "drift_alert",  # type: ignore[attr-defined]
                                                              "supervision_stopped", "supervision_budget_reached")),
                        order_by=TrajectoryEventRecord.seq)
    lessons = store.rows(PlaybookEntryRecord, PlaybookEntryRecord.id.in_(list(record.lessons_used or []))) if record.lessons_used else []  # type: ignore[attr-defined]
    step_rewards = {r.step_id: r for r in details["rewards"] if r.scope == "step" and r.step_id}
    verdicts = {(e.payload or {}).get("step_id"): e.payload for e in details["verdicts"] if (e.payload or {}).get("step_id")}
    numbers = {s.id: s.step_index + 1 for s in details["steps"]}
    timeline: list[dict[str, Any]] = []
    for event in events:
        timeline.append({"at": event.created_at, "kind": "event", "title": event.event_type.replace("_", " "), "payload": event.payload})
    for plan in details["plans"]:
        timeline.append({"at": plan.created_at, "kind": "plan", "title": f"plan ({plan.kind})", "plan": plan})
    for step in details["steps"]:
        timeline.append({"at": step.started_at, "kind": "step", "title": step.tool_name or step.name, "step": step,
                         "reward": step_rewards.get(step.id), "verdict": verdicts.get(step.id)})
    for call in calls:
        timeline.append({"at": call.created_at - timedelta(milliseconds=call.latency_ms or 0), "kind": "model_call",
                         "title": f"{call.role}: {call.purpose or 'call'}", "call": call})
    for attempt in details["attempts"]:
        timeline.append({"at": attempt.created_at, "kind": "verdict", "title": f"answer {attempt.attempt}", "attempt": attempt})
    for note in details["guidance"]:
        timeline.append({"at": note.created_at, "kind": "guidance", "title": f"{note.source} {note.kind}"
                         + (f" on step {numbers[note.step_id]}" if note.step_id in numbers else ""), "note": note})
    for reward in details["rewards"]:
        if reward.scope == "session":
            timeline.append({"at": reward.created_at, "kind": "reward", "title": "session reward", "reward": reward})
    for entry in details["reviews"]:
        timeline.append({"at": entry.created_at, "kind": "review", "title": f"{entry.from_status} → {entry.to_status}", "review": entry})
    order = {"event": 0, "plan": 1, "step": 2, "model_call": 3, "guidance": 4, "verdict": 5, "reward": 6, "review": 7}
    timeline.sort(key=lambda item: (item["at"], order[item["kind"]]))
    supervision, total = supervision_tokens(record.usage_by_role)
    return {"record": record, "timeline": timeline, "model_calls": calls, "lessons": lessons, **details,
            "session_rewards": [r for r in details["rewards"] if r.scope == "session"],
            "supervision_tokens": supervision, "role_tokens": total}


def queue_neighbour(store: Store, session_id: str | None, *, learning_key: str | None = None) -> str | None:
    """The next session waiting for review in queue order (oldest first), after ``session_id`` (None: the first).
    Only finished sessions: one still running cannot be approved yet."""
    statement = select(SessionRecord.id).where(SessionRecord.review_status == "pending",
                                               SessionRecord.status.in_(("completed", "failed")))  # type: ignore[attr-defined]
    if learning_key:
        statement = statement.where(SessionRecord.learning_key == learning_key)
    if session_id is not None:
        current = store.get(SessionRecord, session_id)
        if current is not None:
            statement = statement.where(or_(SessionRecord.started_at > current.started_at,
                                            and_(SessionRecord.started_at == current.started_at, SessionRecord.id > current.id)))
    statement = statement.order_by(SessionRecord.started_at.asc(), SessionRecord.id.asc()).limit(1)  # type: ignore[attr-defined]
    rows = store.read(statement)
    if rows:
        return rows[0][0]
    if session_id is not None:  # wrap around: pending sessions older than this one
        return queue_neighbour(store, None, learning_key=learning_key) if _has_other_pending(store, session_id, learning_key) else None
    return None


def _has_other_pending(store: Store, session_id: str, learning_key: str | None) -> bool:
    statement = select(SessionRecord.id).where(SessionRecord.review_status == "pending", SessionRecord.id != session_id,
                                               SessionRecord.status.in_(("completed", "failed")))  # type: ignore[attr-defined]
    if learning_key:
        statement = statement.where(SessionRecord.learning_key == learning_key)
    return bool(store.read(statement.limit(1)))


# ------------------------------------------------------------------------------------------------ playbook
def playbook_keys(store: Store) -> list[str]:
    from .._commands.playbook import _keys

    return _keys(store)


def playbook(store: Store, config: Any, key: str) -> dict[str, Any]:
    """A key's entries by status (with uses and measured impact) and its history, each change with a word diff
    against the entry's previous version."""
    from .._commands.playbook import _impact, _registry
    from ..store import PlaybookEntryRecord

    registry = _registry(store, config)
    entries = store.rows(PlaybookEntryRecord, PlaybookEntryRecord.learning_key == key, order_by=PlaybookEntryRecord.created_at)
    by_status: dict[str, list[dict[str, Any]]] = {"active": [], "provisional": [], "retired": []}
    for entry in entries:
        by_status.setdefault(entry.status, []).append({"entry": entry, "impact": _impact(entry)})
    history = []
    previous: dict[str, Any] = {}
    for change in registry.history(key):
        before = previous.get(change.entry_id)
        history.append({"change": change, "diff": word_diff(before.lesson, change.lesson) if before is not None and before.lesson != change.lesson else None,
                        "status_before": before.status if before is not None else None})
        previous[change.entry_id] = change
    history.reverse()  # newest first
    return {"key": key, "version": registry.version(key), "entries": by_status, "history": history}


def word_diff(before: str, after: str) -> str:
    """An HTML word diff: removed words in <del>, added ones in <ins>, everything escaped."""
    a, b = before.split(), after.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
    return " ".join(out)


# ------------------------------------------------------------------------------------------------ learning
def learning_curve(store: Store, key: str | None, *, window: int = 5, limit: int = CURVE_LIMIT) -> dict[str, Any]:
    """The report's curve (``atlas report``) for a key, with success per session: its checks passed, or with no
    check deciding, a reward of at least 0.5."""
    from .._commands.report import build_report

    records = list(reversed(store.list_sessions(replace(SessionFilter(learning_key=key), limit=limit))))
    counts = step_counts(store, [r.id for r in records])
    data = build_report(records, counts, window)
    for row, record in zip(data["sessions"], records, strict=True):
        row["success"] = record.checks_passed if record.checks_passed is not None else (
            None if record.reward is None else record.reward >= 0.5)
    for w in data["reward_by_window"]:
        chunk = data["sessions"][w["from"] - 1 : w["to"]]
        decided = [s["success"] for s in chunk if s["success"] is not None]
        w["success_rate"] = sum(decided) / len(decided) if decided else None
        w["mean_supervision_tokens"] = sum(s["supervision_tokens"] for s in chunk) / len(chunk)
    data["truncated"] = len(records) == limit
    return data
