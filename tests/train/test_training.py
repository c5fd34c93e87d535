"""Short CPU training runs on TRL's own trainers: GRPO raises the held-out reward, checkpoints reload as a role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from typer.testing import CliRunner  # noqa: E402

from atlas_learning.cli import app  # noqa: E402
from atlas_learning.config import AtlasConfig, ModelSettings  # noqa: E402
from atlas_learning.errors import AtlasError  # noqa: E402
from atlas_learning.export import export_sessions  # noqa: E402
from atlas_learning.models import create_model  # noqa: E402
from atlas_learning.store import Store  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402
from atlas_learning.train import load_sessions, make_rewards, teacher_examples, train_grpo, train_sft  # noqa: E402
from tests.support import ScriptedRoles, default_answers  # noqa: E402
from tests.train.conftest import record_sums, teacher_verdict  # noqa: E402


def _supervisor(url: str, lane: str, teacher: dict) -> Supervisor:
    answers = default_answers()
    answers["teacher"].update(teacher)
    config = AtlasConfig.load({"storage": {"url": url}, "supervision": {"lane": lane, "max_retries": 1},
                               "review": {"auto_approve_min_reward": 0.5}, "drift": {"enabled": False}}, environ={})
    return Supervisor(config, models=ScriptedRoles(config, answers))


def _record_escalations(url: str, rounds: int) -> None:
    """``rounds`` x 5 approved sessions where the teacher answered "What is a + b?" itself (all sums are 4)."""
    with _supervisor(url, "escalate", {"text": "4"}) as supervisor:
        for a in [0, 1, 2, 3, 4] * rounds:
            run = supervisor.begin(f"What is {a} + {4 - a}? Answer with the number only.", agent_name="adder",
                                   metadata={"ground_truth": "4"})
            run.finish(run.escalate())


@pytest.fixture(scope="module")
def escalations(tmp_path_factory) -> list[dict]:
    """30 approved sessions where the teacher answered "What is a + b?" itself (all sums are 4)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('esc') / 'atlas.db'}"
    _record_escalations(url, 6)
    return teacher_examples(load_sessions("approved", store_url=url), kinds=["escalation"])


@pytest.fixture(scope="module")
def grpo_run(escalations, tmp_path_factory):
    output = tmp_path_factory.mktemp("grpo") / "teacher"
    result = train_grpo(escalations, output=output, preset="cpu-tiny", rewards=make_rewards(["expected_answer"]),
                        settings={"max_steps": 40, "max_completion_length": 8, "held_out": 0.3}, progress=False)
    return result


def test_grpo_reports_the_served_held_out_reward(grpo_run) -> None:
    """GRPO from a random tiny model raises its sampled training reward (test below) but does not learn to stop
    after the answer in 40 steps: served greedily, as a role calls it, it answers '44444444' and scores 0 before
    and after. The figure printed is that served one, not a sample of the training prompt."""
    assert grpo_run.steps == 40 and grpo_run.held_out_examples == 12  # 2 of the 5 tasks, 6 sessions each
    assert grpo_run.held_out_before == 0.0 and grpo_run.held_out_after is not None
    assert grpo_run.warnings == []  # 12 held-out examples: enough for a figure
    assert grpo_run.seconds_per_step is not None and grpo_run.seconds_per_step > 0


def test_sft_raises_the_served_held_out_reward(escalations, tmp_path) -> None:
    """SFT on the teacher's recorded answers ('4', then the end of sequence): the served checkpoint answers the
    held-out tasks right where the untrained one did not."""
    result = train_sft(escalations, output=tmp_path / "sft", rewards=make_rewards(["expected_answer"]),
                       settings={"max_steps": 40, "eval_max_new_tokens": 8, "held_out": 0.3}, progress=False)
    assert result.held_out_examples == 12 and result.held_out_before == 0.0
    assert result.held_out_after is not None and result.held_out_after >= 0.8, result.held_out_after


def test_a_run_whose_gradients_are_all_zero_says_so_and_fails(escalations, tmp_path) -> None:
    """Every completion rewarded alike: GRPO's advantages, loss and gradients are all 0, and a normal-looking
    summary would hide that nothing was learned."""
    def same_for_all(prompts, completions, **_):
        return [1.0] * len(completions)

    with pytest.raises(AtlasError, match="every logged gradient norm was 0 over 3 steps"):
        train_grpo(escalations, output=tmp_path / "flat", rewards=[same_for_all],
                   settings={"max_steps": 3, "max_completion_length": 4, "held_out": 0.3, "max_eval": 2}, progress=False)
    summary = json.loads((tmp_path / "flat" / "atlas_train.json").read_text())
    assert summary["steps"] == 3 and "fewer than 8" in summary["warnings"][0]  # 2 held-out examples scored


def test_grpo_writes_metrics_plot_and_summary(grpo_run) -> None:
    lines = [json.loads(line) for line in grpo_run.metrics_path.read_text().splitlines()]
    rewards = [line["reward"] for line in lines if "reward" in line]
    assert len(rewards) == 40 and max(rewards[-10:]) > max(rewards[:3])
    summary = json.loads((grpo_run.output_dir / "atlas_train.json").read_text())
    assert summary["held_out_after"] == grpo_run.held_out_after and summary["settings"]["preset"] == "cpu-tiny"
    assert grpo_run.plot_path is not None and grpo_run.plot_path.read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_reloads_as_a_local_role_model(grpo_run) -> None:
    teacher = create_model(ModelSettings(provider="local", model=str(grpo_run.output_dir), max_tokens=8,
                                         temperature=0.0), role="teacher")
    try:
        response = teacher.generate([{"role": "user", "content": "What is 1 + 3? Answer with the number only."}])
    finally:
        teacher.close()
    assert isinstance(response.text, str)
    assert response.usage.input_tokens > 20 and 0 < response.usage.output_tokens <= 8


def test_sft_with_lora_learns_the_recorded_verdicts(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    with _supervisor(url, "paired", {"Verdict": teacher_verdict}) as supervisor:
        record_sums(supervisor, 10)
    examples = teacher_examples(load_sessions("approved", store_url=url), kinds=["answer"])
    result = train_sft(examples, output=tmp_path / "sft", settings={"max_steps": 6, "lora": True, "lora_r": 4},
                       rewards=make_rewards(["verdict"]), progress=False)
    losses = [json.loads(line)["loss"] for line in result.metrics_path.read_text().splitlines() if '"loss"' in line]
    assert result.steps == 6 and len(losses) == 6 and losses[-1] < losses[0]
    assert (tmp_path / "sft" / "model.safetensors").is_file()
    assert not (tmp_path / "sft" / "adapter_config.json").exists()  # LoRA merged: a plain checkpoint


def test_settings_are_checked(escalations, tmp_path) -> None:
    with pytest.raises(AtlasError, match="unknown setting"):
        train_grpo(escalations, output=tmp_path, rewards=make_rewards(["verdict"]), settings={"nonsense": 1})
    with pytest.raises(AtlasError, match="unknown preset"):
        train_grpo(escalations, output=tmp_path, rewards=make_rewards(["verdict"]), preset="tpu")
    with pytest.raises(AtlasError, match="--model is required"):
        train_grpo(escalations, output=tmp_path, rewards=make_rewards(["verdict"]), preset="gpu")
    with pytest.raises(AtlasError, match="no training examples"):
        train_grpo(escalations, output=tmp_path, rewards=make_rewards(["verdict"]), settings={"kinds": ["plan"]})


def test_atlas_train_command_end_to_end(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    with _supervisor(url, "paired", {"Verdict": teacher_verdict}) as supervisor:
        record_sums(supervisor, 6)
    traces = tmp_path / "traces.jsonl"
    with Store(url) as store:
        assert export_sessions(store, traces) == 6
    out = tmp_path / "teacher"
    runner = CliRunner()
    # SFT: two GRPO steps on this tiny model often give every completion the same reward, which the run refuses
    # as "nothing learned" (tested above)
    result = runner.invoke(app, ["train", "sft", "--data", str(traces), "--output", str(out), "--set", "max_steps=2",
                                 "--set", "held_out=0.34", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # --json: one compact object, the last line
    assert summary["steps"] == 2 and summary["train_examples"] > 0 and (out / "config.json").is_file()
    bad = runner.invoke(app, ["train", "grpo", "--data", str(traces), "--output", str(out), "--set", "bogus=1"])
    assert bad.exit_code == 2 and "unknown setting(s) bogus" in bad.output


def test_two_processes_under_torchrun_train_one_model_and_report_once(tmp_path: Path) -> None:
    """torchrun with two CPU processes (gloo): one metrics line per step (not one per rank), the held-out figure
    scored and the summary printed by rank 0 alone, one checkpoint that loads back."""
    import shutil
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    with _supervisor(url, "paired", {"Verdict": teacher_verdict}) as supervisor:
        record_sums(supervisor, 12)
    traces = tmp_path / "traces.jsonl"
    with Store(url) as store:
        export_sessions(store, traces)
    atlas = shutil.which("atlas", path=str(Path(sys.executable).parent))
    torchrun = Path(sys.executable).with_name("torchrun")
    if atlas is None or not torchrun.exists():
        pytest.skip("needs the atlas and torchrun scripts beside this Python")
    out = tmp_path / "teacher"
    # --standalone: a rendezvous on a free local port, so a port another run still holds cannot fail it
    finished = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", atlas, "train", "sft", "--data", str(traces), "-o", str(out),
                               "--set", "max_steps=3", "--set", "held_out=0.3", "--json"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    [line] = finished.stdout.strip().splitlines()  # rank 0 alone reports
    summary = json.loads(line)
    assert summary["steps"] == 3 and summary["held_out_before"] is not None and summary["held_out_after"] is not None
    metrics = [json.loads(row) for row in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics if "loss" in row] == [1, 2, 3]  # one line per step, not one per rank
    teacher = create_model(ModelSettings(provider="local", model=str(out), max_tokens=4), role="teacher")
    try:
        assert teacher.generate("What is 1 + 3?").usage.output_tokens > 0
    finally:
        teacher.close()


def test_gkd_distils_a_teacher_checkpoint_into_a_fresh_model(escalations, tmp_path) -> None:
    """A teacher made by SFT answers the held-out sums; GKD (on-policy samples of a fresh tiny model scored against
    that teacher's token distributions) takes the fresh model's served figure from 0 to the teacher's."""
    from atlas_learning.train import train_gkd

    settings = {"max_steps": 40, "eval_max_new_tokens": 8, "held_out": 0.3}
    rewards = make_rewards(["expected_answer"])
    teacher = train_sft(escalations, output=tmp_path / "teacher", rewards=rewards, settings=settings, progress=False)
    assert teacher.held_out_after is not None and teacher.held_out_after >= 0.8
    student = train_gkd(escalations, output=tmp_path / "student", teacher=tmp_path / "teacher", rewards=rewards,
                        settings=settings, progress=False)
    assert student.held_out_before == 0.0 and student.held_out_after is not None and student.held_out_after >= 0.8
    assert [json.loads(line)["step"] for line in student.metrics_path.read_text().splitlines()][:3] == [1, 2, 3]
    with pytest.raises(AtlasError, match="--teacher"):
        train_gkd(escalations, output=tmp_path / "none", teacher=tmp_path / "missing", settings=settings, progress=False)


def test_atlas_train_gkd_needs_a_teacher(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "gkd", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--teacher" in result.output


def test_a_grpo_export_file_is_training_data(tmp_path: Path) -> None:
    """`atlas export --format grpo` has a consumer: its rows become escalation examples the project's reward
    functions score, GRPOTrainer trains on, and `atlas train sft --data FILE` learns from."""
    from atlas_learning.train import grpo_export_examples, train_grpo

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    _record_escalations(url, 2)
    exported = tmp_path / "grpo.jsonl"
    with Store(url) as store:
        assert export_sessions(store, exported, format="grpo") == 10
    examples = grpo_export_examples(exported)
    assert examples is not None and len(examples) == 10 and {e["kind"] for e in examples} == {"escalation"}
    scores = make_rewards(["expected_answer"])[0](
        prompts=[e["prompt"] for e in examples], completions=[e["completion"] for e in examples],
        **{k: [e[k] for e in examples] for k in ("kind", "expected", "attempt_correct")})
    assert scores == [1.0] * 10  # the recorded answers are right: the reward reads the rows

    def length(prompts, completions, **_):  # a reward that differs between samples: GRPO has a signal
        return [float(len(c[0]["content"])) for c in completions]

    result = train_grpo(examples, output=tmp_path / "grpo", rewards=[length],
                        settings={"max_steps": 2, "max_completion_length": 6, "held_out": 0.2, "max_eval": 2}, progress=False)
    assert result.steps == 2 and result.train_examples == 8
    cli = CliRunner().invoke(app, ["train", "sft", "--data", str(exported), "--output", str(tmp_path / "sft"),
                                   "--set", "max_steps=2", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout.strip().splitlines()[-1])["train_examples"] > 0
    assert grpo_export_examples(tmp_path / "traces-or-nothing.jsonl") is None and grpo_export_examples("approved") is None
