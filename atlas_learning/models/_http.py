"""What the cloud providers share on the wire: HTTP failures as typed Atlas errors, and message shaping.

:func:`error_for_status` turns a status code, the provider's message and its Retry-After into the right
:class:`~atlas_learning.errors.ModelError`: 401/403 an :class:`AuthenticationError` naming the variable the key
came from, 429 a :class:`RateLimitError` carrying the delay the provider asked for, 408/409/5xx a retryable
:class:`ProviderError`, any other 4xx a final one. :func:`transport_error` does the same for timeouts and lost
connections. :func:`sdk_error` adapts the exceptions of the OpenAI and Anthropic SDKs, which share one shape
(``APIStatusError``, ``APITimeoutError``, ``APIConnectionError``); the Google provider calls
:func:`error_for_status` directly. The base class's retry loop acts on what these return.

:class:`SDKChatModel` is what every provider does the same way whatever its SDK: build the client once, send
sync or async, map the SDK's errors. :func:`system_and_turns` and :func:`wire_name` shape requests for the APIs
that take the system prompt apart (Anthropic, Google) and that restrict schema and tool names (OpenAI, Anthropic).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any

from ..config import ModelSettings
from ..errors import AuthenticationError, ModelError, ModelTimeoutError, ProviderError, RateLimitError
from ._base import ChatModel, RawCompletion, UsageLedger

__all__ = [
    "SDKChatModel",
    "api_message",
    "error_for_status",
    "parse_retry_after",
    "ratelimit_reset",
    "sdk_error",
    "system_and_turns",
    "transport_error",
    "transport_kind",
    "wire_name",
]

_MAX_MESSAGE = 300
#: A 429 that is about money or a daily quota, not the request rate: OpenAI's error code ``insufficient_quota``
#: (its message, "You exceeded your current quota, please check your plan and billing details", is also what
#: Gemini says of a per-minute limit, so the code decides), Gemini's per-day quota metrics
#: (``generate_requests_per_model_per_day``), Anthropic's credit balance.
_QUOTA = re.compile(r"(?i)insufficient_quota|credit balance|per[ _-]?day")


#: The statuses a refused parameter comes back with (see SDKChatModel._adapted).
_ADAPTABLE = frozenset({400, 422, 500})


def parse_retry_after(value: str | None, *, ms_value: str | None = None, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP-date) or ``retry-after-ms``; None if absent or bad.

    ``retry-after-ms`` wins when both are sent, as the OpenAI and Anthropic SDKs do.
    """
    if ms_value:
        try:
            millis = float(ms_value)
        except ValueError:
            millis = math.nan
        if math.isfinite(millis) and millis >= 0:
            return millis / 1000
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # Python < 3.10 returned None on garbage
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")


def ratelimit_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds until the exhausted limit resets, from OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens``
    (durations such as ``12ms``, ``1s``, ``6m0s``): the one whose ``x-ratelimit-remaining-*`` is 0, else the
    longer. None when neither is sent or readable."""
    resets: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        value = headers.get(f"x-ratelimit-reset-{kind}")
        match = _DURATION.fullmatch(value.strip()) if value else None
        if match and any(match.groups()):
            hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
            resets[kind] = hours * 3600 + minutes * 60 + seconds + millis / 1000
    if not resets:
        return None
    exhausted = [resets[k] for k in resets if str(headers.get(f"x-ratelimit-remaining-{k}", "")).strip() == "0"]
    return max(exhausted or resets.values())


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"


def api_message(body: object, fallback: str = "") -> str:
    """The human message inside an error body (``{"message"}``, ``{"error": {"message"}}``, ``{"error": "..."}``,
    or the text itself: the OpenAI SDK hands over ``body["error"]``, a string on some self-hosted servers), else
    ``fallback``."""
    if isinstance(body, str) and body.strip():
        return body.strip()
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        inner = body.get("error")
        if isinstance(inner, Mapping):
            return api_message(inner, fallback)
        if isinstance(inner, str) and inner:
            return inner
    return fallback


def error_for_status(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    retry_after_s: float | None = None,
    key_env: str | None = None,
    key_rejected: bool = False,
    quota_exhausted: bool = False,
    provider: str = "",
    model: str = "",
    role: str = "",
) -> ModelError:
    """The typed error for an HTTP failure.

    ``retry_after_s`` overrides the delay read from ``headers``; ``key_rejected`` marks a refused key that the
    provider reports with another status (Gemini answers 400); ``quota_exhausted`` marks a 429 that waiting
    seconds will not cure, when the provider says so outside the message (Gemini's per-day ``quotaId``).
    """
    context: dict[str, Any] = {"provider": provider, "model": model, "role": role, "status_code": status}
    who = f"{provider} ({role})" if role else provider
    detail = _one_line(message) or "no message"
    if status in (401, 403) or key_rejected:
        verb = "refused access with this API key" if status == 403 else "rejected the API key"
        where = f"check the environment variable {key_env}" if key_env else "check the credentials"
        return AuthenticationError(f"{who} {verb} (HTTP {status}: {detail}); {where}", **context)
    if status == 429 and (quota_exhausted or _QUOTA.search(message)):
        return ProviderError(  # out of credit or past a daily quota: waiting seconds will not help
            f"{who} quota exhausted for model {model!r} (HTTP 429: {detail}); check the account's plan and billing, "
            "or wait for the daily quota to reset", retryable=False, **context)
    if status == 429:
        if retry_after_s is None and headers is not None:
            retry_after_s = parse_retry_after(headers.get("retry-after"), ms_value=headers.get("retry-after-ms"))
            if retry_after_s is None:
                retry_after_s = ratelimit_reset(headers)
        wait = f"; it asks to retry after {retry_after_s:g}s" if retry_after_s is not None else ""
        return RateLimitError(
            f"{who} rate limit for model {model!r} (HTTP 429: {detail}){wait}", retry_after_s=retry_after_s, **context
        )
    retryable = status in (408, 409) or status >= 500
    hint = "the provider failed; retrying may help" if retryable else "the request was refused; fix it before retrying"
    return ProviderError(f"{who} HTTP {status} for model {model!r}: {detail} ({hint})", retryable=retryable, **context)


def transport_error(
    error: BaseException, *, timeout: bool, timeout_s: float, provider: str = "", model: str = "", role: str = ""
) -> ModelError:
    """A timeout (:class:`ModelTimeoutError`) or lost connection (retryable :class:`ProviderError`)."""
    context: dict[str, Any] = {"provider": provider, "model": model, "role": role}
    who = f"{provider} ({role})" if role else provider
    if timeout:
        return ModelTimeoutError(
            f"{who} model {model!r} did not answer within {timeout_s:g}s; raise timeout_s or retry later", **context
        )
    cause = _one_line(str(error.__cause__ or error)) or type(error).__name__
    return ProviderError(
        f"{who} could not be reached for model {model!r} ({cause}); check base_url and the network",
        retryable=True,
        **context,
    )


def transport_kind(error: BaseException) -> str | None:
    """``"timeout"``, ``"connection"`` or None for an exception of any HTTP stack (httpx, httpx2, aiohttp).

    Judged by class names so that it needs none of those packages imported.
    """
    names = {cls.__name__ for cls in type(error).__mro__}
    if isinstance(error, TimeoutError) or any("Timeout" in name for name in names):
        return "timeout"
    if isinstance(error, OSError) or names & {"TransportError", "ClientError", "NetworkError"}:
        return "connection"
    return None


def sdk_error(error: Exception, sdk: ModuleType, chat_model: ChatModel) -> ModelError:
    """The typed error for an ``APIError`` of the ``openai`` or ``anthropic`` SDK.

    Both SDKs raise ``APIStatusError`` (with ``status_code``, ``response`` and the decoded ``body``),
    ``APITimeoutError`` and ``APIConnectionError``; their clients are built with ``max_retries=0``.
    """
    context = chat_model._error_context()
    if isinstance(error, sdk.APITimeoutError):
        return transport_error(error, timeout=True, timeout_s=chat_model.settings.timeout_s, **context)
    if isinstance(error, sdk.APIConnectionError):
        return transport_error(error, timeout=False, timeout_s=chat_model.settings.timeout_s, **context)
    if isinstance(error, sdk.APIStatusError):
        return error_for_status(
            error.status_code,
            _with_code(error.body, api_message(error.body, getattr(error, "message", str(error)))),
            headers=error.response.headers,
            key_env=chat_model.settings.resolved_api_key_env(),
            **context,
        )
    return ProviderError(  # e.g. APIResponseValidationError: a 2xx the SDK could not read
        f"{chat_model.provider} ({chat_model.role}) at {chat_model.settings.base_url or 'its API'} returned a response "
        f"the SDK could not read: {_one_line(str(error))}; check base_url and any proxy in between",
        retryable=False,
        **context,
    )


def _with_code(body: object, message: str) -> str:
    """``message`` with the error object's ``code`` before it when it names one (``insufficient_quota: ...``).
    ``body`` is the whole error body or, as the OpenAI SDK hands it over, its ``error`` object."""
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    code = inner.get("code") if isinstance(inner, Mapping) else None
    return f"{code}: {message}" if isinstance(code, str) and code and code not in message else message


def system_and_turns(messages: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    """The system prompt (every system message, joined) and the other turns, consecutive same-role turns merged.

    For APIs that take the system prompt as a parameter and expect user and assistant turns to alternate.
    """
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns: list[dict[str, str]] = []
    for message in messages:
        if message["role"] == "system":
            continue
        if turns and turns[-1]["role"] == message["role"]:
            turns[-1] = {"role": message["role"], "content": f"{turns[-1]['content']}\n\n{message['content']}"}
        else:
            turns.append({"role": message["role"], "content": message["content"]})
    return ("\n\n".join(system) if system else None), turns


def wire_name(name: str | None, default: str = "output") -> str:
    """A schema or tool name the APIs accept (``^[a-zA-Z0-9_-]{1,64}$``): ``Page[Item]`` becomes ``Page_Item``."""
    cleaned = re.sub(r"[^a-zA-Z0-9_-]+", "_", name or "").strip("_")[:64]
    return cleaned or default


#: (provider, base_url, model) -> request parts that model refused with a 400 in this process (``temperature``,
#: ``response_format``, ``output_config``...): they are not sent to it again.
_REFUSED: dict[tuple[str, str | None, str], set[str]] = {}
_REFUSED_LOCK = threading.Lock()
log = logging.getLogger(__name__)


class SDKChatModel(ChatModel):
    """A provider reached through its official SDK: clients built on first use and kept, SDK errors mapped once.

    Subclasses say how to build a client (:meth:`_new_client`, with the SDK's own retries off), what to send
    (:meth:`_body`), which SDK method sends it (:meth:`_send`), how to read the answer (:meth:`_completion`) and
    which SDK exceptions mean what (:meth:`_map_error`). Sync and async share all of it.
    """

    def __init__(self, settings: ModelSettings, *, role: str = "default", ledger: UsageLedger | None = None) -> None:
        super().__init__(settings, role=role, ledger=ledger)
        self._client: Any = None
        self._async_client: Any = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        #: id(async client) -> the started async generator that closes it when its loop shuts down (the loop holds
        #: such generators weakly: this keeps each alive until then).
        self._closers: dict[int, Any] = {}

    @abstractmethod
    def _new_client(self, api_key: str, *, use_async: bool) -> Any:
        """A new SDK client (sync or async) using ``base_url``, ``timeout_s`` and no SDK-side retries."""

    @abstractmethod
    def _body(
        self,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> dict[str, Any]:
        """The keyword arguments of the SDK call."""

    @abstractmethod
    def _send(self, client: Any, body: dict[str, Any], *, use_async: bool) -> Any:
        """Call the SDK; returns its response, or an awaitable of it when ``use_async``."""

    @abstractmethod
    def _completion(self, response: Any, body: dict[str, Any]) -> RawCompletion:
        """Text, token counts and finish reason from the SDK's response to ``body``."""

    @abstractmethod
    def _map_error(self, error: Exception) -> ModelError | None:
        """The typed error for an SDK exception, or None to let it propagate unchanged."""

    def _client_for(self, *, use_async: bool) -> Any:
        """The kept client; an async one is rebuilt when called from another event loop than it was built in
        (its connection pool belongs to that loop, which ``asyncio.run`` closes after each run)."""
        loop = asyncio.get_running_loop() if use_async else None
        with self._lock:
            if use_async and self._async_loop is not loop:
                self._async_client, self._async_loop = None, loop
            if (self._async_client if use_async else self._client) is None:
                client = self._new_client(self._api_key(), use_async=use_async)
                if use_async:
                    self._async_client = client
                else:
                    self._client = client
            return self._async_client if use_async else self._client

    def _refused_here(self) -> frozenset[str]:
        """The request parts this model (at this ``base_url``) refused in this process: :meth:`_body` leaves them out."""
        with _REFUSED_LOCK:
            return frozenset(_REFUSED.get((self.provider, self.settings.base_url, self.model_name), ()))

    def _remember_refused(self, part: str) -> bool:
        """Remember that this model refused ``part``; False when it already had (the refusal is then final)."""
        with _REFUSED_LOCK:
            refused = _REFUSED.setdefault((self.provider, self.settings.base_url, self.model_name), set())
            if part in refused:
                return False
            refused.add(part)
        log.warning("%s (%s): model %r refused %s; not sending it from now on", self.provider, self.role, self.model_name, part)
        return True

    def _adapt(self, body: dict[str, Any], error: ModelError) -> bool:
        """Whether ``error`` (an HTTP 400 to ``body``) said a part of it is unsupported by this model or server,
        now remembered so that :meth:`_body` leaves it out: the request is then built and sent once more. False
        (final) by default."""
        return False

    def _request(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> RawCompletion:
        client = self._client_for(use_async=False)
        for tries_left in (2, 1, 0):  # the request, then at most two adaptations (temperature, response_format)
            body = self._body(messages, json_schema, schema_name, temperature, max_tokens)
            try:
                return self._read(self._send(client, body, use_async=False), body)
            except ModelError as error:
                self._adapted(body, error, tries_left)
            except Exception as error:  # noqa: BLE001 - the SDK's own exceptions, mapped
                self._adapted(body, self._mapped(error), tries_left)
        raise AssertionError("unreachable")  # pragma: no cover - _adapted raises on the last

    async def _arequest(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> RawCompletion:
        client = self._client_for(use_async=True)
        await self._close_with_loop(client)
        for tries_left in (2, 1, 0):
            body = self._body(messages, json_schema, schema_name, temperature, max_tokens)
            try:
                return self._read(await self._send(client, body, use_async=True), body)
            except ModelError as error:
                self._adapted(body, error, tries_left)
            except Exception as error:  # noqa: BLE001
                self._adapted(body, self._mapped(error), tries_left)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _close_with_loop(self, client: Any) -> None:
        """Have ``client`` closed while its event loop still runs, when that loop shuts down (``asyncio.run``
        closes every async generator first): an async client dropped after its loop closed would try to close its
        connections on a closed loop ("Task exception was never retrieved ... Event loop is closed")."""
        if client is self._client or id(client) in self._closers:  # shared with sync use, or already arranged
            return

        async def closer() -> Any:
            try:
                yield
            finally:
                self._closers.pop(id(client), None)
                with self._lock:
                    if self._async_client is client:
                        self._async_client = self._async_loop = None
                close = getattr(client, "close", None)
                if close is not None and inspect.iscoroutinefunction(close):
                    await close()

        generator = closer()
        self._closers[id(client)] = generator
        await generator.__anext__()  # started: the loop's async-generator hooks now know it

    def _mapped(self, error: Exception) -> ModelError:
        mapped = self._map_error(error)
        if mapped is None:
            raise error
        mapped.__cause__ = error
        return mapped

    def _adapted(self, body: dict[str, Any], error: ModelError, tries_left: int) -> None:
        """Return to send the request again, adapted; else raise ``error``. Besides 400, a 422 (FastAPI-based
        servers' validation) and a 500 (llama.cpp builds that report a refused ``response_format`` as a server
        error) are adapted to when their message names a sent parameter as refused."""
        if not tries_left or error.status_code not in _ADAPTABLE or not self._adapt(body, error):
            raise error

    def _read(self, response: Any, body: dict[str, Any]) -> RawCompletion:
        """``_completion``, with a 2xx that is not the API's JSON (an HTML page from a proxy, cut JSON) as one
        final ProviderError naming the server."""
        try:
            return self._completion(response, body)
        except ModelError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever a body of the wrong shape breaks
            where = self.settings.base_url or f"{self.provider}'s API"
            raise ProviderError(
                f"{self.provider} ({self.role}) at {where} answered with a body that is not its API's response "
                f"({type(error).__name__}: {_one_line(str(error))[:120]}); check base_url and any proxy in between",
                retryable=False, **self._error_context(),
            ) from None

    def close(self) -> None:
        """Close the clients that close synchronously; async-only ones are dropped and close when collected."""
        with self._lock:
            clients = {id(c): c for c in (self._client, self._async_client) if c is not None}
            self._client = self._async_client = None
        for client in clients.values():
            close = getattr(client, "close", None)
            if close is not None and not inspect.iscoroutinefunction(close):
                close()
