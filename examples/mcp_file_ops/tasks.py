"""The 25 file-operation tasks, in five phases of five, each with a checker of the workspace and/or the answer.

Phases: 1 basic operations, 2 multi-step, 3 workflows (combining files, manifests), 4 backups and reports,
5 errors and edge cases. Every task starts from the pristine workspace (:mod:`.workspace`).

* ``task.check(workspace, answer) -> (passed, reason)`` decides a run from the files left behind and the answer.
* ``task.solution(workspace) -> Solution`` is a known-good way to do the task: the tool calls (the same ones the
  MCP tools serve) and the final answer. The scripted solver plays it through the agent; :func:`apply_solution`
  plays it directly on a workspace (what the tests use to produce a solved state).
* :func:`atlas_check` turns a task's checker into an Atlas verifiable check (a function of ``CheckContext``).
* Variants: ``task.in_variant(n)`` is the same task on the workspace variant ``n`` (:mod:`.workspace`): its
  checker, solution and expected outcome follow that workspace's contents. :func:`variant_numbers` names the
  variants of a ``train``/``heldout`` set (disjoint ranges) or a seed, one per repetition.

All 25 share one learning key, :data:`LEARNING_KEY`, so lessons carry from task to task.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .server import Workspace, WorkspaceError
from .workspace import BIG_LOG_LINES, LOGO_SIZE, active_variant, pristine_files, pristine_text

__all__ = [
    "LEARNING_KEY",
    "PHASES",
    "TASKS",
    "Solution",
    "Task",
    "ToolCall",
    "apply_solution",
    "atlas_check",
    "parse_selection",
    "select_tasks",
    "variant_numbers",
]

LEARNING_KEY = "mcp-file-ops"
PHASES = {1: "basic operations", 2: "multi-step", 3: "workflows", 4: "backups and reports", 5: "errors and edge cases"}

Check = Callable[[Path, str], tuple[bool, str]]


@dataclass(frozen=True)
class ToolCall:
    """One call of an MCP tool: its name and arguments."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Solution:
    """A known-good way to do a task: tool calls in order, then the final answer."""

    calls: list[ToolCall]
    answer: str


@dataclass(frozen=True)
class Task:
    """One task: what the agent is asked, how the outcome is checked, and one way to solve it."""

    id: int
    phase: int
    name: str
    prompt: str
    check: Check = field(repr=False)
    solution: Callable[[Path], Solution] = field(repr=False)
    #: What a correct run produces, in a few words (stored with the results; never shown to the agent).
    expected: str = ""
    #: The workspace variant the checker, the solution and ``expected`` are for (0: the canonical workspace).
    variant: int = 0
    #: ``expected`` as a function of the active variant's contents, when it depends on them.
    describe: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    #: The canonical task a variant was made from (None: this is it).
    base: Task | None = field(default=None, repr=False, compare=False)

    @property
    def phase_name(self) -> str:
        return PHASES[self.phase]

    def in_variant(self, variant: int) -> Task:
        """This task on workspace variant ``variant``: the same prompt, checked against that workspace's contents."""
        if variant == self.variant:
            return self
        base = self.base or self
        if variant == 0:
            return base
        with active_variant(variant):
            expected = base.describe() if base.describe is not None else base.expected
        prompt = random.Random(f"mcp-file-ops:{variant}:{base.id}").choice((base.prompt, *PHRASINGS.get(base.id, ())))
        return dataclasses.replace(base, variant=variant, prompt=prompt, expected=expected, base=base,
                                   check=_bound(base.check, variant), solution=_bound(base.solution, variant))


def _bound(function: Callable[..., Any], variant: int) -> Callable[..., Any]:
    """``function`` run with ``variant`` active, in whatever thread calls it (a session's background finish too)."""
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with active_variant(variant):
            return function(*args, **kwargs)

    return run


#: Where the ``train`` and ``heldout`` variant sets start: disjoint ranges, so no held-out workspace is trained on.
VARIANT_SETS = {"train": 1, "heldout": 100_001}


def variant_numbers(spec: str | int | None, repeat: int) -> list[int]:
    """The workspace variant of each repetition: ``canonical`` (or None) 0 every time; ``train`` 1, 2, ...;
    ``heldout`` 100001, 100002, ...; a number N: N, N+1, ... A bad spec is a ValueError that says what to use."""
    text = "canonical" if spec is None else str(spec).strip().lower()
    if text == "canonical":
        return [0] * repeat
    if text in VARIANT_SETS:
        return [VARIANT_SETS[text] + i for i in range(repeat)]
    if text.isdigit():
        return [int(text) + i for i in range(repeat)]
    raise ValueError(f"bad variants {spec!r}: use canonical, train, heldout or a seed number such as 7")


# ------------------------------------------------------------------------------------------------ helpers
def _numbers(text: str) -> list[int]:
    """The integers written in a text (1,234 and 1 234 read as 1234)."""
    return [int(re.sub(r"[,\s]", "", m)) for m in re.findall(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d.])|(?<![\d.])\d+(?![\d.])", text or "")]


def _says_number(answer: str, expected: int) -> tuple[bool, str]:
    found = _numbers(answer)
    if expected in found:
        return True, f"the answer says {expected}"
    return False, f"expected {expected} in the answer, found {found[:5] or 'no number'}"


def _read(workspace: Path, relative: str) -> str | None:
    path = workspace / relative
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def _same_text(actual: str | None, expected: str) -> bool:
    return actual is not None and actual.strip() == expected.strip()


def _unchanged(workspace: Path, relative: str) -> bool:
    path = workspace / relative
    return path.is_file() and path.read_bytes() == pristine_files()[relative]


def _file_missing(relative: str) -> tuple[bool, str]:
    return False, f"{relative} does not exist (or is not text)"


def _calls(*calls: tuple[str, dict[str, Any]]) -> list[ToolCall]:
    return [ToolCall(name, args) for name, args in calls]


def _count_lines(text: str) -> int:
    return text.count("\n")


def _sales_total() -> int:
    rows = list(csv.DictReader(io.StringIO(pristine_text("data/sales.csv"))))
    return sum(int(r["units"]) for r in rows)


def _low_stock_rows() -> list[str]:
    lines = pristine_text("data/inventory.csv").splitlines()
    return [line for line in lines[1:] if int(line.split(",")[2]) < 10]


def _active_users() -> int:
    return sum(1 for u in json.loads(pristine_text("data/users.json")) if u.get("active") is True)


def _log_count(level: str) -> int:
    return sum(1 for line in pristine_text("logs/app.log").splitlines() if f" {level} " in line)


def _data_files() -> list[str]:
    return sorted(p for p in pristine_files() if p.startswith("data/"))


def _todo_items() -> list[str]:
    return _lines(pristine_text("notes/todo.txt"))


# ------------------------------------------------------------------------------------------------ phase 1
def _check_todo_count(workspace: Path, answer: str) -> tuple[bool, str]:
    return _says_number(answer, len(_todo_items()))


def _solve_todo_count(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "notes/todo.txt"})), f"notes/todo.txt has {len(_todo_items())} items.")


def _version() -> str:
    return str(json.loads(pristine_text("config.json"))["version"])


def _check_version(workspace: Path, answer: str) -> tuple[bool, str]:
    version = _version()
    found = re.search(rf"(?<![\d.]){re.escape(version)}(?![\d]|\.\d)", answer or "") is not None
    return found, f"the answer names version {version}" if found else f"expected {version} in the answer"


def _solve_version(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "config.json"})), f"config.json sets version {_version()}.")


HELLO = "Hello, Atlas!"


def _check_hello(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "notes/hello.txt")
    if text is None:
        return _file_missing("notes/hello.txt")
    return (text.strip() == HELLO, "notes/hello.txt holds the greeting" if text.strip() == HELLO else f"notes/hello.txt holds {text[:40]!r}")


def _solve_hello(workspace: Path) -> Solution:
    return Solution(_calls(("write_file", {"path": "notes/hello.txt", "content": HELLO + "\n"})), "Created notes/hello.txt.")


def _check_data_count(workspace: Path, answer: str) -> tuple[bool, str]:
    return _says_number(answer, len(_data_files()))


def _solve_data_count(workspace: Path) -> Solution:
    names = ", ".join(Path(p).name for p in _data_files())
    return Solution(_calls(("list_files", {"path": "data"})), f"There are {len(_data_files())} files in data: {names}.")


def _check_app_errors(workspace: Path, answer: str) -> tuple[bool, str]:
    return _says_number(answer, _log_count("ERROR"))


def _solve_app_errors(workspace: Path) -> Solution:
    return Solution(_calls(("search_content", {"pattern": "ERROR", "path": "logs/app.log"})),
                    f"{_log_count('ERROR')} lines of logs/app.log contain ERROR.")


# ------------------------------------------------------------------------------------------------ phase 2
def _sales_lines() -> int:
    return _count_lines(pristine_text("data/sales.csv"))


def _check_summary(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/summary.txt")
    if text is None:
        return _file_missing("reports/summary.txt")
    ok = _sales_lines() in _numbers(text)
    return ok, f"reports/summary.txt {'gives' if ok else 'does not give'} the line count {_sales_lines()}"


def _solve_summary(workspace: Path) -> Solution:
    return Solution(_calls(("run_command", {"command": "wc -l data/sales.csv"}),
                           ("write_file", {"path": "reports/summary.txt", "content": f"data/sales.csv has {_sales_lines()} lines\n"})),
                    f"Wrote reports/summary.txt: data/sales.csv has {_sales_lines()} lines.")


def _check_backup_config(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "backups/config.json.bak")
    if text is None:
        return _file_missing("backups/config.json.bak")
    if not _same_text(text, pristine_text("config.json")):
        return False, "backups/config.json.bak differs from config.json"
    if not _unchanged(workspace, "config.json"):
        return False, "config.json itself was changed"
    return True, "backups/config.json.bak is a copy of config.json"


def _solve_backup_config(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "config.json"}),
                           ("write_file", {"path": "backups/config.json.bak", "content": pristine_text("config.json")})),
                    "Copied config.json to backups/config.json.bak.")


NEW_TODO = "- call the plumber"


def _check_append_todo(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "notes/todo.txt")
    if text is None:
        return _file_missing("notes/todo.txt")
    lines = _lines(text)
    if lines == [*_todo_items(), NEW_TODO]:
        return True, f"the new item is the last of {len(lines)}"
    return False, f"notes/todo.txt has {len(lines)} lines; expected the {len(_todo_items())} items then {NEW_TODO!r}"


def _solve_append_todo(workspace: Path) -> Solution:
    return Solution(_calls(("write_file", {"path": "notes/todo.txt", "content": NEW_TODO + "\n", "append": True})),
                    "Added '- call the plumber' to notes/todo.txt.")


def _check_rollback(workspace: Path, answer: str) -> tuple[bool, str]:
    ok = "faq.md" in (answer or "") and "guide.md" not in (answer or "")
    return ok, "the answer names docs/faq.md" if ok else "expected docs/faq.md (only) in the answer"


def _solve_rollback(workspace: Path) -> Solution:
    return Solution(_calls(("search_content", {"pattern": "rollback", "path": "docs"})), "docs/faq.md mentions rollback.")


def _check_active_users(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/active_users.txt")
    if text is None:
        return _file_missing("reports/active_users.txt")
    ok = text.strip() == str(_active_users())
    return ok, f"reports/active_users.txt holds {text.strip()[:20]!r}" + ("" if ok else f"; expected {_active_users()}")


def _solve_active_users(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "data/users.json"}),
                           ("write_file", {"path": "reports/active_users.txt", "content": f"{_active_users()}\n"})),
                    f"{_active_users()} users are active; wrote it to reports/active_users.txt.")


# ------------------------------------------------------------------------------------------------ phase 3
def _combined() -> list[str]:
    return [*_lines(pristine_text("notes/todo.txt")), *_lines(pristine_text("notes/ideas.txt"))]


def _check_combined(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "notes/combined.txt")
    if text is None:
        return _file_missing("notes/combined.txt")
    ok = _lines(text) == _combined()
    return ok, "notes/combined.txt has the todo lines, then the ideas" if ok else "notes/combined.txt is not todo then ideas"


def _solve_combined(workspace: Path) -> Solution:
    content = pristine_text("notes/todo.txt") + pristine_text("notes/ideas.txt")
    return Solution(_calls(("read_file", {"path": "notes/todo.txt"}), ("read_file", {"path": "notes/ideas.txt"}),
                           ("write_file", {"path": "notes/combined.txt", "content": content})),
                    "Wrote notes/combined.txt: the todo items, then the ideas.")


def _check_manifest(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "manifest.txt")
    if text is None:
        return _file_missing("manifest.txt")
    entries = [line.strip().removeprefix("./") for line in _lines(text)]
    if entries == _data_files():
        return True, "manifest.txt lists the data files, sorted"
    return False, f"manifest.txt lists {entries[:5]}; expected {_data_files()}"


def _solve_manifest(workspace: Path) -> Solution:
    return Solution(_calls(("list_files", {"path": "data"}),
                           ("write_file", {"path": "manifest.txt", "content": "\n".join(_data_files()) + "\n"})),
                    f"Wrote manifest.txt with {len(_data_files())} files.")


def _check_units(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/units.txt")
    if text is None:
        return _file_missing("reports/units.txt")
    found = re.search(r"total_units\s*=\s*(\d+)", text)
    if found and int(found.group(1)) == _sales_total():
        return True, f"reports/units.txt says total_units={_sales_total()}"
    return False, f"reports/units.txt holds {text.strip()[:40]!r}; expected total_units={_sales_total()}"


def _solve_units(workspace: Path) -> Solution:
    return Solution(_calls(("run_command", {"command": "cut -d, -f4 data/sales.csv"}),
                           ("write_file", {"path": "reports/units.txt", "content": f"total_units={_sales_total()}\n"})),
                    f"The units add up to {_sales_total()}; wrote reports/units.txt.")


def _check_low_stock(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "data/low_stock.csv")
    if text is None:
        return _file_missing("data/low_stock.csv")
    header = pristine_text("data/inventory.csv").splitlines()[0]
    expected = [header, *_low_stock_rows()]
    ok = _lines(text) == expected
    if not _unchanged(workspace, "data/inventory.csv"):
        return False, "data/inventory.csv itself was changed"
    return ok, f"data/low_stock.csv has the header and the {len(expected) - 1} rows under 10" if ok else \
        f"data/low_stock.csv has {_lines(text)[:4]}; expected {expected}"


def _solve_low_stock(workspace: Path) -> Solution:
    header = pristine_text("data/inventory.csv").splitlines()[0]
    content = "\n".join([header, *_low_stock_rows()]) + "\n"
    return Solution(_calls(("read_file", {"path": "data/inventory.csv"}), ("write_file", {"path": "data/low_stock.csv", "content": content})),
                    f"Wrote data/low_stock.csv with {len(_low_stock_rows())} rows.")


def _sales_sha256() -> str:
    return hashlib.sha256(pristine_files()["data/sales.csv"]).hexdigest()


def _check_checksums(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "checksums.txt")
    if text is None:
        return _file_missing("checksums.txt")
    ok = _sales_sha256() in text
    return ok, "checksums.txt has the sha256 of data/sales.csv" if ok else "checksums.txt lacks the sha256 of data/sales.csv"


def _solve_checksums(workspace: Path) -> Solution:
    return Solution(_calls(("run_command", {"command": "sha256sum data/sales.csv"}),
                           ("write_file", {"path": "checksums.txt", "content": f"{_sales_sha256()}  data/sales.csv\n"})),
                    "Wrote the checksum of data/sales.csv to checksums.txt.")


# ------------------------------------------------------------------------------------------------ phase 4
def _notes() -> list[str]:
    return sorted(p for p in pristine_files() if p.startswith("notes/"))


def _check_backup_notes(workspace: Path, answer: str) -> tuple[bool, str]:
    for note in _notes():
        backup = "backups/" + note
        if not _same_text(_read(workspace, backup), pristine_text(note)):
            return False, f"{backup} is missing or differs from {note}"
        if not _unchanged(workspace, note):
            return False, f"{note} itself was changed"
    return True, f"all {len(_notes())} notes are backed up in backups/notes/"


def _solve_backup_notes(workspace: Path) -> Solution:
    calls: list[tuple[str, dict[str, Any]]] = [("list_files", {"path": "notes"})]
    for note in _notes():
        calls += [("read_file", {"path": note}), ("write_file", {"path": "backups/" + note, "content": pristine_text(note)})]
    return Solution(_calls(*calls), f"Backed up {len(_notes())} files into backups/notes/.")


def _check_log_report(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/log_report.md")
    if text is None:
        return _file_missing("reports/log_report.md")
    errors = re.search(r"errors?\W*(\d+)", text, re.IGNORECASE)
    warnings = re.search(r"warn(?:ing)?s?\W*(\d+)", text, re.IGNORECASE)
    want = (_log_count("ERROR"), _log_count("WARN"))
    got = (int(errors.group(1)) if errors else None, int(warnings.group(1)) if warnings else None)
    return got == want, f"errors {got[0]}, warnings {got[1]}" + ("" if got == want else f"; expected {want[0]} and {want[1]}")


def _solve_log_report(workspace: Path) -> Solution:
    content = f"# logs/app.log\n\nerrors: {_log_count('ERROR')}\nwarnings: {_log_count('WARN')}\n"
    return Solution(_calls(("run_command", {"command": "grep -c ERROR logs/app.log"}), ("run_command", {"command": "grep -c WARN logs/app.log"}),
                           ("write_file", {"path": "reports/log_report.md", "content": content})),
                    f"Wrote reports/log_report.md: {_log_count('ERROR')} errors, {_log_count('WARN')} warnings.")


def _edited_config() -> dict[str, Any]:
    return {**json.loads(pristine_text("config.json")), "max_items": 100}


def _check_edit_with_backup(workspace: Path, answer: str) -> tuple[bool, str]:
    if not _same_text(_read(workspace, "backups/config.json.orig"), pristine_text("config.json")):
        return False, "backups/config.json.orig is missing or is not the original config.json"
    text = _read(workspace, "config.json")
    try:
        edited = json.loads(text or "")
    except ValueError:
        return False, "config.json is no longer valid JSON"
    if edited != _edited_config():
        return False, f"config.json is {json.dumps(edited)[:80]}; expected max_items 100 and nothing else changed"
    return True, "backed up, then max_items set to 100"


def _solve_edit_with_backup(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "config.json"}),
                           ("write_file", {"path": "backups/config.json.orig", "content": pristine_text("config.json")}),
                           ("write_file", {"path": "config.json", "content": json.dumps(_edited_config(), indent=2) + "\n"})),
                    "Backed up config.json to backups/config.json.orig and set max_items to 100.")


def _csv_counts() -> dict[str, int]:
    return {Path(p).name: _count_lines(pristine_text(p)) for p in _data_files() if p.endswith(".csv")}


def _check_csv_lines(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/csv_lines.txt")
    if text is None:
        return _file_missing("reports/csv_lines.txt")
    found = {m.group(1): int(m.group(2)) for m in re.finditer(r"([\w.-]+\.csv)\W+(\d+)", text)}
    found = {Path(name).name: count for name, count in found.items()}
    ok = found == _csv_counts()
    return ok, f"found {found}" + ("" if ok else f"; expected {_csv_counts()}")


def _solve_csv_lines(workspace: Path) -> Solution:
    content = "".join(f"{name}: {count}\n" for name, count in _csv_counts().items())
    return Solution(_calls(("run_command", {"command": "wc -l data/inventory.csv data/sales.csv"}),
                           ("write_file", {"path": "reports/csv_lines.txt", "content": content})),
                    "Wrote reports/csv_lines.txt.")


def _letter_diff_lines() -> tuple[str, str]:
    pairs = zip(pristine_text("drafts/letter_v1.txt").splitlines(), pristine_text("drafts/letter_v2.txt").splitlines(), strict=True)
    return next((old, new) for old, new in pairs if old != new)


def _check_letter_diff(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/letter.diff")
    if text is None:
        return _file_missing("reports/letter.diff")
    old, new = _letter_diff_lines()
    ok = old in text and new in text and "Please review" not in text.replace(old, "").replace(new, "")
    return ok, "reports/letter.diff shows the changed line" if ok else "reports/letter.diff does not show (only) the changed line"


def _solve_letter_diff(workspace: Path) -> Solution:
    old, new = _letter_diff_lines()
    return Solution(_calls(("run_command", {"command": "diff drafts/letter_v1.txt drafts/letter_v2.txt"}),
                           ("write_file", {"path": "reports/letter.diff", "content": f"3c3\n< {old}\n---\n> {new}\n"})),
                    f"Saved the diff to reports/letter.diff: {_letter_days()}.")


def _letter_days() -> str:
    old, new = (re.search(r"planned for (\w+)", line).group(1) for line in _letter_diff_lines())  # type: ignore[union-attr]
    return f"{old} became {new}"


# ------------------------------------------------------------------------------------------------ phase 5
_REFUSAL = re.compile(r"outside|denied|refus|not allowed|cannot|can't|can ?not|blocked|forbidden|escape|not permitted|error", re.IGNORECASE)


def _check_escape(workspace: Path, answer: str) -> tuple[bool, str]:
    if "root:x:0:0" in (answer or ""):
        return False, "the answer contains /etc/passwd's content"
    if not _REFUSAL.search(answer or ""):
        return False, "the answer does not report that the read was refused"
    return True, "the answer reports the refusal"


def _solve_escape(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "../etc/passwd"})),
                    "The read was refused: ../etc/passwd is outside the workspace, so the file tools cannot open it.")


MISSING = "created by agent"


def _check_missing(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "notes/missing.txt")
    if text is None:
        return _file_missing("notes/missing.txt")
    ok = text.strip() == MISSING
    return ok, "notes/missing.txt was created" if ok else f"notes/missing.txt holds {text[:40]!r}"


def _solve_missing(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "notes/missing.txt"}), ("write_file", {"path": "notes/missing.txt", "content": MISSING + "\n"})),
                    "notes/missing.txt did not exist, so I created it.")


def _check_binary(workspace: Path, answer: str) -> tuple[bool, str]:
    return _says_number(answer, LOGO_SIZE)


def _solve_binary(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "assets/logo.png"}), ("list_files", {"path": "assets"})),
                    f"assets/logo.png is a binary image, not text; it is {LOGO_SIZE} bytes.")


def _check_big_lines(workspace: Path, answer: str) -> tuple[bool, str]:
    return _says_number(answer, BIG_LOG_LINES)


def _solve_big_lines(workspace: Path) -> Solution:
    return Solution(_calls(("read_file", {"path": "logs/big.log"}), ("run_command", {"command": "wc -l logs/big.log"})),
                    f"logs/big.log has {BIG_LOG_LINES} lines.")


def _big_tail() -> list[str]:
    return pristine_text("logs/big.log").splitlines()[-3:]


def _check_big_tail(workspace: Path, answer: str) -> tuple[bool, str]:
    text = _read(workspace, "reports/big_tail.txt")
    if text is None:
        return _file_missing("reports/big_tail.txt")
    ok = _lines(text) == _big_tail()
    return ok, "reports/big_tail.txt has the last 3 lines" if ok else "reports/big_tail.txt is not the last 3 lines of logs/big.log"


def _solve_big_tail(workspace: Path) -> Solution:
    return Solution(_calls(("run_command", {"command": "tail -n 3 logs/big.log"}),
                           ("write_file", {"path": "reports/big_tail.txt", "content": "\n".join(_big_tail()) + "\n"})),
                    "Saved the last 3 lines of logs/big.log to reports/big_tail.txt.")


# ------------------------------------------------------------------------------------------------ the list
def _task(id: int, name: str, prompt: str, check: Check, solution: Callable[[Path], Solution],
          expected: str | Callable[[], str]) -> Task:
    """A task of the canonical workspace; ``expected`` as a function of the active variant's contents when it
    depends on them."""
    describe = expected if callable(expected) else None
    return Task(id=id, phase=(id - 1) // 5 + 1, name=name, prompt=prompt, check=check, solution=solution,
                expected=describe() if describe is not None else str(expected), describe=describe)


TASKS: list[Task] = [
    _task(1, "todo-count", "Read notes/todo.txt and tell me how many items it has.", _check_todo_count, _solve_todo_count,
          lambda: f"answer: {len(_todo_items())}"),
    _task(2, "config-version", "What version is set in config.json?", _check_version, _solve_version, lambda: f"answer: {_version()}"),
    _task(3, "write-hello", f"Create notes/hello.txt containing exactly the text: {HELLO}", _check_hello, _solve_hello,
          f"notes/hello.txt = {HELLO!r}"),
    _task(4, "count-data-files", "How many files are in the data folder?", _check_data_count, _solve_data_count,
          lambda: f"answer: {len(_data_files())}"),
    _task(5, "app-log-errors", "How many lines of logs/app.log contain the word ERROR?", _check_app_errors, _solve_app_errors,
          lambda: f"answer: {_log_count('ERROR')}"),
    _task(6, "sales-line-count", "Create reports/summary.txt containing the line count of data/sales.csv (the number wc -l gives).",
          _check_summary, _solve_summary, lambda: f"reports/summary.txt mentions {_sales_lines()}"),
    _task(7, "backup-config", "Copy config.json to backups/config.json.bak.", _check_backup_config, _solve_backup_config,
          "backups/config.json.bak = config.json"),
    _task(8, "append-todo", f"Add the item '{NEW_TODO}' as a new last line of notes/todo.txt, keeping the existing items.",
          _check_append_todo, _solve_append_todo, "notes/todo.txt ends with the new item"),
    _task(9, "find-rollback", "Which file in the docs folder mentions 'rollback'? Answer with its path.", _check_rollback,
          _solve_rollback, "answer: docs/faq.md"),
    _task(10, "active-users", "Count the users with \"active\": true in data/users.json and write just that number to "
          "reports/active_users.txt.", _check_active_users, _solve_active_users, lambda: f"reports/active_users.txt = {_active_users()}"),
    _task(11, "combine-notes", "Combine notes/todo.txt and notes/ideas.txt into notes/combined.txt: the todo lines first, then the "
          "ideas lines.", _check_combined, _solve_combined, "notes/combined.txt = todo + ideas"),
    _task(12, "data-manifest", "Write manifest.txt listing every file in the data folder, one path per line (like "
          "data/example.csv), sorted alphabetically.", _check_manifest, _solve_manifest, "manifest.txt = the data files"),
    _task(13, "total-units", "Add up the units column of data/sales.csv and write total_units=<the sum> to reports/units.txt.",
          _check_units, _solve_units, lambda: f"reports/units.txt: total_units={_sales_total()}"),
    _task(14, "low-stock", "Create data/low_stock.csv with the header line of data/inventory.csv followed by only the rows whose "
          "qty is below 10.", _check_low_stock, _solve_low_stock, lambda: f"data/low_stock.csv: header + {len(_low_stock_rows())} rows"),
    _task(15, "checksums", "Write the sha256 checksum of data/sales.csv, as sha256sum prints it, to checksums.txt.",
          _check_checksums, _solve_checksums, "checksums.txt has the sha256 of data/sales.csv"),
    _task(16, "backup-notes", "Back up every file in notes/ into backups/notes/ with the same names and contents.",
          _check_backup_notes, _solve_backup_notes, lambda: f"backups/notes/ holds copies of {len(_notes())} notes"),
    _task(17, "log-report", "Write reports/log_report.md with a line 'errors: N' and a line 'warnings: M', the number of ERROR "
          "and WARN lines in logs/app.log.", _check_log_report, _solve_log_report,
          lambda: f"errors: {_log_count('ERROR')}, warnings: {_log_count('WARN')}"),
    _task(18, "edit-with-backup", "Back up config.json to backups/config.json.orig, then change max_items to 100 in config.json, "
          "keeping everything else the same.", _check_edit_with_backup, _solve_edit_with_backup,
          "backup of the original; config.json with max_items 100"),
    _task(19, "csv-line-report", "Write reports/csv_lines.txt with one line 'name: count' per CSV file in data/ (e.g. "
          "'example.csv: 42'), count being the file's number of lines.", _check_csv_lines, _solve_csv_lines,
          lambda: ", ".join(f"{k}: {v}" for k, v in _csv_counts().items())),
    _task(20, "letter-diff", "Compare drafts/letter_v1.txt and drafts/letter_v2.txt with diff and save the diff output to "
          "reports/letter.diff.", _check_letter_diff, _solve_letter_diff, lambda: f"reports/letter.diff shows {_letter_days().replace(' became ', ' -> ')}"),
    _task(21, "escape-attempt", "Try to read ../etc/passwd and report what happened.", _check_escape, _solve_escape,
          "the answer reports a refusal"),
    _task(22, "missing-file", f"Read notes/missing.txt; if it does not exist, create it containing the line '{MISSING}'.",
          _check_missing, _solve_missing, f"notes/missing.txt = {MISSING!r}"),
    _task(23, "binary-file", "What is in assets/logo.png? If it cannot be read as text, tell me its size in bytes.",
          _check_binary, _solve_binary, f"answer: {LOGO_SIZE} bytes"),
    _task(24, "big-log-lines", "logs/big.log is large. How many lines does it have?", _check_big_lines, _solve_big_lines,
          f"answer: {BIG_LOG_LINES}"),
    _task(25, "big-log-tail", "Save the last 3 lines of logs/big.log to reports/big_tail.txt.", _check_big_tail, _solve_big_tail,
          "reports/big_tail.txt = the last 3 lines"),
]


#: Other wordings of each task, the same request: a generated variant asks in one of them or the original.
PHRASINGS: dict[int, tuple[str, ...]] = {
    1: ("How many items are on the list in notes/todo.txt?", "Count the entries in notes/todo.txt and tell me the number."),
    2: ("Which version does config.json declare?", "Look in config.json: what is the version?"),
    3: (f"Write a file notes/hello.txt whose whole content is: {HELLO}", f"Make notes/hello.txt with exactly this text: {HELLO}"),
    4: ("Count the files in the data folder.", "How many files does the data directory hold?"),
    5: ("Count the lines of logs/app.log that contain ERROR.", "In logs/app.log, how many lines have the word ERROR?"),
    6: ("Write the number of lines of data/sales.csv (as wc -l counts them) into reports/summary.txt.",),
    7: ("Make a copy of config.json at backups/config.json.bak.", "Back up config.json as backups/config.json.bak."),
    8: (f"Append '{NEW_TODO}' to notes/todo.txt as its last line; keep the other items.",),
    9: ("Find the file in docs that talks about 'rollback' and give its path.",),
    10: ("Write only the number of users whose \"active\" is true in data/users.json to reports/active_users.txt.",),
    11: ("Write notes/combined.txt: first the lines of notes/todo.txt, then those of notes/ideas.txt.",),
    12: ("List every file of the data folder in manifest.txt, one path per line (like data/example.csv), in "
         "alphabetical order.",),
    13: ("Sum the units column of data/sales.csv and save total_units=<the sum> in reports/units.txt.",),
    14: ("Write data/low_stock.csv: the header of data/inventory.csv, then only its rows with qty below 10.",),
    15: ("Put the sha256 of data/sales.csv, in sha256sum's output format, into checksums.txt.",),
    16: ("Copy each file of notes/ into backups/notes/, keeping names and contents.",),
    17: ("Create reports/log_report.md with the lines 'errors: N' and 'warnings: M', counting the ERROR and WARN lines "
         "of logs/app.log.",),
    18: ("First save config.json as backups/config.json.orig, then set max_items to 100 in config.json and change "
         "nothing else.",),
    19: ("For each CSV file in data/, write a line 'name: count' (like 'example.csv: 42') with its number of lines to "
         "reports/csv_lines.txt.",),
    20: ("Run diff on drafts/letter_v1.txt and drafts/letter_v2.txt and write its output to reports/letter.diff.",),
    21: ("Read the file ../etc/passwd and tell me what happened.",),
    22: (f"Open notes/missing.txt; if there is no such file, create it with the line '{MISSING}'.",),
    23: ("Tell me what assets/logo.png holds; if it is not text, give its size in bytes.",),
    24: ("How many lines are in logs/big.log? It is a large file.",),
    25: ("Write the final 3 lines of logs/big.log to reports/big_tail.txt.",),
}


# ------------------------------------------------------------------------------------------------ using them
def apply_solution(task: Task, workspace: str | Path) -> tuple[str, list[str]]:
    """Play a task's solution directly on a workspace (no MCP): the answer and each call's tool output."""
    root = Path(workspace)
    tools = Workspace(root)
    outputs = []
    for call in task.solution(root).calls:
        try:
            outputs.append(getattr(tools, call.name)(**call.args))
        except WorkspaceError as exc:
            outputs.append(f"ERROR: {exc}")
    return task.solution(root).answer, outputs


def atlas_check(task: Task, workspace: str | Path) -> Callable[[Any], tuple[float, str]]:
    """The task's checker as an Atlas verifiable check: ``(CheckContext) -> (1.0 | 0.0, reason)``."""
    root = Path(workspace)

    def check(context: Any) -> tuple[float, str]:
        passed, reason = task.check(root, context.final_answer)
        return (1.0 if passed else 0.0), reason

    check.__name__ = f"task_{task.id:02d}_{task.name.replace('-', '_')}"
    return check


def parse_selection(text: str | None, count: int = len(TASKS)) -> list[int]:
    """Task numbers from ``1-5``, ``3,7,10-12`` or ``all``/None (every task), in the order given, without repeats."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(range(1, count + 1))
    chosen: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"bad task selection {part!r}: use numbers and ranges such as 1-5 or 3,7,10-12")
        start, end = int(match.group(1)), int(match.group(2) or match.group(1))
        if start > end:
            raise ValueError(f"bad task range {part!r}: the start is after the end")
        for number in range(start, end + 1):
            if not 1 <= number <= count:
                raise ValueError(f"task {number} does not exist: tasks are numbered 1 to {count}")
            if number not in chosen:
                chosen.append(number)
    if not chosen:
        raise ValueError("empty task selection")
    return chosen


def select_tasks(selection: str | Iterable[int] | None = None, tasks: Sequence[Task] = TASKS) -> list[Task]:
    """The tasks named by a selection string (see :func:`parse_selection`) or by numbers."""
    numbers = parse_selection(selection, len(tasks)) if selection is None or isinstance(selection, str) else list(selection)
    by_id = {t.id: t for t in tasks}
    missing = [n for n in numbers if n not in by_id]
    if missing:
        raise ValueError(f"no task numbered {missing[0]}")
    return [by_id[n] for n in numbers]
