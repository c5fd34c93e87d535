"""The learning-curve plots, checked on the figure objects: one chart per learning key titled with it, integer
session numbers, legends outside the data, learning drawn over the baseline in another colour and line style."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from typer.testing import CliRunner  # noqa: E402

from atlas_learning._commands._common import step_counts  # noqa: E402
from atlas_learning._commands.report import BASELINE_STYLE, LEARNING_STYLE, build_report, report_figure  # noqa: E402
from atlas_learning.cli import app  # noqa: E402
from atlas_learning.store import SessionFilter, Store  # noqa: E402
from examples.mcp_file_ops.harness import TaskRun, learning_figure  # noqa: E402
from tests.support import make_supervisor  # noqa: E402, F401 - the fixture


def _record(make, key: str, count: int) -> None:
    supervisor = make(supervision={"lane": "paired"}, drift={"enabled": False})
    for number in range(count):
        run = supervisor.begin(f"What is {number} + 1?", agent_name="adder", learning_key=key)
        run.record_step(kind="tool_call", tool_name="add", tool_args={"a": number, "b": 1}, output=str(number + 1))
        run.validate_answer(str(number + 1))
        run.finish(str(number + 1))


def _data(store_url: str, key: str | None = None, window: int = 3) -> dict:
    with Store(store_url) as store:
        records = list(reversed(store.list_sessions(SessionFilter(learning_key=key))))
        counts = step_counts(store, [r.id for r in records])
    return {"learning_key": key, **build_report(records, counts, window)}


def _outside(figure, legend, axes) -> bool:
    renderer = figure.canvas.get_renderer()
    return not legend.get_window_extent(renderer).overlaps(axes.get_window_extent(renderer))


def _integer_ticks(axis) -> list[float]:
    low, high = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_majorticklocs() if low - 1e-9 <= t <= high + 1e-9]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    return ticks


def test_report_plot_has_a_chart_per_key_with_the_learning_line_on_top(make_supervisor,  # noqa: F811
                                                                       store_url: str, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    _record(make_supervisor, "plots", 7)
    _record(make_supervisor, "plots:baseline", 4)
    figure = report_figure(_data(store_url))
    try:
        figure.canvas.draw()
        rows = [axes for axes in figure.axes if axes.get_title(loc="left").endswith(": reward")]
        assert [a.get_title(loc="left") for a in rows] == ["plots: reward", "plots:baseline: reward"]
        assert sorted(a.get_title(loc="left") for a in figure.axes) == sorted(
            f"{key}: {chart}" for key in ("plots", "plots:baseline") for chart in ("reward", "tool calls", "lane mix"))
        learning_axes, baseline_axes = rows
        assert _integer_ticks(learning_axes.xaxis)[-1] <= 7 and _integer_ticks(baseline_axes.xaxis)[-1] <= 4
        for axes in figure.axes:
            if axes.get_title(loc="left").endswith("tool calls"):
                _integer_ticks(axes.xaxis)
                _integer_ticks(axes.yaxis)
        for axes in rows:  # the legend sits beside the data, never over it
            assert axes.get_legend() is not None and _outside(figure, axes.get_legend(), axes)
        [lanes] = figure.legends
        assert all(_outside(figure, lanes, axes) for axes in figure.axes)

        lines = {line.get_label(): line for line in learning_axes.get_lines()}
        learning, baseline = lines["reward"], lines["baseline (key ...:baseline)"]
        assert len(learning.get_xdata()) == 7 and len(baseline.get_xdata()) == 4
        assert learning.get_zorder() > baseline.get_zorder()  # learning on top
        assert learning.get_color() != baseline.get_color() and learning.get_linestyle() != baseline.get_linestyle()
        assert (learning.get_color(), learning.get_linestyle()) == (LEARNING_STYLE["color"], LEARNING_STYLE["linestyle"])
        [own] = [line for line in baseline_axes.get_lines() if line.get_label() == "baseline"]
        assert (own.get_color(), own.get_linestyle()) == (BASELINE_STYLE["color"], BASELINE_STYLE["linestyle"])
    finally:
        plt.close(figure)

    only = report_figure(_data(store_url, key="plots"))  # --key: that key's chart alone
    try:
        assert sorted(a.get_title(loc="left") for a in only.axes) == ["plots: lane mix", "plots: reward", "plots: tool calls"]
    finally:
        plt.close(only)

    config = tmp_path / "atlas.yaml"
    config.write_text(f"storage:\n  url: '{store_url}'\n")
    png = tmp_path / "curve.png"
    result = CliRunner().invoke(app, ["report", "--config", str(config), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def _runs(mode: str, rewards: list[float | None]) -> list[TaskRun]:
    return [TaskRun(index=i, task_id=i, name=f"task{i}", phase=1, mode=mode, repeat=1, passed=r is not None and r > 0.5,
                    check_reason="", reward=r) for i, r in enumerate(rewards, 1)]


def test_the_examples_compare_plot_draws_learning_over_the_baseline() -> None:
    import matplotlib.pyplot as plt

    figure = learning_figure({"learning": _runs("learning", [0.2, 0.6, 0.9, None, 1.0]),
                              "baseline": _runs("baseline", [0.2, 0.4, 0.4, 0.3, 0.5])}, learning_key="mcp-file-ops")
    try:
        figure.canvas.draw()
        top, bottom = figure.axes
        assert top.get_title(loc="left").startswith("MCP file operations (mcp-file-ops)")
        assert _integer_ticks(bottom.xaxis) and _integer_ticks(top.xaxis)
        for axes in (top, bottom):
            assert _outside(figure, axes.get_legend(), axes)
            lines = {line.get_label(): line for line in axes.get_lines()}
            learning = lines.get("learning: reward", lines.get("learning"))
            baseline = lines.get("baseline: reward", lines.get("baseline"))
            assert learning.get_zorder() > baseline.get_zorder()
            assert learning.get_color() != baseline.get_color() and learning.get_linestyle() != baseline.get_linestyle()
        failed = [c for c in top.collections if c.get_label() == "learning: check failed"]
        assert len(failed) == 1 and len(failed[0].get_offsets()) == 2  # task runs 1 and 4 failed their check
    finally:
        plt.close(figure)
