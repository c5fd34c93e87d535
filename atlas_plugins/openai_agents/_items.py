"""Reading Agents SDK inputs, outputs and items: the task of a run, the text of an answer, JSON-ready values.

Shared by the runner, the tracing processor and ``AtlasModel``; nothing here decides anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from atlas_learning.supervisor import as_text

__all__ = ["task_text", "answer_text", "item_text", "to_jsonable", "clip", "parse_arguments", "chat_messages"]


def _get(item: Any, key: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or its text parts (input_text, output_text, text) joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
                continue
            kind = _get(part, "type")
            if kind in ("input_text", "output_text", "text"):
                parts.append(str(_get(part, "text", "")))
            elif kind == "refusal":
                parts.append(str(_get(part, "refusal", "")))
        return "".join(parts)
    return str(content)


def item_text(item: Any) -> str:
    """The text of one input or output item (a message's text; '' for other items)."""
    if isinstance(item, str):
        return item
    return content_text(_get(item, "content"))


def task_text(input: Any) -> str:
    """The task of a run: the input string, the last user message of an item list, or a RunState's original input."""
    if isinstance(input, str):
        return input
    original = getattr(input, "_original_input", None)  # a RunState being resumed
    if original is not None and not isinstance(input, (list, tuple)):
        return task_text(original)
    if isinstance(input, Sequence):
        for item in reversed(list(input)):
            if _get(item, "role") == "user":
                text = item_text(item)
                if text:
                    return text
        texts = [item_text(item) for item in input]
        joined = "\n".join(t for t in texts if t)
        if joined:
            return joined
    return json.dumps(to_jsonable(input), ensure_ascii=False, default=str)


def answer_text(output: Any) -> str:
    """A run's final output as text: the core's one rendering of answers (strings as they are, models as JSON)."""
    plain = isinstance(output, str) or hasattr(output, "model_dump_json")
    return as_text(output if plain else to_jsonable(output))  # SDK items become JSON-able first


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of a value (pydantic models and dataclasses dumped, the rest as text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_jsonable(dump(exclude_none=True))
        except Exception:  # noqa: BLE001 - a model that cannot dump itself is shown as text
            return str(value)
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            return to_jsonable(dataclasses.asdict(value))
        except Exception:  # noqa: BLE001
            return str(value)
    return str(value)


def clip(value: Any, redactor: Any, limit: int = 4000) -> Any:
    """``value`` as JSON-ready data, redacted by the supervisor's ``redactor``, or its JSON text redacted and then
    cut at ``limit`` characters when longer."""
    return redactor.clip(to_jsonable(value), limit)


def parse_arguments(arguments: Any) -> Any:
    """A tool call's arguments: the JSON string parsed (kept as text when it is not JSON)."""
    if not isinstance(arguments, str):
        return to_jsonable(arguments)
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_messages(system_instructions: str | None, input: Any) -> list[dict[str, str]]:
    """SDK model input as ``{"role", "content"}`` chat messages for a plain chat model.

    Messages keep their role (``developer`` becomes ``system``); a tool call becomes an assistant line naming the
    tool and its arguments, and a tool result a user line, so a model without tool calling still sees the history.
    """
    messages: list[dict[str, str]] = []
    if system_instructions:
        messages.append({"role": "system", "content": system_instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
        return messages
    for item in input or []:
        kind = _get(item, "type")
        role = _get(item, "role")
        if role in _ROLES and kind in (None, "message"):
            text = item_text(item)
            if text:
                messages.append({"role": _ROLES[role], "content": text})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": f"[called {_get(item, 'name')}({_get(item, 'arguments', '')})]"})
        elif kind == "function_call_output":
            messages.append({"role": "user", "content": f"[tool result] {content_text(_get(item, 'output')) or _get(item, 'output')}"})
    if not any(m["role"] == "user" for m in messages):
        messages.append({"role": "user", "content": "Continue."})
    return messages
