"""``atlas review approve|quarantine|pending``: move sessions through the review gate, with a log of who did it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import AtlasError, UsageError
from ._common import check_reward, echo_json, load_config, open_store, resolve_sessions, short

if TYPE_CHECKING:
    from ..config import AtlasConfig
    from ..store import Store

#: The command's verb and the review status it sets.
ACTIONS = {"approve": "approved", "quarantine": "quarantined", "pending": "pending"}


def set_review_status(store: Store, config: AtlasConfig, session_ids: Iterable[str], to_status: str, *, reviewer: str,
                      note: str | None) -> tuple[list[dict[str, str]], int]:
    """The review gate: move sessions to ``to_status`` in one transaction, logging each change (who, from, to, the
    note, redacted). Refuses (AtlasError, nothing changed) to approve a session still running or abandoned.
    Returns the changes (``session_id``, ``from``, ``to``, oldest first) and how many already had that status.
    ``atlas review`` and ``atlas console`` both go through here."""
    from sqlmodel import select

    from ..redact import Redactor
    from ..store import ReviewLogRecord, SessionRecord

    if to_status not in ACTIONS.values():
        raise AtlasError(f"review status: expected one of {', '.join(ACTIONS.values())}, got {to_status!r}")
    # A note is free text a reviewer types: it goes through the same redactor as everything else stored.
    note = Redactor(config.redaction.patterns, enabled=config.redaction.enabled).text(note) if note else note
    chosen = sorted(set(session_ids))
    changed: list[dict[str, str]] = []
    unchanged = 0
    with store.transaction() as tx:
        rows = tx.exec(select(SessionRecord).where(SessionRecord.id.in_(chosen)).with_for_update()).all()  # type: ignore[attr-defined]
        unfinished = [r for r in rows if r.status in ("running", "abandoned")] if to_status == "approved" else []
        if unfinished:  # approved is training data: a half-done trace must not become one
            first = unfinished[0]
            raise AtlasError(f"session {short(first.id)} is {first.status}" + (f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else "")
                             + ": only finished sessions can be approved; quarantine it, or approve it once it has finished")
        for record in sorted(rows, key=lambda r: r.started_at):
            if record.review_status == to_status:
                unchanged += 1
                continue
            changed.append({"session_id": record.id, "from": record.review_status, "to": to_status})
            tx.add(ReviewLogRecord(session_id=record.id, from_status=record.review_status, to_status=to_status,
                                   reviewer=reviewer, note=note))
            record.review_status = to_status
            record.review_note = note
            tx.add(record)
    return changed, unchanged


def review(*, config: Path | None, store: str | None = None, action: str, sessions: list[str], all_pending: bool,
           min_reward: float | None, note: str | None, reviewer: str | None, as_json: bool) -> None:
    from ..store import SessionFilter

    to_status = ACTIONS[action]
    check_reward(min_reward, "--min-reward")
    if not sessions and not all_pending:
        raise UsageError(f"name the sessions to {action} (ids or 8+ character prefixes), or pass --all-pending")
    if min_reward is not None and not all_pending:
        raise UsageError("--min-reward selects among pending sessions; use it with --all-pending")
    who = reviewer or os.environ.get("USER") or "cli"
    loaded = load_config(config, store)
    with open_store(loaded, create=True) as opened:  # a writer: it may make the store
        chosen = {record.id for record in resolve_sessions(opened, sessions)} if sessions else set()
        if all_pending:
            # Only finished sessions: one still running (or never finished) would be approved half-done.
            chosen.update(r.id for r in opened.list_sessions(SessionFilter(review_status=["pending"], status=["completed", "failed"],
                                                                           min_reward=min_reward)))
        changed, unchanged = set_review_status(opened, loaded, chosen, to_status, reviewer=who, note=note)
    if as_json:  # JSON Lines: one object per session chosen, changed or already at the status
        moved = {c["session_id"] for c in changed}
        echo_json([*({**c, "changed": True, "reviewer": who} for c in changed),
                   *({"session_id": i, "from": to_status, "to": to_status, "changed": False, "reviewer": who}
                     for i in sorted(chosen - moved))], lines=True)
        return
    noun = "session" if len(changed) == 1 else "sessions"
    already = f" ({unchanged} already {to_status})" if unchanged else ""
    typer.echo(f"{to_status} {len(changed)} {noun}{already}" + (f": {', '.join(short(c['session_id']) for c in changed[:10])}"
                                                               + (", ..." if len(changed) > 10 else "") if changed else ""))
