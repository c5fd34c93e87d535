"""The supervision core's own cost, with instant scripted models on SQLite.

The same work (an agent that makes N instant tool calls and answers) runs bare and under a Supervisor, in the
auto lane and in the coach lane. Added time = supervised - bare. Sessions with 0 and with N steps separate the
per-session cost (the 0-step run) from the per-step cost (the slope). Medians over repeated sessions.

Goals (issue 3): in auto, at most 5 ms added per session and 0.5 ms per step.
Run: .venv/bin/python benchmarks/overhead.py [--sessions 60] [--steps 20] [--lessons 10]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from atlas_learning.config import AtlasConfig
from atlas_learning.models import RoleModels, ScriptedModel
from atlas_learning.supervisor import Supervisor

JUDGEMENT = {"outcome": 0.9, "process": 0.9, "efficiency": 0.9, "confidence": 0.9, "rationale": "ok"}
ANSWERS = {
    "Verdict": {"accepted": True, "guidance": "", "reason": "ok"},
    "PlanReview": {"approved": True, "steps": ["read", "answer"], "concerns": []},
    "SessionJudgement": JUDGEMENT,
    "StepJudgements": {"steps": []},
    "PlaybookChanges": {"changes": []},
    "ProbeAnswer": {"lane": "auto", "confidence": 0.9, "reason": "ok"},
}


class InstantRoles(RoleModels):
    """Every role answers at once, by the schema asked for."""

    def get(self, role: str) -> ScriptedModel:
        with self._lock:
            if role not in self._by_role:
                self._by_role[role] = ScriptedModel(role=role, ledger=self.ledger, cycle=True,
                                                    responses=[lambda _m, schema: ANSWERS[schema["title"]] if schema else "ok"])
            return self._by_role[role]  # type: ignore[return-value]


def tool(i: int) -> str:
    return f"result {i}"


def bare(steps: int) -> str:
    outputs = [tool(i) for i in range(steps)]
    return f"done after {len(outputs)} steps"


def supervised(supervisor: Supervisor, steps: int) -> None:
    run = supervisor.begin("Read the files and summarise them", agent_name="bench")
    if run.lane == "coach":
        run.review_plan(["read", "answer"])
    for i in range(steps):
        step = run.record_step(tool_name="read_file", tool_args={"path": f"f{i}.txt"}, output=tool(i))
        if run.lane == "coach":
            run.validate_step(step)
    answer = f"done after {steps} steps"
    if run.lane in ("paired", "coach"):
        run.validate_answer(answer)
    run.finish(answer)


def median_ms(function, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def seed_lessons(supervisor: Supervisor, count: int) -> None:
    from atlas_learning.schemas import LessonChange

    changes = [LessonChange(op="add", lesson=f"Lesson {i}: check file {i} {'x' * (i % 7)} before step {i * 13}.") for i in range(count)]
    supervisor.playbook.apply("bench", changes)


def measure(lane: str, sessions: int, steps: int, workdir: Path, lessons: int) -> dict[str, float]:
    config = AtlasConfig.load({"storage": {"url": f"sqlite:///{workdir / lane}.db", "spool_dir": str(workdir / "spool")},
                               "supervision": {"lane": lane}}, environ={})
    with Supervisor(config, models=InstantRoles(config)) as supervisor:
        seed_lessons(supervisor, lessons)
        for _ in range(5):  # warm up: imports, statement caches, playbook registry row
            supervised(supervisor, steps)
        results = {}
        for count in (0, steps):
            bare_ms = median_ms(lambda c=count: bare(c), sessions)
            atlas_ms = median_ms(lambda c=count: supervised(supervisor, c), sessions)
            results[count] = atlas_ms - bare_ms
    per_step = (results[steps] - results[0]) / steps
    return {"per_session_ms": results[0], "per_step_ms": per_step, f"session_with_{steps}_steps_ms": results[steps]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lessons", type=int, default=0, help="playbook entries to seed (their impact is updated every session)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for lane in ("auto", "coach"):
            figures = measure(lane, args.sessions, args.steps, Path(tmp), args.lessons)
            line = ", ".join(f"{name} {value:.3f}" for name, value in figures.items())
            print(f"{lane:<6} with {args.lessons} lessons, added (median of {args.sessions}): {line}")
    print("goal (auto): per_session_ms <= 5.0, per_step_ms <= 0.5")


if __name__ == "__main__":
    main()
