"""Regression tests from a review of the core: odd inputs, poisoned spools, races and leaks never break a run."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import text

from atlas_learning.judges import CheckResult
from atlas_learning.store import PlaybookEntryRecord, RewardRecord, SessionRecord, StepRecord

from .conftest import GOOD_JUDGEMENT, POOR_JUDGEMENT

TASK = "List the reports and read the newest"


def test_values_no_column_takes_as_is_are_stored_and_the_writer_survives(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    run = supervisor.begin(TASK, metadata={"when": datetime(2025, 1, 1), "tags": {"a"}})
    odd_name = os.fsdecode(b"report-\xff.txt")  # a surrogate-escaped file name, as os.listdir returns it
    run.record_step(tool_name="list_files", tool_args={"seen": {"a", "b"}, "path": Path("reports"), "raw": b"\x00\x01", "amount": Decimal("1.5")},
                    output=f"{odd_name}\n\x00binary")
    run.record_step(tool_name="t" * 400, tool_args=("positional", 1), started_at=datetime(2025, 1, 1), input_tokens=None)
    started = time.perf_counter()
    result = run.finish("read it")
    assert time.perf_counter() - started < 5 and supervisor.recorder._thread.is_alive()
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == result.session_id, order_by=StepRecord.step_index)
    assert len(steps) == 2 and "\x00" not in steps[0].output and steps[0].tool_args["path"] == "reports"
    assert len(steps[1].tool_name) == 256 and steps[1].tool_args == ["positional", 1]
    assert supervisor.store.get(SessionRecord, result.session_id).status == "completed"
    assert not list(Path(supervisor.config.storage.spool_dir).glob("rejected-*"))


def test_a_poisoned_spool_does_not_stop_the_next_start(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spool = Path(supervisor.config.storage.spool_dir)
    spool.mkdir(parents=True, exist_ok=True)
    good = {"op": "insert", "table": "sessions", "row": {"id": "a" * 32, "learning_key": "k", "task": "spooled", "review_status": "pending",
                                                          "status": "completed", "usage_by_role": {}, "session_metadata": {}, "lessons_used": [],
                                                          "started_at": "2025-01-01T00:00:00+00:00", "total_tokens": 0, "drift_alert": False,
                                                          "interventions": 0, "retries": 0, "agent_name": ""}}
    orphan = {"op": "insert", "table": "steps", "row": {"id": "b" * 32, "session_id": "f" * 32, "name": "orphan"}}
    (spool / "spool-1-1-aaaaaa.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(orphan) + '\n{"op": "insert", "tab')
    restarted = make_supervisor(supervision={"lane": "auto"})
    assert restarted.store_problem is None
    assert restarted.store.get(SessionRecord, "a" * 32).task == "spooled"
    rejected = "".join(p.read_text() for p in spool.glob("rejected-*.jsonl"))
    assert "orphan" in rejected and '"op": "insert", "tab' in rejected
    assert not list(spool.glob("spool-*.jsonl"))


def test_finish_runs_once_when_two_threads_call_it(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    run = supervisor.begin(TASK)
    results = []
    threads = [threading.Thread(target=lambda: results.append(run.finish("done"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] is results[1]
    assert len(supervisor.store.rows(RewardRecord, RewardRecord.session_id == run.session_id, RewardRecord.scope == "session")) == 1


def test_a_failed_session_breaks_the_auto_streak(make_supervisor) -> None:
    judgements = [GOOD_JUDGEMENT] * 15 + [POOR_JUDGEMENT] * 3
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judgements}}, supervision={"llm_probe": False})
    lanes = []
    for index in range(7):
        run = supervisor.begin(TASK)
        lanes.append(run.lane)
        run.finish("x", error="tool crashed" if index == 5 else None)
    assert lanes[5] == "auto" and lanes[6] != "auto"


def test_the_probe_cannot_escalate_when_escalation_is_off(make_supervisor) -> None:
    supervisor = make_supervisor({"probe": {"ProbeAnswer": {"lane": "escalate", "confidence": 0.9, "reason": "too hard"}}},
                                 supervision={"warmup_sessions": 0})
    run = supervisor.begin(TASK)
    assert run.lane == "coach" and "escalation is off" in run.decision.reason
    run.finish("x")


def test_checks_are_clamped_and_odd_returns_are_undecided(make_supervisor) -> None:
    checks = [lambda c: CheckResult(7.0, "too high"), lambda c: float("nan"), lambda c: ("pass", "not a number")]
    supervisor = make_supervisor(supervision={"lane": "auto"}, checks=checks, judges={"checks_weight": 1.0})
    result = supervisor.begin(TASK).finish("x")
    assert result.reward == 1.0


def test_secrets_in_synthesized_lessons_and_urls_are_redacted(make_supervisor) -> None:
    lesson = "Connect with postgresql://admin:Hunter2Secret@db:5432/app and key sk-proj-PLANTEDlessonSECRET12345"
    supervisor = make_supervisor({"synthesizer": {"PlaybookChanges": {"changes": [{"op": "add", "lesson": lesson}]}}}, supervision={"lane": "auto"})
    supervisor.begin(TASK + " sk-proj-PLANTEDtaskSECRET1234567890").finish("ok")
    with supervisor.store.engine.connect() as connection:
        dump = "\n".join(repr(tuple(r)) for table in ("playbook_entries", "playbook_versions", "trajectory_events", "sessions")
                         for r in connection.execute(text(f"SELECT * FROM {table}")))
    for secret in ("Hunter2Secret", "PLANTEDlessonSECRET", "PLANTEDtaskSECRET", "PLANTEDtaskSE"):
        assert secret not in dump
    assert supervisor.store.rows(PlaybookEntryRecord)[0].lesson.startswith("Connect with postgresql://admin:[REDACTED]@db")


def test_a_closed_recorder_still_writes(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.recorder.close()
    result = supervisor.begin(TASK).finish("late")
    assert supervisor.store.get(SessionRecord, result.session_id).final_answer == "late"
