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

from ..config import ModelSettings, official_api_host
from ..errors import AuthenticationError, InvalidOutputError, ModelError, OutputTruncatedError, RefusalError
from .catalog import Prices, facts_for

__all__ = [
    "ChatModel",
    "Message",
    "Messages",
    "ModelResponse",
    "RawCompletion",
    "Usage",
    "UsageLedger",
    "RoleUsage",
    "prices_for",
    "normalize_messages",
]

T = TypeVar("T", bound=BaseModel)

#: A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``.
Message = Mapping[str, str]
#: What a model call takes: a list of messages, or a single user prompt.
Messages = Sequence[Message] | str

_FREE_PROVIDERS = frozenset({"local", "scripted"})


def prices_for(settings: ModelSettings) -> Prices | None:
    """What a role's tokens cost: its configured prices, else the catalog's row for its model
    (:mod:`~atlas_learning.models.catalog`), else None (unknown: a self-hosted server, an unlisted model)."""
    if settings.input_cost_per_mtok is not None or settings.output_cost_per_mtok is not None:
        return Prices(settings.input_cost_per_mtok or 0.0, settings.output_cost_per_mtok or 0.0)
    if settings.provider in _FREE_PROVIDERS:
        return Prices(0.0, 0.0)
    if settings.base_url and not official_api_host(settings.provider, settings.base_url):  # self-hosted: no price known
        return None
    return facts_for(settings.provider, settings.model).prices


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one or more calls. ``cost_usd`` is None when the price is unknown, never a fake 0."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    calls: int = 0
    #: Of ``input_tokens``: read from the provider's prompt cache, and written to it (priced apart).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    #: Roles (or ``"?"``) with calls whose cost is unknown; ``cost_usd`` is then what the others cost (a partial
    #: total), or None when nothing is priced.
    unpriced: tuple[str, ...] = ()

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        parts = [u for u in (self, other) if u.calls or u.cost_usd]  # Usage() adds nothing, not a known $0
        known = [u.cost_usd for u in parts if u.cost_usd is not None]
        cost = (sum(known) if known else None) if parts else 0.0
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            cost,
            self.calls + other.calls,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            tuple(dict.fromkeys([*self._unpriced(), *other._unpriced()])),
        )

    def _unpriced(self) -> tuple[str, ...]:
        return self.unpriced or (("?",) if self.cost_usd is None and self.calls else ())


@dataclass(frozen=True)
class RawCompletion:
    """What a provider returns from one request, before validation."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    #: The provider's own reason the output stopped (``stop``, ``length``, ``end_turn``, ...).
    finish_reason: str | None = None
    #: Of ``input_tokens`` (every prompt token, whatever the provider counts apart): read from / written to cache.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    #: False when the response carried no usage: its cost is unknown, not zero.
    usage_reported: bool = True
    #: The output stopped at the token limit (the provider's ``length`` / ``max_tokens`` / ``MAX_TOKENS``).
    truncated: bool = False
    #: Why the model or the provider's safety system declined (a refusal text, ``content_filter``, ``SAFETY``...).
    refusal: str | None = None


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
            if totals.cost_usd is not None and usage.cost_usd is not None and not usage.unpriced:
                totals.cost_usd += usage.cost_usd
            elif usage.calls:
                totals.cost_usd = None  # this role's cost is unknown from here on

    def total(self) -> Usage:
        with self._lock:
            result = Usage(cost_usd=None)
            for role, totals in self.by_role.items():
                result = result + Usage(totals.input_tokens, totals.output_tokens, totals.cost_usd, totals.calls,
                                        unpriced=(role,) if totals.cost_usd is None and totals.calls else ())
            return result if result.calls or result.cost_usd is not None else Usage()

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


def schema_instruction(json_schema: dict[str, Any]) -> str:
    """What a prompt says when the server cannot constrain the output to a schema itself."""
    return ("Reply with only a JSON object matching this JSON schema, nothing else: "
            + json.dumps(json_schema, separators=(",", ":")))


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
        self._prices = prices_for(settings)
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
        params = self._params(output_type, temperature, max_tokens)
        plan = self._plan(normalize_messages(messages), output_type, params)
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
        params = self._params(output_type, temperature, max_tokens)
        plan = self._plan(normalize_messages(messages), output_type, params)
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

    def _finished(self, raw: RawCompletion, max_tokens: int) -> None:
        """Raise for an answer that is not one: declined (:class:`RefusalError`) or cut at the token limit
        (:class:`OutputTruncatedError`, naming ``max_tokens``)."""
        if raw.refusal is not None:
            raise RefusalError(
                f"{self.provider} model {self.model_name!r} ({self.role}) declined to answer: "
                f"{' '.join(raw.refusal.split())[:200]}; not sent again",
                reason=raw.refusal, **self._error_context())
        if raw.truncated:
            raise OutputTruncatedError(
                f"{self.provider} model {self.model_name!r} ({self.role}) stopped at max_tokens={max_tokens} before "
                f"its answer was complete ({raw.output_tokens} output tokens, thinking included); raise the role's "
                "max_tokens", raw_output=raw.text, max_tokens=max_tokens, **self._error_context())

    def _plan(self, messages: list[dict[str, str]], output_type: type[T] | None, params: dict[str, Any]) -> _Plan:
        """The requests of one call and what is made of their answers. A structured answer cut at the token limit
        is asked again once with ``structured_retry_token_factor`` times the budget (``params`` changed in place);
        one that does not validate gets one repair turn."""
        raw = yield messages
        if output_type is None:
            self._finished(raw, params["max_tokens"])
            return raw.text, None
        if raw.truncated and raw.refusal is None and self.settings.structured_retry_token_factor > 1:
            params["max_tokens"] = round(params["max_tokens"] * self.settings.structured_retry_token_factor)
            raw = yield messages
        self._finished(raw, params["max_tokens"])
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
        self._finished(fixed, params["max_tokens"])
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
        cached, written = raw.cached_input_tokens, raw.cache_write_tokens
        if self._prices is None or not raw.usage_reported:
            return Usage(raw.input_tokens, raw.output_tokens, None, 1, cached, written, unpriced=(self.role,))
        fresh = max(0, raw.input_tokens - cached - written)
        cost = self._prices.cost(fresh, raw.output_tokens, cached, written)
        return Usage(raw.input_tokens, raw.output_tokens, cost, 1, cached, written)

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
