"""Reading LangChain messages and results: the text of a message, the task and answer of a conversation, usage.

Shared by ``with_atlas`` and ``AtlasMiddleware``; nothing here decides anything.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "INSTRUCTIONS_ID",
    "instructions_message",
    "message_text",
    "last_text",
    "usage_of",
    "model_name_of",
    "state_get",
    "to_jsonable",
    "model_turn_of",
    "system_text",
    "tool_schemas",
]

#: The id of the system message that carries Atlas's instructions into a node's input; never written to state.
INSTRUCTIONS_ID = "atlas-instructions"


def message_text(message: Any) -> str:
    """The text of a message: its string content, or its text blocks joined."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    return str(content)


def last_text(messages: Sequence[Any], message_type: str) -> str:
    """The text of the last message of a type (``human``, ``ai``); empty when there is none."""
    for message in reversed(messages or ()):
        if getattr(message, "type", None) == message_type:
            text = message_text(message)
            if text or message_type != "ai":
                return text
    return ""


def instructions_message(text: str) -> Any:
    from langchain_core.messages import SystemMessage

    return SystemMessage(content=text, id=INSTRUCTIONS_ID)


def usage_of(message: Any) -> tuple[int, int]:
    """(input tokens, output tokens) a chat model reported for a message, (0, 0) when it did not."""
    usage = getattr(message, "usage_metadata", None) or {}
    if usage:
        return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    metadata = getattr(message, "response_metadata", None) or {}
    tokens = metadata.get("token_usage") or metadata.get("usage") or {}
    return int(tokens.get("prompt_tokens") or tokens.get("input_tokens") or 0), int(tokens.get("completion_tokens") or tokens.get("output_tokens") or 0)


def model_name_of(metadata: Mapping[str, Any] | None, serialized: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """(provider, model) of a chat model run, from LangChain's ``ls_*`` metadata or its serialized kwargs."""
    metadata = metadata or {}
    kwargs = (serialized or {}).get("kwargs", {}) if isinstance(serialized, Mapping) else {}
    model = metadata.get("ls_model_name") or kwargs.get("model_name") or kwargs.get("model") or ""
    if not model and isinstance(serialized, Mapping):
        model = (serialized.get("id") or [""])[-1] if isinstance(serialized.get("id"), list) else serialized.get("name", "")
    return str(metadata.get("ls_provider") or ""), str(model)


def state_get(state: Any, key: str, default: Any = None) -> Any:
    """A key of a graph state, whether the state is a dict, a pydantic model or a dataclass."""
    if isinstance(state, Mapping):
        return state.get(key, default)
    return getattr(state, key, default)


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of a state or update (messages become role/content pairs); for prompts and traces."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "type") and hasattr(value, "content"):
        data: dict[str, Any] = {"role": value.type, "content": message_text(value)}
        if getattr(value, "tool_calls", None):
            data["tool_calls"] = [{"name": c.get("name"), "args": c.get("args")} for c in value.tool_calls]
        return data
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_jsonable(dump())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def model_turn_of(message: Any) -> Any:
    """What a chat model produced, in the core's layout: its text, or ``{"content", "tool_calls"}``."""
    if message is None:
        return None
    text = message_text(message)
    calls = getattr(message, "tool_calls", None)
    if not calls:
        return text
    return {"content": text, "tool_calls": [{"name": c.get("name"), "arguments": c.get("args")} for c in calls]}


def system_text(messages: Sequence[Any]) -> str | None:
    """The system prompt a chat model was sent: the text of the system messages of its input, joined; None
    without any."""
    texts = [message_text(m) for m in messages or () if getattr(m, "type", None) == "system"]
    return "\n\n".join(texts) if texts else None


def tool_schemas(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """The tools a chat model was offered (LangChain tools, functions, or provider dicts) in the OpenAI tool
    layout; None when it was offered none (a tool LangChain cannot convert is left out)."""
    if not tools:
        return None
    from langchain_core.utils.function_calling import convert_to_openai_tool

    schemas = []
    for tool in tools:
        cached = _converted.get(id(tool)) if not isinstance(tool, Mapping) else None
        if cached is not None and cached[0] is tool:
            schema = cached[1]
        else:
            try:
                schema = convert_to_openai_tool(tool)
            except Exception:  # noqa: BLE001 - a provider's built-in tool (web search...) has no function schema
                schema = None
            if not isinstance(tool, Mapping):  # a tool object's schema is made once; a dict may change between calls
                if len(_converted) >= _CONVERTED_MAX:
                    _converted.clear()  # many short-lived tools (made per call): start again
                _converted[id(tool)] = (tool, schema)
        if isinstance(schema, Mapping) and schema.get("type") == "function":
            schemas.append(copy.deepcopy(dict(schema)))  # the caller's own: the cached one never changes
    return schemas or None


#: Tool objects' converted schemas by id (the object is kept with it, so an id is never reused while cached):
#: every model call offers the same tools, and converting one runs pydantic's schema generation.
_converted: dict[int, tuple[Any, Any]] = {}
_CONVERTED_MAX = 512
