"""The supervision loop on scripted models, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from atlas_learning.errors import ProviderError
from atlas_learning.judges import CheckResult
from atlas_learning.store import (
    AttemptRecord,
    GuidanceRecord,
    ModelCallRecord,
    PlanRecord,
    PlaybookEntryRecord,
    RewardRecord,
    SessionRecord,
    StepRecord,
    TrajectoryEventRecord,
)

from .conftest import ACCEPT, GOOD_JUDGEMENT, POOR_JUDGEMENT

TASK = "Read notes/todo.txt and report how many items it lists"


def one_session(supervisor, answer="3 items", task=TASK, **begin):
    """An agent that reads a file and answers, driven the way an adapter drives the core."""
    run = supervisor.begin(task, agent_name="files", **begin)
    if run.lane == "coach":
        run.review_plan(["read notes/todo.txt", "count the items"])
    step = run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt"}, output="- a\n- b\n- c")
    if run.lane == "coach":
        run.validate_step(step)
    if run.lane in ("paired", "coach"):
        run.validate_answer(answer)
    return run.finish(answer)


def test_lanes_follow_history_coach_then_paired_then_auto_then_back(make_supervisor) -> None:
    judgements = [GOOD_JUDGEMENT] * 6 + [POOR_JUDGEMENT] * 3
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": [j for j in judgements for _ in range(3)]}},
                                 supervision={"llm_probe": False})
    lanes = [one_session(supervisor).lane for _ in range(9)]
    # 2 warm-up sessions coached; paired while a streak of 3 good rewards builds; then auto; a drop moves it back
    assert lanes[:2] == ["coach", "coach"]
    assert lanes[2] == "paired"
    assert lanes[5:7] == ["auto", "auto"]
    assert lanes[7] == "paired"
    stored = supervisor.store.rows(SessionRecord, SessionRecord.learning_key == "files", order_by=SessionRecord.started_at)
    assert [s.lane for s in stored] == lanes
    assert all(s.lane_reason and s.lane_source == "prior" and s.lane_confidence is not None for s in stored)


def test_llm_probe_decides_when_the_prior_is_unsure(make_supervisor) -> None:
    supervisor = make_supervisor({"probe": {"ProbeAnswer": {"lane": "coach", "confidence": 0.8, "reason": "tricky task"}}},
                                 supervision={"warmup_sessions": 0, "probe_below_confidence": 0.95})
    run = supervisor.begin(TASK)
    assert (run.lane, run.decision.source) == ("coach", "probe")
    assert "tricky task" in run.decision.reason
    run.finish("x")


@pytest.mark.parametrize("failure", [ProviderError("probe down"), "not json at all"])
def test_probe_failure_fails_open_to_paired(make_supervisor, failure) -> None:
    supervisor = make_supervisor({"probe": {"ProbeAnswer": failure}}, supervision={"warmup_sessions": 0, "probe_below_confidence": 0.95})
    run = supervisor.begin(TASK)
    assert (run.lane, run.decision.source) == ("paired", "fallback")
    assert "probe failed" in run.decision.reason
    result = run.finish("x")
    calls = supervisor.store.rows(ModelCallRecord, ModelCallRecord.session_id == result.session_id, ModelCallRecord.role == "probe")
    assert calls and calls[0].error


def test_forced_lane_from_config(make_supervisor) -> None:
    run = make_supervisor(supervision={"lane": "auto"}).begin(TASK)
    assert (run.lane, run.decision.source) == ("auto", "config")
    run.finish("x")


def test_rejection_retry_with_guidance_and_the_retry_is_validated(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Count the lines that start with '-'.", "reason": "wrong count"}, ACCEPT]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired"})
    seen_instructions = []

    def attempt(instructions: str) -> str:
        seen_instructions.append(instructions)
        return "2 items" if len(seen_instructions) == 1 else "3 items"

    result = supervisor.supervise(TASK, attempt)
    assert result.attempts == 2 and result.accepted is True
    assert "Count the lines that start with '-'." in seen_instructions[1]
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("2 items", False), ("3 items", True)]
    guidance = supervisor.store.rows(GuidanceRecord, GuidanceRecord.session_id == result.session_id)
    assert [g.content for g in guidance] == ["Count the lines that start with '-'."]
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert (session.retries, session.interventions, session.final_answer) == (1, 1, "3 items")


def test_retries_stop_at_the_budget_and_the_last_attempt_is_checked(make_supervisor) -> None:
    reject = {"accepted": False, "guidance": "no", "reason": "wrong"}
    supervisor = make_supervisor({"teacher": {"Verdict": reject}}, supervision={"lane": "paired", "max_retries": 2})
    result = supervisor.supervise(TASK, lambda _: "wrong")
    assert result.attempts == 3 and result.accepted is False
    assert [v.accepted for v in result.verdicts] == [False, False, False]


def test_coach_reviews_the_plan_and_validates_steps(make_supervisor) -> None:
    review = {"approved": False, "steps": ["list notes/", "read notes/todo.txt", "count '-' lines"], "concerns": ["the file may not exist"]}
    step_verdict = {"accepted": False, "guidance": "List the folder first.", "reason": "blind read"}
    supervisor = make_supervisor({"teacher": {"PlanReview": review, "Verdict": [step_verdict, ACCEPT]}}, supervision={"lane": "coach"})
    run = supervisor.begin(TASK)
    run.review_plan(["read the file"])
    assert "count '-' lines" in run.instructions and "the file may not exist" in run.instructions
    verdict = run.validate_step(run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt"}, output="- a"))
    assert verdict.accepted is False and "List the folder first." in run.instructions
    assert run.guidance == ["List the folder first."] and "List the folder first." in run.instructions
    assert run.validate_step(run.record_step(tool_name="list_dir", tool_args={"path": "notes"}, output="todo.txt")).accepted is True
    assert run.guidance == ["List the folder first."]  # an accepted step of the same turn does not hide it
    run.record_model_call(role="student", model="m")  # the model call that saw it
    assert run.guidance == [] and "List the folder first." not in run.instructions
    result = run.finish("1 item")
    plans = supervisor.store.rows(PlanRecord, PlanRecord.session_id == result.session_id, order_by=PlanRecord.id)
    assert [p.kind for p in plans] == ["proposed", "reviewed"] and plans[1].concerns == ["the file may not exist"]
    step_guidance = supervisor.store.rows(GuidanceRecord, GuidanceRecord.kind == "step")
    assert step_guidance[0].step_id == verdict.step_id


def test_escalation_to_the_teacher_and_to_a_human(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate"})
    result = supervisor.supervise(TASK, lambda _: pytest.fail("the student must not run"))
    assert result.final_answer == "teacher's answer"
    asked = []
    human = make_supervisor(supervision={"lane": "escalate", "escalation": "human"}, human=lambda task, ctx: asked.append(ctx) or "a person's answer")
    result = human.supervise(TASK, lambda _: pytest.fail("the student must not run"))
    assert result.final_answer == "a person's answer" and asked[0]["session_id"] == result.session_id


def test_judge_disagreement_escalates_to_the_large_judge(make_supervisor) -> None:
    low = {**GOOD_JUDGEMENT, "outcome": 0.1, "process": 0.1, "efficiency": 0.1}
    large = {"outcome": 0.5, "process": 0.5, "efficiency": 0.5, "confidence": 0.9, "rationale": "arbitrated"}
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": [GOOD_JUDGEMENT, low, GOOD_JUDGEMENT]},
                                  "judge_large": {"SessionJudgement": large}}, supervision={"lane": "auto"})
    result = one_session(supervisor)
    assert result.reward == pytest.approx(0.5)
    reward = supervisor.store.rows(RewardRecord, RewardRecord.session_id == result.session_id, RewardRecord.scope == "session")[0]
    assert reward.escalated and len(reward.samples) == 4
    assert [s["judge"] for s in reward.samples] == ["small", "small", "small", "large"]
    assert "large judge arbitrated" in reward.reason


def test_judge_outage_gives_no_reward_with_a_reason(make_supervisor) -> None:
    down = ProviderError("judge service unavailable")
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": down, "StepJudgements": down},
                                  "judge_large": {"SessionJudgement": down}}, supervision={"lane": "auto"})
    result = one_session(supervisor)
    assert result.reward is None and result.reward_status == "no_reward"
    assert "no judge could score" in result.reward_reason and "judge service unavailable" in result.reward_reason
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.reward is None and session.status == "completed"


def test_verifiable_checks_combine_with_the_judges(make_supervisor) -> None:
    def counts_three(context) -> CheckResult:
        return CheckResult(1.0 if "3" in context.final_answer else 0.0, "answer says 3")

    supervisor = make_supervisor(judges={"checks_weight": 0.5}, supervision={"lane": "auto"}, checks=[counts_three])
    result = one_session(supervisor, answer="2 items")
    assert result.reward == pytest.approx(0.5 * 0.0 + 0.5 * 0.9)
    assert result.reward_breakdown["checks"] == {"counts_three": 0.0}


@pytest.mark.parametrize("role,title", [("teacher", "Verdict"), ("teacher", "PlanReview"), ("judge_small", "SessionJudgement"),
                                        ("judge_small", "StepJudgements"), ("synthesizer", "PlaybookChanges")])
def test_malformed_output_never_crashes_a_session_and_is_recorded(make_supervisor, role, title) -> None:
    supervisor = make_supervisor({role: {title: "{not valid"}}, supervision={"lane": "coach"})
    result = one_session(supervisor)
    assert result.session_id
    calls = supervisor.store.rows(ModelCallRecord, ModelCallRecord.session_id == result.session_id, ModelCallRecord.role == role)
    failed = [c for c in calls if c.error and "after one repair attempt" in c.error]
    assert failed and failed[0].output_tokens > 0  # what the failed call consumed is still counted
    assert supervisor.store.get(SessionRecord, result.session_id).status == "completed"


def test_lessons_are_learned_injected_and_measured(make_supervisor) -> None:
    add = {"changes": [{"op": "add", "lesson": "Count only lines that start with a dash.", "applies_when": "counting list items"}]}
    supervisor = make_supervisor({"synthesizer": {"PlaybookChanges": [add, {"changes": []}]}}, supervision={"lane": "auto"})
    first = one_session(supervisor)
    assert [c.op for c in first.lessons_learned] == ["add"]
    run = supervisor.begin("How many items does notes/todo.txt list?", agent_name="files")
    assert "Count only lines that start with a dash." in run.instructions
    second = run.finish("3")
    assert second.lessons_used == [first.lessons_learned[0].entry_id]
    entry = supervisor.store.get(PlaybookEntryRecord, second.lessons_used[0])
    assert entry.uses == 1 and entry.reward_count_with == 1 and entry.provenance == [first.session_id]


def test_two_concurrent_sessions_keep_both_registry_updates(make_supervisor) -> None:
    lessons = iter(["Always list the folder before reading a file.", "Quote the exact line you counted from."])
    lock = threading.Lock()

    def synthesize(_messages):
        with lock:
            return {"changes": [{"op": "add", "lesson": next(lessons)}]}

    supervisor = make_supervisor({"synthesizer": {"PlaybookChanges": synthesize}}, supervision={"lane": "auto"})
    barrier = threading.Barrier(2)
    results = []

    def worker() -> None:
        run = supervisor.begin(TASK, agent_name="files")
        barrier.wait()
        results.append(run.finish("3 items"))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lessons_kept = sorted(e.lesson for e in supervisor.playbook.live_entries("files"))
    assert lessons_kept == ["Always list the folder before reading a file.", "Quote the exact line you counted from."]
    assert supervisor.playbook.version("files") == 2
    assert sorted(h.registry_version for h in supervisor.playbook.history("files")) == [1, 2]


def test_drift_alert_holds_the_session_for_review(make_supervisor) -> None:
    judgements = [GOOD_JUDGEMENT] * 18 + [POOR_JUDGEMENT] * 3
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judgements}}, supervision={"lane": "auto"},
                                 review={"auto_approve_min_reward": 0.8})
    results = [one_session(supervisor) for _ in range(7)]
    assert [r.review_status for r in results[:6]] == ["approved"] * 6
    outlier = results[6]
    assert outlier.drift_alert and outlier.review_status == "pending"
    assert "z-score" in outlier.drift_reason
    stored = supervisor.store.get(SessionRecord, outlier.session_id)
    assert stored.drift_alert and stored.review_status == "pending" and "z-score" in stored.review_note


def test_store_outage_mid_session_loses_nothing_after_the_flush(make_supervisor, store_url) -> None:
    from sqlalchemy import create_engine

    supervisor = make_supervisor(supervision={"lane": "coach"})
    run = supervisor.begin(TASK)
    run.record_step(tool_name="list_files", tool_args={"path": "notes"}, output="todo.txt")
    supervisor.recorder.flush()
    healthy = supervisor.store.engine
    supervisor.store.engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/down", connect_args={"connect_timeout": 1})
    try:
        step = run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt"}, output="- a\n- b\n- c")
        run.validate_step(step)
        run.validate_answer("3 items")
        result = run.finish("3 items")  # the user's run does not fail
        assert supervisor.recorder.degraded
        assert list((supervisor.config.storage.spool_dir and __import__("pathlib").Path(supervisor.config.storage.spool_dir)).glob("spool-*.jsonl"))
    finally:
        supervisor.store.engine = healthy
    supervisor.recorder.close()  # the process ends with the store still believed down: the spool stays on disk
    restarted = make_supervisor(supervision={"lane": "coach"})  # the next start replays the spool
    session = restarted.store.get(SessionRecord, result.session_id)
    assert session.status == "completed" and session.final_answer == "3 items" and session.reward is not None
    steps = restarted.store.rows(StepRecord, StepRecord.session_id == result.session_id, order_by=StepRecord.step_index)
    assert [s.tool_name for s in steps] == ["list_files", "read_file"]
    assert len(restarted.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id)) == 1
    events = restarted.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == result.session_id)
    assert sorted(e.seq for e in events) == list(range(len(events))) and events


def test_planted_secrets_never_reach_the_database(make_supervisor) -> None:
    secrets = ["sk-proj-PLANTEDsecretPLANTEDsecret1234", "sk-ant-api03-PLANTEDanthropicSECRET99", "PLANTEDbearerTOKEN0123456789"]
    supervisor = make_supervisor(supervision={"lane": "paired"})
    run = supervisor.begin(f"Call the API with key {secrets[0]}", agent_name="files", metadata={"api_key": "PLANTEDmetaSECRET"})
    run.record_step(tool_name="http_get", tool_args={"url": "https://x", "headers": {"Authorization": f"Bearer {secrets[2]}"}},
                    output=f"echo: {secrets[1]}")
    run.validate_answer(f"used {secrets[0]}")
    run.finish(f"done with {secrets[0]}")
    with supervisor.store.engine.connect() as connection:
        dump = []
        for table in ("sessions", "steps", "attempts", "guidance", "rewards", "trajectory_events", "model_calls"):
            dump += [repr(tuple(row)) for row in connection.execute(text(f"SELECT * FROM {table}"))]
    everything = "\n".join(dump)
    for secret in [*secrets, "PLANTEDmetaSECRET"]:
        assert secret not in everything
    assert "[REDACTED]" in everything


def test_events_stream_in_order(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    seen = []
    supervisor.events.subscribe(lambda event: seen.append(event.type))
    supervisor.events.subscribe(lambda event: 1 / 0)  # a broken subscriber is skipped
    one_session(supervisor)
    assert seen[:2] == ["session_started", "lane_chosen"]
    assert seen.index("step") < seen.index("verdict") < seen.index("reward") < seen.index("session_finished")


async def test_async_twins(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "say 3", "reason": "no"}, ACCEPT]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired"})

    async def attempt(instructions: str) -> str:
        return "3 items" if "say 3" in instructions else "many"

    result = await supervisor.asupervise(TASK, attempt)
    assert (result.attempts, result.accepted, result.final_answer) == (2, True, "3 items")
    assert supervisor.store.get(SessionRecord, result.session_id).status == "completed"


def test_usage_is_recorded_by_role(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    run = supervisor.begin(TASK)
    run.record_model_call(provider="openai", model="gpt-4.1-mini", input_tokens=100, output_tokens=20, cost_usd=0.0001)
    run.validate_answer("3")
    result = run.finish("3")
    assert result.usage_by_role["student"]["input_tokens"] == 100
    assert {"teacher", "judge_small", "synthesizer"} <= result.usage_by_role.keys()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.usage_by_role == result.usage_by_role and session.total_tokens == result.total_tokens > 120
