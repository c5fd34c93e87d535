"""``provider: anthropic`` through the real ``anthropic`` SDK, replaying hand-written cassettes (no network)."""

from __future__ import annotations

import json

import pytest

from atlas_learning.config import ModelSettings
from atlas_learning.errors import AuthenticationError
from atlas_learning.models import UsageLedger, create_model
from atlas_learning.models.anthropic import AnthropicModel

pytestmark = pytest.mark.usefixtures("api_keys")

MODEL = "claude-sonnet-4-6"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]
REVIEW = [
    {"role": "system", "content": "You review answers strictly."},
    {"role": "user", "content": "Question: What is 2 + 2? Answer: 4. Judge the answer."},
]


def anthropic_model(ledger: UsageLedger | None = None, **settings: object) -> AnthropicModel:
    model = create_model(
        ModelSettings(provider="anthropic", model=MODEL, **settings), role="judge_large", ledger=ledger
    )
    assert isinstance(model, AnthropicModel)
    return model


def test_text_call_reports_tokens_cost_and_ledger(cassette, no_wait) -> None:
    ledger = UsageLedger()
    # claude-sonnet-4-6 has no row in the catalog (its price is unknown there): the role's prices apply
    model = anthropic_model(ledger, input_cost_per_mtok=3.00, output_cost_per_mtok=15.00)
    no_wait(model)
    with cassette("anthropic/text.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris" and response.output is None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.attempts) == (21, 4, 1)
    assert response.usage.cost_usd == pytest.approx((21 * 3.00 + 4 * 15.00) / 1e6)
    assert ledger.as_dict()["judge_large"] == {
        "calls": 1,
        "input_tokens": 21,
        "output_tokens": 4,
        "cost_usd": pytest.approx(1.23e-4),
    }
    assert played.all_played


async def test_async_text_call(cassette, no_wait) -> None:
    model = anthropic_model()
    no_wait(model)
    with cassette("anthropic/text.yaml") as played:
        response = await model.agenerate(MESSAGES)
    assert (response.text, response.usage.input_tokens, response.usage.output_tokens) == ("Paris", 21, 4)
    assert played.all_played


def test_structured_call_uses_native_output_format(cassette, no_wait, verdict_type) -> None:
    model = anthropic_model()
    no_wait(model)
    with cassette("anthropic/structured_native.yaml") as played:
        response = model.generate(REVIEW, output_type=verdict_type)
    assert response.output == verdict_type(accepted=True, guidance="Correct and concise; no change needed.", score=0.95)
    assert played.all_played
    sent = json.loads(played.requests[0].body)  # the live request matched this body as JSON
    assert sent["output_config"]["format"]["type"] == "json_schema" and "tools" not in sent and "tool_choice" not in sent
    assert sent["output_config"]["format"]["schema"]["additionalProperties"] is False


def test_a_model_refusing_output_format_falls_back_to_one_forced_tool_and_stays_there(cassette, no_wait, verdict_type) -> None:
    model = anthropic_model()
    no_wait(model)
    with cassette("anthropic/structured_fallback.yaml") as played:
        first = model.generate(REVIEW, output_type=verdict_type)
        second = model.generate(REVIEW, output_type=verdict_type)  # straight to the tool: no second 400
    assert first.output == second.output == verdict_type(accepted=True, guidance="Correct and concise; no change needed.", score=0.95)
    assert played.all_played and played.play_count == 3
    sent = json.loads(played.requests[1].body)
    assert sent["tool_choice"] == {"type": "tool", "name": "Verdict"}
    assert sent["tools"][0]["input_schema"] == verdict_type.model_json_schema()


def test_rate_limit_waits_for_retry_after_then_succeeds(cassette, no_wait) -> None:
    model = anthropic_model()
    delays = no_wait(model)
    with cassette("anthropic/rate_limit_then_success.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris"
    assert delays == [2.0]
    assert response.attempts == 2
    assert played.all_played


def test_wrong_key_is_an_authentication_error_not_retried(cassette, no_wait) -> None:
    model = anthropic_model()
    delays = no_wait(model)
    with cassette("anthropic/unauthorized.yaml") as played, pytest.raises(AuthenticationError) as caught:
        model.generate(MESSAGES)
    message = str(caught.value)
    assert "\n" not in message
    assert "rejected the API key" in message and "ANTHROPIC_API_KEY" in message and "invalid x-api-key" in message
    assert played.play_count == 1 and delays == []


def test_missing_key_names_the_variable_without_any_request(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    model = anthropic_model()
    with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY"):
        model.generate(MESSAGES)
    assert model._client is None


def test_system_messages_go_to_system_and_same_role_turns_merge() -> None:
    model = anthropic_model()
    body = model._body(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Context: a file."},
            {"role": "user", "content": "Summarize it."},
            {"role": "system", "content": "Use English."},
            {"role": "assistant", "content": "Sure."},
        ],
        None,
        None,
        0.7,
        100,
    )
    assert body["system"] == "Be brief.\n\nUse English."
    assert body["messages"] == [
        {"role": "user", "content": "Context: a file.\n\nSummarize it."},
        {"role": "assistant", "content": "Sure."},
    ]
    assert "temperature" not in body and body["max_tokens"] == 100
