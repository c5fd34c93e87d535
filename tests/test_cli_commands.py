"""The user-facing commands: sessions, show, review, export, playbook, report, env init, run.

Each store test runs on SQLite and PostgreSQL (``store_url``). Sessions are made by the real core on scripted
models (tests/support.py); the commands read the same database through a config file passed with ``--config``.
``atlas run`` is run in a fresh process, as a user would, with scripted models in its config.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from atlas_learning.cli import app
from atlas_learning.config import AtlasConfig
from atlas_learning.store import PlaybookRegistryRecord, ReviewLogRecord, SessionRecord, StepRecord, Store
from tests.support import ACCEPT, GOOD_JUDGEMENT, POOR_JUDGEMENT, make_supervisor  # noqa: F401 - make_supervisor is a fixture

runner = CliRunner()

#: One scripted answer that validates as every supervision schema (pydantic ignores the fields a schema lacks).
UNIVERSAL = json.dumps({
    "accepted": True, "guidance": "", "reason": "ok", "outcome": 0.9, "process": 0.8, "efficiency": 0.7, "confidence": 0.9,
    "rationale": "fine", "steps": [], "changes": [], "approved": True, "concerns": [], "lane": "paired",
})
STEP_REJECTED = {"accepted": False, "guidance": "Include hidden files too.", "reason": "ls without -a"}
LESSON = {"op": "add", "lesson": "List the folder before reading a file.", "applies_when": "reading files", "reason": "seen"}


def write_config(tmp_path: Path, store_url: str, **sections: Any) -> Path:
    data = {"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")}, **sections}
    path = tmp_path / "atlas.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(config: Path | None, *args: str, env: dict[str, str | None] | None = None) -> Any:
    """Invoke the app in-process; stdout and stderr stay apart (result.stdout, result.stderr)."""
    argv = [*args, *(["--config", str(config)] if config is not None else [])]
    base: dict[str, str | None] = {"COLUMNS": "200", **{k: None for k in os.environ if k.startswith("ATLAS_")}}
    return runner.invoke(app, argv, env={**base, **(env or {})}, catch_exceptions=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_error_line(result: Any, starts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"atlas: error: {starts}"), result.stderr


@pytest.fixture
def world(make_supervisor, store_url: str, tmp_path: Path) -> dict[str, Any]:  # noqa: F811 - the fixture
    """Three 'files' sessions in the coach lane (good, with a tool call and a student model call; the first teaches
    a lesson) and two 'math' sessions in the paired lane (one good, one poor). All pending."""
    files = make_supervisor({
        "synthesizer": {"PlaybookChanges": [{"changes": [LESSON]}, {"changes": []}]},
        "teacher": {"Verdict": [STEP_REJECTED, ACCEPT],
                    "PlanReview": {"approved": True, "steps": ["list ./data", "count the files"], "concerns": ["hidden files"]}},
    }, supervision={"lane": "coach"})
    ids: dict[str, list[str]] = {"files": [], "math": []}
    for number in range(3):
        run = files.begin(f"How many files are in ./data? ({number})", agent_name="files")
        if number == 0:
            run.review_plan(["count the files"])
        run.record_model_call(role="student", model="tiny", input_tokens=100, output_tokens=50)
        step = run.record_step(kind="tool_call", name="list_files", tool_name="list_files", tool_args={"path": "data"}, output="a.txt b.txt")
        if number == 0:
            run.validate_step(step)  # rejected, with guidance
        run.validate_answer("2 files")
        ids["files"].append(run.finish("2 files").session_id)
    math = make_supervisor(
        # by the task, not by call order: the two sessions' judges run concurrently in the background
        {"judge_small": {"SessionJudgement": lambda messages: POOR_JUDGEMENT if any("3 * 3" in m["content"] for m in messages) else GOOD_JUDGEMENT}},
        supervision={"lane": "paired"},
    )
    for task in ("2 + 2", "3 * 3"):
        ids["math"].append(math.supervise(task, lambda instructions: "4", agent_name="math").session_id)
    math.drain()  # supervise returns before its session is judged and stored
    config = write_config(tmp_path, store_url)
    return {"config": config, "ids": ids, "store_url": store_url}


# ------------------------------------------------------------------------------------------------------ sessions
def test_sessions_filters_table_and_json(world) -> None:
    config, ids = world["config"], world["ids"]
    every = json_lines(cli(config, "sessions", "--json").stdout)
    assert {s["id"] for s in every} == {*ids["files"], *ids["math"]}
    first = next(s for s in every if s["id"] == ids["files"][0])
    assert first["learning_key"] == "files" and first["review_status"] == "pending" and first["steps"] == 2 and first["tool_calls"] == 1
    assert first["total_tokens"] > 150 and first["reward"] == pytest.approx(0.9)

    def listed(*args: str) -> set[str]:
        result = cli(config, "sessions", "--json", *args)
        assert result.exit_code == 0, result.output
        return {s["id"] for s in json_lines(result.stdout)}

    assert listed("--key", "math") == set(ids["math"])
    assert listed("--lane", "paired") == set(ids["math"])
    assert listed("--status", "pending") == {*ids["files"], *ids["math"]}
    assert listed("--status", "approved") == set()
    poor = ids["math"][1]
    assert listed("--max-reward", "0.5") == {poor}
    assert listed("--min-reward", "0.5") == {*ids["files"], ids["math"][0]}
    assert listed("--since", "1d") == {*ids["files"], *ids["math"]}
    assert listed("--since", "2999-01-01") == set()
    assert listed("--limit", "1") == {ids["math"][1]}  # newest first

    table = cli(config, "sessions")
    assert table.exit_code == 0
    assert ids["files"][0][:12] in table.stdout and "pending" in table.stdout and "paired" in table.stdout
    assert "showing 1 of 5" in cli(config, "sessions", "--limit", "1").stdout

    one_error_line(cli(config, "sessions", "--status", "done"), "--status: expected one of pending, approved, quarantined")
    one_error_line(cli(config, "sessions", "--since", "last week"), "--since: expected an ISO date or time")


# ---------------------------------------------------------------------------------------------------------- show
def test_show_by_prefix_with_steps_verdicts_and_judges(world) -> None:
    config, session_id = world["config"], world["ids"]["files"][0]
    result = cli(config, "show", session_id[:8])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"session {session_id}" in text
    assert "plan (proposed)" in text and "plan (reviewed)" in text and "1. list ./data" in text and "concern: hidden files" in text
    assert "[teacher step on step 2] Include hidden files too." in text and "rejected" in text  # step 1 is the model call
    assert "list_files" in text and '{"path": "data"}' in text and "a.txt b.txt" in text  # tool call, args, output
    assert "accepted: 2 files" in text  # the teacher's verdict on the attempt
    assert "session reward 0.90" in text and "breakdown: outcome 0.90" in text
    assert text.count("small ") >= 3  # one row per judge sample
    assert cli(config, "show", session_id).stdout == text  # the full id works too


def test_show_rejects_short_unknown_and_ambiguous_prefixes(world) -> None:
    config = world["config"]
    with Store(world["store_url"]) as store:
        store.add(SessionRecord(id="abcdef01" + "0" * 24, learning_key="k", task="t"),
                  SessionRecord(id="abcdef01" + "1" * 24, learning_key="k", task="t"))
    one_error_line(cli(config, "show", "abcdef01"), "session prefix 'abcdef01' is ambiguous")
    assert cli(config, "show", "abcdef011").exit_code == 0
    one_error_line(cli(config, "show", "abc"), "session 'abc': give the full id or at least its first 8")
    one_error_line(cli(config, "show", "99999999"), "no session matches '99999999'")


def test_show_json_is_the_session_trace(world) -> None:
    from atlas_learning.export import session_trace

    config, session_id = world["config"], world["ids"]["math"][0]
    result = cli(config, "show", session_id[:10], "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    with Store(world["store_url"]) as store:
        expected = json.loads(json.dumps(session_trace(store, session_id), default=str))
    assert shown == expected
    assert shown["session_id"] == session_id and shown["steps"] == [] and shown["session_reward"]["score"] == pytest.approx(0.9)


# -------------------------------------------------------------------------------------------------------- review
def test_review_changes_status_and_logs_who_when_why(world) -> None:
    config, ids = world["config"], world["ids"]
    first, second = ids["files"][0], ids["files"][1]
    result = cli(config, "review", "approve", first[:8], second, "--note", "checked by hand", "--reviewer", "ana")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("approved 2 sessions")
    again = cli(config, "review", "approve", first, env={"USER": "bo"})
    assert again.stdout.startswith("approved 0 sessions (1 already approved)")
    assert cli(config, "review", "quarantine", second, env={"USER": "bo"}).stdout.startswith("quarantined 1 session")
    assert cli(config, "review", "pending", second, env={"USER": None}).exit_code == 0
    leaked = "sk-proj-" + "Q7w8E9r0" * 4  # a reviewer pasting a key into a note: stored redacted
    assert cli(config, "review", "quarantine", ids["files"][2], "--note", f"key {leaked} seen in output").exit_code == 0

    with Store(world["store_url"]) as store:
        assert store.get(SessionRecord, first).review_status == "approved"
        assert store.get(SessionRecord, first).review_note == "checked by hand"
        assert store.get(SessionRecord, second).review_status == "pending"
        log = store.rows(ReviewLogRecord, ReviewLogRecord.session_id == second, order_by=ReviewLogRecord.id)
        first_log = store.rows(ReviewLogRecord, ReviewLogRecord.session_id == first)
    assert [(r.from_status, r.to_status, r.reviewer) for r in log] == [
        ("pending", "approved", "ana"), ("approved", "quarantined", "bo"), ("quarantined", "pending", "cli")]
    assert log[0].note == "checked by hand" and log[0].created_at is not None
    assert len(first_log) == 1  # the no-op approval wrote nothing
    with Store(world["store_url"]) as store:
        assert store.get(SessionRecord, ids["files"][2]).review_note == "key [REDACTED] seen in output"


def test_review_all_pending_with_min_reward(world) -> None:
    config, ids = world["config"], world["ids"]
    with Store(world["store_url"]) as store:  # a session still running is never approved half-done
        store.add(SessionRecord(id="running-1", learning_key="files", agent_name="files", task="still going", reward=0.99))
    result = cli(config, "review", "approve", "--all-pending", "--min-reward", "0.5", "--json")
    assert result.exit_code == 0, result.output
    changed = json.loads(result.stdout)
    assert changed["changed"] == 4 and {s["session_id"] for s in changed["sessions"]} == {*ids["files"], ids["math"][0]}
    with Store(world["store_url"]) as store:
        assert store.get(SessionRecord, ids["math"][1]).review_status == "pending"  # reward 0.16 stays pending
        assert store.get(SessionRecord, "running-1").review_status == "pending"
        assert len(store.rows(ReviewLogRecord)) == 4
    assert cli(config, "review", "quarantine", "--all-pending").stdout.startswith("quarantined 1 session")  # not the running one
    one_error_line(cli(config, "review", "approve"), "name the sessions to approve")
    one_error_line(cli(config, "review", "approve", ids["math"][0], "--min-reward", "0.5"), "--min-reward selects among pending")
    # named by id, a running or abandoned session is refused for approval (nothing changes), and can be quarantined
    running, dead = "a1b2c3d4" * 4, "deadbeef" * 4
    with Store(world["store_url"]) as store:
        store.add(SessionRecord(id=running, learning_key="files", agent_name="files", task="still going"),
                  SessionRecord(id=dead, learning_key="files", agent_name="files", task="its process died", status="abandoned"))
    for unfinished, status in ((running, "running"), (dead, "abandoned")):
        one_error_line(cli(config, "review", "approve", unfinished),
                       f"session {unfinished[:12]} is {status}: only finished sessions can be approved")
    assert cli(config, "review", "quarantine", running).exit_code == 0
    with Store(world["store_url"]) as store:
        assert store.get(SessionRecord, dead).review_status == "pending"
        assert store.get(SessionRecord, running).review_status == "quarantined"


# -------------------------------------------------------------------------------------------------------- export
def test_export_gate_only_approved_unless_asked(world, tmp_path: Path) -> None:
    config, ids = world["config"], world["ids"]
    out = tmp_path / "traces.jsonl"
    result = cli(config, "export", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert json_lines(out.read_text()) == [] and "exported 0 sessions (approved)" in result.stdout

    assert cli(config, "review", "approve", ids["files"][0]).exit_code == 0
    assert cli(config, "review", "quarantine", ids["files"][1]).exit_code == 0
    cli(config, "export", "-o", str(out))
    assert [t["session_id"] for t in json_lines(out.read_text())] == [ids["files"][0]]

    to_stdout = cli(config, "export", "-o", "-", "--status", "pending")
    assert to_stdout.exit_code == 0
    pending = json_lines(to_stdout.stdout)  # stdout holds the JSONL and nothing else
    assert {t["session_id"] for t in pending} == {ids["files"][2], *ids["math"]}
    assert all(t["review_status"] == "pending" for t in pending)
    assert "exported 3 sessions (pending) as trace to stdout" in to_stdout.stderr

    both = json_lines(cli(config, "export", "-o", "-", "--status", "approved", "--status", "quarantined").stdout)
    assert {t["session_id"] for t in both} == {ids["files"][0], ids["files"][1]}
    assert json_lines(cli(config, "export", "-o", "-", "--status", "pending", "--key", "math", "--min-reward", "0.5").stdout)[0][
        "session_id"] == ids["math"][0]
    assert len(json_lines(cli(config, "export", "-o", "-", "--status", "pending", "--limit", "1").stdout)) == 1
    for fmt in ("messages", "grpo"):
        lines = json_lines(cli(config, "export", "-o", "-", "--format", fmt).stdout)
        assert len(lines) == 1
    one_error_line(cli(config, "export", "-o", "-", "--format", "csv"), "--format: expected one of trace, messages, grpo")
    one_error_line(cli(config, "export", "-o", "-", "--status", "done"), "--status: expected one of")


# ------------------------------------------------------------------------------------------------------ playbook
def test_playbook_show_history_diff_retire(world) -> None:
    config = world["config"]
    shown = json.loads(cli(config, "playbook", "show", "--json").stdout)
    assert set(shown) == {"files"}
    entries = shown["files"]["entries"]
    assert [e["lesson"] for e in entries] == [LESSON["lesson"]] and entries[0]["status"] in ("provisional", "active")
    entry_id = entries[0]["id"]
    table = cli(config, "playbook", "show", "--key", "files").stdout
    assert entry_id[:12] in table and LESSON["lesson"] in table

    history = json.loads(cli(config, "playbook", "history", "--key", "files", "--json").stdout)
    assert history[0]["change"] == "add" and history[0]["entry_id"] == entry_id
    added_at = history[0]["registry_version"]
    diff = json.loads(cli(config, "playbook", "diff", "--key", "files", str(added_at - 1), str(added_at), "--json").stdout)
    assert diff["changes"] == [{"entry_id": entry_id, "change": "added", "lesson": LESSON["lesson"], "status": "provisional"}]
    assert "+ " + entry_id[:12] in cli(config, "playbook", "diff", "--key", "files", str(added_at - 1), str(added_at)).stdout

    retired = cli(config, "playbook", "retire", "--key", "files", entry_id[:10], "--reason", "too vague")
    assert retired.exit_code == 0, retired.output
    assert retired.stdout.startswith(f"retired {entry_id}")
    after = json.loads(cli(config, "playbook", "show", "--key", "files", "--json").stdout)
    assert after["files"]["entries"] == []
    history = json.loads(cli(config, "playbook", "history", "--key", "files", "--json").stdout)
    assert history[-1]["change"] == "retire" and history[-1]["status"] == "retired"
    assert history[-1]["reason"] == "manual: too vague"  # every history row says why
    latest = after["files"]["version"]
    diff = json.loads(cli(config, "playbook", "diff", "--key", "files", str(latest - 1), str(latest), "--json").stdout)
    assert diff["changes"][0]["status"] == "retired"
    shown_history = cli(config, "playbook", "history", "--key", "files").stdout
    assert "retire" in shown_history and "manual: too vague" in shown_history

    one_error_line(cli(config, "playbook", "retire", "--key", "files", entry_id), f"no live entry '{entry_id}'")
    one_error_line(cli(config, "playbook", "diff", "--key", "files", "0", "99"), "TO 99: the playbook of 'files' has versions")

    with Store(world["store_url"]) as store:  # a key whose playbook exists and has learned nothing yet
        store.add(PlaybookRegistryRecord(learning_key="fresh"))
    empty = cli(config, "playbook", "history", "--key", "fresh").stdout
    assert "no playbook history for 'fresh'; it has no lessons yet (other keys: files" in empty
    assert "known keys" not in empty  # never "unknown" beside a list that holds it
    assert "known keys: files, fresh" in cli(config, "playbook", "history", "--key", "nope").stdout


# -------------------------------------------------------------------------------------------------------- report
def test_report_table_json_and_png(world, tmp_path: Path) -> None:
    config, ids = world["config"], world["ids"]
    data = json.loads(cli(config, "report", "--key", "files", "--window", "2", "--json").stdout)
    assert [s["session_id"] for s in data["sessions"]] == ids["files"]  # oldest first
    assert [s["tool_calls"] for s in data["sessions"]] == [1, 1, 1]
    assert sum(data["lane_mix"].values()) == 3 and data["sessions"][0]["lane"] == "coach"
    assert [(w["from"], w["to"]) for w in data["reward_by_window"]] == [(1, 2), (3, 3)]
    assert data["reward_by_window"][0]["mean_reward"] == pytest.approx(0.9)
    assert 0 < data["supervision_token_share"] < 1  # the student's 150 tokens a session count as the agent's own
    assert data["total_tokens"] - data["supervision_tokens"] == 3 * 150

    every = json.loads(cli(config, "report", "--json").stdout)
    assert every["count"] == 5 and every["lane_mix"]["paired"] == 2

    plot = tmp_path / "learning.png"
    result = cli(config, "report", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert "lane mix" in result.stdout and "supervision" in result.stdout and ids["math"][1][:12] in result.stdout
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 600 and height >= 600 and len(png) > 10_000
    one_error_line(cli(config, "report", "--plot", str(tmp_path / "curve.jpg")), "--plot")


# ------------------------------------------------------------------------------------------------------ env init
PROJECT = {
    "agentapp/__init__.py": "",
    "agentapp/graph.py": """
        from typing import TypedDict

        from langgraph.graph import END, START, StateGraph


        class State(TypedDict):
            question: str


        builder = StateGraph(State)
        builder.add_node("answer", lambda state: state)
        builder.add_edge(START, "answer")
        graph = builder.compile()
    """,
    "agentapp/react.py": """
        from langchain.agents import create_agent

        support_agent = create_agent("openai:gpt-4.1-mini", tools=[], name="support")
    """,
    "agentapp/sdk.py": """
        from agents import Agent

        triage = Agent(name="triage", instructions="Route the customer.")
    """,
    "agentapp/custom.py": """
        class Calculator:
            def run(self, task: str) -> str:
                return "42"
    """,
    "mcp.json": """
        {
          "mcpServers": {
            "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."]}
          }
        }
    """,
}


def make_project(root: Path) -> None:
    for relative, text in PROJECT.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def test_env_init_finds_agents_and_mcp_servers(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_project(project)
    result = cli(None, "env", "init", str(project))  # stdin is not a terminal: nothing is asked
    assert result.exit_code == 0, result.output
    written = project / "atlas.yaml"
    text = written.read_text()
    data = yaml.safe_load(text)
    assert data["agent"]["import_path"] in ("agentapp.graph:graph", "agentapp.react:support_agent")
    assert data["agent"]["kind"] == "langgraph"
    for where, what in [
        ("agentapp/graph.py:10", "builder = StateGraph(State)"),
        ("agentapp/graph.py:13", "graph = builder.compile()"),
        ("agentapp/react.py:3", "support_agent = create_agent(...)"),
        ("agentapp/sdk.py:3", 'triage = Agent(name="triage", ...)'),
        ("agentapp/custom.py:1", "class Calculator with run(self, task)"),
        ("mcp.json:2", "mcpServers: filesystem (npx -y @modelcontextprotocol/server-filesystem .)"),
    ]:
        assert f"{where}  {what}" in text, (where, text)
    assert "with_atlas(graph)" in text and "middleware=[AtlasMiddleware()]" in text and "@atlas_agent" in text
    assert "runner = with_atlas(triage)" in text
    for candidate in ("agentapp.sdk:triage", "agentapp.custom:Calculator"):
        assert candidate in text  # listed as alternatives
    loaded = AtlasConfig.load(written, environ={})
    assert loaded.agent.import_path == data["agent"]["import_path"]

    one_error_line(cli(None, "env", "init", str(project)), f"{written} already exists; pass --force")
    other = tmp_path / "elsewhere.yaml"
    assert cli(None, "env", "init", str(project), "--output", str(other)).exit_code == 0 and other.is_file()
    assert cli(None, "env", "init", str(project), "--force").exit_code == 0


def test_env_init_on_a_project_without_agents(tmp_path: Path) -> None:
    (tmp_path / "util.py").write_text("def add(a, b):\n    return a + b\n")
    assert cli(None, "env", "init", str(tmp_path)).exit_code == 0
    loaded = AtlasConfig.load(tmp_path / "atlas.yaml", environ={})
    assert loaded.agent.import_path is None


# ------------------------------------------------------------------------------------------------------------ run
AGENTS_MODULE = """
    from atlas_plugins.byoa import atlas_context


    def answer(task):
        return "42"


    class Calculator:
        def run(self, task: str) -> str:
            atlas_context().tool_call("evaluate", {"expression": task}, output="42")
            return "42"


    class NeedsArgs:
        def __init__(self, model):
            self.model = model

        def run(self, task: str) -> str:
            return "never"
"""


def atlas(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a fresh process, with no ATLAS_* variables from this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    code = "from atlas_learning.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def run_config(tmp_path: Path, store_url: str, import_path: str | None, **agent: Any) -> Path:
    scripted = {"provider": "scripted", "options": {"responses": [UNIVERSAL], "cycle": True}}
    return write_config(tmp_path, store_url, models={"default": scripted},
                        agent={"import_path": import_path, **agent} if import_path else {})


def test_run_a_function_and_an_agent_class(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "my_agents.py").write_text(textwrap.dedent(AGENTS_MODULE))
    config = run_config(tmp_path, store_url, "my_agents:answer")
    result = atlas("run", "--config", str(config), "--task", "What is 6 * 7?", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer, summary = result.stdout.split("\n", 1)
    assert answer == "42" and "lane coach" in summary and "reward 0.85" in summary  # 0.6*0.9 + 0.25*0.8 + 0.15*0.7

    config = run_config(tmp_path, store_url, "my_agents:Calculator", name="calculator")
    result = atlas("run", "-c", str(config), "--task", "6 * 7", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "byoa" and data["answer"] == "42"
    session = data["session"]
    assert session["learning_key"] == "calculator" and session["accepted"] is True and session["reward"] == pytest.approx(0.845)
    with Store(store_url) as store:
        stored = store.get(SessionRecord, session["session_id"])
        steps = store.rows(StepRecord, StepRecord.session_id == session["session_id"])
        keys = {r.learning_key for r in store.list_sessions()}
    assert stored.final_answer == "42" and stored.status == "completed"
    assert [(s.tool_name, s.tool_args) for s in steps] == [("evaluate", {"expression": "6 * 7"})]
    assert keys == {"answer", "calculator"}


def test_run_exits_non_zero_and_names_each_failed_role_when_supervision_could_not_run(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "my_agents.py").write_text(textwrap.dedent(AGENTS_MODULE))
    broken = {"provider": "openai", "model": "gpt-4.1-mini", "api_key_env": "ATLAS_TEST_NO_SUCH_KEY", "max_retries": 0}
    scripted = {"provider": "scripted", "options": {"responses": [UNIVERSAL], "cycle": True}}
    config = write_config(tmp_path, store_url, models={"default": scripted, "teacher": broken, "probe": broken},
                          agent={"import_path": "my_agents:answer"}, supervision={"lane": "paired"})
    result = atlas("run", "--config", str(config), "--task", "What is 6 * 7?", cwd=tmp_path)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout.startswith("42")  # the agent's own answer is still printed
    failed = [line for line in result.stderr.splitlines() if line.startswith("atlas: teacher failed:")]
    assert len(failed) == 1 and "ATLAS_TEST_NO_SUCH_KEY" in failed[0]
    data = json.loads(atlas("run", "--config", str(config), "--task", "What is 6 * 7?", "--json", cwd=tmp_path).stdout)
    assert "teacher" in data["session"]["role_failures"]


def test_run_a_langgraph_graph(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "graph_agent.py").write_text(textwrap.dedent("""
        from langchain_core.messages import AIMessage
        from langgraph.graph import START, MessagesState, StateGraph

        def reply(state):
            return {"messages": [AIMessage(content="There are 2 files.")]}

        builder = StateGraph(MessagesState)
        builder.add_node("reply", reply)
        builder.add_edge(START, "reply")
        graph = builder.compile()
    """))
    config = run_config(tmp_path, store_url, "graph_agent:graph", name="files-graph")
    result = atlas("run", "-c", str(config), "--task", "How many files?", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "langgraph" and data["answer"] == "There are 2 files."
    assert data["session"]["learning_key"] == "files-graph" and data["session"]["reward"] is not None


def test_run_errors_are_one_line(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "my_agents.py").write_text(textwrap.dedent(AGENTS_MODULE))
    cases = [
        (None, {}, "atlas.yaml: agent.import_path is not set"),
        ("missing_module:agent", {}, "agent.import_path 'missing_module:agent': no module named 'missing_module'"),
        ("my_agents:nothing", {}, "agent.import_path 'my_agents:nothing': my_agents has no attribute 'nothing'"),
        ("my_agents:NeedsArgs", {}, "agent: NeedsArgs() needs arguments"),
        ("my_agents:answer", {"kind": "langgraph"}, "agent.kind is langgraph but my_agents:answer is a function"),
    ]
    for import_path, agent, expected in cases:
        run_config(tmp_path, store_url, import_path, **agent)
        result = atlas("run", "-c", "atlas.yaml", "--task", "6 * 7", cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (import_path, result.stderr)
        assert lines[0].startswith(f"atlas: error: {expected}"), lines[0]
        assert result.stdout == ""
    (tmp_path / "atlas.yaml").write_text("agent: {import_path: not-a-path}\n")
    result = atlas("run", "--task", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("atlas: error: atlas.yaml: agent.import_path: Value error, expected 'package.module:object', "
                                     "e.g. my_project.agent:graph (got 'not-a-path')")


# ---------------------------------------------------------------------------------------------------------- help
def test_help_lists_every_command_and_loads_nothing_heavy() -> None:
    result = cli(None, "--help")
    for command in ("sessions", "show", "review", "export", "playbook", "report", "env", "run"):
        assert command in result.stdout
    assert "approve" in cli(None, "review", "--help").stdout and "retire" in cli(None, "playbook", "--help").stdout
    probe = ("import sys; from atlas_learning.cli import app; "
             "print(sorted(m for m in ('sqlalchemy', 'sqlmodel', 'matplotlib', 'atlas_learning._commands', "
             "'atlas_learning.store', 'langgraph', 'agents') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
