"""Judging: a session reward (outcome, process, efficiency) and a process score for every step.

The small judge is sampled once per configured temperature. When the samples disagree (their scores span more
than ``disagreement_threshold``) or are unsure (mean confidence under ``uncertainty_threshold``), the large
judge arbitrates and its score stands. Verifiable checks, plain functions the user supplies, combine with the
judges' score (``checks_weight``); alone they decide when no judge answered. When nothing could score the
session the reward is None with the reason: never a made-up 0. Every sample is kept.

The same code scores sessions at run time and rollouts during training (see ``atlas_learning.train``).
"""

from __future__ import annotations

import inspect
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import JudgesConfig
from .flows import Ask, AskAll, Flow
from .prompts import render_steps, session_judge_messages, step_judge_messages
from .redact import Redactor
from .schemas import SessionJudgement, StepJudgements

__all__ = [
    "Check",
    "CheckContext",
    "CheckResult",
    "SessionReward",
    "StepReward",
    "judge_session_flow",
    "judge_steps_flow",
    "run_checks",
    "weighted_score",
]


@dataclass(frozen=True)
class CheckContext:
    """What a verifiable check sees: the task, the final answer, the steps and the session's metadata."""

    task: str
    final_answer: str
    steps: Sequence[dict[str, Any]] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    """A check's score in 0..1 (None when it could not decide) and why."""

    score: float | None
    reason: str = ""
    name: str = ""


#: A verifiable check: a function of the context returning a CheckResult, a float, a bool or (score, reason).
Check = Callable[[CheckContext], CheckResult | float | bool | tuple[float, str] | None]


def _check_name(check: Check) -> str:
    return getattr(check, "__name__", None) or type(check).__name__


def _score(value: Any) -> float | None:
    score = float(value)
    return None if math.isnan(score) else min(1.0, max(0.0, score))


def _check_result(value: Any, name: str) -> CheckResult:
    if isinstance(value, CheckResult):
        return CheckResult(None if value.score is None else _score(value.score), value.reason, value.name or name)
    if isinstance(value, bool):
        return CheckResult(1.0 if value else 0.0, "passed" if value else "failed", name)
    if isinstance(value, (int, float)):
        return CheckResult(_score(value), "", name)
    if isinstance(value, tuple) and len(value) == 2:
        return CheckResult(None if value[0] is None else _score(value[0]), str(value[1]), name)
    if value is None:
        return CheckResult(None, "check did not decide", name)
    return CheckResult(None, f"check returned {type(value).__name__}; expected CheckResult, float, bool or (score, reason)", name)


def run_checks(checks: Sequence[Check], context: CheckContext) -> list[CheckResult]:
    """Run every check; one that raises or returns something else scores None with the reason.

    Scores are clamped to 0..1; NaN counts as undecided."""
    results = []
    for check in checks:
        name = _check_name(check)
        try:
            value = check(context)
            if inspect.isawaitable(value):
                raise TypeError("async checks are not supported; make the check a plain function")
            results.append(_check_result(value, name))
        except Exception as exc:  # a user's check must not crash the session
            results.append(CheckResult(None, f"check raised {type(exc).__name__}: {exc}", name))
    return results


def weighted_score(judgement: SessionJudgement, weights: dict[str, float]) -> float:
    """The session reward from a judgement's parts, weights normalised to sum to 1."""
    total = sum(weights.values()) or 1.0
    return sum(getattr(judgement, part) * weight for part, weight in weights.items()) / total


@dataclass(frozen=True)
class StepReward:
    step_id: str
    score: float
    rationale: str = ""


@dataclass(frozen=True)
class SessionReward:
    """The session's reward with everything that produced it."""

    score: float | None
    status: str  # "ok" or "no_reward"
    reason: str
    breakdown: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    escalated: bool = False
    checks: list[CheckResult] = field(default_factory=list)


def judge_session_flow(
    task: str,
    steps: Sequence[dict[str, Any]],
    final_answer: str,
    verdicts: str,
    checks: Sequence[CheckResult],
    config: JudgesConfig,
    *,
    judging: str = "full",
) -> Flow[SessionReward]:
    """Sample the small judge, arbitrate with the large one when needed, and combine with the checks.

    ``judging`` is ``full``, or, when verifiable checks decided the outcome, ``one_sample`` (one small-judge
    sample, never arbitrated: the checks carry the outcome) or ``skip`` (the checks alone)."""
    messages = session_judge_messages(task, render_steps(steps, config.context_budget_chars), final_answer, verdicts)
    samples: list[dict[str, Any]] = []
    valid: list[SessionJudgement] = []
    temperatures = {"full": config.temperatures, "one_sample": config.temperatures[:1]}.get(judging, [])
    # The samples are independent: asked at once (the flow's driver makes them concurrently).
    answers = yield AskAll(tuple(Ask("judge_small", "judge_session", messages, SessionJudgement, temperature=t)
                                 for t in temperatures))
    for temperature, answer in zip(temperatures, answers, strict=True):
        samples.append(_sample("small", temperature, answer.output, answer.error, answer.text))
        if answer.ok:
            valid.append(answer.output)

    judge_score: float | None = None
    breakdown: dict[str, Any] = {}
    reasons: list[str] = []
    escalated = False
    if judging != "full":
        if valid:
            judge_score = weighted_score(valid[0], config.weights)
            breakdown = {part: getattr(valid[0], part) for part in config.weights}
            reasons.append("verifiable checks decided the outcome: one small-judge sample")
        else:
            reasons.append("verifiable checks decided the outcome: judges " + ("skipped" if judging == "skip" else "failed"))
    elif valid:
        scores = [weighted_score(j, config.weights) for j in valid]
        spread = max(scores) - min(scores)
        confidence = statistics.fmean(j.confidence for j in valid)
        judge_score = statistics.fmean(scores)
        breakdown = {part: round(statistics.fmean(getattr(j, part) for j in valid), 4) for part in config.weights}
        breakdown["judge_confidence"] = round(confidence, 4)
        if spread > config.disagreement_threshold or confidence < config.uncertainty_threshold:
            why = f"small judge samples spread {spread:.2f}" if spread > config.disagreement_threshold else f"small judge confidence {confidence:.2f}"
            escalated = True
            large = yield Ask("judge_large", "judge_session_arbitration", messages, SessionJudgement, temperature=config.decisive_temperature)
            samples.append(_sample("large", 0.0, large.output, large.error, large.text))
            if large.ok:
                judge_score = weighted_score(large.output, config.weights)
                breakdown = {part: getattr(large.output, part) for part in config.weights}
                breakdown["judge_confidence"] = large.output.confidence
                reasons.append(f"{why}: the large judge arbitrated")
            else:
                reasons.append(f"{why}, and the large judge failed ({large.error}): kept the small judge's mean")
        else:
            reasons.append(f"{len(valid)} small-judge samples agreed")
    else:
        escalated = True
        large = yield Ask("judge_large", "judge_session_fallback", messages, SessionJudgement, temperature=config.decisive_temperature)
        samples.append(_sample("large", 0.0, large.output, large.error, large.text))
        if large.ok:
            judge_score = weighted_score(large.output, config.weights)
            breakdown = {part: getattr(large.output, part) for part in config.weights}
            reasons.append("no small-judge sample was usable: the large judge scored")
        else:
            reasons.append(f"no judge could score the session (last error: {large.error})")

    scored_checks = [c.score for c in checks if c.score is not None]
    if scored_checks:
        check_score = statistics.fmean(scored_checks)
        breakdown["checks"] = {c.name: c.score for c in checks}
        if judge_score is None:
            return SessionReward(check_score, "ok", "; ".join([*reasons, "verifiable checks alone decided"]), breakdown, samples, escalated, list(checks))
        combined = config.checks_weight * check_score + (1 - config.checks_weight) * judge_score
        breakdown["judges"] = round(judge_score, 4)
        reasons.append(f"checks {check_score:.2f} weighted {config.checks_weight} with judges {judge_score:.2f}")
        return SessionReward(combined, "ok", "; ".join(reasons), breakdown, samples, escalated, list(checks))
    if judge_score is None:
        return SessionReward(None, "no_reward", "; ".join(reasons), breakdown, samples, escalated, list(checks))
    return SessionReward(judge_score, "ok", "; ".join(reasons), breakdown, samples, escalated, list(checks))


def judge_steps_flow(task: str, steps: Sequence[dict[str, Any]], config: JudgesConfig) -> Flow[tuple[list[StepReward], str]]:
    """A process score for every step in one small-judge call; an empty list with the reason when it fails."""
    if not steps or not config.judge_steps:
        return [], "no steps to judge" if not steps else "judges.judge_steps is off"
    answer = yield Ask("judge_small", "judge_steps", step_judge_messages(task, render_steps(steps, config.context_budget_chars)), StepJudgements, temperature=config.decisive_temperature)
    if not answer.ok:
        return [], f"step judge failed: {answer.error}"
    rewards = [StepReward(steps[j.step]["id"], j.score, j.rationale) for j in answer.output.steps if j.step < len(steps)]
    missing = len(steps) - len({r.step_id for r in rewards})
    return rewards, f"{len(rewards)} steps scored" + (f", {missing} left unscored by the judge" if missing else "")


#: The built-in patterns, run on a judge's raw reply before it is cut (the recorder redacts the stored sample again
#: with the configured patterns): a secret the cut would split is found whole.
_REDACT_BEFORE_CUT = Redactor()


def _sample(judge: str, temperature: float, output: SessionJudgement | None, error: str | None, text: str) -> dict[str, Any]:
    sample: dict[str, Any] = {"judge": judge, "temperature": temperature}
    if output is not None:
        sample.update(output.model_dump())
    else:
        sample.update({"error": error, "raw": _REDACT_BEFORE_CUT.text(text)[:500]})
    return sample
