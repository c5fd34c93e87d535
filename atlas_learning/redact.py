"""Secret redaction: API keys, bearer tokens and similar never reach the store or an export.

:class:`Redactor` replaces matches of its patterns in strings, recursively through dicts and lists, before a
record is written. The built-in patterns cover common key formats (OpenAI, Anthropic, Google, AWS, GitHub,
Slack, JWTs, PEM private keys), ``Authorization: Bearer ...``, passwords in URLs (``postgresql://user:pw@host``)
and ``key=value`` pairs whose key names a secret; configuration
adds more (``redaction.patterns``). Dict values under a secret-looking key are replaced whole.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import re
import string
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

__all__ = ["Redactor", "DEFAULT_PATTERNS", "LIBRARY_PLUGINS", "REDACTED", "default_redactor"]

REDACTED = "[REDACTED]"

#: A pattern's named group ``keep`` (a prefix such as ``Bearer `` or ``api_key=``) is kept; the rest is replaced.
#: Every pattern runs in linear time on any input: a pattern that could start inside a long run of word characters
#: is anchored to the run's start with a lookbehind, so no position is tried twice over a long token.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"sk-ant-[A-Za-z0-9_\-]{16,}",  # Anthropic
    r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{20,}",  # OpenAI
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub token (not the tail of a fine-grained one's "..ghs_...")
    r"github_pat_[A-Za-z0-9_]{22,}",  # GitHub fine-grained token
    r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe keys
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack token
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
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

#: detect-secrets (Yelp's maintained detector set) plugins whose patterns run beside the built-in ones: provider
#: key shapes this module has no pattern of its own for (Azure, Discord, GitLab, Mailchimp, PyPI, SendGrid, Slack
#: webhooks, Square, Telegram, Twilio, Artifactory, IBM and SoftLayer credentials) and second opinions on the ones it
#: has. A pattern's groups, when it has them, are the secret; otherwise its whole match is. Left out:
#: JwtTokenDetector and NpmDetector (their patterns backtrack over the whole input: 12 s and 30 s on 200 KB of "eyJ"
#: or "//"; the JWT and ``key=value`` patterns here cover both), PrivateKeyDetector (it matches the header line only;
#: the PEM pattern takes the block), KeywordDetector (the ``key=value`` pattern), the high-entropy plugins (any quoted
#: hash or id would go: entropy is judged here only next to a secret-like name) and IPPublicDetector (an address is
#: not a secret).
LIBRARY_PLUGINS: tuple[str, ...] = (
    "artifactory.ArtifactoryDetector", "aws.AWSKeyDetector", "azure_storage_key.AzureStorageKeyDetector",
    "basic_auth.BasicAuthDetector", "cloudant.CloudantDetector", "discord.DiscordBotTokenDetector",
    "github_token.GitHubTokenDetector", "gitlab_token.GitLabTokenDetector", "ibm_cloud_iam.IbmCloudIamDetector",
    "ibm_cos_hmac.IbmCosHmacDetector", "mailchimp.MailchimpDetector", "openai.OpenAIDetector",
    "pypi_token.PypiTokenDetector", "sendgrid.SendGridDetector", "slack.SlackDetector",
    "softlayer.SoftlayerDetector", "square_oauth.SquareOAuthDetector", "stripe.StripeDetector",
    "telegram_token.TelegramBotTokenDetector", "twilio.TwilioKeyDetector",
)

#: A token that may be a secret because of the name before it: a secret-like word, at most 24 characters of
#: anything else on its line ("my api key is", "token (staging) ->"), then 16 or more key characters. Whether it is
#: one is then judged by its entropy (:func:`_high_entropy`).
_NEAR_NAME = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:api[ _-]?keys?|secrets?|tokens?|passwords?|passwd|passphrase|access[ _-]?keys?|credentials?|"
    r"private[ _-]?keys?)(?![A-Za-z0-9])[^\n\r]{0,24}?(?<![A-Za-z0-9+/_\-])(?P<token>[A-Za-z0-9+/_\-]{16,}={0,2})(?![A-Za-z0-9+/_\-=])")

_SECRET_KEY = re.compile(r"(?i)^(?:.*[_-])?(?:api[_-]?key|secret|token|password|passwd|authorization|private[_-]?key|credentials?)$")


#: How many texts a redactor remembers the redaction of, and the longest it remembers (at most 4 MB in all).
_MEMO_ENTRIES, _MEMO_LONGEST = 4096, 1024

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


@functools.lru_cache(maxsize=1)
def _library_patterns() -> tuple[re.Pattern[str], ...]:
    """The patterns of :data:`LIBRARY_PLUGINS`, imported on first use (detect-secrets takes about 0.1 s to import)."""
    import importlib

    patterns: list[re.Pattern[str]] = []
    for name in LIBRARY_PLUGINS:
        module, plugin = name.rsplit(".", 1)
        patterns += getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), plugin).denylist
    return tuple(patterns)


#: A value that is an id or a digest and nothing else (lower-case hex, UUID dashes): no pattern matches one, and
#: every row carries a few.
_ID = re.compile(r"[0-9a-f\-]+")
#: A run of key characters long enough to be what a library pattern or the near-name check looks for.
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{16,}")
#: Tokens longer than this are data, not a provider's key (the longest library shape, a GitLab agent token, is
#: at most 1,032 characters; PEM blocks have their own pattern).
_LONGEST_KEY = 4096
#: How far before a long token its name may start ("cloudant_password = '", "my api key is "), and after it.
_BEFORE, _AFTER = 64, 2


def _windows(value: str) -> list[tuple[int, int]]:
    """Merged (start, end) windows around the long tokens of ``value``."""
    windows: list[tuple[int, int]] = []
    for match in _LONG_TOKEN.finditer(value):
        if match.end() - match.start() > _LONGEST_KEY or not _may_be_a_key(match.group()):
            continue  # a blob (base64 data, a digest run), a word run, a CONSTANT_NAME: no provider issues such keys
        start, end = max(0, match.start() - _BEFORE), min(len(value), match.end() + _AFTER)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def _may_be_a_key(token: str) -> bool:
    """Whether a long token could be a provider's key: it has a digit, or upper- and lower-case letters both. A
    random key of 16 or more letters and digits fails this about once in a million (lower-case-only keys, such as
    a Cloudant password, appear only in URLs, where the URL-password pattern takes them); words, paths without
    digits and CONSTANT_NAMES pass without a look."""
    return any(c.isdigit() for c in token) or (not token.islower() and not token.isupper())


def _random_looking(token: str) -> bool:
    """Whether a token, or one of its parts of 16 or more characters between ``-_/+=.``, has a Shannon entropy of
    at least 75 % of what a string of its length and alphabet (hex or not) can have: a random 16-character key has
    0.74-1.0 (median 0.94), a 32-character hex digest 0.77-1.0, ``token_budget_exceeded_2`` 0.74, a UUID 0.70."""
    return any(len(part) >= 16 and _entropy_share(part) >= 0.75 for part in (token, *_PARTS.split(token)))


_PARTS = re.compile(r"[-_/+=.]+")


def _entropy_share(text: str) -> float:
    """Shannon entropy of ``text`` as a share of the most a string of its length and alphabet (hex or not) has."""
    length = len(text)
    entropy = -sum(n / length * math.log2(n / length) for n in collections.Counter(text).values())
    alphabet = 16 if all(c in string.hexdigits for c in text) else 64
    return entropy / math.log2(min(length, alphabet))


def _high_entropy(token: str) -> bool:
    """Whether a token after a secret-like name is a secret: it may be a key, and it looks random."""
    return _may_be_a_key(token) and _random_looking(token)


class Redactor:
    """Replaces secrets in strings and nested JSON-like values. ``enabled=False`` makes it a no-op.

    Three kinds of detector run: the built-in patterns and ``extra_patterns``, detect-secrets' provider patterns
    (:data:`LIBRARY_PLUGINS`), and high-entropy tokens right after a secret-like name ("my api key is ...")."""

    def __init__(self, extra_patterns: Iterable[str] = (), *, enabled: bool = True, replacement: str = REDACTED) -> None:
        self.enabled = enabled
        self.replacement = replacement
        try:
            patterns = [*DEFAULT_PATTERNS, *extra_patterns]
            self._patterns = [re.compile(p) for p in patterns]
        except re.error as exc:
            from .errors import ConfigError

            raise ConfigError(f"redaction.patterns: invalid regular expression ({exc}); fix or remove it") from None
        self._library = _library_patterns() if enabled else ()
        # One pass to find out whether any built-in pattern matches at all: most text holds no secret.
        self._any = re.compile("|".join(_scoped(p) for p in patterns))
        # Rows repeat the same short texts (column and argument names, tool names, a conversation's earlier
        # messages) on every call: each is redacted once, then looked up. Redaction is a pure function of the
        # text and this redactor's patterns.
        self._memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(self._text)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        if not self.enabled or len(value) < 8:
            return value
        return self._memo(value) if len(value) <= _MEMO_LONGEST else self._text(value)

    def _text(self, value: str) -> str:
        if _ID.fullmatch(value):
            return value
        if self._any.search(value):
            for pattern in self._patterns:
                value = pattern.sub(self._replace, value)
        return self._long_tokens(value) if len(value) >= 16 else value

    def _long_tokens(self, value: str) -> str:
        """``value`` with the secrets replaced that the library patterns and the near-name entropy check find.

        Every one of them ends in a token of at least 11 key characters, so they are looked for only in a window
        around each such token (the token, what may name it before, a closing quote after): prose and short values
        pass with one cheap search. The windows are searched in place (``finditer(value, start, end)``), so
        lookbehinds and anchors see the real text."""
        spans: list[tuple[int, int]] = []
        for start, end in _windows(value):
            for pattern in self._library:
                for match in pattern.finditer(value, start, end):
                    groups = [match.span(i) for i in range(1, pattern.groups + 1) if len(match.group(i) or "") >= 8]
                    spans += groups or [match.span()]  # short groups are prefixes ("ghp", "glpat"): the match is the secret
            for match in _NEAR_NAME.finditer(value, start, end):
                if _high_entropy(match.group("token")):
                    spans.append(match.span("token"))
        if not spans:
            return value
        out, at = [], 0
        for left, right in sorted(spans):
            if right <= at:
                continue
            out += [value[at:max(at, left)], self.replacement]
            at = right
        return "".join([*out, value[at:]])

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

    def columns(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a table row's fields with secrets replaced in their values. The names are the table's
        columns, which are never secrets and never named like one (a test holds every table to that), so only
        the values are looked at: a row costs a look per value, not per name as well."""
        if not self.enabled:
            return dict(fields)
        copy = {}
        for name, item in fields.items():
            kind = type(item)
            if kind in _PLAIN:
                copy[name] = item
            elif kind is str:
                copy[name] = self.text(item) if len(item) >= 8 else item
            else:
                copy[name] = self._value(item)
        return copy

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
