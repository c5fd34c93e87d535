"""The words each supervision role is given. Short on purpose: the embedded model has a small context and
every token costs time on a CPU. Trace excerpts are cut to the judges' ``context_budget_chars``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .redact import default_redactor

__all__ = [
    "render_steps",
    "probe_messages",
    "plan_review_messages",
    "step_validation_messages",
    "answer_validation_messages",
    "render_checks",
    "execution_messages",
    "session_judge_messages",
    "step_judge_messages",
    "synthesis_messages",
]

Messages = list[dict[str, str]]


def _clip(text: Any, limit: int) -> str:
    """Text for a prompt (and what is stored of it, such as check results), redacted before it is cut, so a cut
    never leaves part of a secret."""
    value = text if isinstance(text, str) else json.dumps(default_redactor().value(text), default=str, ensure_ascii=False)
    return default_redactor().cut(value, limit, " …[cut]")


def render_steps(steps: Sequence[dict[str, Any]], budget_chars: int) -> str:
    """One line per step, ``#i name(args) -> output``, sharing ``budget_chars`` evenly across steps."""
    if not steps:
        return "(no steps recorded)"
    per_step = max(80, budget_chars // len(steps))
    lines = []
    for index, step in enumerate(steps):
        name = step.get("tool_name") or step.get("name") or step.get("kind", "step")
        args = _clip(step.get("tool_args") or step.get("input") or "", per_step // 3)
        result = step.get("error") and f"ERROR {step['error']}" or step.get("output") or ""
        lines.append(f"#{index} {name}({args}) -> {_clip(result, per_step - len(args) - len(name))}")
    return _clip("\n".join(lines), budget_chars)


def _system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def probe_messages(task: str, signals: dict[str, Any]) -> Messages:
    return [
        _system(
            "You decide how much supervision an agent needs for a task. Lanes: auto (no supervision), paired "
            "(teacher checks the final answer), coach (teacher checks every step), escalate (too hard for the agent)."
        ),
        _user(f"Task: {_clip(task, 800)}\nHistory of this agent on similar tasks: {json.dumps(signals)}\nPick a lane."),
    ]


def plan_review_messages(task: str, plan: Sequence[str], lessons: str) -> Messages:
    listed = "\n".join(f"{i + 1}. {step}" for i, step in enumerate(plan)) or "(no plan given)"
    return [
        _system("You are a teacher reviewing a student agent's plan. Approve it or amend the steps; list concerns briefly." + _lessons(lessons)),
        _user(f"Task: {_clip(task, 1200)}\nPlan:\n{_clip(listed, 1500)}"),
    ]


def step_validation_messages(task: str, plan: Sequence[str], steps_so_far: str, step: str, lessons: str) -> Messages:
    return [
        _system("You are a teacher watching a student agent work. Accept the step if it moves the task forward; else reject it and say what to do instead." + _lessons(lessons)),
        _user(f"Task: {_clip(task, 800)}\nPlan: {_clip('; '.join(plan), 600)}\nEarlier steps:\n{steps_so_far}\nStep to check:\n{step}"),
    ]


def answer_validation_messages(task: str, answer: str, steps: str, lessons: str, checks: str = "") -> Messages:
    """``checks``: the verifiable checks' results on this answer (:func:`render_checks`), when there are any."""
    shown = f"\nVerifiable checks on this answer:\n{checks}" if checks else ""
    return [
        _system("You are a teacher checking a student agent's final answer. Accept it only if it fully and correctly completes the task; else give specific guidance." + _lessons(lessons)),
        _user(f"Task: {_clip(task, 1200)}\nSteps taken:\n{steps}\nFinal answer:\n{_clip(answer, 2000)}{shown}"),
    ]


def render_checks(results: Sequence[Any]) -> str:
    """Check results (``CheckResult``) one per line: ``- name: passed|FAILED (score) reason``; '' without any."""
    lines = []
    for result in results:
        if result.score is None:
            state = "undecided"
        else:
            state = f"passed ({result.score:.2f})" if result.score >= 0.5 else f"FAILED ({result.score:.2f})"
        lines.append(f"- {result.name}: {state}" + (f" {_clip(result.reason, 300)}" if result.reason else ""))
    return "\n".join(lines)


def execution_messages(task: str, lessons: str) -> Messages:
    return [_system("Complete the task yourself. Answer with the result only." + _lessons(lessons)), _user(_clip(task, 3000))]


def session_judge_messages(task: str, steps: str, answer: str, verdicts: str) -> Messages:
    return [
        _system(
            "You judge an agent's work. Score 0..1: outcome (is the task done correctly), process (were the steps sound), "
            "efficiency (no wasted steps), and your confidence."
        ),
        _user(f"Task: {_clip(task, 1200)}\nSteps:\n{steps}\nTeacher verdicts: {verdicts or 'none'}\nFinal answer:\n{_clip(answer, 1500)}"),
    ]


def step_judge_messages(task: str, steps: str) -> Messages:
    return [
        _system("You judge each step of an agent's work. For every step number give a score 0..1 for how well it served the task."),
        _user(f"Task: {_clip(task, 800)}\nSteps:\n{steps}"),
    ]


def synthesis_messages(task: str, steps: str, answer: str, reward: float | None, guidance: Sequence[str],
                       entries: Sequence[tuple[str, str]], retired: Sequence[str] = (), family: str | None = None,
                       why: str = "") -> Messages:
    """``entries``: the live lessons as (id, text); ``retired``: retired lessons, never to be proposed again;
    ``why``: what made this session worth learning from."""
    current = "\n".join(f"[{entry_id}] {lesson}" for entry_id, lesson in entries) or "(empty)"
    notes = "\n".join(f"- {_clip(g, 300)}" for g in guidance) or "(none)"
    score = "unknown" if reward is None else f"{reward:.2f}"
    dead = "\n".join(f"- {_clip(lesson, 200)}" for lesson in retired)
    extra = (f"\nTask family: {family}" if family else "") + (f"\nWhy learn from it: {why}" if why else "")
    extra += f"\nRetired lessons (they did not help; never propose them again):\n{_clip(dead, 800)}" if dead else ""
    return [
        _system(
            "You maintain a playbook of short imperative lessons that help an agent on future tasks. From this session, "
            "propose at most 3 changes: add a new lesson, refine an entry by id, or retire a misleading one by id. A lesson "
            "is scoped to this task family unless it holds for every task (scope: general). "
            "Propose nothing if the session taught nothing new."
        ),
        _user(f"Task: {_clip(task, 800)}\nSteps:\n{steps}\nAnswer: {_clip(answer, 600)}\nReward: {score}\nTeacher guidance:\n{notes}"
              f"\nCurrent playbook:\n{_clip(current, 1500)}{extra}"),
    ]


def _lessons(lessons: str) -> str:
    return f"\n{lessons}" if lessons else ""
