"""Every word the student is shown, rendered in one place.

At run time :attr:`SupervisedRun.instructions <atlas_learning.SupervisedRun.instructions>` is
:func:`render_instructions` of the session's injected entries, the reviewed plan, the teacher's concerns and the
pending guidance; the SFT export and the trainer rebuild the same text from the stored rows with the same
functions, so what a model is trained on is what the student saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_instructions", "render_guidance", "tool_schema", "model_turn"]


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
