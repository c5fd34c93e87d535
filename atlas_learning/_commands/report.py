"""``atlas report``: the learning curve of a learning key (or of every session), as a table, JSON or a PNG."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError, UsageError
from ._common import (
    LANES,
    Column,
    check_limit,
    console,
    echo_json,
    fmt_reward,
    fmt_time,
    load_config,
    open_store,
    parse_since,
    print_table,
    step_counts,
    supervision_tokens,
)


def build_report(records: list[Any], counts: dict[str, dict[str, int]], window: int) -> dict[str, Any]:
    """The per-session curve (oldest first) and its aggregates, as plain data."""
    sessions = []
    for number, record in enumerate(records, 1):
        supervision, role_total = supervision_tokens(record.usage_by_role)
        kinds = counts.get(record.id, {})
        sessions.append({
            "n": number, "session_id": record.id, "learning_key": record.learning_key, "started_at": record.started_at.isoformat(),
            "lane": record.lane, "reward": record.reward, "review_status": record.review_status,
            "tool_calls": kinds.get("tool_call", 0), "steps": sum(kinds.values()), "retries": record.retries,
            "interventions": record.interventions, "total_tokens": record.total_tokens,
            "supervision_tokens": supervision, "role_tokens": role_total,
        })
    lane_mix = {lane: sum(1 for s in sessions if s["lane"] == lane) for lane in LANES}
    other = sum(1 for s in sessions if s["lane"] not in LANES)
    if other:
        lane_mix["none"] = other
    windows = []
    for start in range(0, len(sessions), window):
        chunk = sessions[start : start + window]
        rewards = [s["reward"] for s in chunk if s["reward"] is not None]
        windows.append({
            "from": chunk[0]["n"], "to": chunk[-1]["n"], "sessions": len(chunk), "scored": len(rewards),
            "mean_reward": statistics.fmean(rewards) if rewards else None,
            "mean_tool_calls": statistics.fmean(s["tool_calls"] for s in chunk),
            "lanes": {lane: n for lane in LANES if (n := sum(1 for s in chunk if s["lane"] == lane))},
        })
    rewards = [s["reward"] for s in sessions if s["reward"] is not None]
    supervision = sum(s["supervision_tokens"] for s in sessions)
    role_total = sum(s["role_tokens"] for s in sessions)
    return {
        "sessions": sessions,
        "count": len(sessions),
        "scored": len(rewards),
        "mean_reward": statistics.fmean(rewards) if rewards else None,
        "lane_mix": lane_mix,
        "lane_share": {lane: n / len(sessions) for lane, n in lane_mix.items()} if sessions else {},
        "window": window,
        "reward_by_window": windows,
        "supervision_tokens": supervision,
        "total_tokens": role_total,
        "supervision_token_share": supervision / role_total if role_total else None,
        "mean_tool_calls": statistics.fmean(s["tool_calls"] for s in sessions) if sessions else None,
    }


def report(*, config: Path | None, store: str | None = None, key: str | None, since: str | None, limit: int | None, window: int,
           plot: Path | None, as_json: bool) -> None:
    from ..store import SessionFilter

    if window < 1:
        raise UsageError(f"--window: expected at least 1 session, got {window}")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: expected a .png file name")
    if plot is not None and not plot.parent.exists():
        raise AtlasError(f"--plot {plot}: folder {plot.parent} does not exist")
    where = SessionFilter(learning_key=key, since=parse_since(since), limit=check_limit(limit))
    with open_store(load_config(config, store)) as opened:
        records = list(reversed(opened.list_sessions(where)))  # newest-first from the store; a curve runs oldest-first
        counts = step_counts(opened, [r.id for r in records])
    data = {"learning_key": key, **build_report(records, counts, window)}
    if plot is not None:
        if not records:
            raise AtlasError("no sessions to plot" + (f" for key {key!r}" if key else "") + "; run an agent under Atlas first")
        write_plot(data, plot)
        data["plot"] = str(plot)
    if as_json:
        echo_json(data)
        return
    _print(data)
    if plot is not None:
        typer.echo(f"wrote {plot}")


def _print(data: dict[str, Any]) -> None:
    from rich.text import Text

    out = console()
    if not data["sessions"]:
        empty = "no sessions" + (f" for key {data['learning_key']!r}" if data["learning_key"] else "") + "; run an agent under Atlas first"
        (out if out.is_terminal else console(stderr=True)).print(empty)
        return
    several_keys = len({s["learning_key"] for s in data["sessions"]}) > 1
    columns = [Column("#", "right"), Column("session", short=12), *([Column("key", wrap=True)] if several_keys else []), Column("started (UTC)", wrap=True),
               Column("lane"), Column("reward", "right"), Column("tool calls", "right"), Column("tokens", "right"),
               Column("supervision", "right")]
    print_table(columns, ([s["n"], s["session_id"], *([s["learning_key"]] if several_keys else []), fmt_time(_parse(s["started_at"])),
                           s["lane"] or "-", fmt_reward(s["reward"]), s["tool_calls"], s["total_tokens"], s["supervision_tokens"]]
                          for s in data["sessions"]), out=out)
    out.print()
    total = data["count"]
    mix = ", ".join(f"{lane} {n} ({n / total:.0%})" for lane, n in data["lane_mix"].items() if n)
    out.print(Text(f"sessions      {total} ({data['scored']} scored), mean reward {fmt_reward(data['mean_reward'])}"))
    out.print(Text(f"lane mix      {mix}"))
    share = data["supervision_token_share"]
    out.print(Text(f"supervision   {data['supervision_tokens']} of {data['total_tokens']} tokens"
                   + ("" if share is None else f" ({share:.0%}) went to teacher, judges, probe and synthesizer")))
    out.print(Text(f"\nby window of {data['window']} sessions", style="bold"))
    print_table((Column("sessions"), Column("mean reward", "right"), Column("mean tool calls", "right"), Column("lanes", wrap=True)),
                ([f"{w['from']}-{w['to']}", fmt_reward(w["mean_reward"]), f"{w['mean_tool_calls']:.1f}",
                  ", ".join(f"{lane} {n}" for lane, n in w["lanes"].items()) or "-"] for w in data["reward_by_window"]), out=out)


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


LANE_COLOURS = {"auto": "#2ca02c", "paired": "#1f77b4", "coach": "#ff7f0e", "escalate": "#d62728", "none": "#7f7f7f"}
#: How a learning key's reward line and a baseline's are told apart (colour, line style, marker; neither colour is a
#: lane's); learning is drawn on top.
LEARNING_STYLE: dict[str, Any] = {"color": "#6a3d9a", "linestyle": "-", "linewidth": 1.6, "marker": "o", "markersize": 4, "zorder": 3}
BASELINE_STYLE: dict[str, Any] = {"color": "#b15928", "linestyle": "--", "linewidth": 2.6, "marker": "s", "markersize": 4, "zorder": 2}
MEAN_STYLE: dict[str, Any] = {"color": "#222222", "linestyle": ":", "linewidth": 2.2, "marker": "D", "markersize": 4, "zorder": 4}
BASELINE_SUFFIX = ":baseline"


def _by_key(sessions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The sessions of each learning key, oldest first, in the order the keys first appear."""
    keys: dict[str, list[dict[str, Any]]] = {}
    for session in sessions:
        keys.setdefault(session["learning_key"], []).append(session)
    return keys


def _windows(sessions: list[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """Per window of one key's sessions (numbered 1.. within the key): its middle, mean reward and lane counts."""
    windows = []
    for start in range(0, len(sessions), window):
        chunk = sessions[start : start + window]
        rewards = [s["reward"] for s in chunk if s["reward"] is not None]
        lanes = {lane: sum(1 for s in chunk if (s["lane"] or "none") == lane) for lane in (*LANES, "none")}
        windows.append({"from": start + 1, "to": start + len(chunk), "mean_reward": statistics.fmean(rewards) if rewards else None,
                        "lanes": lanes})
    return windows


def _outside_legend(axes: Any) -> None:
    """The axes' legend to the right of its data area (never over the lines)."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def _reward_line(axes: Any, sessions: list[dict[str, Any]], label: str, style: dict[str, Any]) -> bool:
    scored = [(n, s["reward"]) for n, s in enumerate(sessions, 1) if s["reward"] is not None]
    if scored:
        axes.plot([n for n, _ in scored], [r for _, r in scored], label=label, **style)
    return bool(scored)


def report_figure(data: dict[str, Any]) -> Any:
    """The report's figure: one row of charts per learning key, titled with the key: reward per session (with the
    window means, and the key's baseline, ``<key>:baseline``, dashed underneath when it is in the report), tool
    calls per session (bar colour: lane) and the lane mix per window. Integer session numbers, legends outside the
    data. Needs matplotlib (Agg); the caller closes the figure."""
    try:
        import matplotlib
    except ImportError:
        raise AtlasError("--plot needs matplotlib: pip install 'atlas-plugins[plot]'") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    window = data["window"]
    keys = _by_key(data["sessions"])
    figure, grid = plt.subplots(len(keys), 3, figsize=(15, 3.4 * len(keys) + 0.6), squeeze=False, layout="constrained",
                                gridspec_kw={"width_ratios": [2.2, 1.4, 1.2]})
    figure.suptitle("Atlas learning curve" + ("" if len(keys) == 1 else f": {len(keys)} learning keys"))
    for (key, sessions), (reward_ax, tools_ax, lanes_ax) in zip(keys.items(), grid, strict=True):
        baseline = key.endswith(BASELINE_SUFFIX)
        drawn = _reward_line(reward_ax, sessions, "baseline" if baseline else "reward", BASELINE_STYLE if baseline else LEARNING_STYLE)
        partner = keys.get(key + BASELINE_SUFFIX)
        if partner:
            drawn |= _reward_line(reward_ax, partner, f"baseline (key ...{BASELINE_SUFFIX})", BASELINE_STYLE)
        means = [((w["from"] + w["to"]) / 2, w["mean_reward"]) for w in _windows(sessions, window) if w["mean_reward"] is not None]
        if len(means) > 1:
            reward_ax.plot([m for m, _ in means], [v for _, v in means], label=f"mean of {window}", **MEAN_STYLE)
        reward_ax.set_title(f"{key}: reward", fontsize=10, loc="left")
        reward_ax.set_ylim(-0.02, 1.02)
        reward_ax.set_ylabel("reward")
        reward_ax.set_xlabel("session")
        reward_ax.grid(alpha=0.3)
        if drawn:
            _outside_legend(reward_ax)

        numbers = list(range(1, len(sessions) + 1))
        tools_ax.bar(numbers, [s["tool_calls"] for s in sessions], color=[LANE_COLOURS.get(s["lane"] or "none", "#7f7f7f") for s in sessions])
        tools_ax.set_title(f"{key}: tool calls", fontsize=10, loc="left")
        tools_ax.set_xlabel("session (bar colour: lane)")
        tools_ax.grid(alpha=0.3, axis="y")

        windows = _windows(sessions, window)
        bottom = [0] * len(windows)
        for lane in (*LANES, "none"):
            heights = [w["lanes"][lane] for w in windows]
            if any(heights):
                lanes_ax.bar([f"{w['from']}-{w['to']}" for w in windows], heights, bottom=bottom, color=LANE_COLOURS[lane])
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        lanes_ax.set_title(f"{key}: lane mix", fontsize=10, loc="left")
        lanes_ax.set_xlabel(f"sessions (windows of {window})")
        lanes_ax.set_ylabel("sessions")
        for axis in (reward_ax.xaxis, tools_ax.xaxis, tools_ax.yaxis, lanes_ax.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        if len(sessions) == 1:  # one session: a tick at 1 only, not 0.8-1.2
            for axes in (reward_ax, tools_ax):
                axes.set_xlim(0.5, 1.5)
    present = [lane for lane in (*LANES, "none") if any((s["lane"] or "none") == lane for s in data["sessions"])]
    figure.legend([Patch(color=LANE_COLOURS[lane]) for lane in present], present, title="lane", loc="outside right upper",
                  fontsize=8, frameon=False)
    return figure


def write_plot(data: dict[str, Any], path: Path) -> None:
    """Write :func:`report_figure` as a PNG."""
    figure = report_figure(data)
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise AtlasError(f"--plot {path}: cannot write ({exc.strerror})") from None
    finally:
        plt.close(figure)
