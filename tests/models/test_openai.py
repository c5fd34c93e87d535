"""``provider: openai`` through the real ``openai`` SDK, replaying hand-written cassettes (no network)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx2
import pytest
from pydantic import BaseModel

from atlas_learning.config import ModelSettings
from atlas_learning.errors import AuthenticationError, ModelTimeoutError, ProviderError
from atlas_learning.models import UsageLedger, create_model
from atlas_learning.models._http import error_for_status, parse_retry_after
from atlas_learning.models.openai import OpenAIModel, strict_json_schema

pytestmark = pytest.mark.usefixtures("api_keys")

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]
REVIEW = [
    {"role": "system", "content": "You review answers strictly."},
    {"role": "user", "content": "Question: What is 2 + 2? Answer: 4. Judge the answer."},
]


def openai_model(ledger: UsageLedger | None = None, **settings: object) -> OpenAIModel:
    model = create_model(
        ModelSettings(provider="openai", model="gpt-4.1-mini", **settings), role="teacher", ledger=ledger
    )
    assert isinstance(model, OpenAIModel)
    return model


def test_text_call_reports_tokens_cost_and_ledger(cassette, no_wait) -> None:
    ledger = UsageLedger()
    model = openai_model(ledger)
    no_wait(model)
    with cassette("openai/text.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris" and response.output is None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.attempts) == (27, 2, 1)
    assert response.usage.cost_usd == pytest.approx((27 * 0.40 + 2 * 1.60) / 1e6)
    assert ledger.as_dict()["teacher"] == {
        "calls": 1,
        "input_tokens": 27,
        "output_tokens": 2,
        "cost_usd": pytest.approx(1.4e-5),
    }
    assert played.all_played


async def test_async_text_call(cassette, no_wait) -> None:
    model = openai_model()
    no_wait(model)
    with cassette("openai/text.yaml") as played:
        response = await model.agenerate(MESSAGES)
    assert (response.text, response.usage.input_tokens, response.usage.output_tokens) == ("Paris", 27, 2)
    assert played.all_played


def test_async_client_follows_the_event_loop(cassette, no_wait) -> None:
    model = openai_model()
    no_wait(model)
    clients: list = []
    build = model._new_client
    model._new_client = lambda key, *, use_async: clients.append(build(key, use_async=use_async)) or clients[-1]
    with cassette("openai/text.yaml", allow_playback_repeats=True) as played:
        first = asyncio.run(model.agenerate(MESSAGES))
        second = asyncio.run(model.agenerate(MESSAGES))  # the first loop, and its connection pool, are closed
    assert first.text == second.text == "Paris" and played.play_count == 2
    # one client per loop, each closed while its loop still ran (not left to fail on a closed loop later)
    assert len(clients) == 2 and clients[0] is not clients[1] and all(c.is_closed() for c in clients)


def test_structured_call_uses_strict_json_schema(cassette, no_wait, verdict_type) -> None:
    model = openai_model()
    no_wait(model)
    with cassette("openai/structured.yaml") as played:
        response = model.generate(REVIEW, output_type=verdict_type)
    assert response.output == verdict_type(accepted=True, guidance="Correct and concise; no change needed.", score=0.95)
    assert played.all_played
    sent = json.loads(played.requests[0].body)  # the live request matched this body as JSON
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["response_format"]["json_schema"]["schema"]["additionalProperties"] is False


def test_rate_limit_waits_for_retry_after_then_succeeds(cassette, no_wait) -> None:
    model = openai_model()
    delays = no_wait(model)
    with cassette("openai/rate_limit_then_success.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris"
    assert delays == [2.0]
    assert response.attempts == 2
    assert played.all_played


def test_wrong_key_is_an_authentication_error_not_retried(cassette, no_wait) -> None:
    model = openai_model()
    delays = no_wait(model)
    with cassette("openai/unauthorized.yaml") as played, pytest.raises(AuthenticationError) as caught:
        model.generate(MESSAGES)
    message = str(caught.value)
    assert "\n" not in message
    assert "rejected the API key" in message and "OPENAI_API_KEY" in message and "Incorrect API key" in message
    assert caught.value.status_code == 401
    assert played.play_count == 1 and delays == []


def test_server_errors_exhaust_max_retries(cassette, no_wait) -> None:
    model = openai_model(max_retries=1)
    delays = no_wait(model)
    with cassette("openai/server_error_exhausted.yaml") as played, pytest.raises(ProviderError) as caught:
        model.generate(MESSAGES)
    assert caught.value.retryable and caught.value.status_code == 500
    assert "HTTP 500" in str(caught.value) and "The server had an error" in str(caught.value)
    assert played.play_count == 2 and played.all_played
    assert delays == [0.5]  # retry_base_delay_s * 2**0: no Retry-After on a 500


def test_missing_key_names_the_variable_without_any_request(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    model = openai_model()
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        model.generate(MESSAGES)
    assert model._client is None  # no client was built, so nothing was sent


def test_compatible_server_gets_base_url_and_max_tokens() -> None:
    model = openai_model(base_url="http://localhost:8000/v1", api_key_env="VLLM_API_KEY")
    with pytest.raises(AuthenticationError, match="VLLM_API_KEY"):
        model._client_for(use_async=False)
    model.settings.api_key_env = "OPENAI_API_KEY"
    client = model._client_for(use_async=False)
    assert str(client.base_url) == "http://localhost:8000/v1/" and client.max_retries == 0
    body = model._body(MESSAGES, None, None, 0.0, 64)
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
    model.close()
    model.close()


def test_self_hosted_server_needs_no_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = openai_model(base_url="http://localhost:11434/v1")
    client = model._client_for(use_async=False)
    assert client.api_key == "EMPTY"  # vLLM's convention; Ollama and llama.cpp accept any key
    model.close()


class Step(BaseModel):
    action: str
    note: str | None = None


class Plan(BaseModel):
    steps: list[Step]
    first: Step = Step(action="start")


class Tagged(BaseModel):
    tags: dict[str, int]


def test_strict_schema_closes_objects_and_requires_every_field() -> None:
    strict = strict_json_schema(Plan.model_json_schema())
    assert strict is not None
    step = strict["$defs"]["Step"]
    assert step["additionalProperties"] is False and step["required"] == ["action", "note"]
    assert "default" not in step["properties"]["note"]
    assert strict["required"] == ["steps", "first"]
    assert strict["properties"]["steps"]["items"] == {"$ref": "#/$defs/Step"}
    assert json.dumps(strict).count('"additionalProperties": false') == 2


def test_unstrictable_schema_is_sent_non_strict() -> None:
    assert strict_json_schema(Tagged.model_json_schema()) is None
    body = openai_model()._body(MESSAGES, Tagged.model_json_schema(), "Tagged[v1]", 0.0, 64)
    spec = body["response_format"]["json_schema"]
    assert spec["strict"] is False and spec["name"] == "Tagged_v1"
    assert spec["schema"] == Tagged.model_json_schema()


@pytest.mark.parametrize(
    ("value", "ms_value", "expected"),
    [
        ("2", None, 2.0),
        ("0.5", None, 0.5),
        ("2", "1500", 1.5),
        (format_datetime(datetime.fromtimestamp(1_000_030, tz=timezone.utc), usegmt=True), None, 30.0),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_retry_after_parsing(value: str | None, ms_value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, ms_value=ms_value, now=1_000_000) == expected


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (403, AuthenticationError, False),
        (404, ProviderError, False),
        (408, ProviderError, True),
        (409, ProviderError, True),
        (422, ProviderError, False),
        (503, ProviderError, True),
    ],
)
def test_status_mapping(status: int, error_type: type, retryable: bool) -> None:
    error = error_for_status(status, "line one\nline two", key_env="OPENAI_API_KEY", provider="openai", role="teacher")
    assert type(error) is error_type and error.retryable is retryable and error.status_code == status
    assert "line one line two" in str(error) and "\n" not in str(error)


def test_sdk_timeout_and_connection_errors_are_typed() -> None:
    import openai

    model = openai_model(timeout_s=5)
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    timeout = model._map_error(openai.APITimeoutError(request=request))
    assert isinstance(timeout, ModelTimeoutError) and timeout.retryable and "within 5s" in str(timeout)
    lost = model._map_error(openai.APIConnectionError(request=request))
    assert isinstance(lost, ProviderError) and lost.retryable
    assert model._map_error(KeyError("not the SDK's")) is None
