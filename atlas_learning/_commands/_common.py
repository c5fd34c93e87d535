"""What the command implementations share: loading config and store, finding sessions, parsing, printing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AtlasError

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


def load_config(path: Path | None) -> AtlasConfig:
    from ..config import AtlasConfig

    return AtlasConfig.load(path)


@contextmanager
def open_store(config: AtlasConfig) -> Iterator[Store]:
    """The configured store, migrated (an empty database gets the schema), closed afterwards."""
    from ..store import Store

    with Store(config) as store:
        yield store


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that never wraps tables into the terminal's width when piped."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


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
        raise AtlasError(f"{option}: expected an ISO date or time (2025-01-31, 2025-01-31T09:00) or an age (7d, 12h, 30m, 2w), got {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def check_choice(value: str | None, choices: Sequence[str], option: str) -> str | None:
    if value is not None and value not in choices:
        raise AtlasError(f"{option}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_reward(value: float | None, option: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise AtlasError(f"{option}: expected a reward between 0 and 1, got {value}")
    return value


def check_limit(value: int | None, option: str = "--limit") -> int | None:
    """A positive limit; 0 means no limit (None)."""
    if value is None or value == 0:
        return None
    if value < 0:
        raise AtlasError(f"{option}: expected a positive number (0 for no limit), got {value}")
    if value > _MAX_LIMIT:  # past what every backend takes as a LIMIT (a 64-bit integer)
        raise AtlasError(f"{option}: at most {_MAX_LIMIT} (0 for no limit), got {value}")
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
            raise AtlasError(
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


def fmt_reward(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
    """Print JSON to stdout: one document, indented, or one compact object per line."""
    import typer

    if lines:
        for item in data:
            typer.echo(json.dumps(item, default=str, ensure_ascii=False))
    else:
        typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
