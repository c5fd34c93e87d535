"""``provider: anthropic``: Claude through the Anthropic Messages API.

System messages become the ``system`` parameter and consecutive same-role turns are merged. The role's
``temperature`` is not sent: the Messages API version the SDK speaks (2026-10-21) has no sampling parameters.
Structured output uses tool use: one tool whose ``input_schema`` is the JSON schema, forced with ``tool_choice``;
the tool call's input, serialized as JSON, is the answer. The SDK is imported on first use; its clients are built with
``max_retries=0`` so that retries happen once, in :class:`~atlas_learning.models._base.ChatModel`.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ModelError
from ._base import RawCompletion
from ._http import SDKChatModel, sdk_error, system_and_turns, wire_name

__all__ = ["AnthropicModel"]


class AnthropicModel(SDKChatModel):
    """A Claude model behind the Messages API."""

    provider = "anthropic"

    def _new_client(self, api_key: str, *, use_async: bool) -> Any:
        import anthropic

        cls = anthropic.AsyncAnthropic if use_async else anthropic.Anthropic
        return cls(api_key=api_key, base_url=self.settings.base_url, timeout=self.settings.timeout_s, max_retries=0)

    def _body(
        self,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> dict[str, Any]:
        """The ``messages.create`` arguments; with a schema, one tool taking it as input, forced.

        ``temperature`` is not sent: API version 2026-10-21 (the SDK 2.x default) refuses every sampling
        parameter with HTTP 400, and the SDK no longer accepts them.
        """
        system, turns = system_and_turns(messages)
        body: dict[str, Any] = {"model": self.model_name, "messages": turns, "max_tokens": max_tokens}
        if system is not None:
            body["system"] = system
        if json_schema is not None:
            name = wire_name(schema_name)
            body["tools"] = [
                {"name": name, "description": f"Record the answer as a {name} object.", "input_schema": json_schema}
            ]
            body["tool_choice"] = {"type": "tool", "name": name}
        return body

    def _send(self, client: Any, body: dict[str, Any], *, use_async: bool) -> Any:
        return client.messages.create(**body)

    def _completion(self, response: Any, body: dict[str, Any]) -> RawCompletion:
        """The forced tool call's input as JSON text; without a schema (or a tool call), the text blocks."""
        tool_name = body.get("tool_choice", {}).get("name")
        calls = [b for b in response.content if b.type == "tool_use" and b.name == tool_name]
        if calls:
            text = json.dumps(calls[0].input)
        else:
            text = "".join(block.text for block in response.content if block.type == "text")
        usage = response.usage
        return RawCompletion(
            text=text,
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            finish_reason=response.stop_reason,
        )

    def _map_error(self, error: Exception) -> ModelError | None:
        import anthropic

        return sdk_error(error, anthropic, self) if isinstance(error, anthropic.APIError) else None
