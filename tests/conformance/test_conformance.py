"""One suite, every integration: the same scripted student, the same scenario, the same stored session.

Each test builds the agent of one integration (``with_atlas``, ``middleware``, ``agents_sdk``, ``byoa_sync``,
``byoa_async``, ``supervise``; see ``_integrations.py``) around a scripted student (``_student.py``), runs it as a
user would, then reads the session back from the store (SQLite and PostgreSQL) after ``supervisor.drain()``:
lane, attempts and verdicts, guidance, tool steps, final answer, status, reward. Teacher and judges answer by
schema (tests/support.py). Where an integration legitimately differs (``supervise`` has no tool steps, a sync
call cannot be cancelled), its driver states the reason and the test asserts that difference or skips with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from atlas_learning.store import (
    AttemptRecord,
    GuidanceRecord,
    ModelCallRecord,
    PlanRecord,
    SessionRecord,
    StepRecord,
    TrajectoryEventRecord,
)
from atlas_learning.supervisor import Supervisor
from tests.support import ACCEPT

from ._integrations import Integration
from ._student import Attempt, Student, StudentFailure, lookup

TASK = "Where is order 1?"
SHIPPED = "Order 1 shipped on May 2."
VAGUE = "Order 1 is on its way."
STILL_VAGUE = "Order 1 should arrive soon."
BOTH = "Order 1 shipped on May 2; order 2 is waiting for stock."
TEACHER_ANSWER = "Order 1 shipped on May 2 (teacher)."
GUIDANCE = "Quote the shipping date the lookup gave."
STEP_GUIDANCE = "Also look up order 2 before answering."
REJECT = {"accepted": False, "guidance": GUIDANCE, "reason": "no date"}
REJECT_STEP = {"accepted": False, "guidance": STEP_GUIDANCE, "reason": "incomplete"}


# ------------------------------------------------------------------------------------------ the stored session
@dataclass
class Stored:
    """A session as the store holds it once its background finish is done."""

    session: SessionRecord
    attempt_rows: list[AttemptRecord]
    guidance_rows: list[GuidanceRecord]
    steps: list[StepRecord]
    calls: list[ModelCallRecord]
    events: list[TrajectoryEventRecord]
    plans: list[PlanRecord]

    @property
    def attempts(self) -> list[tuple[int, str | None, bool | None]]:
        return [(a.attempt, a.answer, a.accepted) for a in self.attempt_rows]

    @property
    def guidance(self) -> list[tuple[str, str, str]]:
        """(source, kind, content) of every guidance row, in order."""
        return [(g.source, g.kind, g.content) for g in self.guidance_rows]

    @property
    def tool_steps(self) -> list[tuple[int, str | None, Any, str | None]]:
        """(attempt, tool, args, output) of every tool step, in order."""
        return [(s.attempt, s.tool_name, s.tool_args, s.output) for s in self.steps if s.kind == "tool_call"]

    @property
    def tool_step_ids(self) -> list[str]:
        return [s.id for s in self.steps if s.kind == "tool_call"]

    @property
    def teacher_purposes(self) -> list[str]:
        """What the teacher model was called for, sorted (plan_review, step_validation, answer_validation, escalation)."""
        return sorted(c.purpose for c in self.calls if c.role == "teacher")

    @property
    def step_verdicts(self) -> list[tuple[str, bool | None]]:
        """(step id, accepted) of every verdict the teacher gave on a step."""
        return [(e.payload["step_id"], e.payload["accepted"]) for e in self.events
                if e.event_type == "verdict" and e.payload.get("step_id") is not None]


def stored(supervisor: Supervisor, session_id: str) -> Stored:
    assert supervisor.drain(timeout=30), "the session's background finish did not end"
    store = supervisor.store
    session = store.get(SessionRecord, session_id)
    assert session is not None, f"session {session_id} was not stored"
    return Stored(
        session=session,
        attempt_rows=store.rows(AttemptRecord, AttemptRecord.session_id == session_id, order_by=AttemptRecord.attempt),
        guidance_rows=store.rows(GuidanceRecord, GuidanceRecord.session_id == session_id, order_by=GuidanceRecord.id),
        steps=store.rows(StepRecord, StepRecord.session_id == session_id, order_by=StepRecord.step_index),
        calls=store.rows(ModelCallRecord, ModelCallRecord.session_id == session_id, order_by=ModelCallRecord.id),
        events=store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session_id, order_by=TrajectoryEventRecord.seq),
        plans=store.rows(PlanRecord, PlanRecord.session_id == session_id, order_by=PlanRecord.id),
    )


def expected_tool_steps(integration: type[Integration], *lookups: tuple[int, int]) -> list[tuple[int, str, Any, str]]:
    """The tool steps the store must hold for (attempt, order) lookups: none where the integration has no tool
    steps (its driver's ``no_tool_steps`` says why), so phantom steps fail there too."""
    if integration.no_tool_steps is not None:
        return []
    return [(attempt, "lookup", {"order": order}, lookup(order)) for attempt, order in lookups]


def skip_without_tool_steps(integration: type[Integration]) -> None:
    if integration.no_tool_steps is not None:
        pytest.skip(f"{integration.id}: {integration.no_tool_steps}")


def assert_completed(s: Stored, answer: str) -> None:
    assert (s.session.status, s.session.final_answer) == ("completed", answer)
    assert s.session.finished_at is not None
    assert s.session.reward is not None, f"no reward although the judges answer: {s.session.reward_reason}"


# ------------------------------------------------------------------------------------------------- scenarios
def test_accepted_at_once(integration, make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    student = Student(Attempt((1,), SHIPPED))
    agent = integration(supervisor, student)

    assert agent.run(TASK) == SHIPPED

    handed = agent.result()  # what the adapter gives the user about the session: at once, the same session
    assert handed is not None and (handed.session_id, handed.final_answer) == (agent.session_id, SHIPPED)
    s = stored(supervisor, agent.session_id)
    assert (s.session.task, s.session.agent_name, s.session.lane, s.session.lane_source) == (TASK, "order-agent", "paired", "config")
    assert_completed(s, SHIPPED)
    assert s.session.reward == pytest.approx(0.9)  # GOOD_JUDGEMENT from every judge
    assert s.attempts == [(1, SHIPPED, True)]
    assert s.guidance == [] and s.session.retries == 0
    assert s.tool_steps == expected_tool_steps(integration, (1, 1))
    assert s.teacher_purposes == ["answer_validation"]
    assert student.calls_per_attempt == [2]  # the lookup, then the answer


def test_rejected_then_accepted_and_the_guidance_reaches_the_retry(integration, make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    student = Student(Attempt((1,), VAGUE), Attempt((1,), SHIPPED))
    agent = integration(supervisor, student)

    assert agent.run(TASK) == SHIPPED

    assert student.calls_per_attempt == [2, 2]
    assert not any(GUIDANCE in text for text in student.instructions(1))
    assert all(GUIDANCE in text for text in student.instructions(2)), "the guidance must hold for every call of the retry"
    s = stored(supervisor, agent.session_id)
    assert_completed(s, SHIPPED)
    assert s.attempts == [(1, VAGUE, False), (2, SHIPPED, True)]
    assert [a.guidance for a in s.attempt_rows] == [GUIDANCE, None]
    assert s.guidance == [("teacher", "answer", GUIDANCE)]
    assert s.tool_steps == expected_tool_steps(integration, (1, 1), (2, 1))
    assert (s.session.lane, s.session.retries) == ("paired", 1)
    assert s.teacher_purposes == ["answer_validation", "answer_validation"]


def test_rejected_until_out_of_retries_the_last_answer_stands(integration, make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired", "max_retries": 1})
    student = Student(Attempt((1,), VAGUE), Attempt((1,), STILL_VAGUE))  # a third run would fail the student
    agent = integration(supervisor, student)

    assert agent.run(TASK) == STILL_VAGUE

    assert student.calls_per_attempt == [2, 2]
    assert all(GUIDANCE in text for text in student.instructions(2))
    s = stored(supervisor, agent.session_id)
    assert_completed(s, STILL_VAGUE)
    assert s.attempts == [(1, VAGUE, False), (2, STILL_VAGUE, False)]
    assert s.guidance == [("teacher", "answer", GUIDANCE)] * 2
    assert s.tool_steps == expected_tool_steps(integration, (1, 1), (2, 1))
    assert s.session.retries == 1


def test_coach_a_rejected_tool_step_guides_the_next_model_call(integration, make_supervisor) -> None:
    skip_without_tool_steps(integration)
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT_STEP, ACCEPT]}}, supervision={"lane": "coach"})
    student = Student(Attempt((1,), SHIPPED))
    agent = integration(supervisor, student)

    assert agent.run(TASK) == SHIPPED

    before, after = student.instructions(1)
    assert STEP_GUIDANCE not in before and STEP_GUIDANCE in after
    s = stored(supervisor, agent.session_id)
    assert_completed(s, SHIPPED)
    assert s.session.lane == "coach"
    assert s.tool_steps == expected_tool_steps(integration, (1, 1))
    [step_id] = s.tool_step_ids
    assert s.step_verdicts == [(step_id, False)]
    assert [(g.kind, g.content, g.step_id) for g in s.guidance_rows] == [("step", STEP_GUIDANCE, step_id)]
    assert s.attempts == [(1, SHIPPED, True)]
    assert s.teacher_purposes == ["answer_validation", "plan_review", "step_validation"]
    assert [p.kind for p in s.plans] == ["proposed", "reviewed"]


def test_escalate_the_teacher_answers_and_the_student_never_runs(integration, make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"text": TEACHER_ANSWER}}, supervision={"lane": "escalate"})
    student = Student(Attempt((1,), SHIPPED))
    agent = integration(supervisor, student)

    assert agent.run(TASK) == TEACHER_ANSWER

    assert student.seen == [], "the student's model was called in an escalated session"
    s = stored(supervisor, agent.session_id)
    assert_completed(s, TEACHER_ANSWER)
    assert s.session.lane == "escalate"
    assert s.attempts == [] and s.tool_steps == []
    assert s.guidance == [("teacher", "escalation", TEACHER_ANSWER)]
    assert s.teacher_purposes == ["escalation"]


def test_escalate_a_failing_teacher_lets_the_student_run(integration, make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"text": RuntimeError("teacher down")}}, supervision={"lane": "escalate"})
    student = Student(Attempt((1,), SHIPPED))
    agent = integration(supervisor, student)

    assert agent.run(TASK) == SHIPPED

    assert student.calls_per_attempt == [2]
    s = stored(supervisor, agent.session_id)
    assert_completed(s, SHIPPED)
    assert s.session.lane == "escalate"
    [escalation] = [c for c in s.calls if c.role == "teacher" and c.purpose == "escalation"]
    assert escalation.error and "teacher down" in escalation.error
    assert s.guidance == []
    assert s.attempts == [(1, SHIPPED, True)]  # the student's answer is validated like paired
    assert s.tool_steps == expected_tool_steps(integration, (1, 1))
    assert s.teacher_purposes == ["answer_validation", "escalation"]


def test_an_agent_that_raises_is_stored_failed_and_the_error_propagates(integration, make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    student = Student(Attempt((1,), raises="the student's model is down"))
    agent = integration(supervisor, student)

    with pytest.raises(StudentFailure, match="the student's model is down"):
        agent.run(TASK)

    assert student.calls_per_attempt == [2]
    s = stored(supervisor, agent.session_id)
    assert s.session.status == "failed" and s.session.finished_at is not None
    assert "the student's model is down" in s.session.session_metadata["error"]
    assert s.attempts == []
    assert s.tool_steps == expected_tool_steps(integration, (1, 1))


async def test_a_cancelled_run_is_stored_as_cancelled(integration, make_supervisor) -> None:
    if integration.not_cancellable is not None:
        pytest.skip(f"{integration.id}: {integration.not_cancellable}")
    supervisor = make_supervisor(supervision={"lane": "paired"})
    student = Student(Attempt((1,), SHIPPED, hangs=True))
    agent = integration(supervisor, student)

    running = asyncio.create_task(agent.arun(TASK))
    for _ in range(2000):  # until the student's first model call waits (at most ~10 s)
        if student.hanging or running.done():
            break
        await asyncio.sleep(0.005)
    if running.done():
        running.result()  # the run ended before it could be cancelled: show why
    assert student.hanging, "the student's model call never started"
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(10):  # let cleanup the integration scheduled on the loop run
        await asyncio.sleep(0)

    s = await asyncio.to_thread(stored, supervisor, agent.session_id)
    assert (s.session.status, s.session.session_metadata.get("error")) == ("failed", "cancelled")
    assert s.session.finished_at is not None
    assert s.attempts == [] and s.tool_steps == []


def test_the_step_budget_stops_validation_and_says_so(integration, make_supervisor) -> None:
    skip_without_tool_steps(integration)
    supervisor = make_supervisor(supervision={"lane": "coach", "max_validated_steps": 1})
    student = Student(Attempt((1, 2), BOTH))
    agent = integration(supervisor, student)

    assert agent.run(TASK) == BOTH

    s = stored(supervisor, agent.session_id)
    assert_completed(s, BOTH)
    assert s.tool_steps == expected_tool_steps(integration, (1, 1), (1, 2))
    first, _second = s.tool_step_ids
    assert s.step_verdicts == [(first, True)]  # the second step is not validated
    assert "max_validated_steps" in s.session.session_metadata["supervision_stopped"]
    # once supervision stopped, the teacher is not called again: the answer stands unverified
    assert s.teacher_purposes == ["plan_review", "step_validation"]
    assert s.attempts == [(1, BOTH, None)]


def test_each_forced_lane_is_the_stored_lane(integration, make_supervisor) -> None:
    """``supervision.lane`` forces each lane in turn (one store, a supervisor per lane): the stored lane, what the
    teacher was called for and what the student did are each lane's. Compared as a whole, so one run shows every
    lane that differs."""
    seen: dict[str, dict[str, Any]] = {}
    for lane in ("auto", "paired", "coach", "escalate"):
        supervisor = make_supervisor(supervision={"lane": lane})
        student = Student(Attempt((1,), SHIPPED))
        agent = integration(supervisor, student)
        answer = agent.run(TASK)
        s = stored(supervisor, agent.session_id)
        seen[lane] = {"lane": (s.session.lane, s.session.lane_source), "answer": answer, "final_answer": s.session.final_answer,
                      "status": s.session.status, "rewarded": s.session.reward is not None, "teacher": s.teacher_purposes,
                      "attempts": s.attempts, "tool_steps": s.tool_steps, "student_calls": student.calls_per_attempt}

    def ran(lane: str, teacher: list[str], attempts: list[Any]) -> dict[str, Any]:
        return {"lane": (lane, "config"), "answer": SHIPPED, "final_answer": SHIPPED, "status": "completed", "rewarded": True,
                "teacher": teacher, "attempts": attempts, "tool_steps": expected_tool_steps(integration, (1, 1)), "student_calls": [2]}

    step_validation = ["step_validation"] if integration.no_tool_steps is None else []
    assert seen == {
        "auto": ran("auto", [], []),  # no teacher at all, and with no check nothing validates the answer
        "paired": ran("paired", ["answer_validation"], [(1, SHIPPED, True)]),
        "coach": ran("coach", ["answer_validation", "plan_review", *step_validation], [(1, SHIPPED, True)]),
        "escalate": {"lane": ("escalate", "config"), "answer": "teacher's answer", "final_answer": "teacher's answer",
                     "status": "completed", "rewarded": True, "teacher": ["escalation"], "attempts": [], "tool_steps": [],
                     "student_calls": []},
    }


def mentions_the_date(context) -> bool:
    return "May 2" in context.final_answer


def test_per_call_metadata_and_a_failing_check_reject_even_in_auto(integration, make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    student = Student(Attempt((1,), VAGUE), Attempt((1,), SHIPPED))
    agent = integration(supervisor, student)

    answer = agent.run(TASK, metadata={"ticket": 42}, checks=[mentions_the_date], task_family="order-status")

    assert answer == SHIPPED
    assert student.calls_per_attempt == [2, 2]
    assert not any("mentions_the_date" in text for text in student.instructions(1))
    assert all("The check mentions_the_date failed" in text for text in student.instructions(2))
    s = stored(supervisor, agent.session_id)
    assert_completed(s, SHIPPED)
    assert s.session.lane == "auto" and s.teacher_purposes == []  # the check alone rejected: no teacher in auto
    assert s.attempts == [(1, VAGUE, False), (2, SHIPPED, True)]
    [(source, kind, content)] = s.guidance
    assert (source, kind) == ("checks", "answer") and content.startswith("The check mentions_the_date failed")
    assert s.tool_steps == expected_tool_steps(integration, (1, 1), (2, 1))
    assert s.session.session_metadata["ticket"] == 42
    assert s.session.task_family == "order-status"
    assert s.session.checks_passed is True
