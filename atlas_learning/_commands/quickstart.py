"""``atlas quickstart``: check the options, the config, the store and the teacher, then run the 25-task example.

The options are checked first, before anything heavy is imported or loaded, so a bad ``--tasks`` or ``--model``
ends in a fraction of a second with quickstart's own usage line. The example (``examples.mcp_file_ops``) ships
inside the package, so it runs from any folder after ``pip install``; in a source checkout whose install predates
that, it is imported from the checkout.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import typer

from ..errors import AtlasError, UsageError

MODELS = ("config", "scripted")
EXAMPLE = "examples.mcp_file_ops"
#: What the example imports beyond the core, and the extra that installs it.
_NEEDS = {"langchain": "langgraph", "langgraph": "langgraph", "mcp": "mcp", "langchain_mcp_adapters": "mcp"}


def quickstart(*, config: Path | None, tasks: str, repeat: int, baseline: bool, compare: bool, model: str, out: Path,
               variants: str = "canonical", loop: bool = False) -> None:
    # 1. The options, before anything loads.
    if model not in MODELS:
        raise UsageError(f"--model: expected config or scripted, got {model!r}")
    if repeat < 1:
        raise UsageError(f"--repeat: expected at least 1, got {repeat}")
    if loop and (tasks != "all" or repeat != 1 or baseline or compare or model != "config" or variants != "canonical"):
        raise UsageError("--loop runs the local loop's own tasks, workspaces and model: leave out --tasks, --repeat, "
                         "--baseline, --compare, --model and --variants")
    if baseline and compare:
        raise UsageError("--baseline and --compare do not go together: --compare runs the baseline after the learning run")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    if config is not None and not config.is_file():
        raise UsageError(f"--config {config}: no such file")
    config_path = config or (Path(os.environ["ATLAS_CONFIG"]) if os.environ.get("ATLAS_CONFIG") else None)
    if config_path is not None and not config_path.is_file():
        raise AtlasError(f"ATLAS_CONFIG={config_path}: no such file")
    selection = _example_module("tasks")
    try:
        selected = selection.select_tasks(tasks)
    except ValueError as exc:
        raise UsageError(f"--tasks {tasks}: {exc}") from None
    try:
        selection.variant_numbers(variants, repeat)
    except ValueError as exc:
        raise UsageError(f"--variants: {exc}") from None
    missing = sorted({extra for module, extra in _NEEDS.items() if importlib.util.find_spec(module) is None})
    if missing:
        raise AtlasError(f"the quickstart's agent needs the {' and '.join(missing)} extra{'s' if len(missing) > 1 else ''}: "
                         f"pip install 'atlas-plugins[{','.join(missing)}]'")

    # 2. The setup: config, store, and (unless everything is scripted) the teacher's model.
    from pydantic import BaseModel

    from ..config import AtlasConfig
    from ..store import Store

    loaded = AtlasConfig.load(config_path)
    typer.echo(f"config      ok ({config_path or 'defaults'})")
    with Store(loaded) as store:
        typer.echo(f"store       ok ({store!r}, schema version {store.schema_version()})")
    if model == "scripted":
        typer.echo("teacher     skipped (--model scripted: scripted supervision, no model is loaded)")
    else:
        from ..models import RoleModels

        class Check(BaseModel):
            answer: str
            confident: bool

        models = RoleModels(loaded)
        try:
            teacher = models.get("teacher")
            started = time.perf_counter()
            # the role's own max_tokens: a thinking model (gemini-2.5-pro) spends part of it before answering
            reply = teacher.generate("What is the capital of France? Answer in one word.", output_type=Check)
            elapsed = time.perf_counter() - started
            typer.echo(f"teacher     ok ({teacher.provider}:{teacher.model_name}) answered {reply.output.model_dump()} "
                       f"in {elapsed:.2f}s including load")
        finally:
            models.close()
    typer.echo("")

    # 3. The example, with the live status line on a terminal.
    from .. import progress

    progress.set_default(True)
    if loop:
        if importlib.util.find_spec("trl") is None:
            raise AtlasError("the loop trains the student: pip install 'atlas-plugins[train]'")
        steps = _example_module("loop")
        report = steps.run_loop("quick", out=out / "loop")
        typer.echo("\n" + steps.table(report))
        plot = out / "loop" / "loop.png"  # absent without matplotlib: the table says why
        typer.echo(f"results: {out / 'loop' / 'loop.json'}" + (f", plot: {plot}" if plot.is_file() else ""))
        return
    runner = _example_module("__main__")
    code = runner.run(selected, repeat=repeat, baseline=baseline, compare=compare, model=model,
                      config=str(config_path) if config_path is not None else None, out=str(out), variants=variants)
    if code:
        raise typer.Exit(code)


def _example_module(name: str) -> ModuleType:
    """``examples.mcp_file_ops.<name>``: from the installed package, else from the source checkout this file is in."""
    try:
        return importlib.import_module(f"{EXAMPLE}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("examples", EXAMPLE):
            raise
    root = Path(__file__).resolve().parents[2]
    if not (root / "examples" / "mcp_file_ops" / "__init__.py").is_file():
        raise AtlasError(f"this install of atlas-plugins lacks its example package ({EXAMPLE}); reinstall it "
                         "(pip install --force-reinstall atlas-plugins, or pip install -e . in a clone)")
    sys.path.insert(0, str(root))
    for stale in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
        del sys.modules[stale]  # an unrelated `examples` found first
    return importlib.import_module(f"{EXAMPLE}.{name}")
