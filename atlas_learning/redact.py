"""Secret redaction: API keys, bearer tokens and similar never reach the store or an export.

:class:`Redactor` replaces matches of its patterns in strings, recursively through dicts and lists, before a
record is written. The built-in patterns cover common key formats (OpenAI, Anthropic, Google, AWS, GitHub,
Slack, JWTs, PEM private keys), ``Authorization: Bearer ...``, passwords in URLs (``postgresql://user:pw@host``)
and ``key=value`` pairs whose key names a secret; configuration
adds more (``redaction.patterns``). Dict values under a secret-looking key are replaced whole.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

__all__ = ["Redactor", "DEFAULT_PATTERNS", "REDACTED", "default_redactor"]

REDACTED = "[REDACTED]"

#: A pattern's named group ``keep`` (a prefix such as ``Bearer `` or ``api_key=``) is kept; the rest is replaced.
#: Every pattern runs in linear time on any input: a pattern that could start inside a long run of word characters
#: is anchored to the run's start with a lookbehind, so no position is tried twice over a long token.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"sk-ant-[A-Za-z0-9_\-]{16,}",  # Anthropic
    r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{20,}",  # OpenAI
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub token
    r"github_pat_[A-Za-z0-9_]{22,}",  # GitHub fine-grained token
    r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe keys
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack token
    r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
    r"(?i)(?P<keep>bearer\s+)[A-Za-z0-9._~+/\-]{12,}=*",  # Authorization: Bearer <token>
    r"(?i)(?P<keep>authorization[\"']?\s*[:=]\s*[\"']?basic\s+)[A-Za-z0-9+/]{8,}={0,2}",  # Authorization: Basic <b64>
    r"(?<![A-Za-z0-9+.\-])(?P<keep>[a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@]+(?=@)",  # user:password@ in a URL or DSN
    # PEM private keys; a block cut before its END line still loses its body
    # (its header lines, its base64 body, its END line when there is one: a block cut before the end loses its body)
    # (also inside JSON text, where its line breaks are written \n)
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:\s*[A-Za-z-]+:[^\n]*)*(?:[A-Za-z0-9+/=\s]|\\+[nr])*(?:-----END [A-Z ]*PRIVATE KEY-----)?",
    # key=value, key: value, for a name that holds a secret-like word; the name is taken whole (possessive), once
    # (quotes may be escaped, as in JSON text inside JSON)
    r"(?i)(?<![A-Za-z0-9_\-])(?P<keep>(?=[A-Za-z0-9_\-]*?(?:api[_-]?key|secret|token|password|passwd|access[_-]?key|credential|"
    r"authorization|private[_-]?key))[A-Za-z0-9_\-]*+\\?[\"']?\s*[:=]\s*\\?[\"']?)(?=[^\s\"'\\,;}]*[A-Za-z0-9])[^\s\"'\\,;}]{6,}",
)

_SECRET_KEY = re.compile(r"(?i)^(?:.*[_-])?(?:api[_-]?key|secret|token|password|passwd|authorization|private[_-]?key|credentials?)$")


#: Values with no text in them (returned as they are, without a call).
_PLAIN = frozenset({int, float, bool, type(None), datetime, date})


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a dict key names a secret (the same few column and argument names come back on every row)."""
    return _SECRET_KEY.match(key) is not None


def _scoped(pattern: str) -> str:
    """A pattern fit to join with others: global inline flags scoped, named groups unnamed."""
    pattern = pattern.replace("(?P<keep>", "(?:")
    flags = re.match(r"^\(\?([aiLmsux]+)\)", pattern)
    if flags:
        return f"(?{flags.group(1)}:{pattern[flags.end():]})"
    return f"(?:{pattern})"


class Redactor:
    """Replaces secrets in strings and nested JSON-like values. ``enabled=False`` makes it a no-op."""

    def __init__(self, extra_patterns: Iterable[str] = (), *, enabled: bool = True, replacement: str = REDACTED) -> None:
        self.enabled = enabled
        self.replacement = replacement
        try:
            patterns = [*DEFAULT_PATTERNS, *extra_patterns]
            self._patterns = [re.compile(p) for p in patterns]
            # One pass to find out whether any pattern matches at all: most text holds no secret.
            self._any = re.compile("|".join(_scoped(p) for p in patterns))
        except re.error as exc:
            from .errors import ConfigError

            raise ConfigError(f"redaction.patterns: invalid regular expression ({exc}); fix or remove it") from None

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        if not self.enabled or len(value) < 8 or not self._any.search(value):
            return value
        for pattern in self._patterns:
            value = pattern.sub(self._replace, value)
        return value

    def clip(self, data: Any, limit: int = 4000) -> Any:
        """JSON-ready ``data`` redacted, or its JSON text redacted and then cut at ``limit`` characters when longer
        (redacted first: a secret the cut would split is still found whole)."""
        redacted = self.value(data)  # as structure first: a secret under a secret-named key goes whole
        text = json.dumps(redacted, ensure_ascii=False, default=str)
        if len(text) <= limit:
            return redacted
        return self.text(text)[:limit] + "…[cut]"

    def cut(self, text: str, limit: int, marker: str = "…") -> str:
        """``text`` redacted, then cut at ``limit`` characters (with ``marker``): a cut never splits a secret."""
        text = self.text(text)
        return text if len(text) <= limit else text[: max(0, limit - len(marker))] + marker

    def _replace(self, match: re.Match[str]) -> str:
        keep = match.groupdict().get("keep")
        return (keep or "") + self.replacement

    def value(self, value: Any) -> Any:
        """A copy of a str, dict, list or tuple with secrets replaced; other values are returned as they are."""
        if not self.enabled:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN:  # most fields of a row: nothing to look at, no call to make
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            copy = {}
            for key, item in value.items():
                kind = type(item)
                if isinstance(key, str):
                    if item and kind is not bool and _secret_key(key):
                        copy[key] = self.replacement  # whatever it holds: text, a number, bytes, a list, a mapping
                        continue
                    if len(key) >= 8:
                        key = self.text(key)  # a key can be a secret too
                if kind in _PLAIN:
                    copy[key] = item
                elif isinstance(item, str):
                    copy[key] = self.text(item)
                else:
                    copy[key] = self._value(item)
            return copy
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._value(item) for item in value]
        plain = _plain(value)
        return plain if plain is value else self._value(plain)


def _plain(value: Any) -> Any:
    """A value that is not a str, dict or list as what it will be stored as (so its text is redacted, not its
    JSON later): a pydantic model's or a dataclass's fields, a mapping as a dict, bytes as text, else its text."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:  # noqa: BLE001 - a model that cannot dump itself is stored as its text
            return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name, None) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): item for key, item in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, date):
        return value
    return str(value)


@functools.lru_cache(maxsize=1)
def default_redactor() -> Redactor:
    """A redactor with the built-in patterns, for text cut where no configured one is at hand (prompts, check
    reasons): the configured patterns still apply when the text is stored."""
    return Redactor()
