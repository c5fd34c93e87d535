"""The model a training run starts from, made trainable: the embedded SmolLM2 and other GGUF files included.

transformers loads a GGUF file (``from_pretrained(folder, gguf_file=name)``, with the ``gguf`` package) by
dequantizing it, but will neither fine-tune nor save the result as it is ("quantized with gguf and is not
serializable"). :func:`trainable_checkpoint` makes a plain transformers checkpoint of it once (float32 weights,
the GGUF's tokenizer and chat template) and keeps it in a cache folder, so ``atlas train --model smollm2`` (or a
path to a ``.gguf``) trains the model the local provider serves. Anything else is handed on as it was given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import AtlasError

__all__ = ["trainable_checkpoint", "checkpoint_cache_dir"]


def checkpoint_cache_dir() -> Path:
    """Where dequantized checkpoints are kept: ``$ATLAS_CACHE_DIR`` or ``$XDG_CACHE_HOME/atlas-plugins`` (else
    ``~/.cache/atlas-plugins``), under ``base-models``."""
    root = os.environ.get("ATLAS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atlas-plugins"
    return Path(root) / "base-models"


def _gguf_of(model_ref: str | Path) -> Path | None:
    """The GGUF file ``model_ref`` names (``smollm2``, or a path ending in ``.gguf``), else None."""
    if str(model_ref).lower() == "smollm2":
        from ..models.local import smollm2_path

        try:
            return smollm2_path()
        except Exception as exc:  # noqa: BLE001 - the package is missing: say what to install
            raise AtlasError(f"--model smollm2: {exc}") from None
    path = Path(model_ref).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise AtlasError(f"--model {model_ref}: no such GGUF file")
        return path.resolve()
    return None


def trainable_checkpoint(model_ref: str | Path, *, cache_dir: Path | None = None) -> str:
    """A reference the trainer's ``from_pretrained`` can load and train: for a GGUF file (``smollm2`` or a path),
    the folder of its dequantized checkpoint, made on the first call (it takes about 30 s for SmolLM2-135M) and
    reused after; any other reference (a checkpoint folder, a hub id) as it is."""
    gguf = _gguf_of(model_ref)
    if gguf is None:
        return str(model_ref)
    stat = gguf.stat()
    target = (cache_dir or checkpoint_cache_dir()) / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if (target / "config.json").is_file():
        return str(target)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise AtlasError("training needs TRL and friends: pip install 'atlas-plugins[train]'") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError:
        raise AtlasError(f"--model {model_ref}: reading a GGUF file needs the gguf package: pip install 'gguf>=0.10'") from None
    except (OSError, ValueError, KeyError) as exc:
        raise AtlasError(f"--model {model_ref}: transformers could not read {gguf} ({str(exc).splitlines()[0]})") from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain floats
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)  # whole or not at all: a half-written folder is never taken for a checkpoint
        except OSError:
            if not (target / "config.json").is_file():  # not another process that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
