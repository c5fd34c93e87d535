"""The logic every provider shares, exercised through the scripted provider: repair, retries, usage, roles."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel

from atlas_learning.config import AtlasConfig, ModelSettings
from atlas_learning.errors import AuthenticationError, InvalidOutputError, ProviderError, RateLimitError
from atlas_learning.models import RoleModels, ScriptedModel, Usage, UsageLedger, prices_for


class Verdict(BaseModel):
    accepted: bool
    guidance: str


def scripted(*responses, **settings) -> ScriptedModel:
    model = ScriptedModel(ModelSettings(provider="scripted", **settings), responses=responses)
    model.slept = []  # type: ignore[attr-defined]
    model._sleep = model.slept.append  # type: ignore[attr-defined]
    return model


def test_text_call_records_usage_under_its_role() -> None:
    ledger = UsageLedger()
    model = ScriptedModel(responses=["four"], role="teacher", ledger=ledger)
    response = model.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}])
    assert response.text == "four" and response.output is None
    assert (response.role, response.provider, response.attempts) == ("teacher", "scripted", 1)
    assert ledger.as_dict()["teacher"] == {"calls": 1, "input_tokens": 5, "output_tokens": 1, "cost_usd": 0.0}


def test_structured_output_is_validated() -> None:
    model = scripted({"accepted": False, "guidance": "cite the file"})
    response = model.generate("judge this", output_type=Verdict)
    assert response.output == Verdict(accepted=False, guidance="cite the file")
    assert model.requests[0][1]["title"] == "Verdict"  # the schema reaches the provider


@pytest.mark.parametrize("wrapped", ['```json\n{"accepted": true, "guidance": "ok"}\n```', 'Sure! {"accepted": true, "guidance": "ok"} Done.'])
def test_fenced_or_chatty_json_is_accepted(wrapped: str) -> None:
    assert scripted(wrapped).generate("judge", output_type=Verdict).output.accepted is True


def test_invalid_output_gets_one_repair_attempt() -> None:
    model = scripted('{"accepted": "maybe"}', '{"accepted": true, "guidance": "fine"}')
    response = model.generate("judge", output_type=Verdict)
    assert response.output.accepted is True and response.attempts == 2
    repair_request = model.requests[1][0]
    assert repair_request[-2] == {"role": "assistant", "content": '{"accepted": "maybe"}'}
    assert "accepted: Input should be a valid boolean" in repair_request[-1]["content"]
    assert response.usage.calls == 2


def test_still_invalid_after_repair_raises_typed_error_keeping_raw_output() -> None:
    model = scripted("no idea", "still no idea")
    with pytest.raises(InvalidOutputError) as caught:
        model.generate("judge", output_type=Verdict)
    assert caught.value.raw_output == "still no idea"
    assert "after one repair attempt" in str(caught.value) and "\n" not in str(caught.value)
    assert model.ledger.as_dict()["default"]["calls"] == 2  # the failed calls' tokens are still counted
    assert caught.value.usage.calls == 2 and caught.value.usage.output_tokens == 5  # "no idea" + "still no idea"


def test_rate_limit_is_retried_honouring_retry_after() -> None:
    model = scripted(RateLimitError("429", retry_after_s=2.5), RateLimitError("429"), "ok", retry_base_delay_s=0.5)
    response = model.generate("hi")
    assert response.text == "ok" and response.attempts == 3
    assert model.slept == [2.5, 1.0]  # Retry-After, then exponential backoff (0.5 * 2**1)


def test_retry_after_is_capped_and_retries_are_bounded() -> None:
    model = scripted(*[ProviderError("503", retryable=True)] * 3, max_retries=2, retry_max_delay_s=0.7, retry_base_delay_s=0.5)
    with pytest.raises(ProviderError):
        model.generate("hi")
    assert model.slept == [0.5, 0.7]


def test_non_retryable_errors_are_raised_at_once() -> None:
    model = scripted(AuthenticationError("bad key"), "never reached")
    with pytest.raises(AuthenticationError):
        model.generate("hi")
    assert model.slept == [] and len(model.requests) == 1


def test_running_out_of_script_is_an_error_not_an_invented_answer() -> None:
    model = scripted("only one")
    model.generate("a")
    with pytest.raises(ProviderError, match="ran out of responses"):
        model.generate("b")
    assert ScriptedModel(responses=["x"], cycle=True).generate("a").text == "x"


async def test_async_twin_retries_and_validates() -> None:
    model = scripted(RateLimitError("429", retry_after_s=1), {"accepted": True, "guidance": "go"})
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    model._async_sleep = fake_sleep
    response = await model.agenerate("judge", output_type=Verdict)
    assert response.output.guidance == "go" and waited == [1]


def test_unknown_price_is_none_not_zero_and_a_total_names_what_it_lacks() -> None:
    def prices(**settings: object) -> tuple[float, float] | None:
        found = prices_for(ModelSettings(**settings))
        return None if found is None else (found.input, found.output)

    assert prices(provider="openai", model="gpt-4.1-mini") == (0.40, 1.60)
    assert prices(provider="openai", model="gpt-4.1") == (2.00, 8.00)
    assert prices(provider="openai", model="my-finetune") is None
    assert prices(provider="openai", model="gpt-4o", base_url="http://vllm:8000/v1") is None
    assert prices(provider="openai", model="gpt-4o", base_url="https://api.openai.com/v1") == (2.50, 10.00)
    assert prices(provider="openai", model="x", input_cost_per_mtok=1, output_cost_per_mtok=2) == (1, 2)
    partial = Usage(1, 1, 0.5, 1) + Usage(1, 1, None, 1, unpriced=("judge_small",))
    assert (partial.cost_usd, partial.unpriced) == (0.5, ("judge_small",))  # a partial total, naming what it lacks
    assert (Usage(1, 1, 0.5, 1) + Usage(1, 1, None, 1)).unpriced == ("?",)
    assert (Usage(1, 1, None, 1) + Usage(1, 1, None, 1)).cost_usd is None  # nothing priced: unknown, not $0
    ledger = UsageLedger()
    ledger.record("teacher", Usage(10, 5, 0.25, 1))
    ledger.record("judge_small", Usage(10, 5, None, 1, unpriced=("judge_small",)))
    total = ledger.total()
    assert (total.cost_usd, total.unpriced, total.calls) == (0.25, ("judge_small",), 2)
    assert ledger.as_dict()["judge_small"]["cost_usd"] is None


def test_role_models_share_instances_and_one_ledger() -> None:
    config = AtlasConfig.load({"models": {"default": {"provider": "scripted", "options": {"responses": ["a"], "cycle": True}},
                                          "teacher": {"provider": "scripted", "options": {"responses": ["t"]}}}}, environ={})
    models = RoleModels(config)
    assert models.get("judge_small").generate("x").text == "a"
    assert models.get("teacher").generate("x").text == "t"
    assert models.get("teacher") is models.get("teacher")
    assert set(models.ledger.as_dict()) == {"judge_small", "teacher"}


def test_unknown_provider_and_message_roles_are_rejected() -> None:
    with pytest.raises(ValueError, match="message role"):
        ScriptedModel(responses=["x"]).generate([{"role": "tool", "content": "x"}])


def test_importing_the_core_loads_no_provider_sdk() -> None:
    code = (
        "import sys, atlas_learning, atlas_learning.models, atlas_learning.store, atlas_learning.config;"
        "from atlas_learning.models import create_model; from atlas_learning.config import ModelSettings;"
        "create_model(ModelSettings(provider='scripted'));"
        "print(sorted({'openai', 'anthropic', 'google.genai', 'xllamacpp', 'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
