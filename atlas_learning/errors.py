"""Typed errors raised by Atlas.

Every error carries a one-line message that says what went wrong and what to do about it, so the
command line can print ``str(error)`` and nothing else. Callers that need to branch catch the
specific subclass; callers that only need to report catch :class:`AtlasError`.
"""

from __future__ import annotations

__all__ = [
    "AtlasError",
    "ConfigError",
    "ModelError",
    "AuthenticationError",
    "RateLimitError",
    "ProviderError",
    "ModelTimeoutError",
    "InvalidOutputError",
    "OutputTruncatedError",
    "RefusalError",
    "StoreError",
    "StoreNotFoundError",
    "UsageError",
]


class AtlasError(Exception):
    """Base class of every error Atlas raises on purpose."""


class ConfigError(AtlasError, ValueError):
    """A configuration file, dict, keyword or ``ATLAS_*`` variable is invalid."""


class UsageError(AtlasError, ValueError):
    """A command was given an option or argument it cannot take (a bad choice, a reward outside 0..1, options
    that do not go together). The ``atlas`` command prints it as a usage error and exits with status 2, where
    every other AtlasError exits with status 1."""


class StoreError(AtlasError):
    """The store could not be reached or a write failed.

    ``retryable`` is True for a lost race (a unique-key conflict, a lock, a serialization failure) that the same
    transaction may win when run again.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class StoreNotFoundError(StoreError):
    """A store opened for reading only (``Store(..., create=False)``) is not there: no SQLite file at the path,
    or a database without the Atlas schema. Readers never create one. ``where`` is the file or (redacted) URL
    looked at, ``detail`` what was found there."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"no store at {where} ({detail})")
        self.where = where
        self.detail = detail


class ModelError(AtlasError):
    """A model call failed. ``provider``, ``model`` and ``role`` say which call."""

    #: Whether trying the same call again may succeed (rate limits, 5xx, timeouts).
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        role: str = "",
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.role = role
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        #: Tokens and cost the failed call consumed before failing (a ``models.Usage``), set by the model layer.
        self.usage: object | None = None


class AuthenticationError(ModelError):
    """The provider refused the credentials, or none were found."""


class RateLimitError(ModelError):
    """The provider answered 429; ``retry_after_s`` holds its Retry-After when it sent one."""

    retryable = True


class ProviderError(ModelError):
    """The provider failed (5xx, connection error) or refused the request (other 4xx)."""

    def __init__(self, message: str, *, retryable: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retryable = retryable


class ModelTimeoutError(ModelError):
    """The call took longer than the role's ``timeout_s``."""

    retryable = True


class InvalidOutputError(ModelError):
    """The model's structured output did not validate, even after one repair attempt.

    ``raw_output`` keeps what the model said, so callers can record it instead of losing it.
    """

    def __init__(self, message: str, *, raw_output: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.raw_output = raw_output


class OutputTruncatedError(InvalidOutputError):
    """The model stopped at its token limit (``max_tokens``) before its answer was complete. A structured call is
    retried once with a larger budget first (``structured_retry_token_factor``)."""

    def __init__(self, message: str, *, max_tokens: int = 0, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.max_tokens = max_tokens


class RefusalError(ModelError):
    """The model or the provider's safety system declined to answer (a refusal, a content filter, a safety or
    recitation block). ``reason`` is the provider's own; the call is never sent again."""

    def __init__(self, message: str, *, reason: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.reason = reason
