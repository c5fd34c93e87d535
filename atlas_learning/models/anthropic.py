"""``provider: anthropic``: Claude through the Anthropic Messages API.

System messages become the ``system`` parameter and consecutive same-role turns are merged. The role's
``temperature`` is not sent: the Messages API version the SDK speaks (2026-10-21) has no sampling parameters.
Structured output uses the native ``output_config.format`` (a JSON schema; the answer is the text), except for
the models the catalog marks as older than it. A model that answers 400 to ``output_config`` gets the request once
more with tool use instead - one tool whose ``input_schema`` is the schema, forced with ``tool_choice``, the tool
call's input being the answer - and tool use from then on in the process. (Anthropic documents that forced
``tool_choice`` is refused by its newest models and by extended thinking, so native comes first.)
A role's ``reasoning_effort`` is sent as ``output_config.effort``. The SDK is imported on first use; its clients are built with
``max_retries=0`` so that retries happen once, in :class:`~atlas_learning.models._base.ChatModel`.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ModelError
from ._base import RawCompletion
from ._http import SDKChatModel, sdk_error, system_and_turns, wire_name
from .catalog import facts_for
from .openai import strict_json_schema

#: The values ``output_config.effort`` takes (SDK 2.16).
_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})

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
        output_config: dict[str, Any] = {}
        if self.settings.reasoning_effort in _EFFORTS and "effort" not in self._refused_here():
            output_config["effort"] = self.settings.reasoning_effort
        if json_schema is not None:
            if facts_for("anthropic", self.model_name).structured == "output_format" and "output_config" not in self._refused_here():
                output_config["format"] = {"type": "json_schema", "schema": strict_json_schema(json_schema) or json_schema}
            else:
                name = wire_name(schema_name)
                body["tools"] = [
                    {"name": name, "description": f"Record the answer as a {name} object.", "input_schema": json_schema}
                ]
                body["tool_choice"] = {"type": "tool", "name": name}
        if output_config:
            body["output_config"] = output_config
        if self.settings.thinking_budget_tokens and "tool_choice" not in body:  # forced tool use refuses thinking
            body["thinking"] = {"type": "enabled", "budget_tokens": self.settings.thinking_budget_tokens}
        return body

    def _adapt(self, body: dict[str, Any], error: ModelError) -> bool:
        text = str(error).lower()
        if "output_config" not in body or not ("output_config" in text or "output format" in text or "effort" in text):
            return False
        return self._remember_refused("effort" if "effort" in text and "format" not in text else "output_config")

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
        cached = (getattr(usage, "cache_read_input_tokens", None) or 0) if usage else 0
        written = (getattr(usage, "cache_creation_input_tokens", None) or 0) if usage else 0
        return RawCompletion(
            text=text,
            # Anthropic counts cache reads and writes apart from input_tokens; here they are part of it
            input_tokens=((usage.input_tokens or 0) + cached + written) if usage else 0,
            output_tokens=(usage.output_tokens or 0) if usage else 0,
            finish_reason=response.stop_reason,
            cached_input_tokens=cached,
            cache_write_tokens=written,
            usage_reported=usage is not None,
            truncated=response.stop_reason == "max_tokens" and not calls,
            refusal="refusal (Claude declined to answer)" if response.stop_reason == "refusal" else None,
        )

    def _map_error(self, error: Exception) -> ModelError | None:
        import anthropic

        return sdk_error(error, anthropic, self) if isinstance(error, anthropic.APIError) else None
