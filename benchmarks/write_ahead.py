"""What the write-ahead journal costs on the caller's path: sessions with ``storage.write_ahead`` on and off, side
by side.

Two supervisors (one SQLite store each, in a temp dir), auto lane, instant scripted models (the InstantRoles of
overhead.py). A session is begin -> N record_step/tool_call_done -> final_answer -> end(), timed from begin to
end()'s return (the caller's path; judging, learning and the store writes finish in the background and are
waited for outside the timed span). The two variants run in blocks of --block sessions that take turns, so
machine noise falls on both alike. Printed: median and p90 ms per session for each, the difference, and the
difference per recorded row (each session records its session row, the lane update, steps, events and model
calls). No target: the figure is the price of "nothing recorded is lost on SIGKILL" (docs/loop.md).
Run: .venv/bin/python benchmarks/write_ahead.py [--rounds 30] [--block 10] [--steps 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import InstantRoles  # noqa: E402 - the same instant roles as the core benchmark

from atlas_learning.config import AtlasConfig  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402


def session(supervisor: Supervisor, steps: int, n: int) -> float:
    started = time.perf_counter()
    run = supervisor.begin(f"count the files in folder {n}", agent_name="bench", learning_key="bench")
    for i in range(steps):
        step = run.record_step(tool_name="list_dir", tool_args={"path": f"d{n}/{i}"}, output=f"{i} files in d{n}/{i}")
        run.tool_call_done(step)
    run.final_answer(f"{n} files")
    pending = run.end(f"{n} files")
    elapsed = (time.perf_counter() - started) * 1000
    pending.result()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        supervisors = {}
        for name, write_ahead in (("write_ahead", True), ("batched", False)):
            config = AtlasConfig.load({"storage": {"url": f"sqlite:///{Path(tmp) / name}.db", "spool_dir": str(Path(tmp) / name),
                                                   "write_ahead": write_ahead}, "supervision": {"lane": "auto"}}, environ={})
            supervisors[name] = Supervisor(config, models=InstantRoles(config))
        samples: dict[str, list[float]] = {name: [] for name in supervisors}
        for supervisor in supervisors.values():  # warm up: imports, statement caches, the key's rows
            for n in range(10):
                session(supervisor, args.steps, n)
        n = 0
        for round_index in range(args.rounds):
            order = list(supervisors) if round_index % 2 == 0 else list(reversed(supervisors))
            for name in order:
                for _ in range(args.block):
                    n += 1
                    samples[name].append(session(supervisors[name], args.steps, n))
        rows = supervisors["write_ahead"].recorder.journal_path
        for supervisor in supervisors.values():
            supervisor.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{args.rounds} rounds x {args.block} sessions each, {args.steps} steps per session, auto lane, SQLite")
    for name, values in samples.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<12} median {medians[name]:.3f} ms  p90 {p90:.3f} ms")
    print(f"write-ahead costs {medians['write_ahead'] - medians['batched']:+.3f} ms per session "
          f"({medians['write_ahead'] / medians['batched']:.2f}x) on the caller's path (journal: {rows is not None})")


if __name__ == "__main__":
    main()
