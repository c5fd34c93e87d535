"""The playbook: lessons learned per learning key, how they are retrieved and injected, and how they change.

Retrieval scores live entries (provisional and active) by lexical overlap with the task, then by measured
impact, and keeps what fits the injection token budget. :class:`PlaybookRegistry` applies the synthesizer's
deltas (add, refine, retire) under optimistic concurrency: every change bumps the key's registry version with
a compare-and-set, and a writer that lost the race re-reads and re-applies its deltas, so concurrent sessions
never lose each other's updates. Every change is kept as a version row, for history and diffs. Impact
statistics (reward of sessions with vs without an entry injected) are atomic increments; an entry whose impact
stays neutral or negative after ``retire_after`` observations is retired.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, false, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from .config import PlaybookConfig
from .errors import StoreError
from .redact import Redactor
from .schemas import LessonChange
from .store import PlaybookEntryRecord, PlaybookRegistryRecord, PlaybookVersionRecord, Store, utcnow

__all__ = [
    "AppliedChange",
    "PlaybookRegistry",
    "coverage",
    "estimate_tokens",
    "render_lessons",
    "select_lessons",
    "similarity",
    "terms",
]

LIVE = ("provisional", "active")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "the a an and or of to in on for with is are be it this that as at by from into before after then when "
    "use your you its all any each not no do does did was were has have had can will should must".split()
)


_SUFFIXES = ("ing", "ies", "ed", "es", "s")


def _stem(word: str) -> str:
    """A light suffix strip (reading -> read, files -> file), applied alike to tasks and lessons."""
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + (2 if suffix == "ies" else 3) and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def terms(text: str) -> set[str]:
    """The content words of a text: lower-cased, stemmed, without stopwords and one- or two-letter words."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


def similarity(a: str, b: str) -> float:
    """Token-overlap (Jaccard) similarity of two lessons, 0..1."""
    left, right = terms(a), terms(b)
    return len(left & right) / len(left | right) if left and right else 0.0


_WORD = re.compile(r"[^\W\d_]{2,}")


def is_usable_lesson(text: str) -> bool:
    """A lesson is an instruction: at least three words of letters. '1.0' or 'log_big.log' is not one (a weak
    synthesizer proposes such strings) and never enters the playbook."""
    return sum(1 for token in text.split() if _WORD.search(token)) >= 3


def estimate_tokens(text: str) -> int:
    """About four characters a token; good enough for budgets."""
    return max(1, math.ceil(len(text) / 4))


def _entry_text(entry: PlaybookEntryRecord) -> str:
    return f"{entry.lesson} {entry.applies_when or ''}"


def _impact(entry: PlaybookEntryRecord) -> float | None:
    if not entry.reward_count_with or not entry.reward_count_without:
        return None
    return entry.reward_sum_with / entry.reward_count_with - entry.reward_sum_without / entry.reward_count_without


def select_lessons(entries: Iterable[PlaybookEntryRecord], task: str, *, audience: str, token_budget: int) -> list[PlaybookEntryRecord]:
    """The entries to inject for ``task``: most relevant first, then by impact and status, within the budget."""
    wanted = terms(task)

    def rank(entry: PlaybookEntryRecord) -> tuple[float, float, int]:
        entry_terms = terms(_entry_text(entry))
        relevance = len(wanted & entry_terms) / math.sqrt(len(entry_terms)) if entry_terms else 0.0
        return (relevance, _impact(entry) or 0.0, 1 if entry.status == "active" else 0)

    chosen, used = [], 0
    for entry in sorted((e for e in entries if e.audience == audience and e.status in LIVE), key=rank, reverse=True):
        cost = estimate_tokens(entry.lesson) + 4
        if used + cost > token_budget:
            continue
        chosen.append(entry)
        used += cost
    return chosen


def render_lessons(entries: Sequence[PlaybookEntryRecord]) -> str:
    """Entries as an instruction block; empty when there are none."""
    if not entries:
        return ""
    lines = [f"- {e.lesson}" + (f" (when {e.applies_when})" if e.applies_when else "") for e in entries]
    return "Lessons from earlier runs; follow them:\n" + "\n".join(lines)


def coverage(entries: Sequence[PlaybookEntryRecord], task: str) -> float:
    """Share of the task's content words that the given entries speak to, 0..1."""
    wanted = terms(task)
    if not wanted:
        return 0.0
    covered = set().union(*(terms(_entry_text(e)) for e in entries)) if entries else set()
    return len(wanted & covered) / len(wanted)


@dataclass(frozen=True)
class AppliedChange:
    """A change that reached the playbook: what it did, to which entry, at which registry version."""

    op: str
    entry_id: str
    lesson: str
    registry_version: int
    reason: str = ""


class _Conflict(Exception):
    """Another writer bumped the registry version first."""


class PlaybookRegistry:
    """Versioned, concurrency-safe reads and writes of one store's playbooks."""

    #: Compare-and-set attempts before giving up on a change set; each lost race waits a little longer.
    max_attempts = 30

    def __init__(self, store: Store, config: PlaybookConfig | None = None, *, redactor: Redactor | None = None) -> None:
        self.store = store
        self.config = config or PlaybookConfig()
        self.redactor = redactor or Redactor()

    # -------------------------------------------------------------------------------------------- reads
    def live_entries(self, learning_key: str) -> list[PlaybookEntryRecord]:
        """Provisional and active entries of a key."""
        entries = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]
        statement = entries.select().where(entries.c.learning_key == learning_key, entries.c.status.in_(LIVE)).order_by(entries.c.created_at)
        return [PlaybookEntryRecord.model_validate(dict(row._mapping)) for row in self.store.read(statement)]

    def version(self, learning_key: str) -> int:
        record = self.store.get(PlaybookRegistryRecord, learning_key)
        return record.version if record else 0

    def history(self, learning_key: str) -> list[PlaybookVersionRecord]:
        """Every change to the key's playbook, oldest first."""
        return self.store.rows(
            PlaybookVersionRecord,
            PlaybookVersionRecord.learning_key == learning_key,
            order_by=PlaybookVersionRecord.id,
        )

    def snapshot(self, learning_key: str, registry_version: int) -> dict[str, PlaybookVersionRecord]:
        """Each entry as it stood at ``registry_version`` (retired ones included), by entry id."""
        state: dict[str, PlaybookVersionRecord] = {}
        for change in self.history(learning_key):
            if change.registry_version <= registry_version:
                state[change.entry_id] = change
        return state

    def diff(self, learning_key: str, from_version: int, to_version: int) -> list[dict[str, Any]]:
        """What changed between two registry versions: entries added, changed (lesson or status) or removed."""
        before, after = self.snapshot(learning_key, from_version), self.snapshot(learning_key, to_version)
        changes = []
        for entry_id in sorted(before.keys() | after.keys()):
            old, new = before.get(entry_id), after.get(entry_id)
            if old is None and new is not None:
                changes.append({"entry_id": entry_id, "change": "added", "lesson": new.lesson, "status": new.status})
            elif old is not None and new is not None and (old.lesson, old.status) != (new.lesson, new.status):
                changes.append({"entry_id": entry_id, "change": "changed", "before": old.lesson, "after": new.lesson,
                                "status_before": old.status, "status": new.status})
        return changes

    # ------------------------------------------------------------------------------------------- writes
    def apply(self, learning_key: str, changes: Sequence[LessonChange], *, session_id: str | None = None) -> list[AppliedChange]:
        """Apply the synthesizer's changes as one new registry version; retried on a lost race."""
        if not changes:
            return []
        changes = [c.model_copy(update={"lesson": self.redactor.text(c.lesson), "applies_when": self.redactor.text(c.applies_when)})
                   for c in changes]
        return self._with_compare_and_set(learning_key, lambda tx, live, version: self._plan(tx, learning_key, live, version, changes, session_id))

    def record_impact(self, learning_key: str, used_ids: Sequence[str], unused_ids: Sequence[str], reward: float) -> list[AppliedChange]:
        """Count one session's reward for the entries it used and against the live ones it did not (both as they
        stood when it began), then promote provisional entries that have earned it and retire those that do not help."""
        used, unused = list(used_ids), list(unused_ids)
        if not used and not unused:
            return []
        entries = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]
        used_here = entries.c.id.in_(used) if used else false()
        counts_with = case((used_here, 1), else_=0)
        statement = (
            update(entries)
            .where(entries.c.id.in_(used + unused), entries.c.status.in_(LIVE))
            .values(
                uses=entries.c.uses + counts_with,
                reward_sum_with=entries.c.reward_sum_with + counts_with * reward,
                reward_count_with=entries.c.reward_count_with + counts_with,
                reward_sum_without=entries.c.reward_sum_without + (1 - counts_with) * reward,
                reward_count_without=entries.c.reward_count_without + (1 - counts_with),
            )
            .returning(*entries.c)
        )
        try:  # one statement, no ORM session: this runs after every session
            with self.store.engine.begin() as connection:
                touched = [PlaybookEntryRecord.model_validate(dict(row._mapping)) for row in connection.execute(statement)]
        except SQLAlchemyError as exc:
            raise self.store.as_store_error(exc) from None
        verdicts = self._impact_changes(touched)
        if not verdicts:
            return []
        return self._with_compare_and_set(learning_key, lambda tx, live, version: self._status_changes(tx, learning_key, live, version, verdicts))

    def retire(self, learning_key: str, entry_id: str, *, reason: str = "retired by hand") -> list[AppliedChange]:
        """Retire one entry (for ``atlas playbook retire``)."""
        return self.apply(learning_key, [LessonChange(op="retire", entry_id=entry_id, reason=reason)])

    # ---------------------------------------------------------------------------------------- internals
    def _with_compare_and_set(self, learning_key: str, plan: Any) -> list[AppliedChange]:
        last_error: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
            try:
                with self.store.transaction() as tx:
                    registry = tx.get(PlaybookRegistryRecord, learning_key)
                    if registry is None:
                        tx.add(PlaybookRegistryRecord(learning_key=learning_key, version=0))
                        tx.flush()
                        version = 0
                    else:
                        version = registry.version
                    live = list(tx.exec(select(PlaybookEntryRecord).where(
                        PlaybookEntryRecord.learning_key == learning_key, col(PlaybookEntryRecord.status).in_(LIVE))).all())
                    applied = plan(tx, live, version + 1)
                    if not applied:
                        return []
                    bumped = tx.exec(
                        update(PlaybookRegistryRecord)
                        .where(PlaybookRegistryRecord.learning_key == learning_key, PlaybookRegistryRecord.version == version)
                        .values(version=version + 1, updated_at=utcnow())
                    )
                    if bumped.rowcount != 1:
                        raise _Conflict
                return applied
            except _Conflict:
                last_error = _Conflict("another session changed the playbook first")
            except StoreError as exc:
                if not exc.retryable:
                    raise
                last_error = exc
        raise StoreError(f"playbook of {learning_key!r}: gave up after {self.max_attempts} concurrent-update conflicts ({last_error})")

    def _plan(self, tx: Session, key: str, live: list[PlaybookEntryRecord], version: int,
              changes: Sequence[LessonChange], session_id: str | None) -> list[AppliedChange]:
        by_id = {entry.id: entry for entry in live}
        applied: list[AppliedChange] = []
        for change in changes:
            if change.op == "add":
                lesson = change.lesson.strip()
                if not is_usable_lesson(lesson):
                    continue
                twin = max(live, key=lambda e: similarity(e.lesson, lesson), default=None)
                if twin is not None and twin.audience == change.audience and similarity(twin.lesson, lesson) >= self.config.merge_similarity:
                    # A near-duplicate confirms the entry: its provenance grows (under the same compare-and-set,
                    # so concurrent confirmations all count); its text and entry version stay.
                    if session_id and session_id not in twin.provenance:
                        twin.provenance = [*twin.provenance, session_id]
                        tx.add(twin)
                        applied.append(AppliedChange("confirm", twin.id, twin.lesson, version, "a near-duplicate lesson was proposed again"))
                    continue
                entry = PlaybookEntryRecord(learning_key=key, audience=change.audience, lesson=lesson,
                                            applies_when=change.applies_when or None, provenance=[session_id] if session_id else [])
                tx.add(entry)
                live.append(entry)
                by_id[entry.id] = entry
                applied.append(self._version_row(tx, entry, "add", version, session_id, change.reason))
            elif change.entry_id in by_id:
                entry = by_id[change.entry_id]
                if change.op == "refine" and is_usable_lesson(change.lesson):
                    applied.append(self._refine(tx, entry, change.lesson.strip(), change, version, session_id))
                elif change.op == "retire":
                    entry.status = "retired"
                    applied.append(self._bump(tx, entry, "retire", version, session_id, change.reason))
        applied.extend(self._enforce_budget(tx, [e for e in live if e.status in LIVE], version, session_id))
        return applied

    def _refine(self, tx: Session, entry: PlaybookEntryRecord, lesson: str, change: LessonChange, version: int,
                session_id: str | None) -> AppliedChange:
        entry.lesson = lesson
        if change.applies_when:
            entry.applies_when = change.applies_when
        if session_id and session_id not in entry.provenance:
            entry.provenance = [*entry.provenance, session_id]
        return self._bump(tx, entry, "refine", version, session_id, change.reason)

    def _bump(self, tx: Session, entry: PlaybookEntryRecord, op: str, version: int, session_id: str | None, reason: str) -> AppliedChange:
        entry.version += 1
        entry.updated_at = utcnow()
        tx.add(entry)
        return self._version_row(tx, entry, op, version, session_id, reason)

    @staticmethod
    def _version_row(tx: Session, entry: PlaybookEntryRecord, op: str, version: int, session_id: str | None, reason: str) -> AppliedChange:
        tx.flush()  # the entry row must exist before its version row points at it
        tx.add(PlaybookVersionRecord(entry_id=entry.id, learning_key=entry.learning_key, version=entry.version,
                                     registry_version=version, change=op, audience=entry.audience, lesson=entry.lesson,
                                     applies_when=entry.applies_when, status=entry.status, session_id=session_id))
        return AppliedChange(op, entry.id, entry.lesson, version, reason)

    def _enforce_budget(self, tx: Session, live: list[PlaybookEntryRecord], version: int, session_id: str | None) -> list[AppliedChange]:
        total = sum(estimate_tokens(e.lesson) for e in live)
        retired = []
        # weakest first: provisional before active, then lowest impact, then oldest
        for entry in sorted(live, key=lambda e: (e.status == "active", _impact(e) or 0.0, e.created_at)):
            if total <= self.config.total_token_budget:
                break
            entry.status = "retired"
            total -= estimate_tokens(entry.lesson)
            retired.append(self._bump(tx, entry, "retire", version, session_id, "playbook over its token budget"))
        return retired

    def _impact_changes(self, live: list[PlaybookEntryRecord]) -> dict[str, tuple[str, str]]:
        verdicts = {}
        for entry in live:
            impact = _impact(entry)
            if entry.reward_count_with >= self.config.retire_after and impact is not None and impact <= self.config.retire_margin:
                verdicts[entry.id] = ("retired", f"impact {impact:+.3f} after {entry.reward_count_with} uses")
            elif entry.status == "provisional" and entry.reward_count_with >= self.config.activate_after and (impact is None or impact >= 0):
                verdicts[entry.id] = ("active", "helped or did no harm" if impact is not None else f"used {entry.reward_count_with} times")
        return verdicts

    def _status_changes(self, tx: Session, key: str, live: list[PlaybookEntryRecord], version: int,
                        verdicts: dict[str, tuple[str, str]]) -> list[AppliedChange]:
        applied = []
        for entry in live:
            if entry.id in verdicts and entry.status != verdicts[entry.id][0]:
                status, reason = verdicts[entry.id]
                entry.status = status
                applied.append(self._bump(tx, entry, "retire" if status == "retired" else "activate", version, None, reason))
        return applied

