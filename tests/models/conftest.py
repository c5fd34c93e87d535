"""Fixtures for the cloud provider tests: hand-written cassettes replayed by vcrpy into the real SDK clients.

Nothing here reaches the network: ``record_mode="none"`` turns any request missing from a cassette into an
error. A request matches on method, URL and its JSON body compared as JSON, so a cassette pins down exactly what
each provider sends (headers are not compared: SDKs send varying user-agent and telemetry headers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import vcr
from pydantic import BaseModel
from vcr.request import Request

from atlas_learning.models import ChatModel

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"

#: The dummy keys the tests run with; real ones never appear in a cassette.
DUMMY_KEYS = {
    "OPENAI_API_KEY": "sk-test-0000000000000000",
    "ANTHROPIC_API_KEY": "sk-ant-test-0000000000000000",
    "GEMINI_API_KEY": "AIzaTest000000000000000000000000000000",
}
#: Variables the SDKs read that would redirect or re-key a test's requests.
SDK_ENV = (
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
)


def request_json(request: Request) -> Any:
    """A recorded or live request body parsed as JSON (None when empty, the text when not JSON)."""
    body = request.body
    if not body:
        return None
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_body(live: Request, recorded: Request) -> None:
    """vcrpy matcher: equal bodies as JSON, so key order and whitespace do not matter."""
    assert request_json(live) == request_json(recorded), "request bodies differ as JSON"


_vcr = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    serializer="yaml",
    record_mode="none",
    match_on=["method", "scheme", "host", "port", "path", "query", "json_body"],
    filter_headers=["authorization", "x-api-key", "x-goog-api-key"],
)
_vcr.register_matcher("json_body", _json_body)


@pytest.fixture
def cassette() -> Callable[..., Any]:
    """``with cassette("openai/text.yaml") as played:`` replays that cassette; ``played.all_played`` after."""
    return _vcr.use_cassette


@pytest.fixture
def api_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy API keys in the environment, and no SDK variable that could redirect a request."""
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_KEYS.items():
        monkeypatch.setenv(name, value)
    return DUMMY_KEYS


@pytest.fixture
def no_wait() -> Callable[[ChatModel], list[float]]:
    """``delays = no_wait(model)``: the model's backoff sleeps (sync and async) are recorded, not slept."""

    def attach(model: ChatModel) -> list[float]:
        delays: list[float] = []

        async def record(seconds: float) -> None:
            delays.append(seconds)

        model._sleep = delays.append
        model._async_sleep = record
        return delays

    return attach


# The structured answer the provider tests ask for. No docstring: it would enter the schema the cassettes pin.
class Verdict(BaseModel):
    accepted: bool
    guidance: str
    score: float


@pytest.fixture
def verdict_type() -> type[Verdict]:
    return Verdict


@pytest.fixture(autouse=True)
def _fresh_refusals() -> None:
    """Each test starts with no remembered "this model refused that parameter" (they last a process)."""
    from atlas_learning.models import _http

    with _http._REFUSED_LOCK:
        _http._REFUSED.clear()
