"""The local loop's plumbing on a tiny model: demonstrations are recorded and approved, the student's turns are
trained on, and the base and the trained checkpoints are each served back as the student role on held-out
workspaces and tasks. (The real SmolLM2 run is benchmarks/local_loop.py: minutes, not a test.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from atlas_learning.store import SessionRecord, Store  # noqa: E402
from examples.mcp_file_ops import loop  # noqa: E402
from examples.mcp_file_ops.__main__ import main  # noqa: E402


def test_the_loop_trains_on_approved_demonstrations_and_serves_both_checkpoints_back(monkeypatch, tmp_path: Path,
                                                                                       capfd: pytest.CaptureFixture[str]) -> None:
    from atlas_learning.train import base_model, build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    bases: list[str] = []
    monkeypatch.setattr(base_model, "trainable_checkpoint", lambda ref, **_: bases.append(ref) or str(tiny))
    monkeypatch.setitem(loop.SIZES, "quick", loop.LoopSize(train_tasks=(1,), heldout_tasks=(4,), demo_variants=2,
                                                            eval_variants=1, steps=2))
    monkeypatch.setitem(loop.SFT_SETTINGS, "learning_rate", 5e-3)
    out = tmp_path / "loop"
    assert main(["loop", "--quick", "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert bases[0] == "smollm2"  # the embedded model is the base (the trainer then resolves the folder it is given)
    saved = json.loads((out / "loop.json").read_text())
    assert saved["demonstrations"] == 2 and saved["approved"] == 2 and saved["examples"] == 4  # a call and an answer each
    for phase in ("before", "after"):
        assert [len(saved[phase][split]) for split in ("held-out workspaces", "held-out tasks")] == [1, 1]
    assert set(saved["seconds"]) == {"demonstrations", "evaluate before", "sft", "evaluate after"}
    assert "held-out workspaces" in printed and "training examples 4" in printed
    assert (out / "student" / "config.json").is_file() and (out / "loop.png").is_file()
    with Store(f"sqlite:///{out / 'loop.db'}") as store:
        sessions = store.rows(SessionRecord)
        demos = [s for s in sessions if s.learning_key == "loop-demo:scripted"]
        assert len(demos) == 2 and all(s.review_status == "approved" for s in demos)
        assert all("standing in for a strong teacher" in s.session_metadata["demonstrator"] for s in demos)
        # the evaluations ran on held-out workspaces only, never on a training one
        evaluated = [s.session_metadata.get("variant") for s in sessions if s.learning_key in ("loop-before", "loop-after")]
        assert len(evaluated) == 4 and all(v >= 100_001 for v in evaluated)
        assert all(s.session_metadata.get("variant") < 100_001 for s in demos)
