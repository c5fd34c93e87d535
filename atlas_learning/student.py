"""Every word the student is shown, rendered in one place.

At run time :attr:`SupervisedRun.instructions <atlas_learning.SupervisedRun.instructions>` is
:func:`render_instructions` of the session's injected entries, the reviewed plan, the teacher's concerns and the
pending guidance; the SFT export and the trainer rebuild the same text from the stored rows with the same
functions, so what a model is trained on is what the student saw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FINAL_ANSWER", "clip_text", "render_instructions", "render_guidance", "tool_schema", "model_turn",
           "tool_chat_messages", "tool_step_json"]

#: The action of a tool-calling step that answers instead of calling a tool.
FINAL_ANSWER = "final_answer"
#: How many characters of a tool call's arguments the transcript keeps (tool results: ``max_tool_result_chars``).
_MAX_CALL_CHARS = 300
#: How many characters of a tool's description the system message keeps (its first line only).
_MAX_DESCRIPTION_CHARS = 120


def render_guidance(notes: Sequence[str]) -> str:
    """The teacher's guidance block (answer or step guidance, check failures); '' without any."""
    notes = [n for n in notes if n]
    return "Teacher guidance:\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def render_instructions(entries: Sequence[Any] = (), plan: Sequence[str] = (), concerns: Sequence[str] = (),
                        guidance: Sequence[str] = (), *, playbook_text: str | None = None) -> str:
    """What is added to the student's instructions: the playbook block (lessons, then worked examples), the plan to
    follow, what to watch out for, the teacher's guidance; '' when there is nothing. ``playbook_text`` is the
    entries' block already rendered (by ``render_playbook``), for a caller that renders it once."""
    from .playbook import render_playbook

    parts = [playbook_text if playbook_text is not None else render_playbook(list(entries))]
    if plan:
        parts.append("Plan to follow:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(plan)))
    if concerns:
        parts.append("Watch out for:\n" + "\n".join(f"- {c}" for c in concerns))
    parts.append(render_guidance(guidance))
    return "\n\n".join(p for p in parts if p)


def tool_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool the student was offered, in the OpenAI / TRL tool-calling layout
    ``{"type": "function", "function": {"name", "description", "parameters"}}``: from that layout or from a bare
    ``{"name", "description", "parameters"}`` (integrations convert their framework's tool objects first)."""
    if not isinstance(tool, Mapping):
        raise TypeError(f"a tool schema is a mapping with name, description and parameters, not {type(tool).__name__}; "
                        "convert the framework's tool first")
    function = tool.get("function") if tool.get("type") == "function" else tool
    if not isinstance(function, Mapping) or not function.get("name"):
        raise ValueError(f"a tool schema needs a name: got keys {sorted(tool)}")
    parameters = function.get("parameters")
    return {"type": "function", "function": {
        "name": str(function["name"]), "description": str(function.get("description") or ""),
        "parameters": dict(parameters) if isinstance(parameters, Mapping) else {"type": "object", "properties": {}}}}


def model_turn(output: Any) -> Any:
    """What a student model call produced, as the core stores it: its text, or, when it asked for tools,
    ``{"content": text, "tool_calls": [{"name", "arguments"}]}`` (arguments as given, ``args`` read as
    ``arguments``; an item without a name, such as a framework's own output item, kept as it is). A message mapping without tool calls (``{"role": "ai", "content": ...}``) is its text; any
    other value is returned unchanged."""
    if not isinstance(output, Mapping):
        return output
    calls = output.get("tool_calls")
    content = output.get("content")
    text = content if isinstance(content, str) else "" if content is None else None
    if isinstance(calls, Sequence) and not isinstance(calls, str) and calls and text is not None:
        turn = []
        for call in calls:
            if not isinstance(call, Mapping):
                return output
            function = call.get("function") if isinstance(call.get("function"), Mapping) else call
            if not function.get("name"):  # an item that is not a call (a framework's own output item): as it is
                turn.append(dict(call))
                continue
            turn.append({"name": function.get("name"), "arguments": function.get("arguments", function.get("args"))})
        return {"content": text, "tool_calls": turn}
    if text is not None and not calls and set(output) <= {"role", "content", "tool_calls"} and output.get("role", "ai") in ("ai", "assistant"):
        return text
    return output


# ---------------------------------------------------------------------------- tool calling by structured output
def tool_chat_messages(messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] = (),
                       tool_choice: str = "auto", max_tool_result_chars: int = 2000) -> list[dict[str, str]]:
    """A tool-calling conversation as plain ``{"role", "content"}`` messages, for a model that calls tools by
    structured output (the embedded model and every model served by the ``local`` provider): what
    ``AtlasChatModel`` sends at run time and what student training rebuilds from the messages export, so a trained
    model is served exactly the prompt it learned on.

    ``messages`` are in the OpenAI layout (``system``, ``user``, ``assistant`` with ``tool_calls`` as
    ``{"function": {"name", "arguments"}}`` or ``{"name", "args"}``, ``tool`` with ``name``/``tool_call_id`` and an
    optional ``status: error``). All system text, and the tool list when tools are offered, goes into one leading
    system message; tool calls become ``called read_file({"path": "a.txt"})`` assistant lines and tool results
    ``result of read_file: ...`` user lines, clipped (the model never sees call ids); consecutive messages of one
    role are merged, so the transcript alternates as chat templates expect."""
    system: list[str] = []
    turns: list[dict[str, str]] = []
    names_by_id: dict[str, str] = {}

    def add(role: str, text: str) -> None:
        if not text:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n" + text
        else:
            turns.append({"role": role, "content": text})

    for message in messages:
        role, text = message.get("role"), str(message.get("content") or "").strip()
        if role == "system":
            if text:
                system.append(text)
        elif role == "assistant":
            lines = [text] if text else []
            for call in message.get("tool_calls") or ():
                name, arguments = _call_parts(call)
                if call.get("id"):
                    names_by_id[str(call["id"])] = name
                lines.append(f"called {name}({clip_text(json.dumps(arguments, ensure_ascii=False), _MAX_CALL_CHARS)})")
            add("assistant", "\n".join(lines))
        elif role == "tool":
            name = message.get("name") or names_by_id.get(str(message.get("tool_call_id") or ""), "a tool")
            label = f"error from {name}" if message.get("status") == "error" else f"result of {name}"
            add("user", f"{label}: {clip_text(text, max_tool_result_chars) or '(empty)'}")
        else:
            add("user", text)
    if tools:
        system.append(_tools_prompt(tools, tool_choice))
    result = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    result.extend(turns)
    if not turns:  # a model needs a turn to answer; a bare system prompt becomes the request
        result = [{"role": "user", "content": "\n\n".join(system) or "(no input)"}]
    return result


def tool_step_json(message: Mapping[str, Any]) -> str:
    """An assistant turn as the structured step a model that calls tools by structured output writes:
    ``{"step": {"action": <tool>, "arguments": {...}}}`` for its (first) tool call, else
    ``{"step": {"action": "final_answer", "answer": <text>}}``; laid out as the constrained decoder lays out JSON
    (``", "`` and ``": "`` separators, text as it is)."""
    calls = list(message.get("tool_calls") or ())
    if calls:
        name, arguments = _call_parts(calls[0])
        step: dict[str, Any] = {"action": name, "arguments": arguments}
    else:
        step = {"action": FINAL_ANSWER, "answer": str(message.get("content") or "")}
    return json.dumps({"step": step}, ensure_ascii=False)


def _call_parts(call: Mapping[str, Any]) -> tuple[str, Any]:
    """(name, arguments as an object) of a tool call in the OpenAI layout or LangChain's ``{"name", "args"}``."""
    function = call.get("function") if isinstance(call.get("function"), Mapping) else call
    arguments = function.get("arguments", function.get("args"))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return str(function.get("name") or ""), arguments if arguments is not None else {}


def _tools_prompt(tools: Sequence[Mapping[str, Any]], tool_choice: str) -> str:
    lines = ["Tools:"]
    for spec in tools:
        function = spec["function"]
        params = ", ".join((function.get("parameters") or {}).get("properties") or {})
        description = (function.get("description") or "").strip().splitlines()
        summary = clip_text(description[0], _MAX_DESCRIPTION_CHARS) if description else ""
        lines.append(f"- {function['name']}({params})" + (f": {summary}" if summary else ""))
    if tool_choice == "auto":
        lines.append("Call one tool at a time; give the final answer when you know it.")
    elif tool_choice == "any":
        lines.append("Call one of these tools.")
    else:
        lines.append(f"Call {tool_choice}.")
    return "\n".join(lines)


def clip_text(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, saying how many were cut: how the student's transcript clips."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"
