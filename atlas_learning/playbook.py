"""The playbook: lessons and worked examples per learning key, which apply to a task, and how they change.

**Selection.** An entry applies to a task when its relevance (BM25 over the entry's text and cues, normalised
0..1; see :mod:`atlas_learning.retrieval`), plus ``family_boost`` when it is scoped to the session's task family,
reaches ``relevance_threshold``; an entry scoped to another family never applies. Entries that apply are ranked
by relevance and measured impact and injected while the rendered block fits its token budget. A share of them
is withheld at random (:func:`select_entries`), so each entry's impact compares sessions it applied to, with it
and without it. **Impact** is a Bayesian comparison of those two arms (:func:`impact_verdict`): an entry under
trial is activated when it probably helps, retired when it probably hurts or shows no effect after
``max_trial_uses``; an active entry that turns harmful is retired too. Retired entries are **tombstones**: the
same text, or a near-duplicate, is never added again.

:class:`PlaybookRegistry` applies changes (the synthesizer's add / refine / retire, worked examples, impact
verdicts) under optimistic concurrency: every change bumps the key's registry version with a compare-and-set;
a writer that lost the race re-reads and re-applies, so concurrent sessions never lose each other's updates.
Every change is kept as a version row with its reason. Reads are cached per registry version, so a session's
cost does not grow with the number of live entries.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import case, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import configure_mappers
from sqlmodel import Session, col, select

from .config import PlaybookConfig
from .errors import StoreError
from .recorder import Recorder
from .redact import Redactor
from .retrieval import RelevanceIndex, terms
from .schemas import LessonChange
from .store import PlaybookEntryRecord, PlaybookRegistryRecord, PlaybookVersionRecord, Store, utcnow

__all__ = [
    "AppliedChange",
    "PlaybookEntry",
    "PlaybookRegistry",
    "PlaybookView",
    "Selection",
    "coverage",
    "estimate_tokens",
    "example_text",
    "impact_verdict",
    "probability_effective",
    "probability_helps",
    "render_examples",
    "render_lessons",
    "render_playbook",
    "select_entries",
    "select_lessons",
    "similarity",
    "terms",
]

LIVE = ("provisional", "active")
#: The reason of a retirement that only made room; such an entry is no tombstone.
_EVICTED = "playbook over its token budget"
_LETTERS = re.compile(r"[^\W\d_]{2,}")


def similarity(a: str, b: str) -> float:
    """Token-overlap (Jaccard) similarity of two lessons, 0..1."""
    left, right = terms(a), terms(b)
    return len(left & right) / len(left | right) if left and right else 0.0


def is_usable_lesson(text: str) -> bool:
    """A lesson is an instruction: at least three words of letters. '1.0' or 'log_big.log' is not one (a weak
    synthesizer proposes such strings) and never enters the playbook."""
    return sum(1 for token in text.split() if _LETTERS.search(token)) >= 3


def estimate_tokens(text: str) -> int:
    """About four characters a token; good enough for budgets."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


@dataclass(slots=True)
class PlaybookEntry:
    """A live playbook entry as sessions read it: a plain copy of its
    :class:`~atlas_learning.store.PlaybookEntryRecord` row, kept in the key's cached :class:`PlaybookView`.

    Sessions read a few hundred attributes of these per begin and finish; an ORM-mapped record makes each read go
    through SQLAlchemy's instrumentation, which at 1,000 live entries cost more than the selection itself. The
    registry adds a session's counts to the cached copy in place (the row gets them through the recorder); any
    other change makes a new copy (:func:`dataclasses.replace`). The row stays the record of truth."""

    id: str
    learning_key: str
    audience: str
    kind: str
    task_family: str | None
    lesson: str
    applies_when: str | None
    status: str
    version: int
    provenance: tuple[str, ...]
    uses: int
    reward_sum_with: float
    reward_count_with: int
    reward_sum_without: float
    reward_count_without: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> PlaybookEntry:
        """A copy of one of the table's result rows."""
        values = row._mapping
        return cls(**{name: values[name] for name in _ENTRY_FIELDS}, provenance=tuple(values["provenance"] or ()))


_ENTRY_FIELDS = tuple(f.name for f in fields(PlaybookEntry) if f.name != "provenance")
#: What selection and rendering accept: the cached plain copies, or records read by hand.
Entry = PlaybookEntry | PlaybookEntryRecord


def _entry(row: Any) -> PlaybookEntryRecord:
    """An entry from one of its own rows: trusted, so built without validation.

    Building a table model without the ORM needs the mappers configured, which an ORM query would have done."""
    configure_mappers()  # a no-op once configured
    return PlaybookEntryRecord.model_construct(**row._mapping)


def _entry_text(entry: Entry) -> str:
    return f"{entry.lesson} {entry.applies_when or ''}"


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def _impact(entry: Entry) -> float | None:
    with_mean, without_mean = _mean(entry.reward_sum_with, entry.reward_count_with), _mean(entry.reward_sum_without, entry.reward_count_without)
    return None if with_mean is None or without_mean is None else with_mean - without_mean


def _posterior(total: float, count: int) -> tuple[float, float]:
    """Mean and variance of Beta(1 + total, 1 + count - total): outcomes in 0..1 as fractional successes under a
    uniform prior."""
    a, b = 1.0 + total, 1.0 + max(0.0, count - total)
    return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def probability_helps(entry: Entry) -> float:
    """P(the entry's true mean outcome with it > without it), from Beta posteriors of the two arms.

    An arm with outcome sum s over n sessions has posterior Beta(1 + s, 1 + n - s) (a uniform prior). The
    difference of the two posteriors is approximated as normal."""
    mean_with, var_with = _posterior(entry.reward_sum_with, entry.reward_count_with)
    mean_without, var_without = _posterior(entry.reward_sum_without, entry.reward_count_without)
    return _normal_cdf((mean_with - mean_without) / math.sqrt(var_with + var_without))


def probability_effective(entry: Entry, floor: float) -> float:
    """P(the entry's true mean outcome with it >= ``floor``), from the with-arm's Beta posterior (normal approx.)."""
    mean, variance = _posterior(entry.reward_sum_with, entry.reward_count_with)
    return _normal_cdf((mean - floor) / math.sqrt(variance))


def impact_verdict(entry: Entry, config: PlaybookConfig) -> tuple[str, str] | None:
    """The status the entry's impact calls for, with the figures as the reason; None while undecided.

    With ``min_with`` sessions given it and ``min_without`` withheld: retired when it probably hurts, activated
    (under trial) when it probably helps. Under trial it is also retired when the sessions given it probably stay
    under ``efficacy_floor`` (it does not make the student succeed, whatever the comparison), or when it reaches
    ``max_trial_uses`` undecided."""
    n_with, n_without = entry.reward_count_with, entry.reward_count_without
    if n_with < config.min_with:
        return None
    with_text = f"outcome {entry.reward_sum_with / n_with:.2f} with it (n={n_with})"
    compared = n_without >= config.min_without
    if compared:
        helps = probability_helps(entry)
        figures = f"P(helps) {helps:.2f}: {with_text} vs {entry.reward_sum_without / n_without:.2f} without (n={n_without})"
        if helps <= 1.0 - config.decide_confidence:
            return "retired", f"impact: probably harmful; {figures}"
        if entry.status == "provisional" and helps >= config.decide_confidence:
            return "active", f"impact: probably helps; {figures}"
    if entry.status != "provisional":
        return None
    effective = probability_effective(entry, config.efficacy_floor)
    if effective <= 1.0 - config.decide_confidence:
        return "retired", f"impact: ineffective; P(outcome >= {config.efficacy_floor}) {effective:.2f} with {with_text}"
    if compared and n_with >= config.max_trial_uses:
        return "retired", f"impact: no effect shown after {n_with} uses; {figures}"
    return None


@dataclass
class PlaybookView:
    """A key's live entries as of one registry version, with the relevance index over them (built on first use)."""

    learning_key: str
    version: int
    entries: list[PlaybookEntry]
    _index: RelevanceIndex | None = field(default=None, repr=False)
    _families: dict[str | None, list[int]] | None = field(default=None, repr=False)
    _positions: dict[str, int] | None = field(default=None, repr=False)

    def _matches(self, task: str, *, at_least: float = 0.0, include: Sequence[int] = ()) -> dict[int, float]:
        if self._index is None:
            self._index = RelevanceIndex([_entry_text(e) for e in self.entries])
        return self._index.matches(task, at_least=at_least, include=include)

    def relevance(self, task: str) -> dict[str, float]:
        """The relevance to ``task`` (0..1) of the entries it matches at all, by entry id."""
        return {self.entries[i].id: score for i, score in self._matches(task).items()}

    def candidates(self, task: str, family: str | None, *, threshold: float = 0.0) -> tuple[list[PlaybookEntry], dict[str, float]]:
        """The live entries that may apply to ``task``: those it matches at ``threshold`` or more, and those scoped
        to its family (whatever their match); with their relevance. What a session looks at, so its cost follows
        what matches, not the playbook's size."""
        positions = self._by_family().get(family, []) if family is not None else []
        # Only what can apply is looked at: matches that reach the threshold, and the family's own entries.
        matched = [(self.entries[i], score) for i, score in self._matches(task, at_least=threshold, include=positions).items()]
        relevance = {entry.id: score for entry, score in matched}
        chosen = [entry for entry, score in matched if (score >= threshold or entry.task_family == family) and entry.status in LIVE]
        seen = {entry.id for entry in chosen}
        chosen += [e for e in (self.entries[i] for i in positions) if e.id not in seen and e.status in LIVE]
        return chosen, relevance

    def get(self, ids: Sequence[str]) -> list[PlaybookEntry]:
        """The cached entries with these ids (those the view holds)."""
        positions = self._index_positions()
        return [self.entries[positions[i]] for i in ids if i in positions]

    def _index_positions(self) -> dict[str, int]:
        if self._positions is None:
            self._positions = {e.id: i for i, e in enumerate(self.entries)}
        return self._positions

    def replace(self, fresh: Sequence[PlaybookEntry]) -> None:
        """Put newer copies of some entries in place (same text: the index stays valid)."""
        self._positions = self._index_positions()
        for entry in fresh:
            position = self._positions.get(entry.id)
            if position is not None:
                self.entries[position] = entry

    def _by_family(self) -> dict[str | None, list[int]]:
        if self._families is None:
            grouped: dict[str | None, list[int]] = {}
            for position, entry in enumerate(self.entries):
                grouped.setdefault(entry.task_family, []).append(position)
            self._families = grouped
        return self._families


@dataclass(frozen=True)
class Selection:
    """What one session gets of one audience and kind: the entries injected, and those that applied but were
    withheld for the impact comparison. ``scores`` holds the relevance (with the family boost) of both."""

    chosen: list[Entry]
    withheld: list[Entry]
    scores: dict[str, float]


def _withhold(entry: Entry, config: PlaybookConfig, draw: Callable[[], float]) -> bool:
    """Whether this session is one of the entry's "without" sessions. Under trial, ``balanced``: a coin at
    ``trial_explore_rate`` that sends the session to the smaller arm once the arms differ by ``max_imbalance``
    (a big-stick design: random, yet balanced enough to decide soon); ``adaptive``: a coin at the probability that
    the entry does not help (Thompson-like, within ``explore_rate`` and ``trial_explore_rate``), the big stick only
    until the "without" arm has ``min_without`` sessions. Once active, ``explore_rate``."""
    if entry.status != "provisional":
        return draw() < config.explore_rate
    lead = entry.reward_count_with - entry.reward_count_without
    if config.trial_allocation == "adaptive":
        if lead >= config.max_imbalance and entry.reward_count_without < config.min_without:
            return True  # the comparison needs its minimum "without" sample
        if -lead >= config.max_imbalance:
            return False
        share = min(config.trial_explore_rate, max(config.explore_rate, 1.0 - probability_helps(entry)))
        return draw() < share
    if lead >= config.max_imbalance:
        return True
    if -lead >= config.max_imbalance:
        return False
    return draw() < config.trial_explore_rate


def select_entries(entries: Iterable[Entry], relevance: Mapping[str, float], *, family: str | None,
                   audience: str, kind: str, token_budget: int, config: PlaybookConfig,
                   draw: Callable[[], float] | None = None, max_count: int | None = None) -> Selection:
    """The entries of one audience and kind that apply to a task (``relevance`` from :meth:`PlaybookView.relevance`),
    ranked by relevance and impact, minus those withheld, within ``token_budget`` counted on the rendered block.

    ``draw`` gives uniform numbers in [0, 1) for withholding (None: nothing is withheld)."""
    header, separator, piece = _BLOCKS[kind == "example"]
    scores: dict[str, float] = {}
    applying: list[Entry] = []
    boost, threshold = config.family_boost, config.relevance_threshold
    for entry in entries:
        if entry.audience != audience or entry.kind != kind or entry.status not in LIVE:
            continue
        scope = entry.task_family
        if scope is not None and family is not None and scope != family:
            continue  # scoped to another family: never applies here
        entry_id = entry.id
        score = relevance.get(entry_id, 0.0) + (boost if scope is not None and scope == family else 0.0)
        if score >= threshold:
            scores[entry_id] = round(score, 4)
            applying.append(entry)
    ranked = sorted(applying, key=lambda e: (scores[e.id] + 0.5 * (_impact(e) or 0.0), e.status == "active", e.created_at),
                    reverse=True)
    chosen: list[Entry] = []
    withheld: list[Entry] = []
    length = len(header) - len(separator)  # of the rendered block so far: the header, then the pieces joined
    for entry in ranked:
        if max_count is not None and len(chosen) >= max_count:
            break
        grown = length + len(separator) + len(piece(entry))
        if math.ceil(grown / 4) > token_budget:  # estimate_tokens of a text that long
            continue  # does not fit: neither with nor without, so the comparison stays fair
        if draw is not None and _withhold(entry, config, draw):
            withheld.append(entry)
        else:
            chosen.append(entry)
            length = grown
    return Selection(chosen, withheld, {e.id: scores[e.id] for e in [*chosen, *withheld]})


def select_lessons(entries: Sequence[Entry], task: str, *, audience: str, token_budget: int,
                   family: str | None = None, config: PlaybookConfig | None = None) -> list[Entry]:
    """The lessons to inject for ``task`` (nothing withheld): :func:`select_entries` over a fresh index."""
    view = PlaybookView("", 0, list(entries))
    return select_entries(view.entries, view.relevance(task), family=family, audience=audience, kind="lesson",
                          token_budget=token_budget, config=config or PlaybookConfig()).chosen


_LESSONS_HEADER = "Lessons from earlier runs; follow them:\n"


def _lesson_line(entry: Entry) -> str:
    return f"- {entry.lesson}" + (f" (when {entry.applies_when})" if entry.applies_when else "")


def _example_piece(entry: Entry) -> str:
    return f"Worked example from an earlier run that passed its checks:\n{entry.lesson}"


#: Each block as (header, separator, piece of one entry): lessons, then worked examples. The renderers below and
#: the budget count in :func:`select_entries` are built from these, so the count is the rendered length.
_BLOCKS: tuple[tuple[str, str, Callable[[Entry], str]], ...] = (
    (_LESSONS_HEADER, "\n", _lesson_line), ("", "\n\n", _example_piece))


def render_lessons(entries: Sequence[Entry]) -> str:
    """Lessons as an instruction block; empty when there are none."""
    if not entries:
        return ""
    return _LESSONS_HEADER + "\n".join(_lesson_line(e) for e in entries)


def render_examples(entries: Sequence[Entry]) -> str:
    """Worked examples as an instruction block; empty when there are none."""
    return "\n\n".join(_example_piece(e) for e in entries)


def render_playbook(entries: Sequence[Entry]) -> str:
    """Entries as one audience is shown them: the lessons block, then the worked examples; '' without any.

    The one rendering of playbook text, used at run time and by export and training."""
    lessons = render_lessons([e for e in entries if e.kind != "example"])
    examples = render_examples([e for e in entries if e.kind == "example"])
    return "\n\n".join(part for part in (lessons, examples) if part)


def example_text(task: str, steps: Sequence[Mapping[str, Any]], answer: str, *, max_steps: int = 6, clip: int = 160) -> str:
    """A verified session as a compact worked example: the task, the tool calls that succeeded, the answer."""
    def cut(value: Any, limit: int) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    calls = [s for s in steps if s.get("kind") == "tool_call" and not s.get("error")][-max_steps:]
    lines = [f"Task: {cut(task, 300)}"]
    lines += [f"- {s.get('tool_name') or s.get('name')}({cut(s.get('tool_args') or {}, clip // 2)}) -> {cut(s.get('output') or '', clip)}"
              for s in calls]
    lines.append(f"Answer: {cut(answer, 300)}")
    return "\n".join(lines)


def coverage(entries: Sequence[Entry], task: str) -> float:
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

    def __init__(self, store: Store, config: PlaybookConfig | None = None, *, redactor: Redactor | None = None,
                 view_cache_s: float = 0.0) -> None:
        self.store = store
        self.config = config or PlaybookConfig()
        self.redactor = redactor or Redactor()
        self._views: dict[str, PlaybookView] = {}
        self._views_lock = threading.Lock()
        #: Seconds a view's version is trusted without a read; this process's own changes reset it (they show at
        #: once), another process's show within this time. 0: the version is read at every :meth:`view`.
        self.view_cache_s = view_cache_s
        self._checked: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- reads
    def live_entries(self, learning_key: str) -> list[PlaybookEntryRecord]:
        """Provisional and active entries of a key (lessons and examples), oldest first, read now."""
        return self._entries(learning_key, LIVE)

    def retired_lessons(self, learning_key: str, limit: int = 200) -> list[str]:
        """The texts of the key's most recently retired lessons (its tombstones), newest first."""
        entries = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]
        statement = (entries.select().with_only_columns(entries.c.lesson)
                     .where(entries.c.learning_key == learning_key, entries.c.status == "retired", entries.c.kind == "lesson")
                     .order_by(entries.c.updated_at.desc()).limit(limit))
        return [row[0] for row in self.store.read(statement)]

    def _entries(self, learning_key: str, statuses: Sequence[str]) -> list[PlaybookEntryRecord]:
        return [_entry(row) for row in self._rows(learning_key, statuses)]

    def _rows(self, learning_key: str, statuses: Sequence[str]) -> list[Any]:
        entries = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]
        statement = entries.select().where(entries.c.learning_key == learning_key, entries.c.status.in_(statuses)).order_by(entries.c.created_at)
        return self.store.read(statement)

    def view(self, learning_key: str) -> PlaybookView:
        """The key's live entries with their relevance index, re-read only when the registry version moved.

        One primary-key read per call, at most one per ``view_cache_s`` (this process's own changes force the
        next); the entries and the index are reused across sessions until a change (an add, a refinement, a
        status change) bumps the version."""
        now = time.monotonic()
        with self._views_lock:
            cached = self._views.get(learning_key)
            checked = self._checked.get(learning_key)
        if cached is not None and checked is not None and now - checked < self.view_cache_s:
            return cached
        registry = PlaybookRegistryRecord.__table__  # type: ignore[attr-defined]
        rows = self.store.read(registry.select().with_only_columns(registry.c.version).where(registry.c.learning_key == learning_key))
        version = rows[0][0] if rows else 0
        if cached is None or cached.version != version:
            cached = PlaybookView(learning_key, version, [PlaybookEntry.of(row) for row in self._rows(learning_key, LIVE)] if version else [])
        with self._views_lock:
            self._views[learning_key] = cached
            self._checked[learning_key] = now
        return cached

    def cached(self, learning_key: str, ids: Sequence[str]) -> list[PlaybookEntry]:
        """The cached copies (with this process's latest counts) of some entries of a key; [] when not cached."""
        with self._views_lock:
            view = self._views.get(learning_key)
            return view.get(ids) if view is not None else []

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
    def apply(self, learning_key: str, changes: Sequence[LessonChange], *, session_id: str | None = None,
              task_family: str | None = None) -> list[AppliedChange]:
        """Apply the synthesizer's changes as one new registry version; retried on a lost race.

        An added lesson of ``scope: family`` is scoped to ``task_family`` (the session's); ``general`` ones to the
        whole key. An add that repeats a retired entry is ``refused`` (tombstone); one that repeats a live entry
        confirms it (``confirm``)."""
        if not changes:
            return []
        changes = [c.model_copy(update={"lesson": self.redactor.text(c.lesson), "applies_when": self.redactor.text(c.applies_when),
                                        "reason": self.redactor.text(c.reason) if c.reason else c.reason})
                   for c in changes]
        return self._with_compare_and_set(learning_key, lambda tx, live, version: self._plan(tx, learning_key, live, version, changes,
                                                                                            session_id, task_family))

    def add_example(self, learning_key: str, example: str, *, task_family: str | None, session_id: str | None,
                    max_per_family: int, reason: str) -> list[AppliedChange]:
        """Keep a worked example (a verified success, rendered compactly) for its task family.

        Not added when the family already has ``max_per_family`` live examples (a slot frees when impact retires
        one, so examples do not churn and each gets measured), or when it repeats a live or retired example."""
        example = self.redactor.text(example).strip()
        return self._with_compare_and_set(learning_key, lambda tx, live, version: self._plan_example(
            tx, learning_key, live, version, example, task_family, session_id, max_per_family, reason))

    def record_impact(self, learning_key: str, with_ids: Sequence[str], without_ids: Sequence[str], outcome: float, *,
                      recorder: Recorder | None = None) -> list[AppliedChange]:
        """Count one session's outcome (0..1) for the entries it was given and against those it applied to but
        withheld, then apply what :func:`impact_verdict` calls for. Entries that did not apply are not touched.

        With a ``recorder`` the counts go through its background writer (in order with the session's rows) and
        the cached view is updated in place, so the caller waits for no write; only a status change, which is
        rare, is written at once, from the counts as the store has them."""
        given, held = list(dict.fromkeys(with_ids)), [i for i in dict.fromkeys(without_ids) if i not in with_ids]
        if not given and not held:
            return []
        if recorder is None:
            touched = self._count_now(given, held, outcome)
            self._refresh_cached(learning_key, touched)
        else:
            recorder.increment(PlaybookEntryRecord, given, uses=1, reward_sum_with=outcome, reward_count_with=1)
            recorder.increment(PlaybookEntryRecord, held, reward_sum_without=outcome, reward_count_without=1)
            touched = self._count_cached(learning_key, given, held, outcome)
        due = sorted(e.id for e in touched if impact_verdict(e, self.config) is not None)
        if not due:
            return []
        if recorder is not None:
            recorder.flush()  # the store must hold the counts the verdict is taken from
        applied = self._with_compare_and_set(learning_key, self._status_changes, only=due)
        self._cache_status_changes(learning_key, applied)
        return applied

    def _count_now(self, given: list[str], held: list[str], outcome: float) -> list[PlaybookEntry]:
        entries = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]
        counts_with = case((entries.c.id.in_(given), 1), else_=0) if given else 0
        statement = (
            update(entries)
            .where(entries.c.id.in_(given + held), entries.c.status.in_(LIVE))
            .values(
                uses=entries.c.uses + counts_with,
                reward_sum_with=entries.c.reward_sum_with + counts_with * outcome,
                reward_count_with=entries.c.reward_count_with + counts_with,
                reward_sum_without=entries.c.reward_sum_without + (1 - counts_with) * outcome,
                reward_count_without=entries.c.reward_count_without + (1 - counts_with),
            )
            .returning(*entries.c)
        )
        try:  # one statement, no ORM session
            with self.store.engine.begin() as connection:
                return [PlaybookEntry.of(row) for row in connection.execute(statement)]
        except SQLAlchemyError as exc:
            raise self.store.as_store_error(exc) from None

    def _count_cached(self, learning_key: str, given: list[str], held: list[str], outcome: float) -> list[PlaybookEntry]:
        """Add the session's counts to the cached copies of the entries; those copies, for the verdicts."""
        with self._views_lock:
            view = self._views.get(learning_key)
            if view is None:
                return []
            current = view.get([*given, *held])
            given_ids = set(given)
            counted = [e for e in current if e.status in LIVE]
            for entry in counted:  # in place, under the lock: a copy per entry per session cost more than the rest
                if entry.id in given_ids:
                    entry.uses += 1
                    entry.reward_sum_with += outcome
                    entry.reward_count_with += 1
                else:
                    entry.reward_sum_without += outcome
                    entry.reward_count_without += 1
        return counted

    def retire(self, learning_key: str, entry_id: str, *, reason: str = "retired by hand") -> list[AppliedChange]:
        """Retire one entry by hand (for ``atlas playbook retire``); the history row says ``manual: <reason>``."""
        return self.apply(learning_key, [LessonChange(op="retire", entry_id=entry_id, reason=f"manual: {self.redactor.cut(reason, 192)}")])

    # ---------------------------------------------------------------------------------------- internals
    def _refresh_cached(self, learning_key: str, touched: Sequence[PlaybookEntry]) -> None:
        """Fresh impact figures into the cached view (they change without a version bump)."""
        with self._views_lock:
            view = self._views.get(learning_key)
            if view is not None and touched:
                view.replace(touched)

    def _cache_status_changes(self, learning_key: str, applied: Sequence[AppliedChange]) -> None:
        """A status change this process made moves its cached view to the new version in place, when the view
        was at the version just before (no other writer in between): no re-read of every live entry."""
        if not applied:
            return
        version = applied[0].registry_version
        with self._views_lock:
            view = self._views.get(learning_key)
            if view is None or view.version != version - 1:
                return
            statuses = {c.entry_id: "retired" if c.op == "retire" else "active" for c in applied}
            view.replace([replace(e, status=statuses[e.id], version=e.version + 1) for e in view.get(list(statuses))])
            view.version = version

    def _with_compare_and_set(self, learning_key: str, plan: Any, *, only: Sequence[str] | None = None) -> list[AppliedChange]:
        """Run ``plan(tx, live, next_version)`` and bump the registry version if it changed anything; ``only``
        restricts the live entries read to those ids (a status change needs no others)."""
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
                    query = select(PlaybookEntryRecord).where(PlaybookEntryRecord.learning_key == learning_key,
                                                              col(PlaybookEntryRecord.status).in_(LIVE))
                    if only is not None:
                        query = query.where(col(PlaybookEntryRecord.id).in_(only))
                    live = list(tx.exec(query).all())
                    applied = plan(tx, live, version + 1)
                    if not any(change.op != "refused" for change in applied):
                        return applied
                    bumped = tx.exec(
                        update(PlaybookRegistryRecord)
                        .where(PlaybookRegistryRecord.learning_key == learning_key, PlaybookRegistryRecord.version == version)
                        .values(version=version + 1, updated_at=utcnow())
                    )
                    if bumped.rowcount != 1:
                        raise _Conflict
                with self._views_lock:  # this process changed the key: the next view reads the version again
                    self._checked.pop(learning_key, None)
                return applied
            except _Conflict:
                last_error = _Conflict("another session changed the playbook first")
            except StoreError as exc:
                if not exc.retryable:
                    raise
                last_error = exc
        raise StoreError(f"playbook of {learning_key!r}: gave up after {self.max_attempts} concurrent-update conflicts ({last_error})")

    @staticmethod
    def _tombstones(tx: Session, key: str, kind: str) -> list[PlaybookEntryRecord]:
        """Retired entries of a kind, except those retired only to make room (over the token budget): those
        were not found wanting, and may come back."""
        evicted = select(PlaybookVersionRecord.entry_id).where(PlaybookVersionRecord.learning_key == key,
                                                                PlaybookVersionRecord.reason == _EVICTED)
        return list(tx.exec(select(PlaybookEntryRecord).where(
            PlaybookEntryRecord.learning_key == key, PlaybookEntryRecord.status == "retired", PlaybookEntryRecord.kind == kind,
            col(PlaybookEntryRecord.id).not_in(evicted))).all())

    def _tombstone_of(self, tombstones: Sequence[PlaybookEntryRecord], lesson: str) -> PlaybookEntryRecord | None:
        """The retired lesson that ``lesson`` repeats (the same text or a near-duplicate), if any."""
        dead = max(tombstones, key=lambda e: similarity(e.lesson, lesson), default=None)
        return dead if dead is not None and similarity(dead.lesson, lesson) >= self.config.merge_similarity else None

    def _plan(self, tx: Session, key: str, live: list[PlaybookEntryRecord], version: int, changes: Sequence[LessonChange],
              session_id: str | None, task_family: str | None) -> list[AppliedChange]:
        by_id = {entry.id: entry for entry in live}
        lessons = [e for e in live if e.kind == "lesson"]
        tombstones: list[PlaybookEntryRecord] | None = None
        applied: list[AppliedChange] = []
        for change in changes:
            if change.op == "add":
                lesson = change.lesson.strip()
                if not is_usable_lesson(lesson):
                    continue
                if tombstones is None:
                    tombstones = self._tombstones(tx, key, "lesson")
                if (dead := self._tombstone_of(tombstones, lesson)) is not None:
                    applied.append(AppliedChange("refused", dead.id, lesson, version, "repeats a retired lesson (tombstone)"))
                    continue
                family = task_family if change.scope == "family" else None
                # a twin is a live lesson of the same audience and scope: one scoped to another family never
                # applies here, so confirming it would leave this family without the lesson
                twin = max((e for e in lessons if e.audience == change.audience and e.task_family == family),
                           key=lambda e: similarity(e.lesson, lesson), default=None)
                if twin is not None and similarity(twin.lesson, lesson) >= self.config.merge_similarity:
                    # A near-duplicate confirms the entry: its provenance grows (under the same compare-and-set,
                    # so concurrent confirmations all count); its text stays.
                    if session_id and session_id not in twin.provenance:
                        twin.provenance = [*twin.provenance, session_id]
                        applied.append(self._bump(tx, twin, "confirm", version, session_id, "a near-duplicate lesson was proposed again"))
                    continue
                entry = PlaybookEntryRecord(learning_key=key, audience=change.audience, lesson=lesson, task_family=family,
                                            applies_when=change.applies_when or None, provenance=[session_id] if session_id else [])
                tx.add(entry)
                live.append(entry)
                lessons.append(entry)
                by_id[entry.id] = entry
                applied.append(self._version_row(tx, entry, "add", version, session_id, change.reason or "proposed by the synthesizer"))
            elif change.entry_id in by_id:
                entry = by_id[change.entry_id]
                if change.op == "refine" and is_usable_lesson(change.lesson):
                    if tombstones is None:
                        tombstones = self._tombstones(tx, key, "lesson")
                    if (dead := self._tombstone_of(tombstones, change.lesson.strip())) is not None:
                        applied.append(AppliedChange("refused", dead.id, change.lesson.strip(), version, "repeats a retired lesson (tombstone)"))
                        continue
                    applied.append(self._refine(tx, entry, change.lesson.strip(), change, version, session_id))
                elif change.op == "retire":
                    entry.status = "retired"
                    applied.append(self._bump(tx, entry, "retire", version, session_id, change.reason or "retired by the synthesizer"))
            else:  # an id the synthesizer made up, or one retired meanwhile: said, not dropped silently
                applied.append(AppliedChange("refused", str(change.entry_id or ""), (change.lesson or "").strip(), version,
                                             f"no live entry {change.entry_id!r} to {change.op}"))
        applied.extend(self._enforce_budget(tx, [e for e in lessons if e.status in LIVE], version, session_id))
        return applied

    def _plan_example(self, tx: Session, key: str, live: list[PlaybookEntryRecord], version: int, example: str,
                      family: str | None, session_id: str | None, max_per_family: int, reason: str) -> list[AppliedChange]:
        same_family = [e for e in live if e.kind == "example" and e.task_family == family]
        if not example or len(same_family) >= max_per_family:
            return []  # a full family keeps its examples until their impact retires one: no churn, and each is measured
        known = [*same_family, *(e for e in self._tombstones(tx, key, "example") if e.task_family == family)]
        if any(similarity(e.lesson, example) >= self.config.merge_similarity for e in known):
            return []
        entry = PlaybookEntryRecord(learning_key=key, kind="example", task_family=family, lesson=example,
                                    provenance=[session_id] if session_id else [])
        tx.add(entry)
        return [self._version_row(tx, entry, "add", version, session_id, reason)]

    def _refine(self, tx: Session, entry: PlaybookEntryRecord, lesson: str, change: LessonChange, version: int,
                session_id: str | None) -> AppliedChange:
        entry.lesson = lesson
        if change.applies_when:
            entry.applies_when = change.applies_when
        if session_id and session_id not in entry.provenance:
            entry.provenance = [*entry.provenance, session_id]
        return self._bump(tx, entry, "refine", version, session_id, change.reason or "refined by the synthesizer")

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
                                     applies_when=entry.applies_when, status=entry.status, session_id=session_id, reason=reason))
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
            retired.append(self._bump(tx, entry, "retire", version, session_id, _EVICTED))
        return retired

    def _status_changes(self, tx: Session, live: list[PlaybookEntryRecord], version: int) -> list[AppliedChange]:
        """The status changes the entries' impact calls for, taken from their rows as the store has them now."""
        applied = []
        for entry in live:
            verdict = impact_verdict(entry, self.config)
            if verdict is not None and entry.status != verdict[0]:
                status, reason = verdict
                entry.status = status
                applied.append(self._bump(tx, entry, "retire" if status == "retired" else "activate", version, None, reason))
        return applied
