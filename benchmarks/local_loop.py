"""The local loop's before/after figures: the embedded SmolLM2-135M student on the MCP example, trained on the
reference solver's demonstrations on generated training workspaces, evaluated unsupervised on held-out workspaces
of the tasks it trained on and on tasks it never trained on (see examples/mcp_file_ops/loop.py for the phases).

Printed, never asserted: success before and after on both held-out sets, the wall time of each phase, the
demonstrations and training examples used. Goal (issue 17): held-out-workspace success at least 40 % after
training; the held-out tasks are reported as they come out.
Run: .venv/bin/python benchmarks/local_loop.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the examples package of this checkout

from examples.mcp_file_ops.loop import SIZES, run_loop, table  # noqa: E402

GOAL = 0.40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the loop's quick size")
    parser.add_argument("--out", default=".atlas/benchmarks/local_loop", help="working folder (emptied first)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    size = "quick" if args.quick else "full"
    plan = SIZES[size]
    print(f"local_loop ({size}): {len(plan.train_tasks)} tasks trained on x {plan.demo_variants} training workspaces; "
          f"evaluated on {plan.eval_variants} held-out workspace(s) of them and of {len(plan.heldout_tasks)} held-out tasks; "
          f"{plan.steps} SFT steps")
    report = run_loop(size, out=Path(args.out), say=lambda line: None)
    print(table(report))
    after = report.rate("after", "held-out workspaces")
    verdict = "not measured" if after is None else ("PASS" if after >= GOAL else "FAIL") + f" ({after:.0%})"
    print(f"goal: held-out-workspace success at least {GOAL:.0%} after training: {verdict}")


if __name__ == "__main__":
    main()
