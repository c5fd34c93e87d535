"""The MCP file server's confinement: plain functions first, then the FastMCP tools that wrap them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from examples.mcp_file_ops import server
from examples.mcp_file_ops.server import Workspace, WorkspaceError, build_server, guarded
from examples.mcp_file_ops.workspace import pristine_files

SECRET = "TOPSECRET-outside-the-workspace"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the workspace with a secret file the tools must never reach."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET + "\n")
    return folder


@pytest.fixture
def ws(workspace: Path, outside: Path) -> Workspace:
    """The workspace with three symlinks: a file and a folder pointing outside, and one pointing inside."""
    (workspace / "leak.txt").symlink_to(outside / "secret.txt")
    (workspace / "outdir").symlink_to(outside, target_is_directory=True)
    (workspace / "todo-link.txt").symlink_to(workspace / "notes" / "todo.txt")
    return Workspace(workspace)


# ------------------------------------------------------------------------------------------ reading
def test_reads_a_text_file_and_allows_dotdot_that_stays_inside(ws: Workspace) -> None:
    assert ws.read_file("notes/todo.txt") == pristine_files()["notes/todo.txt"].decode()
    assert ws.read_file("notes/../config.json") == pristine_files()["config.json"].decode()
    assert ws.read_file("todo-link.txt").startswith("- renew")  # a symlink that stays inside is fine


@pytest.mark.parametrize(("path", "message"), [
    ("missing.txt", "'missing.txt' not found; list_files shows what exists"),
    ("notes", "'notes' is a folder, not a file; list_files shows its files"),
    ("assets/logo.png", "'assets/logo.png' is a binary file (1,536 bytes); only text files can be read"),
    ("logs/big.log", "over the 32 KiB read limit; use run_command with head, tail, wc or grep instead"),
])
def test_read_errors_are_one_actionable_line(ws: Workspace, path: str, message: str) -> None:
    with pytest.raises(WorkspaceError) as raised:
        ws.read_file(path)
    assert message in str(raised.value)
    line = guarded(ws.read_file, path)
    assert line.startswith("ERROR: ") and "\n" not in line and message in line


ESCAPES = [
    ("../outside/secret.txt", "outside the workspace ('..' leaves the root)"),
    ("notes/../../outside/secret.txt", "outside the workspace ('..' leaves the root)"),
    ("/etc/passwd", "is an absolute path, outside the workspace"),
    ("~/secret.txt", "'~' is not allowed"),
    ("leak.txt", "is a symlink pointing outside the workspace; refused"),
    ("outdir/secret.txt", "is a symlink pointing outside the workspace; refused"),
    ("outdir", "is a symlink pointing outside the workspace; refused"),
]


@pytest.mark.parametrize(("path", "message"), ESCAPES)
def test_every_escape_is_refused_by_every_tool(ws: Workspace, path: str, message: str) -> None:
    for attempt in (lambda: ws.read_file(path), lambda: ws.list_files(path), lambda: ws.search_content("SECRET", path),
                    lambda: ws.write_file(path, "overwritten"), lambda: ws.write_file(path + "/new.txt", "x")):
        with pytest.raises(WorkspaceError) as raised:
            attempt()
        assert "outside" in str(raised.value) or "not allowed" in str(raised.value)
    with pytest.raises(WorkspaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ws.read_file(path)
    assert (ws.root.parent / "outside" / "secret.txt").read_text() == SECRET + "\n"
    assert not (ws.root.parent / "outside" / "new.txt").exists()


def test_writing_through_a_dangling_symlink_that_points_outside_is_refused(ws: Workspace, outside: Path) -> None:
    (ws.root / "dangling.txt").symlink_to(outside / "created-by-agent.txt")
    with pytest.raises(WorkspaceError, match="symlink pointing outside"):
        ws.write_file("dangling.txt", "x")
    assert not (outside / "created-by-agent.txt").exists()


# ------------------------------------------------------------------------------------------ writing
def test_write_creates_folders_overwrites_and_appends(ws: Workspace) -> None:
    assert ws.write_file("reports/deep/a.txt", "one\n") == "created reports/deep/a.txt (4 bytes)"
    assert ws.write_file("reports/deep/a.txt", "two\n", append=True).startswith("appended 4 bytes")
    assert (ws.root / "reports/deep/a.txt").read_text() == "one\ntwo\n"
    assert ws.write_file("reports/deep/a.txt", "three\n").startswith("overwrote")
    assert (ws.root / "reports/deep/a.txt").read_text() == "three\n"


@pytest.mark.parametrize(("path", "content", "message"), [
    ("notes", "x", "is a folder"),
    ("notes/todo.txt/inner.txt", "x", "is a file, not a folder"),
    ("big.txt", "x" * (server.MAX_WRITE_BYTES + 1), "write limit"),
])
def test_write_refusals(ws: Workspace, path: str, content: str, message: str) -> None:
    assert guarded(ws.write_file, path, content).startswith("ERROR: ")
    with pytest.raises(WorkspaceError, match=message):
        ws.write_file(path, content)
    assert not (ws.root / "big.txt").exists()


def test_appending_to_a_binary_file_is_refused(ws: Workspace) -> None:
    with pytest.raises(WorkspaceError, match="binary"):
        ws.write_file("assets/logo.png", "text", append=True)
    assert (ws.root / "assets/logo.png").read_bytes() == pristine_files()["assets/logo.png"]


# ------------------------------------------------------------------------------------- listing and search
def test_list_files_shows_sizes_and_never_follows_links_outside(ws: Workspace) -> None:
    listing = ws.list_files(".")
    assert "data/sales.csv (408 bytes)" in listing.splitlines()
    assert "leak.txt (symlink pointing outside the workspace; unusable)" in listing
    assert "outdir/ (symlink, not followed)" in listing
    assert "secret" not in listing
    assert ws.list_files("data", recursive=False).splitlines() == ["data/inventory.csv (130 bytes)", "data/sales.csv (408 bytes)",
                                                                  "data/users.json (485 bytes)"]


def test_search_finds_caps_and_skips_binary_and_outside(ws: Workspace) -> None:
    found = ws.search_content("rollback", "docs")
    assert found.startswith("docs/faq.md:4: Do a rollback")
    capped = ws.search_content("INFO", "logs", max_matches=5).splitlines()
    assert len(capped) == 6 and capped[-1].startswith("... (stopped at 5 matches")
    assert ws.search_content("SECRET", ".").startswith("no matches")  # neither leak.txt nor outdir/ is read
    assert ws.search_content("PNG", "assets").startswith("no matches")  # binary files are skipped
    with pytest.raises(WorkspaceError, match="invalid regular expression"):
        ws.search_content("([unclosed", ".")


# ------------------------------------------------------------------------------------------ commands
@pytest.mark.parametrize(("command", "expected"), [
    ("wc -l data/sales.csv", "13 data/sales.csv"),
    ("head -n 2 data/sales.csv", "date,region,product,units,unit_price\n2026-01-05,north,widget,12,2.50\n"),
    ("grep -c ERROR logs/app.log", "3\n"),
    ("grep -rn rollback docs", "docs/faq.md:4:"),
    ("grep -e /items logs/app.log", "GET /items 200"),
    ("wc -l data/*.csv", "22 total"),
    ("sort -t, -k3 -n data/inventory.csv", "B-400,bolt,3\nG-200,gadget,7\n"),
    ("uniq -c notes/todo.txt", "1 - renew the TLS certificate"),
    ("tail -n 1 logs/big.log", "id=006000"),
    ("diff drafts/letter_v1.txt drafts/letter_v2.txt", "> The release is planned for Wednesday."),
    ("sha256sum data/sales.csv", hashlib.sha256(pristine_files()["data/sales.csv"]).hexdigest()),
    ("ls notes", "ideas.txt\nmeeting.md\ntodo.txt"),
    ("cut -d, -f2 data/inventory.csv", "name\nwidget\n"),
])
def test_allowed_commands_run_in_the_workspace(ws: Workspace, command: str, expected: str) -> None:
    output = ws.run_command(command)
    assert expected in output and not output.startswith("ERROR")


REFUSED = [
    ("rm -rf data", "'rm' is not allowed"),
    ("bash -c ls", "'bash' is not allowed"),
    ("python3 -c print(1)", "'python3' is not allowed"),
    ("cat data/sales.csv | wc -l", "pipes, redirection and substitution are not supported"),
    ("sort data/sales.csv > out.txt", "pipes, redirection and substitution are not supported"),
    ("cat $(ls)", "pipes, redirection and substitution are not supported"),
    ("cat /etc/passwd", "is an absolute path"),
    ("cat ../outside/secret.txt", "'..' leaves the root"),
    ("cat notes/../notes/todo.txt", "'..' is not allowed in command arguments"),
    ("cat leak.txt", "symlink pointing outside"),
    ("cat outdir/secret.txt", "symlink pointing outside"),
    ("head -n 3 /etc/passwd", "is an absolute path"),
    ("wc --files0-from=/etc/passwd", "option --files0-from of wc is not allowed"),
    ("wc --files0-from files.txt", "option --files0-from of wc is not allowed"),
    ("wc --files0=list", "option --files0-from of wc is not allowed"),  # an abbreviation GNU accepts
    ("sort -o /tmp/x data/sales.csv", "option -o of sort is not allowed"),
    ("sort -o/tmp/x data/sales.csv", "option -o of sort is not allowed"),
    ("sort -uo out.txt data/sales.csv", "option -o of sort is not allowed"),
    ("sort --output=out.txt data/sales.csv", "option --output of sort is not allowed"),
    ("sort --out=out.txt data/sales.csv", "option --output of sort is not allowed"),
    ("sort --compress-program=sh data/sales.csv", "option --compress-program of sort is not allowed"),
    ("sort -T /tmp data/sales.csv", "option -T of sort is not allowed"),
    ("grep -f /etc/passwd data/sales.csv", "is an absolute path"),
    ("grep -f../outside/secret.txt data/sales.csv", "'..' leaves the root"),
    ("grep --file=/etc/passwd data/sales.csv", "is an absolute path"),
    ("grep --file /etc/passwd data/sales.csv", "is an absolute path"),
    ("grep -R SECRET .", "option -R of grep is not allowed"),
    ("grep -r SECRET /", "is an absolute path"),
    ("uniq notes/todo.txt out.txt", "uniq takes at most 1 file"),
    ("md5sum -c sums.txt", "option -c of md5sum is not allowed"),
    ("sha256sum --check sums.txt", "option --check of sha256sum is not allowed"),
    ("diff -r notes drafts", "option -r of diff is not allowed"),
    ("diff notes drafts", "compares files here, not folders"),
    ("diff --from-file=/etc/passwd notes/todo.txt", "option --from-file of diff is not allowed"),
    ("tail -f logs/app.log", "option -f of tail is not allowed"),
    ("ls -L outdir", "option -L of ls is not allowed"),
    ("ls /", "is an absolute path"),
    ("cat 'unterminated", "cannot parse the command"),
    ("", "empty command"),
    ("head -n", "needs a value"),
]


@pytest.mark.parametrize(("command", "message"), REFUSED)
def test_refused_commands_never_run(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, message: str) -> None:
    monkeypatch.setattr(server.subprocess, "run", lambda *a, **k: pytest.fail(f"{command!r} was run"))
    with pytest.raises(WorkspaceError, match=message.replace("(", r"\(").replace("$", r"\$")):
        ws.run_command(command)
    line = guarded(ws.run_command, command)
    assert line.startswith("ERROR: ") and "\n" not in line


def test_refused_writes_leave_no_file_anywhere(ws: Workspace, tmp_path: Path) -> None:
    target = tmp_path / "written-by-sort"
    for command in (f"sort -o {target} data/sales.csv", f"sort --output={target} data/sales.csv", "sort -o out.txt data/sales.csv",
                    "uniq notes/todo.txt out.txt"):
        assert guarded(ws.run_command, command).startswith("ERROR: ")
    assert not target.exists() and not (ws.root / "out.txt").exists()


def test_commands_run_without_a_shell_and_with_a_clean_environment(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=argv, **kwargs)
        raise server.subprocess.TimeoutExpired(argv, 1)

    monkeypatch.setattr(server.subprocess, "run", fake_run)
    with pytest.raises(WorkspaceError, match="took longer than"):
        ws.run_command("wc -l 'data/sales.csv'")
    assert seen["argv"][0].endswith("/wc") and seen["argv"][1:] == ["-l", "data/sales.csv"]
    assert seen["shell"] is False and seen["cwd"] == ws.root and seen["timeout"] == server.COMMAND_TIMEOUT_S
    assert set(seen["env"]) == {"PATH", "LC_ALL", "LANG"}


def test_a_command_that_blocks_is_stopped_by_the_timeout(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(ws.root / "pipe")  # cat on a FIFO nobody writes to blocks forever
    monkeypatch.setattr(server, "COMMAND_TIMEOUT_S", 0.3)
    assert guarded(ws.run_command, "cat pipe") == "ERROR: cat took longer than 0.3 s and was stopped"


def test_command_output_is_capped(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_OUTPUT_CHARS", 100)
    output = ws.run_command("cat logs/big.log")
    assert len(output) < 160 and output.endswith("[output cut at 100 characters]")


def test_failing_commands_report_their_exit_status(ws: Workspace) -> None:
    output = ws.run_command("cat nothing-here.txt")
    assert "No such file or directory" in output and output.endswith("(exit status 1)")
    assert ws.run_command("grep -c NOPE logs/app.log").startswith("0")  # grep's "no match" is not an error


# ------------------------------------------------------------------------------------------ the MCP tools
async def test_the_fastmcp_tools_wrap_the_functions_and_return_error_lines(workspace: Path) -> None:
    mcp = build_server(workspace)
    names = {tool.name for tool in await mcp.list_tools()}
    assert names == {"read_file", "write_file", "list_files", "search_content", "run_command"}

    async def text(name: str, arguments: dict) -> str:
        result = await mcp.call_tool(name, arguments)
        blocks = result[0] if isinstance(result, tuple) else result
        return "".join(block.text for block in blocks)

    assert (await text("read_file", {"path": "config.json"})).startswith("{")
    assert await text("read_file", {"path": "../etc/passwd"}) == ("ERROR: '../etc/passwd' is outside the workspace ('..' leaves the "
                                                                  "root); use a path inside it")
    assert (await text("write_file", {"path": "reports/x.txt", "content": "hi"})) == "created reports/x.txt (2 bytes)"
    assert (workspace / "reports/x.txt").read_text() == "hi"
    assert (await text("run_command", {"command": "sort -o /tmp/x config.json"})).startswith("ERROR: option -o of sort")
    assert "data/users.json" in await text("list_files", {"path": "data"})
    assert (await text("search_content", {"pattern": "ERROR", "path": "logs/app.log"})).count("\n") == 2


def test_the_server_needs_an_existing_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(server.ROOT_ENV, raising=False)
    with pytest.raises(SystemExit):
        server.main([])
    with pytest.raises(SystemExit):
        server.main(["--root", str(tmp_path / "nope")])
    with pytest.raises(WorkspaceError, match="is not a folder"):
        Workspace(tmp_path / "nope")


# ------------------------------------------------------------------------------- review regressions
def test_files_named_like_options_stay_file_names(ws: Workspace, workspace: Path) -> None:
    """A file called --files0-from=l matched by a wildcard must not become an option that reads outside."""
    (workspace / "l").write_bytes(b"/etc/hostname\x00")
    (workspace / "--files0-from=l").write_text("x\n")
    (workspace / "-R").write_text("y\n")
    argv = ws.command_argv("wc [-]*")
    assert argv == ["wc", "./--files0-from=l", "./-R"]
    assert "/etc/hostname" not in guarded(ws.run_command, "sort [-]*")
    assert ws.command_argv("tail +f notes/todo.txt")[1] == "./+f"  # tail's old follow-forever syntax stays a name


def test_uniq_operands_are_counted_after_wildcards_expand(ws: Workspace, workspace: Path) -> None:
    (workspace / "u").mkdir()
    (workspace / "u" / "x.txt").write_text("a\na\n")
    (workspace / "u" / "y.txt").write_text("keep\n")
    assert "at most 1 file" in guarded(ws.run_command, "uniq u/*")
    assert (workspace / "u" / "y.txt").read_text() == "keep\n"


def test_a_catastrophic_pattern_is_stopped(ws: Workspace, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "SEARCH_TIMEOUT_S", 0.2)
    (workspace / "aaa.txt").write_text("a" * 60 + "!\n")
    assert "took longer than 0.2 s" in guarded(ws.search_content, "(a|aa)+$", "aaa.txt")


def test_a_symlink_loop_is_one_error_line(ws: Workspace, workspace: Path) -> None:
    (workspace / "loop1").symlink_to(workspace / "loop2")
    (workspace / "loop2").symlink_to(workspace / "loop1")
    message = guarded(ws.read_file, "loop1")
    assert message.startswith("ERROR:") and "\n" not in message
