"""``atlas playbook show|history|diff|retire``: the lessons each learning key has, and how they changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError
from ._common import Column, clip, console, echo_json, fmt_number, fmt_time, load_config, open_store, print_table, short


def _registry(store: Any, config: Any) -> Any:
    from ..playbook import PlaybookRegistry

    return PlaybookRegistry(store, config.playbook)


def _keys(store: Any) -> list[str]:
    from ..store import PlaybookRegistryRecord

    return [r.learning_key for r in store.rows(PlaybookRegistryRecord, order_by=PlaybookRegistryRecord.learning_key)]


def _impact(entry: Any) -> float | None:
    if not entry.reward_count_with or not entry.reward_count_without:
        return None
    return entry.reward_sum_with / entry.reward_count_with - entry.reward_sum_without / entry.reward_count_without


def _entry_json(entry: Any) -> dict[str, Any]:
    return {**entry.model_dump(mode="json"), "impact": _impact(entry)}


def show(*, config: Path | None, store: str | None = None, key: str | None, as_json: bool) -> None:
    loaded = load_config(config, store)
    with open_store(loaded) as opened:
        registry = _registry(opened, loaded)
        keys = [key] if key else _keys(opened)
        books = {k: (registry.version(k), registry.live_entries(k)) for k in keys}
    if as_json:  # JSON Lines: one live entry per line, with its key and the key's registry version
        echo_json(({"learning_key": k, "registry_version": version, **_entry_json(e)}
                   for k, (version, entries) in books.items() for e in entries), lines=True)
        return
    from rich.text import Text

    out = console()
    if not books:
        (out if out.is_terminal else console(stderr=True)).print("no playbooks yet: lessons appear after supervised sessions finish")
        return
    rows = {name: [_entry_row(entry) for entry in entries] for name, (_, entries) in books.items()}
    if not out.is_terminal:  # piped: one table, a key column first, every value whole
        print_table((Column("key", wrap=True), *ENTRY_COLUMNS), ([name, *row] for name, key_rows in rows.items() for row in key_rows), out=out)
        return
    for number, (name, (version, entries)) in enumerate(books.items()):
        if number:
            out.print()
        out.print(Text(f"{name}: registry version {version}, {len(entries)} live entries", style="bold"))
        if entries:
            print_table(ENTRY_COLUMNS, rows[name], out=out)


def _entry_row(entry: Any) -> list[Any]:
    impact = _impact(entry)
    lesson = entry.lesson + (f" (when {entry.applies_when})" if entry.applies_when else "")
    audience = f"{entry.audience} ({entry.kind})" if entry.kind != "lesson" else entry.audience
    return [entry.id, entry.status, audience, entry.task_family or "all", lesson, entry.uses,
            "-" if impact is None else ("+" if impact >= 0 else "") + fmt_number(impact), entry.version, len(entry.provenance)]


def history(*, config: Path | None, store: str | None = None, key: str, as_json: bool) -> None:
    loaded = load_config(config, store)
    with open_store(loaded) as opened:
        changes = _registry(opened, loaded).history(key)
    if as_json:  # JSON Lines: one change per line, oldest first
        echo_json((c.model_dump(mode="json") for c in changes), lines=True)
        return
    out = console()
    if not changes:
        (out if out.is_terminal else console(stderr=True)).print(f"no playbook history for {key!r}" + _known_keys_hint(loaded, key))
        return
    print_table(HISTORY_COLUMNS, ([change.registry_version, change.change, change.entry_id, change.version, change.status,
                                   change.lesson, change.reason or "-", change.session_id or "-", fmt_time(change.created_at)]
                                  for change in changes), out=out)


#: The columns of ``atlas playbook show`` and ``atlas playbook history``; ids are shortened on a terminal only.
ENTRY_COLUMNS = (Column("id", short=12), Column("status"), Column("for", wrap=True), Column("family", wrap=True), Column("lesson", wrap=True),
                 Column("uses", "right"), Column("impact", "right"), Column("v", "right"), Column("sources", "right"))
HISTORY_COLUMNS = (Column("version", "right"), Column("change"), Column("entry", short=12), Column("v", "right"),
                   Column("status"), Column("lesson", wrap=True), Column("reason", wrap=True), Column("session", short=12), Column("when (UTC)", wrap=True))


def diff(*, config: Path | None, store: str | None = None, key: str, from_version: int, to_version: int, as_json: bool) -> None:
    loaded = load_config(config, store)
    with open_store(loaded) as opened:
        registry = _registry(opened, loaded)
        latest = registry.version(key)
        for name, value in (("FROM", from_version), ("TO", to_version)):
            if value < 0 or value > latest:
                raise AtlasError(f"{name} {value}: the playbook of {key!r} has versions 0..{latest}; see `atlas playbook history --key {key}`")
        changes = registry.diff(key, from_version, to_version)
    if as_json:  # JSON Lines: one changed entry per line
        echo_json(changes, lines=True)
        return
    from rich.text import Text

    out = console()
    if not changes:
        out.print(f"{key}: no changes between versions {from_version} and {to_version}")
        return
    out.print(Text(f"{key}: version {from_version} → {to_version}, {len(changes)} entries changed", style="bold"))
    for change in changes:
        if change["change"] == "added":
            out.print(Text(f"+ {short(change['entry_id'])} [{change['status']}] {clip(change['lesson'], 200)}", style="green"))
        else:
            status = change["status"] if change["status_before"] == change["status"] else f"{change['status_before']} → {change['status']}"
            out.print(Text(f"~ {short(change['entry_id'])} [{status}]", style="yellow"))
            if change["before"] != change["after"]:
                out.print(Text(f"  - {clip(change['before'], 200)}", style="red"))
                out.print(Text(f"  + {clip(change['after'], 200)}", style="green"))


def retire_entry(store: Any, config: Any, key: str, entry_id: str, reason: str | None, *,
                 default_reason: str = "retired by hand (atlas playbook retire)") -> tuple[Any, int]:
    """Retire one live entry of a key's playbook (an id or a unique prefix) as a new registry version, with the
    reason in its history; returns the entry and that version. ``atlas playbook retire`` and ``atlas console`` both
    go through here."""
    registry = _registry(store, config)
    wanted = entry_id.strip().lower()
    live = registry.live_entries(key)
    matches = [e for e in live if e.id == wanted] or [e for e in live if e.id.startswith(wanted)]
    if not matches:
        raise AtlasError(f"no live entry {entry_id!r} in the playbook of {key!r}; see `atlas playbook show --key {key}`")
    if len(matches) > 1:
        raise AtlasError(f"entry prefix {entry_id!r} is ambiguous ({', '.join(short(m.id) for m in matches[:5])}); give more characters")
    entry = matches[0]
    applied = registry.retire(key, entry.id, reason=(reason or default_reason)[:200])
    if not any(change.entry_id == entry.id and change.op == "retire" for change in applied):
        raise AtlasError(f"entry {short(entry.id)} of {key!r} was not retired (another writer changed it first); try again")
    return entry, max(change.registry_version for change in applied)


def retire(*, config: Path | None, store: str | None = None, key: str, entry_id: str, reason: str | None,
           as_json: bool = False) -> None:
    loaded = load_config(config, store)
    with open_store(loaded) as opened:  # a writer, but of an entry that must exist: no store is made for it
        entry, version = retire_entry(opened, loaded, key, entry_id, reason)
    if as_json:
        echo_json({"learning_key": key, "entry_id": entry.id, "registry_version": version, "lesson": entry.lesson,
                   "reason": reason})
        return
    typer.echo(f"retired {entry.id} from {key!r} (registry version {version}): {clip(entry.lesson, 120)}")


def _known_keys_hint(config: Any, key: str) -> str:
    with open_store(config) as store:
        keys = _keys(store)
    if key in keys:  # the key has a playbook (a registry row) that has learned nothing yet: not "unknown"
        others = [k for k in keys if k != key]
        return "; it has no lessons yet" + (f" (other keys: {', '.join(others[:10])})" if others else "")
    return f"; known keys: {', '.join(keys[:10])}" if keys else "; no playbooks yet"
