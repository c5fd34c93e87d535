"""``provider: openai``: the OpenAI Chat Completions API, and any server that speaks it (vLLM, Ollama, llama.cpp).

Structured output uses the native ``response_format={"type": "json_schema", ...}``, strict when the schema can be
made strict (:func:`strict_json_schema`), else non-strict. The SDK is imported on first use, and its clients are
built with ``max_retries=0``: :class:`~atlas_learning.models._base.ChatModel` does the retrying.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ModelError, ProviderError
from ._base import RawCompletion
from ._http import SDKChatModel, sdk_error, wire_name

__all__ = ["OpenAIModel", "strict_json_schema"]

#: JSON-schema keywords strict structured outputs reject; a schema using one is sent non-strict.
_NOT_STRICT_KEYWORDS = frozenset(
    {
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "minProperties",
        "maxProperties",
        "prefixItems",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
    }
)


class _NotStrict(Exception):
    """The schema has no strict equivalent."""


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``schema`` that OpenAI's strict mode accepts, or None when it has no strict equivalent.

    Strict mode wants every object closed (``additionalProperties: false``) with every property required, so
    optional fields become required (nullable ones stay nullable: the model sends ``null``). ``$defs`` are kept
    and made strict too; a ``$ref`` with sibling keywords, which strict mode refuses, is inlined. Free-form
    objects and ``dict[str, X]`` have no strict form.
    """
    root = copy.deepcopy(schema)
    try:
        strict = _make_strict(root, root)
    except _NotStrict:
        return None
    return strict if strict.get("type") == "object" else None


def _make_strict(node: Any, root: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(node, dict) or _NOT_STRICT_KEYWORDS & node.keys():
        raise _NotStrict
    node.pop("default", None)  # every property is required, so a default says nothing
    if "oneOf" in node:  # pydantic's discriminated unions; pydantic still checks the one-of on validation
        node["anyOf"] = node.pop("oneOf")
        node.pop("discriminator", None)
    ref = node.get("$ref")
    if ref is not None and len(node) > 1:
        inlined = {**copy.deepcopy(_resolve(root, ref)), **{k: v for k, v in node.items() if k != "$ref"}}
        return _make_strict(inlined, root)
    for defs in ("$defs", "definitions"):
        for name, sub in (node.get(defs) or {}).items():
            node[defs][name] = _make_strict(sub, root)
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties", False) is not False or "properties" not in node:
            raise _NotStrict
        node["additionalProperties"] = False
        node["properties"] = {key: _make_strict(sub, root) for key, sub in node["properties"].items()}
        node["required"] = list(node["properties"])
    if "items" in node:
        node["items"] = _make_strict(node["items"], root)
    for key in ("anyOf", "allOf"):
        if key in node:
            node[key] = [_make_strict(sub, root) for sub in node[key]]
    if len(node.get("allOf", ())) == 1:
        only = node.pop("allOf")[0]
        return _make_strict({**only, **node}, root)
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise _NotStrict
    target: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            raise _NotStrict
        target = target[part]
    if not isinstance(target, dict):
        raise _NotStrict
    return target


class OpenAIModel(SDKChatModel):
    """A model behind the Chat Completions API. ``base_url`` points it at an OpenAI-compatible server."""

    provider = "openai"

    def _new_client(self, api_key: str, *, use_async: bool) -> Any:
        import openai

        cls = openai.AsyncOpenAI if use_async else openai.OpenAI
        return cls(api_key=api_key, base_url=self.settings.base_url, timeout=self.settings.timeout_s, max_retries=0)

    def _body(
        self,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> dict[str, Any]:
        """The ``chat.completions.create`` arguments.

        OpenAI itself takes ``max_completion_tokens`` (``max_tokens`` is deprecated and refused by reasoning
        models); compatible servers are sent ``max_tokens``, which all of them read.
        """
        body: dict[str, Any] = {"model": self.model_name, "messages": messages, "temperature": temperature}
        body["max_tokens" if self.settings.base_url else "max_completion_tokens"] = max_tokens
        if json_schema is not None:
            strict = strict_json_schema(json_schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": wire_name(schema_name),
                    "schema": strict if strict is not None else json_schema,
                    "strict": strict is not None,
                },
            }
        return body

    def _send(self, client: Any, body: dict[str, Any], *, use_async: bool) -> Any:
        return client.chat.completions.create(**body)

    def _completion(self, response: Any, body: dict[str, Any]) -> RawCompletion:
        if not response.choices:
            raise ProviderError(
                f"openai ({self.role}) returned no choices for model {self.model_name!r}", **self._error_context()
            )
        choice = response.choices[0]
        message = choice.message
        # A refusal comes instead of content; passing it on lets structured validation report it.
        text = message.content if message.content is not None else (getattr(message, "refusal", None) or "")
        usage = response.usage
        return RawCompletion(
            text=text,
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
            finish_reason=choice.finish_reason,
        )

    def _map_error(self, error: Exception) -> ModelError | None:
        import openai

        return sdk_error(error, openai, self) if isinstance(error, openai.APIError) else None
