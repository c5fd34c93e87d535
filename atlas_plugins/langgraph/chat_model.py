"""``AtlasChatModel``: any Atlas :class:`~atlas_learning.models.ChatModel` as a LangChain tool-calling chat model.

>>> from langchain.agents import create_agent
>>> from atlas_learning.config import ModelSettings
>>> from atlas_learning.models import create_model
>>> from atlas_plugins.langgraph import AtlasChatModel
>>> student = AtlasChatModel(create_model(ModelSettings(provider="local"), role="student"))
>>> agent = create_agent(student, tools=[list_files, read_file])
>>> agent.invoke({"messages": [("user", "How many lines does notes.txt have?")]})

Atlas's ``ChatModel`` has no native tool calling; it has structured output (llama.cpp's schema-constrained decoding
for the embedded local model, the providers' native features for cloud models). So tool calling is done by
structure: with tools bound, every call asks for one JSON object that either calls one of the tools with its
arguments or gives the final answer::

    {"step": {"action": "read_file", "arguments": {"path": "notes.txt"}}}
    {"step": {"action": "final_answer", "answer": "It has 3 lines."}}

The schema is a discriminated union (one branch per tool, ``action`` a constant) wrapped in a root object, because
Anthropic's tool input and OpenAI's strict mode both want an object at the root. Each tool's arguments become a
closed object built from its JSON schema with simple field types (str, int, float, bool, lists of those, optional).
For the local model the grammar makes a well-formed call the only possible output; the small model still chooses
which tool and which arguments, and SmolLM2-135M chooses poorly: it tends to call a tool again rather than answer,
which is why a back-to-back repeat of the same call is turned into a request for the answer (``stop_repeated_calls``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import tool_call as make_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field

from atlas_learning.models import ChatModel, ModelResponse
from atlas_learning.student import (
    FINAL_ANSWER,
    MAX_LOCAL_ANSWER_CHARS,
    MAX_LOCAL_ARGUMENT_CHARS,
    repeated_call_note,
    step_model,
    tool_chat_messages,
    tools_key,
)

from ._messages import message_text

__all__ = ["AtlasChatModel", "FINAL_ANSWER", "atlas_messages", "step_model"]


class AtlasChatModel(BaseChatModel):
    """A LangChain chat model that calls an Atlas ``ChatModel``, with tool calling by schema-constrained JSON.

    ``AtlasChatModel(chat_model, max_tokens=None, temperature=None)``: ``None`` uses the chat model's own settings;
    ``max_tool_result_chars`` clips each tool result in the transcript so a small model's context is not blown.

    * Without tools: a plain text call; the answer is the message's content.
    * With tools (:meth:`bind_tools`, as ``create_agent`` does): a structured call (see the module docstring) whose
      output becomes an ``AIMessage`` with one tool call (a fresh ``call_...`` id), or the final answer as its
      content. ``tool_choice``: ``None``/``"auto"`` (a tool or the answer), ``"any"``/``"required"``/``True`` (a
      tool), a tool's name (that tool), ``"none"`` (plain text).
    * Messages become Atlas role/content messages: system messages (and the tool list, one line per tool) go into
      one system message; each earlier assistant turn is the step the model wrote
      (``{"step": {"action": "read_file", "arguments": {"path": "a.txt"}}}``), so every prompt continues the last
      one; tool results become ``result of read_file: ...`` user lines, clipped.
    * A tool call identical to the one the model made last (``stop_repeated_calls``, on by default) is not returned:
      the model is asked once more, with the final answer as its only choice and the question restated. Small models
      at temperature 0 otherwise repeat a call until the agent's recursion limit.
    * For the local model the final answer is at most ``max_answer_chars`` long (enforced by the grammar).
    * Tokens go into ``usage_metadata`` (summed over both calls when a repeat was stopped); ``response_metadata``
      names the model and its Atlas provider.
    * An Atlas ``ModelError`` (an ``InvalidOutputError`` when the output never matched, a ``ProviderError``, ...)
      propagates unchanged: its message says which model failed and why. No error becomes an empty answer.
    * No streaming: ``stream`` yields the whole message as one chunk (BaseChatModel's fallback to ``_generate``).
      ``stop`` sequences cut a plain-text answer after the fact; they are not sent to the model.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    #: The Atlas model that answers (the embedded local model, a scripted model, a cloud provider).
    chat_model: ChatModel
    #: Token limit per call; ``None`` uses the chat model's ``max_tokens``.
    max_tokens: int | None = None
    #: Sampling temperature; ``None`` uses the chat model's ``temperature``.
    temperature: float | None = None
    #: Characters of one tool result kept in the transcript; the rest is replaced by a note saying how much was cut.
    max_tool_result_chars: int = Field(default=2000, gt=0)
    #: When the model repeats, with the same arguments, the tool call it made last (it has the result already:
    #: small models do this at temperature 0 and never stop), ask once more with the final answer as the only
    #: choice. Only with ``tool_choice`` auto; the message's ``response_metadata`` says ``repeated_call_stopped``.
    stop_repeated_calls: bool = True
    #: Longest final answer a model with grammar-constrained decoding (provider ``local``) may write: a JSON-schema
    #: ``maxLength`` that llama.cpp enforces while decoding, so a small model that starts repeating itself inside
    #: the answer stops there, instead of running to ``max_tokens`` and failing validation. Other providers get no
    #: limit (strict structured-output modes may refuse length keywords). ``None``: no limit.
    max_answer_chars: int | None = Field(default=MAX_LOCAL_ANSWER_CHARS, gt=0)
    #: Longest text argument of a tool call under grammar-constrained decoding (provider ``local``): a ``maxLength``
    #: on each, so a small model repeating itself inside an argument (a search pattern, a file's content) closes
    #: the string there instead of running to ``max_tokens`` with the JSON unclosed. ``None``: no limit.
    max_argument_chars: int | None = Field(default=MAX_LOCAL_ARGUMENT_CHARS, gt=0)

    def __init__(self, chat_model: ChatModel, *, max_tokens: int | None = None, temperature: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(chat_model=chat_model, max_tokens=max_tokens, temperature=temperature, **kwargs)

    # ------------------------------------------------------------------------------------ identification
    @property
    def _llm_type(self) -> str:
        return "atlas"

    @property
    def provider(self) -> str:
        """The Atlas provider behind this model (``local``, ``scripted``, ``openai``, ...)."""
        return str(getattr(self.chat_model, "provider", "atlas"))

    @property
    def model_name(self) -> str:
        """The Atlas model's name (``smollm2``, ``gpt-4.1-mini``, ...)."""
        return str(getattr(self.chat_model, "model_name", "") or type(self.chat_model).__name__)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"provider": self.provider, "model_name": self.model_name, "max_tokens": self.max_tokens,
                "temperature": self.temperature}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider=self.provider, ls_model_name=self.model_name, ls_model_type="chat")
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if temperature is not None:
            params["ls_temperature"] = temperature
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop:
            params["ls_stop"] = stop
        return params

    # ---------------------------------------------------------------------------------------- tools
    def bind_tools(
        self,
        tools: Sequence[Mapping[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` offered on every call (a bound copy; this model is unchanged).

        Tools are anything ``convert_to_openai_tool`` accepts (``@tool`` functions, MCP tools, pydantic classes,
        OpenAI tool dicts). Other keyword arguments (``temperature``, ``max_tokens``) are bound too; ones this model
        has no use for (``strict``, ``parallel_tool_calls``) are accepted and ignored.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        for spec in formatted:
            if spec.get("type") != "function" or "function" not in spec:
                raise ValueError(f"AtlasChatModel can only call function tools, not {spec.get('type')!r}")
        names = [spec["function"]["name"] for spec in formatted]
        if FINAL_ANSWER in names:
            raise ValueError(f"a tool may not be named {FINAL_ANSWER!r}: that action gives the final answer")
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        choice = _normalize_choice(tool_choice, names)
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)

    # ------------------------------------------------------------------------------------- generation
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._prepare(messages, kwargs)
        responses = [self.chat_model.generate(request.prompt, output_type=request.output_type, **request.params)]
        retry = self._repeat_retry(request, responses[0], messages)
        if retry is not None:
            responses.append(self.chat_model.generate(retry.prompt, output_type=retry.output_type, **retry.params))
        return self._result(responses, stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._prepare(messages, kwargs)
        responses = [await self.chat_model.agenerate(request.prompt, output_type=request.output_type, **request.params)]
        retry = self._repeat_retry(request, responses[0], messages)
        if retry is not None:
            responses.append(await self.chat_model.agenerate(retry.prompt, output_type=retry.output_type, **retry.params))
        return self._result(responses, stop)

    def _prepare(self, messages: Sequence[BaseMessage], kwargs: Mapping[str, Any]) -> _Request:
        """The Atlas messages, the output type (None for plain text) and the call's parameters."""
        tools: list[dict[str, Any]] = list(kwargs.get("tools") or [])
        choice = kwargs.get("tool_choice") or "auto"
        if choice == "none":
            tools = []
        output_type = step_model(tools_key(tools), choice, *self._limits()) if tools else None
        prompt = atlas_messages(messages, tools=tools, tool_choice=choice,
                                max_tool_result_chars=self.max_tool_result_chars)
        params = {"temperature": kwargs.get("temperature", self.temperature),
                  "max_tokens": kwargs.get("max_tokens", self.max_tokens)}
        return _Request(prompt, output_type, params, tools, choice)

    def _repeat_retry(self, request: _Request, response: ModelResponse[Any],
                      messages: Sequence[BaseMessage]) -> _Request | None:
        """With ``stop_repeated_calls``, the request for the final answer when the model just repeated the call it
        made last (same tool, same arguments: its result is already in the transcript); else None."""
        if not self.stop_repeated_calls or request.tool_choice != "auto" or response.output is None:
            return None
        step = response.output.step
        if step.action == FINAL_ANSWER:
            return None
        previous = next((m for m in reversed(messages) if m.type == "ai"), None)
        args = step.arguments.model_dump(by_alias=True, exclude_none=True)
        calls = getattr(previous, "tool_calls", None) or []
        if not any(call["name"] == step.action and (call.get("args") or {}) == args for call in calls):
            return None
        note = repeated_call_note(step.action, next((message_text(m).strip() for m in reversed(messages) if m.type == "human"), ""))
        prompt = [dict(m) for m in request.prompt]
        if prompt[-1]["role"] == "user":  # appended, so a prompt cache still holds everything before it
            prompt[-1]["content"] += "\n\n" + note
        else:
            prompt.append({"role": "user", "content": note})
        return _Request(prompt, step_model(tools_key(request.tools), FINAL_ANSWER, *self._limits()),
                        request.params, request.tools, FINAL_ANSWER)

    def _limits(self) -> tuple[int | None, int | None]:
        """``max_answer_chars`` and ``max_argument_chars`` for a model whose decoding follows the schema's length
        keywords, else no limits."""
        return (self.max_answer_chars, self.max_argument_chars) if self.provider == "local" else (None, None)

    def _result(self, responses: Sequence[ModelResponse[Any]], stop: list[str] | None) -> ChatResult:
        """One AIMessage from the last response; usage and attempts summed over all of them."""
        response = responses[-1]
        usage = functools.reduce(lambda total, r: total + r.usage, responses[1:], responses[0].usage)
        metadata = {
            "model_name": response.model,
            # "atlas", not the Atlas provider: LangChain reads ``model_provider`` to pick a provider-specific
            # translator of the content, and this content is never in an OpenAI or Anthropic wire format.
            "model_provider": "atlas",
            "atlas_provider": response.provider,
            "atlas_role": response.role,
            "attempts": sum(r.attempts for r in responses),
            "latency_s": round(sum(r.latency_s for r in responses), 3),
        }
        if len(responses) > 1:
            metadata["repeated_call_stopped"] = True
        usage_metadata = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                          "total_tokens": usage.total_tokens}
        if response.output is None:
            content, tool_calls = _cut_at_stop(response.text.strip(), stop), []
        else:
            step = response.output.step
            if step.action == FINAL_ANSWER:
                content, tool_calls = step.answer, []
            else:
                args = step.arguments.model_dump(by_alias=True, exclude_none=True)
                content = ""
                tool_calls = [make_tool_call(name=step.action, args=args, id=f"call_{uuid.uuid4().hex[:24]}")]
        message = AIMessage(content=content, tool_calls=tool_calls, response_metadata=metadata,
                            usage_metadata=usage_metadata)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"model_name": response.model})


@dataclass(frozen=True)
class _Request:
    """One Atlas call: messages, output type (None: plain text), parameters, and the tools and choice behind them."""

    prompt: list[dict[str, str]]
    output_type: type[BaseModel] | None
    params: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: str


# ----------------------------------------------------------------------------------------- messages
def atlas_messages(
    messages: Sequence[BaseMessage],
    *,
    tools: Sequence[Mapping[str, Any]] = (),
    tool_choice: str = "auto",
    max_tool_result_chars: int = 2000,
) -> list[dict[str, str]]:
    """LangChain messages as Atlas ``{"role", "content"}`` messages: translated to the OpenAI layout, then
    rendered by the core's :func:`~atlas_learning.student.tool_chat_messages` (the renderer student training uses,
    so a trained model is served the prompt it learned on)."""
    return tool_chat_messages([_openai_message(m) for m in messages], tools=tools, tool_choice=tool_choice,
                              max_tool_result_chars=max_tool_result_chars)


def _openai_message(message: BaseMessage) -> dict[str, Any]:
    kind, text = message.type, message_text(message)
    if kind == "system":
        return {"role": "system", "content": text}
    if kind == "ai":
        return {"role": "assistant", "content": text, "tool_calls": [
            {"id": call.get("id"), "name": call["name"], "args": call.get("args") or {}} for call in getattr(message, "tool_calls", None) or []]}
    if kind == "tool":
        tool_message: Any = message
        return {"role": "tool", "content": text, "name": getattr(tool_message, "name", None),
                "tool_call_id": tool_message.tool_call_id, "status": getattr(tool_message, "status", "success")}
    if kind == "chat" and getattr(message, "role", "") in ("system", "assistant"):
        return {"role": message.role, "content": text}  # type: ignore[attr-defined]
    return {"role": "user", "content": text}  # human, chat with another role, function messages


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    for sequence in stop or ():
        if sequence and sequence in text:
            text = text[: text.index(sequence)]
    return text


# ------------------------------------------------------------------------------------- output schema
def _normalize_choice(tool_choice: str | bool | Mapping[str, Any] | None, names: Sequence[str]) -> str:
    """``auto``, ``any``, ``none`` or the name of the one tool to call."""
    if tool_choice is None or tool_choice == "auto" or tool_choice is False:
        return "auto"
    if tool_choice is True or tool_choice in ("any", "required"):
        return "any"
    if tool_choice == "none":
        return "none"
    if isinstance(tool_choice, Mapping):  # {"type": "function", "function": {"name": ...}} or {"name": ...}
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    else:
        name = tool_choice
    if name not in names:
        raise ValueError(f"tool_choice {tool_choice!r} names no bound tool; tools: {', '.join(names)}")
    return str(name)


