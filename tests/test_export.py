"""Export and training data on SQLite and PostgreSQL: AtlasSessionTrace JSONL that validates against its JSON Schema,
the review gate, filters, the messages and GRPO formats, keyset paging, and secrets that stay redacted."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import insert

import atlas_learning.export as export_module
from atlas_learning.export import (
    EXPORT_FORMATS,
    export_sessions,
    get_training_sessions,
    iter_records,
    session_trace,
    trace_schema,
)
from atlas_learning.judges import CheckResult
from atlas_learning.store import SessionFilter, SessionRecord, StepRecord, Store
from tests import support
from tests.support import ACCEPT, GOOD_JUDGEMENT, POOR_JUDGEMENT

make_supervisor = support.make_supervisor  # the shared fixture: a supervisor on scripted models, once per store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
SECRETS = ("sk-proj-PLANTEDsecretPLANTEDsecret1234", "PLANTEDbearerTOKEN0123456789", "PLANTEDkeyVALUE123")
VALIDATOR = jsonschema.Draft202012Validator(trace_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def counts_three(context) -> CheckResult:
    return CheckResult(1.0 if "3" in context.final_answer else 0.0, "answer says 3")


def coached_session(make_supervisor) -> str:
    """A coached session: plan review, a rejected step with guidance, a rejected then accepted answer, step rewards."""
    review = {"approved": False, "steps": ["list notes/", "read notes/todo.txt"], "concerns": ["the file may not exist"]}
    reject_step = {"accepted": False, "guidance": "List the folder first.", "reason": "blind read"}
    reject_answer = {"accepted": False, "guidance": "Count the lines that start with '-'.", "reason": "wrong count"}
    supervisor = make_supervisor(
        {"teacher": {"PlanReview": review, "Verdict": [ACCEPT, reject_step, reject_answer, ACCEPT]},
         "judge_small": {"StepJudgements": {"steps": [{"step": 0, "score": 0.6, "rationale": "listing helps"},
                                                       {"step": 1, "score": 0.9, "rationale": "the right file"}]}}},
        supervision={"lane": "coach"}, checks=[counts_three], judges={"when_checks_decide": "full"},
    )
    run = supervisor.begin(f"Count the items in notes/todo.txt (key {SECRETS[0]})", agent_name="files",
                           metadata={"ground_truth": "3"})
    run.review_plan(["read notes/todo.txt"])
    listed = run.record_step(tool_name="list_files", tool_args={"path": "notes"}, output="todo.txt")
    run.validate_step(listed)
    read = run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt", "api_key": SECRETS[2]},
                           output=f"- a\n- b\n- c\nAuthorization: Bearer {SECRETS[1]}")
    run.validate_step(read)
    run.validate_answer("2 items")
    run.record_step(kind="model_call", name="student-llm", output="Recounting: three dashes.", input_tokens=40, output_tokens=6)
    run.validate_answer("3 items")
    return run.finish("3 items").session_id


def plain_session(supervisor, task: str, answer: str, learning_key: str) -> str:
    run = supervisor.begin(task, agent_name="notes", learning_key=learning_key)
    run.record_step(tool_name="read_file", tool_args={"path": "notes/a.txt"}, output="alpha")
    run.validate_answer(answer)
    return run.finish(answer).session_id


@pytest.fixture
def sessions(make_supervisor) -> dict[str, str]:
    """Five sessions at known start times (one hour apart, in this order) and review statuses."""
    made = {"coached": coached_session(make_supervisor)}
    good = make_supervisor(supervision={"lane": "paired"})
    poor = make_supervisor({"judge_small": {"SessionJudgement": POOR_JUDGEMENT}, "judge_large": {"SessionJudgement": POOR_JUDGEMENT}},
                           supervision={"lane": "paired"})
    made["good_notes"] = plain_session(good, "Summarise notes/a.txt", "alpha", "notes")
    made["poor_files"] = plain_session(poor, "Summarise notes/b.txt", "beta?", "files")
    made["pending"] = plain_session(good, "Summarise notes/c.txt", "gamma", "files")
    made["quarantined"] = plain_session(good, "Summarise notes/d.txt", "delta", "files")
    store = good.store
    statuses = {"coached": "approved", "good_notes": "approved", "poor_files": "approved", "pending": "pending", "quarantined": "quarantined"}
    for hour, (name, session_id) in enumerate(made.items()):
        store.update_session(session_id, started_at=T0 + timedelta(hours=hour), review_status=statuses[name])
    return made


def export_lines(store: Store, **kwargs) -> list[dict]:
    buffer = io.StringIO()
    count = export_sessions(store, buffer, **kwargs)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert count == len(lines)
    return lines


def ids(records: list[dict]) -> list[str]:
    return [r["session_id"] for r in records]


def test_every_exported_trace_validates_against_the_schema(store: Store, sessions) -> None:
    lines = export_lines(store, where=SessionFilter(review_status=None))
    assert ids(lines) == list(sessions.values())  # oldest first
    for line in lines:
        errors = sorted(VALIDATOR.iter_errors(line), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
        for moment in (line["started_at"], line["finished_at"], *(s["runtime"]["started_at"] for s in line["steps"])):
            assert moment.endswith("+00:00") and datetime.fromisoformat(moment).tzinfo is not None
    assert datetime.fromisoformat(lines[1]["started_at"]) == T0 + timedelta(hours=1)


def test_the_review_gate_keeps_pending_and_quarantined_sessions_out(store: Store, store_url: str, sessions) -> None:
    approved = [sessions["coached"], sessions["good_notes"], sessions["poor_files"]]
    assert ids(export_lines(store)) == approved
    for export_format in EXPORT_FORMATS:
        assert ids(export_lines(store, format=export_format)) == approved
    assert ids(get_training_sessions(store_url)) == approved
    assert ids(get_training_sessions(store)) == approved  # an open store works too
    # a filter that does not mention the review status keeps the gate; a listing with it takes every status
    for export_format in EXPORT_FORMATS:
        assert ids(export_lines(store, format=export_format, where=SessionFilter(min_reward=0.0))) == \
            [i for i in approved if store.get(SessionRecord, i).reward is not None]
    assert len(store.list_sessions(SessionFilter())) == len(sessions)
    # only when asked for
    assert ids(export_lines(store, where=SessionFilter(review_status=("pending",)))) == [sessions["pending"]]
    assert ids(get_training_sessions(store_url, review_status=("quarantined",))) == [sessions["quarantined"]]
    assert ids(get_training_sessions(store_url, review_status="pending")) == [sessions["pending"]]
    assert ids(get_training_sessions(store_url, review_status=None)) == list(sessions.values())


def test_filters_reward_key_time_and_paging(store_url: str, sessions) -> None:
    good = get_training_sessions(store_url, min_reward=0.5)
    assert ids(good) == [sessions["coached"], sessions["good_notes"]]
    assert all(r["session_reward"]["score"] >= 0.5 for r in good)
    assert ids(get_training_sessions(store_url, learning_key="notes")) == [sessions["good_notes"]]
    assert ids(get_training_sessions(store_url, learning_key="files")) == [sessions["coached"], sessions["poor_files"]]
    assert ids(get_training_sessions(store_url, since=T0 + timedelta(minutes=30))) == [sessions["good_notes"], sessions["poor_files"]]
    assert ids(get_training_sessions(store_url, limit=1, offset=1)) == [sessions["good_notes"]]
    assert ids(get_training_sessions(store_url, limit=2, offset=1, review_status=None)) == [sessions["good_notes"], sessions["poor_files"]]
    assert get_training_sessions(store_url, min_reward=0.99) == []


def test_session_trace_has_steps_with_tools_rewards_validation_and_guidance(store: Store, sessions) -> None:
    trace = session_trace(store, sessions["coached"])
    assert trace is not None and not list(VALIDATOR.iter_errors(trace))
    assert session_trace(store, "0" * 32) is None
    listed, read, recount = trace["steps"]
    assert [s["step_id"] for s in trace["steps"]] == [1, 2, 3]
    assert (listed["tool"], listed["tool_params"]) == ("list_files", {"path": "notes"})
    assert listed["validation"] == {"accepted": True, "guidance": "", "reason": "correct"} and listed["guidance"] == []
    assert (listed["reward"]["score"], listed["reward"]["rationale"]) == (0.6, "listing helps")
    assert read["tool"] == "read_file" and read["tool_params"]["path"] == "notes/todo.txt"
    assert read["validation"] == {"accepted": False, "guidance": "List the folder first.", "reason": "blind read"}
    assert read["guidance"] == ["List the folder first."] and read["reward"]["score"] == 0.9
    assert read["output"].startswith("- a\n- b\n- c") and read["runtime"]["status"] == "ok"
    assert (recount["kind"], recount["tool"], recount["tool_params"], recount["attempts"]) == ("model_call", None, {}, 2)
    assert recount["reward"]["score"] is None and recount["validation"] == {}
    assert (recount["runtime"]["input_tokens"], recount["runtime"]["output_tokens"]) == (40, 6)

    assert trace["final_answer"] == "3 items" and trace["lane"] == trace["execution_mode"] == "coach"
    assert trace["plan"]["reviewed"] and [p["description"] for p in trace["plan"]["steps"]] == ["list notes/", "read notes/todo.txt"]
    assert trace["plan"]["concerns"] == ["the file may not exist"]
    assert trace["plan"]["proposed_steps"] == [{"step_id": 1, "description": "read notes/todo.txt"}]
    assert [(a["answer"], a["accepted"]) for a in trace["attempts"]] == [("2 items", False), ("3 items", True)]
    assert {g["kind"] for g in trace["guidance"]} == {"plan", "step", "answer"}
    reward = trace["session_reward"]
    # the user's check and the built-in expected-answer check (the metadata has a ground_truth)
    assert reward["status"] == "ok" and reward["breakdown"]["checks"] == {"counts_three": 1.0, "expected_answer_check": 1.0}
    assert reward["score"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.9)
    judge = reward["judges"][0]
    assert judge["identifier"] == "judge_small" and len(judge["samples"]) == 3
    assert judge["samples"][0]["outcome"] == GOOD_JUDGEMENT["outcome"] and judge["samples"][0]["uncertainty"] == pytest.approx(0.1)
    assert judge["score"] == pytest.approx(0.9)
    events = [e["event_type"] for e in trace["trajectory_events"]]
    assert events[:2] == ["session_started", "lane_chosen"] and "verdict" in events and events[-1] == "session_finished"
    assert [e["seq"] for e in trace["trajectory_events"]] == list(range(len(events)))
    assert set(trace["usage_by_role"]) >= {"teacher", "judge_small"} and trace["total_tokens"] > 0
    assert trace["adaptive_summary"]["adaptive_mode"] == "coach" and trace["adaptive_summary"]["source"] == "config"
    metadata = trace["session_metadata"]
    assert (metadata["learning_key"], metadata["session_id"], metadata["review_status"]) == ("files", sessions["coached"], "approved")
    assert metadata["ground_truth"] == "3" and metadata["drift"]["drift_alert"] is False
    assert "List the folder first." in metadata["teacher_notes"]


def test_messages_format_is_the_students_conversation(store: Store, sessions) -> None:
    """A session recorded without system prompts (scripted steps): the instructions come from the core's one
    renderer, and guidance is shown where the student got it: in the instructions of its next model call."""
    from atlas_learning.student import render_instructions

    records = {r["session_id"]: r for r in export_lines(store, format="messages")}
    record = records[sessions["coached"]]
    assert set(record) == {"messages", "tools", "session_id", "learning_key", "lane", "session_reward"}
    assert record["tools"] == []  # nothing recorded the tools the student was offered
    messages = record["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "system", "assistant", "system", "assistant",
                     "assistant"]
    plan, concerns = ["list notes/", "read notes/todo.txt"], ["the file may not exist"]
    assert messages[0]["content"] == render_instructions(plan=plan, concerns=concerns)
    assert "Plan to follow:\n1. list notes/" in messages[0]["content"] and "the file may not exist" in messages[0]["content"]
    assert messages[1]["content"].startswith("Count the items in notes/todo.txt")
    call = messages[2]["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {"name": "list_files", "arguments": {"path": "notes"}}
    assert messages[3] == {"role": "tool", "tool_call_id": call["id"], "name": "list_files", "content": "todo.txt"}
    # the rejected step's guidance: the whole instructions as the next model call got them, not a user turn
    assert messages[6]["content"] == render_instructions(plan=plan, concerns=concerns, guidance=["List the folder first."])
    assert messages[7] == {"role": "assistant", "content": "2 items"}
    rejected = session_trace(store, sessions["coached"])["attempts"][0]  # its guidance leads with the failed checks
    assert rejected["accepted"] is False and rejected["guidance"].endswith("Count the lines that start with '-'.")
    assert messages[8]["content"] == render_instructions(plan=plan, concerns=concerns, guidance=[rejected["guidance"]])
    assert messages[9] == {"role": "assistant", "content": "Recounting: three dashes."}
    assert messages[10] == {"role": "assistant", "content": "3 items"}
    assert not any(m["role"] == "user" and "Teacher guidance" in m["content"] for m in messages)
    plain = records[sessions["good_notes"]]["messages"]
    assert [m["role"] for m in plain] == ["user", "assistant", "tool", "assistant"] and plain[-1]["content"] == "alpha"
    assert records[sessions["poor_files"]]["session_reward"] < 0.5


def test_grpo_format_has_prompts_and_reward_columns(store: Store, sessions) -> None:
    records = {r["session_id"]: r for r in export_lines(store, format="grpo")}
    record = records[sessions["coached"]]
    assert set(record) == {"prompt", "task", "final_answer", "session_reward", "learning_key", "session_id", "lane",
                           "verifiable_outcome", "checks", "ground_truth"}
    assert [m["role"] for m in record["prompt"]] == ["system", "user"]
    assert record["prompt"][1]["content"] == record["task"]
    assert (record["final_answer"], record["learning_key"], record["ground_truth"]) == ("3 items", "files", "3")
    assert record["verifiable_outcome"] == 1.0 and record["checks"] == {"counts_three": 1.0, "expected_answer_check": 1.0}
    assert record["session_reward"] == pytest.approx(0.95)
    other = records[sessions["good_notes"]]
    assert (other["verifiable_outcome"], other["checks"], other["ground_truth"]) == (None, None, None)


def test_secrets_redacted_at_write_time_stay_redacted_in_every_export(store: Store, sessions) -> None:
    for export_format in EXPORT_FORMATS:
        text = "\n".join(json.dumps(r) for r in export_lines(store, format=export_format))
        assert "[REDACTED]" in text
        for secret in SECRETS:
            assert secret not in text
    trace = session_trace(store, sessions["coached"])
    assert trace["steps"][1]["tool_params"]["api_key"] == "[REDACTED]" and "[REDACTED]" in trace["task"]


def test_export_to_a_path_reports_progress_and_refuses_unknown_formats(store: Store, sessions, tmp_path: Path) -> None:
    seen: list[int] = []
    target = tmp_path / "out" / "traces.jsonl"
    assert export_sessions(store, target, progress=seen.append) == 3
    assert seen == [3] and len(target.read_text(encoding="utf-8").splitlines()) == 3
    assert not list(target.parent.glob(".*partial"))
    with pytest.raises(ValueError, match="unknown export format"):
        export_sessions(store, tmp_path / "x.jsonl", format="csv")
    assert not (tmp_path / "x.jsonl").exists()


def test_keyset_paging_over_tied_start_times_misses_and_repeats_nothing(store: Store, monkeypatch) -> None:
    rows = [{"id": f"{n:032x}", "learning_key": "bulk", "task": f"task {n}", "review_status": "approved", "status": "completed",
             "started_at": T0 + timedelta(seconds=n % 3), "lessons_used": [], "usage_by_role": {}, "session_metadata": {},
             "reward": n / 40} for n in range(40)]
    steps = [{"id": f"{n:030x}{i:02x}", "session_id": f"{n:032x}", "step_index": i, "tool_name": "echo", "tool_args": {"n": n},
              "output": str(n), "started_at": T0, "step_metadata": {}} for n in range(40) for i in range(2)]
    with store.engine.begin() as connection:
        connection.execute(insert(SessionRecord.__table__), rows)
        connection.execute(insert(StepRecord.__table__), steps)
    monkeypatch.setattr(export_module, "PAGE_SIZE", 7)  # many pages, with ties across their edges
    seen: list[int] = []
    lines = export_lines(store, progress=seen.append)
    expected = [r["id"] for r in sorted(rows, key=lambda r: (r["started_at"], r["id"]))]
    assert ids(lines) == expected and seen == [7, 14, 21, 28, 35, 40]
    assert all(line["steps"][0]["tool_params"] == {"n": int(line["session_id"], 16)} for line in lines)
    assert all(len(line["steps"]) == 2 for line in lines)
    paged = export_lines(store, where=SessionFilter(review_status=("approved",), offset=5, limit=20))
    assert ids(paged) == expected[5:25]
    assert ids(export_lines(store, format="grpo", where=SessionFilter(review_status=None, min_reward=0.5))) == \
        [i for i in expected if int(i, 16) >= 20]


def test_lessons_the_session_was_given_are_in_every_format(make_supervisor) -> None:
    add = {"changes": [
        {"op": "add", "lesson": "Count only lines that start with a dash.", "applies_when": "counting list items"},
        {"op": "add", "audience": "teacher", "lesson": "Check the count of list items against the file.",
         "applies_when": "counting list items"},
    ]}
    supervisor = make_supervisor({"synthesizer": {"PlaybookChanges": [add, {"changes": []}]}}, supervision={"lane": "auto"})
    plain_session(supervisor, "Count the list items in notes/todo.txt", "3", "files")
    second = plain_session(supervisor, "How many list items does notes/todo.txt have?", "3", "files")
    trace = session_trace(supervisor.store, second)
    assert not list(VALIDATOR.iter_errors(trace))
    assert len(trace["lessons_used"]) == 2 and trace["learning_history"]["lessons_used"] == trace["lessons_used"]
    assert "Count only lines that start with a dash. (when counting list items)" in trace["student_learning"]
    assert "Check the count of list items against the file." in trace["teacher_learning"]
    assert "Check the count" not in trace["student_learning"]
    everything = SessionFilter(review_status=None)
    messages = {r["session_id"]: r for r in export_lines(supervisor.store, format="messages", where=everything)}[second]["messages"]
    assert messages[0]["role"] == "system" and "Count only lines that start with a dash." in messages[0]["content"]
    grpo = {r["session_id"]: r for r in export_lines(supervisor.store, format="grpo", where=everything)}[second]
    assert "Check the count of list items against the file." in grpo["prompt"][0]["content"]


def test_a_database_without_the_schema_is_a_store_error_not_a_crash(tmp_path: Path) -> None:
    from atlas_learning.errors import StoreError

    with pytest.raises(StoreError, match="sessions"):  # raised in the reading thread, handed over as a StoreError
        get_training_sessions(f"sqlite:///{tmp_path / 'empty.db'}")
    with Store(f"sqlite:///{tmp_path / 'fresh.db'}") as fresh:
        assert export_sessions(fresh, tmp_path / "none.jsonl") == 0 and (tmp_path / "none.jsonl").read_text() == ""
        assert session_trace(fresh, "f" * 32) is None


def test_an_in_memory_sqlite_store_exports_too() -> None:
    with Store("sqlite://") as memory:
        memory.add(SessionRecord(learning_key="k", task="t", review_status="approved", started_at=T0))
        assert [r["task"] for r in export_lines(memory)] == ["t"]
        assert [r["task"] for r in get_training_sessions(memory)] == ["t"]


@pytest.mark.postgres
def test_postgres_readers_see_one_snapshot_and_stop_cleanly(postgres_url: str, monkeypatch) -> None:
    """Pages are read by several connections at once: all in the snapshot the export began with, so sessions
    stored while it runs are not in it; a consumer that stops early leaves no reader running."""
    import threading

    monkeypatch.setattr(export_module, "PAGE_SIZE", 4)  # many pages, read ahead by export_module.READERS threads
    rows = [{"id": f"{n:032x}", "learning_key": "bulk", "task": f"task {n}", "review_status": "approved", "status": "completed",
             "started_at": T0 + timedelta(seconds=n), "lessons_used": [], "usage_by_role": {}, "session_metadata": {}}
            for n in range(30)]
    steps = [{"id": f"{n:030x}{i:02x}", "session_id": f"{n:032x}", "step_index": i, "tool_name": "echo", "tool_args": {"n": n},
              "output": str(n), "started_at": T0, "step_metadata": {}} for n in range(30) for i in range(2)]
    with Store(postgres_url) as store:
        with store.engine.begin() as connection:
            connection.execute(insert(SessionRecord.__table__), rows)
            connection.execute(insert(StepRecord.__table__), steps)
        late: list[str] = []

        def store_more(count: int) -> None:  # a session, and a step of the last session, stored by another writer
            number = 100 + count
            with store.engine.begin() as connection:
                connection.execute(insert(SessionRecord.__table__), [{**rows[0], "id": f"{number:032x}",
                                                                      "started_at": T0 + timedelta(hours=1, seconds=count)}])
                connection.execute(insert(StepRecord.__table__), [{**steps[-1], "id": f"{number:032x}", "step_index": 9 + count}])
            late.append(f"{number:032x}")

        began = export_module._snapshot_reader

        def snapshot_then_write(connection) -> None:  # once the export took its snapshot, before any reader began
            began(connection)
            if not late:
                store_more(0)

        monkeypatch.setattr(export_module, "_snapshot_reader", snapshot_then_write)
        buffer = io.StringIO()
        assert export_sessions(store, buffer, progress=store_more) == 30
        monkeypatch.setattr(export_module, "_snapshot_reader", began)
        lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
        assert ids(lines) == [r["id"] for r in rows] and len(late) > 1 and not set(late) & set(ids(lines))
        assert all(len(line["steps"]) == 2 for line in lines)  # the steps stored meanwhile are not there either
        assert len(export_lines(store)) == 30 + len(late)  # a new export sees them
        before = {t.name for t in threading.enumerate()}
        records = iter_records(store)
        assert next(records)["session_id"] == rows[0]["id"]
        records.close()  # stop early: the readers finish their pages and their connections close
        assert not {t.name for t in threading.enumerate() if t.name.startswith("atlas-export-reader")} - before
