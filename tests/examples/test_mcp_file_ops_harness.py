"""The harness end to end on scripted models: real MCP server, real create_agent agent, real with_atlas and store."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from atlas_learning.store import PlaybookEntryRecord, RewardRecord, SessionRecord, StepRecord, Store
from examples.mcp_file_ops.__main__ import main
from examples.mcp_file_ops.harness import MAX_MODEL_CALLS, QUICK_SETTINGS, run_suite, suite_config
from examples.mcp_file_ops.scripted import ScriptedSolver, _respond
from examples.mcp_file_ops.tasks import LEARNING_KEY, TASKS


def storage(url: str, tmp_path: Path) -> dict:
    return {"storage": {"url": url, "spool_dir": str(tmp_path / "spool")}}


def test_the_scripted_suite_solves_all_25_and_stores_every_session(store_url: str, tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_suite(storage(store_url, tmp_path), model="scripted", out_dir=tmp_path / "out", progress=lines.append)

    assert [r.task_id for r in report.runs] == list(range(1, 26))
    assert all(r.passed and r.error is None for r in report.runs), [(r.task_id, r.check_reason, r.error) for r in report.runs if not r.passed]
    # every first answer passes its check, so adaptive judging asks no judge: the reward is the check's
    assert report.summary["success_rate"] == 1.0 and report.summary["mean_reward"] == 1.0
    assert len(lines) == 26 and lines[1].startswith("[  1/25] task  1 todo-count") and "PASS" in lines[1]
    # lanes are per task family (inferred from the task text): each family is coached first, then earns trust
    assert report.runs[0].lane == "coach" and any(r.lane == "auto" for r in report.runs)
    assert report.runs[0].lessons_injected == 0 and any(r.lessons_injected > 0 for r in report.runs)  # lessons reach their family

    with Store(store_url) as store:
        sessions = {s.id: s for s in store.rows(SessionRecord)}
        assert len(sessions) == 25
        assert {(s.learning_key, s.status, s.agent_name) for s in sessions.values()} == {(f"{LEARNING_KEY}:scripted", "completed", "mcp-file-ops")}
        for run, task in zip(report.runs, TASKS, strict=True):
            session = sessions[run.session_id]
            assert session.task == task.prompt and session.final_answer == run.answer
            steps = store.rows(StepRecord, StepRecord.session_id == run.session_id, StepRecord.kind == "tool_call", order_by=StepRecord.step_index)
            expected = task.solution(Path(tmp_path)).calls
            assert [(s.tool_name, s.tool_args) for s in steps] == [(c.name, c.args) for c in expected]
            assert run.tool_calls == len(expected) and run.model_calls == len(expected) + 1
            [reward] = store.rows(RewardRecord, RewardRecord.session_id == run.session_id, RewardRecord.scope == "session")
            [(check_name, score)] = reward.breakdown["checks"].items()  # the task's checker is part of the reward
            assert check_name.startswith(f"task_{task.id:02d}") and score == 1.0
            assert session.session_metadata["task_id"] == task.id and session.session_metadata["phase"] == task.phase
        big = next(r for r in report.runs if r.name == "big-log-lines")
        outputs = [s.output for s in store.rows(StepRecord, StepRecord.session_id == big.session_id, StepRecord.kind == "tool_call",
                                                order_by=StepRecord.step_index)]
        assert "over the 32 KiB read limit" in outputs[0] and "6000 logs/big.log" in outputs[1]
        assert store.rows(PlaybookEntryRecord, PlaybookEntryRecord.learning_key == f"{LEARNING_KEY}:scripted")

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"]["passed"] == 25 and len(saved["runs"]) == 25 and saved["learning_key"] == f"{LEARNING_KEY}:scripted"
    assert {"lane", "reward", "passed", "tool_calls", "tokens", "lessons_injected"} <= set(saved["runs"][0])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert report.plot_path is None and report.notes[0].startswith("learning curve skipped: matplotlib is not installed")
    else:
        assert report.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wrong_answers_fail_the_check_and_a_runaway_agent_is_stopped(sqlite_url: str, tmp_path: Path) -> None:
    def factory(task, workspace):
        if task.id == 1:  # answers at once, wrongly
            # rejected by the failing check and retried with its reason; this agent repeats itself every time
            return ScriptedSolver(messages=itertools.repeat(AIMessage("It has 4 items.")), disable_streaming=True)
        calls = (AIMessage("", tool_calls=[{"name": "list_files", "args": {}, "id": f"c{i}"}]) for i in itertools.count())
        return ScriptedSolver(messages=calls, disable_streaming=True)  # never stops calling tools

    report = run_suite(storage(sqlite_url, tmp_path), TASKS[:2], model="scripted", model_factory=factory, out_dir=tmp_path / "out",
                       progress=None, plot=False)
    wrong, runaway = report.runs
    assert (wrong.passed, wrong.error, wrong.tool_calls) == (False, None, 0)
    assert wrong.reward == pytest.approx(0.4) and "expected 5" in wrong.check_reason  # 0.5 x check 0 + 0.5 x judges 0.8
    assert runaway.passed is False and runaway.error.startswith("GraphRecursionError")
    assert 0 < runaway.tool_calls <= MAX_MODEL_CALLS + 4
    with Store(sqlite_url) as store:
        statuses = {s.id: s.status for s in store.rows(SessionRecord)}
    assert statuses == {wrong.session_id: "completed", runaway.session_id: "failed"}
    assert report.summary["errors"] == 1 and report.summary["success_rate"] == 0.0


def test_the_baseline_learns_nothing_and_keeps_its_own_key(sqlite_url: str, tmp_path: Path) -> None:
    baseline = run_suite(storage(sqlite_url, tmp_path), TASKS[:3], baseline=True, model="scripted", out_dir=tmp_path / "out",
                         progress=None, plot=False)
    assert baseline.summary["learning_key"] == f"{LEARNING_KEY}:scripted:baseline" and baseline.mode == "baseline"
    assert [(r.lessons_injected, r.lessons_learned) for r in baseline.runs] == [(0, 0)] * 3
    assert (tmp_path / "out" / "results-baseline.json").is_file() and not (tmp_path / "out" / "results.json").exists()
    learning = run_suite({**storage(sqlite_url, tmp_path), "playbook": {"trial_explore_rate": 0.0}}, TASKS[:3], repeat=2,
                         model="scripted", out_dir=tmp_path / "out", progress=None, plot=False)
    # lessons are scoped to the task family that taught them: the second round gets them, the first did not
    assert learning.summary["lessons_learned"] > 0 and all(r.lessons_injected > 0 for r in learning.runs[3:])
    with Store(sqlite_url) as store:
        keys = {e.learning_key for e in store.rows(PlaybookEntryRecord)}
        assert keys == {f"{LEARNING_KEY}:scripted"}
        assert len(store.rows(SessionRecord, SessionRecord.learning_key == f"{LEARNING_KEY}:scripted:baseline")) == 3


def test_the_command_compares_learning_with_the_baseline(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "atlas.yaml"
    config.write_text(f"storage:\n  url: '{sqlite_url}'\n  spool_dir: '{tmp_path / 'spool'}'\n")
    out = tmp_path / "out"
    assert main(["--model", "scripted", "--tasks", "1,3", "--compare", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "learning (scripted model" in printed and "baseline (scripted model" in printed
    assert [line.split() for line in printed.splitlines() if line.startswith("success rate")] == [["success", "rate", "100%", "100%"]]
    assert printed.count("PASS") == 4 and "learning curve" in printed
    assert json.loads((out / "results.json").read_text())["summary"]["runs"] == 2


def test_held_out_variants_run_on_their_own_workspaces_and_are_recorded(sqlite_url: str, tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_suite(storage(sqlite_url, tmp_path), [TASKS[0], TASKS[1], TASKS[12]], repeat=2, variants="heldout",
                       model="scripted", out_dir=tmp_path / "out", progress=lines.append, plot=False)
    assert "workspace variants 100001, 100002" in lines[0]
    assert [r.variant for r in report.runs] == [100_001] * 3 + [100_002] * 3 and all(r.passed for r in report.runs)
    # the scripted solver played each variant's own solution: its answers carry that workspace's numbers
    for run in report.runs:
        assert TASKS[run.task_id - 1].in_variant(run.variant).solution(tmp_path).answer == run.answer
    assert report.runs[0].answer != TASKS[0].solution(tmp_path).answer
    with Store(sqlite_url) as store:
        stored = {s.id: s.session_metadata.get("variant") for s in store.rows(SessionRecord)}
        assert [stored[r.session_id] for r in report.runs] == [r.variant for r in report.runs]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["runs"][3]["variant"] == 100_002


def test_bad_variants_end_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "scripted", "--variants", "soon"])
    assert exit_info.value.code == 2 and "use canonical, train, heldout or a seed number" in capsys.readouterr().err


def test_bad_options_end_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--tasks", "30"])
    assert "task 30 does not exist" in capsys.readouterr().err
    assert main(["--model", "scripted", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config file not found" in err and err.count("\n") == 1


def test_the_default_student_is_the_config_student_role_through_atlas_chat_model(sqlite_url: str, tmp_path: Path) -> None:
    pytest.importorskip("atlas_plugins.langgraph.chat_model")
    steps = [{"step": {"action": "read_file", "arguments": {"path": "notes/todo.txt"}}},
             {"step": {"action": "final_answer", "answer": "notes/todo.txt has 5 items."}}]

    def scripted(role: str, responses=None) -> dict:
        return {"provider": "scripted", "options": {"responses": responses or [_respond(role)], "cycle": True}}

    config = {**storage(sqlite_url, tmp_path), "models": {
        "default": scripted("judge_small"), "teacher": scripted("teacher"), "probe": scripted("probe"),
        "synthesizer": scripted("synthesizer"), "student": scripted("student", [json.dumps(s) for s in steps])}}
    report = run_suite(config, TASKS[:1], out_dir=tmp_path / "out", progress=None, plot=False)
    [run] = report.runs
    assert run.passed and run.answer == "notes/todo.txt has 5 items." and run.tool_calls == 1
    assert run.student_tokens > 0  # the student's calls are counted under its role


def test_quick_settings_apply_only_without_a_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("ATLAS_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    quick = suite_config()
    assert quick.judges.temperatures == QUICK_SETTINGS["judges"]["temperatures"] == [0.0]
    assert (quick.supervision.max_retries, quick.judges.judge_steps, quick.models.for_role("student").max_tokens) == (1, False, 320)
    assert (quick.supervision.warmup_sessions, quick.supervision.llm_probe) == (0, False)
    assert suite_config(baseline=True).playbook.enabled is False and quick.playbook.enabled is True
    (tmp_path / "atlas.yaml").write_text("supervision:\n  max_retries: 3\n")
    mine = suite_config()
    assert (mine.supervision.max_retries, mine.judges.temperatures) == (3, [0.0, 0.4, 0.8])


def test_a_shared_supervisor_is_used_as_given_and_left_open(make_supervisor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from examples.mcp_file_ops import harness

    scratch: list[str] = []
    real_mkdtemp = harness.tempfile.mkdtemp
    monkeypatch.setattr(harness.tempfile, "mkdtemp", lambda **kw: scratch.append(real_mkdtemp(**kw)) or scratch[-1])
    supervisor = make_supervisor(supervision={"lane": "paired"})
    report = run_suite(None, TASKS[20:22], supervisor=supervisor, model="scripted", out_dir=tmp_path / "out", progress=None, plot=False)
    assert [(r.passed, r.lane) for r in report.runs] == [(True, "paired"), (True, "paired")]
    assert supervisor.checks == []  # the task checker was registered for the suite only
    assert len(supervisor.store.rows(SessionRecord)) == 2  # still open: the caller closes it
    assert scratch and not Path(scratch[0]).exists()  # the scratch workspace is gone
    with pytest.raises(ValueError, match="playbook.enabled: false"):
        run_suite(None, TASKS[:1], supervisor=supervisor, baseline=True, model="scripted", out_dir=tmp_path / "out", progress=None)


def test_without_matplotlib_the_plot_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from examples.mcp_file_ops.harness import write_plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    path, note = write_plot({"learning": []}, tmp_path / "curve.png")
    assert path is None and note.startswith("learning curve skipped: matplotlib is not installed")
    assert not (tmp_path / "curve.png").exists()
