"""``provider: google`` through the real ``google-genai`` SDK, replaying hand-written cassettes (no network)."""

from __future__ import annotations

import json

import httpx2
import pytest

from atlas_learning.config import ModelSettings
from atlas_learning.errors import AuthenticationError, ModelTimeoutError, ProviderError
from atlas_learning.models import UsageLedger, create_model
from atlas_learning.models.google import GoogleModel

pytestmark = pytest.mark.usefixtures("api_keys")

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]
REVIEW = [
    {"role": "system", "content": "You review answers strictly."},
    {"role": "user", "content": "Question: What is 2 + 2? Answer: 4. Judge the answer."},
]


def google_model(ledger: UsageLedger | None = None, **settings: object) -> GoogleModel:
    model = create_model(
        ModelSettings(provider="google", model="gemini-2.5-flash", **settings), role="probe", ledger=ledger
    )
    assert isinstance(model, GoogleModel)
    return model


def test_text_call_reports_tokens_cost_and_ledger(cassette, no_wait) -> None:
    ledger = UsageLedger()
    model = google_model(ledger)
    no_wait(model)
    with cassette("google/text.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris" and response.output is None
    # 1 answer token + 31 thinking tokens: Google bills both at the output price
    assert (response.usage.input_tokens, response.usage.output_tokens, response.attempts) == (14, 32, 1)
    assert response.usage.cost_usd == pytest.approx((14 * 0.30 + 32 * 2.50) / 1e6)
    assert ledger.as_dict()["probe"] == {
        "calls": 1,
        "input_tokens": 14,
        "output_tokens": 32,
        "cost_usd": pytest.approx(8.42e-5),
    }
    assert played.all_played
    model.close()


async def test_async_text_call(cassette, no_wait) -> None:
    model = google_model()
    no_wait(model)
    with cassette("google/text.yaml") as played:
        response = await model.agenerate(MESSAGES)
    assert (response.text, response.usage.input_tokens, response.usage.output_tokens) == ("Paris", 14, 32)
    assert played.all_played


def test_structured_call_uses_response_json_schema(cassette, no_wait, verdict_type) -> None:
    model = google_model()
    no_wait(model)
    with cassette("google/structured.yaml") as played:
        response = model.generate(REVIEW, output_type=verdict_type)
    assert response.output == verdict_type(accepted=True, guidance="Correct and concise; no change needed.", score=0.95)
    assert played.all_played
    sent = json.loads(played.requests[0].body)["generationConfig"]  # the live request matched this body as JSON
    assert sent["responseMimeType"] == "application/json"
    assert sent["responseJsonSchema"] == verdict_type.model_json_schema()


def test_rate_limit_waits_for_retry_info_then_succeeds(cassette, no_wait) -> None:
    model = google_model()
    delays = no_wait(model)
    with cassette("google/rate_limit_then_success.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris"
    assert delays == [2.0]  # from the RetryInfo detail; the SDK itself did not retry (attempts=1)
    assert response.attempts == 2
    assert played.all_played


def test_invalid_key_is_an_authentication_error_not_retried(cassette, no_wait) -> None:
    model = google_model()
    delays = no_wait(model)
    with cassette("google/invalid_key.yaml") as played, pytest.raises(AuthenticationError) as caught:
        model.generate(MESSAGES)
    message = str(caught.value)
    assert "\n" not in message
    assert "rejected the API key" in message and "GEMINI_API_KEY" in message and "API key not valid" in message
    assert caught.value.status_code == 400  # what Gemini really answers to a wrong key
    assert played.play_count == 1 and delays == []


def test_missing_key_names_the_variable_without_any_request(monkeypatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    model = google_model()
    with pytest.raises(AuthenticationError, match="GEMINI_API_KEY"):
        model.generate(MESSAGES)
    assert model._client is None


async def test_one_client_serves_sync_and_async_with_sdk_retries_off() -> None:
    model = google_model(timeout_s=12.5, base_url="https://gemini-proxy.internal")
    client = model._client_for(use_async=False)
    assert model._client_for(use_async=True) is client
    options = client._api_client._http_options
    assert (options.timeout, options.retry_options.attempts, options.base_url) == (
        12500,
        1,
        "https://gemini-proxy.internal",
    )
    model.close()


def test_transport_failures_are_typed() -> None:
    model = google_model()
    timeout = model._map_error(httpx2.ReadTimeout("The read operation timed out"))
    assert isinstance(timeout, ModelTimeoutError) and timeout.retryable and "60s" in str(timeout)
    lost = model._map_error(httpx2.ConnectError("[Errno 111] Connection refused"))
    assert isinstance(lost, ProviderError) and lost.retryable and "Connection refused" in str(lost)
    assert model._map_error(ValueError("a bug")) is None
