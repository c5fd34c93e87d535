"""The local loop, end to end on this machine, no key: demonstrations -> review -> SFT of the embedded student ->
serve it back -> evaluate on workspaces and tasks it never saw.

    python -m examples.mcp_file_ops loop --quick      # about 10 minutes on 2 CPU cores
    python -m examples.mcp_file_ops loop              # about 20-30 minutes

1. **Demonstrations.** The reference solver (the tasks' known solutions, played through the real agent, MCP server
   and ``with_atlas``) works the training tasks on generated *training* workspaces. It stands in for a strong
   teacher; with ``--teacher`` the teacher model atlas.yaml configures (``models.teacher``) does the work instead,
   as the agent's own model through ``AtlasChatModel``. The sessions say who made them in their metadata
   (``demonstrator``). With ``--own``, the base student also works the training workspaces, and its own verified
   successes join the demonstrations.
2. **Review.** The sessions whose checks passed are approved (``review_status: approved``), as a reviewer would.
3. **SFT.** ``atlas train sft --target student`` on them: the embedded SmolLM2-135M, dequantized once into a
   trainable checkpoint, learns the student's own turns in the ``served`` layout (the prompt ``AtlasChatModel``
   sends, the step JSON the constrained decoder writes).
4. **Serve back and evaluate.** The base checkpoint and the trained one are each served as the student role
   (``provider: local``, grammar-constrained), unsupervised (lane ``auto``, no retries, no learning), on generated
   *held-out* workspaces (never in training) of the training tasks, and of :data:`HELDOUT_TASKS`, tasks never
   trained on at all. Success is the task's checker.

Prints a before/after table with the wall time of each phase and the examples used, and writes ``loop.json`` and
``loop.png`` under ``--out`` (default ``.atlas/mcp_file_ops/loop``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .harness import DEFAULT_OUT, TaskRun, run_suite
from .tasks import TASKS, Task

__all__ = ["HELDOUT_TASKS", "LoopReport", "LoopSize", "SIZES", "run_loop"]

#: Who made the demonstrations, as their sessions' metadata says.
DEMONSTRATOR = "reference solver (the tasks' known solutions), standing in for a strong teacher"
#: The label of the student's own verified successes (``--own``).
OWN_SUCCESS = "the embedded student itself: a run of its own that passed its check"
#: One task per phase that is never trained on: the held-out tasks.
HELDOUT_TASKS = (4, 9, 14, 19, 24)


@dataclass(frozen=True)
class LoopSize:
    """How much the loop does: tasks trained on, demonstration and evaluation workspaces, SFT steps."""

    train_tasks: tuple[int, ...]
    heldout_tasks: tuple[int, ...]
    demo_variants: int
    eval_variants: int
    steps: int


SIZES = {
    "quick": LoopSize(train_tasks=(1, 2, 3, 5, 6, 7, 8, 10), heldout_tasks=(4, 9), demo_variants=4, eval_variants=1, steps=30),
    "full": LoopSize(train_tasks=tuple(t.id for t in TASKS if t.id not in HELDOUT_TASKS), heldout_tasks=HELDOUT_TASKS,
                     demo_variants=6, eval_variants=2, steps=80),
}

#: SFT of a 135M model on 2 CPU cores: a full fine-tune (LoRA saves little at this size), a learning rate for
#: adapting a pretrained model (cpu-tiny's 5e-3 is for its randomly initialised toy), prompts with their tool list.
SFT_SETTINGS = {"target": "student", "learning_rate": 1e-4, "per_device_train_batch_size": 4, "max_length": 2048, "held_out": 0.0,
                "gradient_checkpointing": False}


@dataclass
class LoopReport:
    """What one loop did: phases' seconds, examples, and success before and after on each held-out set."""

    size: str
    seconds: dict[str, float] = field(default_factory=dict)
    demonstrations: int = 0
    approved: int = 0
    #: Who made the demonstrations.
    demonstrator: str = DEMONSTRATOR
    #: With ``--own``: the base student's runs on training workspaces, and how many passed (and were added).
    own_runs: int = 0
    own_approved: int = 0
    examples: int = 0
    before: dict[str, list[bool]] = field(default_factory=dict)
    after: dict[str, list[bool]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def rate(self, which: str, split: str) -> float | None:
        results = getattr(self, which).get(split) or []
        return sum(results) / len(results) if results else None


def _config(workdir: Path, student: dict[str, Any] | None) -> dict[str, Any]:
    """Unsupervised runs on the loop's own store: lane auto, no retry, no learning, no judge (the checks decide)."""
    config: dict[str, Any] = {
        "storage": {"url": f"sqlite:///{workdir / 'loop.db'}", "spool_dir": str(workdir / "spool")},
        "playbook": {"enabled": False}, "examples": {"enabled": False},
        "supervision": {"lane": "auto", "max_retries": 0, "llm_probe": False},
        "judges": {"when_checks_decide": "skip", "judge_steps": False},
    }
    if student is not None:
        config["models"] = {"student": {"provider": "local", "max_tokens": 320, **student}}
    return config


def _split(runs: list[TaskRun], heldout: tuple[int, ...]) -> dict[str, list[bool]]:
    return {"held-out workspaces": [r.passed for r in runs if r.task_id not in heldout],
            "held-out tasks": [r.passed for r in runs if r.task_id in heldout]}


def _approve(url: str, session_ids: set[str], demonstrator: str) -> int:
    """Approve the sessions whose checks passed, as a reviewer would, saying who made them; how many."""
    from atlas_learning.store import SessionRecord, Store

    with Store(url) as store:
        sessions = store.rows(SessionRecord, SessionRecord.id.in_(session_ids))
        for session in sessions:
            store.update_session(session.id, review_status="approved", review_note=f"loop: passed its check ({demonstrator})",
                                 session_metadata={**(session.session_metadata or {}), "demonstrator": demonstrator})
    return len(sessions)


def run_loop(size: str = "quick", *, out: Path = DEFAULT_OUT / "loop", say: Any = print, teacher: Any = None,
             own: bool = False) -> LoopReport:
    """Run the loop (see the module docs) at ``size`` (``quick`` or ``full``); returns its report.

    ``teacher``: the :class:`~atlas_learning.config.ModelSettings` of a model that makes the demonstrations instead
    of the reference solver (served as the agent's model through AtlasChatModel). ``own``: the base student works
    the training workspaces too, and its verified successes are trained on with the demonstrations."""
    from atlas_learning.train import load_student_records, student_examples, train_sft
    from atlas_learning.train.base_model import trainable_checkpoint

    plan = SIZES[size]
    report = LoopReport(size)
    workdir = Path(out)
    if workdir.exists():
        shutil.rmtree(workdir)  # a loop starts from nothing: no earlier session or checkpoint is mixed in
    workdir.mkdir(parents=True)
    by_id = {t.id: t for t in TASKS}
    train_tasks = [by_id[i] for i in plan.train_tasks]
    eval_tasks: list[Task] = [by_id[i] for i in (*plan.train_tasks, *plan.heldout_tasks)]
    config = _config(workdir, None)

    url = config["storage"]["url"]

    started = time.perf_counter()
    if teacher is not None:
        report.demonstrator = f"the configured teacher model ({teacher.provider} {teacher.model or 'default'})"
        demo_config, demo_model, demo_key = _config(workdir, teacher.model_dump(exclude_none=True)), "config", "loop-demo"
    else:
        demo_config, demo_model, demo_key = config, "scripted", "loop-demo:scripted"
    say(f"1/4 demonstrations: {report.demonstrator} on {len(train_tasks)} tasks x {plan.demo_variants} training workspaces")
    demos = run_suite(demo_config, train_tasks, repeat=plan.demo_variants, variants="train", model=demo_model, learning_key="loop-demo",
                      out_dir=workdir / "demonstrations", progress=None, plot=False)
    report.approved = _approve(url, {r.session_id for r in demos.runs if r.passed and r.session_id}, report.demonstrator)
    report.demonstrations = len(demos.runs)
    report.seconds["demonstrations"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    say("2/4 the base student: SmolLM2-135M, dequantized once into a trainable checkpoint, served as the student role")
    base = trainable_checkpoint("smollm2")
    keys = [demo_key]
    if own:  # the student's own verified successes, on the same training workspaces
        mine = run_suite(_config(workdir, {"model": base}), train_tasks, repeat=plan.demo_variants, variants="train",
                         learning_key="loop-own", out_dir=workdir / "own", progress=say, plot=False)
        report.own_runs = len(mine.runs)
        report.own_approved = _approve(url, {r.session_id for r in mine.runs if r.passed and r.session_id}, OWN_SUCCESS)
        keys.append("loop-own")
        report.seconds["own runs"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
    before = run_suite(_config(workdir, {"model": base}), eval_tasks, repeat=plan.eval_variants, variants="heldout",
                       learning_key="loop-before", out_dir=workdir / "before", progress=say, plot=False)
    report.before = _split(before.runs, plan.heldout_tasks)
    report.seconds["evaluate before"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    records = [r for key in keys for r in load_student_records("approved", store_url=url, learning_key=key)]
    examples = student_examples(records)
    report.examples = len(examples)
    say(f"3/4 SFT: {len(examples)} student turns from {len(records)} approved sessions, {plan.steps} steps")
    trained = train_sft(examples, model=base, output=workdir / "student", preset="cpu-tiny",
                        settings={**SFT_SETTINGS, "max_steps": plan.steps}, progress=False)
    report.seconds["sft"] = round(time.perf_counter() - started, 1)
    report.notes.append(f"SFT: {trained.steps} steps, {trained.seconds_per_step or 0:.1f} s/step")

    started = time.perf_counter()
    say("4/4 the trained student, served back the same way, on the same held-out workspaces and tasks")
    after = run_suite(_config(workdir, {"model": str(trained.output_dir)}), eval_tasks, repeat=plan.eval_variants,
                      variants="heldout", learning_key="loop-after", out_dir=workdir / "after", progress=say, plot=False)
    report.after = _split(after.runs, plan.heldout_tasks)
    report.seconds["evaluate after"] = round(time.perf_counter() - started, 1)
    (workdir / "loop.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    note = _plot(report, workdir / "loop.png")
    if note:
        report.notes.append(note)
    return report


def table(report: LoopReport) -> str:
    """The before/after table: success on each held-out set, then phases and examples."""
    def cell(which: str, split: str) -> str:
        results = getattr(report, which).get(split) or []
        return f"{sum(results)}/{len(results)} ({100 * sum(results) / len(results):.0f}%)" if results else "-"

    lines = [f"{'':<22} {'before':>12} {'after':>12}"]
    for split in ("held-out workspaces", "held-out tasks"):
        lines.append(f"{split:<22} {cell('before', split):>12} {cell('after', split):>12}")
    lines.append("")
    lines.append(f"demonstrations {report.demonstrations} (approved {report.approved}) by {report.demonstrator}")
    if report.own_runs:
        lines.append(f"the student's own runs {report.own_runs}, verified successes added {report.own_approved}")
    lines.append(f"training examples {report.examples}")
    lines.append("wall time: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in report.seconds.items())
                 + f" (total {sum(report.seconds.values()) / 60:.1f} min)")
    lines.extend(report.notes)
    return "\n".join(lines)


def _plot(report: LoopReport, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed"
    splits = ["held-out workspaces", "held-out tasks"]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for offset, which, colour in ((-0.2, "before", "#8c6d31"), (0.2, "after", "#5b3f8c")):
        values = [100 * (report.rate(which, s) or 0.0) for s in splits]
        axes.bar([i + offset for i in range(len(splits))], values, width=0.4, label=which, color=colour)
    axes.set_xticks(range(len(splits)), splits)
    axes.set_ylabel("success (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"the embedded student before and after the loop ({report.size})")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.mcp_file_ops loop", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick size: 8 tasks trained on, 2 held out, 30 SFT steps")
    parser.add_argument("--out", default=str(DEFAULT_OUT / "loop"), help="folder for the loop's store, checkpoint and results "
                                                                       "(emptied first)")
    parser.add_argument("--teacher", action="store_true", help="the demonstrations by the teacher model atlas.yaml configures "
                                                                 "(models.teacher), not the reference solver")
    parser.add_argument("--own", action="store_true", help="also train on the base student's own verified successes on the "
                                                             "training workspaces (a run of it first)")
    parser.add_argument("-c", "--config", default=None, help="atlas.yaml for --teacher (default: ./atlas.yaml or $ATLAS_CONFIG)")
    args = parser.parse_args(argv)
    from atlas_learning.config import AtlasConfig
    from atlas_learning.errors import AtlasError

    try:
        teacher = None
        if args.teacher:
            models = AtlasConfig.load(args.config).models
            if models.teacher is None:
                raise AtlasError("--teacher: atlas.yaml configures no models.teacher; set one (a capable model) or leave "
                                 "--teacher out for the reference solver")
            teacher = models.teacher
        report = run_loop("quick" if args.quick else "full", out=Path(args.out), teacher=teacher, own=args.own)
    except AtlasError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print("\n" + table(report))
    print(f"results: {Path(args.out) / 'loop.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
