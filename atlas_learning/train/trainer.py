"""Training a teacher with TRL's own GRPOTrainer and SFTTrainer, with presets for a CPU smoke run and a GPU.

Presets (any key can be changed with ``settings``, the CLI's ``--set key=value``):

- ``cpu-tiny``: a tiny Qwen2 model built from a config (no hub, about 100k parameters) with a byte-level
  tokenizer when no model is given, float32 on the CPU, learning rate 5e-3, short completions, verdict prompts
  ending in the verdict's first words (``prefill``). It shows the loop works end to end in a couple of minutes;
  the model it makes is not a useful teacher.
- ``gpu``: bf16, LoRA, TRL's vLLM generation colocated with training (``use_vllm``, ``vllm_mode="colocate"``),
  LoRA learning rates (GRPO 1e-5, SFT 2e-4), 512-token completions, a checkpoint every 50 steps (``--set
  resume=true`` goes on from the newest). Needs ``pip install vllm`` on a CUDA machine. Runs under ``torchrun`` /
  ``accelerate launch`` (one process per GPU; DeepSpeed ZeRO-3 or FSDP through accelerate's config): the trainer
  places the model on each rank's device, rank 0 alone scores, logs and writes the summary, and the checkpoint is
  saved from the gathered weights (see docs/training.md and :func:`launch_config`).

Atlas's own settings (the rest go to ``GRPOConfig`` / ``SFTConfig``): ``held_out`` (fraction of tasks kept
for the before/after reward, 0.2), ``seed``, ``kinds`` (example kinds), ``prefill``, ``rewards`` (names from
:data:`~atlas_learning.train.rewards.REWARD_NAMES`), ``lora``, ``lora_r``, ``lora_alpha``, ``lora_dropout``,
``lora_target_modules``, ``max_eval`` (held-out examples scored), ``eval_max_new_tokens`` and
``eval_temperature`` (0, as a role's model is called by default). The held-out reward before and after is the
served model's: each checkpoint folder through the local provider, structured calls constrained to their schema,
prompts as the Supervisor sends them (:mod:`atlas_learning.train.evaluation`); fewer than 8 held-out examples
gives a warning. A run whose every logged gradient norm is 0 learned nothing: it says so and fails.

Every run writes to the output directory: the model (LoRA merged in) and tokenizer, ``metrics.jsonl`` (one line
per logging step: TRL's logs go there, not to stdout), ``metrics.png`` when matplotlib is installed, and
``atlas_train.json`` (settings, counts, seconds per step, held-out reward before and after, the trainer's closing
summary). ``progress`` shows one progress bar on stderr when it is a terminal. The directory loads back as a role's model with
``provider: local`` and ``model: DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AtlasError
from .data import EXAMPLE_KINDS, split_examples
from .evaluation import MIN_EVAL_EXAMPLES, evaluate_served
from .launch import is_main_process

__all__ = [
    "PRESETS",
    "TrainResult",
    "build_tiny_model",
    "resolve_settings",
    "train_gkd",
    "train_grpo",
    "train_sft",
]

#: Atlas's settings and their defaults, shared by both presets unless a preset says otherwise.
_ATLAS_DEFAULTS: dict[str, Any] = {
    "held_out": 0.2, "seed": 0, "kinds": list(EXAMPLE_KINDS), "prefill": False, "rewards": ["verdict", "expected_answer"],
    "lora": False, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_modules": "all-linear",
    "max_eval": 64, "eval_max_new_tokens": None, "eval_temperature": 0.0, "resume": False,
    "target": "teacher", "rejected": "drop", "student_layout": "served",
    # GRPO on the student: the episodes' environment (module:factory) and how many steps one may take
    "environment": None, "rollout_max_turns": 6,
}

#: Preset -> method -> settings (Atlas's and TRL's). ``model: None`` in cpu-tiny means "build the tiny model".
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu-tiny": {
        "common": {"use_cpu": True, "bf16": False, "fp16": False, "report_to": "none", "save_strategy": "no",
                   "logging_steps": 1, "prefill": True, "dataloader_num_workers": 0},
        "grpo": {"learning_rate": 5e-3, "num_generations": 8, "per_device_train_batch_size": 8, "max_steps": 40,
                 "max_completion_length": 12, "temperature": 1.0, "beta": 0.0, "eval_max_new_tokens": 256},
        "sft": {"learning_rate": 5e-3, "per_device_train_batch_size": 8, "max_steps": 40, "max_length": 4096,
                "eval_max_new_tokens": 256},
        # GKD: half the batches on the student's own samples (lmbda), a symmetric divergence to the teacher (beta)
        "gkd": {"learning_rate": 5e-3, "per_device_train_batch_size": 8, "max_steps": 40, "max_length": 4096,
                "lmbda": 0.5, "beta": 0.5, "max_new_tokens": 12, "temperature": 0.9, "eval_max_new_tokens": 256},
    },
    "gpu": {
        # LoRA trains a few adapter weights, so its learning rates are 10-100x a full fine-tune's (TRL's and
        # PEFT's LoRA recipes: about 1e-5 for GRPO, 2e-4 for SFT). A checkpoint every 50 steps (the last two kept)
        # lets --set resume=true go on after a stop.
        "common": {"bf16": True, "report_to": "none", "save_strategy": "steps", "save_steps": 50, "save_total_limit": 2,
                   "logging_steps": 5, "lora": True, "gradient_checkpointing": True, "num_train_epochs": 1},
        "grpo": {"learning_rate": 1e-5, "num_generations": 8, "per_device_train_batch_size": 8,
                 "gradient_accumulation_steps": 4, "max_completion_length": 512, "use_vllm": True,
                 "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3},
        "gkd": {"learning_rate": 1e-4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
                "max_length": 4096, "lmbda": 0.5, "beta": 0.5, "max_new_tokens": 256, "temperature": 0.9},
        "sft": {"learning_rate": 2e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
                "max_length": 4096},
    },
}


@dataclass
class TrainResult:
    """What a training run did: where the model is, how long it took, and the held-out reward around it."""

    output_dir: Path
    method: str
    steps: int
    seconds: float
    seconds_per_step: float | None
    train_examples: int
    held_out_examples: int
    held_out_before: float | None
    held_out_after: float | None
    settings: dict[str, Any] = field(default_factory=dict)
    metrics_path: Path | None = None
    plot_path: Path | None = None
    #: The trainer's closing summary (train_runtime, train_loss, ...); the per-step lines are in metrics.jsonl.
    train_metrics: dict[str, Any] = field(default_factory=dict)
    #: What makes the held-out figure less than telling (too few examples, no reward).
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("output_dir", "metrics_path", "plot_path"):
            data[key] = None if data[key] is None else str(data[key])
        return data


def resolve_settings(method: str, preset: str, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Atlas's settings, the TRL config's keyword arguments) for ``method`` under ``preset`` with ``overrides``.

    Raises AtlasError naming the key when an override is neither an Atlas setting nor a field of the TRL config.
    """
    if preset not in PRESETS:
        raise AtlasError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    merged = {**_ATLAS_DEFAULTS, **PRESETS[preset]["common"], **PRESETS[preset][method], **(overrides or {})}
    fields = _config_fields(method)
    unknown = sorted(k for k in merged if k not in _ATLAS_DEFAULTS and k not in fields)
    if unknown:
        raise AtlasError(f"unknown setting(s) {', '.join(unknown)}: use Atlas's ({', '.join(_ATLAS_DEFAULTS)}) or a "
                         f"field of TRL's {_CONFIG_NAMES[method]}")
    atlas = {k: v for k, v in merged.items() if k in _ATLAS_DEFAULTS}
    if isinstance(atlas["kinds"], str):
        atlas["kinds"] = [k for k in atlas["kinds"].split(",") if k]
    if isinstance(atlas["rewards"], str):
        atlas["rewards"] = [r for r in atlas["rewards"].split(",") if r]
    return atlas, {k: v for k, v in merged.items() if k not in _ATLAS_DEFAULTS}


_CONFIG_NAMES = {"grpo": "GRPOConfig", "sft": "SFTConfig", "gkd": "GKDConfig"}


def _trl_config(method: str) -> Any:
    """TRL's config class for ``method`` (GKD lives in ``trl.experimental.gkd`` in TRL 1.x)."""
    if method == "gkd":
        from trl.experimental.gkd import GKDConfig

        return GKDConfig
    import trl

    return getattr(trl, _CONFIG_NAMES[method])


def _config_fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(_trl_config(method))}


# --------------------------------------------------------------------------------------------- tiny model
#: ChatML, with tools: their schemas in a leading system turn, an assistant's calls as <tool_call> JSON (as
#: Qwen2.5's template writes them), so the student's tool-calling chats render too.
_CHATML = ("{% if tools %}<|im_start|>system\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
           "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
           "{{ message['content'] or '' }}{% for call in message['tool_calls'] or [] %}<tool_call>"
           "{{ call['function'] | tojson }}</tool_call>{% endfor %}<|im_end|>\n"
           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_model(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny randomly initialised Qwen2 chat model with a byte-level tokenizer to ``directory``.

    Nothing is downloaded. The tokenizer (256 byte tokens plus ChatML's specials, saved as tokenizer.json) and the
    model reload with ``AutoTokenizer`` / ``AutoModelForCausalLM``, so the directory also works as ``model: DIR``
    for ``provider: local``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = _CHATML
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ----------------------------------------------------------------------------------------------- evaluation
def _without_prefill(example: dict[str, Any]) -> dict[str, Any]:
    prompt = example["prompt"]
    if not prompt or prompt[-1]["role"] != "assistant":
        return example
    completion = [{"role": "assistant", "content": prompt[-1]["content"] + example["completion"][0]["content"]}]
    return {**example, "prompt": prompt[:-1], "completion": completion}


def _grpo_row(example: dict[str, Any]) -> dict[str, Any]:
    prompt = example["prompt"]
    prefill = prompt[-1]["content"] if prompt and prompt[-1]["role"] == "assistant" else ""
    return {**{k: v for k, v in example.items() if k != "completion"}, "prefill": prefill}


def _prompt_text(tokenizer: Any, prompt: list[dict[str, str]]) -> str:
    prefill = prompt[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=not prefill,
                                         continue_final_message=prefill)


# ------------------------------------------------------------------------------------------------- training
class _MetricsLog:
    """A TrainerCallback body: every logging step's line appended to metrics.jsonl with its step; the trainer's
    closing summary (train_runtime, train_loss, ...) kept apart, for atlas_train.json."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.final: dict[str, Any] = {}
        if create:
            path.write_text("", encoding="utf-8")

    def write(self, step: int, logs: dict[str, Any]) -> None:
        values = {k: v for k, v in logs.items() if isinstance(v, (int, float, str))}
        if "train_runtime" in values:
            self.final = values
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")


def _callback(log: _MetricsLog) -> Any:
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs and state.is_world_process_zero:  # under torchrun, one line per step, not one per rank
                log.write(state.global_step, logs)

    return MetricsCallback()




def _progress_bar(method: str) -> Any:
    """One rich progress bar on stderr (steps, the last reward or loss, time left), or None when stderr is not a
    terminal. It replaces transformers' own tqdm bar and per-step dict prints."""
    import sys

    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class ProgressBar(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar = Progress(TextColumn(f"atlas train {method}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True))
            self.task = self.bar.add_task("", total=state.max_steps or None)
            self.bar.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            shown = [f"{k} {logs[k]:.3g}" for k in ("reward", "loss") if isinstance((logs or {}).get(k), (int, float))]
            if self.bar is not None and shown:
                self.bar.update(self.task, description="  ".join(shown))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return ProgressBar()


def _quiet(trainer: Any, progress: bool, method: str) -> None:
    """Take transformers' printing callbacks off the trainer (its per-step dicts went to stdout, its tqdm bar to
    any stderr); add Atlas's one bar when asked for and stderr is a terminal."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    bar = _progress_bar(method) if progress else None
    if bar is not None:
        trainer.add_callback(bar)


def _plot(metrics: Path, output: Path, method: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    keys = [k for k in ("reward", "loss") if any(k in r for r in rows)]
    if not keys:
        return None
    figure, axes = plt.subplots(len(keys), 1, figsize=(7, 3 * len(keys)), squeeze=False)
    for axis, key in zip(axes[:, 0], keys, strict=True):
        points = [(r["step"], r[key]) for r in rows if key in r]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        axis.set_ylabel(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0, 0].set_title(f"atlas train {method}")
    figure.tight_layout()
    path = output / "metrics.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _load(model_ref: str | Path | None, output: Path, seed: int) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_ref is None:
        model_ref = build_tiny_model(output / "_base_model", seed=seed)
    else:
        from .base_model import trainable_checkpoint

        model_ref = trainable_checkpoint(model_ref)  # smollm2 or a .gguf: its dequantized checkpoint
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_ref))
        model = AutoModelForCausalLM.from_pretrained(str(model_ref))
    except (OSError, ValueError) as exc:
        raise AtlasError(f"--model {model_ref}: transformers could not load it ({str(exc).splitlines()[0]}); give a "
                         "checkpoint directory or a hub id this machine can download") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise AtlasError(f"--model {model_ref}: its tokenizer has no chat template; use a chat (instruct) model")
    return model, tokenizer, str(model_ref)


def _peft_config(atlas: dict[str, Any]) -> Any:
    if not atlas["lora"]:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise AtlasError("lora=true needs peft: pip install 'atlas-plugins[train]'") from None
    return LoraConfig(task_type="CAUSAL_LM", r=int(atlas["lora_r"]), lora_alpha=int(atlas["lora_alpha"]),
                      lora_dropout=float(atlas["lora_dropout"]), target_modules=atlas["lora_target_modules"])


def _save(trainer: Any, tokenizer: Any, output: Path, model_ref: str) -> None:
    """Save the trained model as a plain checkpoint (LoRA merged in). ``trainer.save_model`` gathers weights
    sharded by DeepSpeed ZeRO-3 or FSDP and writes on the main process only; a LoRA adapter saved that way is
    merged into a fresh copy of the base on rank 0 (merging the sharded model in place would save empty weights)."""
    model = trainer.model
    if not hasattr(model, "merge_and_unload"):
        trainer.save_model(str(output))
        return
    distributed = trainer.accelerator.num_processes > 1 or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if not distributed:
        model.merge_and_unload().save_pretrained(output)
        tokenizer.save_pretrained(output)
        return
    adapter = output / "_adapter"
    trainer.save_model(str(adapter))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(model_ref, torch_dtype=model.dtype)
        PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().save_pretrained(output)
        tokenizer.save_pretrained(output)
    trainer.accelerator.wait_for_everyone()


def _run(method: str, examples: Sequence[dict[str, Any]], **options: Any) -> TrainResult:
    """Train with the libraries' own progress bars (transformers' and datasets' tqdm: loading weights, writing
    shards, mapping rows) off for the run, and as they were afterwards."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled(), datasets_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    datasets_logging.disable_progress_bar()
    try:
        return _train(method, examples, **options)
    finally:
        if shown[0]:
            transformers_logging.enable_progress_bar()
        if shown[1]:
            datasets_logging.enable_progress_bar()


def _train(method: str, examples: Sequence[dict[str, Any]], *, model: str | Path | None, output: str | Path,
           preset: str, settings: dict[str, Any] | None, rewards: Sequence[Callable[..., Any]] | None,
           progress: bool, teacher: str | Path | None = None) -> TrainResult:
    atlas, trl_kwargs = resolve_settings(method, preset, settings)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if atlas["target"] not in ("teacher", "student"):
        raise AtlasError(f"target={atlas['target']!r}: use teacher or student")
    rollout = None
    if atlas["target"] == "student" and method == "grpo":
        if not atlas["environment"]:
            raise AtlasError("grpo --target student plays episodes in an environment that runs the tools: "
                             "--set environment=module:factory (see docs/training.md)")
        if atlas["student_layout"] != "served":
            raise AtlasError("grpo --target student rolls out the served layout (student_layout=served)")
        if trl_kwargs.get("use_vllm"):
            if (settings or {}).get("use_vllm"):
                raise AtlasError("grpo --target student decodes its episodes with the trained model itself, under the "
                                 "step grammar (vLLM does not run them): --set use_vllm=false")
            # The gpu preset's colocated vLLM would hold GPU memory the episodes never use.
            trl_kwargs = {k: v for k, v in trl_kwargs.items() if not k.startswith("vllm_") and k != "use_vllm"}
        from .rollouts import load_environment, tool_rollouts

        rollout = tool_rollouts(load_environment(str(atlas["environment"])), max_turns=int(atlas["rollout_max_turns"]),
                                max_new_tokens=int(trl_kwargs.get("max_completion_length") or 256),
                                temperature=float(trl_kwargs.get("temperature", 1.0)))
    if atlas["target"] == "student" and method == "gkd" and atlas["student_layout"] != "served":
        raise AtlasError("gkd --target student distils the served layout (student_layout=served): GKD's chat collator "
                         "renders plain-text turns, not tool_calls messages")
    kinds = {"student"} if atlas["target"] == "student" else set(atlas["kinds"])
    chosen = [e for e in examples if e["kind"] in kinds]
    if method == "gkd" and teacher is None:
        raise AtlasError("GKD distils a teacher into the model: give the teacher checkpoint (--teacher DIR)")
    if method in ("sft", "gkd") and atlas["target"] == "teacher":  # whole completions are learned: a prefill goes back into the completion it starts
        chosen = [_without_prefill(e) for e in chosen]
    train, held = split_examples(chosen, float(atlas["held_out"]), seed=int(atlas["seed"]))
    if not train:
        raise AtlasError(f"no training examples of kinds {', '.join(sorted(kinds))}: review and approve sessions "
                         "with teacher verdicts first (`atlas review approve`), or widen --set kinds=...")
    if model is None and preset != "cpu-tiny":
        raise AtlasError(f"--model is required with --preset {preset}; only cpu-tiny builds its own tiny model")
    if trl_kwargs.get("use_vllm"):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise AtlasError("use_vllm needs vLLM on a CUDA machine: pip install vllm, or --set use_vllm=false") from None
    # Loaded on the CPU; the trainer places it on this process's own device (cuda:LOCAL_RANK under torchrun).
    lm, tokenizer, model_ref = _load(model, output, int(atlas["seed"]))
    main = is_main_process()  # under torchrun / accelerate launch only rank 0 scores, plots and writes the summary
    max_new = int(atlas["eval_max_new_tokens"] or trl_kwargs.get("max_completion_length") or 64)
    evaluation = list(held[: int(atlas["max_eval"])])
    # The before/after figure is the served model's: each checkpoint folder through the local provider, as a
    # role asks it (train/evaluation.py).
    scoring = {"max_new_tokens": max_new, "temperature": float(atlas["eval_temperature"]), "seed": int(atlas["seed"])}
    before = evaluate_served(_servable(lm, tokenizer, model_ref, output), evaluation, rewards or [], **scoring) if main else None
    notes = _evaluation_notes(len(evaluation), rewards)

    metrics = _MetricsLog(output / "metrics.jsonl", create=main)
    # TRL's logs go to metrics.jsonl, never to stdout; transformers' info lines are left out unless asked for.
    trl_kwargs = {"log_level": "warning", **trl_kwargs, "output_dir": str(output / "_trainer"), "seed": int(atlas["seed"]),
                  "disable_tqdm": True}
    from datasets import Dataset

    if method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        # TRL's GRPOTrainer opens a new assistant turn after a conversational prompt, so prompts that end in a
        # prefill are rendered to text here, and the reward functions get the prefill as a column.
        if rollout is not None:  # the student: whole episodes from each session's first prompt, the environment's reward
            from .rollouts import environment_reward, episode_prompts

            rows, reward_funcs = episode_prompts(train), [environment_reward]
            if not rows:
                raise AtlasError("no first turns to start episodes from: the student's examples hold later turns only")
            trl_kwargs.pop("max_completion_length", None)  # an episode's length is its turns', each within the budget
        else:
            rows, reward_funcs = [_grpo_row(e) for e in train], list(rewards or [])
            if any(row["prefill"] for row in rows):
                rows = [{**row, "prompt": _prompt_text(tokenizer, e["prompt"])} for row, e in zip(rows, train, strict=True)]
        trainer = GRPOTrainer(model=lm, reward_funcs=reward_funcs, args=GRPOConfig(**trl_kwargs),
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                              callbacks=[_callback(metrics)], peft_config=_peft_config(atlas), rollout_func=rollout)
    elif method == "gkd":
        from trl.experimental.gkd import GKDTrainer

        # On-policy distillation: the student samples, the teacher's token distributions are the target. Both
        # read the same tokens, so the teacher must share the student's tokenizer. TRL's ChatML collator learns
        # the last message: for the student, one model turn after the conversation it was served (served layout).
        rows = [{"messages": [*e["prompt"], *e["completion"]]} for e in train]
        teacher_lm = _teacher_model(teacher, tokenizer)
        trainer = GKDTrainer(model=lm, teacher_model=teacher_lm, args=_trl_config("gkd")(**trl_kwargs),
                             train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             callbacks=[_callback(metrics)], peft_config=_peft_config(atlas))
    else:
        from trl import SFTConfig, SFTTrainer

        rows = [{"prompt": e["prompt"], "completion": e["completion"], **({"tools": e["tools"]} if "tools" in e else {})}
                for e in train]
        trainer = SFTTrainer(model=lm, args=SFTConfig(**trl_kwargs), train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, callbacks=[_callback(metrics)], peft_config=_peft_config(atlas))
    _quiet(trainer, progress and main, method)
    started = time.perf_counter()
    state = trainer.train(resume_from_checkpoint=_checkpoint_to_resume(output / "_trainer") if atlas["resume"] else None)
    seconds = time.perf_counter() - started
    _save(trainer, tokenizer, output, model_ref)
    after = evaluate_served(output, evaluation, rewards or [], **scoring) if main else None
    steps = int(state.global_step)
    learned = _gradients_moved(output / "metrics.jsonl") if main else None
    result = TrainResult(
        output_dir=output, method=method, steps=steps, seconds=round(seconds, 2),
        seconds_per_step=round(seconds / steps, 3) if steps else None, train_examples=len(train),
        held_out_examples=len(evaluation), held_out_before=before, held_out_after=after,
        settings={"preset": preset, "model": model_ref, **atlas, **{k: v for k, v in trl_kwargs.items() if k != "output_dir"}},
        metrics_path=output / "metrics.jsonl", plot_path=_plot(output / "metrics.jsonl", output, method) if main else None,
        train_metrics=metrics.final, warnings=notes,
    )
    if main:
        (output / "atlas_train.json").write_text(json.dumps(result.summary(), indent=2, default=str), encoding="utf-8")
    _leave_process_group()
    if learned is False:
        raise AtlasError(f"atlas train {method}: every logged gradient norm was 0 over {steps} steps, so the model did "
                         "not change" + (" (GRPO: each group's completions got the same reward; more num_generations, "
                         "eval_temperature or other rewards give it a signal)" if method == "grpo" else "")
                         + f"; the checkpoint in {output} is the base model")
    return result


def _teacher_model(teacher: str | Path, tokenizer: Any) -> Any:
    """The GKD teacher, loaded like the base (smollm2 and .gguf files too), refused when its vocabulary is not
    the student's (their token distributions could not be compared)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .base_model import trainable_checkpoint

    reference = trainable_checkpoint(teacher)
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(reference)
        teacher_lm = AutoModelForCausalLM.from_pretrained(reference)
    except (OSError, ValueError) as exc:
        raise AtlasError(f"--teacher {teacher}: transformers could not load it ({str(exc).splitlines()[0]})") from None
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise AtlasError(f"--teacher {teacher}: its tokenizer is not the student's; GKD compares token distributions, "
                         "so distil from a teacher of the same family (the same tokenizer)")
    return teacher_lm


def _leave_process_group() -> None:
    """Under torchrun, wait for every rank, then take the process group down before the interpreter exits: left
    to interpreter exit, gloo's threads were destroyed while still joinable and a rank aborted (SIGABRT) after its
    work was done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _checkpoint_to_resume(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` the trainer saved in ``folder`` (``save_strategy``), or None to start over."""
    found = [(int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return str(max(found)[1]) if found else None


def _servable(lm: Any, tokenizer: Any, model_ref: str, output: Path) -> Path:
    """A folder the local provider can serve the untrained model from: ``model_ref`` when it is one, else a copy
    saved under the output (a hub id, say)."""
    if (Path(model_ref) / "config.json").is_file():
        return Path(model_ref)
    folder = output / "_base_model"
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _evaluation_notes(count: int, rewards: Sequence[Callable[..., Any]] | None) -> list[str]:
    """Warnings about the held-out figure, printed with the summary."""
    if not rewards:
        return ["no reward functions: the held-out figure is not measured"]
    if count < MIN_EVAL_EXAMPLES:
        return [f"only {count} held-out example{'s' if count != 1 else ''} (fewer than {MIN_EVAL_EXAMPLES}): the "
                "before/after figure is noise; approve more sessions or raise held_out"]
    return []


def _gradients_moved(metrics: Path) -> bool | None:
    """False when every logged step's gradient norm was 0 (nothing was learned), None when none was logged."""
    norms = []
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            value = json.loads(line).get("grad_norm") if line.strip() else None
            if isinstance(value, (int, float)):
                norms.append(float(value))
    if not norms:
        return None
    return any(norm != 0.0 for norm in norms)


def train_grpo(examples: Sequence[dict[str, Any]], *, output: str | Path, model: str | Path | None = None,
               preset: str = "cpu-tiny", settings: dict[str, Any] | None = None,
               rewards: Sequence[Callable[..., Any]] | None = None, progress: bool = True) -> TrainResult:
    """Train the teacher with TRL's GRPOTrainer on ``examples`` (from :func:`~atlas_learning.train.teacher_examples`).

    ``rewards`` are TRL reward functions (see :mod:`atlas_learning.train.rewards`); they also score the held-out
    examples before and after training.
    """
    if not rewards:
        raise AtlasError("GRPO needs at least one reward function; see atlas_learning.train.make_rewards")
    return _run("grpo", examples, model=model, output=output, preset=preset, settings=settings, rewards=rewards,
                progress=progress)


def train_gkd(examples: Sequence[dict[str, Any]], *, output: str | Path, teacher: str | Path,
              model: str | Path | None = None, preset: str = "cpu-tiny", settings: dict[str, Any] | None = None,
              rewards: Sequence[Callable[..., Any]] | None = None, progress: bool = True) -> TrainResult:
    """Distil ``teacher`` (a checkpoint folder, smollm2 or a .gguf, sharing the model's tokenizer) into ``model``
    on the examples' chats with TRL's GKDTrainer (generalized knowledge distillation: on-policy samples of the
    student, scored against the teacher's token distributions).

    ``rewards``, when given, score the held-out examples before and after, served as a role would be.
    """
    return _run("gkd", examples, model=model, output=output, preset=preset, settings=settings, rewards=rewards,
                progress=progress, teacher=teacher)


def train_sft(examples: Sequence[dict[str, Any]], *, output: str | Path, model: str | Path | None = None,
              preset: str = "cpu-tiny", settings: dict[str, Any] | None = None,
              rewards: Sequence[Callable[..., Any]] | None = None, progress: bool = True) -> TrainResult:
    """Fine-tune the teacher on the recorded completions with TRL's SFTTrainer (a warm start before GRPO).

    ``rewards``, when given, score the held-out examples before and after.
    """
    return _run("sft", examples, model=model, output=output, preset=preset, settings=settings, rewards=rewards,
                progress=progress)
