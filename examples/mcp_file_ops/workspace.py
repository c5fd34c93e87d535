"""The pristine workspace every task starts from, built by code (no fixture files in the repository).

A small tree of text, CSV, JSON and markdown files, plus one binary file (``assets/logo.png``) and one file over
the server's read limit (``logs/big.log``). :func:`pristine_files` is the content, :func:`build_pristine` writes
it, :func:`reset_workspace` makes a workspace equal to the pristine copy again (in place: the MCP server keeps
its root).

Variants: variant 0 is the canonical workspace above; every other number seeds a generated one with other todo
items and ideas, another version and ``max_items``, other sales, inventory and user rows, another mix of log
lines, another pair of letter days, and sometimes a third CSV file in ``data/`` (so file counts and names change).
Every task stays solvable and keeps its meaning. :func:`active_variant` sets the variant that
:func:`pristine_files` and :func:`pristine_text` read when none is named (the tasks' checkers read it so).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import random
import shutil
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

__all__ = ["BIG_LOG_LINES", "LOGO_SIZE", "active_variant", "build_pristine", "current_variant", "pristine_files",
           "pristine_text", "reset_workspace"]

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

_LETTER = """Dear team,

The release is planned for {day}.
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


def _app_log(events: list[tuple[str, str]]) -> str:
    return "".join(f"2026-03-01T09:{i:02d}:00 {level} {text}\n" for i, (level, text) in enumerate(events))


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


_VARIANT: contextvars.ContextVar[int] = contextvars.ContextVar("mcp_file_ops_variant", default=0)


@contextlib.contextmanager
def active_variant(variant: int) -> Iterator[int]:
    """Within the block, :func:`pristine_files` without a variant reads ``variant`` (in this thread or task only)."""
    token = _VARIANT.set(int(variant))
    try:
        yield int(variant)
    finally:
        _VARIANT.reset(token)


def current_variant() -> int:
    """The variant :func:`pristine_files` reads when none is named."""
    return _VARIANT.get()


def pristine_files(variant: int | None = None) -> dict[str, bytes]:
    """Every file of the pristine workspace of ``variant`` (default: the active one): relative path -> bytes."""
    return _files(current_variant() if variant is None else int(variant))


@lru_cache(maxsize=32)
def _files(variant: int) -> dict[str, bytes]:
    content = _CANONICAL if variant == 0 else _generated(variant)
    text = {
        "README.md": _README,
        "config.json": json.dumps(content["config"], indent=2) + "\n",
        "notes/todo.txt": content["todo"],
        "notes/ideas.txt": content["ideas"],
        "notes/meeting.md": _MEETING,
        "data/sales.csv": _csv("date,region,product,units,unit_price", content["sales"]),
        "data/inventory.csv": _csv("sku,name,qty", content["inventory"]),
        "data/users.json": json.dumps(content["users"], indent=2) + "\n",
        **({"data/returns.csv": _csv("date,sku,units", content["returns"])} if content["returns"] else {}),
        "logs/app.log": _app_log(content["log"]),
        "logs/big.log": _big_log(),
        "docs/guide.md": _GUIDE,
        "docs/faq.md": _FAQ,
        "drafts/letter_v1.txt": _LETTER.format(day=content["days"][0]),
        "drafts/letter_v2.txt": _LETTER.format(day=content["days"][1]),
    }
    files = {path: value.encode("utf-8") for path, value in text.items()}
    files["assets/logo.png"] = _logo()
    return files


_CANONICAL = {"config": _CONFIG, "todo": _TODO, "ideas": _IDEAS, "sales": _SALES_ROWS, "inventory": _INVENTORY_ROWS,
              "users": _USERS, "returns": [], "log": _APP_LOG_EVENTS, "days": ("Monday", "Wednesday")}

_TODO_POOL = ("renew the TLS certificate", "update the inventory export", "review the sales report", "archive old logs",
              "plan the team offsite", "rotate the API keys", "fix the flaky export job", "order new shelving",
              "answer the supplier email", "clean up the staging bucket", "write the release notes",
              "book the quarterly review", "check the backup restore", "update the on-call rota")
_IDEA_POOL = ("a dashboard for low stock", "a weekly sales email", "dark mode for the admin page", "barcode scanning",
              "a returns report", "alerts for slow requests", "a public status page", "CSV import for suppliers")
_REGIONS, _PRICES = ("north", "south", "east", "west"), {"widget": 2.50, "gadget": 10.00, "gizmo": 5.25, "doohickey": 7.75}
_STOCK_POOL = (("W-100", "widget"), ("G-200", "gadget"), ("Z-300", "gizmo"), ("B-400", "bolt"), ("N-500", "nut"),
               ("S-600", "spring"), ("C-700", "cable"), ("L-800", "lamp"), ("H-900", "hinge"), ("R-110", "rivet"),
               ("F-120", "fuse"), ("P-130", "pulley"))
_NAMES = ("ana", "ben", "chloe", "dev", "eve", "finn", "gus", "hana", "ivo", "jade", "kai", "lena")
_LOG_TEXTS = {
    "INFO": ("service started on port 8080", "request GET /items 200", "request POST /sales 201", "nightly backup finished",
             "request GET /report 200", "cache warmed in 0.4s", "request GET /users 200", "service stopped"),
    "WARN": ("config.json: debug is off", "low stock: G-200 (7 left)", "slow request: GET /report took 2.4s",
             "disk usage at 85%", "retrying the supplier feed"),
    "ERROR": ("database timeout after 5s", "payment gateway returned 502", "export failed: disk quota exceeded",
              "supplier feed unreachable", "report job crashed"),
}
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def _generated(variant: int) -> dict[str, object]:
    """A seeded workspace: the same shape as the canonical one, other contents and numbers."""
    rng = random.Random(f"mcp-file-ops:{variant}")
    major, minor, patch = rng.randint(1, 3), rng.randint(0, 9), rng.randint(0, 12)
    owners = rng.sample(_NAMES[:6], rng.randint(1, 3))
    config = {"app": "inventory", "version": f"{major}.{minor}.{patch}", "debug": rng.random() < 0.3,
              "max_items": rng.choice((20, 25, 30, 40, 50, 60, 75, 80)), "owners": owners}
    todo = "".join(f"- {item}\n" for item in rng.sample(_TODO_POOL, rng.randint(3, 8)))
    ideas = "".join(f"- {item}\n" for item in rng.sample(_IDEA_POOL, rng.randint(2, 5)))
    sales = []
    for week in range(rng.randint(8, 16)):
        product = rng.choice(tuple(_PRICES))
        sales.append((f"2026-{1 + week // 4:02d}-{1 + 7 * (week % 4):02d}", rng.choice(_REGIONS), product, rng.randint(1, 25),
                      _PRICES[product]))
    stock = rng.sample(_STOCK_POOL, rng.randint(6, 10))
    quantities = [rng.randint(0, 9), rng.randint(10, 130), *(rng.randint(0, 130) for _ in stock[2:])]  # some low, some not
    rng.shuffle(quantities)
    inventory = [(sku, name, qty) for (sku, name), qty in zip(stock, quantities, strict=True)]
    names = rng.sample(_NAMES, rng.randint(4, 9))
    flags = [True, False, *(rng.random() < 0.6 for _ in names[2:])]
    rng.shuffle(flags)
    users = [{"name": n, "email": f"{n}@example.com", "active": f} for n, f in zip(names, flags, strict=True)]
    returns = [(f"2026-02-{rng.randint(1, 28):02d}", sku, rng.randint(1, 4)) for sku, _ in rng.sample(stock, 3)] \
        if rng.random() < 0.5 else []
    log = [(level, rng.choice(_LOG_TEXTS[level])) for level, count in (("ERROR", rng.randint(1, 6)), ("WARN", rng.randint(1, 6)),
                                                                     ("INFO", rng.randint(5, 12))) for _ in range(count)]
    rng.shuffle(log)
    log = [("INFO", "service started on port 8080"), *log]
    return {"config": config, "todo": todo, "ideas": ideas, "sales": sales, "inventory": inventory, "users": users,
            "returns": returns, "log": log, "days": tuple(rng.sample(_DAYS, 2))}


def pristine_text(path: str, variant: int | None = None) -> str:
    """The pristine text of one file (of ``variant``, default the active one)."""
    return pristine_files(variant)[path].decode("utf-8")


def build_pristine(folder: str | Path, variant: int = 0) -> Path:
    """Write the pristine workspace of ``variant`` into ``folder`` (created; must be empty or absent). Returns it."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; the pristine workspace goes into an empty folder")
    for relative, data in pristine_files(variant).items():
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
