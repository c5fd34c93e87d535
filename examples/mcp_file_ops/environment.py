"""The example's tasks as an environment for GRPO on the student's own rollouts.

``atlas train grpo --target student --set environment=examples.mcp_file_ops.environment:FileOpsEnvironment``

Each episode gets a fresh workspace of a training variant (never a held-out one). The tools are the example's MCP
server's, called in process through FastMCP itself (the same argument validation and the same ``ERROR: ...`` lines as
over stdio). The reward is the task's own checker on the final answer and the workspace it left, as at run time.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from typing import Any

from .server import build_server
from .tasks import PHRASINGS, TASKS, VARIANT_SETS, Task
from .workspace import build_pristine

__all__ = ["FileOpsEnvironment"]

#: Episodes take the training variants in turn: 1, 2, ..., TRAINING_VARIANTS, 1, ...
TRAINING_VARIANTS = 4
_episodes = itertools.count()


def _task_of(text: str) -> Task:
    """The task whose prompt (or one of its phrasings) is ``text``."""
    wanted = text.strip()
    for task in TASKS:
        if wanted in (task.prompt, *PHRASINGS.get(task.id, ())):
            return task
    raise ValueError(f"no mcp_file_ops task is asked as {wanted[:80]!r}")


class FileOpsEnvironment:
    """One episode: a task on a fresh workspace of a training variant, the MCP server's tools, the task's checker."""

    def __init__(self, variants: int = TRAINING_VARIANTS) -> None:
        self.variants = variants
        self.task: Task | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._server: Any = None

    @property
    def workspace(self) -> Path:
        if self._folder is None:
            raise RuntimeError("reset() the environment first")
        return Path(self._folder.name)

    def reset(self, task: str) -> None:
        variant = VARIANT_SETS["train"] + next(_episodes) % self.variants
        self.task = _task_of(task).in_variant(variant)
        self._folder = tempfile.TemporaryDirectory(prefix="mcp-file-ops-episode-")
        build_pristine(self.workspace, variant)
        self._server = build_server(self.workspace)

    def tools(self) -> list[dict[str, Any]]:
        listed = asyncio.run(self._server.list_tools())
        return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                  "parameters": t.inputSchema}} for t in listed]

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        blocks = asyncio.run(self._server.call_tool(name, arguments))
        content = blocks[0] if isinstance(blocks, tuple) else blocks
        return "\n".join(getattr(block, "text", str(block)) for block in content)

    def reward(self, answer: str | None) -> float:
        if self.task is None:
            raise RuntimeError("reset() the environment first")
        passed, _ = self.task.check(self.workspace, answer or "")
        return 1.0 if passed else 0.0
