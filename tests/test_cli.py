"""The atlas command: help, config validation, quickstart; errors are one line (exit status 2 for usage, 1 otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from atlas_learning.cli import app
from atlas_learning.store import SCHEMA_VERSION, Store

runner = CliRunner()


def atlas(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a fresh process, as a user would."""
    code = "from atlas_learning.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=_clean_env())


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "quickstart" in result.output and "config" in result.output


@pytest.mark.parametrize("command", [[], ["sessions"], ["playbook", "show"], ["review"], ["env", "init"]])
def test_dash_h_is_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert f"Usage: atlas {' '.join(command)}".rstrip() in " ".join(result.output.split())


def test_version() -> None:
    assert runner.invoke(app, ["--version"]).output.startswith("atlas-plugins ")


def test_config_prints_effective_values(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_text("models:\n  teacher: {provider: openai, model: gpt-4.1-mini}\n")
    result = atlas("config", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["models"]["teacher"]["model"] == "gpt-4.1-mini"
    assert data["storage"]["url"] == "sqlite:///.atlas/atlas.db"


def test_invalid_config_is_one_line_and_exit_1(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_text("models:\n  judge_small:\n    max_tokens: -5\n")
    result = atlas("config", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "atlas: error: atlas.yaml: models.judge_small.max_tokens: Input should be greater than 0 (got -5)"
    assert result.stdout == ""


def test_quickstart_checks_config_store_and_teacher(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_text(
        "models:\n  default:\n    provider: scripted\n    options:\n      responses: ['{\"answer\": \"Paris\", \"confident\": true}']\n"
        f"storage:\n  url: sqlite:///{tmp_path / 'q.db'}\n"
    )
    result = atlas("quickstart", "--model", "scripted", "--tasks", "1-2", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"schema version {SCHEMA_VERSION}" in result.stdout
    assert "teacher     skipped (--model scripted" in result.stdout  # scripted supervision: no model to check
    assert "success 2/2" in result.stdout  # then the main example ran, here with its scripted agent
    assert (tmp_path / "q.db").is_file() and (tmp_path / "out" / "results.json").is_file()


def test_unreachable_store_is_one_line(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_text("storage: {url: 'postgresql+psycopg://postgres@127.0.0.1:1/none'}\n")
    result = atlas("quickstart", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atlas: error: cannot use PostgreSQL at postgresql+psycopg://postgres@127.0.0.1:1/none")


def test_bad_bytes_and_out_of_range_numbers_are_one_line_errors(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_bytes(b"storage:\n  url: sqlite:///\xff\xfe.db\n")
    result = atlas("config", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "atlas.yaml: not UTF-8 text" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "atlas.yaml").unlink()
    result = subprocess.run([sys.executable.encode(), b"-c", b"from atlas_learning.cli import main; main()", b"sessions",
                             b"--key", b"k\xff"], capture_output=True, cwd=tmp_path, env=_clean_env())
    assert result.returncode == 2 and b"argument 3" in result.stderr and b"not valid UTF-8" in result.stderr
    assert b"Traceback" not in result.stderr
    result = atlas("sessions", "--limit", str(10**20), cwd=tmp_path)
    assert result.returncode == 2 and "--limit: at most" in result.stderr and "Traceback" not in result.stderr
    Store(f"sqlite:///{tmp_path / '.atlas' / 'atlas.db'}").close()  # an empty store, where the default URL looks
    result = atlas("sessions", "--since", "3000000d", cwd=tmp_path)  # before year 1: every session is newer
    assert result.returncode == 0, result.stderr
    assert "no sessions match" in result.stderr and result.stdout.startswith("id\tkey\tlane\tstatus\treward")


def _leaf_commands() -> list[list[str]]:
    """Every runnable command's words, found by walking the app's command tree (new commands are included)."""
    import typer

    paths: list[list[str]] = []

    def walk(command, words: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, [*words, name])
        else:
            paths.append(words)

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_has_help_with_examples_and_plain_flags() -> None:
    leaves = _leaf_commands()
    assert {"sessions", "show", "export", "report", "run", "config", "quickstart"} <= {p[0] for p in leaves}
    assert ["review", "approve"] in leaves and ["playbook", "retire"] in leaves and ["train", "grpo"] in leaves
    for words in leaves:
        result = runner.invoke(app, [*words, "-h"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (words, result.output)
        text = result.stdout
        assert f"Usage: atlas {' '.join(words)}" in text, words
        assert "Examples:\n    atlas " in text, words  # at least one usage example, kept line by line
        assert "<bool>" not in text and "╭" not in text, words  # flags carry no metavar; plain text, no rich box


@pytest.mark.parametrize(("argv", "command", "message"), [
    (["sessions", "--bogus"], "atlas sessions", "no such option: --bogus"),
    (["sessions", "--limit", "many"], "atlas sessions", "invalid value for '--limit' / '-n'"),
    (["bogus"], "atlas", "no such command 'bogus'"),
    (["show"], "atlas show", "missing argument 'SESSION'"),
    (["run"], "atlas run", "missing option '--task' / '-t'"),
    (["review", "approve", "--jsn"], "atlas review approve", "no such option: --jsn"),
    (["playbook", "history"], "atlas playbook history", "missing option '--key' / '-k'"),
    (["sessions", "--lane", "fast"], "atlas sessions", "--lane: expected one of auto, paired, coach, escalate, got 'fast'"),
    (["report", "--window", "0"], "atlas report", "--window: expected at least 1 session, got 0"),
    (["train", "grpo", "-o", "out", "--set", "nonsense"], "atlas train grpo", "--set 'nonsense': expected key=value"),
    (["sessions", "--store", "mysql://db"], "atlas sessions", "--store 'mysql://db': Value error, expected a sqlite:/// or postgresql"),
    (["export", "-o", "-", "--json"], "atlas export", "--json prints what was exported on stdout"),
])
def test_usage_errors_are_one_line_with_exit_2(argv: list[str], command: str, message: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no store: a usage error is found before any is opened
    result = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.stderr  # exactly one line, nothing else
    assert result.stderr == f"{command}: {message}" + result.stderr[len(command) + 2 + len(message):], result.stderr
    assert result.stderr.rstrip("\n").endswith(f"(see {command} -h)") and "Usage:" not in result.stderr
    assert not (tmp_path / ".atlas").exists()


def test_the_console_entry_point_keeps_the_conventions(tmp_path) -> None:
    usage = atlas("sessions", "--bogus", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stderr == "atlas sessions: no such option: --bogus (see atlas sessions -h)\n"
    missing = atlas("sessions", cwd=tmp_path)  # a runtime failure: exit status 1, one line, no store left behind
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and missing.stderr.startswith("atlas: error: no store at ")
    assert not (tmp_path / ".atlas").exists()
    bare = atlas("review", cwd=tmp_path)  # a group without its command: its help, and the usage status
    assert bare.returncode == 2 and bare.stdout.startswith("Usage: atlas review") and "approve" in bare.stdout


def test_no_color_is_honoured_on_a_terminal(monkeypatch, capsys) -> None:
    from rich.text import Text

    from atlas_learning._commands._common import console

    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, as far as rich is concerned
    monkeypatch.delenv("NO_COLOR", raising=False)
    console().print(Text("rejected", style="red"))
    assert "\x1b[31m" in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    console().print(Text("rejected", style="red"))
    out = capsys.readouterr().out
    assert "rejected" in out and "\x1b[31m" not in out


def test_quickstart_json_is_one_object_and_its_checks_go_to_stderr(tmp_path) -> None:
    result = atlas("quickstart", "--model", "scripted", "--tasks", "1-2", "--compare", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # compact: one line, one object, nothing else on stdout
    data = json.loads(result.stdout)
    assert data["out"] == ".atlas/mcp_file_ops" and set(data) == {"out", "learning", "baseline"}
    assert data["learning"]["summary"]["runs"] == 2 and data["baseline"]["mode"] == "baseline"
    assert "config      ok" in result.stderr and "success 2/2" in result.stderr
    usage = atlas("quickstart", "--baseline", "--compare", "--json", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stdout == "" and usage.stderr.count("\n") == 1
