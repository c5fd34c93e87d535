"""Student training data: the chats the student's own model had, as prompt/completion examples.

The source is the ``messages`` export (:func:`~atlas_learning.export.iter_records`, ``atlas export --format
messages``): what the student's model received and produced in each approved session. That is the system prompt
the core's one renderer made (lessons, plan, guidance), the tool schemas, the tool calls with their results, and
the answers. :func:`student_examples` makes one example per turn of the model: the conversation up to it as the
prompt (with the ``tools``), the turn as the completion. So the loss falls on the model's own outputs only,
whatever its chat template (TRL's prompt-completion format masks the prompt).

A rejected attempt is an answer the conversation goes on after: a text turn of the model's, not its last.
- ``rejected="drop"`` (the default): it is taken out of the conversation. A retry is never shown the rejected answer, only the guidance, which stays as the system message the next call got.
- ``rejected="mask"``: it stays in the later turns' prompts, as the export records it, but is never a completion to learn.

Two layouts (``layout``), by how the trained model will be served:
- ``served`` (the default): as a model that calls tools by structured output is served, the embedded model and
  any checkpoint under ``provider: local`` through ``AtlasChatModel``. The prompt is
  :func:`~atlas_learning.student.tool_chat_messages` of the conversation (the system prompt the call had, the tool
  list in it, earlier calls and results as text lines), the completion the step as JSON
  (:func:`~atlas_learning.student.tool_step_json`): token for token what the served model is sent and writes.
- ``chat``: TRL's conversational tool-calling layout (``tool_calls`` messages, ``tools`` for the chat template),
  for a model served with native tool calling.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import AtlasError
from ..student import tool_step_json

__all__ = ["LAYOUTS", "REJECTED_MODES", "load_student_records", "student_examples"]

REJECTED_MODES = ("mask", "drop")
LAYOUTS = ("served", "chat")


def load_student_records(source: str | Path, *, store_url: str | None = None, review_status: Iterable[str] = ("approved",),
                         learning_key: str | None = None) -> list[dict[str, Any]]:
    """``messages`` records: ``source`` is ``"approved"`` (the store's sessions of these review statuses, through
    the export) or a JSONL written by ``atlas export --format messages``."""
    if str(source) == "approved":
        from ..export import iter_records
        from ..store import SessionFilter, Store

        if not store_url:
            raise AtlasError("--data approved reads the store: set storage.url in atlas.yaml or pass store_url")
        with Store(store_url, create=False) as store:
            where = SessionFilter(review_status=tuple(review_status), learning_key=learning_key, limit=None)
            return list(iter_records(store, format="messages", where=where))
    path = Path(source)
    if not path.is_file():
        raise AtlasError(f"--data {source}: no such file; give a messages JSONL from `atlas export --format messages` or 'approved'")
    from .data import jsonl_rows

    records = []
    for number, record in jsonl_rows(path, "atlas export --format messages"):
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise AtlasError(f"{path}:{number} is not a messages record; the student trains on "
                             "`atlas export --format messages`")
        if learning_key is None or record.get("learning_key") == learning_key:
            records.append(record)
    return records


def _is_answer(message: dict[str, Any]) -> bool:
    return message.get("role") == "assistant" and not message.get("tool_calls")


def student_examples(records: Iterable[dict[str, Any]], *, rejected: str = "drop", layout: str = "served") -> list[dict[str, Any]]:
    """One prompt/completion example per model turn of each record (see the module docs). Each carries ``tools``
    (as JSON text: TRL reads it back, and the schemas of different tools do not share a table layout; ``[]`` in
    the ``served`` layout, whose system message lists them), ``kind`` ``student`` and the session's
    ``session_id``, ``learning_key`` and ``session_reward``."""
    if rejected not in REJECTED_MODES:
        raise AtlasError(f"rejected={rejected!r}: use {' or '.join(REJECTED_MODES)}")
    if layout not in LAYOUTS:
        raise AtlasError(f"student_layout={layout!r}: use {' or '.join(LAYOUTS)}")
    examples: list[dict[str, Any]] = []
    for record in records:
        messages = list(record.get("messages") or [])
        last = len(messages) - 1
        refused = {i for i, m in enumerate(messages) if _is_answer(m) and i != last}
        if rejected == "drop":
            messages = [m for i, m in enumerate(messages) if i not in refused]
            refused = set()
        tools = json.dumps(record.get("tools") or [], ensure_ascii=False)
        for index, message in enumerate(messages):
            if message.get("role") != "assistant" or index in refused or index == 0:
                continue
            prompt, completion, shown_tools = messages[:index], [message], tools
            if layout == "served":
                prompt, completion, shown_tools = _served(prompt, message, record.get("tools") or [])
            examples.append({
                "prompt": prompt, "completion": completion, "tools": shown_tools, "kind": "student",
                "session_id": str(record.get("session_id") or ""), "learning_key": str(record.get("learning_key") or ""),
                "session_reward": record.get("session_reward"), "task": _task_of(messages),
                # what a held-out figure scores a served model's turn against: the step it should write, and the
                # tools the call offered (they shape the constrained step schema)
                "expected_step": tool_step_json(message), "offered_tools": tools,
            })
    return examples


def _served(prompt: list[dict[str, Any]], turn: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
    """The ``served`` layout of one model turn. The call had the last system prompt before it (an earlier one was
    replaced when guidance changed it), with every tool the session offered."""
    from ..student import tool_chat_messages

    last_system = max((i for i, m in enumerate(prompt) if m.get("role") == "system"), default=None)
    shown = [m for i, m in enumerate(prompt) if m.get("role") != "system" or i == last_system]
    return tool_chat_messages(shown, tools=tools), [{"role": "assistant", "content": tool_step_json(turn)}], "[]"


def _task_of(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")
