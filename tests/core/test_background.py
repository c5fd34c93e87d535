"""Off the caller's path: the background finish, non-blocking async, concurrent judge samples, budgets, retry
semantics and the protocol's decisions; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from atlas_learning.judges import CheckResult
from atlas_learning.store import SessionRecord, TrajectoryEventRecord
from tests.support import HeldJudge

from .conftest import ACCEPT, GOOD_JUDGEMENT

TASK = "Read notes/todo.txt and report how many items it lists"
REJECT = {"accepted": False, "guidance": "Count again.", "reason": "wrong"}


def slow(answer, seconds):
    def respond(messages):
        time.sleep(seconds)
        return answer
    return respond


def protocol_session(supervisor, answers, **begin):
    """An agent driven through the adapter protocol: start, tool steps reported, answers reported until the core
    stops asking for retries, end. ``answers`` gives one answer per attempt."""
    run = supervisor.begin(TASK, agent_name="files", **begin)
    started = run.start()
    if started.answer is not None:
        return run, run.end(started.answer)
    for answer in answers:
        run.tool_call_done(run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt"}, output="- a\n- b"))
        if run.final_answer(answer).action != "retry":
            break
    return run, run.end(answer)


# ------------------------------------------------------------------------------------------ background finish
def test_end_returns_before_judging_and_the_result_arrives(make_supervisor) -> None:
    judge = HeldJudge()  # answers only once released: an end() that waited for judging would hang
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}}, supervision={"lane": "auto"})
    run, pending = protocol_session(supervisor, ["2 items"])
    assert not pending.done() and run.ended and run.finished is None and threading.get_ident() not in judge.threads
    judge.release()
    assert pending.session_id == run.session_id and pending.final_answer == "2 items"
    result = supervisor.session_result(run.session_id)
    assert result.reward == pytest.approx(0.9) and pending.done() and run.finished is result
    assert pending.reward == result.reward and pending.result() is result
    assert supervisor.store.get(SessionRecord, run.session_id).status == "completed"
    with pytest.raises(KeyError, match="no recent session"):
        supervisor.session_result("nope")


async def test_async_sessions_never_block_the_event_loop(make_supervisor) -> None:
    """By order: the store's reads and the judge answer only once a task on the event loop lets them, so a read or
    a judgement made on the loop itself would starve that task (a fallback timer then unblocks them, and the test
    fails on who did)."""
    judge = HeldJudge()
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}}, supervision={"lane": "auto"})
    judge.hold()
    original_read = supervisor.store.read
    read_allowed = threading.Event()
    unblocked_by: list[str] = []

    def held_read(statement):
        if not read_allowed.wait(8.0):  # a held store: abegin must read it in a thread
            unblocked_by.append("timeout")
        return original_read(statement)

    async def let_go_from_the_loop() -> None:
        await asyncio.sleep(0.01)
        unblocked_by.append("loop")
        read_allowed.set()
        judge.release()

    supervisor.store.read = held_read
    releaser = asyncio.create_task(let_go_from_the_loop())
    run = await supervisor.abegin(TASK, agent_name="files")
    await run.astart()
    decision = await run.afinal_answer("2 items")
    pending = await run.aend("2 items")
    result = await pending
    await releaser
    assert unblocked_by == ["loop"]  # the held store read never held the loop
    assert judge.threads and threading.get_ident() not in judge.threads  # nor did judging
    assert decision.action == "accept" and result.reward == pytest.approx(0.9)


def test_judge_samples_run_concurrently(make_supervisor) -> None:
    """By order: each of the three samples waits at a barrier until all three are inside the judge, which only
    samples asked at once can pass (asked one by one, the first would time out at the barrier and fail)."""
    together = threading.Barrier(3, timeout=8.0)
    met: list[bool] = []

    def judge(messages):
        try:
            together.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return GOOD_JUDGEMENT

    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}},
                                 supervision={"lane": "auto"}, judges={"temperatures": [0.0, 0.4, 0.8], "judge_steps": False})
    run, pending = protocol_session(supervisor, ["2 items"])
    result = pending.result()
    assert len(result.reward_breakdown) >= 3 and met == [True, True, True]  # three samples at once


def test_a_full_finish_queue_makes_the_next_end_wait_and_loses_nothing(make_supervisor) -> None:
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": slow(GOOD_JUDGEMENT, 0.2)}},
                                 supervision={"lane": "auto", "finish_workers": 1, "max_pending_finishes": 1})
    pendings = [protocol_session(supervisor, ["2 items"])[1] for _ in range(4)]
    assert supervisor.drain(10)
    assert all(p.done() and p.reward == pytest.approx(0.9) for p in pendings)
    assert len(supervisor.store.list_sessions()) == 4


def test_pending_finishes_are_completed_at_interpreter_exit(store_url, tmp_path) -> None:
    script = textwrap.dedent(f"""
        import time
        from atlas_learning import AtlasConfig, Supervisor
        from tests.support import ScriptedRoles, default_answers, GOOD_JUDGEMENT

        def slow(messages):
            time.sleep(0.5)
            return GOOD_JUDGEMENT

        config = AtlasConfig.load({{"storage": {{"url": {store_url!r}, "spool_dir": {str(tmp_path / 'spool')!r}}},
                                   "supervision": {{"lane": "auto"}}}}, environ={{}})
        answers = default_answers()
        answers["judge_small"]["SessionJudgement"] = slow
        supervisor = Supervisor(config, models=ScriptedRoles(config, answers))
        run = supervisor.begin("exit early", agent_name="exiting")
        print(run.end("done").session_id)
    """)
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=str(_repo_root()))
    assert finished.returncode == 0, finished.stderr
    session_id = finished.stdout.strip().splitlines()[-1]
    from atlas_learning.store import Store

    with Store(store_url) as store:
        stored = store.get(SessionRecord, session_id)
    assert stored is not None and stored.status == "completed" and stored.reward == pytest.approx(0.9)


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


# -------------------------------------------------------------------------------- the next session's history
def test_a_session_that_failed_its_checks_steers_the_next_lane_before_it_is_stored(make_supervisor) -> None:
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": slow(GOOD_JUDGEMENT, 0.5)}},
                                 supervision={"warmup_sessions": 0, "llm_probe": False, "history_wait_s": 0, "max_retries": 0})
    for _ in range(3):  # three good sessions earn auto
        protocol_session(supervisor, ["2 items"], task_family="count")[1].result()
    run, pending = protocol_session(supervisor, ["3 items"], task_family="count", metadata={"expected_answer": "2 items"})
    assert run.lane == "auto" and not pending.done()
    following = supervisor.begin(TASK, agent_name="files", task_family="count")
    assert following.lane != "auto", following.decision.reason  # its judges are still running; its check decided
    following.end("2 items")
    supervisor.drain()


# ------------------------------------------------------------------------------------------------- budgets
def test_the_wall_time_budget_abandons_a_hung_teacher_and_stops_supervision(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": slow(REJECT, 1.0)}},
                                 supervision={"lane": "paired", "max_supervision_seconds": 0.3})
    run = supervisor.begin(TASK, agent_name="files")
    started = time.perf_counter()
    decision = run.final_answer("2 items")
    assert time.perf_counter() - started < 0.8
    assert decision.action == "accept" and decision.verdict.accepted is None  # fails open: the answer stands unverified
    assert "wall-time budget" in run.supervision_stopped
    started = time.perf_counter()
    assert run.validate_answer("2 items").accepted is None and time.perf_counter() - started < 0.1  # refused at once
    result = run.finish("2 items")
    stored = supervisor.store.get(SessionRecord, result.session_id)
    assert "max_supervision_seconds" in stored.session_metadata["supervision_stopped"] and stored.status == "completed"


def test_repeated_identical_calls_and_the_step_cap_end_step_validation(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "coach", "max_identical_calls": 3})
    run = supervisor.begin(TASK, agent_name="files")
    verdicts = [run.tool_call_done(run.record_step(tool_name="read_file", tool_args={"path": "a"}, output="x")) for _ in range(4)]
    assert [v.accepted for v in verdicts] == [True, True, None, None]
    assert "read_file was called 3 times with the same arguments" in run.supervision_stopped
    run.finish("done")
    events = [e.event_type for e in supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == run.session_id)]
    assert events.count("supervision_stopped") == 1

    capped = make_supervisor(supervision={"lane": "coach", "max_validated_steps": 2})
    run = capped.begin(TASK, agent_name="files")
    verdicts = [run.tool_call_done(run.record_step(tool_name="read_file", tool_args={"path": str(i)}, output="x")) for i in range(3)]
    assert [v.accepted for v in verdicts] == [True, True, None] and "max_validated_steps" in run.supervision_stopped


# ------------------------------------------------------------------------------------------ retry semantics
@pytest.mark.parametrize(("retry", "side_effect", "attempts"), [
    ("rerun", True, 2),          # the user chose reruns: the refund runs again
    ("auto", True, 1),           # a side-effecting tool ran: the answer stands
    ("auto", False, 2),          # nothing with side effects: rerun
    ("guidance_only", False, 1),  # never rerun
])
def test_retry_semantics(make_supervisor, retry, side_effect, attempts) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}},
                                 supervision={"lane": "paired", "retry": retry, "side_effect_tools": ["refund"]})
    run = supervisor.begin("Refund order 1234", agent_name="refunds")
    decisions = []
    for attempt in range(3):
        run.record_step(tool_name="refund" if side_effect else "lookup", tool_args={"order": 1234}, output="ok")
        decisions.append(run.final_answer(f"answer {attempt}"))
        if decisions[-1].action != "retry":
            break
    result = run.finish()
    assert result.attempts == attempts and result.verdicts[0].guidance == "Count again."
    if attempts == 1:
        assert decisions[0].action == "stand" and decisions[0].reason and not run.can_retry
        assert result.final_answer == "answer 0"
    else:
        assert [d.action for d in decisions] == ["retry", "accept"] and "Count again." in decisions[0].instructions


def test_an_integration_that_cannot_rerun_gets_stand(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired"})
    run = supervisor.begin(TASK, agent_name="files")
    decision = run.final_answer("2 items", can_rerun=False)
    assert decision.action == "stand" and "cannot run the agent again" in decision.reason
    assert run.retries == 0 and run.guidance == [] and not run.can_retry
    run.finish()


# --------------------------------------------------------------------------------------- the protocol itself
def test_start_reviews_an_empty_plan_in_coach_and_answers_in_escalate(make_supervisor) -> None:
    review = {"approved": True, "steps": [], "concerns": ["the file may not exist"]}
    coach = make_supervisor({"teacher": {"PlanReview": review}}, supervision={"lane": "coach"})
    run = coach.begin(TASK, agent_name="files")
    assert run.start().answer is None and "the file may not exist" in run.instructions
    assert run.plan_made(["read it"]) is not None  # coach: the agent's own plan is reviewed too
    run.finish("3")

    paired = make_supervisor(supervision={"lane": "paired"})
    run = paired.begin(TASK, agent_name="files")
    assert run.start().answer is None and run.plan_made(["read it"]) is None  # recorded, not reviewed
    run.finish("3")

    escalate = make_supervisor(supervision={"lane": "escalate"})
    run = escalate.begin(TASK, agent_name="files")
    assert run.start().answer == "teacher's answer"
    run.finish("teacher's answer")
    run = escalate.begin(TASK, agent_name="files")
    assert run.start(can_take_answer=False).answer is None and "supervision_level" in run.metadata
    run.finish("3")

    blank = make_supervisor({"teacher": {"text": "   "}}, supervision={"lane": "escalate"})
    run = blank.begin(TASK, agent_name="files")
    assert run.start().answer is None  # an empty teacher answer is no answer: the student runs
    result = run.finish("3")
    assert result.final_answer == "3"
    assert blank.drain(10)
    [event] = blank.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == run.session_id,
                               TrajectoryEventRecord.event_type == "escalated")
    assert event.payload["error"] == "the teacher gave an empty answer"


@pytest.mark.parametrize(("teacher_says", "checks", "why"), [
    ("{[ ]} ...", (), "has no word in it"),
    ("I cannot help with that.", (lambda context: CheckResult(1.0 if "3" in context.final_answer else 0.0, "the answer must say 3"),),
     "failed its checks: the answer must say 3"),
])
def test_an_escalated_answer_that_is_garbage_or_fails_its_checks_is_not_delivered(make_supervisor, teacher_says, checks, why) -> None:
    supervisor = make_supervisor({"teacher": {"text": teacher_says}}, supervision={"lane": "escalate"}, checks=checks)
    run = supervisor.begin(TASK, agent_name="files")
    assert run.start().answer is None  # the student runs instead
    assert run.finish("3 files").final_answer == "3 files"
    assert supervisor.drain(10)
    [event] = supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == run.session_id,
                                    TrajectoryEventRecord.event_type == "escalated")
    assert why in event.payload["error"]


def test_guidance_holds_for_the_whole_retry_and_clears_on_the_next_verdict(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    run = supervisor.begin(TASK, agent_name="files")
    assert run.final_answer("2 items").action == "retry"
    first_call, second_call = run.instructions, run.instructions  # every model call of the retry sees it
    assert "Count again." in first_call and first_call == second_call and run.guidance == ["Count again."]
    assert run.final_answer("3 items").action == "accept" and run.guidance == [] and "Count again." not in run.instructions
    run.finish()


# ------------------------------------------------------------------------------- races and hangs (found in review)
def test_a_subscriber_of_session_finished_may_read_the_result(make_supervisor) -> None:
    import concurrent.futures

    supervisor = make_supervisor(supervision={"lane": "auto", "finish_workers": 1})
    got: list = []

    def on_event(event) -> None:
        if event.type == "session_finished":
            got.append(supervisor.session_result(event.session_id, timeout=2).reward)
        elif event.type == "reward":  # before the result exists: a clear error, not a wait on itself
            try:
                supervisor.session_result(event.session_id, timeout=2)
            except (RuntimeError, concurrent.futures.TimeoutError) as exc:
                got.append(type(exc).__name__)

    supervisor.events.subscribe(on_event)
    run = supervisor.begin(TASK, agent_name="files")
    run.end("2").result(10)
    assert got == ["RuntimeError", pytest.approx(0.9)]


def test_hung_teacher_calls_do_not_starve_later_sessions(make_supervisor) -> None:
    import threading

    calls = {"n": 0}
    lock = threading.Lock()

    def verdict(messages):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n <= 9:
            time.sleep(2)  # the teacher hangs on these
        return ACCEPT

    supervisor = make_supervisor({"teacher": {"Verdict": verdict}}, supervision={"lane": "paired", "max_supervision_seconds": 0.3})
    for _ in range(9):
        run = supervisor.begin(TASK, agent_name="files")
        run.final_answer("2")
        run.end("2")
    run = supervisor.begin(TASK, agent_name="files")
    assert run.final_answer("2").verdict.accepted is True  # its own call starts at once and answers
    run.end("2")
    supervisor.drain(10)


def test_close_racing_an_end_still_finishes_the_session(make_supervisor) -> None:
    import threading

    supervisor = make_supervisor(supervision={"lane": "auto"})
    run = supervisor.begin(TASK, agent_name="files")
    finisher = supervisor.finisher
    original_submit = finisher.submit
    closing = threading.Thread(target=finisher.close, args=(5,))

    def submit_while_closing(job, future=None):  # close() runs between end()'s claim and its hand-off
        closing.start()
        closing.join(5)
        return original_submit(job, future)

    finisher.submit = submit_while_closing
    pending = run.end("2")
    assert pending.result(5).final_answer == "2"  # run in the caller's thread once the finisher is closed
    assert supervisor.store.get(SessionRecord, run.session_id).status == "completed"


def test_pending_sessions_are_never_evicted_from_the_recent_results(make_supervisor, monkeypatch) -> None:
    import atlas_learning.supervisor as core

    monkeypatch.setattr(core, "_RECENT_RESULTS", 2)
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": slow(GOOD_JUDGEMENT, 0.3)}},
                                 supervision={"lane": "auto", "finish_workers": 1})
    pendings = [supervisor.begin(TASK, agent_name="files").end("2") for _ in range(4)]
    for pending in pendings:  # all still known while pending, whatever the limit
        assert supervisor.session_result(pending.session_id, timeout=10).reward == pytest.approx(0.9)



def test_the_oldest_finished_results_go_first_and_the_limit_holds(make_supervisor, monkeypatch) -> None:
    import atlas_learning.supervisor as core

    monkeypatch.setattr(core, "_RECENT_RESULTS", 3)
    supervisor = make_supervisor(supervision={"lane": "auto"})
    ids = []
    for _ in range(6):
        pending = supervisor.begin(TASK, agent_name="files").end("2")
        pending.result(10)
        ids.append(pending.session_id)
    assert list(supervisor._results) == ids[-3:]  # noqa: SLF001 - the newest three, in order
    with pytest.raises(KeyError):
        supervisor.session_result(ids[0])

def test_no_recorder_write_is_left_queued(tmp_path) -> None:
    import collections
    import threading

    from atlas_learning.recorder import Recorder
    from atlas_learning.store import Store

    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        recorder = Recorder(store, spool_dir=tmp_path / "spool")

        class SlowDeque(collections.deque):  # widens the window between the append and the wake-up
            def append(self, item):
                super().append(item)
                time.sleep(0.01)

        recorder._queue = SlowDeque()
        both = threading.Barrier(2)

        def write(i: int) -> None:
            both.wait()
            recorder.insert(SessionRecord, id=f"s{i}", learning_key="k", agent_name="a", task="t")

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.5)  # no flush: the writer must have woken by itself
        assert len(recorder._queue) == 0 and len(store.list_sessions()) == 2
        recorder.close()
        recorder.insert(SessionRecord, id="late", learning_key="k", agent_name="a", task="t")  # after close: written at once
        assert {s.id for s in store.list_sessions()} == {"s0", "s1", "late"}


def test_the_rejections_of_parallel_tool_calls_all_reach_the_next_model_call(make_supervisor) -> None:
    refusal = {"accepted": False, "guidance": "Do not refund before checking the order status.", "reason": "unsafe"}
    supervisor = make_supervisor({"teacher": {"Verdict": [refusal, ACCEPT]}}, supervision={"lane": "coach"})
    run = supervisor.begin("Refund order 1234", agent_name="refunds")
    run.start()
    first = run.record_step(tool_name="refund", tool_args={"order": 1234}, output="ok")
    second = run.record_step(tool_name="lookup", tool_args={"order": 1234}, output="shipped")
    assert run.tool_call_done(first).accepted is False and run.tool_call_done(second).accepted is True
    assert "Do not refund" in run.instructions
    run.record_model_call(role="student", model="m")
    assert "Do not refund" not in run.instructions
    run.finish("done")


async def test_aend_on_a_full_finish_queue_waits_off_the_event_loop(make_supervisor) -> None:
    """Tested by order, not by a clock: the judge answers only when a task on the event loop releases it, so an
    ``aend`` that waited for room in the queue on the loop itself would starve that task and hang (the fallback
    timer then releases the judge, and the test fails on who released it)."""
    judge = HeldJudge()
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}},
                                 supervision={"lane": "auto", "finish_workers": 1, "max_pending_finishes": 1})
    judge.hold()
    released_by: list[str] = []
    waiting = asyncio.Event()

    async def release_from_the_loop() -> None:
        await waiting.wait()
        for _ in range(3):  # the loop keeps turning while aend waits for room
            await asyncio.sleep(0.01)
        released_by.append("loop")
        judge.release()

    def fallback() -> None:
        if not released_by:
            released_by.append("fallback timer")
            judge.release()

    timer = threading.Timer(8.0, fallback)
    timer.start()
    releaser = asyncio.create_task(release_from_the_loop())
    try:
        pendings = []
        for index in range(4):  # the worker holds the first, the queue the second: the third waits for room
            run = await supervisor.abegin(TASK, agent_name="files")
            if index == 2:
                waiting.set()
            pendings.append(await run.aend("2"))
        results = [await pending for pending in pendings]
    finally:
        timer.cancel()
        judge.release()
        await releaser
    assert released_by[0] == "loop"  # the loop ran while aend waited for room
    assert all(r.reward == pytest.approx(0.9) for r in results)


def test_the_history_cache_takes_this_process_s_stored_sessions_without_a_read(make_supervisor, monkeypatch) -> None:
    from atlas_learning import probe

    supervisor = make_supervisor(supervision={"history_cache_s": 60})
    reads = []
    real = probe._read_history
    monkeypatch.setattr(probe, "_read_history", lambda *a: reads.append(a) or real(*a))

    def history():
        return probe.load_history(supervisor.store, "files", 10, None, (), supervisor.history_cache)

    for answer in ("3 items", "4 items"):
        supervisor.begin(TASK, agent_name="files", learning_key="files").finish(answer)
    first = history()
    reads.clear()
    supervisor.begin(TASK, agent_name="files", learning_key="files").finish("5 items")  # its family's slot is cached too
    assert supervisor.drain(10)
    cached = history()
    assert reads == []  # the third session came into both cached lists as it was stored: no read
    assert len(cached.rewards) == len(first.rewards) + 1
    fresh = probe.load_history(supervisor.store, "files", 10)  # what a read of the store says now
    assert (cached.rewards, cached.lanes, cached.interventions) == (fresh.rewards, fresh.lanes, fresh.interventions)


def test_rows_completed_in_the_writer_are_stored_as_the_caller_s_would_be(store_url, tmp_path) -> None:
    """insert_soon / insert_later leave redaction (soon: at once) and the row's completion to the writer: what
    lands is redacted, JSON-safe and cut to its columns, as a row built in the caller's thread."""
    import datetime

    from atlas_learning.recorder import Recorder
    from atlas_learning.store import StepRecord, Store

    secret = "sk-proj-" + "a" * 32
    with Store(store_url) as store:
        recorder = Recorder(store, spool_dir=tmp_path / "spool")
        recorder.insert(SessionRecord, id="s1", learning_key="k", agent_name="a", task="t")
        kept = recorder.insert_soon(StepRecord, session_id="s1", tool_name="login", name="n" * 400,
                                    tool_args={"token": "hunter22", "note": f"key {secret}", "when": datetime.date(2026, 12, 2)})
        assert kept["id"] and kept["tool_args"]["token"] == "[REDACTED]" and secret not in kept["tool_args"]["note"]
        recorder.insert_later(TrajectoryEventRecord, session_id="s1", seq=0, event_type="step", payload={"error": f"bad {secret}"})
        with pytest.raises(ValueError, match="no column"):
            recorder.insert_later(TrajectoryEventRecord, session_id="s1", nonsense=1)
        assert recorder.flush()
        [step] = store.rows(StepRecord, StepRecord.session_id == "s1")
        assert step.id == kept["id"] and len(step.name) == 256 and step.status == "ok"
        assert step.tool_args == {"token": "[REDACTED]", "note": "key [REDACTED]", "when": "2026-12-02"}
        [event] = store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == "s1")
        assert event.payload == {"error": "bad [REDACTED]"}
        recorder.close()


def test_a_reviewer_s_decision_made_while_the_session_ran_is_never_overwritten(make_supervisor) -> None:
    from atlas_learning.store import ReviewLogRecord

    supervisor = make_supervisor(review={"auto_approve_min_reward": 0.5}, supervision={"lane": "auto"}, drift={"enabled": False})
    quarantined = supervisor.begin(TASK, agent_name="files")
    assert supervisor.recorder.flush()
    with supervisor.store.transaction() as tx:  # a reviewer quarantines it while it runs
        record = tx.get(SessionRecord, quarantined.session_id)
        record.review_status = "quarantined"
        tx.add(record)
    quarantined.finish("3 items")
    approved = supervisor.begin(TASK, agent_name="files")
    approved.finish("3 items")
    assert supervisor.drain(10)
    assert supervisor.store.get(SessionRecord, quarantined.session_id).review_status == "quarantined"
    assert supervisor.store.get(SessionRecord, approved.session_id).review_status == "approved"  # nobody decided
    logs = supervisor.store.rows(ReviewLogRecord)
    assert [(log.session_id, log.to_status) for log in logs] == [(approved.session_id, "approved")]  # logged where it applied


def test_only_a_completed_session_with_a_reward_is_auto_approved(make_supervisor) -> None:
    supervisor = make_supervisor(review={"auto_approve_min_reward": 0.5}, supervision={"lane": "auto"}, drift={"enabled": False})
    run = supervisor.begin(TASK, agent_name="files")
    run.failed(RuntimeError("disk on fire"))
    assert supervisor.drain(10)
    stored = supervisor.store.get(SessionRecord, run.session_id)
    assert stored.status == "failed" and stored.review_status == "pending"


def test_a_conditional_update_survives_the_spool(tmp_path) -> None:
    from atlas_learning.recorder import TableSpec, _decode_op, _Update
    from atlas_learning.store import ReviewLogRecord

    spec, log = TableSpec.of(SessionRecord), TableSpec.of(ReviewLogRecord)
    row = log.row({"session_id": "s1", "from_status": "pending", "to_status": "approved", "reviewer": "atlas", "note": "ok"})
    write = _Update(spec, "s1", {"review_status": "approved"}, {"review_status": "pending"}, {"table": log.name, "row": row})
    back = _decode_op(json.loads(json.dumps(write.as_json(), default=str)))
    assert (back.key, back.fields, back.only_if) == ("s1", {"review_status": "approved"}, {"review_status": "pending"})
    assert back.then["table"] == log.name and back.then["row"]["created_at"] == row["created_at"]


def test_a_reviewer_s_decision_made_while_the_finish_was_spooled_survives_the_replay(make_supervisor, store_url) -> None:
    """The replay-after-review race: a session's finish (its reward and its conditional auto-approval) is held in
    the journal while the store refuses writes; meanwhile a reviewer, on another connection, quarantines the
    session; the next process replays the journal. The replayed finish completes the session but does not
    overwrite the reviewer's decision, and logs no approval."""
    from sqlalchemy.exc import OperationalError

    from atlas_learning.store import ReviewLogRecord, Store

    config = {"review": {"auto_approve_min_reward": 0.5}, "supervision": {"lane": "auto"}, "drift": {"enabled": False}}
    first = make_supervisor(**config)
    run = first.begin(TASK, agent_name="files")
    assert first.recorder.flush()  # the running session is stored, pending

    def refuse(*args, **kwargs):
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    first.recorder._commit = refuse  # noqa: SLF001 - the store refuses every write from now on
    result = run.finish("3 items")
    assert result.reward == pytest.approx(0.9)
    assert first.recorder.flush() and first.recorder.degraded  # the finish went to the journal
    with Store(store_url) as reviewer:  # a reviewer on another connection
        with reviewer.transaction() as tx:
            record = tx.get(SessionRecord, run.session_id)
            assert record.status == "running" and record.review_status == "pending"
            record.review_status = "quarantined"
            tx.add(record)
    first.close()  # still refused: the journal stays for the next process

    second = make_supervisor(**config)  # its start replays the journal
    assert second.drain(10) and second.recorder.flush()
    stored = second.store.get(SessionRecord, run.session_id)
    assert stored.status == "completed" and stored.reward == pytest.approx(0.9)  # the finish landed
    assert stored.review_status == "quarantined"  # and the reviewer's decision stands
    assert second.store.rows(ReviewLogRecord, ReviewLogRecord.session_id == run.session_id) == []  # no approval logged
