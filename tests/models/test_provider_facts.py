"""What the providers document about current models, replayed through the real SDK clients (issue 16):
reasoning models take no temperature, an unsupported parameter is dropped once and remembered, cached tokens are
priced as cached, truncation and refusals are typed errors and never answers, a 2xx that is not the API's JSON is
one line naming the server, and a provider's default key goes to that provider's host only.

The cassettes (tests/cassettes/openai/*.yaml, anthropic/cached_and_refusal.yaml) were written from the APIs'
documented response and error objects; none was recorded from a live API."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from atlas_learning.config import ModelSettings
from atlas_learning.errors import OutputTruncatedError, ProviderError, RefusalError
from atlas_learning.models import ChatModel, UsageLedger, create_model
from atlas_learning.models._base import RawCompletion
from atlas_learning.models.catalog import MODELS, facts_for

pytestmark = pytest.mark.usefixtures("api_keys")

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]


def model_for(**settings: Any) -> ChatModel:
    return create_model(ModelSettings(**settings), role="teacher", ledger=UsageLedger())


def test_a_reasoning_model_gets_no_temperature_and_its_cached_tokens_are_priced_as_cached(cassette, no_wait) -> None:
    model = model_for(provider="openai", model="gpt-5-mini", reasoning_effort="low")
    no_wait(model)
    with cassette("openai/reasoning_cached.yaml") as played:  # the body matcher pins: no temperature, reasoning_effort
        response = model.generate(MESSAGES)
    assert response.text == "Paris" and played.all_played
    assert (response.usage.input_tokens, response.usage.cached_input_tokens) == (2000, 1900)
    # 100 fresh at $0.25, 1,900 cached at $0.025, 70 out at $2.00 (billing all 2,000 at full price: 2.2x more input)
    assert response.usage.cost_usd == pytest.approx((100 * 0.25 + 1900 * 0.025 + 70 * 2.00) / 1e6)


def test_an_unsupported_temperature_is_dropped_once_and_never_sent_again(cassette, no_wait) -> None:
    model = model_for(provider="openai", model="gpt-6-sol")  # not in the catalog: its defaults are tried first
    no_wait(model)
    with cassette("openai/temperature_refused.yaml") as played:
        first = model.generate(MESSAGES)
        second = model.generate(MESSAGES)  # matched only by a body without temperature
    assert (first.text, second.text) == ("Paris", "Paris")
    assert played.all_played and played.play_count == 3
    assert first.usage.cost_usd is None and first.usage.unpriced == ("teacher",)  # unknown, never $0


def test_truncated_text_is_an_error_naming_max_tokens(cassette, no_wait) -> None:
    model = model_for(provider="openai", model="gpt-4.1-mini", max_tokens=8)
    no_wait(model)
    with cassette("openai/truncated_text.yaml") as played, pytest.raises(OutputTruncatedError, match="max_tokens=8") as caught:
        model.generate(MESSAGES)
    assert played.play_count == 1 and caught.value.raw_output == "The capital of France is"


def test_a_refusal_is_a_typed_error_sent_once(cassette, no_wait) -> None:
    model = model_for(provider="openai", model="gpt-4.1-mini")
    no_wait(model)
    with cassette("openai/refusal.yaml") as played, pytest.raises(RefusalError, match="can't help") as caught:
        model.generate(MESSAGES)
    assert played.play_count == 1 and not caught.value.retryable


def test_an_html_page_with_http_200_is_one_line_naming_the_server(cassette, no_wait) -> None:
    model = model_for(provider="openai", model="llama", base_url="http://127.0.0.1:9/v1")
    no_wait(model)
    with cassette("openai/html_200.yaml"), pytest.raises(ProviderError) as caught:
        model.generate(MESSAGES)
    message = str(caught.value)
    assert "\n" not in message and "http://127.0.0.1:9/v1" in message and "base_url" in message


def test_anthropic_cache_reads_and_writes_are_counted_and_priced_and_a_refusal_is_typed(cassette, no_wait) -> None:
    model = model_for(provider="anthropic", model="claude-sonnet-4-5-20250929")
    no_wait(model)
    with cassette("anthropic/cached_and_refusal.yaml") as played:
        response = model.generate(MESSAGES)
        with pytest.raises(RefusalError, match="declined"):
            model.generate(MESSAGES)
    assert played.all_played
    usage = response.usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == (5050, 4000, 1000)
    assert usage.cost_usd == pytest.approx((50 * 3.00 + 4000 * 0.30 + 1000 * 3.75 + 4 * 15.00) / 1e6)


class _Answer(BaseModel):
    answer: str


class _Cut(ChatModel):
    """A provider whose first answer is cut at the token limit; it records the budgets it was given."""

    provider = "openai"

    def __init__(self, answers: list[RawCompletion], **settings: Any) -> None:
        super().__init__(ModelSettings(provider="openai", model="gpt-4.1-mini", **settings), role="judge_small")
        self.answers, self.budgets = answers, []

    def _request(self, messages, *, json_schema, schema_name, temperature, max_tokens) -> RawCompletion:
        self.budgets.append(max_tokens)
        return self.answers.pop(0)


def test_a_cut_structured_answer_is_asked_again_once_with_a_larger_budget() -> None:
    model = _Cut([RawCompletion('{"answer": "Par', truncated=True, output_tokens=100), RawCompletion('{"answer": "Paris"}')],
                 max_tokens=100)
    assert model.generate("capital?", output_type=_Answer).output.answer == "Paris"
    assert model.budgets == [100, 200]  # no repair turn billed for a cut answer
    cut_twice = _Cut([RawCompletion('{"a', truncated=True), RawCompletion('{"an', truncated=True)], max_tokens=100)
    with pytest.raises(OutputTruncatedError, match="max_tokens=200"):
        cut_twice.generate("capital?", output_type=_Answer)
    never = _Cut([RawCompletion('{"a', truncated=True)], max_tokens=100, structured_retry_token_factor=1)
    with pytest.raises(OutputTruncatedError, match="max_tokens=100"):
        never.generate("capital?", output_type=_Answer)


def test_a_default_key_goes_to_its_providers_host_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-real-key-000000")
    assert model_for(provider="openai", model="gpt-4.1-mini")._api_key() == "sk-test-real-key-000000"
    official = model_for(provider="openai", model="gpt-4.1-mini", base_url="https://api.openai.com/v1")
    assert official._api_key() == "sk-test-real-key-000000"
    local = model_for(provider="openai", model="llama", base_url="http://127.0.0.1:8000/v1")
    assert local._api_key() == ChatModel.KEYLESS_SERVER_KEY  # the real key is not sent to another host
    monkeypatch.setenv("BOX_KEY", "box-key")
    named = model_for(provider="openai", model="llama", base_url="http://box:8000/v1", api_key_env="BOX_KEY")
    assert named._api_key() == "box-key"


@pytest.mark.parametrize(("provider", "model", "temperature", "input_price"), [
    ("openai", "gpt-5-mini-2025-08-07", False, 0.25), ("openai", "o4-mini", False, 1.10),
    ("openai", "gpt-4o-2024-05-13", True, 5.00),  # an exact name before its family (gpt-4o is $2.50)
    ("openai", "gpt-4o-2024-11-20", True, 2.50), ("openai", "gpt-5.1-chat-latest", True, 1.25),
    ("google", "gemini-2.5-flash-lite", True, 0.10),  # not priced as gemini-2.5-flash
    ("google", "gemini-2.0-flash-lite-001", True, 0.075), ("anthropic", "claude-haiku-4-5-20251001", True, 1.00),
    ("anthropic", "claude-opus-4-6", True, None),  # a newer model than the rows: unknown, not its family's guess
])
def test_the_catalog_matches_exact_names_before_families(provider: str, model: str, temperature: bool, input_price: float | None) -> None:
    facts = facts_for(provider, model)
    assert facts.temperature is temperature
    assert (facts.prices.input if facts.prices else None) == input_price


def test_every_model_the_docs_name_is_in_the_catalog() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = "\n".join(p.read_text(encoding="utf-8") for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    named = set(re.findall(r"\b(gpt-[0-9][\w.\-]*|o[134]-mini|claude-[a-z]+-[\w\-]+|gemini-[0-9][\w.\-]*)\b", text))
    named = {n.rstrip(".-") for n in named}
    missing = sorted(n for n in named if not any(
        facts_for(provider, n).prices is not None or n in rows for provider, rows in MODELS.items()))
    assert not missing, f"models named in the docs with no catalog row: {missing}"


@pytest.mark.parametrize(("message", "final"), [
    ("insufficient_quota: You exceeded your current quota, please check your plan and billing details.", True),  # OpenAI
    ("You exceeded your current quota, please check your plan and billing details. Please retry in 2.0s.", False),  # Gemini RPM
    ("Quota exceeded for quota metric 'generativelanguage.googleapis.com/generate_requests_per_model_per_day'", True),
    ("Your credit balance is too low to access the Anthropic API.", True),
    ("Rate limit reached for gpt-4.1-mini on requests per min (RPM): Limit 500, Used 500.", False),
])
def test_quota_and_billing_429s_are_final_rate_limits_are_retried(message: str, final: bool) -> None:
    from atlas_learning.errors import RateLimitError
    from atlas_learning.models._http import error_for_status

    error = error_for_status(429, message, provider="openai", model="m", role="teacher")
    assert error.retryable is not final
    assert isinstance(error, ProviderError if final else RateLimitError)


def test_a_self_hosted_server_refusing_json_schema_gets_json_object_then_the_schema_in_the_prompt(cassette, no_wait) -> None:
    """vLLM, Ollama, llama.cpp and LM Studio differ in what response_format they take, and in how they refuse (a
    500 from some llama.cpp builds, a bare string error from LM Studio): each refusal steps down once, the last
    step carries the schema in the prompt and validates the answer, and the server's answer is remembered."""
    model = model_for(provider="openai", model="llama", base_url="http://127.0.0.1:8000/v1")
    delays = no_wait(model)
    with cassette("openai/self_hosted_formats.yaml") as played:  # bodies pinned: json_schema, json_object, none
        assert model.generate(MESSAGES, output_type=_Answer).output.answer == "Paris"
    assert played.all_played and played.play_count == 3 and delays == []  # stepped down, never backed off
    with cassette("openai/self_hosted_formats.yaml", allow_playback_repeats=True) as played:
        assert model.generate(MESSAGES, output_type=_Answer).output.answer == "Paris"
    assert played.play_count == 1  # only the third request's body matches: remembered for the process


@pytest.mark.parametrize(("name", "error", "says"), [
    ("google/safety_blocked.yaml", RefusalError, "SAFETY"),
    ("google/prompt_blocked.yaml", RefusalError, "PROHIBITED_CONTENT"),
    ("google/thinking_truncated.yaml", OutputTruncatedError, "max_tokens=48"),
])
def test_gemini_safety_blocks_are_refusals_and_thinking_past_the_cap_is_truncation(cassette, no_wait, name, error, says) -> None:
    """Gemini's documented finish reasons and prompt feedback, replayed into google-genai: typed, sent once."""
    thinking = "thinking" in name
    model = model_for(provider="google", model="gemini-2.5-pro" if thinking else "gemini-2.5-flash",
                      **({"max_tokens": 48} if thinking else {}))
    no_wait(model)
    with cassette(name) as played, pytest.raises(error, match=says) as caught:
        model.generate(MESSAGES)
    assert played.all_played and played.play_count == 1
    assert not thinking or "thinking included" in str(caught.value)


def test_gemini_cached_tokens_are_priced_as_cached_and_thinking_as_output(cassette, no_wait) -> None:
    model = model_for(provider="google", model="gemini-2.5-flash")
    no_wait(model)
    with cassette("google/cached.yaml") as played:
        response = model.generate(MESSAGES)
    assert response.text == "Paris" and played.all_played
    usage = response.usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (2000, 1900, 41)
    assert usage.cost_usd == pytest.approx((100 * 0.30 + 1900 * 0.03 + 41 * 2.50) / 1e6)


@pytest.mark.parametrize(("name", "provider", "model"), [
    ("google/daily_quota.yaml", "google", "gemini-2.5-flash"),
    ("openai/insufficient_quota.yaml", "openai", "gpt-4.1-mini"),
])
def test_an_exhausted_quota_is_final_and_sent_once(cassette, no_wait, name, provider, model) -> None:
    """Gemini's per-day quota reads like a per-minute limit ("Please retry in 26.8s"); only its QuotaFailure says
    PerDay. OpenAI's insufficient_quota is a 429 too. Neither is retried."""
    from atlas_learning.errors import RateLimitError

    chat = model_for(provider=provider, model=model)
    delays = no_wait(chat)
    with cassette(name) as played, pytest.raises(ProviderError, match="quota exhausted") as caught:
        chat.generate(MESSAGES)
    assert played.play_count == 1 and delays == [] and not isinstance(caught.value, RateLimitError)
    assert not caught.value.retryable and "\n" not in str(caught.value)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-ratelimit-reset-requests": "12ms", "x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-remaining-tokens": "0"}, 360.0),
    ({"x-ratelimit-reset-requests": "1.5s", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-tokens": "2m"}, 1.5),
    ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1s"}, 1.0),
    ({"x-ratelimit-reset-tokens": "soon"}, None),
    ({}, None),
])
def test_a_429_without_retry_after_waits_for_the_exhausted_limits_reset(headers: dict[str, str], expected: float | None) -> None:
    from atlas_learning.models._http import error_for_status

    error = error_for_status(429, "Rate limit reached for requests", headers=headers, provider="openai", model="m")
    assert error.retry_after_s == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_async_calls_from_successive_event_loops_leave_no_loop_closed_tracebacks(provider: str, caplog) -> None:
    """Each ``asyncio.run`` closes its loop; the client built in it must not leave a task or transport that
    reports "Event loop is closed" later (a real HTTP server on 127.0.0.1, the real SDK clients)."""
    import asyncio
    import gc
    import json as _json
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = {
        "openai": {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
        "anthropic": {"id": "m", "type": "message", "role": "assistant", "model": "c", "content": [{"type": "text", "text": "Paris"}],
                      "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}},
        "google": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Paris"}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}},
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = _json.dumps(bodies[provider]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    unraisable: list[Any] = []
    previous, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        names = {"openai": "gpt-4.1-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}
        keys = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "google": "GEMINI_API_KEY"}
        url = f"http://127.0.0.1:{server.server_port}" + ("/v1" if provider == "openai" else "")
        model = model_for(provider=provider, model=names[provider], base_url=url, api_key_env=keys[provider])
        with caplog.at_level("ERROR", logger="asyncio"):
            for _ in range(3):
                assert asyncio.run(model.agenerate("hi")).text == "Paris"
            model.close()
            del model
            gc.collect()
    finally:
        sys.unraisablehook = previous
        server.shutdown()
    assert "Event loop is closed" not in caplog.text and "never retrieved" not in caplog.text
    assert not unraisable


def test_a_thinking_budget_reaches_gemini_and_claude_and_must_leave_room_for_the_answer(monkeypatch) -> None:
    from atlas_learning.config import AtlasConfig
    from atlas_learning.errors import ConfigError

    gemini = model_for(provider="google", model="gemini-2.5-pro", thinking_budget_tokens=256, max_tokens=1024)
    assert gemini._body([{"role": "user", "content": "hi"}], None, None, 0.0, 1024)["config"]["thinking_config"] == {"thinking_budget": 256}
    claude = model_for(provider="anthropic", model="claude-sonnet-4-5", thinking_budget_tokens=2048, max_tokens=4096)
    body = claude._body([{"role": "user", "content": "hi"}], {"type": "object", "properties": {}}, "Out", 0.0, 4096)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and "output_config" in body
    with pytest.raises(ConfigError, match="must be below max_tokens"):
        AtlasConfig.load({"models": {"teacher": {"model": "gemini-2.5-pro", "thinking_budget_tokens": 512, "max_tokens": 512}}}, environ={})
