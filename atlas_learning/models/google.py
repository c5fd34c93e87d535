"""``provider: google``: Gemini through the Gemini Developer API and the ``google-genai`` SDK.

System messages become ``system_instruction``, the assistant role is ``model``. Structured output uses
``response_mime_type="application/json"`` with ``response_json_schema`` (a plain JSON schema, ``$defs`` and all).
The SDK's own retries are off: ``HttpRetryOptions(attempts=1)``, which also stops the SDK's silent 1-10 s
reconnect on aiohttp connection errors; :class:`~atlas_learning.models._base.ChatModel` does the retrying. One
``genai.Client`` serves sync and async calls.

Gemini reports two failures its own way, read here before the shared mapping: a wrong key is HTTP 400 with
reason ``API_KEY_INVALID`` (an authentication error all the same), and a 429 gives its delay in a ``RetryInfo``
detail of the body (``"retryDelay": "31s"``), not in a Retry-After header (still read if a proxy sends one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ModelError, ProviderError, RefusalError
from ._base import RawCompletion
from ._http import SDKChatModel, error_for_status, system_and_turns, transport_error, transport_kind

__all__ = ["GoogleModel"]

_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _error_details(body: object) -> list[Mapping[str, Any]]:
    """The ``google.rpc`` details of an error body (``{"error": {"details": [...]}}``)."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _retry_delay(details: list[Mapping[str, Any]]) -> float | None:
    """Seconds from a ``type.googleapis.com/google.rpc.RetryInfo`` detail (``"retryDelay": "2s"``)."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _daily_quota(details: list[Mapping[str, Any]]) -> bool:
    """Whether a ``google.rpc.QuotaFailure`` names a per-day quota (``GenerateRequestsPerDayPerProjectPerModel-
    FreeTier``): its message reads like a per-minute limit's ("You exceeded your current quota ... Please retry in
    26s"), but retrying in seconds cannot succeed before the day's reset."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            violations = detail.get("violations")
            for violation in violations if isinstance(violations, list) else []:
                if isinstance(violation, Mapping) and "perday" in str(violation.get("quotaId", "")).lower():
                    return True
    return False


#: Finish reasons that mean Gemini (its safety system) declined rather than answered.
_BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"})


class GoogleModel(SDKChatModel):
    """A Gemini model behind ``generateContent``."""

    provider = "google"

    def _new_client(self, api_key: str, *, use_async: bool) -> Any:
        if self._client is not None or self._async_client is not None:
            return self._client or self._async_client  # one client has both: .models and .aio.models
        from google import genai
        from google.genai import types

        options = types.HttpOptions(
            base_url=self.settings.base_url,
            timeout=round(self.settings.timeout_s * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def _body(
        self,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> dict[str, Any]:
        """The ``models.generate_content`` arguments."""
        system, turns = system_and_turns(messages)
        config: dict[str, Any] = {"temperature": temperature, "max_output_tokens": max_tokens}
        if self.settings.thinking_budget_tokens is not None:  # thinking counts against max_output_tokens
            config["thinking_config"] = {"thinking_budget": self.settings.thinking_budget_tokens}
        if system is not None:
            config["system_instruction"] = system
        if json_schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = json_schema
        contents = [
            {"role": "model" if t["role"] == "assistant" else "user", "parts": [{"text": t["content"]}]} for t in turns
        ]
        return {"model": self.model_name, "contents": contents, "config": config}

    def _send(self, client: Any, body: dict[str, Any], *, use_async: bool) -> Any:
        return (client.aio.models if use_async else client.models).generate_content(**body)

    def _completion(self, response: Any, body: dict[str, Any]) -> RawCompletion:
        """Text without thought parts; output tokens count the thinking tokens too, as Google bills them."""
        if not response.candidates:
            feedback = response.prompt_feedback
            reason = getattr(getattr(feedback, "block_reason", None), "value", None) or "no candidates"
            if reason != "no candidates":
                raise RefusalError(f"google ({self.role}) blocked the prompt for model {self.model_name!r}: {reason}; "
                                   "not sent again", reason=reason, **self._error_context())
            raise ProviderError(
                f"google ({self.role}) returned no answer for model {self.model_name!r}: {reason}",
                **self._error_context(),
            )
        finish = response.candidates[0].finish_reason
        reason = getattr(finish, "value", finish)
        usage = response.usage_metadata
        blocked = reason in _BLOCKED
        return RawCompletion(
            text="" if blocked else (response.text or ""),
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0,
            finish_reason=reason,
            cached_input_tokens=(getattr(usage, "cached_content_token_count", None) or 0) if usage else 0,
            usage_reported=usage is not None,
            truncated=reason == "MAX_TOKENS",
            refusal=f"{reason} (Gemini stopped the answer)" if blocked else None,
        )

    def _map_error(self, error: Exception) -> ModelError | None:
        from google.genai import errors

        context = self._error_context()
        if isinstance(error, errors.APIError):
            details = _error_details(error.details)
            return error_for_status(
                error.code,
                error.message or str(error),
                headers=getattr(error.response, "headers", None),
                retry_after_s=_retry_delay(details),
                key_env=self.settings.resolved_api_key_env(),
                key_rejected=any(d.get("reason") == "API_KEY_INVALID" for d in details),
                quota_exhausted=_daily_quota(details),
                **context,
            )
        kind = transport_kind(error)
        if kind is None:
            return None
        return transport_error(error, timeout=kind == "timeout", timeout_s=self.settings.timeout_s, **context)
