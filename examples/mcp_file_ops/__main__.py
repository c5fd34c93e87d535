"""The 25-task MCP file-operations example: a create_agent agent on MCP file tools, under Atlas supervision.

    python -m examples.mcp_file_ops                      # all 25 tasks, the config's models (default: embedded SmolLM2)
    python -m examples.mcp_file_ops --model scripted     # scripted models only: the whole loop in seconds, no LLM
    python -m examples.mcp_file_ops --tasks 1-5 --repeat 2
    python -m examples.mcp_file_ops --compare            # with learning, then without, side by side
    python -m examples.mcp_file_ops --variants heldout --repeat 3   # 3 generated workspaces no training run uses
    python -m examples.mcp_file_ops loop --quick         # the local loop: demonstrations, SFT, held-out before/after

Prints one line per finished task, then a table (lane, reward, checker result, tool calls, tokens, lessons
injected); writes results.json and learning_curve.png under --out (default .atlas/mcp_file_ops/). Sessions go to
the config's store (default .atlas/atlas.db), where ``atlas sessions`` and ``atlas report`` read them.
"""

from __future__ import annotations

import argparse
import sys

from atlas_learning.errors import AtlasError

from .harness import DEFAULT_OUT, compare_table, results_table, run_suite, write_plot
from .tasks import Task, select_tasks, variant_numbers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.mcp_file_ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None, help="which tasks: 1-5, 3,7,10-12 or all (default: all 25)")
    parser.add_argument("--repeat", type=int, default=1, help="run the selection N times (default 1)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--baseline", action="store_true", help="run with learning disabled (playbook.enabled: false)")
    mode.add_argument("--compare", action="store_true", help="run with learning, then the baseline, and compare")
    parser.add_argument("--config", default=None, help="atlas.yaml (default: ./atlas.yaml, else quick built-in defaults)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder for results and the plot (default {DEFAULT_OUT})")
    parser.add_argument("--model", choices=["config", "scripted"], default="config",
                        help="config: the config's student role via AtlasChatModel (default: the embedded local model); "
                             "scripted: a scripted solver and scripted supervision, no LLM")
    parser.add_argument("--no-plot", action="store_true", help="do not write the learning-curve PNG")
    parser.add_argument("--variants", default="canonical",
                        help="the workspace of each repetition: canonical (default), train (generated variants 1, 2, ...), "
                             "heldout (100001, 100002, ...: never in train) or a seed number N (N, N+1, ...)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        variant_numbers(args.variants, args.repeat)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        args.selected = select_tasks(args.tasks)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loop"]:  # the local loop: demonstrations -> SFT of the embedded student -> held-out evaluation
        from .loop import main as loop_main

        return loop_main(argv[1:])
    args = parse_args(argv)
    try:
        return run(args.selected, repeat=args.repeat, baseline=args.baseline, compare=args.compare, model=args.model,
                   config=args.config, out=args.out, plot=not args.no_plot, variants=args.variants)
    except AtlasError as exc:  # a bad config, an unusable model: one line, not a traceback
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


def run(selected: list[Task], *, repeat: int = 1, baseline: bool = False, compare: bool = False, model: str = "config",
        config: str | None = None, out: str = str(DEFAULT_OUT), plot: bool = True, variants: str = "canonical") -> int:
    """Run the suite on checked options (what ``main`` and ``atlas quickstart`` call), print the tables; 0 when it ran."""
    options = {"repeat": repeat, "model": model, "out_dir": out, "plot": plot, "variants": variants}
    reports = []
    if compare:
        reports.append(run_suite(config, selected, baseline=False, **{**options, "plot": False}))
        reports.append(run_suite(config, selected, baseline=True, **{**options, "plot": False}))
    else:
        reports.append(run_suite(config, selected, baseline=baseline, **options))
    for report in reports:
        print(f"\n{report.mode} ({report.model} model, learning key {report.summary['learning_key']}, "
              f"{report.summary['seconds']:.1f}s)")
        print(results_table(report.runs))
        print(f"results: {report.results_path}")
        if report.plot_path:
            print(f"learning curve: {report.plot_path}")
        for note in report.notes:
            print(note)
    if compare:
        print("\n" + compare_table(reports[0].runs, reports[1].runs))
        if plot:
            from pathlib import Path

            path, note = write_plot({"learning": reports[0].runs, "baseline": reports[1].runs}, Path(out) / "learning_curve.png",
                                    learning_key=reports[0].summary["learning_key"])
            print(f"learning curve: {path}" if path else note)
    # A task whose agent failed (bad model output, a runaway loop) is a result, counted in the table, not a failure
    # of the example: the exit status is 0 whenever the suite ran.
    return 0


if __name__ == "__main__":
    sys.exit(main())
