"""The user-facing commands: sessions, show, review, export, playbook, report, env init, run.

Each store test runs on SQLite and PostgreSQL (``store_url``). Sessions are made by the real core on scripted
models (tests/support.py); the commands read the same database through a config file passed with ``--config``.
``atlas run`` is run in a fresh process, as a user would, with scripted models in its config.
"""

from __future__ import annotations

import importlib.util
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
    """A runtime failure (the store, a model, what the store holds): exactly one line on stderr, exit status 1."""
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"atlas: error: {starts}"), result.stderr


def usage_error(result: Any, command: str, starts: str) -> None:
    """A usage error: exactly one line on stderr naming the command and its help, exit status 2."""
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.rstrip("\n")
    assert line.startswith(f"{command}: {starts}") and line.endswith(f"(see {command} -h)"), line


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
    assert "showing 1 of 5" in cli(config, "sessions", "--limit", "1").stderr  # piped: stdout holds the rows only

    usage_error(cli(config, "sessions", "--status", "done"), "atlas sessions", "--status: expected one of pending, approved, quarantined")
    usage_error(cli(config, "sessions", "--since", "last week"), "atlas sessions", "--since: expected an ISO date or time")


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
    assert "session reward 0.9 (ok; 3 of 3 judge samples answered)" in text and "breakdown: outcome 0.9," in text
    assert text.count("small ") >= 3  # one row per judge sample
    assert cli(config, "show", session_id).stdout == text  # the full id works too


def test_show_rejects_short_unknown_and_ambiguous_prefixes(world) -> None:
    config = world["config"]
    with Store(world["store_url"]) as store:
        store.add(SessionRecord(id="abcdef01" + "0" * 24, learning_key="k", task="t"),
                  SessionRecord(id="abcdef01" + "1" * 24, learning_key="k", task="t"))
    one_error_line(cli(config, "show", "abcdef01"), "session prefix 'abcdef01' is ambiguous")
    assert cli(config, "show", "abcdef011").exit_code == 0
    usage_error(cli(config, "show", "abc"), "atlas show", "session 'abc': give the full id or at least its first 8")
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
    changed = json_lines(result.stdout)  # JSON Lines: one object per session chosen
    assert [c["changed"] for c in changed] == [True] * 4 and {c["session_id"] for c in changed} == {*ids["files"], ids["math"][0]}
    assert {(c["from"], c["to"]) for c in changed} == {("pending", "approved")}
    with Store(world["store_url"]) as store:
        assert store.get(SessionRecord, ids["math"][1]).review_status == "pending"  # reward 0.16 stays pending
        assert store.get(SessionRecord, "running-1").review_status == "pending"
        assert len(store.rows(ReviewLogRecord)) == 4
    assert cli(config, "review", "quarantine", "--all-pending").stdout.startswith("quarantined 1 session")  # not the running one
    usage_error(cli(config, "review", "approve"), "atlas review approve", "name the sessions to approve")
    usage_error(cli(config, "review", "approve", ids["math"][0], "--min-reward", "0.5"), "atlas review approve",
                "--min-reward selects among pending")
    again = json_lines(cli(config, "review", "approve", ids["math"][0], "--json").stdout)
    assert again == [{"session_id": ids["math"][0], "from": "approved", "to": "approved", "changed": False, "reviewer": again[0]["reviewer"]}]
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
    usage_error(cli(config, "export", "-o", "-", "--format", "csv"), "atlas export", "--format: expected one of trace, messages, grpo")
    usage_error(cli(config, "export", "-o", "-", "--status", "done"), "atlas export", "--status: expected one of")


# ------------------------------------------------------------------------------------------------------ playbook
def test_playbook_show_history_diff_retire(world) -> None:
    config = world["config"]
    entries = json_lines(cli(config, "playbook", "show", "--json").stdout)  # one live entry per line
    assert {e["learning_key"] for e in entries} == {"files"} and entries[0]["registry_version"] >= 1
    assert [e["lesson"] for e in entries] == [LESSON["lesson"]] and entries[0]["status"] in ("provisional", "active")
    entry_id = entries[0]["id"]
    table = cli(config, "playbook", "show", "--key", "files").stdout
    assert entry_id[:12] in table and LESSON["lesson"] in table

    history = json_lines(cli(config, "playbook", "history", "--key", "files", "--json").stdout)
    assert history[0]["change"] == "add" and history[0]["entry_id"] == entry_id
    added_at = history[0]["registry_version"]
    diff = json_lines(cli(config, "playbook", "diff", "--key", "files", str(added_at - 1), str(added_at), "--json").stdout)
    assert diff == [{"entry_id": entry_id, "change": "added", "lesson": LESSON["lesson"], "status": "provisional"}]
    assert "+ " + entry_id[:12] in cli(config, "playbook", "diff", "--key", "files", str(added_at - 1), str(added_at)).stdout

    retired = cli(config, "playbook", "retire", "--key", "files", entry_id[:10], "--reason", "too vague")
    assert retired.exit_code == 0, retired.output
    assert retired.stdout.startswith(f"retired {entry_id}")
    after = cli(config, "playbook", "show", "--key", "files", "--json")
    assert after.exit_code == 0 and after.stdout == ""  # no live entries: no lines
    history = json_lines(cli(config, "playbook", "history", "--key", "files", "--json").stdout)
    assert history[-1]["change"] == "retire" and history[-1]["status"] == "retired"
    assert history[-1]["reason"] == "manual: too vague"  # every history row says why
    latest = history[-1]["registry_version"]
    diff = json_lines(cli(config, "playbook", "diff", "--key", "files", str(latest - 1), str(latest), "--json").stdout)
    assert diff[0]["status"] == "retired"
    shown_history = cli(config, "playbook", "history", "--key", "files").stdout
    assert "retire" in shown_history and "manual: too vague" in shown_history

    one_error_line(cli(config, "playbook", "retire", "--key", "files", entry_id), f"no live entry '{entry_id}'")
    one_error_line(cli(config, "playbook", "diff", "--key", "files", "0", "99"), "TO 99: the playbook of 'files' has versions")

    with Store(world["store_url"]) as store:  # a key whose playbook exists and has learned nothing yet
        store.add(PlaybookRegistryRecord(learning_key="fresh"))
    empty = cli(config, "playbook", "history", "--key", "fresh")
    assert empty.stdout == ""  # piped: the words go to stderr, stdout holds rows only
    assert "no playbook history for 'fresh'; it has no lessons yet (other keys: files" in empty.stderr
    assert "known keys" not in empty.stderr  # never "unknown" beside a list that holds it
    assert "known keys: files, fresh" in cli(config, "playbook", "history", "--key", "nope").stderr


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
    usage_error(cli(config, "report", "--plot", str(tmp_path / "curve.jpg")), "atlas report", "--plot")


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
    assert answer == "42" and "lane coach" in summary and "reward 0.845" in summary  # 0.6*0.9 + 0.25*0.8 + 0.15*0.7

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
        assert result.returncode == 1 and len(lines) == 1, (import_path, result.stderr)
        assert lines[0].startswith(f"atlas: error: {expected}"), lines[0]
        assert result.stdout == ""
    (tmp_path / "atlas.yaml").write_text("agent: {import_path: not-a-path}\n")
    result = atlas("run", "--task", "x", cwd=tmp_path)
    assert result.returncode == 1
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


# ------------------------------------------------------------------------------------------ conventions (issue 18)
def test_every_command_prints_json_in_its_shape(world, tmp_path: Path) -> None:
    """--json: JSON Lines for listings (each line one object), one compact object (one line) otherwise."""
    config, ids = world["config"], world["ids"]

    def listing(*args: str) -> list[dict[str, Any]]:
        result = cli(config, *args, "--json")
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]  # every line parses on its own
        assert rows and all(isinstance(row, dict) for row in rows), args
        return rows

    def single(*args: str, with_config: bool = True) -> dict[str, Any]:
        result = cli(config if with_config else None, *args, "--json")
        assert result.exit_code == 0, result.output
        assert result.stdout.count("\n") == 1, (args, result.stdout)  # compact: one line
        data = json.loads(result.stdout)
        assert isinstance(data, dict), args
        return data

    assert len(listing("sessions")) == 5
    assert single("show", ids["files"][0])["session_id"] == ids["files"][0]
    assert single("report")["count"] == 5
    assert single("config")["storage"]["url"] == world["store_url"]
    assert [r["session_id"] for r in listing("review", "approve", ids["files"][0])] == [ids["files"][0]]
    exported = single("export", "-o", str(tmp_path / "out.jsonl"))
    assert exported == {"exported": 1, "format": "trace", "output": str(tmp_path / "out.jsonl"), "review_status": ["approved"]}
    entry = listing("playbook", "show")[0]
    history = listing("playbook", "history", "--key", "files")
    assert history[0]["entry_id"] == entry["id"]
    assert listing("playbook", "diff", "--key", "files", "0", str(entry["registry_version"]))[0]["entry_id"] == entry["id"]
    retired = single("playbook", "retire", entry["id"], "--key", "files")
    assert retired["entry_id"] == entry["id"] and retired["registry_version"] == entry["registry_version"] + 1
    project = tmp_path / "project"
    make_project(project)
    written = single("env", "init", str(project), with_config=False)
    assert written["written"] == str(project / "atlas.yaml") and written["agent"]["kind"] == "langgraph"
    usage_error(cli(config, "export", "-o", "-", "--json"), "atlas export", "--json prints what was exported on stdout")


def test_piped_tables_are_tab_separated_and_never_cut(world) -> None:
    """Off a terminal (CliRunner's stdout is not one) a listing is TSV under one header line, every value whole."""
    config = world["config"]
    long_key = "a-learning-key-far-longer-than-any-column-" * 3
    with Store(world["store_url"]) as store:
        store.add(SessionRecord(id="feedc0de" * 4, learning_key=long_key, task="t", lane="auto", status="completed",
                                reward=0.8999999999999999, total_tokens=123456789))
    lines = cli(config, "sessions").stdout.splitlines()
    assert lines[0] == "id\tkey\tlane\tstatus\treward\treview\tsteps\ttokens\tstarted (UTC)"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 6 and all(len(row) == 9 for row in rows)
    assert ["feedc0de" * 4, long_key, "auto", "completed", "0.9", "pending", "0", "123456789"] == rows[0][:8]
    assert all(len(row[0]) == 32 for row in rows)  # whole ids, for `cut -f1 | xargs atlas review approve`
    assert "…" not in "\n".join(lines)

    report = cli(config, "report", "--key", long_key).stdout.splitlines()
    assert report[0] == "#\tsession\tstarted (UTC)\tlane\treward\ttool calls\ttokens\tsupervision"
    assert report[1].split("\t")[:2] == ["1", "feedc0de" * 4] and report[1].split("\t")[4] == "0.9"
    playbook = cli(config, "playbook", "show").stdout.splitlines()
    assert playbook[0] == "key\tid\tstatus\tfor\tfamily\tlesson\tuses\timpact\tv\tsources"
    assert playbook[1].split("\t")[0] == "files" and f"{LESSON['lesson']} (when {LESSON['applies_when']})" in playbook[1].split("\t")
    history = cli(config, "playbook", "history", "--key", "files").stdout.splitlines()
    assert history[0].split("\t")[:3] == ["version", "change", "entry"] and len(history[1].split("\t")[2]) == 32


@pytest.mark.parametrize("width", [120, 100, 60])
def test_tables_on_a_narrow_terminal_wrap_instead_of_cutting(width: int) -> None:
    """On a terminal free text (the key, the time) wraps to make room; short values never shrink; a terminal too
    narrow even then gets the table uncropped at the width it needs. No value loses a character."""
    import io

    from rich.console import Console

    from atlas_learning._commands._common import print_table
    from atlas_learning._commands.sessions import SESSION_COLUMNS

    out = Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)
    key = "customer-support-triage-agent-for-the-eu-region"
    values = ["0123456789abcdef" * 2, key, "escalate", "completed", "0.845", "quarantined (drift)", 12, 123456, "2026-12-03 07:34:23"]
    print_table(SESSION_COLUMNS, [values], out=out)
    text = out.file.getvalue()
    assert "…" not in text
    if width >= 120:
        assert all(len(line) <= width for line in text.splitlines())
    # every character of every header and value is printed, once (the id shortened to 12 on a terminal)
    printed = sorted("".join(text.split()))
    shown = ["0123456789ab", *values[1:]]
    assert printed == sorted("".join(c.name for c in SESSION_COLUMNS).replace(" ", "") + "".join("".join(str(v).split()) for v in shown))
    for short_value in ("escalate", "completed", "0.845", "123456"):  # short values are never folded
        assert short_value in text


def test_readers_never_create_a_store_and_say_where_they_looked(store_url: str, tmp_path: Path, monkeypatch) -> None:
    """In an empty folder (the default URL) and at an empty database (--store), each reader fails in one line naming
    where it looked and how to point elsewhere, and leaves nothing behind."""
    monkeypatch.chdir(tmp_path)
    readers = [["sessions"], ["show", "0123456789abcdef"], ["report"], ["playbook", "show"], ["playbook", "history", "--key", "k"],
               ["playbook", "diff", "0", "1", "--key", "k"], ["playbook", "retire", "0123abcd", "--key", "k"],
               ["export", "-o", str(tmp_path / "out.jsonl")]]
    if importlib.util.find_spec("trl") is not None:  # without the train extra, train says that first
        readers.append(["train", "grpo", "-o", str(tmp_path / "teacher")])
    for reader in readers:
        result = cli(None, *reader)
        one_error_line(result, f"no store at {tmp_path / '.atlas' / 'atlas.db'} (no such file; sqlite:///.atlas/atlas.db from the default storage.url)")
        assert "--store URL, ATLAS_STORAGE__URL or storage.url in atlas.yaml" in result.stderr
        result = cli(None, *reader, "--store", store_url)
        where = store_url.split("sqlite:///", 1)[-1] if store_url.startswith("sqlite") else store_url
        one_error_line(result, f"no store at {where} (")
        assert "from --store)" in result.stderr, result.stderr
    assert not (tmp_path / ".atlas").exists() and not (tmp_path / "out.jsonl").exists() and not (tmp_path / "teacher").exists()
    if store_url.startswith("sqlite"):
        assert not Path(store_url.split("sqlite:///", 1)[1]).exists()
    else:
        from sqlalchemy import create_engine, inspect

        engine = create_engine(store_url)
        try:
            assert inspect(engine).get_table_names() == []  # nothing created in the empty schema
        finally:
            engine.dispose()
    result = cli(None, "sessions", env={"ATLAS_STORAGE__URL": store_url})
    assert result.exit_code == 1 and "from ATLAS_STORAGE__URL)" in result.stderr


def test_a_store_at_an_older_schema_is_still_read_and_upgraded(store_url: str) -> None:
    from atlas_learning.store import MIGRATIONS, SCHEMA_VERSION

    with Store(store_url, migrate=False) as store:
        assert store.migrate(MIGRATIONS[:-1]) == SCHEMA_VERSION - 1
        store.add(SessionRecord(id="0ld5e551" * 4, learning_key="old", task="t", status="completed"))
    result = cli(None, "sessions", "--json", "--store", store_url)
    assert result.exit_code == 0, result.output
    assert [s["id"] for s in json_lines(result.stdout)] == ["0ld5e551" * 4]
    with Store(store_url, migrate=False) as store:
        assert store.schema_version() == SCHEMA_VERSION


def test_writers_may_create_the_store(store_url: str, tmp_path: Path) -> None:
    result = cli(None, "review", "approve", "--all-pending", "--store", store_url)
    assert result.exit_code == 0 and result.stdout.startswith("approved 0 sessions"), result.output
    with Store(store_url, migrate=False) as store:
        assert store.schema_version() > 0


def test_export_refuses_a_missing_folder(world, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.jsonl"
    one_error_line(cli(world["config"], "export", "-o", str(missing)), f"--output {missing}: folder {missing.parent} does not exist")
    assert not (tmp_path / "no").exists()
    usage_error(cli(world["config"], "export"), "atlas export", "--output: name the .jsonl file to write")


def test_show_a_failed_session_honestly(store_url: str, tmp_path: Path) -> None:
    """The error of a failed session is shown; an empty plan prints no header; a judge summary never says ok when
    every judge failed; numbers are rounded for display only."""
    from atlas_learning.store import PlanRecord, RewardRecord

    session_id = "fa11ed00" * 4
    with Store(store_url) as store:
        store.add(SessionRecord(id=session_id, learning_key="k", task="t", status="failed", reward=0.8999999999999999,
                                lane="paired", lane_confidence=0.6666666666666666, session_metadata={"error": "RuntimeError: tool crashed"}))
        store.add(PlanRecord(session_id=session_id, kind="reviewed", steps=[], concerns=[]),
                  RewardRecord(session_id=session_id, scope="session", score=0.8999999999999999, status="ok", escalated=True,
                               breakdown={"checks": {"exists": 0.8999999999999999}},
                               samples=[{"judge": "small", "temperature": 0.2, "error": "timeout"},
                                        {"judge": "large", "temperature": 0.0, "error": "refused"}]))
    config = write_config(tmp_path, store_url)
    text = cli(config, "show", session_id).stdout
    assert "error        RuntimeError: tool crashed" in text
    assert "plan (" not in text  # the review changed nothing and raised nothing
    assert "session reward 0.9 (scored by verifiable checks; every judge failed (2 samples))" in text
    assert "breakdown: checks (exists 0.9)" in text
    assert "arbitrated" not in text and "(ok" not in text
    assert "0.8999999999999999" not in text and "confidence 0.667" in text
    trace = json.loads(cli(config, "show", session_id, "--json").stdout)
    assert trace["session_reward"]["score"] == 0.8999999999999999  # --json keeps the full value
