"""An MCP stdio server of file tools confined to one workspace folder.

    python -m examples.mcp_file_ops.server --root DIR      # or ATLAS_FILE_OPS_ROOT=DIR

Tools: ``read_file``, ``write_file``, ``list_files``, ``search_content`` (a regular expression over the workspace's
text files, with a match cap) and ``run_command`` (an allow-list of read-only commands, run without a shell).

The confinement lives in plain functions of :class:`Workspace` (testable without MCP); the MCP tools are thin
wrappers that turn a :class:`WorkspaceError` into one line starting ``ERROR:`` that an agent can act on, for
example ``ERROR: 'x.txt' not found; list_files shows what exists``. Every path is resolved (symlinks followed) and
must stay inside the root: an absolute path, a ``..`` that leaves the root or a symlink pointing outside is refused.
``run_command`` takes one command line, split like a shell would but never run by one (``subprocess`` with a
list): only allow-listed programs, no option that reads or writes a file the arguments do not name (``sort -o``,
``--files0-from``, ``grep -f`` outside, ``md5sum -c``, ...), every path argument inside the workspace, a timeout
and an output cap. A race between the check and the use of a path (someone swapping in a symlink meanwhile) is
out of scope: the workspace belongs to the agent alone.
"""

from __future__ import annotations

import argparse
import glob as globbing
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "COMMANDS",
    "MAX_READ_BYTES",
    "Workspace",
    "WorkspaceError",
    "build_server",
    "guarded",
    "main",
]

#: Files larger than this are not returned by read_file (use run_command with head, tail, wc or grep).
MAX_READ_BYTES = 32 * 1024
#: write_file refuses content larger than this.
MAX_WRITE_BYTES = 256 * 1024
#: search_content skips files larger than this.
MAX_SEARCH_BYTES = 4 * 1024 * 1024
#: A search stops after this long: a catastrophic pattern such as (a+)+$ must not hang the server.
SEARCH_TIMEOUT_S = 2.0
MAX_MATCHES = 50
MAX_LIST_ENTRIES = 300
MAX_OUTPUT_CHARS = 12_000
COMMAND_TIMEOUT_S = 5.0
ROOT_ENV = "ATLAS_FILE_OPS_ROOT"


class WorkspaceError(Exception):
    """A request the workspace refuses or cannot serve; the message is one line meant for the agent."""


@dataclass(frozen=True)
class CommandSpec:
    """What run_command allows of one program.

    ``values``: short options whose value follows (``-n 5``, ``-n5``), not a path; ``path_values``: short options
    whose value is a file (checked like any path); ``deny_short`` / ``deny_long``: refused options (a long option is
    also refused by any abbreviation GNU getopt would accept); ``max_operands``: at most this many operands (uniq's
    second operand is an output file); ``pattern_first``: the first operand is a pattern (grep), not a path.
    """

    values: str = ""
    path_values: str = ""
    deny_short: str = ""
    deny_long: tuple[str, ...] = ()
    max_operands: int | None = None
    pattern_first: bool = False
    #: Long options taking a value that is not a path (``--lines 5``, ``--lines=5``) or that is a path (``--file``).
    long_values: tuple[str, ...] = ()
    long_paths: tuple[str, ...] = ()
    #: Operands must be files, not folders (diff would compare the folders' files, links included).
    files_only: bool = False


COMMANDS: dict[str, CommandSpec] = {
    "cat": CommandSpec(),
    "head": CommandSpec(values="nc", long_values=("--lines", "--bytes")),
    "tail": CommandSpec(values="ncs", deny_short="fF", deny_long=("--follow", "--pid", "--retry"), long_values=("--lines", "--bytes")),
    "wc": CommandSpec(deny_long=("--files0-from",)),
    "sort": CommandSpec(values="tkS", deny_short="oT",
                        deny_long=("--output", "--files0-from", "--compress-program", "--temporary-directory", "--random-source"),
                        long_values=("--field-separator", "--key", "--buffer-size")),
    "uniq": CommandSpec(values="fsw", max_operands=1, long_values=("--skip-fields", "--skip-chars", "--check-chars")),
    "grep": CommandSpec(values="emABC", path_values="f", deny_short="Rd",
                        deny_long=("--dereference-recursive", "--exclude-from", "--directories", "--devices"),
                        pattern_first=True, long_values=("--regexp", "--max-count", "--after-context", "--before-context", "--context"),
                        long_paths=("--file",)),
    "ls": CommandSpec(values="ITw", deny_short="LH", deny_long=("--dereference",)),
    "diff": CommandSpec(deny_short="rX", deny_long=("--recursive", "--from-file", "--to-file", "--exclude-from", "--dereference"),
                        files_only=True),
    "md5sum": CommandSpec(deny_short="c", deny_long=("--check",)),
    "sha256sum": CommandSpec(deny_short="c", deny_long=("--check",)),
    "cut": CommandSpec(values="dfcb", long_values=("--delimiter", "--fields", "--characters", "--bytes")),
    "nl": CommandSpec(values="bhfdilnsvw"),
}
_SHELL_OPERATORS = frozenset({"|", "||", "&", "&&", ";", ">", ">>", "<", "<<", "2>", "2>&1", "&>", "$(", "`"})
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _quote(path: str) -> str:
    return repr(path) if len(path) <= 120 else repr(path[:117] + "...")


class Workspace:
    """A folder the tools may use, and nothing outside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise WorkspaceError(f"workspace root {str(root)!r} is not a folder")

    # ---------------------------------------------------------------------------------------- paths
    def resolve(self, path: str, *, must_exist: bool = True) -> Path:
        """The absolute path of ``path`` (relative to the root), symlinks followed; refused if it leaves the root."""
        text = (path or "").strip()
        if not text:
            text = "."
        if "\x00" in text:
            raise WorkspaceError(f"{_quote(text)} contains a NUL byte; give a plain relative path")
        if text.startswith("~"):
            raise WorkspaceError(f"{_quote(text)}: '~' is not allowed; paths are relative to the workspace root")
        if os.path.isabs(text):
            raise WorkspaceError(f"{_quote(text)} is an absolute path, outside the workspace; use a path relative to the workspace root")
        candidate = self.root / text
        lexical = Path(os.path.normpath(candidate))
        if not _inside(lexical, self.root):
            raise WorkspaceError(f"{_quote(text)} is outside the workspace ('..' leaves the root); use a path inside it")
        resolved = candidate.resolve()
        if not _inside(resolved, self.root):
            raise WorkspaceError(f"{_quote(text)} is a symlink pointing outside the workspace; refused")
        if must_exist and not resolved.exists():
            raise WorkspaceError(f"{_quote(text)} not found; list_files shows what exists")
        return resolved

    def relative(self, path: Path) -> str:
        relative = path.relative_to(self.root).as_posix()
        return relative or "."

    # ---------------------------------------------------------------------------------------- tools
    def read_file(self, path: str) -> str:
        """The text of a file; refuses folders, binary files and files over MAX_READ_BYTES."""
        target = self.resolve(path)
        if target.is_dir():
            raise WorkspaceError(f"{_quote(path)} is a folder, not a file; list_files shows its files")
        size = target.stat().st_size
        if size > MAX_READ_BYTES:
            raise WorkspaceError(f"{_quote(path)} is {size:,} bytes, over the {MAX_READ_BYTES // 1024} KiB read limit; "
                                 "use run_command with head, tail, wc or grep instead")
        data = target.read_bytes()
        text = _text_or_none(data)
        if text is None:
            raise WorkspaceError(f"{_quote(path)} is a binary file ({size:,} bytes); only text files can be read")
        return text

    def write_file(self, path: str, content: str, append: bool = False) -> str:
        """Write (or append) text to a file, creating its folders; refuses folders and oversized content."""
        target = self.resolve(path, must_exist=False)
        if target == self.root or target.is_dir():
            raise WorkspaceError(f"{_quote(path)} is a folder; give a file path, e.g. a name inside it")
        data = (content or "").encode("utf-8")
        if len(data) > MAX_WRITE_BYTES:
            raise WorkspaceError(f"content is {len(data):,} bytes, over the {MAX_WRITE_BYTES // 1024} KiB write limit")
        parent = target.parent
        for ancestor in [parent, *parent.parents]:
            if ancestor == self.root or not _inside(ancestor, self.root):
                break
            if ancestor.exists() and not ancestor.is_dir():
                raise WorkspaceError(f"cannot create {_quote(path)}: {_quote(self.relative(ancestor))} is a file, not a folder")
        parent.mkdir(parents=True, exist_ok=True)
        if append and target.exists():
            existing = target.read_bytes()
            if _text_or_none(existing) is None:
                raise WorkspaceError(f"{_quote(path)} is a binary file; refusing to append text to it")
            with target.open("ab") as handle:
                handle.write(data)
            return f"appended {len(data)} bytes to {self.relative(target)} (now {target.stat().st_size} bytes)"
        existed = target.exists()
        target.write_bytes(data)
        return f"{'overwrote' if existed else 'created'} {self.relative(target)} ({len(data)} bytes)"

    def list_files(self, path: str = ".", recursive: bool = True) -> str:
        """Files (with sizes) and folders under ``path``, one per line, sorted; symlinks are marked, never followed."""
        target = self.resolve(path)
        if not target.is_dir():
            return f"{self.relative(target)} ({target.stat().st_size} bytes)"
        lines: list[str] = []
        for current, dirs, files in os.walk(target, followlinks=False):
            dirs.sort()
            here = Path(current)
            for name in dirs:
                entry = here / name
                lines.append(self.relative(entry) + ("/ (symlink, not followed)" if entry.is_symlink() else "/"))
            for name in sorted(files):
                entry = here / name
                lines.append(self._describe(entry))
            if not recursive:
                break
        lines.sort()
        if not lines:
            return f"{self.relative(target)}/ is empty"
        if len(lines) > MAX_LIST_ENTRIES:
            return "\n".join([*lines[:MAX_LIST_ENTRIES], f"... ({len(lines) - MAX_LIST_ENTRIES} more entries not shown)"])
        return "\n".join(lines)

    def _describe(self, entry: Path) -> str:
        name = self.relative(entry)
        if entry.is_symlink():
            resolved = entry.resolve()
            if not _inside(resolved, self.root):
                return f"{name} (symlink pointing outside the workspace; unusable)"
            return f"{name} (symlink to {self.relative(resolved)})"
        return f"{name} ({entry.stat().st_size} bytes)"

    def search_content(self, pattern: str, path: str = ".", max_matches: int = MAX_MATCHES) -> str:
        """Lines matching a regular expression in the text files under ``path``, as ``file:line: text``."""
        if not pattern:
            raise WorkspaceError("empty pattern; give a regular expression such as ERROR or ^total")
        if len(pattern) > 500:
            raise WorkspaceError("pattern longer than 500 characters; use a shorter regular expression")
        import regex as regex_module  # like re, plus a time limit per match

        try:
            regex = regex_module.compile(pattern)
        except regex_module.error as exc:
            raise WorkspaceError(f"invalid regular expression {pattern!r}: {exc}") from None
        deadline = time.monotonic() + SEARCH_TIMEOUT_S
        cap = max(1, min(int(max_matches or MAX_MATCHES), 500))
        target = self.resolve(path)
        files = [target] if target.is_file() else sorted(self._walk_files(target))
        matches: list[str] = []
        skipped: list[str] = []
        for file in files:
            resolved = file.resolve()
            if not _inside(resolved, self.root) or not resolved.is_file():
                continue
            if resolved.stat().st_size > MAX_SEARCH_BYTES:
                skipped.append(f"{self.relative(file)} (too large)")
                continue
            text = _text_or_none(resolved.read_bytes())
            if text is None:
                continue  # binary files are not searched
            for number, line in enumerate(text.splitlines(), start=1):
                try:
                    found = regex.search(line, timeout=max(0.001, deadline - time.monotonic()))
                except TimeoutError:
                    raise WorkspaceError(f"the search for {pattern!r} took longer than {SEARCH_TIMEOUT_S:g} s and was "
                                         "stopped; use a simpler pattern or a narrower path") from None
                if found:
                    shown = line if len(line) <= 200 else line[:200] + "..."
                    matches.append(f"{self.relative(file)}:{number}: {shown}")
                    if len(matches) >= cap:
                        return "\n".join([*matches, f"... (stopped at {cap} matches; narrow the pattern or the path)"])
        if not matches:
            return f"no matches for {pattern!r} under {self.relative(target)}" + (f"; skipped {', '.join(skipped)}" if skipped else "")
        return "\n".join(matches) + (f"\n(skipped {', '.join(skipped)})" if skipped else "")

    def _walk_files(self, folder: Path):
        for current, dirs, files in os.walk(folder, followlinks=False):
            dirs.sort()
            for name in files:
                yield Path(current) / name

    # ------------------------------------------------------------------------------------ commands
    def command_argv(self, command: str | list[str]) -> list[str]:
        """The checked argument list of a command line (program first); raises WorkspaceError when refused."""
        if isinstance(command, str):
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise WorkspaceError(f"cannot parse the command ({exc}); check its quotes") from None
        else:
            argv = [str(a) for a in command]
        if not argv:
            raise WorkspaceError(f"empty command; allowed programs: {', '.join(sorted(COMMANDS))}")
        program, args = argv[0], argv[1:]
        if program not in COMMANDS:
            raise WorkspaceError(f"{program!r} is not allowed; allowed programs: {', '.join(sorted(COMMANDS))} (read-only, no shell)")
        for token in args:
            if token in _SHELL_OPERATORS or token.startswith(("|", ">", "<", "2>", "&>", "$(", "`")):
                raise WorkspaceError(f"{token!r}: pipes, redirection and substitution are not supported (no shell); "
                                     "run one command and use write_file to save output")
        spec = COMMANDS[program]
        checked: list[str] = [program]
        operands: list[str] = []
        pending: str | None = None  # "value" or "path": what the token after a value-taking option is
        pattern_given = False
        only_operands = False
        for token in args:
            if pending is not None:
                checked.append(self._path_arg(token) if pending == "path" else token)
                pending = None
            elif only_operands or token == "-" or not token.startswith("-"):
                operands.append(token)
            elif token == "--":
                only_operands = True
                checked.append(token)
            elif token.startswith("--"):
                name, has_value, value = token.partition("=")
                self._check_long(program, spec, name)
                kind = _long_kind(spec, name)
                pattern_given |= spec.pattern_first and kind is not None and _abbreviates(name, ("--regexp", "--file"))
                if has_value:
                    checked.append(token if kind == "value" else f"{name}={self._path_arg(value)}")
                else:
                    pending = kind
                    checked.append(token)
            else:  # a cluster of short options, possibly ending in a value: -rn, -n5, -o/tmp/x, -t,
                letters = token[1:]
                for position, letter in enumerate(letters):
                    if letter in spec.deny_short:
                        raise WorkspaceError(_denied(program, f"-{letter}"))
                    if letter in spec.values or letter in spec.path_values:
                        kind = "path" if letter in spec.path_values else "value"
                        pattern_given |= spec.pattern_first and letter in "ef"
                        rest = letters[position + 1:]
                        if rest:
                            token = f"-{letters[:position + 1]}{self._path_arg(rest) if kind == 'path' else rest}"
                        else:
                            pending = kind
                        break
                checked.append(token)
        if pending is not None:
            raise WorkspaceError(f"{args[-1]!r} needs a value after it")
        if spec.pattern_first and not pattern_given:
            if not operands:
                raise WorkspaceError("grep needs a pattern, e.g. grep -n ERROR logs/app.log")
            checked.append(operands.pop(0))
        expanded = [item for operand in operands for item in self._operand(operand)]
        if spec.max_operands is not None and len(expanded) > spec.max_operands:  # counted after wildcards expand
            raise WorkspaceError(f"{program} takes at most {spec.max_operands} file here (a second one would be written to)")
        for item in expanded:
            if spec.files_only and item != "-" and (self.root / item).resolve().is_dir():
                raise WorkspaceError(f"{program} compares files here, not folders: {_quote(item)} is a folder")
            # A file named like an option (-R, --files0-from=x) or tail's old +f syntax must stay a file name.
            checked.append(f"./{item}" if item[:1] in "-+" and item != "-" else item)
        return checked

    def _check_long(self, program: str, spec: CommandSpec, name: str) -> None:
        if len(name) <= 2:
            return
        for denied in spec.deny_long:
            if denied.startswith(name):  # GNU getopt accepts any unambiguous abbreviation
                raise WorkspaceError(_denied(program, denied))

    def _path_arg(self, value: str) -> str:
        """A value that names a file: must be a relative path inside the workspace."""
        if value == "-":
            return value
        self.resolve(value, must_exist=False)
        if ".." in Path(value).parts:
            raise WorkspaceError(f"{_quote(value)}: '..' is not allowed in command arguments; use a path from the workspace root")
        return value

    def _operand(self, operand: str) -> list[str]:
        """A file operand, with wildcards expanded inside the workspace (there is no shell to do it)."""
        if operand == "-":
            return [operand]
        self._path_arg(operand)
        if any(c in operand for c in "*?["):
            matches = sorted(globbing.glob(operand, root_dir=self.root))
            if matches:
                for match in matches:
                    self._path_arg(match)
                return matches
        return [operand]

    def run_command(self, command: str | list[str]) -> str:
        """Run an allowed read-only command in the workspace root; its output (capped), or its error and exit status."""
        argv = self.command_argv(command)
        executable = shutil.which(argv[0], path=_SAFE_PATH)
        if executable is None:
            raise WorkspaceError(f"{argv[0]!r} is not installed on this machine")
        try:
            completed = subprocess.run([executable, *argv[1:]], cwd=self.root, shell=False, stdin=subprocess.DEVNULL,
                                       capture_output=True, timeout=COMMAND_TIMEOUT_S,
                                       env={"PATH": _SAFE_PATH, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
        except subprocess.TimeoutExpired:
            raise WorkspaceError(f"{argv[0]} took longer than {COMMAND_TIMEOUT_S:g} s and was stopped") from None
        out = completed.stdout.decode("utf-8", errors="replace")
        err = completed.stderr.decode("utf-8", errors="replace").strip()[:MAX_OUTPUT_CHARS]
        text = out if len(out) <= MAX_OUTPUT_CHARS else out[:MAX_OUTPUT_CHARS] + f"\n... [output cut at {MAX_OUTPUT_CHARS} characters]"
        if completed.returncode != 0:
            # grep and diff use exit status 1 for "no match" / "files differ": not an error
            if argv[0] in ("grep", "diff") and completed.returncode == 1 and not err:
                return text or "(no output; exit status 1)"
            return f"{text}{err}\n(exit status {completed.returncode})".strip()
        return text if text else "(no output)"


def _denied(program: str, option: str) -> str:
    return (f"option {option} of {program} is not allowed here (it reads or writes files other than its arguments, "
            "follows links or never ends)")


def _abbreviates(name: str, options: tuple[str, ...]) -> bool:
    """True when ``name`` is one of ``options`` or an abbreviation GNU getopt could take for one."""
    return any(option == name or (len(name) > 3 and option.startswith(name)) for option in options)


def _long_kind(spec: CommandSpec, name: str) -> str | None:
    """"path" or "value" for a long option that takes a value, None for a flag (or an unknown option)."""
    if _abbreviates(name, spec.long_paths):
        return "path"
    if _abbreviates(name, spec.long_values):
        return "value"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _text_or_none(data: bytes) -> str | None:
    """The UTF-8 text of some bytes, or None when they look binary (a NUL byte, or not UTF-8)."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def guarded(action: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """Run a workspace function for a tool: its result, or one line ``ERROR: ...`` the agent can act on."""
    try:
        return action(*args, **kwargs)
    except WorkspaceError as exc:
        return f"ERROR: {exc}"
    except (RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte in an argument
        return f"ERROR: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    except OSError as exc:
        return f"ERROR: {exc.strerror or type(exc).__name__}" + (f" ({_quote(str(exc.filename))})" if exc.filename else "")


def build_server(root: str | os.PathLike[str]) -> Any:
    """A FastMCP server whose tools work on ``root`` only."""
    from mcp.server.fastmcp import FastMCP

    workspace = Workspace(root)
    server = FastMCP("atlas-file-ops", instructions="File tools confined to one workspace folder; paths are relative to it.",
                     log_level="WARNING")

    @server.tool()
    def read_file(path: str) -> str:
        """Read a text file of the workspace. Paths are relative to the workspace root, e.g. notes/todo.txt."""
        return guarded(workspace.read_file, path)

    @server.tool()
    def write_file(path: str, content: str, append: bool = False) -> str:
        """Write text to a file (created with its folders; replaced unless append is true)."""
        return guarded(workspace.write_file, path, content, append)

    @server.tool()
    def list_files(path: str = ".", recursive: bool = True) -> str:
        """List files (with sizes in bytes) and folders under a folder of the workspace."""
        return guarded(workspace.list_files, path, recursive)

    @server.tool()
    def search_content(pattern: str, path: str = ".", max_matches: int = MAX_MATCHES) -> str:
        """Find lines matching a regular expression in the text files under a path; returns file:line: text."""
        return guarded(workspace.search_content, pattern, path, max_matches)

    @server.tool()
    def run_command(command: str) -> str:
        """Run one read-only command in the workspace root: cat, head, tail, wc, sort, uniq, grep, ls, diff, cut, nl,
        md5sum or sha256sum, e.g. 'wc -l data/sales.csv'. No shell: no pipes or redirection."""
        return guarded(workspace.run_command, command)

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MCP stdio server of file tools confined to one folder.")
    parser.add_argument("--root", default=os.environ.get(ROOT_ENV), help=f"the workspace folder (default: ${ROOT_ENV})")
    args = parser.parse_args(argv)
    if not args.root:
        parser.error(f"give --root DIR or set {ROOT_ENV}")
    try:
        server = build_server(args.root)
    except WorkspaceError as exc:
        parser.error(str(exc))
    server.run("stdio")


if __name__ == "__main__":
    main()
