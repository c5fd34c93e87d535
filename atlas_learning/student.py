"""Every word the student is shown, rendered in one place.

At run time :attr:`SupervisedRun.instructions <atlas_learning.SupervisedRun.instructions>` is
:func:`render_instructions` of the session's injected entries, the reviewed plan, the teacher's concerns and the
pending guidance; the SFT export and the trainer rebuild the same text from the stored rows with the same
functions, so what a model is trained on is what the student saw.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

__all__ = ["FINAL_ANSWER", "MAX_LOCAL_ANSWER_CHARS", "MAX_LOCAL_ARGUMENT_CHARS", "clip_text", "render_instructions", "render_guidance", "tool_schema",
           "model_turn", "repeated_call_note", "step_model", "tool_chat_messages", "tool_step_json", "tools_key"]

#: The action of a tool-calling step that answers instead of calling a tool.
FINAL_ANSWER = "final_answer"
#: How many characters of a tool's description the system message keeps (its first line only).
_MAX_DESCRIPTION_CHARS = 120
#: Longest final answer a grammar-constrained model (provider ``local``) is let write: the answer's ``maxLength``.
MAX_LOCAL_ANSWER_CHARS = 400
#: Longest text argument of a tool call a grammar-constrained model is let write (a ``maxLength`` on each).
MAX_LOCAL_ARGUMENT_CHARS = 400


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
    system message; an assistant turn is the step it wrote, as :func:`tool_step_json` lays it out (one line per
    tool call, a final answer as its ``final_answer`` step), and tool results are ``result of read_file: ...`` user
    lines, clipped (the model never sees call ids); consecutive messages of one role are merged, so the transcript
    alternates as chat templates expect.

    So the rendering is prefix-stable: the prompt of a conversation's next turn begins with the previous prompt
    followed by what the model wrote, token for token under a chat template that renders each message on its own
    (ChatML and the like), for as long as the system prompt stays the same (guidance that changes it mid-session
    begins a new sequence). A multi-turn episode is one sequence, which is what on-policy training of the student
    (GRPO with tool rollouts) learns on."""
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
            calls = list(message.get("tool_calls") or ())
            for call in calls:
                if call.get("id"):
                    names_by_id[str(call["id"])] = _call_parts(call)[0]
            # Text beside calls came from a model that writes both (not a structured-output one): kept before them.
            lines = [text] if text and calls else []
            lines += [tool_step_json({"tool_calls": [call]}) for call in calls] or [tool_step_json({"content": text})]
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


def repeated_call_note(action: str, question: str) -> str:
    """What a model that repeated its last tool call (same tool, same arguments: it has the result) is told when it
    is asked once more, with the final answer as its only choice; ``question`` is the user's last request."""
    question = clip_text(question, 500)
    return f"You already have the result of {action}. " + (f"Now answer: {question}" if question else "Give the final answer now.")


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


# ------------------------------------------------------------------------------------- the step schema
# What a model that calls tools by structured output writes: ``{"step": <one tool call | the final answer>}``. The
# adapters serve it (AtlasChatModel) and the trainer scores a served student with it, from this one definition.
def tools_key(tools: Sequence[Mapping[str, Any]]) -> str:
    """The part of the tools that shapes the output schema, as a string (the cache key of :func:`step_model`)."""
    return json.dumps([[t["function"]["name"], t["function"].get("parameters") or {}] for t in tools])


class _Step(BaseModel):
    """The root of every step schema: ``{"step": <a tool call or the final answer>}``."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _wrap_bare_step(cls, data: Any) -> Any:
        """Accept the branch object itself (``{"action": ...}``), as a model without native structure may send."""
        if isinstance(data, dict) and "action" in data and "step" not in data:
            return {"step": data}
        return data


_CLOSED = ConfigDict(extra="forbid")


@functools.lru_cache(maxsize=64)
def step_model(tools_key: str, tool_choice: str = "auto", max_answer_chars: int | None = None,
               max_argument_chars: int | None = None) -> type[BaseModel]:
    """The output type of a call offering these tools: ``{"step": call of one tool | final answer}``.

    ``tools_key`` is :func:`tools_key` of OpenAI-format tools; ``tool_choice`` is ``auto`` (tools and the final
    answer), ``any`` (tools only), one tool's name, or ``final_answer`` (the answer only). ``max_answer_chars`` adds
    ``minLength``/``maxLength`` to the answer's schema, ``max_argument_chars`` a ``maxLength`` to every text
    argument's (for grammar-constrained decoding, where a small model that starts repeating itself inside a string
    would otherwise run to its token limit and leave the JSON unclosed; not validated). Every model rejects a blank
    answer on validation. Built once per tool set, choice and limits.
    """
    tools: list[tuple[str, dict[str, Any]]] = [(name, params) for name, params in json.loads(tools_key)]
    if tool_choice not in ("auto", "any"):  # one tool, or FINAL_ANSWER: no tool
        tools = [(name, params) for name, params in tools if name == tool_choice]
    branches: list[type[BaseModel]] = []
    for index, (name, params) in enumerate(tools):
        title = f"Call{index}_{_identifier(name)}"
        arguments = _arguments_model(f"{title}_Arguments", params, max_argument_chars)
        branches.append(create_model(title, __config__=_CLOSED, action=(Literal[name], ...),  # type: ignore[call-overload]
                                     arguments=(arguments, ...)))
    if tool_choice in ("auto", FINAL_ANSWER):
        limits = {"minLength": 1, "maxLength": max_answer_chars} if max_answer_chars else None
        answer = Annotated[str, AfterValidator(_not_blank), Field(json_schema_extra=limits)]
        branches.append(create_model("FinalAnswer", __config__=_CLOSED, action=(Literal[FINAL_ANSWER], ...),  # type: ignore[call-overload]
                                     answer=(answer, ...)))
    if not branches:
        raise ValueError("a step needs at least one tool or the final answer")
    step_type: Any = branches[0] if len(branches) == 1 else Annotated[Union[tuple(branches)],  # noqa: UP007
                                                                       Field(discriminator="action")]
    return create_model("ToolCallOrAnswer", __base__=_Step, step=(step_type, ...))


def _not_blank(answer: str) -> str:
    if not answer.strip():
        raise ValueError("the final answer is empty")
    return answer


def _arguments_model(title: str, parameters: Mapping[str, Any], max_chars: int | None = None) -> type[BaseModel]:
    """A closed pydantic model of a tool's arguments. Fields are named ``a0, a1, ...`` with the real names as
    aliases, so any argument name works (``schema``, ``from``, names with dashes)."""
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    fields: dict[str, Any] = {}
    for index, (name, prop) in enumerate(properties.items()):
        annotation, nullable = _field_type(prop if isinstance(prop, Mapping) else {})
        if annotation is str and max_chars:
            annotation = Annotated[str, Field(json_schema_extra={"maxLength": max_chars})]
        if name in required and not nullable:
            fields[f"a{index}"] = (annotation, Field(alias=name))
        elif name in required:
            fields[f"a{index}"] = (annotation | None, Field(alias=name))
        else:
            fields[f"a{index}"] = (annotation | None, Field(default=None, alias=name))
    return create_model(title, __config__=ConfigDict(extra="forbid", populate_by_name=True), **fields)


_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _field_type(prop: Mapping[str, Any]) -> tuple[Any, bool]:
    """(python type, nullable) for one JSON-schema property, kept simple: scalars, enums of strings, lists of
    scalars, free objects; anything else is a string."""
    variants = prop.get("anyOf") or prop.get("oneOf")
    if variants:
        nullable = any(isinstance(v, Mapping) and v.get("type") == "null" for v in variants)
        rest = [v for v in variants if isinstance(v, Mapping) and v.get("type") != "null"]
        annotation, inner_nullable = _field_type(rest[0]) if len(rest) == 1 else (str, False)
        return annotation, nullable or inner_nullable
    enum = prop.get("enum")
    if enum and all(isinstance(value, str) for value in enum):
        return Literal[tuple(enum)], False  # type: ignore[return-value]
    kind = prop.get("type")
    nullable = False
    if isinstance(kind, list):
        nullable = "null" in kind
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind in _SCALARS:
        return _SCALARS[kind], nullable
    if kind == "array":
        items = prop.get("items") if isinstance(prop.get("items"), Mapping) else {}
        item_kind = items.get("type")
        return list[_SCALARS.get(item_kind, str) if isinstance(item_kind, str) else str], nullable  # type: ignore[misc]
    if kind == "object":
        return dict[str, Any], nullable
    return str, nullable


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name) or "tool"
