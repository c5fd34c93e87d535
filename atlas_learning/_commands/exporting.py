"""``atlas export``: write reviewed sessions as JSONL (AtlasSessionTrace, chat messages, or GRPO prompts)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError, UsageError
from ._common import (
    LANES,
    REVIEW_STATUSES,
    check_choice,
    check_limit,
    check_reward,
    console,
    echo_json,
    load_config,
    open_store,
    parse_since,
)

#: A non-terminal stderr gets a counter line at most this often during a long export.
COUNTER_EVERY_S = 5.0


def export(*, config: Path | None, output: str | None, statuses: list[str] | None, min_reward: float | None, max_reward: float | None,
           key: str | None, lane: str | None, since: str | None, limit: int | None, fmt: str, endpoint: str | None = None,
           store: str | None = None, as_json: bool = False) -> None:
    try:
        from ..export import EXPORT_FORMATS, export_sessions
    except ImportError as exc:
        raise AtlasError(f"export is not available in this installation (atlas_learning.export: {exc})") from None
    from ..store import SessionFilter

    if fmt not in (*EXPORT_FORMATS, "otlp"):
        raise UsageError(f"--format: expected one of {', '.join(EXPORT_FORMATS)} or otlp, got {fmt!r}")
    for status in statuses or ():
        check_choice(status, REVIEW_STATUSES, "--status")
    where = SessionFilter(
        learning_key=key,
        lane=check_choice(lane, LANES, "--lane"),
        review_status=list(dict.fromkeys(statuses)) if statuses else ["approved"],
        min_reward=check_reward(min_reward, "--min-reward"),
        max_reward=check_reward(max_reward, "--max-reward"),
        since=parse_since(since),
        limit=check_limit(limit),
    )
    if fmt == "otlp" or endpoint is not None:  # traces to an OpenTelemetry collector, not a file
        from ..telemetry import export_command

        export_command(config=load_config(config, store), fmt=fmt, endpoint=endpoint, output=output, where=where)
        return
    if output is None:
        raise UsageError("--output: name the .jsonl file to write (or - for stdout)")
    to_stdout = output == "-"
    if to_stdout and as_json:
        raise UsageError("--json prints what was exported on stdout, and with -o - stdout holds the records; "
                         "name a file with -o, or leave out --json")
    target = None if to_stdout else Path(output)
    if target is not None and target.is_dir():
        raise AtlasError(f"--output {output}: is a directory; name a .jsonl file (or - for stdout)")
    if target is not None and not target.absolute().parent.is_dir():  # never made on the user's behalf
        raise AtlasError(f"--output {output}: folder {target.absolute().parent} does not exist; create it first or name "
                         "a file in an existing folder")

    with open_store(load_config(config, store)) as opened:
        total = opened.count_sessions(where)
        if where.limit is not None:
            total = min(total, where.limit)
        with _progress(total) as progress:
            # To stdout: the JSONL goes there as it is written, and nothing else does (progress and summary: stderr).
            destination = sys.stdout if to_stdout else target
            try:
                count = export_sessions(opened, destination, format=fmt, where=where, progress=progress)
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise AtlasError(f"--output {output}: cannot write ({exc.strerror or exc})") from None
            if to_stdout:
                sys.stdout.flush()
    if as_json:
        echo_json({"exported": count, "format": fmt, "output": output, "review_status": list(where.review_status or ())})
        return
    statuses_text = ", ".join(where.review_status or ())
    summary = f"exported {count} session{'s' if count != 1 else ''} ({statuses_text}) as {fmt} to {'stdout' if to_stdout else output}"
    typer.echo(summary, err=to_stdout)


class _progress:
    """A progress callback for export_sessions: a rich bar on a terminal's stderr, else a throttled counter line.

    It accepts ``progress(done)``, ``progress(done, total)`` or ``progress(anything)`` (then it counts calls).
    Nothing is ever written to stdout.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._task: Any = None
        self._last = time.monotonic()

    def __enter__(self) -> Callable[..., None]:
        if sys.stderr.isatty() and self.total > 1:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("export", total=self.total)
        return self.update

    def update(self, *args: Any, **kwargs: Any) -> None:
        first = args[0] if args else kwargs.get("done", kwargs.get("count"))
        if isinstance(first, int) and not isinstance(first, bool):
            self.done = first
        else:
            self.done += 1
        second = args[1] if len(args) > 1 else kwargs.get("total")
        if isinstance(second, int) and not isinstance(second, bool) and second > 0:
            self.total = second
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, total=self.total)
        elif time.monotonic() - self._last >= COUNTER_EVERY_S:
            self._last = time.monotonic()
            print(f"atlas export: {self.done}/{self.total} sessions", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
