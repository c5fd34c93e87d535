"""The model interface every provider implements, and the logic they share.

A provider subclasses :class:`ChatModel` and implements one method, :meth:`ChatModel._request` (and
optionally :meth:`ChatModel._arequest` for native async): send messages, optionally constrained to a JSON
schema with the provider's native structured-output feature, and return the text and token counts, or
raise a typed :class:`~atlas_learning.errors.ModelError`. Everything else lives here once: retries with
exponential backoff that honour Retry-After, validation of structured output into a pydantic model with one
repair attempt, and recording of tokens and cost per call and per role.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from ..config import ModelSettings
from ..errors import AuthenticationError, InvalidOutputError, ModelError

__all__ = [
    "ChatModel",
    "Message",
    "Messages",
    "ModelResponse",
    "RawCompletion",
    "Usage",
    "UsageLedger",
    "RoleUsage",
    "price_per_mtok",
    "normalize_messages",
]

T = TypeVar("T", bound=BaseModel)

#: A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``.
Message = Mapping[str, str]
#: What a model call takes: a list of messages, or a single user prompt.
Messages = Sequence[Message] | str

#: USD per million (input, output) tokens, matched by model-name prefix, longest prefix first.
#: Published list prices when written; a role's ``input_cost_per_mtok``/``output_cost_per_mtok`` override them.
_PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
}
_FREE_PROVIDERS = frozenset({"local", "scripted"})


def price_per_mtok(settings: ModelSettings) -> tuple[float, float] | None:
    """USD per million input and output tokens for a role, or None when the price is unknown."""
    if settings.input_cost_per_mtok is not None or settings.output_cost_per_mtok is not None:
        return (settings.input_cost_per_mtok or 0.0, settings.output_cost_per_mtok or 0.0)
    if settings.provider in _FREE_PROVIDERS:
        return (0.0, 0.0)
    if settings.base_url:  # a self-hosted OpenAI-compatible server: its name says nothing about its price
        return None
    for prefix in sorted(_PRICES_PER_MTOK, key=len, reverse=True):
        if settings.model.startswith(prefix):
            return _PRICES_PER_MTOK[prefix]
    return None


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one or more calls. ``cost_usd`` is None when the price is unknown, never a fake 0."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            cost,
            self.calls + other.calls,
        )


@dataclass(frozen=True)
class RawCompletion:
    """What a provider returns from one request, before validation."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    #: The provider's own reason the output stopped (``stop``, ``length``, ``end_turn``, ...).
    finish_reason: str | None = None


@dataclass(frozen=True)
class ModelResponse(Generic[T]):
    """The result of :meth:`ChatModel.generate`: the text, the validated object when asked for, and usage."""

    text: str
    output: T | None
    usage: Usage
    provider: str
    model: str
    role: str
    latency_s: float
    #: Requests this call made, counting retries and the repair attempt.
    attempts: int = 1


@dataclass
class RoleUsage:
    """Running totals for one role."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass
class UsageLedger:
    """Thread-safe totals of tokens and cost per role. Share one ledger across the models of a session."""

    by_role: dict[str, RoleUsage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, role: str, usage: Usage) -> None:
        with self._lock:
            totals = self.by_role.setdefault(role, RoleUsage())
            totals.calls += usage.calls
            totals.input_tokens += usage.input_tokens
            totals.output_tokens += usage.output_tokens
            if totals.cost_usd is not None and usage.cost_usd is not None:
                totals.cost_usd += usage.cost_usd
            else:
                totals.cost_usd = None

    def total(self) -> Usage:
        with self._lock:
            result = Usage()
            for totals in self.by_role.values():
                result = result + Usage(totals.input_tokens, totals.output_tokens, totals.cost_usd, totals.calls)
            return result

    def as_dict(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {role: totals.as_dict() for role, totals in self.by_role.items()}


def normalize_messages(messages: Messages) -> list[dict[str, str]]:
    """Messages as a list of ``{"role", "content"}`` dicts; a bare string becomes one user message."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    result = []
    for message in messages:
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message role must be system, user or assistant, got {role!r}")
        result.append({"role": str(role), "content": str(message.get("content", ""))})
    if not result:
        raise ValueError("a model call needs at least one message")
    return result


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _json_text(text: str) -> str:
    """The JSON part of a model's answer: without code fences or prose around the outermost object."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        return fenced.group(1)
    start, end = stripped.find("{"), stripped.rfind("}")
    if start > 0 and end > start:
        return stripped[start : end + 1]
    return stripped


@functools.lru_cache(maxsize=256)
def json_schema_of(output_type: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of an output type, built once (pydantic rebuilds it on every call otherwise).

    Callers must not mutate the returned dict."""
    return output_type.model_json_schema()


def _validation_summary(error: ValidationError | ValueError) -> str:
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()[:5]]
        return "; ".join(parts)
    return str(error)


# A structured call is written once as a generator that yields the message lists to send and receives the
# raw completions; _run and _arun drive it synchronously or asynchronously.
_Plan = Generator[list[dict[str, str]], RawCompletion, tuple[str, Any]]


class ChatModel(ABC):
    """One model serving one role. Subclasses implement :meth:`_request`; callers use :meth:`generate`.

    ``generate(messages)`` returns text; ``generate(messages, output_type=Model)`` returns a validated
    ``Model`` instance in ``response.output``, using the provider's native structured-output feature, with one
    repair attempt before :class:`~atlas_learning.errors.InvalidOutputError`.
    """

    #: The provider name this class implements (``openai``, ``local``, ...).
    provider: ClassVar[str]

    def __init__(self, settings: ModelSettings, *, role: str = "default", ledger: UsageLedger | None = None) -> None:
        self.settings = settings
        self.role = role
        self.ledger = ledger if ledger is not None else UsageLedger()
        self._prices = price_per_mtok(settings)
        #: Replaced in tests to observe backoff without waiting.
        self._sleep: Callable[[float], None] = time.sleep
        self._async_sleep: Callable[[float], Any] = asyncio.sleep

    @property
    def model_name(self) -> str:
        return self.settings.model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(role={self.role!r}, model={self.model_name!r})"

    # ----------------------------------------------------------------------------------------- public API
    def generate(
        self,
        messages: Messages,
        *,
        output_type: type[T] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelResponse[T]:
        """Call the model; with ``output_type``, return its answer validated into that pydantic model."""
        started = time.perf_counter()
        plan = self._plan(normalize_messages(messages), output_type)
        params = self._params(output_type, temperature, max_tokens)
        usage, attempts = Usage(), 0
        try:
            request = next(plan)
            while True:
                raw, tries = self._with_retries(lambda msgs=request: self._request(msgs, **params))
                usage, attempts = usage + self._usage(raw), attempts + tries
                request = plan.send(raw)
        except StopIteration as done:
            text, output = done.value
        except ModelError as error:
            error.usage = usage
            raise
        finally:
            self.ledger.record(self.role, usage)
        return self._response(text, output, usage, attempts, started)

    async def agenerate(
        self,
        messages: Messages,
        *,
        output_type: type[T] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelResponse[T]:
        """Async twin of :meth:`generate`."""
        started = time.perf_counter()
        plan = self._plan(normalize_messages(messages), output_type)
        params = self._params(output_type, temperature, max_tokens)
        usage, attempts = Usage(), 0
        try:
            request = next(plan)
            while True:
                raw, tries = await self._awith_retries(lambda msgs=request: self._arequest(msgs, **params))
                usage, attempts = usage + self._usage(raw), attempts + tries
                request = plan.send(raw)
        except StopIteration as done:
            text, output = done.value
        except ModelError as error:
            error.usage = usage
            raise
        finally:
            self.ledger.record(self.role, usage)
        return self._response(text, output, usage, attempts, started)

    def close(self) -> None:  # noqa: B027 - a no-op unless the provider holds something
        """Release clients or loaded weights. Safe to call twice."""

    # ------------------------------------------------------------------------------------ provider hooks
    @abstractmethod
    def _request(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> RawCompletion:
        """Send one request. With ``json_schema``, constrain the output with the provider's native feature.

        Raise a :class:`~atlas_learning.errors.ModelError` subclass on failure; set ``retryable`` (or raise
        RateLimitError / ModelTimeoutError) for failures worth retrying.
        """

    async def _arequest(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> RawCompletion:
        """Async request; by default the sync request in a worker thread."""
        return await asyncio.to_thread(
            self._request,
            messages,
            json_schema=json_schema,
            schema_name=schema_name,
            temperature=temperature,
            max_tokens=max_tokens,
        )

    # ---------------------------------------------------------------------------------------- internals
    #: Sent to a self-hosted server (``base_url`` set, no ``api_key_env`` named, no key in the environment):
    #: vLLM, Ollama and llama.cpp servers accept any key, but the SDKs refuse to start without one.
    KEYLESS_SERVER_KEY = "EMPTY"

    def _api_key(self) -> str:
        """The role's API key from its environment variable, or an AuthenticationError naming the variable."""
        import os

        name = self.settings.resolved_api_key_env()
        key = os.environ.get(name) if name else None
        if not key and self.settings.base_url and not self.settings.api_key_env:
            return self.KEYLESS_SERVER_KEY
        if not key:
            raise AuthenticationError(
                f"no API key for {self.provider} ({self.role}): set the environment variable {name}",
                provider=self.provider,
                model=self.model_name,
                role=self.role,
            )
        return key

    def _error_context(self) -> dict[str, str]:
        return {"provider": self.provider, "model": self.model_name, "role": self.role}

    def _params(self, output_type: type[BaseModel] | None, temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
        return {
            "json_schema": json_schema_of(output_type) if output_type is not None else None,
            "schema_name": output_type.__name__ if output_type is not None else None,
            "temperature": self.settings.temperature if temperature is None else temperature,
            "max_tokens": self.settings.max_tokens if max_tokens is None else max_tokens,
        }

    def _plan(self, messages: list[dict[str, str]], output_type: type[T] | None) -> _Plan:
        raw = yield messages
        if output_type is None:
            return raw.text, None
        try:
            return raw.text, output_type.model_validate_json(_json_text(raw.text))
        except (ValidationError, ValueError) as first_error:
            problem = _validation_summary(first_error)
        schema = json.dumps(json_schema_of(output_type), separators=(",", ":"))
        repair = [
            *messages,
            {"role": "assistant", "content": raw.text},
            {
                "role": "user",
                "content": f"That reply is not valid ({problem}). Reply again with only a JSON object "
                f"matching this schema, nothing else: {schema}",
            },
        ]
        fixed = yield repair
        try:
            return fixed.text, output_type.model_validate_json(_json_text(fixed.text))
        except (ValidationError, ValueError) as second_error:
            raise InvalidOutputError(
                f"{self.provider} model {self.model_name!r} ({self.role}) returned output that does not match "
                f"{output_type.__name__} after one repair attempt: {_validation_summary(second_error)}",
                raw_output=fixed.text,
                **self._error_context(),
            ) from None

    def _backoff(self, error: ModelError, attempt: int) -> float:
        if error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.0), self.settings.retry_max_delay_s)
        return min(self.settings.retry_base_delay_s * (2**attempt), self.settings.retry_max_delay_s)

    def _with_retries(self, call: Callable[[], RawCompletion]) -> tuple[RawCompletion, int]:
        for attempt in range(self.settings.max_retries + 1):
            try:
                return call(), attempt + 1
            except ModelError as error:
                if not error.retryable or attempt == self.settings.max_retries:
                    raise
                self._sleep(self._backoff(error, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _awith_retries(self, call: Callable[[], Any]) -> tuple[RawCompletion, int]:
        for attempt in range(self.settings.max_retries + 1):
            try:
                return cast(RawCompletion, await call()), attempt + 1
            except ModelError as error:
                if not error.retryable or attempt == self.settings.max_retries:
                    raise
                await self._async_sleep(self._backoff(error, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _usage(self, raw: RawCompletion) -> Usage:
        if self._prices is None:
            cost = None
        else:
            cost = (raw.input_tokens * self._prices[0] + raw.output_tokens * self._prices[1]) / 1_000_000
        return Usage(raw.input_tokens, raw.output_tokens, cost, 1)

    def _response(self, text: str, output: Any, usage: Usage, attempts: int, started: float) -> ModelResponse[Any]:
        return ModelResponse(
            text=text,
            output=output,
            usage=usage,
            provider=self.provider,
            model=self.model_name,
            role=self.role,
            latency_s=time.perf_counter() - started,
            attempts=attempts,
        )
