"""The capability probe: how much supervision does this task need?

Cheap first. A prior from the learning key's history (recent rewards, the streak of good ones, how often the
teacher had to intervene, how well the playbook covers the task) decides with a confidence; only when that
confidence is under ``probe_below_confidence`` does the LLM probe decide. A probe that fails or answers
nonsense fails open to ``paired``, and the decision records why. A lane forced in config wins outright.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlmodel import col, select

from .config import SupervisionConfig
from .flows import Ask, Flow
from .prompts import probe_messages
from .schemas import ProbeAnswer
from .store import SessionRecord, Store

__all__ = ["HistoryCache", "KeyHistory", "LaneDecision", "load_history", "prior_decision", "probe_flow"]


@dataclass(frozen=True)
class KeyHistory:
    """What the probe knows of a learning key's task family: its finished sessions, most recent first."""

    rewards: tuple[float, ...] = ()
    lanes: tuple[str, ...] = ()
    interventions: tuple[int, ...] = ()
    #: Finished sessions in the window, rewarded or not (the warm-up counts these).
    finished: int | None = None
    #: Why the history is empty when it could not be read (store down); None when it was read.
    unavailable: str | None = None

    @property
    def sessions(self) -> int:
        return len(self.rewards) if self.finished is None else max(self.finished, len(self.rewards))


@dataclass(frozen=True)
class LaneDecision:
    """The lane a session runs in, how sure the decision is, why, and who decided (prior, probe, config, fallback)."""

    lane: str
    confidence: float
    reason: str
    source: str
    signals: dict[str, Any] = field(default_factory=dict)


#: A session as the lane prior reads it: (id, reward, lane, interventions, status, checks_passed, explored).
HistoryRow = tuple[str, "float | None", str, int, str, "bool | None", bool]


class HistoryCache:
    """The stored history rows of (key, family, window), reused for ``ttl_s`` seconds: begin reads them on every
    session. When this process stores one of a key's sessions it puts that row in the cached lists itself
    (:meth:`stored`), so its own sessions show at once without a read; another process's show within ``ttl_s``.
    ``ttl_s`` 0 reads every time."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        #: slot -> (when read, [(started_at, row)], newest first)
        self._rows: dict[tuple[str, str | None, int], tuple[float, list[tuple[datetime, HistoryRow]]]] = {}
        self._lock = threading.Lock()

    def rows(self, store: Store, learning_key: str, window: int, task_family: str | None) -> list[HistoryRow]:
        slot = (learning_key, task_family, window)
        now = time.monotonic()
        with self._lock:
            cached = self._rows.get(slot)
        if cached is not None and now - cached[0] < self.ttl_s:
            return [row for _, row in cached[1]]
        read = [(_naive_utc(r[-1]), tuple(r[:-1])) for r in _read_history(store, learning_key, window, task_family)]
        if self.ttl_s > 0:
            with self._lock:
                self._rows[slot] = (now, read)
        return [row for _, row in read]  # type: ignore[misc]

    def stored(self, learning_key: str, task_family: str | None, started_at: datetime, row: HistoryRow) -> None:
        """One of the key's sessions was just stored as ``row``: it goes into every cached list it belongs to
        (the key's whole history and its family's), in start order, replacing an older copy of it."""
        started = _naive_utc(started_at)
        with self._lock:
            for slot, (read_at, rows) in list(self._rows.items()):
                key, family, window = slot
                if key != learning_key or (family is not None and family != task_family):
                    continue
                kept = [item for item in rows if item[1][0] != row[0]]
                kept.append((started, row))
                kept.sort(key=lambda item: item[0], reverse=True)
                self._rows[slot] = (read_at, kept[:window])

    def invalidate(self, learning_key: str) -> None:
        """Forget a key's rows (every family's): one of its sessions changed in a way the cache cannot tell."""
        with self._lock:
            for slot in [slot for slot in self._rows if slot[0] == learning_key]:
                del self._rows[slot]


def _naive_utc(moment: datetime) -> datetime:
    """A timestamp comparable across stores: SQLite hands back naive UTC, PostgreSQL aware."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo is not None else moment


def _read_history(store: Store, learning_key: str, window: int, task_family: str | None) -> list[Any]:
    statement = (
        select(SessionRecord.id, SessionRecord.reward, SessionRecord.lane, SessionRecord.interventions, SessionRecord.status, SessionRecord.checks_passed,
               SessionRecord.explored, SessionRecord.started_at)
        .where(SessionRecord.learning_key == learning_key, col(SessionRecord.status).in_(("completed", "failed")))
        .order_by(col(SessionRecord.started_at).desc())
        .limit(window)
    )
    if task_family is not None:
        statement = statement.where(SessionRecord.task_family == task_family)
    return store.read(statement)


def load_history(store: Store, learning_key: str, window: int, task_family: str | None = None,
                 unsettled: Sequence[HistoryRow] = (), cache: HistoryCache | None = None) -> KeyHistory:
    """The last ``window`` finished sessions of a key's task family (of the whole key when ``task_family`` is
    None), most recent first. ``unsettled`` are sessions that ended but whose background finish has not stored
    them yet (most recent first; their reward is what their checks said, else None): they come first, so a
    session's outcome steers the next one's lane without waiting for its judges.

    A session that failed counts with its reward, or 0 when it has none. One whose final answer failed its
    verifiable checks counts as 0, whatever the judges said, and as an intervention; so does an ``auto`` session
    in which a check rejected an attempt (its retry may have passed, but the student needed the check). A session
    that went without a lesson that was helping (withheld for the impact comparison: ``explored``) and needed the
    teacher is left out: the experiment explains the failure (it counts towards the warm-up only). A failure breaks a streak. A completed session no judge or check
    could score is left out of the rewards but counts towards the warm-up. ``cache`` reuses recent reads.
    """
    stored = cache.rows(store, learning_key, window, task_family) if cache is not None \
        else [tuple(r[:-1]) for r in _read_history(store, learning_key, window, task_family)]
    stored_ids = {r[0] for r in stored}
    rows = [r[1:] for r in [*(u for u in unsettled if u[0] not in stored_ids), *stored]][:window]
    kept = [(0.0 if r[0] is None or _failed_checks(r) else float(r[0]), r[1] or "", int(r[2] or 0) + (1 if r[4] is False else 0))
            for r in rows if not _explained(r) and (r[0] is not None or r[3] == "failed" or _failed_checks(r))]
    return KeyHistory(
        rewards=tuple(r[0] for r in kept),
        lanes=tuple(r[1] for r in kept),
        interventions=tuple(r[2] for r in kept),
        finished=len(rows),
    )


def _explained(row: Any) -> bool:
    """An experiment's failure: a lesson was withheld, and the teacher or a check had to step in."""
    return bool(row[5]) and (int(row[2] or 0) > 0 or row[4] is False)


def _failed_checks(row: Any) -> bool:
    """The final answer failed its checks, or (in auto, where only checks validate) an attempt did."""
    return row[4] is False or (row[1] == "auto" and int(row[2] or 0) > 0)


def _streak(rewards: Sequence[float], threshold: float) -> int:
    count = 0
    for reward in rewards:
        if reward < threshold:
            break
        count += 1
    return count


def prior_decision(history: KeyHistory, coverage: float, config: SupervisionConfig) -> LaneDecision:
    """The history-based decision. Confidence grows with the margin from the thresholds and the sample size."""
    recent = history.rewards[:5]
    signals: dict[str, Any] = {
        "sessions": history.sessions,
        "recent_mean_reward": round(statistics.fmean(recent), 3) if recent else None,
        "good_streak": _streak(history.rewards, config.auto_min_reward),
        "intervention_rate": round(sum(1 for i in history.interventions[:5] if i) / len(recent), 3) if recent else None,
        "playbook_coverage": round(coverage, 3),
    }
    if config.lane is not None:
        return LaneDecision(config.lane, 1.0, f"supervision.lane is set to {config.lane}", "config", signals)
    if history.unavailable is not None:
        return LaneDecision("paired", 0.5, f"history unavailable ({history.unavailable}); failing open to paired", "fallback", signals)
    if history.sessions < config.warmup_sessions:
        return LaneDecision("coach", 0.9, f"new task family: {history.sessions} of {config.warmup_sessions} warm-up sessions done, coaching", "prior", signals)

    if not recent:
        return LaneDecision("paired", 0.3, "no rewarded sessions yet for this key", "prior", signals)
    mean = signals["recent_mean_reward"]
    streak = signals["good_streak"]
    rate = signals["intervention_rate"]
    sample_factor = min(1.0, len(recent) / 5) ** 0.5
    # A playbook that covers the task well earns trust one session sooner.
    needed = max(1, config.auto_streak - (1 if coverage >= 0.5 else 0))
    if streak >= needed and rate <= config.auto_max_intervention_rate:
        margin = (mean - config.auto_min_reward) / max(1e-6, 1 - config.auto_min_reward)
        confidence = min(1.0, 0.6 + 0.1 * (streak - needed) + 0.3 * margin)
        reason = f"{streak} sessions in a row at reward >= {config.auto_min_reward}, intervention rate {rate:.2f}"
        return LaneDecision("auto", confidence, reason, "prior", signals)
    if config.escalate_below_reward is not None and mean < config.escalate_below_reward and len(recent) >= 3:
        confidence = min(1.0, 0.5 + (config.escalate_below_reward - mean) * 2) * sample_factor
        return LaneDecision("escalate", confidence, f"recent mean reward {mean:.2f} below {config.escalate_below_reward}", "prior", signals)
    if mean < config.coach_below_reward:
        confidence = min(1.0, 0.5 + (config.coach_below_reward - mean) * 2) * sample_factor
        return LaneDecision("coach", confidence, f"recent mean reward {mean:.2f} below {config.coach_below_reward}", "prior", signals)
    margin = min(mean - config.coach_below_reward, abs(config.auto_min_reward - mean) if streak == 0 else 1.0)
    confidence = min(1.0, 0.5 + margin * 2) * sample_factor
    reason = f"recent mean reward {mean:.2f}; good streak {streak} of {needed} needed for auto"
    if rate is not None and rate > config.auto_max_intervention_rate and streak >= needed:
        reason = f"good streak {streak}, but the teacher intervened in {rate:.0%} of recent sessions"
    return LaneDecision("paired", confidence, reason, "prior", signals)


def probe_flow(task: str, prior: LaneDecision, config: SupervisionConfig) -> Flow[LaneDecision]:
    """The prior's decision, or the LLM probe's when the prior is unsure; fails open to paired."""
    if prior.source in ("config", "fallback") or prior.confidence >= config.probe_below_confidence or not config.llm_probe:
        return prior
    answer = yield Ask("probe", "probe", probe_messages(task, prior.signals), ProbeAnswer)
    if not answer.ok:
        reason = f"probe failed ({answer.error}); prior said {prior.lane} at {prior.confidence:.2f}; failing open to paired"
        return LaneDecision("paired", 0.5, reason, "fallback", {**prior.signals, "probe_error": answer.error})
    probe: ProbeAnswer = answer.output
    reason = f"probe: {probe.reason or probe.lane} (prior said {prior.lane} at {prior.confidence:.2f})"
    if probe.lane == "escalate" and config.escalate_below_reward is None:
        return LaneDecision("coach", probe.confidence, f"{reason}; escalation is off (supervision.escalate_below_reward), coaching instead", "probe", prior.signals)
    return LaneDecision(probe.lane, probe.confidence, reason, "probe", prior.signals)
