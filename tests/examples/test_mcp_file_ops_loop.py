"""The local loop's plumbing on a tiny model: demonstrations are recorded and approved, the student's turns are
trained on, and the base and the trained checkpoints are each served back as the student role on held-out
workspaces and tasks. (The real SmolLM2 run is benchmarks/local_loop.py: minutes, not a test.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
# mcp's stdio client takes ``errlog=sys.stderr`` as a default bound when it is first imported: imported here, before
# any test's capfd replaces sys.stderr (and closes it after that test), the MCP server of every test can log.
import mcp.client.stdio  # noqa: E402, F401

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


def test_the_loop_takes_a_configured_teacher_s_demonstrations_and_the_student_s_own_successes(
        monkeypatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``--teacher``: the demonstrations come from atlas.yaml's ``models.teacher`` served as the agent's model (here a
    scripted model that answers task 1 right on each training workspace); ``--own``: the base student works the
    training workspaces too, and only its runs that passed are trained on (the tiny base passes none)."""
    import yaml

    from atlas_learning.train import base_model, build_tiny_model
    from examples.mcp_file_ops.tasks import TASKS, variant_numbers
    from examples.mcp_file_ops.workspace import pristine_files

    tiny = build_tiny_model(tmp_path / "tiny")
    monkeypatch.setattr(base_model, "trainable_checkpoint", lambda ref, **_: str(tiny))
    monkeypatch.setitem(loop.SIZES, "quick", loop.LoopSize(train_tasks=(1,), heldout_tasks=(4,), demo_variants=2,
                                                            eval_variants=1, steps=2))
    responses = []
    for variant in variant_numbers("train", 2):  # what a capable model would answer on each training workspace
        folder = tmp_path / f"ws{variant}"
        for name, data in pristine_files(variant).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        solution = TASKS[0].in_variant(variant).solution(folder)
        responses += [{"step": {"action": c.name, "arguments": c.args}} for c in solution.calls]
        responses.append({"step": {"action": "final_answer", "answer": solution.answer}})
    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({"models": {"teacher": {"provider": "scripted", "model": "capable",
                                                             "options": {"responses": responses}}}}))
    out = tmp_path / "loop"
    assert main(["loop", "--quick", "--teacher", "--own", "-c", str(config), "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    saved = json.loads((out / "loop.json").read_text())
    assert saved["demonstrator"] == "the configured teacher model (scripted capable)"
    assert saved["demonstrations"] == 2 and saved["approved"] == 2 and saved["examples"] == 4
    assert saved["own_runs"] == 2 and saved["own_approved"] == 0 and "own runs" in saved["seconds"]
    assert "the student's own runs 2, verified successes added 0" in printed
    with Store(f"sqlite:///{out / 'loop.db'}") as store:
        sessions = store.rows(SessionRecord)
        demos = [s for s in sessions if s.learning_key == "loop-demo"]
        assert len(demos) == 2 and all(s.review_status == "approved" for s in demos)
        assert all(s.session_metadata["demonstrator"] == saved["demonstrator"] for s in demos)
        own = [s for s in sessions if s.learning_key == "loop-own"]
        assert len(own) == 2 and not [s for s in own if s.review_status == "approved"]
        assert all(s.session_metadata.get("variant") < 100_001 for s in own)  # training workspaces only


def test_loop_teacher_without_a_configured_teacher_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "atlas.yaml"
    config.write_text("models: {}\n")
    assert main(["loop", "--quick", "--teacher", "-c", str(config), "--out", str(tmp_path / "loop")]) == 1
    assert "configures no models.teacher" in capfd.readouterr().err
