"""``provider: scripted``: deterministic answers for tests, docs and benchmarks.

Responses are given in order. Each is a string, a dict or pydantic model (sent as JSON), an exception
instance (raised, to simulate an outage or a rate limit), or a callable ``(messages, json_schema) -> any of
those``. Running out raises a ProviderError rather than inventing an answer, unless ``cycle`` is set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from ..config import ModelSettings
from ..errors import ProviderError
from ._base import ChatModel, RawCompletion, UsageLedger

__all__ = ["ScriptedModel", "ScriptedResponse"]

ScriptedResponse = str | dict | BaseModel | BaseException | Callable[[list[dict[str, str]], "dict[str, Any] | None"], Any]


def _count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about one token per word or punctuation run."""
    return max(1, len(text.split())) if text else 0


class ScriptedModel(ChatModel):
    """A model that answers from a script. Build it directly or with ``provider: scripted`` and
    ``options: {responses: [...], cycle: false}``."""

    provider = "scripted"

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        responses: Iterable[ScriptedResponse] | None = None,
        cycle: bool | None = None,
        role: str = "default",
        ledger: UsageLedger | None = None,
    ) -> None:
        settings = settings or ModelSettings(provider="scripted", max_retries=0)
        super().__init__(settings, role=role, ledger=ledger)
        given = responses if responses is not None else settings.options.get("responses", [])
        self.responses: list[ScriptedResponse] = list(given)
        self.cycle = bool(settings.options.get("cycle", False) if cycle is None else cycle)
        #: Every request this model received: (messages, json_schema). Tests read it.
        self.requests: list[tuple[list[dict[str, str]], dict[str, Any] | None]] = []
        self._next = 0
        self._lock = threading.Lock()

    def _take(self) -> ScriptedResponse:
        with self._lock:
            if self._next >= len(self.responses):
                if not (self.cycle and self.responses):
                    raise ProviderError(
                        f"scripted model ({self.role}) ran out of responses after {len(self.responses)}; "
                        "add more to options.responses or set cycle: true",
                        **self._error_context(),
                    )
                self._next = 0
            response = self.responses[self._next]
            self._next += 1
            return response

    def _request(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> RawCompletion:
        with self._lock:
            self.requests.append((messages, json_schema))
        response: Any = self._take()
        if callable(response) and not isinstance(response, (BaseException, BaseModel)):
            response = response(messages, json_schema)
        if isinstance(response, BaseException):
            raise response
        if isinstance(response, BaseModel):
            text = response.model_dump_json()
        elif isinstance(response, (dict, list)):
            text = json.dumps(response)
        else:
            text = str(response)
        prompt = " ".join(m["content"] for m in messages)
        return RawCompletion(text=text, input_tokens=_count_tokens(prompt), output_tokens=_count_tokens(text), finish_reason="stop")
