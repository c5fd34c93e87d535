"""``provider: openai``: the OpenAI Chat Completions API, and any server that speaks it (vLLM, Ollama, llama.cpp).

Structured output uses the native ``response_format={"type": "json_schema", ...}``, strict when the schema can be
made strict (:func:`strict_json_schema`), else non-strict. The SDK is imported on first use, and its clients are
built with ``max_retries=0``: :class:`~atlas_learning.models._base.ChatModel` does the retrying.
"""

from __future__ import annotations

import copy
from typing import Any

from ..config import official_api_host
from ..errors import ModelError, ProviderError
from ._base import RawCompletion, schema_instruction
from ._http import SDKChatModel, sdk_error, wire_name
from .catalog import ModelFacts, facts_for

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


#: How servers word a refused parameter: OpenAI ("Unsupported value"), llama.cpp ('response_format type must be one
#: of "text" or "json_object", but got: json_schema', sent as HTTP 500 by some builds), vLLM/FastAPI validation
#: (422 "Input should be ..."), LM Studio ("'response_format.type' must be 'json_schema' or 'text'").
_REFUSAL_WORDS = ("unsupported", "not supported", "does not support", "not allowed", "unrecognized", "unknown",
                  "invalid", "must be", "input should be")


def _refused(message: str, body: dict[str, Any]) -> str | None:
    """The parameter a 400's message says is unsupported (``temperature``, ``response_format``, ...), if sent."""
    text = message.lower()
    if not any(word in text for word in _REFUSAL_WORDS):
        return None
    for name in ("temperature", "reasoning_effort", "response_format", "json_schema"):  # what _body can leave out
        if name in text and (name in body or (name == "json_schema" and "response_format" in body)):
            return "response_format" if name == "json_schema" else name
    return None


class OpenAIModel(SDKChatModel):
    """A model behind the Chat Completions API. ``base_url`` points it at an OpenAI-compatible server.

    What each model accepts comes from :mod:`~atlas_learning.models.catalog` (reasoning models are sent no
    ``temperature``; ``reasoning_effort`` goes to the models that take one). A 400 that says a sent parameter is
    unsupported is answered once more without it, and the parameter is not sent to that model again in this
    process: ``temperature`` is dropped; a ``json_schema`` response format becomes ``json_object`` and then none
    (the schema goes in the prompt and the answer is validated as usual).
    """

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
        facts = facts_for("openai", self.model_name) if official_api_host("openai", self.settings.base_url) else ModelFacts()
        refused = self._refused_here()
        body: dict[str, Any] = {"model": self.model_name, "messages": messages}
        if facts.temperature and "temperature" not in refused:
            body["temperature"] = temperature
        if self.settings.reasoning_effort is not None and (facts.reasoning_effort or self.settings.base_url) \
                and "reasoning_effort" not in refused:
            body["reasoning_effort"] = self.settings.reasoning_effort
        body["max_tokens" if self.settings.base_url else "max_completion_tokens"] = max_tokens
        if json_schema is not None:
            if "response_format" not in refused:
                strict = strict_json_schema(json_schema)
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": wire_name(schema_name),
                        "schema": strict if strict is not None else json_schema,
                        "strict": strict is not None,
                    },
                }
            elif "json_object" not in refused:
                body["response_format"] = {"type": "json_object"}
            if body.get("response_format", {}).get("type") != "json_schema":  # the schema goes in the prompt instead
                body["messages"] = [*messages, {"role": "system", "content": schema_instruction(json_schema)}]
        return body

    def _adapt(self, body: dict[str, Any], error: ModelError) -> bool:
        name = _refused(str(error), body)
        if name is None:
            return False
        if name == "response_format":
            if not self.settings.base_url:
                return False  # OpenAI itself takes json_schema: a refusal there is about the schema, and final
            name = "json_object" if body["response_format"].get("type") == "json_object" else "response_format"
        return self._remember_refused(name)

    def _send(self, client: Any, body: dict[str, Any], *, use_async: bool) -> Any:
        return client.chat.completions.create(**body)

    def _completion(self, response: Any, body: dict[str, Any]) -> RawCompletion:
        if not response.choices:
            raise ProviderError(
                f"openai ({self.role}) returned no choices for model {self.model_name!r}", **self._error_context()
            )
        choice = response.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if choice.finish_reason == "content_filter":
            refusal = refusal or "content_filter (the provider's content filter stopped the answer)"
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return RawCompletion(
            text=message.content or "",
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
            finish_reason=choice.finish_reason,
            cached_input_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
            usage_reported=usage is not None,
            truncated=choice.finish_reason == "length",
            refusal=refusal or None,
        )

    def _map_error(self, error: Exception) -> ModelError | None:
        import openai

        return sdk_error(error, openai, self) if isinstance(error, openai.APIError) else None
