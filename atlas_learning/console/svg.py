"""The learning page's charts as server-rendered SVG: no JavaScript library, nothing fetched."""

from __future__ import annotations

from html import escape
from typing import Any

from .._commands._common import LANES

LANE_COLORS = {"auto": "#2e7d32", "paired": "#1565c0", "coach": "#ef6c00", "escalate": "#c62828", "none": "#9e9e9e"}
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 760, 220, 48, 16, 18, 30


def _frame(title: str, y_max: float, y_format: str, n: int) -> list[str]:
    inner_h = _H - _TOP - _BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<rect x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{inner_h}" class="plot"/>']
    for i in range(5):
        value = y_max * i / 4
        y = _TOP + inner_h - inner_h * i / 4
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{format(value, y_format)}</text>')
    for i in sorted({1, max(1, n // 2), n}):
        parts.append(f'<text x="{_x(i, n):.1f}" y="{_H - 10}" text-anchor="middle" class="tick">{i}</text>')
    return parts


def _x(i: int, n: int) -> float:
    width = _W - _LEFT - _RIGHT
    return _LEFT + (width / 2 if n <= 1 else (i - 1) * width / (n - 1))


def _y(value: float, y_max: float) -> float:
    inner_h = _H - _TOP - _BOTTOM
    return _TOP + inner_h - inner_h * (min(max(value, 0.0), y_max) / y_max if y_max else 0.0)


def line_chart(title: str, series: list[tuple[str, str, list[float | None]]], *, y_max: float = 1.0, y_format: str = ".2f",
               points: bool = True) -> str:
    """Lines over sessions 1..n: each series is (label, colour, values); a None value breaks its line."""
    n = max((len(values) for _, _, values in series), default=0)
    parts = _frame(title, y_max, y_format, n)
    for label, color, values in series:
        run: list[str] = []
        segments: list[list[str]] = []
        for i, value in enumerate(values, 1):
            if value is None:
                if run:
                    segments.append(run)
                run = []
                continue
            run.append(f"{_x(i, n):.1f},{_y(value, y_max):.1f}")
            if points:
                parts.append(f'<circle cx="{_x(i, n):.1f}" cy="{_y(value, y_max):.1f}" r="2.5" fill="{color}" class="point">'
                             f"<title>{escape(label)} #{i}: {format(value, y_format)}</title></circle>")
        if run:
            segments.append(run)
        for segment in segments:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(segment)}" data-series="{escape(label)}"/>')
    legend_x = _LEFT + 8
    for label, color, _ in series:
        parts.append(f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="13" class="legend">{escape(label)}</text>')
        legend_x += 14 + 7 * len(label) + 18
    parts.append("</svg>")
    return "".join(parts)


def lane_bars(title: str, windows: list[dict[str, Any]]) -> str:
    """Stacked bars: the lane mix of each window of sessions."""
    n = len(windows)
    parts = _frame(title, 1.0, ".0%", 0)
    width = (_W - _LEFT - _RIGHT) / max(n, 1)
    for index, window in enumerate(windows):
        total = window["sessions"] or 1
        bottom = 1.0
        for lane in (*LANES, "none"):
            count = window["lanes"].get(lane, 0) if lane != "none" else window["sessions"] - sum(window["lanes"].values())
            if count <= 0:
                continue
            share = count / total
            top = bottom - share
            y1, y2 = _y(bottom, 1.0), _y(top, 1.0)
            parts.append(f'<rect x="{_LEFT + index * width + 2:.1f}" y="{y2:.1f}" width="{max(width - 4, 1):.1f}" height="{y1 - y2:.1f}" '
                         f'fill="{LANE_COLORS[lane]}" class="bar" data-lane="{lane}"><title>sessions {window["from"]}-{window["to"]}: '
                         f"{lane} {count}</title></rect>")
            bottom = top
        parts.append(f'<text x="{_LEFT + index * width + width / 2:.1f}" y="{_H - 10}" text-anchor="middle" class="tick">'
                     f'{window["from"]}-{window["to"]}</text>' if n <= 16 or index % max(1, n // 8) == 0 else "")
    legend_x = _LEFT + 8
    for lane in LANES:
        parts.append(f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{LANE_COLORS[lane]}"/>'
                     f'<text x="{legend_x + 14}" y="13" class="legend">{lane}</text>')
        legend_x += 14 + 7 * len(lane) + 18
    parts.append("</svg>")
    return "".join(parts)


def learning_charts(data: dict[str, Any]) -> dict[str, str]:
    """The learning page's three charts from :func:`~atlas_learning.console.queries.learning_curve` data."""
    sessions = data["sessions"]
    rewards = [s["reward"] for s in sessions]
    windows = data["reward_by_window"]
    window_means: list[float | None] = []
    success: list[float | None] = []
    for w in windows:
        window_means.extend([w["mean_reward"]] * w["sessions"])
        success.extend([w["success_rate"]] * w["sessions"])
    tokens = [float(s["supervision_tokens"]) for s in sessions]
    top = max(tokens, default=0.0)
    return {
        "reward": line_chart("reward and success per session", [("reward", "#1565c0", rewards),
                                                               (f"mean reward (window {data['window']})", "#90caf9", window_means),
                                                               (f"success rate (window {data['window']})", "#2e7d32", success)]),
        "tokens": line_chart("supervision tokens per session", [("supervision tokens", "#ef6c00", tokens)],
                             y_max=top * 1.1 if top else 1.0, y_format=".0f"),
        "lanes": lane_bars("lane mix per window", windows),
    }
