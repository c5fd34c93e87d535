"""The live status line: drawn from the core's events, only on a terminal, cleared when the sessions finish."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from atlas_learning import progress
from atlas_learning.config import AtlasConfig
from atlas_learning.supervisor import Supervisor
from tests.support import ScriptedRoles, default_answers, run_with_terminal_stderr

REPO = Path(__file__).resolve().parents[1]


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _config(store_url: str, tmp_path: Path) -> AtlasConfig:
    return AtlasConfig.load({"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")},
                             "supervision": {"lane": "paired"}, "drift": {"enabled": False}}, environ={})


def _one_session(supervisor: Supervisor, seen: list[str]) -> None:
    """A paired session with one tool call; ``seen`` gets the status text after every event."""
    display = supervisor.progress

    def spy(event) -> None:  # subscribed after the display: it sees the line the event made
        seen.append(display.render())
        display.refresh()

    supervisor.events.subscribe(spy)
    run = supervisor.begin("How many lines are in notes.txt?", agent_name="counter", learning_key="progress-key")
    run.record_step(kind="tool_call", tool_name="read_file", tool_args={"path": "notes.txt"}, output="a\nb\n")
    run.validate_answer("2 lines")
    run.finish("2 lines")


def test_the_status_line_shows_lane_step_and_supervision_calls(store_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    config = _config(store_url, tmp_path)
    supervisor = Supervisor(config, models=ScriptedRoles(config, default_answers()), progress=True)
    assert isinstance(supervisor.progress, progress.SessionProgress)
    seen: list[str] = []
    try:
        _one_session(supervisor, seen)
    finally:
        supervisor.close()
    assert any("progress-key" in line and "lane paired" in line for line in seen), seen
    stepped = [line for line in seen if "step 1 read_file" in line]
    assert stepped, seen
    calls = [int(line.split(" supervision call")[0].rsplit("  ", 1)[-1]) for line in seen if "supervision call" in line]
    assert calls == sorted(calls) and calls[-1] >= 2, seen  # the teacher's verdict and the judge, at least
    assert seen[-1] == ""  # session_finished took the line away
    drawn = terminal.getvalue()
    assert "step 1 read_file" in drawn and "lane paired" in drawn  # it was drawn on the terminal
    assert supervisor.progress._live is None  # and the display stopped with the last session  # noqa: SLF001


def test_nothing_is_subscribed_or_written_when_stderr_is_not_a_terminal(store_url: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    config = _config(store_url, tmp_path)
    with Supervisor(config, models=ScriptedRoles(config, default_answers()), progress=True) as supervisor:
        assert supervisor.progress is None
        assert supervisor.events._subscribers == [] or all(  # noqa: SLF001 - only what others subscribed
            not isinstance(s, progress.SessionProgress) for s in supervisor.events._subscribers)  # noqa: SLF001
        run = supervisor.begin("What is 2 + 2?", agent_name="adder")
        run.finish("4")
    assert piped.getvalue() == ""
    from atlas_learning.events import EventBus

    assert progress.attach(EventBus(), console=Console(file=io.StringIO())) is None


def test_off_by_default_for_library_use(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    monkeypatch.setattr(progress, "_default", False)
    config = _config(store_url, tmp_path)
    with Supervisor(config, models=ScriptedRoles(config, default_answers())) as supervisor:
        assert supervisor.progress is None
    progress.set_default(True)  # what the atlas command does
    with Supervisor(config, models=ScriptedRoles(config, default_answers())) as supervisor:
        assert supervisor.progress is not None


def test_a_forced_terminal_console_gets_lines_for_concurrent_sessions() -> None:
    from atlas_learning.events import AtlasEvent, EventBus

    buffer = io.StringIO()
    bus = EventBus()
    display = progress.attach(bus, console=Console(force_terminal=True, file=buffer, width=160))
    assert display is not None
    for number in range(progress.MAX_LINES + 2):
        bus.publish(AtlasEvent("session_started", f"s{number}", {"learning_key": f"key-{number}"}))
        bus.publish(AtlasEvent("lane_chosen", f"s{number}", {"lane": "auto"}))
    bus.publish(AtlasEvent("model_call", "s0", {"role": "judge_small", "purpose": "session"}))
    text = display.render()
    assert len(text.splitlines()) == progress.MAX_LINES + 2 and "key-0  lane auto  no steps yet  1 supervision call  judging" in text
    display.refresh()
    drawn = buffer.getvalue()
    assert "… and 2 more sessions in progress" in drawn and "key-4" in drawn and "key-5" not in drawn
    display.close()
    assert bus._subscribers == [] and display.render() == ""  # noqa: SLF001
    bus.publish(AtlasEvent("session_started", "late", {"learning_key": "late"}))  # after close: ignored
    assert display.render() == "" and display._live is None  # noqa: SLF001


def _quickstart(tmp_path: Path, stderr_tty: bool) -> tuple[subprocess.CompletedProcess[bytes], str]:
    return _atlas(tmp_path, stderr_tty, "quickstart", "--model", "scripted", "--tasks", "1-3", "--out", str(tmp_path / "out"))


def _atlas(tmp_path: Path, stderr_tty: bool, *command: str) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """Run the atlas command with stdout piped and stderr piped or a pseudo-terminal; (result, what the terminal got)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    env.update({"PYTHONPATH": str(REPO), "COLUMNS": "200", "TERM": "xterm"})
    args = [sys.executable, "-c", "from atlas_learning.cli import main; main()", *command]
    if not stderr_tty:
        return subprocess.run(args, capture_output=True, cwd=tmp_path, env=env, timeout=120), ""
    return run_with_terminal_stderr(args, cwd=tmp_path, env=env, timeout=120)


def test_quickstart_draws_the_line_on_a_terminal_and_keeps_stdout_clean(tmp_path: Path) -> None:
    result, terminal = _quickstart(tmp_path, stderr_tty=True)
    assert result.returncode == 0, terminal
    assert "mcp-file-ops:scripted" in terminal and "lane paired" in terminal and "supervision call" in terminal
    stdout = result.stdout.decode()
    assert "success 3/3" in stdout and "\x1b[" not in stdout and "supervision call" not in stdout


def test_quickstart_writes_no_status_when_stderr_is_piped(tmp_path: Path) -> None:
    result, _ = _quickstart(tmp_path, stderr_tty=False)
    assert result.returncode == 0, result.stderr
    assert b"supervision call" not in result.stderr and b"\x1b[" not in result.stderr
    assert b"success 3/3" in result.stdout


def test_atlas_run_draws_the_line_on_a_terminal(store_url: str, tmp_path: Path) -> None:
    import textwrap

    from tests.test_cli_commands import AGENTS_MODULE, run_config

    (tmp_path / "my_agents.py").write_text(textwrap.dedent(AGENTS_MODULE))
    config = run_config(tmp_path, store_url, "my_agents:Calculator", name="calculator")
    result, terminal = _atlas(tmp_path, True, "run", "--config", str(config), "--task", "6 * 7")
    assert result.returncode == 0, terminal
    assert "calculator  lane coach" in terminal, terminal
    assert result.stdout.decode().startswith("42\n") and "\x1b[" not in result.stdout.decode()
    piped, _ = _atlas(tmp_path, False, "run", "--config", str(config), "--task", "6 * 7")
    assert piped.returncode == 0 and b"lane coach  " not in piped.stderr and b"\x1b[" not in piped.stderr


def test_a_dumb_terminal_gets_no_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from atlas_learning.events import EventBus

    monkeypatch.setenv("TERM", "dumb")
    bus = EventBus()
    assert progress.attach(bus, console=Console(force_terminal=True, file=io.StringIO())) is None
    assert bus._subscribers == []  # noqa: SLF001


def test_a_model_call_step_and_a_quiet_spell_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from atlas_learning.events import AtlasEvent, EventBus

    bus = EventBus()
    display = progress.attach(bus, console=Console(force_terminal=True, file=io.StringIO(), width=160))
    assert display is not None
    bus.publish(AtlasEvent("lane_chosen", "s", {"lane": "coach"}))
    bus.publish(AtlasEvent("step", "s", {"kind": "model_call", "name": "smollm2-135m-instruct", "tool_name": None}))
    assert "step 1 model call" in display.render() and "last event" not in display.render()
    now = progress.time.monotonic()
    monkeypatch.setattr(progress.time, "monotonic", lambda: now + 12.4)
    assert display.render().endswith("(last event 12s ago)")
    monkeypatch.undo()
    display.close()
