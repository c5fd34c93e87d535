"""The atlas command: help, config validation, quickstart; errors are one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from atlas_learning.cli import app
from atlas_learning.store import SCHEMA_VERSION

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


def test_invalid_config_is_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_text("models:\n  judge_small:\n    max_tokens: -5\n")
    result = atlas("config", cwd=tmp_path)
    assert result.returncode == 2
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
    assert "{'answer': 'Paris', 'confident': True}" in result.stdout
    assert "success 2/2" in result.stdout  # then the main example ran, here with its scripted agent
    assert (tmp_path / "q.db").is_file() and (tmp_path / "out" / "results.json").is_file()


def test_unreachable_store_is_one_line(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_text("storage: {url: 'postgresql+psycopg://postgres@127.0.0.1:1/none'}\n")
    result = atlas("quickstart", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atlas: error: cannot use PostgreSQL at postgresql+psycopg://postgres@127.0.0.1:1/none")


def test_bad_bytes_and_out_of_range_numbers_are_one_line_errors(tmp_path) -> None:
    (tmp_path / "atlas.yaml").write_bytes(b"storage:\n  url: sqlite:///\xff\xfe.db\n")
    result = atlas("config", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "atlas.yaml: not UTF-8 text" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "atlas.yaml").unlink()
    result = subprocess.run([sys.executable.encode(), b"-c", b"from atlas_learning.cli import main; main()", b"sessions",
                             b"--key", b"k\xff"], capture_output=True, cwd=tmp_path, env=_clean_env())
    assert result.returncode == 2 and b"argument 3" in result.stderr and b"not valid UTF-8" in result.stderr
    assert b"Traceback" not in result.stderr
    result = atlas("sessions", "--limit", str(10**20), cwd=tmp_path)
    assert result.returncode == 2 and "--limit: at most" in result.stderr and "Traceback" not in result.stderr
    result = atlas("sessions", "--since", "3000000d", cwd=tmp_path)  # before year 1: every session is newer
    assert result.returncode == 0, result.stderr
    assert "no sessions match" in result.stdout
