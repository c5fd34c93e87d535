"""The held-out figure of a training run, measured the way the trained model will be used.

A checkpoint ``atlas train`` writes is served back as a role's model (``provider: local, model: DIR``): the local
provider's transformers backend, greedy at the role's default temperature (0), structured calls constrained to
their schema (a verdict and a plan review as the Supervisor asks for them), the prompt exactly as the Supervisor
builds it (no prefill: constrained decoding starts the JSON itself). :func:`evaluate_served` scores a checkpoint
folder through that same :class:`~atlas_learning.models.local.LocalModel`, so the before/after figure printed by
``atlas train`` is the served model's, not an unconstrained sample of the training prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["evaluate_served", "MIN_EVAL_EXAMPLES"]

#: Fewer held-out examples than this and the before/after figure is noise: the run says so.
MIN_EVAL_EXAMPLES = 8


def _output_type(example: dict[str, Any]) -> Any:
    """The schema a role is asked for in this example: the teacher's verdict or plan review as the Supervisor asks
    for them, a student turn's step as AtlasChatModel asks a local model for it (the tools the call offered, the
    final answer's length limit); None: free text."""
    from ..schemas import PlanReview, Verdict

    if example["kind"] == "student":
        import json

        from ..student import MAX_LOCAL_ANSWER_CHARS, MAX_LOCAL_ARGUMENT_CHARS, step_model, tools_key

        offered = json.loads(example.get("offered_tools") or "[]")
        return step_model(tools_key(offered), "auto", MAX_LOCAL_ANSWER_CHARS, MAX_LOCAL_ARGUMENT_CHARS) if offered else None
    return {"answer": Verdict, "step": Verdict, "plan": PlanReview}.get(example["kind"])


def _served_prompt(prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    """The prompt as the Supervisor sends it: without a trailing assistant prefill (a training-time device)."""
    return prompt[:-1] if prompt and prompt[-1]["role"] == "assistant" else prompt


def evaluate_served(checkpoint: str | Path, examples: Sequence[dict[str, Any]], rewards: Sequence[Callable[..., Any]],
                    *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> float | None:
    """Mean summed reward of the served checkpoint's answers to ``examples`` (teacher examples of
    :func:`~atlas_learning.train.teacher_examples`, student turns of :func:`~atlas_learning.train.student_examples`);
    None when there are none or no reward applies.

    Each example is asked once, as a role would ask it; an answer that fails even after the provider's repair
    scores as an empty completion. A row's reward is the sum of the functions that apply to it (as GRPOTrainer
    combines them); rows no function applies to are left out."""
    from ..config import ModelSettings
    from ..errors import AtlasError
    from ..models.local import LocalModel

    if not examples or not rewards:
        return None
    model = LocalModel(ModelSettings(provider="local", model=str(checkpoint), temperature=temperature,
                                     max_tokens=max_new_tokens, max_retries=0, options={"seed": seed}))
    totals: list[float] = []
    try:
        for example in examples:
            try:
                reply = model.generate(_served_prompt(example["prompt"]), output_type=_output_type(example),
                                       max_tokens=max_new_tokens)
                text = reply.text
            except AtlasError:  # invalid or truncated after the repair: what the role would have got is nothing
                text = ""
            columns = {key: [value] for key, value in example.items() if key not in ("prompt", "completion")}
            completions = [[{"role": "assistant", "content": text}]]
            prompts = [_served_prompt(example["prompt"])]  # no prefill to put back: the answer is whole
            row = [reward(prompts=prompts, completions=completions, **columns)[0] for reward in rewards]
            applicable = [value for value in row if value is not None and not math.isnan(value)]
            if applicable:
                totals.append(sum(applicable))
    finally:
        model.close()
    return sum(totals) / len(totals) if totals else None
