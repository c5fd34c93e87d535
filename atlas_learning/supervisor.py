"""The Supervisor: the one API every adapter drives.

>>> sup = Supervisor({"models": {"default": {"provider": "scripted", ...}}})
>>> run = sup.begin("Count the files in ./data", agent_name="file-agent")
>>> run.lane, run.instructions                 # the lane decision and what to put in the student's prompt
>>> run.record_step(kind="tool_call", name="list_files", tool_args={"path": "data"}, output="a.txt b.txt")
>>> verdict = run.validate_answer("2 files")   # paired/coach: the teacher's verdict, with guidance
>>> pending = run.end("2 files")                # returns at once; judged, learned from, stored in the background
>>> pending.result().reward                      # waits for the SessionResult (run.finish() = end + wait)

A session is :meth:`Supervisor.begin` (probe, lessons, lane) → ``record_*`` as the agent works →
``review_plan`` / ``validate_step`` / ``validate_answer`` / ``escalate`` as the lane asks → :meth:`SupervisedRun.end`
(checks, judges, drift, review status, learning, on the background finisher). Every method that calls a model has
an ``a``-prefixed async twin. :meth:`Supervisor.supervise` runs the whole loop around a plain ``attempt(instructions) -> answer``
function. Supervision never raises into the user's run: model failures become recorded reasons (fail open),
store failures spool (see :mod:`atlas_learning.recorder`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import inspect
import logging
import random
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from . import progress as _progress
from .background import BackgroundFinisher, DeadlinePassed, PendingSession, run_with_deadline
from .config import AtlasConfig
from .context import current_session_options
from .errors import AtlasError, ModelError, StoreError
from .events import AtlasEvent, EventBus, EventType
from .families import TaskFamilies
from .flows import Answer, Ask, AskHuman, Flow, adrive, drive
from .judges import Check, CheckContext, SessionReward, StepReward, judge_session_flow, judge_steps_flow, run_checks
from .models import RoleModels, Usage, UsageLedger
from .playbook import (
    AppliedChange,
    PlaybookEntry,
    PlaybookRegistry,
    PlaybookView,
    Selection,
    coverage,
    estimate_tokens,
    example_text,
    probability_helps,
    render_playbook,
    select_entries,
    similarity,
)
from .probe import HistoryCache, HistoryRow, KeyHistory, LaneDecision, load_history, prior_decision, probe_flow
from .prompts import (
    answer_validation_messages,
    execution_messages,
    plan_review_messages,
    render_checks,
    render_steps,
    step_validation_messages,
    synthesis_messages,
)
from .recorder import Recorder
from .redact import Redactor, default_redactor
from .rewards import expected_answer_check, expected_answer_of, mean_or_none, teaching_reward
from .schemas import PlanReview, PlaybookChanges, Verdict
from .store import (
    AttemptRecord,
    GuidanceRecord,
    ModelCallRecord,
    PlanRecord,
    ReviewLogRecord,
    RewardRecord,
    SessionRecord,
    StepRecord,
    Store,
    TrajectoryEventRecord,
    new_id,
    process_owner,
    utcnow,
)
from .student import model_turn, render_instructions, tool_schema

__all__ = ["Supervisor", "SupervisedRun", "SessionResult", "PendingSession", "VerdictResult", "Start", "StepDecision",
           "AnswerDecision", "HumanCallback", "as_text"]

#: Roles whose calls the user's call waits for (the probe before the agent starts, the teacher while it works);
#: ``supervision.max_supervision_seconds`` bounds them. Judges and the synthesizer run in the background.
_CALLER_PATH_ROLES = frozenset({"teacher", "probe"})
#: Finished sessions whose results :meth:`Supervisor.session_result` keeps by id.
_RECENT_RESULTS = 1024

log = logging.getLogger("atlas_learning.supervisor")

_LESSON_EVENTS: dict[str, EventType] = {
    "add": "lesson_added",
    "refine": "lesson_refined",
    "confirm": "lesson_confirmed",
    "activate": "lesson_activated",
    "retire": "lesson_retired",
    "refused": "lesson_refused",
}

#: Decides an escalated task: ``(task, context) -> answer``, sync or async. Adapters provide one (LangGraph: interrupt).
HumanCallback = Callable[[str, dict[str, Any]], "str | Awaitable[str]"]


@dataclass(frozen=True)
class VerdictResult:
    """The teacher's verdict. ``accepted`` is None when the teacher could not answer (the work goes on unverified)."""

    accepted: bool | None
    guidance: str = ""
    reason: str = ""
    attempt: int | None = None
    step_id: str | None = None


@dataclass(frozen=True)
class Start:
    """What :meth:`SupervisedRun.start` decided: ``answer`` is the teacher's (or human's) answer to deliver in
    place of the agent's (escalate); None means run the agent."""

    answer: str | None = None


@dataclass(frozen=True)
class StepDecision:
    """The verdict on a reported tool step: ``accepted`` None when nothing validated it (not coach, a budget, a
    failed teacher call); a rejection's ``guidance`` is already in the run's instructions."""

    accepted: bool | None
    guidance: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AnswerDecision:
    """What to do with a reported final answer: ``accept``; ``retry`` (run the agent again with
    ``instructions`` added, which hold the guidance); or ``stand`` (rejected; ``reason`` says why no retry)."""

    action: Literal["accept", "retry", "stand"]
    verdict: VerdictResult
    instructions: str = ""
    reason: str = ""


@dataclass(frozen=True)
class _Outcome:
    """How a session ended, as learning reads it."""

    reward: float | None
    final: float | None
    unaided: float | None
    checks_passed: bool | None
    drift_alert: bool
    approved: bool
    error: str | None

    def for_impact(self) -> float | None:
        """The outcome a lesson's impact is measured on: the student's own first answer (0..1), before any teacher
        guidance, since that is what a lesson changes (the final answer is the teacher's rescue as much as the
        student's); the final outcome when there was no first verdict. None when the run failed or nothing tells."""
        if self.error:
            return None
        return self.unaided if self.unaided is not None else self.final


@dataclass(frozen=True)
class SessionResult:
    """Everything a finished session produced, as the adapter and the user see it."""

    session_id: str
    learning_key: str
    lane: str
    decision: LaneDecision
    final_answer: str
    accepted: bool | None
    verdicts: list[VerdictResult]
    attempts: int
    reward: float | None
    reward_status: str
    reward_reason: str
    reward_breakdown: dict[str, Any]
    step_rewards: list[StepReward]
    usage_by_role: dict[str, dict[str, Any]]
    total_tokens: int
    total_cost_usd: float | None
    lessons_used: list[str]
    lessons_learned: list[AppliedChange]
    drift_alert: bool
    drift_reason: str
    review_status: str
    learning_note: str
    #: The task family the session ran under, and whether the caller named it or it was inferred.
    task_family: str | None = None
    task_family_source: str = "inferred"
    #: Whether the final answer passed its verifiable checks; None when no check decided.
    checks_passed: bool | None = None
    #: The first attempt's outcome before any teacher guidance (0..1; checks, else the first verdict, else the
    #: reward); None when nothing tells.
    unaided_score: float | None = None
    #: Entries that applied to the task but were withheld for the impact comparison.
    lessons_withheld: list[str] = field(default_factory=list)
    #: Role -> the first error of that role's model calls in this session (a wrong key, a refusal, a 400...): the
    #: session went on without what the role would have said.
    role_failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The few fields worth showing next to a run's output."""
        return {"session_id": self.session_id, "lane": self.lane, "reward": self.reward, "review_status": self.review_status}


class Supervisor:
    """Owns the config, models, store, recorder, playbook and events; begins supervised sessions.

    ``config`` is an AtlasConfig, a dict or a YAML path (see :meth:`AtlasConfig.load`). ``checks`` are verifiable
    checks applied to every session; ``human`` decides escalations when ``supervision.escalation`` is ``human``.
    ``progress=True`` shows a live status line of the sessions in progress on stderr when it is a terminal
    (:mod:`atlas_learning.progress`).
    """

    def __init__(
        self,
        config: AtlasConfig | Mapping[str, Any] | str | Path | None = None,
        *,
        store: Store | None = None,
        models: RoleModels | None = None,
        checks: Sequence[Check] = (),
        human: HumanCallback | None = None,
        events: EventBus | None = None,
        progress: bool = False,
    ) -> None:
        self.config = AtlasConfig.load(config)
        self.store = store or Store(self.config.storage, migrate=False)
        self.models = models or RoleModels(self.config)
        self.redactor = Redactor(self.config.redaction.patterns, enabled=self.config.redaction.enabled)
        self.recorder = Recorder(self.store, spool_dir=self.config.storage.spool_dir, redactor=self.redactor,
                                 write_ahead=self.config.storage.write_ahead)
        self.playbook = PlaybookRegistry(self.store, self.config.playbook, redactor=self.redactor,
                                         view_cache_s=self.config.supervision.history_cache_s)
        self.families = TaskFamilies(self.store, threshold=self.config.supervision.family_similarity)
        self._random = random.Random(self.config.playbook.seed)
        #: (learning key, family) -> the lessons (ids, texts, statuses) and the triggers the synthesizer was asked
        #: about when it last proposed nothing that changed them: the same trouble with the same lessons again
        #: gets the same answer, so it is not asked.
        self._synthesis_idle: dict[tuple[str, str | None], tuple[frozenset[tuple[str, str, str]], frozenset[str]]] = {}
        self._random_lock = threading.Lock()
        self.events = events or EventBus()
        #: Sends each finished session to telemetry.otlp_endpoint from a background thread (None: not configured).
        self.telemetry: Any = None
        if self.config.telemetry.otlp_endpoint:
            from .telemetry import LiveExporter

            self.telemetry = LiveExporter.attach(self)
        self.checks = list(checks)
        self.human = human
        #: The live status line of sessions in progress (``progress=True``, or the atlas command's default) when
        #: stderr is a terminal; None otherwise.
        self.progress = _progress.attach(self.events) if progress or _progress.default_enabled() else None
        #: Exception types that are a framework's control flow, not failures (an interrupt raised inside the human
        #: callback): they pass through supervision unchanged. Integrations add their framework's types.
        self.control_flow: tuple[type[BaseException], ...] = ()
        #: Why the store cannot be used now (history and lessons are then unavailable), or None. Retried at
        #: most every ``store_retry_s`` seconds when a session begins.
        self.store_problem: str | None = None
        self.store_retry_s = 5.0
        self._store_checked = 0.0
        self._connecting = False
        self._connect_lock = threading.Lock()
        self._connect_store()
        supervision = self.config.supervision
        self.finisher = BackgroundFinisher(workers=supervision.finish_workers, max_pending=supervision.max_pending_finishes)
        self._results: OrderedDict[str, PendingSession] = OrderedDict()
        self._results_lock = threading.Lock()
        #: One learning step at a time per key: impact counts, examples and synthesis read what the last one wrote.
        self._learn_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        #: (key, family) -> sessions ended but not stored yet by their background finish, newest last.
        self._unsettled: defaultdict[tuple[str, str | None], OrderedDict[str, HistoryRow]] = defaultdict(OrderedDict)
        self._io_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.history_cache = HistoryCache(supervision.history_cache_s)
        self._closed = False
        # Registered after the recorder's own close: exit runs this first, so finished sessions reach the store.
        atexit.register(_drain_at_exit, weakref.ref(self))

    def _connect_store(self) -> None:
        """Migrate the store and replay spools left by earlier runs, waiting at most ``storage.read_budget_s``:
        a store that does not answer by then is unavailable (sessions spool) until the attempt, which goes on in
        the background, succeeds. One attempt at a time."""
        self._store_checked = time.monotonic()
        with self._connect_lock:
            if self._connecting:
                return
            self._connecting = True

        def connect() -> None:
            try:
                self.store.migrate()
                replayed = self.recorder.replay_spool()
                if replayed:
                    log.warning("replayed %d rows spooled by an earlier run", replayed)
                # After the replay: a session whose end reached only the spool is not abandoned.
                abandoned = self.store.mark_abandoned(older_than_s=self.config.storage.abandon_after_s)
                if abandoned:
                    log.warning("marked %d sessions abandoned: their processes died while they ran", abandoned)
                self.store_problem = None
            except Exception as exc:  # noqa: BLE001 - a broken store or spool must not stop the agent
                self.store_problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("store unavailable; sessions will spool: %s", self.store_problem)
                self.store.engine.dispose()  # the next attempt starts from fresh connections
            finally:
                self._connecting = False

        budget = self.config.storage.read_budget_s
        try:
            with self.store.read_budget():  # inside a session's begin, that begin's budget
                run_with_deadline(self.store.budget_left() or 0.0, connect)
        except DeadlinePassed:
            self.store_problem = f"the store did not answer within {budget:g} s (storage.read_budget_s)"
            log.warning("store unavailable; sessions will spool: %s", self.store_problem)

    def draw(self) -> float:
        """A uniform number in [0, 1) for withholding lessons (seeded by ``playbook.seed``); thread-safe."""
        with self._random_lock:
            return self._random.random()

    def _store_usable(self) -> bool:
        if self.store_problem is not None and time.monotonic() - self._store_checked >= self.store_retry_s:
            self._connect_store()
        return self.store_problem is None

    def learning_key(self, agent_name: str, learning_key: str | None = None) -> str:
        """The key a session shares lessons and history under: explicit, configured, or the agent's name.

        Task families live inside a key (their own lane history, lessons scoped to them); they are not part of it."""
        return learning_key or self.config.supervision.learning_key or agent_name

    def _new_run(self, task: Any, agent_name: str, learning_key: str | None, task_family: str | None,
                 metadata: Mapping[str, Any] | None, checks: Sequence[Check]) -> SupervisedRun:
        """A session's identity from the call, then :func:`~atlas_learning.session_options`, then config.

        The task family comes from the call's ``task_family``, else ``metadata["task_family"]``, else the options
        in force, else ``supervision.task_family``; with none of these it is inferred from the task text at begin."""
        options = current_session_options()
        merged = {**options.metadata, **(metadata or {})}
        family = task_family or merged.get("task_family") or options.task_family or self.config.supervision.task_family
        key = self.learning_key(agent_name, learning_key or merged.get("learning_key") or options.learning_key)
        return SupervisedRun(self, as_text(task), agent_name, key, merged, [*self.checks, *checks],
                             task_family=str(family)[:128] if family else None)  # the column's width

    def begin(self, task: str, *, agent_name: str = "agent", learning_key: str | None = None, task_family: str | None = None,
              metadata: Mapping[str, Any] | None = None, checks: Sequence[Check] = ()) -> SupervisedRun:
        """Start a session: resolve its task family, read the family's history and the key's lessons, decide the
        lane, store the session."""
        run = self._new_run(task, agent_name, learning_key, task_family, metadata, checks)
        drive(run._begin_flow(run._load()), run._perform)
        return run

    async def abegin(self, task: str, *, agent_name: str = "agent", learning_key: str | None = None, task_family: str | None = None,
                     metadata: Mapping[str, Any] | None = None, checks: Sequence[Check] = ()) -> SupervisedRun:
        """Async twin of :meth:`begin`; the store reads run in a thread, so the event loop never waits on them."""
        run = self._new_run(task, agent_name, learning_key, task_family, metadata, checks)
        view = await self.off_loop(run._load)
        await adrive(run._begin_flow(view), run._aperform)
        return run

    def supervise(self, task: str, attempt: Callable[[str], str], **begin: Any) -> PendingSession:
        """Run the whole loop around ``attempt(instructions) -> answer``: lessons and guidance go in through
        ``instructions``; every answer is reported (:meth:`SupervisedRun.final_answer`) and retried when the core
        says so; in escalate the teacher (or human) answers. Returns once the answer is settled: the
        PendingSession has ``final_answer`` now and the rest of the SessionResult by waiting. ``attempt``
        raising ends the session as failed and re-raises."""
        run = self.begin(task, **begin)
        started = run.start()
        if started.answer is not None:
            return run.end(started.answer)
        while True:
            try:
                answer = attempt(run.instructions)
            except BaseException as exc:
                run.failed(exc)
                raise
            if run.final_answer(answer).action != "retry":
                return run.end(answer)

    async def asupervise(self, task: str, attempt: Callable[[str], Awaitable[str] | str], **begin: Any) -> PendingSession:
        """Async twin of :meth:`supervise`; ``attempt`` may be sync or async; cancellation ends the session as
        cancelled."""
        run = await self.abegin(task, **begin)
        started = await run.astart()
        if started.answer is not None:
            return await run.aend(started.answer)
        while True:
            try:
                produced = attempt(run.instructions)
                answer = await produced if inspect.isawaitable(produced) else produced
            except asyncio.CancelledError:
                await run.acancelled()
                raise
            except BaseException as exc:
                await run.afailed(exc)
                raise
            if (await run.afinal_answer(answer)).action != "retry":
                return await run.aend(answer)

    def session_result(self, session_id: str, timeout: float | None = None) -> SessionResult:
        """The result of a session this supervisor ended, waiting for its background finish when needed.

        Raises KeyError for a session it does not know (only the latest 1,024 are kept; older ones are in the store)
        and TimeoutError when ``timeout`` runs out first."""
        with self._results_lock:
            pending = self._results.get(session_id)
        if pending is None:
            raise KeyError(f"no recent session {session_id!r} on this supervisor; read older ones from the store")
        return pending.result(timeout)

    async def asession_result(self, session_id: str) -> SessionResult:
        """Await :meth:`session_result` without blocking the event loop."""
        with self._results_lock:
            pending = self._results.get(session_id)
        if pending is None:
            raise KeyError(f"no recent session {session_id!r} on this supervisor; read older ones from the store")
        return await pending.aresult()

    async def off_loop(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the supervisor's I/O threads, awaited: blocking work (store reads) off the event loop.
        The threads are the supervisor's, started once (``asyncio.to_thread`` would start one per new event loop,
        as ``Runner.run_sync`` makes). During interpreter exit, when no executor takes work, it runs here."""
        try:
            with self._random_lock:
                if self._io_pool is None:
                    self._io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="atlas-io")
            future = self._io_pool.submit(contextvars.copy_context().run, call, *args)
        except RuntimeError:
            return call(*args)
        return await asyncio.wrap_future(future)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every session ended so far is judged, learned from and stored; False when ``timeout`` ran out."""
        drained = self.finisher.drain(timeout)
        return self.recorder.flush(timeout) and drained

    def unsettled(self, learning_key: str, task_family: str | None) -> list[HistoryRow]:
        """Sessions of a key's family (of the whole key when ``task_family`` is None) that ended but whose finish
        has not stored them yet, most recent first."""
        with self._results_lock:
            if task_family is not None:
                rows = list(self._unsettled.get((learning_key, task_family), {}).values())
            else:
                rows = [row for (key, _), pending in self._unsettled.items() if key == learning_key for row in pending.values()]
        return rows[::-1]

    def wait_settled(self, learning_key: str, task_family: str | None, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the unsettled sessions of a key's family to be stored; False when
        some were still finishing."""
        # Only sessions whose outcome is not known yet (no check decided it) are waited for.
        ids = {row[0] for row in self.unsettled(learning_key, task_family) if row[1] is None}
        if not ids or timeout <= 0:
            return not ids
        with self._results_lock:
            futures = [p._future for sid, p in self._results.items() if sid in ids]  # noqa: SLF001
        _, not_done = concurrent.futures.wait(futures, timeout)
        return not not_done

    def _settle(self, run: SupervisedRun, row: HistoryRow | None) -> None:
        """Note a session as ended (``row``) or, with None, as stored."""
        slot = (run.learning_key, run.task_family)
        with self._results_lock:
            if row is not None:
                self._unsettled[slot][run.session_id] = row
            elif slot in self._unsettled:
                self._unsettled[slot].pop(run.session_id, None)
                if not self._unsettled[slot]:
                    del self._unsettled[slot]
        if row is None:
            if run._stored_row is not None and run.started_at is not None:  # noqa: SLF001
                self.history_cache.stored(run.learning_key, run.task_family, run.started_at, run._stored_row)  # noqa: SLF001
            else:
                self.history_cache.invalidate(run.learning_key)

    def _remember(self, pending: PendingSession) -> None:
        with self._results_lock:
            self._results[pending.session_id] = pending
            excess = len(self._results) - _RECENT_RESULTS
            if excess > 0:  # the oldest finished ones go; pending ones stay
                # Oldest first, and only as far as needed: past the first 1,024 sessions, every end would
                # otherwise ask all 1,024 kept results whether they are done (a lock each), on the caller's path.
                stale: list[str] = []
                for session_id, kept in self._results.items():
                    if len(stale) == excess:
                        break
                    if kept.done():
                        stale.append(session_id)
                for session_id in stale:
                    del self._results[session_id]

    def close(self) -> None:
        """Wait for pending finishes (up to ``supervision.drain_timeout_s``), flush and stop the recorder, release
        models and connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if not self.finisher.close(self.config.supervision.drain_timeout_s):
            log.warning("%d session finishes did not end within %ss; their rows so far are stored",
                        self.finisher.pending, self.config.supervision.drain_timeout_s)
        if self.progress is not None:
            self.progress.close()
        if self._io_pool is not None:
            self._io_pool.shutdown(wait=False)
        self.recorder.close()
        if self.telemetry is not None:  # after the recorder: the last sessions are stored
            self.telemetry.close()
        self.models.close()
        self.store.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resumed(flow: Flow[Any], asked: Any) -> Flow[Any]:
    """The rest of ``flow``, whose first request (``asked``) was taken already."""
    answer = yield asked
    while True:
        try:
            asked = flow.send(answer)
        except StopIteration as done:
            return done.value
        answer = yield asked


class SupervisedRun:
    """One session in progress. Created by :meth:`Supervisor.begin`; ended by :meth:`finish`."""

    def __init__(self, supervisor: Supervisor, task: str, agent_name: str, learning_key: str, metadata: dict[str, Any],
                 checks: list[Check], *, task_family: str | None = None) -> None:
        self.supervisor = supervisor
        #: The task family inside the key (its own lane history; lessons scoped to it). Given by the caller, or
        #: inferred from the task text at begin; :attr:`task_family_source` says which.
        self.task_family = task_family
        self.task_family_source = "call" if task_family else "inferred"
        self.config = supervisor.config
        self.task = task
        self.agent_name = agent_name
        self.learning_key = learning_key
        self.metadata = metadata
        #: The session's verifiable checks; with an expected answer in the metadata, the built-in one joins them.
        self.checks = [*checks, expected_answer_check] if expected_answer_of(metadata) is not None else checks
        self.session_id = new_id()
        #: When the session began (its stored ``started_at``), and its history row once the finish stored it.
        self.started_at: datetime | None = None
        self._stored_row: HistoryRow | None = None
        self.decision: LaneDecision = LaneDecision("paired", 0.0, "not decided yet", "fallback")
        #: Playbook entries injected into the student's and the teacher's instructions, and worked examples.
        self.lessons: list[Any] = []
        self.teacher_lessons: list[Any] = []
        self.examples: list[Any] = []
        self._playbook_text: str | None = None
        #: Entries that applied to the task but were withheld at random, for the impact comparison.
        self.withheld: list[Any] = []
        #: The verifiable checks' results on each validated attempt, by attempt number.
        self.attempt_checks: dict[int, list[Any]] = {}
        #: Why supervision calls stopped (``supervision.max_tokens_per_session``), or None.
        self.budget_note: str | None = None
        #: The plan to follow (after the teacher's review, in coach) and the teacher's concerns.
        self.plan: list[str] = []
        self.concerns: list[str] = []
        #: The pending guidance (see :attr:`guidance`): from the last rejected answer, and from the last rejected step.
        self._answer_guidance: list[str] = []
        self._step_guidance: list[str] = []
        self.steps: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.verdicts: list[VerdictResult] = []
        self.guidance_given: list[str] = []
        self.usage = UsageLedger()
        self.role_failures: dict[str, str] = {}
        self.interventions = 0
        self.retries = 0
        #: The SessionResult once the background finish is done; see :meth:`end`.
        self.finished: SessionResult | None = None
        self._pending: PendingSession | None = None
        #: Why the teacher stopped supervising this session (a wall-time, step or repeated-call budget), or None.
        self.supervision_stopped: str | None = None
        self._supervision_s = 0.0
        self._validated_steps = 0
        self._call_counts: dict[str, int] = {}
        #: Attempts whose rejection scheduled a retry (see :attr:`can_retry`).
        self._retry_scheduled: set[int] = set()
        self._stand_reason = ""
        self._history = KeyHistory()
        #: The key's live playbook entries that may apply to the task (matched, or scoped to its family).
        self._entries: list[Any] = []
        self._family_note = ""
        #: The system prompt and tool schemas the student's last recorded model call was given (see record_step).
        self._shown_system: str | None = None
        self._shown_tools: list[dict[str, Any]] | None = None
        self._seq = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- views
    @property
    def lane(self) -> str:
        return self.decision.lane

    @property
    def instructions(self) -> str:
        """What to add to every student model call now: lessons and worked examples, the reviewed plan and
        concerns, and the pending :attr:`guidance` (rendered by :func:`~atlas_learning.student.render_instructions`,
        the one renderer the export and the trainer use too)."""
        if self._playbook_text is None:  # the entries are fixed once the session began: rendered once
            self._playbook_text = render_playbook([*self.lessons, *self.examples])
        return render_instructions(plan=self.plan, concerns=self.concerns, guidance=self.guidance, playbook_text=self._playbook_text)

    @property
    def guidance(self) -> list[str]:
        """The teacher's pending guidance. After a rejected answer it holds for the whole retry, until the next
        answer verdict. After a rejected step it holds until a student model call has seen it (the next one
        recorded with :meth:`record_model_call`) or the next answer verdict; rejections of several steps of one
        turn (parallel tool calls) all reach that model call."""
        with self._lock:
            return [*self._answer_guidance, *self._step_guidance]

    @property
    def teacher_instructions(self) -> str:
        return render_playbook(self.teacher_lessons)

    @property
    def can_retry(self) -> bool:
        """True when the last answer was rejected and a retry was scheduled for it: retries remain,
        ``supervision.retry`` lets the agent run again (see :meth:`reruns_allowed`) and the integration can."""
        last = self.verdicts[-1] if self.verdicts else None
        return last is not None and last.accepted is False and last.attempt is not None \
            and last.attempt <= self.config.supervision.max_retries and last.attempt in self._retry_scheduled

    def reruns_allowed(self, attempt: int) -> str | None:
        """None when a rejected ``attempt`` may be rerun; else why its answer stands (``supervision.retry`` is
        ``guidance_only``, or ``auto`` and the attempt called a side-effecting tool)."""
        supervision = self.config.supervision
        if supervision.retry == "guidance_only":
            return "supervision.retry is guidance_only: the answer stands, the rejection and guidance are recorded"
        if supervision.retry == "auto":
            marked = set(supervision.side_effect_tools)
            for step in self.steps:
                if step.get("attempt") == attempt and (step.get("tool_name") in marked or (step.get("step_metadata") or {}).get("side_effects")):
                    return (f"the attempt called {step.get('tool_name') or step.get('name')}, which has side effects: it is not "
                            "rerun (supervision.retry auto; set it to rerun to rerun anyway)")
        return None

    # ------------------------------------------------------------------- the adapter protocol: sync + async
    def start(self, *, plan: Sequence[str] | None = None, plans_later: bool = False, can_take_answer: bool = True) -> Start:
        """The integration's first report, before the agent runs; returns what to do.

        In ``coach`` the teacher reviews ``plan`` (an empty one when the agent shows none, so its concerns still
        reach the student) unless ``plans_later`` (the agent has its own plan step, reported through
        :meth:`review_plan`). In ``escalate``, when the integration ``can_take_answer`` (it can return text in
        place of the agent's output), the teacher or human answers: :attr:`Start.answer` is then that answer,
        to deliver instead of running the agent; when neither could answer it is None and the agent runs."""
        return drive(self._start_flow(plan, plans_later, can_take_answer), self._perform)

    async def astart(self, *, plan: Sequence[str] | None = None, plans_later: bool = False, can_take_answer: bool = True) -> Start:
        return await adrive(self._start_flow(plan, plans_later, can_take_answer), self._aperform)

    def plan_made(self, plan: Sequence[str]) -> PlanReview | None:
        """Report a plan the agent made itself (after ``start(plans_later=True)``): in ``coach`` the teacher reviews
        it and the review is returned (its steps and concerns are then in :attr:`instructions`); otherwise the plan
        is recorded and None returned."""
        return drive(self._plan_made_flow(list(plan)), self._perform)

    async def aplan_made(self, plan: Sequence[str]) -> PlanReview | None:
        return await adrive(self._plan_made_flow(list(plan)), self._aperform)

    def _plan_made_flow(self, plan: list[str]) -> Flow[PlanReview | None]:
        if self.lane == "coach" and self.supervision_stopped is None:
            return (yield from self._plan_flow(plan))
        self.supervisor.recorder.insert(PlanRecord, session_id=self.session_id, kind="proposed", steps=_plan_rows(plan))
        return None

    def tool_call_done(self, step_id: str) -> StepDecision:
        """Report a recorded tool (or node) step; in ``coach`` the teacher validates it (within the step, wall-time
        and repeated-call budgets). A rejection puts guidance in :attr:`instructions` for the next model call."""
        return drive(self._tool_done_flow(step_id), self._perform)

    async def atool_call_done(self, step_id: str) -> StepDecision:
        return await adrive(self._tool_done_flow(step_id), self._aperform)

    def final_answer(self, answer: Any, *, can_rerun: bool = True) -> AnswerDecision:
        """Report the agent's answer; returns ``accept``, ``retry`` (run the agent again: the guidance is in
        :attr:`instructions`) or ``stand`` (rejected, but no retry is left, ``supervision.retry`` keeps the
        answer, or the integration cannot run this agent again: ``can_rerun=False``, as for a stream already
        delivered). In every lane the verifiable checks run; in paired and coach the teacher validates too."""
        return self._decide(drive(self._answer_flow(as_text(answer), can_rerun), self._perform))

    async def afinal_answer(self, answer: Any, *, can_rerun: bool = True) -> AnswerDecision:
        return self._decide(await adrive(self._answer_flow(as_text(answer), can_rerun), self._aperform))

    def failed(self, error: BaseException | str) -> PendingSession:
        """Report that the agent raised: the session ends as failed (in the background); the error is the
        integration's to re-raise."""
        return self.end(error=_error_text(error))

    async def afailed(self, error: BaseException | str) -> PendingSession:
        return await self.aend(error=_error_text(error))

    def cancelled(self) -> PendingSession:
        """Report that the run was cancelled (a task cancelled, a stream closed early): ends it as failed with
        the reason ``cancelled``."""
        return self.end(error="cancelled")

    async def acancelled(self) -> PendingSession:
        return await self.aend(error="cancelled")

    def _start_flow(self, plan: Sequence[str] | None, plans_later: bool, can_take_answer: bool) -> Flow[Start]:
        if self.lane == "coach" and not plans_later:
            yield from self._plan_flow(list(plan or []))
        elif self.lane == "escalate" and can_take_answer:
            answer = yield from self._escalate_flow()
            return Start(answer=answer)
        elif self.lane == "escalate":
            self.metadata["supervision_level"] = "escalation needs an integration that can return text; the agent ran supervised as paired"
        return Start(answer=None)

    def _tool_done_flow(self, step_id: str) -> Flow[StepDecision]:
        if self.lane != "coach":
            return StepDecision(accepted=None, guidance="")
        verdict = yield from self._step_flow(step_id)
        return StepDecision(accepted=verdict.accepted, guidance=verdict.guidance, reason=verdict.reason)

    def _decide(self, verdict: VerdictResult) -> AnswerDecision:
        if verdict.accepted is not False:
            return AnswerDecision("accept", verdict, "")
        if self.can_retry:
            return AnswerDecision("retry", verdict, self.instructions)
        return AnswerDecision("stand", verdict, "", self._stand_reason)

    # ------------------------------------------------------------------------------------------ records
    def record_event(self, event_type: EventType, payload: Mapping[str, Any]) -> None:
        """Add an event to the session's trajectory (stored in order) and publish it to subscribers.

        For what an adapter observes beyond steps, such as a framework's tracing spans (``span``)."""
        self._emit(event_type, dict(payload))

    def record_step(
        self,
        *,
        kind: str = "tool_call",
        name: str = "",
        tool_name: str | None = None,
        tool_args: Any = None,
        input: Any = None,
        output: Any = None,
        error: str | None = None,
        started_at: datetime | None = None,
        ended_at: datetime | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        system: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Record something the student did, as it happens; returns the step id (for :meth:`validate_step`).

        For a ``model_call``: ``output`` is what the model produced (its text, or ``{"content", "tool_calls":
        [{"name", "arguments"}]}``, see :func:`~atlas_learning.student.model_turn`); ``system`` the system prompt
        it was sent (the integration's own with Atlas's instructions in it) and ``tools`` the tool schemas it was
        offered (:func:`~atlas_learning.student.tool_schema`), when the integration knows them. Both go to the
        step's metadata only when they differ from the session's previous model call (absent: as before), so the
        ``messages`` export rebuilds what the model saw."""
        ended = _aware(ended_at) or utcnow()
        started = _aware(started_at) or ended
        input_tokens, output_tokens = int(input_tokens or 0), int(output_tokens or 0)
        if kind == "model_call":
            output = model_turn(output)
        text_output = output if output is None or isinstance(output, str) else as_text(output)
        schemas = [tool_schema(t) for t in tools] if tools is not None and kind == "model_call" else None
        with self._lock:
            if kind == "model_call" and (system is not None or schemas is not None):
                given: dict[str, Any] = {}
                if system is not None and system != self._shown_system:
                    given["system"] = self._shown_system = system
                if schemas is not None and schemas != self._shown_tools:
                    given["tools"] = self._shown_tools = schemas
                metadata = {**(metadata or {}), **given}
            index = len(self.steps)
            row = self.supervisor.recorder.insert_soon(
                StepRecord, session_id=self.session_id, step_index=index, attempt=len(self.attempts) + 1, kind=kind,
                name=name or tool_name or kind, description=description, tool_name=tool_name, tool_args=tool_args, input=input,
                output=text_output, error=error, status="error" if error else "ok", input_tokens=input_tokens,
                output_tokens=output_tokens, started_at=started, ended_at=ended,
                duration_ms=(ended - started).total_seconds() * 1000, step_metadata=dict(metadata or {}),
            )
            self.steps.append(row)
            repeats = self._count_call(tool_name, tool_args) if kind == "tool_call" and tool_name else 0
        limit = self.config.supervision.max_identical_calls
        if limit and repeats == limit:
            self._stop_supervision(f"repeated calls: {tool_name} was called {repeats} times with the same arguments "
                                   f"(supervision.max_identical_calls {limit})")
        self._emit("step", {"step_id": row["id"], "index": index, "kind": kind, "name": row["name"], "tool_name": tool_name, "error": error})
        return row["id"]

    def record_failed_model_call(self, error: BaseException, *, name: str = "model", metadata: Mapping[str, Any] | None = None) -> str:
        """Record a call of the student's model that raised, as a ``model_call`` step with the error; when the model
        answered out of schema (:class:`~atlas_learning.errors.InvalidOutputError`), what it said is the step's
        output, so the malformed answer is kept (redacted like every row), not lost."""
        raw = getattr(error, "raw_output", None)
        return self.record_step(kind="model_call", name=name, error=f"{type(error).__name__}: {error}",
                                output=raw if isinstance(raw, str) and raw else None, metadata=metadata)

    def record_model_call(self, *, role: str = "student", provider: str = "", model: str = "", input_tokens: int = 0,
                          output_tokens: int = 0, latency_ms: float | None = None, cost_usd: float | None = None,
                          as_step: bool = True, output: Any = None, system: str | None = None,
                          tools: Sequence[Mapping[str, Any]] | None = None) -> str | None:
        """Record a model call the agent made (tokens, cost by role); a student call also becomes a step, with
        ``output``, ``system`` and ``tools`` as :meth:`record_step` takes them."""
        if tools is not None:  # a schema it cannot read is an error before anything is recorded
            tools = [tool_schema(t) for t in tools]
        input_tokens, output_tokens = int(input_tokens or 0), int(output_tokens or 0)
        self.usage.record(role, Usage(input_tokens, output_tokens, cost_usd, 1))
        if role == "student":
            with self._lock:  # this call was made with the step guidance: it has been shown
                self._step_guidance = []
        self.supervisor.recorder.insert_later(
            ModelCallRecord, session_id=self.session_id, role=role, purpose="agent", provider=provider, model=model,
            input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd, latency_ms=latency_ms,
        )
        if as_step and role == "student":
            return self.record_step(kind="model_call", name=model or "model", output=output,
                                    input_tokens=input_tokens, output_tokens=output_tokens, system=system, tools=tools)
        return None

    # ------------------------------------------------------------------------------- teacher: sync + async
    def review_plan(self, plan: Sequence[str]) -> PlanReview:
        """The teacher's review of the student's plan; its steps and concerns go into :attr:`instructions`."""
        return drive(self._plan_flow(list(plan)), self._perform)

    async def areview_plan(self, plan: Sequence[str]) -> PlanReview:
        return await adrive(self._plan_flow(list(plan)), self._aperform)

    def validate_step(self, step_id: str) -> VerdictResult:
        """The teacher's verdict on one recorded step; rejected steps leave guidance for the next model call."""
        return drive(self._step_flow(step_id), self._perform)

    async def avalidate_step(self, step_id: str) -> VerdictResult:
        return await adrive(self._step_flow(step_id), self._aperform)

    def validate_answer(self, answer: Any) -> VerdictResult:
        """The verdict on an answer: the verifiable checks' and the teacher's (in ``auto``, the checks' alone: no
        teacher call; without checks nothing is recorded and ``accepted`` is None). A failing check rejects.
        Rejected with retries left: :attr:`can_retry` is True and the guidance is in :attr:`instructions`. Every
        retry is validated again."""
        return drive(self._answer_flow(as_text(answer)), self._perform)

    async def avalidate_answer(self, answer: Any) -> VerdictResult:
        return await adrive(self._answer_flow(as_text(answer)), self._aperform)

    def escalate(self) -> str | None:
        """The answer from the teacher model or a human (per ``supervision.escalation``); None if neither could."""
        return drive(self._escalate_flow(), self._perform)

    async def aescalate(self) -> str | None:
        return await adrive(self._escalate_flow(), self._aperform)

    def end(self, final_answer: Any = None, *, error: str | None = None) -> PendingSession:
        """End the session and return at once: the final answer is recorded now; checks, judges, drift, the review
        status, learning and the final store write run on the supervisor's background finisher.

        ``final_answer`` defaults to the last validated attempt; ``error`` marks the run failed. Runs once: a
        second call, from any thread, gets the first call's PendingSession. Waits only when
        ``supervision.max_pending_finishes`` finishes are already queued (backpressure, nothing dropped)."""
        pending, job = self._claim_end(final_answer, error)
        if job is not None:
            self.supervisor.finisher.submit(job, pending._future)  # noqa: SLF001 - the future is the session's
        return pending

    async def aend(self, final_answer: Any = None, *, error: str | None = None) -> PendingSession:
        """Async twin of :meth:`end`; never blocks the event loop (a full finish queue is waited on in a thread)."""
        pending, job = self._claim_end(final_answer, error)
        if job is not None:
            finisher = self.supervisor.finisher
            if not finisher.try_submit(job, pending._future):  # noqa: SLF001 - full: wait for room off the loop
                await self.supervisor.off_loop(finisher.submit, job, pending._future)  # noqa: SLF001
        return pending

    def finish(self, final_answer: Any = None, *, error: str | None = None) -> SessionResult:
        """:meth:`end`, then wait for the result: for scripts and tests that want the reward now. Adapters call
        :meth:`end`, so the user's call does not wait for judging and learning."""
        return self.end(final_answer, error=error).result()

    async def afinish(self, final_answer: Any = None, *, error: str | None = None) -> SessionResult:
        """Async twin of :meth:`finish`: awaits the background finish without blocking the loop."""
        return await (await self.aend(final_answer, error=error)).aresult()

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` (or :meth:`finish`) was called; :attr:`finished` holds the result once it is ready."""
        return self._pending is not None

    def _claim_end(self, final_answer: Any, error: str | None) -> tuple[PendingSession, Callable[[], SessionResult] | None]:
        with self._lock:
            if self._pending is not None:
                pending = self._pending
                claimed = False
            else:
                answer_text = as_text(final_answer) if final_answer is not None else (self.attempts[-1]["answer"] if self.attempts else "")
                pending = self._pending = PendingSession(self.session_id, answer_text, concurrent.futures.Future())
                claimed = True
        if not claimed:
            return pending, None
        # The answer is stored now: whatever happens to the background finish, the trace keeps it.
        supervisor = self.supervisor
        supervisor.recorder.update(SessionRecord, self.session_id, final_answer=pending.final_answer)
        supervisor._remember(pending)  # noqa: SLF001
        supervisor._settle(self, self._provisional_row(error))  # noqa: SLF001

        def job() -> SessionResult:
            pending._finishing = threading.get_ident()  # noqa: SLF001
            try:
                return drive(self._finish_flow(pending.final_answer, error), self._perform)
            except BaseException as exc:
                # The session still ends in the store, with why it was not judged or learned from.
                reason = f"{type(exc).__name__}: {exc}"
                supervisor.recorder.update(SessionRecord, self.session_id, status="failed" if error else "completed",
                                           finished_at=utcnow(), session_metadata=self._session_metadata(
                                               finish_error=reason, **({"error": error} if error else {})))
                supervisor.recorder.flush()
                raise
            finally:
                supervisor._settle(self, None)  # noqa: SLF001 - stored now (or failed): the store's row is the truth

        return pending, job

    # ------------------------------------------------------------------------------------------- flows
    def _load(self) -> PlaybookView | None:
        """The store reads a session begins with: its task family, the family's history, the key's playbook.
        They wait at most ``storage.read_budget_s`` in all; past it the session begins with no history and no
        lessons, and says why."""
        supervisor, config = self.supervisor, self.config
        view: PlaybookView | None = None
        with supervisor.store.read_budget():  # a store that hangs costs this call the budget at most, reconnect included
            if not supervisor._store_usable():
                self._history = KeyHistory(unavailable=supervisor.store_problem)
                return None
            try:
                self._resolve_family()
                if config.supervision.lane is None:  # a forced lane needs no history to be decided
                    supervisor.wait_settled(self.learning_key, self.task_family,
                                            min(config.supervision.history_wait_s, supervisor.store.budget_left() or 0.0))
                self._history = load_history(supervisor.store, self.learning_key, config.supervision.history_window,
                                             self.task_family, supervisor.unsettled(self.learning_key, self.task_family),
                                             supervisor.history_cache)
                view = supervisor.playbook.view(self.learning_key) if config.playbook.enabled else None
            except StoreError as exc:
                self._history = KeyHistory(unavailable=str(exc))
        return view

    def _begin_flow(self, view: PlaybookView | None) -> Flow[None]:
        supervisor, config = self.supervisor, self.config
        self.started_at = utcnow()
        row = {"id": self.session_id, "learning_key": self.learning_key, "task_family": self.task_family,
               "agent_name": self.agent_name, "task": self.task, "started_at": self.started_at, "owner": process_owner()}
        if view is not None and view.entries:
            self._select(view, explore=False)
        prior = prior_decision(self._history, coverage([*self.lessons, *self.teacher_lessons], self.task), config.supervision)
        probe = probe_flow(self.task, prior, config.supervision)
        try:
            asked = next(probe)
        except StopIteration as decided:  # no model call: the row goes in once, with the lane (one write, not two)
            self.decision, inserted = decided.value, False
        else:  # the probe's model call points at the session: its row goes first, the lane after
            supervisor.recorder.insert_later(SessionRecord, **row, session_metadata=self.metadata)
            self.decision, inserted = (yield from _resumed(probe, asked)), True
        if view is not None and view.entries and self.lane in ("paired", "coach"):
            # Lessons are withheld only where the teacher validates the work: an experiment never costs an
            # unsupervised answer.
            self._select(view, explore=True)
        lane = {"lane": self.decision.lane, "lane_confidence": self.decision.confidence, "lane_reason": self.decision.reason,
                "lane_source": self.decision.source, "lessons_used": self.entries_used, "session_metadata": self._session_metadata()}
        if inserted:
            supervisor.recorder.update(SessionRecord, self.session_id, **lane)
        else:
            supervisor.recorder.insert_later(SessionRecord, **row, **lane)
        task_preview = supervisor.redactor.text(self.task)[:200]  # redact first: a cut secret no longer matches
        self._emit("session_started", {"learning_key": self.learning_key, "task": task_preview, "agent_name": self.agent_name,
                                       "task_family": self.task_family, "task_family_source": self.task_family_source})
        self._emit("lane_chosen", {"lane": self.decision.lane, "confidence": self.decision.confidence,
                                   "reason": self.decision.reason, "source": self.decision.source})

    def _resolve_family(self) -> None:
        """Infer the task family when the caller named none, and count the task in it."""
        families = self.supervisor.families
        task = self.supervisor.redactor.text(self.task)  # a new family is named after the task's words: no secrets
        if self.task_family is None:
            guess = families.infer(self.learning_key, task)
            self.task_family = guess.family
            self._family_note = f"{'new family' if guess.new else 'joined'} at similarity {guess.similarity:.2f}"
        families.remember(self.learning_key, task, self.task_family)

    def _select(self, view: PlaybookView, *, explore: bool) -> None:
        """The entries that apply to this task; with ``explore``, minus those withheld at random (see
        :func:`select_entries`)."""
        config = self.config
        candidates, relevance = view.candidates(self.task, self.task_family, threshold=config.playbook.relevance_threshold)
        self._entries = candidates
        groups: dict[tuple[str, str], list[PlaybookEntry]] = {}
        for entry in candidates:  # each selection below looks only at its own audience and kind
            groups.setdefault((entry.audience, entry.kind), []).append(entry)
        common: dict[str, Any] = {"family": self.task_family, "config": config.playbook,
                                  "draw": self.supervisor.draw if explore else None}
        student = select_entries(groups.get(("student", "lesson"), ()), relevance, audience="student", kind="lesson",
                                 token_budget=config.playbook.inject_token_budget, **common)
        teacher = select_entries(groups.get(("teacher", "lesson"), ()), relevance, audience="teacher", kind="lesson",
                                 token_budget=config.playbook.inject_token_budget, **common)
        # Examples fit in what the lessons left of the injection budget (and in their own): the student's playbook
        # text as a whole stays within inject_token_budget.
        used = estimate_tokens(render_playbook(student.chosen) + "\n\n") if student.chosen else 0
        room = min(config.examples.token_budget, config.playbook.inject_token_budget - used)
        examples = (select_entries(groups.get(("student", "example"), ()), relevance, audience="student", kind="example", token_budget=room,
                                   max_count=config.examples.max_injected, **common)
                    if config.examples.enabled and room > 0 else Selection([], [], {}))
        self.lessons, self.teacher_lessons, self.examples = student.chosen, teacher.chosen, examples.chosen
        self._playbook_text = None
        self.withheld = [*student.withheld, *teacher.withheld, *examples.withheld]

    @property
    def entries_used(self) -> list[str]:
        """Ids of every playbook entry injected into this session (lessons of both audiences, worked examples)."""
        return [e.id for e in [*self.lessons, *self.teacher_lessons, *self.examples]]

    def _session_metadata(self, **extra: Any) -> dict[str, Any]:
        notes: dict[str, Any] = {"lane_signals": self.decision.signals}
        if self._history.unavailable is not None:
            notes["store_unavailable"] = self._history.unavailable
        if self.withheld:
            notes["lessons_withheld"] = [e.id for e in self.withheld]
        if self._family_note:
            notes["task_family_inferred"] = self._family_note
        if self.budget_note:
            notes["supervision_budget"] = self.budget_note
        if self.supervision_stopped:
            notes["supervision_stopped"] = self.supervision_stopped
        return {**self.metadata, **notes, **extra}

    def _plan_flow(self, plan: list[str]) -> Flow[PlanReview]:
        recorder = self.supervisor.recorder
        recorder.insert(PlanRecord, session_id=self.session_id, kind="proposed", steps=_plan_rows(plan))
        answer = yield Ask("teacher", "plan_review", plan_review_messages(self.task, plan, self.teacher_instructions), PlanReview)
        if answer.ok:
            review: PlanReview = answer.output
            if not review.steps:
                review = review.model_copy(update={"steps": plan})
        else:
            review = PlanReview(approved=True, steps=plan, concerns=[])
        self.plan, self.concerns = review.steps, review.concerns
        if not review.approved:
            self.interventions += 1
        recorder.insert(PlanRecord, session_id=self.session_id, kind="reviewed", steps=_plan_rows(review.steps), concerns=review.concerns)
        for concern in review.concerns:
            self._guidance(concern, kind="plan")
        self._emit("plan_reviewed", {"approved": review.approved, "steps": len(review.steps), "concerns": review.concerns,
                                     "error": answer.error})
        return review

    def _count_call(self, tool_name: str, tool_args: Any) -> int:
        """How many times this tool has now been called with these arguments in the session (under ``_lock``)."""
        signature = f"{tool_name}\x00{as_text(tool_args)}"
        self._call_counts[signature] = count = self._call_counts.get(signature, 0) + 1
        return count

    def _step_flow(self, step_id: str) -> Flow[VerdictResult]:
        position = next((i for i, s in enumerate(self.steps) if s["id"] == step_id), None)
        if position is None:
            return VerdictResult(None, reason=f"unknown step {step_id!r}", step_id=step_id)
        limit = self.config.supervision.max_validated_steps
        if self.supervision_stopped is None and self._validated_steps >= limit:
            self._stop_supervision(f"step budget reached: {limit} steps validated (supervision.max_validated_steps)")
        if self.supervision_stopped is not None:
            return VerdictResult(None, reason=self.supervision_stopped, step_id=step_id)
        self._validated_steps += 1
        budget = self.config.judges.context_budget_chars
        earlier = render_steps(self.steps[:position][-8:], budget // 2)
        current = render_steps([self.steps[position]], budget // 2)
        answer = yield Ask("teacher", "step_validation",
                           step_validation_messages(self.task, self.plan, earlier, current, self.teacher_instructions), Verdict)
        verdict = self._verdict(answer, step_id=step_id)
        if verdict.accepted is False:
            self.interventions += 1
            if verdict.guidance:
                self._guidance(verdict.guidance, kind="step", step_id=step_id)
        if verdict.accepted is False and verdict.guidance:  # kept until a student model call has seen it
            with self._lock:
                self._step_guidance.append(verdict.guidance)
        return verdict

    def _answer_flow(self, answer_text: str, can_rerun: bool = True) -> Flow[VerdictResult]:
        if self.lane == "auto" and not self.checks:
            return VerdictResult(None, reason="auto: no teacher and no verifiable check")
        number = len(self.attempts) + 1
        checks = run_checks(self.checks, CheckContext(self.task, answer_text, tuple(self.steps), self.metadata)) if self.checks else []
        shown = render_checks(checks)
        self.attempt_checks[number] = checks
        failed = [c for c in checks if c.score is not None and c.score < 0.5]
        if self.lane == "auto":  # the checks alone, no teacher call
            decided = all(c.score is not None for c in checks)
            answer = Answer(Verdict(accepted=True, reason="auto: the verifiable checks passed")) if decided or failed \
                else Answer(error="auto lane: no teacher, and a check did not decide")
        else:
            steps = render_steps(self.steps, self.config.judges.context_budget_chars)
            answer = yield Ask("teacher", "answer_validation",
                               answer_validation_messages(self.task, answer_text, steps, self.teacher_instructions, shown), Verdict)
        verdict = self._verdict(answer, attempt=number, failed_checks=failed)
        self.attempts.append({"attempt": number, "answer": answer_text, "accepted": verdict.accepted,
                              "checks_score": min((c.score for c in checks if c.score is not None), default=None)})
        self.supervisor.recorder.insert(AttemptRecord, session_id=self.session_id, attempt=number, answer=answer_text,
                                        accepted=verdict.accepted, verdict_reason=verdict.reason, guidance=verdict.guidance or None,
                                        checks=shown or None)
        if verdict.accepted is False:
            self.interventions += 1
            if verdict.guidance:
                self._guidance(verdict.guidance, kind="answer", source="teacher" if answer.ok and self.lane != "auto" else "checks")
            stands = (self.reruns_allowed(number) if can_rerun else "the integration cannot run the agent again "
                      "(its answer was already delivered)") if number <= self.config.supervision.max_retries else None
            self._stand_reason = stands or "no retries left (supervision.max_retries)"
            if stands is not None:
                self._emit("retry_skipped", {"attempt": number, "reason": stands, "guidance": verdict.guidance})
            elif number <= self.config.supervision.max_retries:  # a retry follows; it will be validated too
                self.retries += 1
                self._retry_scheduled.add(number)
                with self._lock:
                    self._answer_guidance = [verdict.guidance] if verdict.guidance else ["The teacher rejected the answer; try again."]
                    self._step_guidance = []
                self._emit("retry", {"attempt": number + 1, "guidance": verdict.guidance})
                return verdict
        with self._lock:  # no retry follows: nothing is pending any more
            self._answer_guidance, self._step_guidance = [], []
        return verdict

    def _escalate_flow(self) -> Flow[str | None]:
        if self.config.supervision.escalation == "human":
            answer = yield AskHuman(self.task, {"session_id": self.session_id, "lessons": self.instructions, "reason": self.decision.reason})
            source = "human"
        else:
            answer = yield Ask("teacher", "escalation", execution_messages(self.task, self.teacher_instructions))
            source = "teacher"
        # An empty answer, one with no word in it, or one the session's checks refuse is no answer: the student
        # runs instead, and the event says why.
        text = answer.text or ""
        error = answer.error if not answer.ok else None
        if error is None and not text.strip():
            error = f"the {source} gave an empty answer"
        elif error is None and not any(ch.isalnum() for ch in text):
            error = f"the {source}'s answer has no word in it ({text.strip()[:40]!r})"
        elif error is None and self.checks:
            failed = [c for c in run_checks(self.checks, CheckContext(self.task, text, (), self.metadata))
                      if c.score is not None and c.score < 0.5]
            if failed:
                error = f"the {source}'s answer failed its checks: {failed[0].reason or failed[0].name}"
        self._emit("escalated", {"to": source, "error": error})
        if error is not None:
            return None
        self._guidance(answer.text, kind="escalation", source=source)
        return answer.text

    def _finish_flow(self, answer_text: str, error: str | None) -> Flow[SessionResult]:
        supervisor, config = self.supervisor, self.config
        checks = run_checks(self.checks, CheckContext(self.task, answer_text, tuple(self.steps), self.metadata))
        scored = [c.score for c in checks if c.score is not None]
        checks_passed = all(score >= 0.5 for score in scored) if scored else None
        # Checks decide the outcome when every one of them decided; the judges are then cut back.
        judging = config.judges.when_checks_decide if scored and len(scored) == len(checks) else "full"
        if judging == "adaptive":
            judging = "skip" if checks_passed and self._passed_unaided() else "one_sample"
        verdict_text = "; ".join(f"attempt {v.attempt}: {'accepted' if v.accepted else 'rejected' if v.accepted is False else 'unverified'}"
                                 for v in self.verdicts if v.attempt is not None)
        reward: SessionReward = yield from judge_session_flow(self.task, self.steps, answer_text, verdict_text, checks, config.judges,
                                                              judging=judging)
        teaching = self._teaching_reward(checks)
        if teaching is not None:
            reward.breakdown["teaching"] = round(teaching, 4)
        if judging == "full":
            step_rewards, step_note = yield from judge_steps_flow(self.task, self.steps, config.judges)
        else:
            step_rewards, step_note = [], "steps not judged: verifiable checks decided the outcome"
        recorder = supervisor.recorder
        recorder.insert(RewardRecord, session_id=self.session_id, scope="session", score=reward.score, status=reward.status,
                        reason=reward.reason, breakdown=reward.breakdown, samples=reward.samples, escalated=reward.escalated)
        for step_reward in step_rewards:
            recorder.insert(RewardRecord, session_id=self.session_id, step_id=step_reward.step_id, scope="step",
                            score=step_reward.score, reason=step_reward.rationale)
        self._emit("reward", {"score": reward.score, "status": reward.status, "reason": reward.reason,
                              "escalated": reward.escalated, "steps": step_note, "checks_passed": checks_passed})

        drift_alert, drift_reason = False, ""
        if reward.score is not None and config.drift.enabled:
            from .drift import check_drift

            drift = check_drift(reward.score, self._history.rewards, min_history=config.drift.min_history,
                                z_threshold=config.drift.z_threshold, mad_z_threshold=config.drift.mad_z_threshold,
                                min_abs_deviation=config.drift.min_abs_deviation)
            drift_alert, drift_reason = drift.alert, drift.reason
            if drift.alert:
                self._emit("drift_alert", {"reason": drift.reason, "z": drift.z_score, "mad_z": drift.mad_z_score})
        review_status, review_note = "pending", drift_reason if drift_alert else None
        threshold = config.review.auto_approve_min_reward
        # Only a session that completed, with a reward, can be approved without a person.
        if not error and not drift_alert and threshold is not None and reward.score is not None and reward.score >= threshold:
            review_status, review_note = "approved", f"auto-approved: reward {reward.score:.3f} >= {threshold}"

        final_score = mean_or_none(scored) if scored else reward.score
        unaided = self._unaided_score(final_score)
        outcome = _Outcome(reward.score, final_score, unaided, checks_passed, drift_alert, review_status == "approved", error)
        learned, learning_note = yield from self._learn_flow(answer_text, outcome)

        usage = self.usage.as_dict()
        total = self.usage.total()
        accepted = next((v.accepted for v in reversed(self.verdicts) if v.attempt is not None), None)
        explored = self._withheld_a_helping_lesson()
        status = "failed" if error else "completed"
        recorder.update(
            SessionRecord, self.session_id, status=status, final_answer=answer_text,
            reward=reward.score, reward_reason=reward.reason, checks_passed=checks_passed, explored=explored,
            drift_alert=drift_alert, drift_reason=drift_reason or None, usage_by_role=usage,
            total_tokens=total.total_tokens, total_cost_usd=total.cost_usd, interventions=self.interventions, retries=self.retries,
            finished_at=utcnow(), session_metadata=self._session_metadata(
                learning=learning_note, steps_judged=step_note, unaided_score=unaided, **({"error": error} if error else {})),
        )
        # The review status is set only while nobody decided it: a reviewer's approval or quarantine made while the
        # session ran stands; an auto-approval is logged only when it applied.
        approval_log = (ReviewLogRecord, {"session_id": self.session_id, "from_status": "pending", "to_status": "approved",
                                          "reviewer": "atlas:auto-approval", "note": review_note}) if review_status == "approved" else None
        recorder.update(SessionRecord, self.session_id, only_if={"review_status": "pending"}, then=approval_log,
                        review_status=review_status, review_note=review_note)
        self.finished = SessionResult(
            session_id=self.session_id, learning_key=self.learning_key, lane=self.lane, decision=self.decision,
            final_answer=answer_text, accepted=accepted, verdicts=list(self.verdicts), attempts=len(self.attempts),
            reward=reward.score, reward_status=reward.status, reward_reason=reward.reason, reward_breakdown=reward.breakdown,
            step_rewards=step_rewards, usage_by_role=usage, total_tokens=total.total_tokens, total_cost_usd=total.cost_usd,
            lessons_used=self.entries_used, lessons_learned=learned,
            drift_alert=drift_alert, drift_reason=drift_reason, review_status=review_status, learning_note=learning_note,
            task_family=self.task_family, task_family_source=self.task_family_source, checks_passed=checks_passed,
            unaided_score=unaided, lessons_withheld=[e.id for e in self.withheld],
            role_failures={role: self.supervisor.redactor.text(error) for role, error in self.role_failures.items()},
        )
        # The row the lane prior will read for this session: the history cache takes it without a store read.
        self._stored_row = (self.session_id, reward.score, self.lane, self.interventions, status, checks_passed, explored)
        if self._pending is not None:
            self._pending._ready = self.finished  # noqa: SLF001 - subscribers of session_finished may read it
        self._emit("session_finished", self.finished.summary())
        if not recorder.flush():
            log.warning("session %s: the store writer did not finish in time; rows stay queued", self.session_id)
        return self.finished

    def _provisional_row(self, error: str | None) -> HistoryRow:
        """The session as the next session's lane prior reads it before judges scored it: the last attempt's
        checks as its reward (else none yet), its interventions and whether it was an experiment."""
        last = self.attempts[-1] if self.attempts else None
        score = last.get("checks_score") if last is not None else None
        passed = None if score is None else score >= 0.5
        return (self.session_id, score, self.lane, self.interventions, "failed" if error else "completed", passed,
                self._withheld_a_helping_lesson())

    def _withheld_a_helping_lesson(self) -> bool:
        """Whether this session went without a lesson that, by its measured impact so far, helps: then a failure is
        the experiment's doing, and the lane prior leaves it out (a lesson with no sign of helping explains nothing)."""
        withheld = [e.id for e in self.withheld if e.kind == "lesson"]
        if not withheld:
            return False
        current = self.supervisor.playbook.cached(self.learning_key, withheld) or [e for e in self.withheld if e.kind == "lesson"]
        return any(probability_helps(e) > 0.5 for e in current)

    def _passed_unaided(self) -> bool:
        """Whether the student's first answer stood: nothing rejected, no check failed on any attempt, no retry and
        no teacher intervention. With checks that decide, a judge has nothing to add to such a session."""
        return (self.retries == 0 and self.interventions == 0 and not any(v.accepted is False for v in self.verdicts)
                and not any(c.score is not None and c.score < 0.5 for cs in self.attempt_checks.values() for c in cs))

    def _unaided_score(self, final_score: float | None) -> float | None:
        """How the student's own first answer fared, before any teacher guidance: its checks, else the teacher's
        first verdict; with no validated attempt (auto), the final outcome; None for an escalated session."""
        if not self.attempts:
            return None if self.lane == "escalate" else final_score
        first = self.attempts[0]
        if first.get("checks_score") is not None:
            return float(first["checks_score"])
        if first["accepted"] is not None:
            return 1.0 if first["accepted"] else 0.0
        return final_score

    def _teaching_reward(self, final_checks: list[Any]) -> float | None:
        """What the teacher's guidance did (see :func:`~atlas_learning.rewards.teaching_reward`), when it can be told.

        Needs a rejected first attempt, a later final answer, and checks that decide both."""
        if len(self.attempts) < 2 or self.attempts[0]["accepted"] is not False:
            return None
        final = mean_or_none([c.score for c in final_checks])
        first = mean_or_none([c.score for c in self.attempt_checks.get(1, [])])
        if final is None or first is None:
            return None
        last = self.attempts[-1]["attempt"]  # the guidance the student got on answer retries, before the final attempt
        guidance = " ".join(v.guidance for v in self.verdicts
                            if v.attempt is not None and v.attempt < last and v.accepted is False and v.guidance)
        return teaching_reward(first >= 0.5, final >= 0.5, guidance)

    def _learning_triggers(self, outcome: _Outcome) -> list[str]:
        """What there is to learn from this session; the synthesizer runs only when something is listed."""
        config = self.config
        if config.playbook.synthesize == "always":
            return ["playbook.synthesize is always"]
        triggers = []
        # A session that went without a lesson that helps, or without one under trial, is an experiment's "without"
        # arm: its failures say nothing new (the comparison itself is recorded as impact). The synthesizer learns
        # from the sessions that had the lessons: one that had a lesson under trial and still failed asks it.
        explained = self._withheld_a_helping_lesson() or any(e.kind == "lesson" and e.status == "provisional" for e in self.withheld)
        if any(v.accepted is False for v in self.verdicts) and not explained:
            triggers.append("the teacher or a check rejected work")
        failed_checks = outcome.checks_passed is False or any(c.score is not None and c.score < 0.5
                                                               for cs in self.attempt_checks.values() for c in cs)
        if failed_checks and not explained:
            triggers.append("a verifiable check failed")
        if outcome.reward is not None and outcome.reward < config.supervision.auto_min_reward and not explained:
            triggers.append(f"reward {outcome.reward:.2f} under {config.supervision.auto_min_reward}")
        if outcome.drift_alert:
            triggers.append("the reward drifted")
        family_lessons = [e for e in self._entries if e.kind == "lesson" and e.task_family == self.task_family]
        if not family_lessons and self._history.sessions < config.supervision.warmup_sessions:
            triggers.append("a new task family with no lessons yet")
        if any(e.status == "provisional" for e in [*self.lessons, *self.teacher_lessons]) and (outcome.unaided or 0.0) < 0.5:
            triggers.append("a lesson under trial was given and the student's own answer still failed")
        return triggers

    def _learn_flow(self, answer_text: str, outcome: _Outcome) -> Flow[tuple[list[AppliedChange], str]]:
        config = self.config
        if not config.playbook.enabled:
            return [], "learning disabled (playbook.enabled is false)"
        if self.supervisor.store_problem is not None or self._history.unavailable is not None or self.supervisor.recorder.degraded:
            self._emit("store_degraded", {"reason": self.supervisor.store_problem or "writes are spooling"})
            return [], "learning skipped: the store is unavailable"
        with self.supervisor._learn_locks[self.learning_key]:  # noqa: SLF001 - one learning step per key at a time
            return (yield from self._learn_locked(answer_text, outcome))

    def _learn_locked(self, answer_text: str, outcome: _Outcome) -> Flow[tuple[list[AppliedChange], str]]:
        config, registry = self.config, self.supervisor.playbook
        learned: list[AppliedChange] = []
        notes: list[str] = []
        try:
            impact = outcome.for_impact()
            if impact is not None and (self.entries_used or self.withheld):
                learned.extend(registry.record_impact(self.learning_key, self.entries_used, [e.id for e in self.withheld], impact,
                                                      recorder=self.supervisor.recorder))
            learned.extend(self._keep_example(answer_text, outcome))
        except StoreError as exc:
            return learned, f"learning skipped: {exc}"
        triggers = self._learning_triggers(outcome)
        retired_ids = {c.entry_id for c in learned if c.op == "retire"}
        shown = [e for e in self._entries if e.kind == "lesson" and e.id not in retired_ids]
        # what the lessons say, not their versions: a confirmation bumps a version and changes nothing
        lessons_state = (frozenset((e.id, e.lesson, e.status) for e in shown) | frozenset((i, "", "retired") for i in retired_ids),
                         frozenset(triggers))
        idle_key = (self.learning_key, self.task_family)
        if not triggers:
            notes.append("synthesizer not asked: nothing to learn (no rejection, failed check, low or drifting reward, new family or lesson under trial)")
        elif config.playbook.synthesize == "when_useful" and self.supervisor._synthesis_idle.get(idle_key) == lessons_state:
            notes.append(f"synthesizer not asked: it proposed nothing for the same trouble with the same lessons ({'; '.join(triggers)})")
        else:
            entries = [(e.id, e.lesson) for e in shown]
            try:
                tombstones = sorted(registry.retired_lessons(self.learning_key), key=lambda lesson: -similarity(lesson, self.task))[:5]
            except StoreError:
                tombstones = []
            messages = synthesis_messages(self.task, render_steps(self.steps, config.judges.context_budget_chars // 2), answer_text,
                                          outcome.reward, self.guidance_given, entries, tombstones,
                                          self.task_family, "; ".join(triggers))
            answer = yield Ask("synthesizer", "synthesis", messages, PlaybookChanges)
            if not answer.ok:
                notes.append(f"synthesizer failed: {answer.error}")
            else:
                try:
                    applied = registry.apply(self.learning_key, answer.output.changes, session_id=self.session_id,
                                             task_family=self.task_family)
                    learned.extend(applied)
                    if any(c.op in ("add", "refine", "retire") for c in applied):
                        self.supervisor._synthesis_idle.pop(idle_key, None)
                    else:
                        self.supervisor._synthesis_idle[idle_key] = lessons_state
                    notes.append(f"{len(answer.output.changes)} changes proposed ({'; '.join(triggers)})")
                except StoreError as exc:
                    notes.append(f"learning skipped: {exc}")
        for change in learned:
            event: EventType = _LESSON_EVENTS.get(change.op, "lesson_refined")
            self._emit(event, {"entry_id": change.entry_id, "lesson": change.lesson, "op": change.op,
                               "registry_version": change.registry_version, "reason": change.reason})
        return learned, "; ".join(notes)

    def _keep_example(self, answer_text: str, outcome: _Outcome) -> list[AppliedChange]:
        """A verified success becomes a worked example of its family: checks passed, or (without checks) approved
        with a reward of at least ``examples.min_reward``."""
        examples = self.config.examples
        if not examples.enabled or outcome.error or self.lane == "escalate":
            return []
        if outcome.checks_passed is True:
            reason = "passed its verifiable checks"
        elif outcome.checks_passed is None and outcome.approved and outcome.reward is not None and outcome.reward >= examples.min_reward:
            reason = f"approved with reward {outcome.reward:.2f}"
        else:
            return []
        redact = self.supervisor.redactor.text  # before example_text cuts anything: a cut secret no longer matches
        return self.supervisor.playbook.add_example(
            self.learning_key, example_text(redact(self.task), self.steps, redact(answer_text)), task_family=self.task_family,
            session_id=self.session_id, max_per_family=examples.max_per_family, reason=f"worked example: the session {reason}")

    # ----------------------------------------------------------------------------------------- plumbing
    def _verdict(self, answer: Answer, *, attempt: int | None = None, step_id: str | None = None,
                 failed_checks: Sequence[Any] = ()) -> VerdictResult:
        """The teacher's verdict, overruled by failing verifiable checks: they reject, with their reasons first
        in the guidance and the teacher's guidance (when it has some) after."""
        if answer.ok:
            verdict: Verdict = answer.output
            result = VerdictResult(verdict.accepted, verdict.guidance.strip(), verdict.reason, attempt, step_id)
        else:
            result = VerdictResult(None, "", f"teacher could not validate: {answer.error}", attempt, step_id)
        if failed_checks:
            reasons = [f"The check {c.name} failed" + (f": {c.reason}" if c.reason else "") + "." for c in failed_checks]
            guidance = " ".join([*reasons, result.guidance]).strip()
            why = "; ".join(f"check {c.name} failed" for c in failed_checks)
            result = VerdictResult(False, guidance, f"{why}; teacher: {result.reason}" if result.reason else why, attempt, step_id)
        self.verdicts.append(result)
        self._emit("verdict", {"accepted": result.accepted, "guidance": result.guidance, "reason": result.reason,
                               "attempt": attempt, "step_id": step_id, "failed_checks": [c.name for c in failed_checks]})
        return result

    def _guidance(self, content: str, *, kind: str, step_id: str | None = None, source: str = "teacher") -> None:
        self.guidance_given.append(content)
        self.supervisor.recorder.insert(GuidanceRecord, session_id=self.session_id, step_id=step_id, source=source, kind=kind, content=content)

    def _emit(self, event_type: EventType, payload: dict[str, Any]) -> None:
        with self._lock:
            seq = self._seq
            self._seq += 1
        self.supervisor.recorder.insert_later(TrajectoryEventRecord, session_id=self.session_id, seq=seq, event_type=event_type,
                                              payload=dict(payload))
        if self.supervisor.events.has_subscribers:
            self.supervisor.events.publish(AtlasEvent(event_type, self.session_id, payload))

    def _call_record(self, request: Ask, usage: Usage, latency_s: float, attempts: int, error: str | None, model: Any) -> None:
        self.usage.record(request.role, usage)
        # Published only: the call is stored below as a model-call row, not again as a trajectory event.
        if self.supervisor.events.has_subscribers:
            self.supervisor.events.publish(AtlasEvent("model_call", self.session_id, {"role": request.role, "purpose": request.purpose,
                                                                                      "error": error}))
        if error:
            with self._lock:
                self.role_failures.setdefault(request.role, error)
        if request.role in _CALLER_PATH_ROLES:
            with self._lock:
                self._supervision_s += latency_s
        self.supervisor.recorder.insert(
            ModelCallRecord, session_id=self.session_id, role=request.role, purpose=request.purpose,
            provider=getattr(model, "provider", ""), model=getattr(model, "model_name", ""), input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cost_usd=usage.cost_usd, latency_ms=latency_s * 1000, attempts=attempts, error=error,
        )

    def _over_budget(self, request: Ask) -> Answer | None:
        """Refuse a supervision call once the session spent ``supervision.max_tokens_per_session``, and a teacher
        or probe call once the teacher's supervision stopped (a wall-time, step or repeated-call budget)."""
        if request.role in _CALLER_PATH_ROLES:
            wall = self.config.supervision.max_supervision_seconds
            if wall is not None and self._supervision_s >= wall:
                self._stop_supervision(f"supervision wall-time budget reached: {self._supervision_s:.1f}s of teacher "
                                       f"calls (supervision.max_supervision_seconds {wall:g})")
            if self.supervision_stopped is not None:
                return Answer(error=self.supervision_stopped)
        limit = self.config.supervision.max_tokens_per_session
        if limit is None:
            return None
        spent = sum(u.get("input_tokens", 0) + u.get("output_tokens", 0) for role, u in self.usage.as_dict().items() if role != "student")
        if spent < limit:
            return None
        reason = f"supervision token budget reached ({spent} of supervision.max_tokens_per_session {limit})"
        if self.budget_note is None:
            self.budget_note = f"{reason}; skipped from {request.role} {request.purpose} on"
            self._emit("supervision_budget_reached", {"spent": spent, "limit": limit, "skipped": f"{request.role}:{request.purpose}"})
        return Answer(error=reason)

    def _perform(self, request: Ask | AskHuman) -> Answer:
        if isinstance(request, AskHuman):
            return self._ask_human(request)
        if (refused := self._over_budget(request)) is not None:
            return refused
        started = time.perf_counter()
        model = None
        deadline = self._seconds_left(request)
        try:
            model = self.supervisor.models.get(request.role)
            chosen = model

            def call() -> Any:
                return chosen.generate(request.messages, output_type=request.output_type,
                                       temperature=request.temperature, max_tokens=request.max_tokens)

            if deadline is None:
                response = call()
            else:
                try:
                    response = run_with_deadline(deadline, contextvars.copy_context().run, call)
                except DeadlinePassed:
                    return self._past_deadline(request, started, model)
        except Exception as exc:  # noqa: BLE001 - supervision must never break the user's run
            return self._failed_call(request, exc, started, model)
        self._call_record(request, response.usage, time.perf_counter() - started, response.attempts, None, model)
        return Answer(response.output, response.text)

    async def _aperform(self, request: Ask | AskHuman) -> Answer:
        if isinstance(request, AskHuman):
            return await self._aask_human(request)
        if (refused := self._over_budget(request)) is not None:
            return refused
        started = time.perf_counter()
        model = None
        deadline = self._seconds_left(request)
        try:
            model = self.supervisor.models.get(request.role)
            call = model.agenerate(request.messages, output_type=request.output_type,
                                   temperature=request.temperature, max_tokens=request.max_tokens)
            if deadline is None:
                response = await call
            else:
                task = asyncio.ensure_future(call)
                done, _ = await asyncio.wait({task}, timeout=deadline)
                if not done:  # the model's own TimeoutError, raised by the task, is a failed call, not this
                    task.cancel()
                    return self._past_deadline(request, started, model)
                response = task.result()
        except Exception as exc:  # noqa: BLE001
            return self._failed_call(request, exc, started, model)
        self._call_record(request, response.usage, time.perf_counter() - started, response.attempts, None, model)
        return Answer(response.output, response.text)

    def _seconds_left(self, request: Ask) -> float | None:
        """What is left of ``supervision.max_supervision_seconds`` for a call the user's call waits for; None for
        calls off that path (judges, synthesizer) or without a limit."""
        limit = self.config.supervision.max_supervision_seconds
        if limit is None or request.role not in _CALLER_PATH_ROLES:
            return None
        return max(limit - self._supervision_s, 0.001)

    def _past_deadline(self, request: Ask, started: float, model: Any) -> Answer:
        limit = self.config.supervision.max_supervision_seconds
        reason = (f"supervision wall-time budget reached: {request.role} {request.purpose} still running after "
                  f"{limit:g}s of supervision (supervision.max_supervision_seconds)")
        self._stop_supervision(reason)
        self._call_record(request, Usage(calls=1), time.perf_counter() - started, 1, reason, model)
        return Answer(error=reason)

    def _stop_supervision(self, reason: str) -> None:
        """End the teacher's supervision of this session (the agent goes on), once, with the reason recorded."""
        with self._lock:
            if self.supervision_stopped is not None:
                return
            self.supervision_stopped = reason
        self._emit("supervision_stopped", {"reason": reason})

    def _failed_call(self, request: Ask, exc: Exception, started: float, model: Any) -> Answer:
        reason = str(exc).splitlines()[0] if isinstance(exc, AtlasError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ModelError):
            log.warning("%s call for %s failed unexpectedly: %s", request.role, request.purpose, self.supervisor.redactor.text(reason))
        usage = getattr(exc, "usage", None)
        self._call_record(request, usage if isinstance(usage, Usage) else Usage(calls=1), time.perf_counter() - started, 1, reason, model)
        return Answer(None, getattr(exc, "raw_output", ""), error=reason)

    def _ask_human(self, request: AskHuman) -> Answer:
        human = self.supervisor.human
        if human is None:
            return Answer(error="escalation is 'human' but no human callback was given")
        try:
            decided = human(request.task, request.context)
            if inspect.isawaitable(decided):
                decided = _run_coroutine(decided)
            return Answer(text=as_text(decided))
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, self.supervisor.control_flow):
                raise
            return Answer(error=f"human callback failed: {type(exc).__name__}: {exc}")

    async def _aask_human(self, request: AskHuman) -> Answer:
        human = self.supervisor.human
        if human is None:
            return Answer(error="escalation is 'human' but no human callback was given")
        try:
            decided = human(request.task, request.context)
            if inspect.isawaitable(decided):
                decided = await decided
            return Answer(text=as_text(decided))
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, self.supervisor.control_flow):
                raise
            return Answer(error=f"human callback failed: {type(exc).__name__}: {exc}")


def _error_text(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


def _drain_at_exit(ref: weakref.ref[Supervisor]) -> None:
    """At interpreter exit: let every pending finish end (up to ``supervision.drain_timeout_s``); the recorder's
    own exit handler, registered earlier, runs after this one and flushes what they wrote."""
    supervisor = ref()
    if supervisor is not None and not supervisor._closed:  # noqa: SLF001
        timeout = supervisor.config.supervision.drain_timeout_s
        if not supervisor.finisher.drain(timeout):
            log.warning("exit: %d session finishes did not end within %ss", supervisor.finisher.pending, timeout)


def _aware(moment: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC."""
    if moment is not None and moment.tzinfo is None:
        from datetime import timezone

        return moment.replace(tzinfo=timezone.utc)
    return moment


def _run_coroutine(awaitable: Awaitable[Any]) -> Any:
    async def wrapper() -> Any:
        return await awaitable

    return asyncio.run(wrapper())


def as_text(value: Any) -> str:
    """How a task or answer reads to the teacher, judges and the store: strings as they are, pydantic models and
    JSON-able values as JSON, anything else as ``str()``; None as ''. A structured value is redacted (built-in
    patterns) as structure before it becomes text: once in JSON text, a value under a secret-named key, bytes or
    an escaped line break would hide a secret from the patterns."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return dump()
    import json

    try:
        return json.dumps(default_redactor().value(value), default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _plan_rows(plan: Sequence[str]) -> list[dict[str, Any]]:
    return [{"step_id": i + 1, "description": s} for i, s in enumerate(plan)]
