"""``atlas report``: the learning curve of a learning key (or of every session), as a table, JSON or a PNG."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError
from ._common import (
    LANES,
    check_limit,
    clip,
    console,
    echo_json,
    fmt_reward,
    fmt_time,
    load_config,
    open_store,
    parse_since,
    short,
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


def report(*, config: Path | None, key: str | None, since: str | None, limit: int | None, window: int, plot: Path | None,
           as_json: bool) -> None:
    from ..store import SessionFilter

    if window < 1:
        raise AtlasError(f"--window: expected at least 1 session, got {window}")
    if plot is not None and plot.suffix.lower() != ".png":
        raise AtlasError(f"--plot {plot}: expected a .png file name")
    if plot is not None and not plot.parent.exists():
        raise AtlasError(f"--plot {plot}: folder {plot.parent} does not exist")
    where = SessionFilter(learning_key=key, since=parse_since(since), limit=check_limit(limit))
    with open_store(load_config(config)) as store:
        records = list(reversed(store.list_sessions(where)))  # newest-first from the store; a curve runs oldest-first
        counts = step_counts(store, [r.id for r in records])
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
    from rich.table import Table
    from rich.text import Text

    out = console()
    if not data["sessions"]:
        out.print("no sessions" + (f" for key {data['learning_key']!r}" if data["learning_key"] else "") + "; run an agent under Atlas first")
        return
    several_keys = len({s["learning_key"] for s in data["sessions"]}) > 1
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["#", "session", *(["key"] if several_keys else []), "started (UTC)", "lane", "reward", "tool calls", "tokens",
               "supervision"]
    for column in columns:
        table.add_column(column, no_wrap=True, justify="right" if column in ("#", "reward", "tool calls", "tokens", "supervision") else "left")
    for s in data["sessions"]:
        started = fmt_time(_parse(s["started_at"]))
        row = [str(s["n"]), short(s["session_id"]), *([Text(clip(s["learning_key"], 30))] if several_keys else []), started,
               s["lane"] or "-", fmt_reward(s["reward"]), str(s["tool_calls"]), str(s["total_tokens"]), str(s["supervision_tokens"])]
        table.add_row(*row)
    out.print(table)
    out.print()
    total = data["count"]
    mix = ", ".join(f"{lane} {n} ({n / total:.0%})" for lane, n in data["lane_mix"].items() if n)
    out.print(Text(f"sessions      {total} ({data['scored']} scored), mean reward {fmt_reward(data['mean_reward'])}"))
    out.print(Text(f"lane mix      {mix}"))
    share = data["supervision_token_share"]
    out.print(Text(f"supervision   {data['supervision_tokens']} of {data['total_tokens']} tokens"
                   + ("" if share is None else f" ({share:.0%}) went to teacher, judges, probe and synthesizer")))
    windows = Table(title=None, box=None, header_style="bold", pad_edge=False)
    for column in ("sessions", "mean reward", "mean tool calls", "lanes"):
        windows.add_column(column, no_wrap=True)
    for w in data["reward_by_window"]:
        lanes = ", ".join(f"{lane} {n}" for lane, n in w["lanes"].items()) or "-"
        windows.add_row(f"{w['from']}-{w['to']}", fmt_reward(w["mean_reward"]), f"{w['mean_tool_calls']:.1f}", lanes)
    out.print(Text(f"\nby window of {data['window']} sessions", style="bold"))
    out.print(windows)


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


LANE_COLOURS = {"auto": "#2ca02c", "paired": "#1f77b4", "coach": "#ff7f0e", "escalate": "#d62728", "none": "#7f7f7f"}


def write_plot(data: dict[str, Any], path: Path) -> None:
    """Reward per session (with the window means), tool calls per session, and the lane mix per window, as one PNG."""
    try:
        import matplotlib
    except ImportError:
        from ..errors import AtlasError

        raise AtlasError("--plot needs matplotlib: pip install matplotlib (or the 'train' extra)") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sessions = data["sessions"]
    numbers = [s["n"] for s in sessions]
    figure, (reward_ax, tools_ax, lanes_ax) = plt.subplots(3, 1, figsize=(9, 9), sharex=False, constrained_layout=True)
    title = f"Atlas learning curve: {data['learning_key']}" if data["learning_key"] else "Atlas learning curve"
    figure.suptitle(title)

    scored = [(s["n"], s["reward"]) for s in sessions if s["reward"] is not None]
    if scored:
        reward_ax.plot([n for n, _ in scored], [r for _, r in scored], "o-", color="#1f77b4", alpha=0.6, label="reward")
    means = [(w["from"] + w["to"]) / 2 for w in data["reward_by_window"] if w["mean_reward"] is not None]
    values = [w["mean_reward"] for w in data["reward_by_window"] if w["mean_reward"] is not None]
    if means:
        reward_ax.plot(means, values, "s--", color="#d62728", label=f"mean of {data['window']}")
    reward_ax.set_ylim(-0.02, 1.02)
    reward_ax.set_ylabel("reward")
    reward_ax.set_xlabel("session")
    reward_ax.grid(alpha=0.3)
    if scored or means:
        reward_ax.legend(loc="lower right")

    colours = [LANE_COLOURS.get(s["lane"] or "none", "#7f7f7f") for s in sessions]
    tools_ax.bar(numbers, [s["tool_calls"] for s in sessions], color=colours)
    tools_ax.set_ylabel("tool calls")
    tools_ax.set_xlabel("session (bar colour: lane)")
    tools_ax.grid(alpha=0.3, axis="y")

    windows = data["reward_by_window"]
    labels = [f"{w['from']}-{w['to']}" for w in windows]
    bottom = [0] * len(windows)
    for lane in (*LANES, "none"):
        heights = [w["lanes"].get(lane, 0) if lane != "none" else w["sessions"] - sum(w["lanes"].values()) for w in windows]
        if any(heights):
            lanes_ax.bar(labels, heights, bottom=bottom, color=LANE_COLOURS[lane], label=lane)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for axis in (reward_ax.xaxis, tools_ax.xaxis, tools_ax.yaxis, lanes_ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    lanes_ax.set_ylabel("sessions")
    lanes_ax.set_xlabel("sessions (window)")
    lanes_ax.set_title("lane mix", fontsize=10)
    lanes_ax.legend(loc="upper right", fontsize=8)
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise AtlasError(f"--plot {path}: cannot write ({exc.strerror})") from None
    finally:
        plt.close(figure)
