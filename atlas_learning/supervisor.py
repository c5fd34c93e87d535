"""The Supervisor: the one API every adapter drives.

>>> sup = Supervisor({"models": {"default": {"provider": "scripted", ...}}})
>>> run = sup.begin("Count the files in ./data", agent_name="file-agent")
>>> run.lane, run.instructions                 # the lane decision and what to put in the student's prompt
>>> run.record_step(kind="tool_call", name="list_files", tool_args={"path": "data"}, output="a.txt b.txt")
>>> verdict = run.validate_answer("2 files")   # paired/coach: the teacher's verdict, with guidance
>>> result = run.finish("2 files")              # judged, learned from, stored; a SessionResult

A session is :meth:`Supervisor.begin` (probe, lessons, lane) → ``record_*`` as the agent works →
``review_plan`` / ``validate_step`` / ``validate_answer`` / ``escalate`` as the lane asks → :meth:`SupervisedRun.finish`
(checks, judges, drift, review status, learning). Every method that calls a model has an ``a``-prefixed async
twin. :meth:`Supervisor.supervise` runs the whole loop around a plain ``attempt(instructions) -> answer``
function. Supervision never raises into the user's run: model failures become recorded reasons (fail open),
store failures spool (see :mod:`atlas_learning.recorder`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import AtlasConfig
from .errors import AtlasError, ModelError, StoreError
from .events import AtlasEvent, EventBus, EventType
from .flows import Answer, Ask, AskHuman, Flow, adrive, drive
from .judges import Check, CheckContext, SessionReward, StepReward, judge_session_flow, judge_steps_flow, run_checks
from .models import RoleModels, Usage, UsageLedger
from .playbook import AppliedChange, PlaybookRegistry, coverage, render_lessons, select_lessons
from .probe import KeyHistory, LaneDecision, load_history, prior_decision, probe_flow
from .prompts import (
    answer_validation_messages,
    execution_messages,
    plan_review_messages,
    render_steps,
    step_validation_messages,
    synthesis_messages,
)
from .recorder import Recorder
from .redact import Redactor
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
    utcnow,
)

__all__ = ["Supervisor", "SupervisedRun", "SessionResult", "VerdictResult", "HumanCallback", "as_text"]

log = logging.getLogger("atlas_learning.supervisor")

_LESSON_EVENTS: dict[str, EventType] = {
    "add": "lesson_added",
    "refine": "lesson_refined",
    "confirm": "lesson_confirmed",
    "activate": "lesson_activated",
    "retire": "lesson_retired",
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

    def summary(self) -> dict[str, Any]:
        """The few fields worth showing next to a run's output."""
        return {"session_id": self.session_id, "lane": self.lane, "reward": self.reward, "review_status": self.review_status}


class Supervisor:
    """Owns the config, models, store, recorder, playbook and events; begins supervised sessions.

    ``config`` is an AtlasConfig, a dict or a YAML path (see :meth:`AtlasConfig.load`). ``checks`` are verifiable
    checks applied to every session; ``human`` decides escalations when ``supervision.escalation`` is ``human``.
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
    ) -> None:
        self.config = AtlasConfig.load(config)
        self.store = store or Store(self.config.storage, migrate=False)
        self.models = models or RoleModels(self.config)
        self.redactor = Redactor(self.config.redaction.patterns, enabled=self.config.redaction.enabled)
        self.recorder = Recorder(self.store, spool_dir=self.config.storage.spool_dir, redactor=self.redactor)
        self.playbook = PlaybookRegistry(self.store, self.config.playbook, redactor=self.redactor)
        self.events = events or EventBus()
        self.checks = list(checks)
        self.human = human
        #: Why the store cannot be used now (history and lessons are then unavailable), or None. Retried at
        #: most every ``store_retry_s`` seconds when a session begins.
        self.store_problem: str | None = None
        self.store_retry_s = 5.0
        self._store_checked = 0.0
        self._connect_store()

    def _connect_store(self) -> None:
        self._store_checked = time.monotonic()
        try:
            self.store.migrate()
            replayed = self.recorder.replay_spool()
            if replayed:
                log.warning("replayed %d rows spooled by an earlier run", replayed)
            self.store_problem = None
        except Exception as exc:  # noqa: BLE001 - a broken store or spool must not stop the agent
            self.store_problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("store unavailable; sessions will spool: %s", self.store_problem)

    def _store_usable(self) -> bool:
        if self.store_problem is not None and time.monotonic() - self._store_checked >= self.store_retry_s:
            self._connect_store()
        return self.store_problem is None

    def learning_key(self, agent_name: str, learning_key: str | None = None) -> str:
        """The key a session shares lessons and history under: explicit, configured, or agent name plus task family."""
        chosen = learning_key or self.config.supervision.learning_key
        if chosen:
            return chosen
        family = self.config.supervision.task_family
        return f"{agent_name}:{family}" if family else agent_name

    def begin(self, task: str, *, agent_name: str = "agent", learning_key: str | None = None,
              metadata: Mapping[str, Any] | None = None, checks: Sequence[Check] = ()) -> SupervisedRun:
        """Start a session: read the key's history and lessons, decide the lane, store the session."""
        run = SupervisedRun(self, as_text(task), agent_name, self.learning_key(agent_name, learning_key), dict(metadata or {}), [*self.checks, *checks])
        drive(run._begin_flow(), run._perform)
        return run

    async def abegin(self, task: str, *, agent_name: str = "agent", learning_key: str | None = None,
                     metadata: Mapping[str, Any] | None = None, checks: Sequence[Check] = ()) -> SupervisedRun:
        """Async twin of :meth:`begin`."""
        run = SupervisedRun(self, as_text(task), agent_name, self.learning_key(agent_name, learning_key), dict(metadata or {}), [*self.checks, *checks])
        await adrive(run._begin_flow(), run._aperform)
        return run

    def supervise(self, task: str, attempt: Callable[[str], str], **begin: Any) -> SessionResult:
        """Run the whole loop around ``attempt(instructions) -> answer``: lessons and guidance go in through
        ``instructions``; in paired and coach the answer is validated and retried with guidance; in escalate the
        teacher (or human) answers."""
        run = self.begin(task, **begin)
        if run.lane == "escalate":
            answer = run.escalate()
            if answer is not None:
                return run.finish(answer)
        while True:
            answer = attempt(run.instructions)
            if run.lane == "auto" or run.validate_answer(answer).accepted is not False or not run.can_retry:
                return run.finish(answer)

    async def asupervise(self, task: str, attempt: Callable[[str], Awaitable[str] | str], **begin: Any) -> SessionResult:
        """Async twin of :meth:`supervise`; ``attempt`` may be sync or async."""
        run = await self.abegin(task, **begin)
        if run.lane == "escalate":
            answer = await run.aescalate()
            if answer is not None:
                return await run.afinish(answer)
        while True:
            produced = attempt(run.instructions)
            answer = await produced if inspect.isawaitable(produced) else produced
            if run.lane == "auto" or (await run.avalidate_answer(answer)).accepted is not False or not run.can_retry:
                return await run.afinish(answer)

    def close(self) -> None:
        """Flush and stop the recorder, release models and connections."""
        self.recorder.close()
        self.models.close()
        self.store.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SupervisedRun:
    """One session in progress. Created by :meth:`Supervisor.begin`; ended by :meth:`finish`."""

    def __init__(self, supervisor: Supervisor, task: str, agent_name: str, learning_key: str, metadata: dict[str, Any], checks: list[Check]) -> None:
        self.supervisor = supervisor
        self.config = supervisor.config
        self.task = task
        self.agent_name = agent_name
        self.learning_key = learning_key
        self.metadata = metadata
        #: The session's verifiable checks; with an expected answer in the metadata, the built-in one joins them.
        self.checks = [*checks, expected_answer_check] if expected_answer_of(metadata) is not None else checks
        self.session_id = new_id()
        self.decision: LaneDecision = LaneDecision("paired", 0.0, "not decided yet", "fallback")
        #: Playbook entries injected into the student's and the teacher's instructions.
        self.lessons: list[Any] = []
        self.teacher_lessons: list[Any] = []
        #: The plan to follow (after the teacher's review, in coach) and the teacher's concerns.
        self.plan: list[str] = []
        self.concerns: list[str] = []
        #: Guidance for the student's next model call; cleared by :meth:`take_guidance`.
        self.pending_guidance: list[str] = []
        self.steps: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.verdicts: list[VerdictResult] = []
        self.guidance_given: list[str] = []
        self.usage = UsageLedger()
        self.interventions = 0
        self.retries = 0
        self.finished: SessionResult | None = None
        self._finish_claimed = False
        self._finished_event = threading.Event()
        self._history = KeyHistory()
        #: The key's live playbook entries when the session began.
        self._entries: list[Any] = []
        self._seq = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- views
    @property
    def lane(self) -> str:
        return self.decision.lane

    @property
    def instructions(self) -> str:
        """What to add to the student's instructions now: lessons, the reviewed plan and concerns, guidance."""
        parts = [render_lessons(self.lessons)]
        if self.plan:
            parts.append("Plan to follow:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(self.plan)))
        if self.concerns:
            parts.append("Watch out for:\n" + "\n".join(f"- {c}" for c in self.concerns))
        if self.pending_guidance:
            parts.append("Teacher guidance:\n" + "\n".join(f"- {g}" for g in self.pending_guidance))
        return "\n\n".join(p for p in parts if p)

    @property
    def teacher_instructions(self) -> str:
        return render_lessons(self.teacher_lessons)

    @property
    def can_retry(self) -> bool:
        """True when the last answer was rejected and retries remain."""
        last = self.verdicts[-1] if self.verdicts else None
        return last is not None and last.accepted is False and last.attempt is not None \
            and last.attempt <= self.config.supervision.max_retries

    def take_guidance(self) -> list[str]:
        """The pending guidance, removed so it is injected once."""
        with self._lock:
            taken, self.pending_guidance = self.pending_guidance, []
        return taken

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
    ) -> str:
        """Record something the student did, as it happens; returns the step id (for :meth:`validate_step`)."""
        ended = _aware(ended_at) or utcnow()
        started = _aware(started_at) or ended
        input_tokens, output_tokens = int(input_tokens or 0), int(output_tokens or 0)
        text_output = output if output is None or isinstance(output, str) else as_text(output)
        with self._lock:
            index = len(self.steps)
            row = self.supervisor.recorder.insert(
                StepRecord, session_id=self.session_id, step_index=index, attempt=len(self.attempts) + 1, kind=kind,
                name=name or tool_name or kind, description=description, tool_name=tool_name, tool_args=tool_args, input=input,
                output=text_output, error=error, status="error" if error else "ok", input_tokens=input_tokens,
                output_tokens=output_tokens, started_at=started, ended_at=ended,
                duration_ms=(ended - started).total_seconds() * 1000, step_metadata=dict(metadata or {}),
            )
            self.steps.append(row)
        self._emit("step", {"step_id": row["id"], "index": index, "kind": kind, "name": row["name"], "tool_name": tool_name, "error": error})
        return row["id"]

    def record_model_call(self, *, role: str = "student", provider: str = "", model: str = "", input_tokens: int = 0,
                          output_tokens: int = 0, latency_ms: float | None = None, cost_usd: float | None = None,
                          as_step: bool = True, output: Any = None) -> str | None:
        """Record a model call the agent made (tokens, cost by role); a student call also becomes a step."""
        input_tokens, output_tokens = int(input_tokens or 0), int(output_tokens or 0)
        self.usage.record(role, Usage(input_tokens, output_tokens, cost_usd, 1))
        self.supervisor.recorder.insert(
            ModelCallRecord, session_id=self.session_id, role=role, purpose="agent", provider=provider, model=model,
            input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd, latency_ms=latency_ms,
        )
        if as_step and role == "student":
            return self.record_step(kind="model_call", name=model or "model", output=output,
                                    input_tokens=input_tokens, output_tokens=output_tokens)
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
        """The teacher's verdict on an answer. Rejected with retries left: :attr:`can_retry` is True and the
        guidance is in :attr:`instructions`. Every retry is validated again."""
        return drive(self._answer_flow(as_text(answer)), self._perform)

    async def avalidate_answer(self, answer: Any) -> VerdictResult:
        return await adrive(self._answer_flow(as_text(answer)), self._aperform)

    def escalate(self) -> str | None:
        """The answer from the teacher model or a human (per ``supervision.escalation``); None if neither could."""
        return drive(self._escalate_flow(), self._perform)

    async def aescalate(self) -> str | None:
        return await adrive(self._escalate_flow(), self._aperform)

    def finish(self, final_answer: Any = None, *, error: str | None = None) -> SessionResult:
        """Judge, check for drift, set the review status, learn, store, and return the result.

        Runs once: a second call, from any thread, gets the first call's result."""
        if not self._claim_finish():
            self._finished_event.wait()
            assert self.finished is not None
            return self.finished
        try:
            return drive(self._finish_flow(final_answer, error), self._perform)
        finally:
            self._finished_event.set()

    async def afinish(self, final_answer: Any = None, *, error: str | None = None) -> SessionResult:
        if not self._claim_finish():
            await asyncio.to_thread(self._finished_event.wait)
            assert self.finished is not None
            return self.finished
        try:
            return await adrive(self._finish_flow(final_answer, error), self._aperform)
        finally:
            self._finished_event.set()

    def _claim_finish(self) -> bool:
        with self._lock:
            claimed, self._finish_claimed = not self._finish_claimed, True
        return claimed

    # ------------------------------------------------------------------------------------------- flows
    def _begin_flow(self) -> Flow[None]:
        supervisor, config = self.supervisor, self.config
        # The session row goes first: the probe's model call and every later row point at it.
        supervisor.recorder.insert(SessionRecord, id=self.session_id, learning_key=self.learning_key,
                                   agent_name=self.agent_name, task=self.task, session_metadata=self.metadata)
        entries = self._entries
        if supervisor._store_usable():
            try:
                self._history = load_history(supervisor.store, self.learning_key, config.supervision.history_window)
                entries = supervisor.playbook.live_entries(self.learning_key) if config.playbook.enabled else []
                self._entries = entries
            except StoreError as exc:
                self._history = KeyHistory(unavailable=str(exc))
        else:
            self._history = KeyHistory(unavailable=supervisor.store_problem)
        budget = config.playbook.inject_token_budget
        self.lessons = select_lessons(entries, self.task, audience="student", token_budget=budget)
        self.teacher_lessons = select_lessons(entries, self.task, audience="teacher", token_budget=budget)
        prior = prior_decision(self._history, coverage([*self.lessons, *self.teacher_lessons], self.task), config.supervision)
        self.decision = yield from probe_flow(self.task, prior, config.supervision)
        supervisor.recorder.update(
            SessionRecord, self.session_id, lane=self.decision.lane, lane_confidence=self.decision.confidence,
            lane_reason=self.decision.reason, lane_source=self.decision.source,
            lessons_used=[e.id for e in [*self.lessons, *self.teacher_lessons]],
            session_metadata={**self.metadata, "lane_signals": self.decision.signals},
        )
        task_preview = supervisor.redactor.text(self.task)[:200]  # redact first: a cut secret no longer matches
        self._emit("session_started", {"learning_key": self.learning_key, "task": task_preview, "agent_name": self.agent_name})
        self._emit("lane_chosen", {"lane": self.decision.lane, "confidence": self.decision.confidence,
                                   "reason": self.decision.reason, "source": self.decision.source})

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

    def _step_flow(self, step_id: str) -> Flow[VerdictResult]:
        position = next((i for i, s in enumerate(self.steps) if s["id"] == step_id), None)
        if position is None:
            return VerdictResult(None, reason=f"unknown step {step_id!r}", step_id=step_id)
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
                with self._lock:
                    self.pending_guidance.append(verdict.guidance)
        return verdict

    def _answer_flow(self, answer_text: str) -> Flow[VerdictResult]:
        number = len(self.attempts) + 1
        steps = render_steps(self.steps, self.config.judges.context_budget_chars)
        answer = yield Ask("teacher", "answer_validation",
                           answer_validation_messages(self.task, answer_text, steps, self.teacher_instructions), Verdict)
        verdict = self._verdict(answer, attempt=number)
        self.attempts.append({"attempt": number, "answer": answer_text, "accepted": verdict.accepted})
        self.supervisor.recorder.insert(AttemptRecord, session_id=self.session_id, attempt=number, answer=answer_text,
                                        accepted=verdict.accepted, verdict_reason=verdict.reason, guidance=verdict.guidance or None)
        if verdict.accepted is False:
            self.interventions += 1
            if verdict.guidance:
                self._guidance(verdict.guidance, kind="answer")
            if number <= self.config.supervision.max_retries:  # a retry follows; it will be validated too
                self.retries += 1
                with self._lock:
                    self.pending_guidance = [verdict.guidance] if verdict.guidance else ["The teacher rejected the answer; try again."]
                self._emit("retry", {"attempt": number + 1, "guidance": verdict.guidance})
        return verdict

    def _escalate_flow(self) -> Flow[str | None]:
        if self.config.supervision.escalation == "human":
            answer = yield AskHuman(self.task, {"session_id": self.session_id, "lessons": self.instructions, "reason": self.decision.reason})
            source = "human"
        else:
            answer = yield Ask("teacher", "escalation", execution_messages(self.task, self.teacher_instructions))
            source = "teacher"
        self._emit("escalated", {"to": source, "error": answer.error})
        if not answer.ok:
            return None
        self._guidance(answer.text, kind="escalation", source=source)
        return answer.text

    def _finish_flow(self, final_answer: Any, error: str | None) -> Flow[SessionResult]:
        supervisor, config = self.supervisor, self.config
        answer_text = as_text(final_answer) if final_answer is not None else (self.attempts[-1]["answer"] if self.attempts else "")
        checks = run_checks(self.checks, CheckContext(self.task, answer_text, tuple(self.steps), self.metadata))
        verdict_text = "; ".join(f"attempt {v.attempt}: {'accepted' if v.accepted else 'rejected' if v.accepted is False else 'unverified'}"
                                 for v in self.verdicts if v.attempt is not None)
        reward: SessionReward = yield from judge_session_flow(self.task, self.steps, answer_text, verdict_text, checks, config.judges)
        teaching = self._teaching_reward(checks)
        if teaching is not None:
            reward.breakdown["teaching"] = round(teaching, 4)
        step_rewards, step_note = yield from judge_steps_flow(self.task, self.steps, config.judges)
        recorder = supervisor.recorder
        recorder.insert(RewardRecord, session_id=self.session_id, scope="session", score=reward.score, status=reward.status,
                        reason=reward.reason, breakdown=reward.breakdown, samples=reward.samples, escalated=reward.escalated)
        for step_reward in step_rewards:
            recorder.insert(RewardRecord, session_id=self.session_id, step_id=step_reward.step_id, scope="step",
                            score=step_reward.score, reason=step_reward.rationale)
        self._emit("reward", {"score": reward.score, "status": reward.status, "reason": reward.reason,
                              "escalated": reward.escalated, "steps": step_note})

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
        if not drift_alert and threshold is not None and reward.score is not None and reward.score >= threshold:
            review_status, review_note = "approved", f"auto-approved: reward {reward.score:.3f} >= {threshold}"
            recorder.insert(ReviewLogRecord, session_id=self.session_id, from_status="pending", to_status="approved",
                            reviewer="atlas:auto-approval", note=review_note)

        learned, learning_note = yield from self._learn_flow(answer_text, reward.score)

        usage = self.usage.as_dict()
        total = self.usage.total()
        accepted = next((v.accepted for v in reversed(self.verdicts) if v.attempt is not None), None)
        recorder.update(
            SessionRecord, self.session_id, status="failed" if error else "completed", final_answer=answer_text,
            reward=reward.score, reward_reason=reward.reason, review_status=review_status, review_note=review_note,
            drift_alert=drift_alert, drift_reason=drift_reason or None, usage_by_role=usage, total_tokens=total.total_tokens,
            total_cost_usd=total.cost_usd, interventions=self.interventions, retries=self.retries, finished_at=utcnow(),
            session_metadata={**self.metadata, "lane_signals": self.decision.signals, "learning": learning_note,
                              "steps_judged": step_note, **({"error": error} if error else {})},
        )
        self.finished = SessionResult(
            session_id=self.session_id, learning_key=self.learning_key, lane=self.lane, decision=self.decision,
            final_answer=answer_text, accepted=accepted, verdicts=list(self.verdicts), attempts=len(self.attempts),
            reward=reward.score, reward_status=reward.status, reward_reason=reward.reason, reward_breakdown=reward.breakdown,
            step_rewards=step_rewards, usage_by_role=usage, total_tokens=total.total_tokens, total_cost_usd=total.cost_usd,
            lessons_used=[e.id for e in [*self.lessons, *self.teacher_lessons]], lessons_learned=learned,
            drift_alert=drift_alert, drift_reason=drift_reason, review_status=review_status, learning_note=learning_note,
        )
        self._emit("session_finished", self.finished.summary())
        if not recorder.flush():
            log.warning("session %s: the store writer did not finish in time; rows stay queued", self.session_id)
        return self.finished

    def _teaching_reward(self, final_checks: list[Any]) -> float | None:
        """What the teacher's guidance did (see :func:`~atlas_learning.rewards.teaching_reward`), when it can be told.

        Needs a rejected first attempt, a later final answer, and checks that decide both."""
        if len(self.attempts) < 2 or self.attempts[0]["accepted"] is not False:
            return None
        final = mean_or_none([c.score for c in final_checks])
        first = mean_or_none([c.score for c in run_checks(self.checks, CheckContext(
            self.task, self.attempts[0]["answer"], tuple(self.steps), self.metadata))])
        if final is None or first is None:
            return None
        last = self.attempts[-1]["attempt"]  # the guidance the student got on answer retries, before the final attempt
        guidance = " ".join(v.guidance for v in self.verdicts
                            if v.attempt is not None and v.attempt < last and v.accepted is False and v.guidance)
        return teaching_reward(first >= 0.5, final >= 0.5, guidance)

    def _learn_flow(self, answer_text: str, reward: float | None) -> Flow[tuple[list[AppliedChange], str]]:
        config, registry = self.config, self.supervisor.playbook
        if not config.playbook.enabled:
            return [], "learning disabled (playbook.enabled is false)"
        if self.supervisor.store_problem is not None or self._history.unavailable is not None or self.supervisor.recorder.degraded:
            self._emit("store_degraded", {"reason": self.supervisor.store_problem or "writes are spooling"})
            return [], "learning skipped: the store is unavailable"
        learned: list[AppliedChange] = []
        used = {e.id for e in [*self.lessons, *self.teacher_lessons]}
        try:
            if reward is not None:
                unused = [e.id for e in self._entries if e.id not in used]
                learned.extend(registry.record_impact(self.learning_key, sorted(used), unused, reward))
        except StoreError as exc:
            return learned, f"learning skipped: {exc}"
        retired = {c.entry_id for c in learned if c.op == "retire"}
        entries = [(e.id, e.lesson) for e in self._entries if e.id not in retired]
        messages = synthesis_messages(self.task, render_steps(self.steps, self.config.judges.context_budget_chars // 2),
                                      answer_text, reward, self.guidance_given, entries)
        answer = yield Ask("synthesizer", "synthesis", messages, PlaybookChanges)
        if not answer.ok:
            note = f"synthesizer failed: {answer.error}"
        else:
            try:
                learned.extend(registry.apply(self.learning_key, answer.output.changes, session_id=self.session_id))
                note = f"{len(answer.output.changes)} changes proposed"
            except StoreError as exc:
                note = f"learning skipped: {exc}"
        for change in learned:
            event: EventType = _LESSON_EVENTS.get(change.op, "lesson_refined")
            self._emit(event, {"entry_id": change.entry_id, "lesson": change.lesson, "op": change.op,
                               "registry_version": change.registry_version, "reason": change.reason})
        return learned, note

    # ----------------------------------------------------------------------------------------- plumbing
    def _verdict(self, answer: Answer, *, attempt: int | None = None, step_id: str | None = None) -> VerdictResult:
        if answer.ok:
            verdict: Verdict = answer.output
            result = VerdictResult(verdict.accepted, verdict.guidance.strip(), verdict.reason, attempt, step_id)
        else:
            result = VerdictResult(None, "", f"teacher could not validate: {answer.error}", attempt, step_id)
        self.verdicts.append(result)
        self._emit("verdict", {"accepted": result.accepted, "guidance": result.guidance, "reason": result.reason,
                               "attempt": attempt, "step_id": step_id})
        return result

    def _guidance(self, content: str, *, kind: str, step_id: str | None = None, source: str = "teacher") -> None:
        self.guidance_given.append(content)
        self.supervisor.recorder.insert(GuidanceRecord, session_id=self.session_id, step_id=step_id, source=source, kind=kind, content=content)

    def _emit(self, event_type: EventType, payload: dict[str, Any]) -> None:
        with self._lock:
            seq = self._seq
            self._seq += 1
        self.supervisor.recorder.insert(TrajectoryEventRecord, session_id=self.session_id, seq=seq, event_type=event_type, payload=payload)
        self.supervisor.events.publish(AtlasEvent(event_type, self.session_id, payload))

    def _call_record(self, request: Ask, usage: Usage, latency_s: float, attempts: int, error: str | None, model: Any) -> None:
        self.usage.record(request.role, usage)
        self.supervisor.recorder.insert(
            ModelCallRecord, session_id=self.session_id, role=request.role, purpose=request.purpose,
            provider=getattr(model, "provider", ""), model=getattr(model, "model_name", ""), input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cost_usd=usage.cost_usd, latency_ms=latency_s * 1000, attempts=attempts, error=error,
        )

    def _perform(self, request: Ask | AskHuman) -> Answer:
        if isinstance(request, AskHuman):
            return self._ask_human(request)
        started = time.perf_counter()
        model = None
        try:
            model = self.supervisor.models.get(request.role)
            response = model.generate(request.messages, output_type=request.output_type,
                                      temperature=request.temperature, max_tokens=request.max_tokens)
        except Exception as exc:  # noqa: BLE001 - supervision must never break the user's run
            return self._failed_call(request, exc, started, model)
        self._call_record(request, response.usage, time.perf_counter() - started, response.attempts, None, model)
        return Answer(response.output, response.text)

    async def _aperform(self, request: Ask | AskHuman) -> Answer:
        if isinstance(request, AskHuman):
            return await self._aask_human(request)
        started = time.perf_counter()
        model = None
        try:
            model = self.supervisor.models.get(request.role)
            response = await model.agenerate(request.messages, output_type=request.output_type,
                                             temperature=request.temperature, max_tokens=request.max_tokens)
        except Exception as exc:  # noqa: BLE001
            return self._failed_call(request, exc, started, model)
        self._call_record(request, response.usage, time.perf_counter() - started, response.attempts, None, model)
        return Answer(response.output, response.text)

    def _failed_call(self, request: Ask, exc: Exception, started: float, model: Any) -> Answer:
        reason = str(exc).splitlines()[0] if isinstance(exc, AtlasError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ModelError):
            log.warning("%s call for %s failed unexpectedly: %s", request.role, request.purpose, reason)
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
            if _is_control_flow(exc):
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
            if _is_control_flow(exc):
                raise
            return Answer(error=f"human callback failed: {type(exc).__name__}: {exc}")


def _aware(moment: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC."""
    if moment is not None and moment.tzinfo is None:
        from datetime import timezone

        return moment.replace(tzinfo=timezone.utc)
    return moment


def _is_control_flow(exc: BaseException) -> bool:
    """A framework's control-flow exception (LangGraph's interrupt) must pass through, not become a failure."""
    return type(exc).__name__ in ("GraphInterrupt", "NodeInterrupt", "ParentCommand")


def _run_coroutine(awaitable: Awaitable[Any]) -> Any:
    async def wrapper() -> Any:
        return await awaitable

    return asyncio.run(wrapper())


def as_text(value: Any) -> str:
    """How a task or answer reads to the teacher, judges and the store: strings as they are, pydantic models and
    JSON-able values as JSON, anything else as ``str()``; None as ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return dump()
    import json

    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _plan_rows(plan: Sequence[str]) -> list[dict[str, Any]]:
    return [{"step_id": i + 1, "description": s} for i, s in enumerate(plan)]
