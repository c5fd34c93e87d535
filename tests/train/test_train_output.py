"""atlas train's output: the summary alone on stdout, TRL's per-step logs in metrics.jsonl, at most one bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from atlas_learning.export import export_sessions  # noqa: E402
from atlas_learning.store import Store  # noqa: E402
from tests.support import make_supervisor  # noqa: E402, F401 - the fixture
from tests.train.conftest import record_sums, teacher_verdict  # noqa: E402

ENTRY = "import sys; sys.argv[0] = 'atlas'; from atlas_learning.cli import main; main()"


def _traces(make, store_url: str, tmp_path: Path) -> Path:
    supervisor = make({"teacher": {"Verdict": teacher_verdict}}, supervision={"lane": "paired", "max_retries": 1},
                      review={"auto_approve_min_reward": 0.5}, drift={"enabled": False})
    record_sums(supervisor, 6)
    supervisor.close()
    traces = tmp_path / "traces.jsonl"
    with Store(store_url) as store:
        assert export_sessions(store, traces) == 6
    return traces


def test_train_prints_only_the_summary_and_logs_each_step_to_metrics_jsonl(make_supervisor, store_url: str,  # noqa: F811
                                                                           tmp_path: Path) -> None:
    traces = _traces(make_supervisor, store_url, tmp_path)
    out = tmp_path / "teacher"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    result = subprocess.run([sys.executable, "-c", ENTRY, "train", "grpo", "--data", str(traces), "--output", str(out),
                             "--set", "max_steps=3", "--set", "held_out=0.34", "--json"],
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
