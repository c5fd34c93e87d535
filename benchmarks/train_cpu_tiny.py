"""The cpu-tiny training preset end to end, timed: sessions in, `atlas train sft` and `atlas train grpo` out.

It records real sessions with instant scripted roles (sums; half answered wrong first, a teacher that checks them;
and sessions where the teacher answered itself), approves them, exports them as trace JSONL, then runs the two
commands as a user would (fresh processes, imports included) with the preset's defaults (40 steps; one SFT run of
300) and prints wall time, seconds per step and the held-out reward before and after each run (the served
model's: greedy, constrained, as a role calls it), and which runs learned nothing (all gradients 0).

Goal (issue 7): the cpu-tiny preset finishes in under 2 minutes on this machine.
Run: .venv/bin/python benchmarks/train_cpu_tiny.py [--sessions 40]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atlas_learning.config import AtlasConfig
from atlas_learning.export import export_sessions
from atlas_learning.models import RoleModels, ScriptedModel
from atlas_learning.rewards import answer_matches
from atlas_learning.store import Store
from atlas_learning.supervisor import Supervisor

JUDGEMENT = {"outcome": 0.9, "process": 0.9, "efficiency": 0.9, "confidence": 0.9, "rationale": "ok"}


def verdict(messages: list[dict[str, str]]) -> dict[str, object]:
    text = messages[-1]["content"]
    a, b = map(int, re.findall(r"\d+", re.search(r"Task: (.*)", text).group(1))[:2])
    if answer_matches(text.split("Final answer:\n", 1)[1], str(a + b)):
        return {"accepted": True, "guidance": "", "reason": "correct"}
    return {"accepted": False, "guidance": "Add the two numbers; reply with the number only.", "reason": "no number"}


def answer(messages: list[dict[str, str]], schema: dict | None) -> object:
    title = schema["title"] if schema else "text"
    if title == "text":  # the teacher answering a task itself
        a, b = map(int, re.findall(r"\d+", messages[-1]["content"])[:2])
        return str(a + b)
    return {"Verdict": lambda: verdict(messages), "SessionJudgement": lambda: JUDGEMENT,
            "StepJudgements": lambda: {"steps": []}, "PlaybookChanges": lambda: {"changes": []},
            "PlanReview": lambda: {"approved": True, "steps": [], "concerns": []},
            "ProbeAnswer": lambda: {"lane": "paired", "confidence": 0.9, "reason": "ok"}}[title]()


class InstantRoles(RoleModels):
    def get(self, role: str) -> ScriptedModel:
        with self._lock:
            if role not in self._by_role:
                self._by_role[role] = ScriptedModel(role=role, ledger=self.ledger, cycle=True, responses=[answer])
            return self._by_role[role]  # type: ignore[return-value]


def record(url: str, count: int) -> None:
    rng = random.Random(0)
    for lane in ("paired", "escalate"):
        config = AtlasConfig.load({"storage": {"url": url}, "supervision": {"lane": lane, "max_retries": 1},
                                   "review": {"auto_approve_min_reward": 0.5}, "drift": {"enabled": False}}, environ={})
        with Supervisor(config, models=InstantRoles(config)) as supervisor:
            for index in range(count // 2):
                a, b = rng.randint(1, 50), rng.randint(1, 50)
                run = supervisor.begin(f"What is {a} + {b}? Answer with the number only.", agent_name="adder",
                                       metadata={"ground_truth": str(a + b)})
                if lane == "escalate":
                    run.finish(run.escalate())
                    continue
                attempts = ["I don't know.", str(a + b)] if index % 2 else [str(a + b)]
                for given in attempts:  # the right answer last: it is where a rejection leads
                    result = run.validate_answer(given)
                    if result.accepted is not False or not run.can_retry:
                        break
                run.finish(given)


def train(method: str, data: Path, output: Path, *extra: str) -> dict:
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", "from atlas_learning.cli import main; main()", "train", method,
                                "--data", str(data), "--output", str(output), *extra],
                               capture_output=True, text=True)
    wall = time.perf_counter() - started
    written = output / "atlas_train.json"
    if completed.returncode != 0 and not written.is_file():
        raise SystemExit(f"atlas train {method} failed:\n{completed.stderr[-2000:]}")
    summary = json.loads(written.read_text())  # a run that learned nothing fails but still writes its summary
    note = "" if completed.returncode == 0 else "nothing learned (all gradients 0): exit 1"
    return {"wall_s": round(wall, 1), "note": note, **{k: summary[k] for k in ("steps", "seconds", "seconds_per_step",
                                                                                "train_examples", "held_out_examples",
                                                                                "held_out_before", "held_out_after")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'atlas.db'}"
        record(url, args.sessions)
        traces = folder / "traces.jsonl"
        with Store(url) as store:
            exported = export_sessions(store, traces)
        print(f"{exported} approved sessions exported")
        runs = {
            "sft (verdicts, warm start, 40 steps)": train("sft", traces, folder / "sft40", "--set", "kinds=answer"),
            "sft (verdicts, warm start, 300 steps)": train("sft", traces, folder / "sft", "--set", "kinds=answer",
                                                           "--set", "max_steps=300"),
            "grpo (teacher's own answers, from scratch)": train("grpo", traces, folder / "grpo", "--set", "kinds=escalation",
                                                                "--set", "max_completion_length=8"),
            "grpo (verdicts, from the sft model)": train("grpo", traces, folder / "grpo2", "--model", str(folder / "sft"),
                                                         "--set", "kinds=answer", "--set", "learning_rate=3e-4"),
        }
    print(f"{'run':44} {'wall s':>7} {'steps':>5} {'train s':>7} {'s/step':>7} {'train':>5} {'held':>4} {'before':>7} {'after':>7}")
    for name, r in runs.items():
        before = "-" if r["held_out_before"] is None else f"{r['held_out_before']:.3f}"
        after = "-" if r["held_out_after"] is None else f"{r['held_out_after']:.3f}"
        print(f"{name:44} {r['wall_s']:7.1f} {r['steps']:5d} {r['seconds']:7.1f} {r['seconds_per_step']:7.3f} "
              f"{r['train_examples']:5d} {r['held_out_examples']:4d} {before:>7} {after:>7}  {r['note']}")


if __name__ == "__main__":
    main()
