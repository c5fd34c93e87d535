"""Run the 25 tasks: a LangChain ``create_agent`` agent on MCP file tools, under ``with_atlas``, one session a task.

:func:`run_suite` is what ``python -m examples.mcp_file_ops`` and ``atlas quickstart`` call. For each run of a
task it resets the workspace from the pristine copy, builds a fresh agent around the model (the config's student
role through :class:`~atlas_plugins.langgraph.chat_model.AtlasChatModel`, or the scripted solver), wraps it with
``with_atlas`` on one shared supervisor and learning key, runs it with ``ainvoke`` and checks the workspace and
the answer with the task's checker, which is also the session's verifiable check, so it is part of the reward.

The MCP server is started once per suite: one stdio process, one persistent client session
(``client.session("files")`` + ``load_mcp_tools``), so a tool call costs milliseconds, not a process start.
The server is stateless; the workspace it serves (a scratch folder, removed at the end) is reset in place between
tasks.

Outputs in ``out_dir`` (default ``.atlas/mcp_file_ops/``): ``results.json`` (``results-baseline.json`` for the
baseline) and ``learning_curve.png`` (when matplotlib is installed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from atlas_learning.config import DEFAULT_CONFIG_FILE, AtlasConfig
from atlas_learning.supervisor import SessionResult, Supervisor

from . import server as server_module
from .tasks import LEARNING_KEY, TASKS, Task, atlas_check, variant_numbers
from .workspace import build_pristine, reset_workspace

__all__ = [
    "AGENT_NAME",
    "DEFAULT_OUT",
    "QUICK_SETTINGS",
    "SYSTEM_PROMPT",
    "SuiteReport",
    "TaskRun",
    "arun_suite",
    "build_agent",
    "compare_table",
    "learning_figure",
    "results_table",
    "run_suite",
    "suite_config",
    "write_plot",
]

AGENT_NAME = "mcp-file-ops"
DEFAULT_OUT = Path(".atlas") / "mcp_file_ops"
SYSTEM_PROMPT = (
    "You do file tasks in a workspace with the tools. Paths are relative to the workspace root. "
    "Call one tool at a time. When the task is done, answer in one short sentence with the result."
)
#: Model calls the student may make in one attempt before the run is stopped (a model node and a tool node per call).
MAX_MODEL_CALLS = 12
RECURSION_LIMIT = 2 * MAX_MODEL_CALLS + 8
#: With no atlas.yaml (and no ATLAS_CONFIG) the embedded model runs with these: one judge sample, no step judging,
#: one retry, no LLM probe and no coached warm-up (coach asks the teacher about every tool call), so a task costs a
#: handful of model calls rather than a dozen. ATLAS_* variables still override them.
QUICK_SETTINGS: dict[str, Any] = {
    "judges": {"temperatures": [0.0], "judge_steps": False},
    "supervision": {"max_retries": 1, "llm_probe": False, "warmup_sessions": 0},
    "models": {"student": {"provider": "local", "max_tokens": 320}},
}

ModelFactory = Callable[[Task, Path], Any]
Progress = Callable[[str], None]


@dataclass
class TaskRun:
    """One run of one task, as the table and results.json show it."""

    index: int
    task_id: int
    name: str
    phase: int
    mode: str
    repeat: int
    passed: bool
    check_reason: str
    lane: str | None = None
    reward: float | None = None
    reward_reason: str = ""
    tool_calls: int = 0
    model_calls: int = 0
    tokens: int = 0
    student_tokens: int = 0
    lessons_injected: int = 0
    lessons_learned: int = 0
    session_id: str | None = None
    answer: str = ""
    seconds: float = 0.0
    error: str | None = None
    #: The workspace variant the run was on (0: the canonical workspace).
    variant: int = 0


@dataclass
class SuiteReport:
    """What a suite run produced: its runs, their summary and where the files went."""

    mode: str
    model: str
    runs: list[TaskRun]
    summary: dict[str, Any]
    results_path: Path | None = None
    plot_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"suite": "mcp_file_ops", "mode": self.mode, "model": self.model, "learning_key": self.summary.get("learning_key"),
                "summary": self.summary, "runs": [asdict(r) for r in self.runs], "notes": self.notes}


# ------------------------------------------------------------------------------------------------ config
def suite_config(config: AtlasConfig | dict[str, Any] | str | Path | None = None, *, baseline: bool = False) -> AtlasConfig:
    """The config a suite runs with: the given one (or ./atlas.yaml, $ATLAS_CONFIG), else defaults with
    :data:`QUICK_SETTINGS`; ``baseline`` turns learning off (``playbook.enabled: false``)."""
    quick = config is None and not os.environ.get("ATLAS_CONFIG") and not Path(DEFAULT_CONFIG_FILE).is_file()
    overrides: dict[str, Any] = dict(QUICK_SETTINGS) if quick else {}
    if baseline:
        overrides["playbook"] = {"enabled": False}
    return AtlasConfig.load(config, **overrides)


# ------------------------------------------------------------------------------------------------ agent
def build_agent(model: Any, tools: Sequence[Any]) -> Any:
    """The agent: ``create_agent`` on the model and the MCP tools, nothing else.

    A runaway agent is stopped by the run's recursion limit (:data:`RECURSION_LIMIT`), not by a middleware: with_atlas
    would record every middleware node as a step of its own and double the trace the judges read."""
    from langchain.agents import create_agent

    return create_agent(model, list(tools), system_prompt=SYSTEM_PROMPT)


def student_model_factory(supervisor: Supervisor) -> ModelFactory:
    """The config's student role (by default the embedded local model) as a LangChain tool-calling chat model."""
    try:
        from atlas_plugins.langgraph.chat_model import AtlasChatModel
    except ImportError as exc:  # pragma: no cover - only before AtlasChatModel exists
        raise RuntimeError(f"the default student needs atlas_plugins.langgraph.chat_model.AtlasChatModel ({exc}); "
                           "use --model scripted meanwhile") from None
    chat_model = supervisor.models.get("student")
    student = AtlasChatModel(chat_model)

    def factory(task: Task, workspace: Path) -> Any:
        return student

    return factory


def server_connection(workspace: Path) -> dict[str, Any]:
    """How the MCP client starts the server: this Python, the server module's file, the workspace root."""
    return {"transport": "stdio", "command": sys.executable, "args": [str(Path(server_module.__file__).resolve()), "--root", str(workspace)]}


# ------------------------------------------------------------------------------------------------ the suite
def run_suite(config: AtlasConfig | dict[str, Any] | str | Path | None = None, tasks: Sequence[Task] | None = None, **options: Any) -> SuiteReport:
    """Run the tasks (default: all 25) and write the results; see :func:`arun_suite` for the options."""
    return asyncio.run(arun_suite(config, tasks, **options))


async def arun_suite(
    config: AtlasConfig | dict[str, Any] | str | Path | None = None,
    tasks: Sequence[Task] | None = None,
    *,
    repeat: int = 1,
    baseline: bool = False,
    model: str = "config",
    model_factory: ModelFactory | None = None,
    out_dir: str | Path = DEFAULT_OUT,
    progress: Progress | None = print,
    supervisor: Supervisor | None = None,
    learning_key: str | None = None,
    plot: bool = True,
    variants: str | int | None = None,
) -> SuiteReport:
    """Run ``tasks`` ``repeat`` times each, in order, one supervised session a run.

    ``model``: ``config`` (the config's student role through AtlasChatModel; supervision by the config's roles) or
    ``scripted`` (the scripted solver and scripted supervision: no LLM at all). ``model_factory(task, workspace)``
    overrides the student model. ``baseline`` runs with learning off under the key ``<key>:baseline`` (scripted runs use ``<key>:scripted``).
    ``supervisor`` reuses one (its config and store; ``baseline`` then needs its playbook disabled).
    ``progress`` gets one line per finished run (None: silent). ``variants``: the workspace of each repetition,
    ``canonical`` (default), ``train``, ``heldout`` or a seed number (see :func:`~.tasks.variant_numbers`).
    """
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools

    if model not in ("config", "scripted"):
        raise ValueError(f"model must be 'config' or 'scripted', got {model!r}")
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    chosen = list(tasks if tasks is not None else TASKS)
    per_round = variant_numbers(variants, repeat)  # a bad spec fails here, before anything starts
    mode = "baseline" if baseline else "learning"
    # Scripted runs and baselines keep learning keys of their own, so neither feeds the real key's history and playbook.
    key = (learning_key or LEARNING_KEY) + (":scripted" if model == "scripted" else "") + (":baseline" if baseline else "")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: None)
    if supervisor is not None and baseline and supervisor.config.playbook.enabled:
        raise ValueError("a baseline run needs a supervisor whose config has playbook.enabled: false")
    owned = supervisor is None
    if supervisor is None:
        loaded = suite_config(config, baseline=baseline)
        models = None
        if model == "scripted":
            from .scripted import ScriptedSupervision

            models = ScriptedSupervision(loaded)
        supervisor = Supervisor(loaded, models=models)

    # The workspace lives in a scratch folder of its own: resetting it deletes everything in it.
    scratch = Path(tempfile.mkdtemp(prefix="atlas-mcp-file-ops-")).resolve()
    schedule = [(r, task.in_variant(per_round[r - 1])) for r in range(1, repeat + 1) for task in chosen]
    runs: list[TaskRun] = []
    started_suite = time.perf_counter()
    try:
        pristines = {v: build_pristine(scratch / f"pristine-{v}", v) for v in dict.fromkeys(per_round)}
        workspace = reset_workspace(scratch / "workspace", pristines[per_round[0]])
        if model_factory is None:
            if model == "scripted":
                from .scripted import scripted_solver

                model_factory = scripted_solver
            else:
                model_factory = student_model_factory(supervisor)
        shown = "canonical" if set(per_round) == {0} else ", ".join(map(str, dict.fromkeys(per_round)))
        say(f"mcp_file_ops: {len(schedule)} runs ({len(chosen)} tasks x {repeat}), mode {mode}, model {model}, "
            f"learning key {key}, store {_store_name(supervisor)}, workspace variants {shown}")
        client = MultiServerMCPClient({"files": server_connection(workspace)})
        async with client.session("files") as session:
            tools = await load_mcp_tools(session)
            for index, (round_number, task) in enumerate(schedule, start=1):
                reset_workspace(workspace, pristines[task.variant])
                run = await _run_one(task, index, round_number, mode, model_factory, tools, workspace, supervisor, key)
                runs.append(run)
                say(_progress_line(run, len(schedule)))
    finally:
        if owned:
            supervisor.close()
        shutil.rmtree(scratch, ignore_errors=True)

    summary = summarize(runs)
    summary.update({"learning_key": key, "seconds": round(time.perf_counter() - started_suite, 2)})
    report = SuiteReport(mode=mode, model=model, runs=runs, summary=summary)
    report.results_path = out / ("results-baseline.json" if baseline else "results.json")
    if plot:
        report.plot_path, note = write_plot({mode: runs}, out / ("learning_curve-baseline.png" if baseline else "learning_curve.png"),
                                            learning_key=key)
        if note:
            report.notes.append(note)
    report.results_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    return report


async def _run_one(task: Task, index: int, round_number: int, mode: str, model_factory: ModelFactory, tools: Sequence[Any],
                   workspace: Path, supervisor: Supervisor, key: str) -> TaskRun:
    from langchain_core.messages import HumanMessage

    from atlas_plugins.langgraph import with_atlas

    started = time.perf_counter()
    result: SessionResult | None = None
    answer, error = "", None
    app = None
    try:
        agent = build_agent(model_factory(task, workspace), tools)
        # The task's checker is the session's verifiable check, so it is part of the reward.
        app = with_atlas(agent, agent_name=AGENT_NAME, learning_key=key, supervisor=supervisor,
                         checks=[atlas_check(task, workspace)])
        metadata = {"task_id": task.id, "task_name": task.name, "phase": task.phase, "repeat": round_number, "variant": task.variant}
        output = await app.ainvoke({"messages": [HumanMessage(task.prompt)]},
                                   {"recursion_limit": RECURSION_LIMIT, "configurable": {"atlas_metadata": metadata}})
        result = app.session_result()
        answer = result.final_answer if result is not None else _last_ai_text(output)
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the suite
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        result = app.session_result() if app is not None else None  # with_atlas ended the session as failed
    passed, reason = task.check(workspace, answer)
    run = TaskRun(index=index, task_id=task.id, name=task.name, phase=task.phase, mode=mode, repeat=round_number, passed=passed,
                  check_reason=reason, answer=answer, error=error, seconds=round(time.perf_counter() - started, 2), variant=task.variant)
    if result is not None:
        run.session_id, run.lane, run.reward, run.reward_reason = result.session_id, result.lane, result.reward, result.reward_reason
        run.tokens = result.total_tokens
        student = result.usage_by_role.get("student", {})
        run.student_tokens = int(student.get("input_tokens", 0)) + int(student.get("output_tokens", 0))
        run.lessons_injected, run.lessons_learned = len(result.lessons_used), len(result.lessons_learned)
        run.tool_calls, run.model_calls = _step_counts(supervisor, result.session_id)
    return run


def _step_counts(supervisor: Supervisor, session_id: str) -> tuple[int, int]:
    from atlas_learning.store import StepRecord

    try:
        steps = supervisor.store.rows(StepRecord, StepRecord.session_id == session_id)
    except Exception:  # noqa: BLE001 - the store may be down; the run still counts
        return 0, 0
    return sum(1 for s in steps if s.kind == "tool_call"), sum(1 for s in steps if s.kind == "model_call")


def _last_ai_text(output: Any) -> str:
    from atlas_plugins.langgraph._messages import last_text

    return last_text((output or {}).get("messages", []), "ai")


def _store_name(supervisor: Supervisor) -> str:
    url = supervisor.config.storage.url
    return url.split("@")[-1] if "@" in url else url


# ------------------------------------------------------------------------------------------------ reporting
def summarize(runs: Sequence[TaskRun]) -> dict[str, Any]:
    """Success rate, mean reward (of rewarded runs), mean tool calls, tokens, lessons."""
    rewards = [r.reward for r in runs if r.reward is not None]
    return {
        "runs": len(runs),
        "passed": sum(r.passed for r in runs),
        "success_rate": round(sum(r.passed for r in runs) / len(runs), 4) if runs else None,
        "mean_reward": round(statistics.fmean(rewards), 4) if rewards else None,
        "mean_tool_calls": round(statistics.fmean(r.tool_calls for r in runs), 2) if runs else None,
        "total_tokens": sum(r.tokens for r in runs),
        "lessons_injected": sum(r.lessons_injected for r in runs),
        "lessons_learned": sum(r.lessons_learned for r in runs),
        "errors": sum(1 for r in runs if r.error),
        "by_phase": {phase: round(sum(r.passed for r in runs if r.phase == phase) / n, 4)
                     for phase in sorted({r.phase for r in runs}) if (n := sum(1 for r in runs if r.phase == phase))},
    }


def _reward(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def _progress_line(run: TaskRun, total: int) -> str:
    outcome = "PASS" if run.passed else "FAIL"
    tail = f"  error: {run.error}" if run.error else f"  ({run.check_reason})" if not run.passed else ""
    return (f"[{run.index:>3}/{total}] task {run.task_id:>2} {run.name:<18} lane {run.lane or '-':<8} reward {_reward(run.reward):>4}  "
            f"{outcome}  tools {run.tool_calls:>2}  lessons {run.lessons_injected}  {run.seconds:5.1f}s{tail}")


def results_table(runs: Sequence[TaskRun]) -> str:
    """One row per run: task, lane, reward, checker result, tool calls, tokens, lessons injected."""
    header = f"{'#':>3}  {'task':<22} {'lane':<8} {'reward':>6}  {'check':<5} {'tools':>5} {'tokens':>7} {'lessons':>7}"
    lines = [header, "-" * len(header)]
    for run in runs:
        lines.append(f"{run.index:>3}  {f'{run.task_id:>2} {run.name}':<22} {run.lane or '-':<8} {_reward(run.reward):>6}  "
                     f"{'pass' if run.passed else 'FAIL':<5} {run.tool_calls:>5} {run.tokens:>7} {run.lessons_injected:>7}")
    summary = summarize(runs)
    lines.append("-" * len(header))
    lines.append(f"success {summary['passed']}/{summary['runs']} ({_percent(summary['success_rate'])}), mean reward "
                 f"{_reward(summary['mean_reward'])}, mean tool calls {summary['mean_tool_calls']}, tokens {summary['total_tokens']}, "
                 f"lessons learned {summary['lessons_learned']}")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def compare_table(learning: Sequence[TaskRun], baseline: Sequence[TaskRun]) -> str:
    """Success rate, mean reward and tool calls with learning and without, side by side."""
    with_learning, without = summarize(learning), summarize(baseline)
    rows = [
        ("success rate", _percent(with_learning["success_rate"]), _percent(without["success_rate"])),
        ("mean reward", _reward(with_learning["mean_reward"]), _reward(without["mean_reward"])),
        ("mean tool calls", str(with_learning["mean_tool_calls"]), str(without["mean_tool_calls"])),
        ("tokens", str(with_learning["total_tokens"]), str(without["total_tokens"])),
        ("lessons injected", str(with_learning["lessons_injected"]), str(without["lessons_injected"])),
    ]
    lines = [f"{'':<18}{'learning':>10}{'baseline':>10}"]
    lines += [f"{name:<18}{left:>10}{right:>10}" for name, left, right in rows]
    return "\n".join(lines)


#: Each series' colour, line style and drawing order: the learning run on top of the baseline, told apart by colour
#: and line style, not only by colour (the report's plot uses the same two colours).
SERIES_STYLES: dict[str, dict[str, Any]] = {
    "learning": {"color": "#6a3d9a", "linestyle": "-", "linewidth": 1.6, "marker": "o", "zorder": 3},
    # wider, beneath: where both runs score the same, the baseline still shows around the learning line
    "baseline": {"color": "#b15928", "linestyle": "--", "linewidth": 3.2, "marker": "s", "zorder": 2},
}


def learning_figure(series: dict[str, Sequence[TaskRun]], learning_key: str | None = None) -> Any:
    """The learning curve as a matplotlib figure (Agg): reward per task run (a cross where the check failed) and the
    cumulative success rate, one line per series (``learning`` on top, ``baseline`` dashed beneath). Integer run
    numbers on the x axis, legends outside the data. The caller closes it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, layout="constrained")
    for number, (label, runs) in enumerate(series.items()):
        if not runs:
            continue
        style = SERIES_STYLES.get(label, {"color": f"C{number + 2}", "linestyle": "-.", "marker": "^", "zorder": 1})
        x = [r.index for r in runs]
        top.plot(x, [r.reward if r.reward is not None else float("nan") for r in runs], label=f"{label}: reward",
                 markersize=5, **style)
        failed = [(r.index, r.reward if r.reward is not None else 0.0) for r in runs if not r.passed]
        if failed:
            top.scatter([f[0] for f in failed], [f[1] for f in failed], marker="x", s=60, color=style["color"],
                        zorder=style["zorder"] + 0.5, label=f"{label}: check failed")
        cumulative, passed = [], 0
        for position, run in enumerate(runs, start=1):
            passed += run.passed
            cumulative.append(passed / position)
        bottom.plot(x, cumulative, label=label, markersize=4, **style)
    top.set_ylabel("reward")
    top.set_ylim(-0.05, 1.05)
    top.set_title(f"MCP file operations ({learning_key or 'mcp-file-ops'}): reward and success by task run", loc="left")
    bottom.set_ylabel("cumulative success rate")
    bottom.set_xlabel("task run")
    bottom.set_ylim(0, 1.05)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return figure


def write_plot(series: dict[str, Sequence[TaskRun]], path: str | Path, *, learning_key: str | None = None) -> tuple[Path | None, str | None]:
    """Write :func:`learning_figure` as a PNG. Returns its path, or None and a one-line note when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None, "learning curve skipped: matplotlib is not installed (pip install 'atlas-plugins[plot]')"
    import matplotlib.pyplot as plt

    figure = learning_figure(series, learning_key)
    target = Path(path)
    try:
        figure.savefig(target, dpi=100)
    finally:
        plt.close(figure)
    return target, None
