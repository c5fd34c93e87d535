"""What the command implementations share: loading config and store, finding sessions, parsing, printing."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AtlasError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import AtlasConfig
    from ..store import SessionRecord, Store

#: The shortest session-id prefix ``atlas show`` and ``atlas review`` accept.
MIN_PREFIX = 8
REVIEW_STATUSES = ("pending", "approved", "quarantined")
LANES = ("auto", "paired", "coach", "escalate")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_HEX = re.compile(r"^[0-9a-f]+$")


#: Where the last loaded config's store URL came from (a command loads one config per process), for the one
#: line that says no store is there.
_STORE_ORIGIN = "storage.url"


def load_config(path: Path | None, store: str | None = None) -> AtlasConfig:
    """The configuration (``--config`` or ./atlas.yaml, then ``ATLAS_*``), with ``--store URL`` over both."""
    from pydantic import ValidationError

    from ..config import AtlasConfig, StorageConfig

    loaded = AtlasConfig.load(path)
    global _STORE_ORIGIN
    if store is not None:
        try:
            storage = StorageConfig.model_validate({**loaded.storage.model_dump(), "url": store})
        except ValidationError as exc:
            raise UsageError(f"--store {store!r}: {exc.errors()[0]['msg']}") from None
        loaded = loaded.model_copy(update={"storage": storage})
        _STORE_ORIGIN = "--store"
    elif os.environ.get("ATLAS_STORAGE__URL"):
        _STORE_ORIGIN = "ATLAS_STORAGE__URL"
    elif loaded.storage.url != StorageConfig.model_fields["url"].default:
        _STORE_ORIGIN = f"storage.url in {path or 'atlas.yaml'}"
    else:
        _STORE_ORIGIN = "the default storage.url"
    return loaded


@contextmanager
def open_store(config: AtlasConfig, *, create: bool = False) -> Iterator[Store]:
    """The configured store, closed afterwards; an older schema is upgraded. Readers (``create=False``, the
    default) never create one: a store that is not there ends the command with one line naming where it looked
    and how to point at another. Writers (``create=True``) create it, schema included."""
    from ..errors import StoreNotFoundError
    from ..store import Store

    try:
        store = Store(config, create=create)
    except StoreNotFoundError as exc:
        url = f"{store_url(config)} " if store_url(config) != exc.where else ""
        raise AtlasError(f"no store at {exc.where} ({exc.detail}; {url}from {_STORE_ORIGIN}); point at one with --store URL, "
                         "ATLAS_STORAGE__URL or storage.url in atlas.yaml, or record sessions first (atlas run, atlas "
                         "quickstart)") from None
    with store:
        yield store


def store_url(config: AtlasConfig) -> str:
    """The configured store URL with any password hidden, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", config.storage.url)


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr). Off a terminal it is as wide as what it prints, so nothing is cut to
    80 columns; ``NO_COLOR`` is honoured."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:  # rich's own test (a TTY, or FORCE_COLOR / TTY_COMPATIBLE), as print_table's
        out.width, out.soft_wrap = _UNCUT_WIDTH, True
    return out


#: The width a console off a terminal lays out in: wider than any line Atlas prints, so none is cut.
_UNCUT_WIDTH = 100_000


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]], *, out: Console | None = None) -> None:
    """A listing: on a terminal, a rich table whose free-text columns wrap (nothing is cut with an ellipsis); elsewhere
    (piped, redirected) tab-separated values under one header line, every value whole, for ``cut`` and ``awk``.
    A cell is a value or a ``rich.text.Text``; ``Column.short`` shortens a value on the terminal only (an id)."""
    out = out or console()
    rows = list(rows)
    if not out.is_terminal:
        import typer

        typer.echo("\t".join(column.name for column in columns))
        for row in rows:
            typer.echo("\t".join(_plain(cell) for cell in row))
        return
    from rich.table import Table
    from rich.text import Text

    cells = [[cell if isinstance(cell, Text) else Text(_plain(cell)[: column.short] if column.short else _plain(cell))
              for column, cell in zip(columns, row, strict=True)] for row in rows]
    natural = [max([len(column.name), *(cell.cell_len for cell in (row[i] for row in cells))]) for i, column in enumerate(columns)]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, width in zip(columns, natural, strict=True):
        table.add_column(column.name, justify=column.justify, overflow="fold", no_wrap=not column.wrap,  # type: ignore[arg-type]
                         min_width=min(width, _WRAP_MIN) if column.wrap else None)
    for row in cells:
        table.add_row(*row)
    # What the table needs with its free text wrapped as far as it goes; a terminal narrower than that gets the
    # table at that width, uncropped (the terminal folds the lines), rather than values cut short.
    needed = sum(min(w, _WRAP_MIN) if c.wrap else w for c, w in zip(columns, natural, strict=True)) + 2 * (len(columns) - 1)
    if needed > out.width:  # print(width=) cannot go past the console's own width: widen it for this table
        width, out.width = out.width, needed
        try:
            out.print(table, crop=False)
        finally:
            out.width = width
    else:
        out.print(table)


#: The narrowest a free-text column is wrapped to on a terminal.
_WRAP_MIN = 12


@dataclass(frozen=True)
class Column:
    """A column of :func:`print_table`: its header, its alignment on a terminal, the width an id is cut to there
    (None: never cut), and whether it is free text that wraps to make room (short values and numbers never do)."""

    name: str
    justify: str = "left"
    short: int | None = None
    wrap: bool = False


def _plain(cell: Any) -> str:
    """One cell as one line of plain text: no tabs or newlines, so every row stays one TSV line."""
    text = cell.plain if hasattr(cell, "plain") else "" if cell is None else str(cell)
    return " ".join(text.split())


def parse_since(value: str | None, *, option: str = "--since") -> datetime | None:
    """``7d``, ``12h``, ``30m``, ``2w``, ``90s`` ago, or an ISO date or time (naive means UTC)."""
    if value is None:
        return None
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2).lower()
        try:
            return datetime.now(timezone.utc) - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:  # before year 1: every session is newer
            return datetime.min.replace(tzinfo=timezone.utc)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: expected an ISO date or time (2025-01-31, 2025-01-31T09:00) or an age (7d, 12h, 30m, 2w), got {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def check_choice(value: str | None, choices: Sequence[str], option: str) -> str | None:
    if value is not None and value not in choices:
        raise UsageError(f"{option}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_reward(value: float | None, option: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(f"{option}: expected a reward between 0 and 1, got {value}")
    return value


def check_limit(value: int | None, option: str = "--limit") -> int | None:
    """A positive limit; 0 means no limit (None)."""
    if value is None or value == 0:
        return None
    if value < 0:
        raise UsageError(f"{option}: expected a positive number (0 for no limit), got {value}")
    if value > _MAX_LIMIT:  # past what every backend takes as a LIMIT (a 64-bit integer)
        raise UsageError(f"{option}: at most {_MAX_LIMIT} (0 for no limit), got {value}")
    return value


_MAX_LIMIT = 2**63 - 1


def resolve_session(store: Store, reference: str) -> SessionRecord:
    """The session with this id, or the only one whose id starts with it (at least 8 characters)."""
    return resolve_sessions(store, [reference])[0]


def resolve_sessions(store: Store, references: Iterable[str]) -> list[SessionRecord]:
    from sqlmodel import col

    from ..store import SessionRecord

    found: dict[str, SessionRecord] = {}
    for raw in references:
        reference = raw.strip().lower()
        if len(reference) < MIN_PREFIX or not _HEX.match(reference):
            raise UsageError(
                f"session {raw!r}: give the full id or at least its first {MIN_PREFIX} hex characters; list them with `atlas sessions`"
            )
        exact = store.get(SessionRecord, reference)
        if exact is not None:
            found.setdefault(exact.id, exact)
            continue
        matches = store.rows(SessionRecord, col(SessionRecord.id).startswith(reference, autoescape=True), order_by=SessionRecord.id, limit=6)
        if not matches:
            raise AtlasError(f"no session matches {raw!r} in {store!r}; list them with `atlas sessions`")
        if len(matches) > 1:
            shown = ", ".join(m.id[:12] for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise AtlasError(f"session prefix {raw!r} is ambiguous ({shown}); give more characters")
        found.setdefault(matches[0].id, matches[0])
    return list(found.values())


def step_counts(store: Store, session_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{session_id: {kind: count}}`` for the given sessions, in one grouped query per 500 ids."""
    from sqlalchemy import func, select

    from ..store import StepRecord

    counts: dict[str, dict[str, int]] = {}
    ids = list(session_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        statement = (
            select(StepRecord.session_id, StepRecord.kind, func.count())
            .where(StepRecord.session_id.in_(chunk))  # type: ignore[attr-defined]
            .group_by(StepRecord.session_id, StepRecord.kind)
        )
        for session_id, kind, count in store.read(statement):
            counts.setdefault(session_id, {})[kind] = int(count)
    return counts


def supervision_tokens(usage_by_role: dict[str, Any] | None) -> tuple[int, int]:
    """(tokens of every role but the student, tokens of all roles) from a session's ``usage_by_role``."""
    supervision = total = 0
    for role, usage in (usage_by_role or {}).items():
        if not isinstance(usage, dict):
            continue
        tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        total += tokens
        if role != "student":
            supervision += tokens
    return supervision, total


def short(identifier: str | None, width: int = 12) -> str:
    return (identifier or "")[:width]


def fmt_number(value: float) -> str:
    """A number for display: at most 3 decimals, no trailing zeros (0.8999999999999999 -> 0.9, 0.845 -> 0.845).
    ``--json`` keeps the full value."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_value(value: Any, limit: int = 60) -> str:
    """A value for display: numbers by :func:`fmt_number`, also inside a dict or list (``exists 0.9, size 1``),
    anything else clipped to ``limit``."""
    if isinstance(value, bool) or value is None:
        return clip(value, limit) or "-"
    if isinstance(value, (int, float)):
        return fmt_number(value)
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {fmt_value(v, limit)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v, limit) for v in value) + "]"
    return clip(value, limit)


def fmt_reward(value: float | None) -> str:
    return "-" if value is None else fmt_number(value)


def fmt_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def clip(value: Any, limit: int = 160) -> str:
    """A one-line, length-limited rendering of a value (JSON for structures)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def echo_json(data: Any, *, lines: bool = False) -> None:
    """Print ``--json`` output on stdout, compact: one object (``lines=False``), or a listing as JSON Lines, one
    object per line (``lines=True``; nothing at all for an empty listing)."""
    import typer

    if lines:
        for item in data:
            typer.echo(json.dumps(item, default=str, ensure_ascii=False))
    else:
        typer.echo(json.dumps(data, default=str, ensure_ascii=False))
