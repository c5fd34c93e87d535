"""Train a better teacher from reviewed sessions: dataset builders, reward functions and TRL trainers.

>>> from atlas_learning.train import load_sessions, teacher_examples, make_rewards, train_grpo
>>> records = load_sessions("traces.jsonl")                          # or "approved" with store_url=...
>>> examples = teacher_examples(records, prefill=True)
>>> result = train_grpo(examples, output="teacher", preset="cpu-tiny", rewards=make_rewards(["verdict"]))
>>> result.held_out_before, result.held_out_after

The same from the shell: ``atlas train grpo --data traces.jsonl --output teacher --preset cpu-tiny``. The output
directory loads back as a role's model (``models: {teacher: {provider: local, model: teacher}}``).

Importing this package is cheap; torch, transformers, TRL and datasets load when training starts
(``pip install 'atlas-plugins[train]'``).
"""

from __future__ import annotations

from .data import EXAMPLE_KINDS, VERDICT_PREFILL, grpo_export_examples, load_sessions, split_examples, teacher_examples
from .evaluation import evaluate_served
from .launch import LAUNCH_CONFIGS, is_main_process, launch_config
from .rewards import (
    REWARD_NAMES,
    ExpectedAnswerReward,
    JudgeReward,
    TeachingReward,
    VerdictReward,
    completion_text,
    make_rewards,
)
from .student import REJECTED_MODES, load_student_records, student_examples
from .trainer import PRESETS, TrainResult, build_tiny_model, resolve_settings, train_gkd, train_grpo, train_sft

__all__ = [
    "EXAMPLE_KINDS",
    "LAUNCH_CONFIGS",
    "PRESETS",
    "REJECTED_MODES",
    "REWARD_NAMES",
    "VERDICT_PREFILL",
    "ExpectedAnswerReward",
    "JudgeReward",
    "TeachingReward",
    "TrainResult",
    "VerdictReward",
    "build_tiny_model",
    "completion_text",
    "evaluate_served",
    "grpo_export_examples",
    "is_main_process",
    "launch_config",
    "load_sessions",
    "load_student_records",
    "make_rewards",
    "resolve_settings",
    "split_examples",
    "student_examples",
    "teacher_examples",
    "train_gkd",
    "train_grpo",
    "train_sft",
]
