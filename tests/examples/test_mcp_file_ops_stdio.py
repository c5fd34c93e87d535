"""The real server over stdio, through langchain-mcp-adapters, on one persistent session."""

from __future__ import annotations

import os
from pathlib import Path

from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from examples.mcp_file_ops.harness import server_connection


async def test_one_stdio_session_serves_several_tool_calls(workspace: Path) -> None:
    client = MultiServerMCPClient({"files": server_connection(workspace)})
    async with client.session("files") as session:
        tools = {tool.name: tool for tool in await load_mcp_tools(session)}
        assert set(tools) == {"read_file", "write_file", "list_files", "search_content", "run_command"}
        listing = await tools["list_files"].ainvoke({"path": "notes"})
        todo = await tools["read_file"].ainvoke({"path": "notes/todo.txt"})
        written = await tools["write_file"].ainvoke({"path": "reports/out.txt", "content": "done\n"})
        refused = await tools["read_file"].ainvoke({"path": "../../etc/passwd"})
    # results arrive as lists of content blocks, not strings
    assert isinstance(listing, list) and listing[0]["type"] == "text"
    assert "notes/todo.txt (127 bytes)" in listing[0]["text"]
    assert todo[0]["text"].startswith("- renew the TLS certificate")
    assert written[0]["text"] == "created reports/out.txt (5 bytes)" and (workspace / "reports/out.txt").read_text() == "done\n"
    assert refused[0]["text"].startswith("ERROR: '../../etc/passwd' is outside the workspace")


def test_the_server_runs_as_a_module_with_the_root_from_the_environment(workspace: Path) -> None:
    import subprocess
    import sys

    # the module form the docs give; with no input on stdin the stdio server ends cleanly
    completed = subprocess.run([sys.executable, "-m", "examples.mcp_file_ops.server"], input=b"", capture_output=True, timeout=60,
                               env={**os.environ, "ATLAS_FILE_OPS_ROOT": str(workspace)}, cwd=Path(__file__).parents[2])
    assert completed.returncode == 0, completed.stderr.decode()[-500:]
    missing = subprocess.run([sys.executable, "-m", "examples.mcp_file_ops.server"], input=b"", capture_output=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "ATLAS_FILE_OPS_ROOT"}, cwd=Path(__file__).parents[2])
    assert missing.returncode == 2 and b"give --root DIR" in missing.stderr
