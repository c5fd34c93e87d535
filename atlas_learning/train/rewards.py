"""Reward functions for TRL's GRPOTrainer, built on the rules sessions are scored with at run time.

Each is a callable ``(prompts, completions, **columns) -> list[float | None]`` (TRL's reward-function contract:
dataset columns arrive as keyword lists) returning None for rows it does not apply to, so several can be combined
and TRL sums those that apply.

- :class:`VerdictReward` (verifiable): a verdict on an answer or step whose correctness the recorded outcome
  tells, scored by :func:`atlas_learning.rewards.verdict_reward`.
- :class:`ExpectedAnswerReward` (verifiable): the teacher's own answer (escalation) against the expected answer,
  by :func:`atlas_learning.rewards.answer_matches`, the check sessions get at run time.
- :class:`JudgeReward`: the teacher's own answer scored by the run-time judges
  (:func:`atlas_learning.judges.judge_session_flow`, small-judge samples and large-judge arbitration included).
- :class:`TeachingReward`: a verdict's guidance scored by rolling the student out with it, by
  :func:`atlas_learning.rewards.teaching_reward` (the recorded attempt is the student without guidance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..flows import Answer, Ask, AskHuman, drive
from ..judges import judge_session_flow
from ..prompts import execution_messages
from ..rewards import (
    DEFAULT_EFFICIENCY_WEIGHT,
    DEFAULT_GUIDANCE_TOKEN_BUDGET,
    answer_matches,
    parse_verdict,
    teaching_reward,
    verdict_reward,
)
from ..student import FINAL_ANSWER, render_guidance

__all__ = [
    "REWARD_NAMES",
    "ExpectedAnswerReward",
    "JudgeReward",
    "StudentStepReward",
    "TeachingReward",
    "VerdictReward",
    "completion_text",
    "make_rewards",
    "step_match",
]

Rows = list[float | None]
#: What the student is told on a retry when the teacher rejected without guidance (as at run time).
RETRY_NOTICE = "The teacher rejected the answer; try again."


def completion_text(prompt: Any, completion: Any, prefill: str | None = None) -> str:
    """The completion as text, with its prompt's assistant prefill put back in front: the ``prefill`` column for a
    prompt rendered as text, or the prompt's last message when it is the assistant's."""
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        text = "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    else:
        text = str(completion)
    if prefill:
        return prefill + text
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
        text = str(prompt[-1].get("content") or "") + text
    return text


def _texts(prompts: Sequence[Any], completions: Sequence[Any], prefill: Sequence[str] | None) -> list[str]:
    prefills = prefill if prefill is not None else [None] * len(prompts)
    return [completion_text(p, c, f) for p, c, f in zip(prompts, completions, prefills, strict=True)]


class VerdictReward:
    """1 / 0.5 / 0 for a verdict that decides right in a valid / malformed verdict / decides wrong or not at all."""

    __name__ = "verdict"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], kind: Sequence[str],
                 attempt_correct: Sequence[bool | None], prefill: Sequence[str] | None = None, **_: Any) -> Rows:
        return [verdict_reward(text, bool(ok)) if k in ("answer", "step") and ok is not None else None
                for text, k, ok in zip(_texts(prompts, completions, prefill), kind, attempt_correct, strict=True)]


class ExpectedAnswerReward:
    """1 when the teacher's own answer matches the expected answer, else 0; None without one."""

    __name__ = "expected_answer"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], kind: Sequence[str],
                 expected: Sequence[str | None], prefill: Sequence[str] | None = None, **_: Any) -> Rows:
        return [(1.0 if answer_matches(text, e) else 0.0) if k == "escalation" and e is not None else None
                for text, k, e in zip(_texts(prompts, completions, prefill), kind, expected, strict=True)]


class JudgeReward:
    """The run-time session judges' score of the teacher's own answer (escalation rows); None when none answers.

    ``models`` maps roles to chat models (a :class:`~atlas_learning.models.RoleModels`); ``judges`` is the
    config's ``judges`` section.
    """

    __name__ = "judge"

    def __init__(self, models: Any, judges: Any) -> None:
        self.models = models
        self.judges = judges

    def _perform(self, request: Ask | AskHuman) -> Answer:
        if isinstance(request, AskHuman):
            return Answer(error="no human takes part in training")
        try:
            response = self.models.get(request.role).generate(
                request.messages, output_type=request.output_type, temperature=request.temperature,
                max_tokens=request.max_tokens)
        except Exception as exc:  # noqa: BLE001 - a failed judge call leaves the row unscored, as at run time
            return Answer(error=f"{type(exc).__name__}: {exc}")
        return Answer(response.output, response.text)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], kind: Sequence[str], task: Sequence[str],
                 prefill: Sequence[str] | None = None, **_: Any) -> Rows:
        rewards: Rows = []
        for text, k, t in zip(_texts(prompts, completions, prefill), kind, task, strict=True):
            if k != "escalation":
                rewards.append(None)
                continue
            reward = drive(judge_session_flow(t, [], text, "", [], self.judges), self._perform)
            rewards.append(reward.score)
        return rewards


class TeachingReward:
    """What a verdict's guidance does to the student, on rows with an expected answer.

    Applies to final-answer verdicts (``answer`` rows). A verdict that rejects is rolled out: the student (a chat
    model) answers the task with the guidance (or, without any, the retry notice it gets at run time), graded
    against the expected answer; the recorded attempt is its answer without guidance. A verdict that accepts
    leaves the attempt as it was. An unreadable verdict, or a student call that fails, leaves the row unscored
    (None). Scored by :func:`atlas_learning.rewards.teaching_reward`.
    """

    __name__ = "teaching"

    def __init__(self, student: Any, *, efficiency_weight: float = DEFAULT_EFFICIENCY_WEIGHT,
                 token_budget: int = DEFAULT_GUIDANCE_TOKEN_BUDGET, max_tokens: int = 256) -> None:
        self.student = student
        self.efficiency_weight = efficiency_weight
        self.token_budget = token_budget
        self.max_tokens = max_tokens

    def guided_answer(self, task: str, guidance: str) -> str:
        """The student's answer to ``task`` given the guidance, as it would get it on a retry."""
        messages = execution_messages(task, render_guidance([guidance]))
        return self.student.generate(messages, max_tokens=self.max_tokens).text

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], kind: Sequence[str], task: Sequence[str],
                 expected: Sequence[str | None], attempt_correct: Sequence[bool | None],
                 prefill: Sequence[str] | None = None, **_: Any) -> Rows:
        rewards: Rows = []
        texts = _texts(prompts, completions, prefill)
        for text, k, t, e, ok in zip(texts, kind, task, expected, attempt_correct, strict=True):
            verdict = parse_verdict(text)
            if k != "answer" or e is None or ok is None or verdict.accepted is None:
                rewards.append(None)
                continue
            guidance = ""
            guided = bool(ok)
            if verdict.accepted is False:
                guidance = verdict.guidance
                try:
                    guided = answer_matches(self.guided_answer(t, guidance or RETRY_NOTICE), e)
                except Exception:  # noqa: BLE001 - a failed rollout leaves the row unscored, as a failed judge does
                    rewards.append(None)
                    continue
            rewards.append(teaching_reward(bool(ok), guided, guidance, efficiency_weight=self.efficiency_weight,
                                           token_budget=self.token_budget))
        return rewards


#: The names ``--set rewards=...`` accepts.
def _step_of(text: str) -> dict[str, Any] | None:
    """The ``{"action", ...}`` object of a step JSON text (``{"step": {...}}`` or the bare object); None when invalid."""
    import json

    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None
    step = data.get("step", data) if isinstance(data, dict) else None
    return step if isinstance(step, dict) and isinstance(step.get("action"), str) else None


def step_match(text: str, expected: str) -> float:
    """How well a student's step (JSON text) matches the recorded one: 1 for the same tool with the same arguments
    (unset ones ignored) or a final answer that gives the recorded answer (:func:`answer_matches`), 0.5 for the
    same action otherwise, 0 for another action or no valid step."""
    got, want = _step_of(text), _step_of(expected)
    if got is None or want is None or got["action"] != want["action"]:
        return 0.0
    if want["action"] == FINAL_ANSWER:
        return 1.0 if answer_matches(str(got.get("answer") or ""), str(want.get("answer") or "")) else 0.5

    def given(arguments: Any) -> dict[str, Any]:
        return {k: v for k, v in arguments.items() if v is not None} if isinstance(arguments, dict) else {}

    return 1.0 if given(got.get("arguments")) == given(want.get("arguments")) else 0.5


class StudentStepReward:
    """A student turn (kind ``student``) scored against the step recorded in the approved session: :func:`step_match`."""

    __name__ = "student_step"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], kind: Sequence[str],
                 expected_step: Sequence[str | None] | None = None, **_: Any) -> Rows:
        expected = expected_step if expected_step is not None else [None] * len(prompts)
        return [step_match(text, want) if k == "student" and want else None
                for text, k, want in zip(_texts(prompts, completions, None), kind, expected, strict=True)]


REWARD_NAMES = ("verdict", "expected_answer", "judge", "teaching", "student_step")


def make_rewards(names: Sequence[str], *, config: Any = None, student: Any = None) -> list[Any]:
    """The reward functions named, in order. ``judge`` needs ``config`` (its models and judges section) and
    ``teaching`` a ``student`` chat model."""
    from ..errors import AtlasError

    rewards: list[Any] = []
    for name in names:
        if name == "verdict":
            rewards.append(VerdictReward())
        elif name == "expected_answer":
            rewards.append(ExpectedAnswerReward())
        elif name == "student_step":
            rewards.append(StudentStepReward())
        elif name == "judge":
            if config is None:
                raise AtlasError("the judge reward needs a config with judge models")
            from ..models import RoleModels

            rewards.append(JudgeReward(RoleModels(config), config.judges))
        elif name == "teaching":
            if student is None:
                raise AtlasError("the teaching reward needs a student model: set models.student in atlas.yaml")
            rewards.append(TeachingReward(student))
        else:
            raise AtlasError(f"unknown reward {name!r}; use any of {', '.join(REWARD_NAMES)}")
    return rewards
