"""atlas train's output: the summary alone on stdout, TRL's per-step logs in metrics.jsonl, at most one bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from atlas_learning.config import AtlasConfig  # noqa: E402
from atlas_learning.export import export_sessions  # noqa: E402
from atlas_learning.store import Store  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402
from tests.support import ScriptedRoles, default_answers, run_with_terminal_stderr  # noqa: E402

ENTRY = "import sys; sys.argv[0] = 'atlas'; from atlas_learning.cli import main; main()"


def _traces(store_url: str, tmp_path: Path) -> Path:
    """10 approved sessions in which the teacher answered "What is a + b?" itself (every sum is 4), exported: GRPO
    on the tiny model gets a reward signal from the expected answer within a few steps."""
    answers = default_answers()
    answers["teacher"].update({"text": "4"})
    config = AtlasConfig.load({"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")},
                               "supervision": {"lane": "escalate"}, "review": {"auto_approve_min_reward": 0.5},
                               "drift": {"enabled": False}}, environ={})
    with Supervisor(config, models=ScriptedRoles(config, answers)) as supervisor:
        for a in [0, 1, 2, 3, 4] * 2:
            run = supervisor.begin(f"What is {a} + {4 - a}? Answer with the number only.", agent_name="adder",
                                   metadata={"ground_truth": "4"})
            run.finish(run.escalate())
    traces = tmp_path / "traces.jsonl"
    with Store(store_url) as store:
        assert export_sessions(store, traces) == 10
    return traces


TRAIN = ["train", "grpo", "--set", "max_steps=3", "--set", "max_completion_length=64", "--set", "held_out=0.4", "--set", "rewards=expected_answer", "--json"]


def test_train_prints_only_the_summary_and_logs_each_step_to_metrics_jsonl(sqlite_url: str, tmp_path: Path) -> None:
    traces = _traces(sqlite_url, tmp_path)  # trained from the exported file: the store is not the subject
    out = tmp_path / "teacher"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    result = subprocess.run([sys.executable, "-c", ENTRY, *TRAIN, "--data", str(traces), "--output", str(out)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is the one summary object
    assert summary["steps"] == 3 and summary["metrics_path"] == str(out / "metrics.jsonl")
    assert "'loss'" not in result.stderr and "{'" not in result.stderr  # no per-step dicts anywhere
    assert "it/s]" not in result.stderr and "s/it]" not in result.stderr  # no tqdm bar when stderr is not a terminal
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]  # one line per logging step (logging_steps 1)
    assert all("loss" in line and "reward" in line for line in lines)
    final = json.loads((out / "atlas_train.json").read_text())
    assert final["train_metrics"]["train_runtime"] > 0  # the trainer's closing summary, kept out of metrics.jsonl


def test_on_a_terminal_train_draws_one_bar(sqlite_url: str, tmp_path: Path) -> None:
    traces = _traces(sqlite_url, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")} | {"COLUMNS": "160", "TERM": "xterm"}
    result, terminal = run_with_terminal_stderr(
        [sys.executable, "-c", ENTRY, *TRAIN, "--data", str(traces), "--output", str(tmp_path / "teacher")],
        cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, terminal
    assert "atlas train grpo" in terminal and "3/3" in terminal  # Atlas's bar, to the last step
    assert "it/s]" not in terminal and "s/it]" not in terminal and "{'loss'" not in terminal  # and nothing else's
    assert json.loads(result.stdout)["steps"] == 3
