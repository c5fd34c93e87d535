"""Agents SDK models that Atlas provides.

* :class:`AtlasModel`: an ``agents.Model`` backed by any Atlas :class:`~atlas_learning.models.ChatModel` (the
  embedded local SmolLM2, a scripted model, or a cloud provider through Atlas's own client). Text in, text out.
* ``AnswerModel`` (private): answers once with a fixed text; when the core's start hands back an answer (escalate),
  the runner runs the agent on it so the caller gets the SDK's own ``RunResult`` whose ``final_output`` is the
  teacher's (or the human's) answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse, Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)

from ._items import chat_messages

__all__ = ["AtlasModel", "AnswerModel"]


def _message(text: str, item_id: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(id=item_id, type="message", role="assistant", status="completed",
                                 content=[ResponseOutputText(type="output_text", text=text, annotations=[])])


def _usage(input_tokens: int, output_tokens: int, requests: int = 1) -> Usage:
    return Usage(requests=requests, input_tokens=input_tokens, output_tokens=output_tokens,
                 total_tokens=input_tokens + output_tokens)


def _completed(response: ModelResponse, model_name: str) -> ResponseCompletedEvent:
    """The one event a stream needs: ``response.completed`` carrying the whole response."""
    usage = response.usage
    return ResponseCompletedEvent(
        type="response.completed",
        sequence_number=0,
        response=Response(
            id=response.response_id or f"resp_{uuid.uuid4().hex}",
            created_at=time.time(),
            model=model_name,
            object="response",
            output=list(response.output),
            parallel_tool_calls=False,
            tool_choice="auto",
            tools=[],
            usage=ResponseUsage.model_validate({
                "input_tokens": usage.input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }),
        ),
    )


class AtlasModel(Model):
    """An Agents SDK model that calls an Atlas ``ChatModel``.

    >>> from atlas_learning.config import ModelSettings
    >>> from atlas_learning.models import create_model
    >>> agent = Agent(name="helper", instructions="Answer briefly.",
    ...               model=AtlasModel(create_model(ModelSettings(provider="local"), role="student")))

    The model gets the agent's instructions as a system message and the conversation as chat messages (earlier
    tool calls and results as plain lines). It answers in text: Atlas's ``ChatModel`` has no tool calling, so the
    agent's tools and handoffs are not offered to it. When the agent has an ``output_type``, the JSON schema is
    added to the system message and the text must parse as that type (the SDK validates it). ``temperature`` and
    ``max_tokens`` come from the agent's ``ModelSettings`` when set, else from the chat model's own settings.
    Tokens are reported in ``ModelResponse.usage``, so hooks and Atlas record them.
    """

    def __init__(self, chat_model: Any) -> None:
        self.chat_model = chat_model
        #: What Atlas records as the model call's provider and model (``local`` / ``smollm2``, say).
        self.provider = str(getattr(chat_model, "provider", "atlas"))
        self.model = str(getattr(chat_model, "model_name", "") or type(chat_model).__name__)

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any],
                           output_schema: Any, handoffs: list[Any], tracing: Any, *, previous_response_id: str | None = None,
                           conversation_id: str | None = None, prompt: Any = None) -> ModelResponse:
        instructions = system_instructions
        if output_schema is not None and not output_schema.is_plain_text():
            import json

            schema = json.dumps(output_schema.json_schema(), separators=(",", ":"))
            instructions = f"{instructions or ''}\n\nAnswer with only a JSON object matching this schema: {schema}".strip()
        response = await self.chat_model.agenerate(
            chat_messages(instructions, input),
            temperature=getattr(model_settings, "temperature", None),
            max_tokens=getattr(model_settings, "max_tokens", None),
        )
        return ModelResponse(output=[_message(response.text.strip(), f"msg_{uuid.uuid4().hex}")],
                             usage=_usage(response.usage.input_tokens, response.usage.output_tokens, max(response.attempts, 1)),
                             response_id=None)

    async def stream_response(self, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any],
                              output_schema: Any, handoffs: list[Any], tracing: Any, *, previous_response_id: str | None = None,
                              conversation_id: str | None = None, prompt: Any = None) -> AsyncIterator[Any]:
        """The whole answer as one ``response.completed`` event (the chat model does not stream)."""
        response = await self.get_response(system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                                           previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt)
        yield _completed(response, self.model)


class AnswerModel(Model):
    """Answers every call with one fixed text: the core's start answer, as the agent's final output."""

    def __init__(self, text: str, source: str = "teacher") -> None:
        self.text = text
        self.provider = "atlas"
        self.model = f"atlas-{source}"

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any],
                           output_schema: Any, handoffs: list[Any], tracing: Any, *, previous_response_id: str | None = None,
                           conversation_id: str | None = None, prompt: Any = None) -> ModelResponse:
        return ModelResponse(output=[_message(self.text, "msg_atlas_escalation")], usage=_usage(0, 0, 0), response_id=None)

    async def stream_response(self, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any],
                              output_schema: Any, handoffs: list[Any], tracing: Any, *, previous_response_id: str | None = None,
                              conversation_id: str | None = None, prompt: Any = None) -> AsyncIterator[Any]:
        response = await self.get_response(system_instructions, input, model_settings, tools, output_schema, handoffs, tracing)
        yield _completed(response, self.model)
