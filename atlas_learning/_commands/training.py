"""``atlas train grpo|sft``: train a teacher checkpoint from approved sessions or an exported trace JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError, UsageError
from ._common import fmt_number, load_config, open_store


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs to a dict; values are read as YAML scalars (``5e-3``, ``true``, ``[a, b]``)."""
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r}: expected key=value, e.g. --set max_steps=50")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 5e-3 as a string
            for number in (int, float):
                try:
                    value = number(raw)
                    break
                except ValueError:
                    continue
        settings[key.strip()] = value
    return settings


def train(*, method: str, config: Path | None, store: str | None = None, data: str, model: str | None, output: Path, preset: str,
          settings: list[str], include: list[str] | None, key: str | None, as_json: bool = False,
          teacher: str | None = None, target: str = "teacher") -> None:
    overrides = parse_settings(settings)  # a malformed --set is a usage error, whatever is installed
    if target not in ("teacher", "student"):
        raise UsageError(f"--target {target!r}: use teacher or student")
    if (method == "gkd") != (teacher is not None):
        raise UsageError("--teacher DIR: gkd distils that checkpoint and needs it" if method == "gkd"
                         else f"--teacher is for gkd; {method} trains on the recorded data alone")
    overrides.setdefault("target", target)
    try:
        import trl  # noqa: F401
    except ImportError:
        raise AtlasError("training needs TRL and friends: pip install 'atlas-plugins[train]'") from None
    from ..train import (
        grpo_export_examples,
        load_sessions,
        load_student_records,
        make_rewards,
        student_examples,
        teacher_examples,
    )
    from ..train.trainer import resolve_settings, train_gkd, train_grpo, train_sft

    loaded = load_config(config, store)
    try:
        atlas, _ = resolve_settings(method, preset, overrides)  # fails fast on a bad --set or --preset
    except AtlasError as exc:
        raise UsageError(str(exc)) from None
    statuses = list(dict.fromkeys(include)) if include else ["approved"]
    if data == "approved":
        with open_store(loaded):  # a reader: a store that is not there is named in one line, never made
            pass
    prompts = grpo_export_examples(data, learning_key=key) if atlas["target"] == "teacher" else None  # a grpo export
    if atlas["target"] == "student":  # the chats the student's model had: the messages export
        records = load_student_records(data, store_url=loaded.storage.url, review_status=statuses, learning_key=key)
        examples = student_examples(records, rejected=str(atlas["rejected"]), layout=str(atlas["student_layout"]))
    elif prompts is not None:
        records, examples = prompts, prompts
    else:
        records = load_sessions(data, store_url=loaded.storage.url, review_status=statuses, learning_key=key)
        examples = teacher_examples(records, kinds=atlas["kinds"], prefill=bool(atlas["prefill"]),
                                    context_budget_chars=loaded.judges.context_budget_chars)
    if not records:
        raise AtlasError(f"--data {data}: no {'/'.join(statuses)} sessions to train on; approve some with "
                         "`atlas review approve` (or pass --include pending)")
    student = None
    if atlas["target"] == "teacher" and "teaching" in atlas["rewards"]:
        from ..models import RoleModels

        student = RoleModels(loaded).get("student")
    # The teacher's rewards score teacher decisions; a student's held-out turns are scored against the recorded
    # step, the served checkpoint writing it as AtlasChatModel would ask it (student_step).
    names = list(atlas["rewards"]) if atlas["target"] == "teacher" else ["student_step"]
    rewards = make_rewards(names, config=loaded, student=student)
    kinds = ", ".join(atlas["kinds"]) if atlas["target"] == "teacher" else "its turns"
    typer.echo(f"atlas train {method}: {len(records)} sessions -> {len(examples)} {atlas['target']} examples "
               f"({kinds}); preset {preset}; rewards {', '.join(names)}", err=True)
    common = {"output": output, "model": model, "preset": preset, "settings": overrides, "rewards": rewards}
    if method == "gkd":
        result = train_gkd(examples, teacher=teacher, **common)
    else:
        result = (train_grpo if method == "grpo" else train_sft)(examples, **common)
    from ..train import is_main_process

    if not is_main_process():  # under torchrun / accelerate launch, rank 0 alone reports
        return
    summary = result.summary()
    for warning in summary["warnings"]:
        typer.echo(f"atlas train: warning: {warning}", err=True)
    shown = {k: summary[k] for k in ("output_dir", "steps", "seconds", "seconds_per_step", "train_examples", "held_out_examples",
                                     "held_out_before", "held_out_after", "metrics_path", "plot_path", "warnings")}
    if as_json:
        typer.echo(json.dumps(shown, default=str))
        return
    before, after = shown["held_out_before"], shown["held_out_after"]
    typer.echo(f"trained {shown['steps']} steps in {shown['seconds']:.1f} s on {shown['train_examples']} examples; "
               f"checkpoint in {shown['output_dir']}")
    if shown["held_out_examples"]:
        typer.echo(f"held-out score on {shown['held_out_examples']} examples: {_held_out(before)} before, {_held_out(after)} after")
    typer.echo(f"metrics: {shown['metrics_path']}" + (f", plot: {shown['plot_path']}" if shown["plot_path"] else ""))
    typer.echo(f"Use it as a role's model: models: {{teacher: {{provider: local, model: {output}}}}}", err=True)


def _held_out(value: Any) -> str:
    """A held-out figure: a number, or a dict of them (per reward), rounded for display."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_held_out(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_number(value)
    return "-" if value is None else str(value)
