"""The pristine workspace every task starts from, built by code (no fixture files in the repository).

A small tree of text, CSV, JSON and markdown files, plus one binary file (``assets/logo.png``) and one file over
the server's read limit (``logs/big.log``). :func:`pristine_files` is the content, :func:`build_pristine` writes
it, :func:`reset_workspace` makes a workspace equal to the pristine copy again (in place: the MCP server keeps
its root).
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

__all__ = ["BIG_LOG_LINES", "LOGO_SIZE", "build_pristine", "pristine_files", "pristine_text", "reset_workspace"]

BIG_LOG_LINES = 6000
LOGO_SIZE = 1536

_TODO = """- renew the TLS certificate
- update the inventory export
- review the sales report
- archive old logs
- plan the team offsite
"""

_IDEAS = """- a dashboard for low stock
- a weekly sales email
- dark mode for the admin page
"""

_MEETING = """# Meeting 2026-03-02

Attendees: ana, ben, chloe

## Decisions
- ship version 1.5 in April
- keep the nightly backup
"""

_README = """# Inventory service

This workspace holds the notes, data and logs of a small inventory service.

## Layout
- notes/: the todo list, ideas and meeting notes
- data/: sales and inventory exports
- logs/: application logs
- docs/: the guide and the FAQ
"""

_GUIDE = """# Guide

## Setup
Install the service, then copy config.json next to it.

## Running
Start the service and watch logs/app.log for warnings.
"""

_FAQ = """# FAQ

## How do I undo a bad release?
Do a rollback: deploy the previous version and restore config.json from backups/.

## Where are the logs?
In the logs folder.
"""

_LETTER_V1 = """Dear team,

The release is planned for Monday.
Please review the changes before Friday.

Thanks,
Ana
"""

_LETTER_V2 = """Dear team,

The release is planned for Wednesday.
Please review the changes before Friday.

Thanks,
Ana
"""

_SALES_ROWS = [
    ("2026-01-05", "north", "widget", 12, 2.50),
    ("2026-01-05", "south", "gadget", 4, 10.00),
    ("2026-01-12", "north", "gizmo", 7, 5.25),
    ("2026-01-12", "east", "widget", 20, 2.50),
    ("2026-01-19", "west", "gadget", 3, 10.00),
    ("2026-01-19", "south", "widget", 15, 2.50),
    ("2026-01-26", "east", "gizmo", 9, 5.25),
    ("2026-02-02", "north", "gadget", 6, 10.00),
    ("2026-02-02", "west", "widget", 11, 2.50),
    ("2026-02-09", "south", "gizmo", 5, 5.25),
    ("2026-02-09", "east", "gadget", 8, 10.00),
    ("2026-02-16", "west", "gizmo", 10, 5.25),
]

_INVENTORY_ROWS = [
    ("W-100", "widget", 42),
    ("G-200", "gadget", 7),
    ("Z-300", "gizmo", 15),
    ("B-400", "bolt", 3),
    ("N-500", "nut", 120),
    ("S-600", "spring", 9),
    ("C-700", "cable", 31),
    ("L-800", "lamp", 12),
]

_USERS = [
    {"name": "ana", "email": "ana@example.com", "active": True},
    {"name": "ben", "email": "ben@example.com", "active": True},
    {"name": "chloe", "email": "chloe@example.com", "active": False},
    {"name": "dev", "email": "dev@example.com", "active": True},
    {"name": "eve", "email": "eve@example.com", "active": False},
    {"name": "finn", "email": "finn@example.com", "active": True},
]

_CONFIG = {"app": "inventory", "version": "1.4.2", "debug": False, "max_items": 50, "owners": ["ana", "ben"]}

_APP_LOG_EVENTS = [
    ("INFO", "service started on port 8080"),
    ("INFO", "loaded 8 inventory items"),
    ("WARN", "config.json: debug is off"),
    ("INFO", "request GET /items 200"),
    ("ERROR", "database timeout after 5s"),
    ("INFO", "request GET /items/W-100 200"),
    ("INFO", "request POST /sales 201"),
    ("WARN", "low stock: G-200 (7 left)"),
    ("ERROR", "payment gateway returned 502"),
    ("INFO", "request GET /report 200"),
    ("WARN", "low stock: B-400 (3 left)"),
    ("INFO", "nightly backup finished"),
    ("ERROR", "export failed: disk quota exceeded"),
    ("INFO", "request GET /items 200"),
    ("WARN", "slow request: GET /report took 2.4s"),
    ("INFO", "service stopped"),
]


def _csv(header: str, rows: list[tuple]) -> str:
    lines = [header]
    for row in rows:
        lines.append(",".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    return "\n".join(lines) + "\n"


def _app_log() -> str:
    return "".join(f"2026-03-01T09:{i:02d}:00 {level} {text}\n" for i, (level, text) in enumerate(_APP_LOG_EVENTS))


def _big_log() -> str:
    statuses = (200, 200, 200, 201, 304, 404, 500)
    lines = []
    for i in range(1, BIG_LOG_LINES + 1):
        status = statuses[i % len(statuses)]
        level = "ERROR" if status == 500 else "INFO"
        lines.append(f"2026-03-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d} {level} request id={i:06d} "
                     f"GET /items/{i % 97:03d} status={status}\n")
    return "".join(lines)


def _logo() -> bytes:
    header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    body = bytes((i * 37 + 11) % 256 for i in range(LOGO_SIZE - len(header)))
    return header + body


@lru_cache(maxsize=1)
def pristine_files() -> dict[str, bytes]:
    """Every file of the pristine workspace: relative path -> bytes."""
    text = {
        "README.md": _README,
        "config.json": json.dumps(_CONFIG, indent=2) + "\n",
        "notes/todo.txt": _TODO,
        "notes/ideas.txt": _IDEAS,
        "notes/meeting.md": _MEETING,
        "data/sales.csv": _csv("date,region,product,units,unit_price", _SALES_ROWS),
        "data/inventory.csv": _csv("sku,name,qty", _INVENTORY_ROWS),
        "data/users.json": json.dumps(_USERS, indent=2) + "\n",
        "logs/app.log": _app_log(),
        "logs/big.log": _big_log(),
        "docs/guide.md": _GUIDE,
        "docs/faq.md": _FAQ,
        "drafts/letter_v1.txt": _LETTER_V1,
        "drafts/letter_v2.txt": _LETTER_V2,
    }
    files = {path: content.encode("utf-8") for path, content in text.items()}
    files["assets/logo.png"] = _logo()
    return files


def pristine_text(path: str) -> str:
    """The pristine text of one file."""
    return pristine_files()[path].decode("utf-8")


def build_pristine(folder: str | Path) -> Path:
    """Write the pristine workspace into ``folder`` (created; must be empty or absent). Returns it."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; the pristine workspace goes into an empty folder")
    for relative, data in pristine_files().items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def reset_workspace(workspace: str | Path, pristine: str | Path) -> Path:
    """Make ``workspace`` an exact copy of ``pristine``: its contents are removed, the folder itself is kept."""
    root = Path(workspace)
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(pristine, root, symlinks=True, dirs_exist_ok=True)
    return root
