"""GRPO on the student's own tool rollouts: the model plays whole episodes in an environment the user supplies.

Each training prompt is the first served prompt of an approved session (the system prompt with the tool list, the
task). For every sample of a group, a fresh environment (``environment=module:factory``, a :class:`ToolEnvironment`)
is reset to the task; the model writes one step at a time, decoded under the same step grammar the served model
is held to (:func:`~atlas_learning.models.local.grammar_mask`); a tool step runs in the environment and its result
comes back as the served layout shows it (:func:`~atlas_learning.student.tool_chat_messages`), until the model
answers or ``rollout_max_turns`` runs out. The environment's ``reward(answer)`` (its verifiable checks) is the
episode's reward.

The served layout is prefix-stable, so an episode is one token sequence: the first prompt, then the model's tokens
and the environment's (the tool results with the chat template's turn markers) in turn. TRL's ``rollout_func``
gets it with ``env_mask`` 0 on the environment's tokens, so the loss falls on the model's own tokens only.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import AtlasError

__all__ = ["ToolEnvironment", "environment_reward", "episode_prompts", "load_environment", "tool_rollouts"]


@runtime_checkable
class ToolEnvironment(Protocol):
    """What a student rollout runs in: one instance per episode, made by the user's factory.

    ``reset(task)`` prepares the task (a fresh workspace, say) from the task's text. ``tools()`` gives the tools
    offered, as OpenAI tool schemas. ``call(name, arguments)`` runs one tool and returns its result text; raising
    is an error result the model sees (``error from name: ...``). ``reward(answer)`` scores the episode from the
    final answer (None when the model never answered) and the environment's state: the run's verifiable checks."""

    def reset(self, task: str) -> None: ...

    def tools(self) -> list[dict[str, Any]]: ...

    def call(self, name: str, arguments: dict[str, Any]) -> str: ...

    def reward(self, answer: str | None) -> float: ...


def load_environment(spec: str) -> Callable[[], ToolEnvironment]:
    """The factory named by ``module:attribute`` (``examples.mcp_file_ops.environment:FileOpsEnvironment``)."""
    module_name, sep, attribute = str(spec).partition(":")
    if not sep or not module_name or not attribute:
        raise AtlasError(f"environment={spec!r}: give module:factory, e.g. examples.mcp_file_ops.environment:FileOpsEnvironment")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise AtlasError(f"environment={spec!r}: {exc}; give an importable module:factory") from None
    if not callable(factory):
        raise AtlasError(f"environment={spec!r} is not callable; give a factory that returns a new environment")
    return factory


def episode_prompts(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One GRPO prompt per session: its first served turn's prompt (the system prompt and the task)."""
    prompts: dict[str, dict[str, Any]] = {}
    for example in examples:
        prompt = list(example["prompt"])
        if [m.get("role") for m in prompt][-1:] != ["user"] or any(m.get("role") == "assistant" for m in prompt):
            continue  # a later turn of a session: the episode starts before it
        prompts.setdefault(json.dumps(prompt, sort_keys=True), {"prompt": prompt})
    return list(prompts.values())


def environment_reward(completions: Sequence[Any], episode_reward: Sequence[float] | None = None, **_: Any) -> list[float]:
    """The environment's reward of each episode (``rollout_func`` passes it as ``episode_reward``)."""
    if episode_reward is None:
        raise AtlasError("environment_reward scores tool rollouts: train with an environment (--set environment=module:factory)")
    return [float(r) for r in episode_reward]


def tool_rollouts(factory: Callable[[], ToolEnvironment], *, max_turns: int = 6, max_new_tokens: int = 256,
                  temperature: float = 1.0) -> Callable[[list[Any], Any], dict[str, list[Any]]]:
    """TRL's ``rollout_func``: one episode per prompt it is given (the sampler already repeats each prompt for
    its group), returning ``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask`` and ``episode_reward``."""
    state: dict[str, Any] = {}

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        tokenizer = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        if "llg" not in state:
            import llguidance.hf

            state["llg"] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=getattr(model.config, "vocab_size", None))
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [], "episode_reward": []}
        for prompt in prompts:
            episode = _episode(factory(), list(prompt), tokenizer, model, state["llg"], max_turns=max_turns,
                               max_new_tokens=max_new_tokens, temperature=temperature)
            for key, value in episode.items():
                out[key].append(value)
        return out

    return rollout


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _episode(env: ToolEnvironment, prompt: list[dict[str, str]], tokenizer: Any, model: Any, llg: Any, *,
             max_turns: int, max_new_tokens: int, temperature: float) -> dict[str, Any]:
    """One episode as one sequence: the prompt's tokens, then the model's and the environment's in turn."""
    import torch
    from transformers import LogitsProcessorList

    from ..models.local import grammar_mask
    from ..student import (
        FINAL_ANSWER,
        MAX_LOCAL_ANSWER_CHARS,
        MAX_LOCAL_ARGUMENT_CHARS,
        step_model,
        tool_chat_messages,
        tools_key,
    )

    env.reset(str(prompt[-1]["content"]))
    tools = env.tools()
    schema = step_model(tools_key(tools), "auto", MAX_LOCAL_ANSWER_CHARS, MAX_LOCAL_ARGUMENT_CHARS).model_json_schema()
    history: list[dict[str, Any]] = [dict(m) for m in prompt]  # the served prompt: its system message lists the tools
    text = _render(tokenizer, tool_chat_messages(history))
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    completion: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    answer: str | None = None
    for _ in range(max_turns):
        constraint = grammar_mask(llg, schema)
        if constraint is None:
            raise AtlasError("the step grammar did not compile for these tools; student rollouts decode under it")
        ids = torch.tensor([prompt_ids + completion], device=model.device)
        with torch.no_grad():
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=True,
                                       temperature=temperature, logits_processor=LogitsProcessorList([constraint]),
                                       output_scores=True, return_dict_in_generate=True,
                                       pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        new = [int(t) for t in generated.sequences[0][ids.shape[1]:]]
        for token, scores in zip(new, generated.scores, strict=False):
            logprobs.append(float(torch.log_softmax(scores[0].float(), dim=-1)[token]))
        completion += new
        mask += [1] * len(new)
        written = tokenizer.decode(new, skip_special_tokens=True)
        try:
            step = json.loads(written)["step"]
        except (ValueError, KeyError, TypeError):
            break  # cut at max_new_tokens: no step, no answer
        if step.get("action") == FINAL_ANSWER:
            answer = str(step.get("answer") or "")
            break
        name, arguments = str(step.get("action")), step.get("arguments") or {}
        try:
            result, status = str(env.call(name, arguments)), None
        except Exception as exc:  # noqa: BLE001 - a failing tool is a result the model sees, as at run time
            result, status = f"{type(exc).__name__}: {exc}", "error"
        last, before = text, text + tokenizer.decode(new, skip_special_tokens=False)
        history += [{"role": "assistant", "content": "", "tool_calls": [{"name": name, "arguments": arguments}]},
                    {"role": "tool", "name": name, "content": result, **({"status": status} if status else {})}]
        text = _render(tokenizer, tool_chat_messages(history))
        if not text.startswith(last):
            raise AtlasError("the chat template does not continue the served layout's last prompt (it re-renders "
                             "earlier turns); student rollouts need a template that renders each message on its own, such as ChatML")
        if not text.startswith(before):
            break  # the step as written is not as the served layout writes it back (a number as 1e2): the episode ends
        env_ids = tokenizer(text[len(before):], add_special_tokens=False)["input_ids"]
        completion += env_ids
        mask += [0] * len(env_ids)
        logprobs += [0.0] * len(env_ids)
    return {"prompt_ids": prompt_ids, "completion_ids": completion, "logprobs": logprobs, "env_mask": mask,
            "episode_reward": float(env.reward(answer))}
