"""Teacher training data from reviewed sessions: what the teacher saw, what it answered, and whether it was right.

Sessions come from the store (approved ones, through :func:`~atlas_learning.export.get_training_sessions`) or from
a JSONL file written by ``atlas export`` (trace format); the review gate applies to both: a record whose
``review_status`` is not approved is skipped unless asked for. Each session yields one example per teacher
decision it recorded:

- ``answer``: a final-answer verdict. Prompt: the task, the steps taken up to that attempt, the attempt, the
  teacher's lessons, exactly as :func:`~atlas_learning.prompts.answer_validation_messages` built it at run time.
  Completion: the recorded ``Verdict`` JSON.
- ``step``: a step verdict (coach lane), prompt from :func:`~atlas_learning.prompts.step_validation_messages`.
- ``plan``: a plan review, prompt from :func:`~atlas_learning.prompts.plan_review_messages`.
- ``escalation``: the teacher doing the task itself, prompt from :func:`~atlas_learning.prompts.execution_messages`.

Every example has the columns reward functions read: ``kind``, ``task``, ``attempt`` (the answer or step judged),
``attempt_correct`` (from the recorded outcome: the expected answer when the metadata has one, else the final
answer's verifiable checks, else the verdict a reviewer approved; None when nothing tells), ``expected`` (the
expected answer or None), ``session_reward``, ``session_id`` and ``learning_key``, plus ``prompt`` and
``completion`` (chat messages).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import AtlasError
from ..export import DEFAULT_REVIEW_STATUSES, get_training_sessions
from ..prompts import (
    answer_validation_messages,
    execution_messages,
    plan_review_messages,
    render_steps,
    step_validation_messages,
)
from ..rewards import answer_matches, expected_answer_of, mean_or_none

__all__ = [
    "EXAMPLE_KINDS",
    "VERDICT_PREFILL",
    "grpo_export_examples",
    "load_sessions",
    "split_examples",
    "teacher_examples",
]

#: The kinds of teacher decision an example can hold.
EXAMPLE_KINDS: tuple[str, ...] = ("answer", "step", "plan", "escalation")
#: The start of every verdict: with ``prefill=True`` prompts end with it as the assistant's first words, the way
#: constrained decoding starts the teacher at run time, so a small model only has to choose what follows.
VERDICT_PREFILL = '{"accepted": '
_DEFAULT_BUDGET = 6000  # JudgesConfig.context_budget_chars's default


def load_sessions(
    source: str | Path,
    *,
    store_url: str | None = None,
    review_status: Sequence[str] | None = DEFAULT_REVIEW_STATUSES,
    learning_key: str | None = None,
    limit: int = 100_000,
) -> list[dict[str, Any]]:
    """Trace records to train on: ``source`` is ``"approved"`` (read from ``store_url``) or a trace JSONL path.

    ``review_status`` is the gate (approved only by default; None takes every status, an explicit opt-out).
    Raises AtlasError with one line saying what to do when the source is missing or is not a trace export.
    """
    if isinstance(review_status, str):
        review_status = (review_status,)
    if str(source) == "approved":
        if not store_url:
            raise AtlasError("--data approved reads the store: set storage.url in atlas.yaml or pass store_url")
        return get_training_sessions(store_url, review_status=review_status, learning_key=learning_key, limit=limit)
    path = Path(source)
    if not path.is_file():
        raise AtlasError(f"--data {source}: no such file; give a trace JSONL from `atlas export` or 'approved'")
    records: list[dict[str, Any]] = []
    for number, record in jsonl_rows(path, "atlas export"):
        if not isinstance(record, dict) or "task" not in record or "steps" not in record:
            raise AtlasError(f"{path}:{number} is not a trace record; export with `atlas export --format trace`")
        if review_status is not None and record.get("review_status") not in review_status:
            continue
        if learning_key is not None and record.get("learning_key") != learning_key:
            continue
        records.append(record)
        if len(records) >= limit:
            break
    return records


def jsonl_rows(path: Path, exporter: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of an export file; a line that is not JSON is a one-line
    AtlasError naming it and ``exporter``, the command that writes such files."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise AtlasError(f"{path}:{number} is not JSON ({exc.msg}); export again with `{exporter}`") from None


def grpo_export_examples(source: str | Path, *, learning_key: str | None = None) -> list[dict[str, Any]] | None:
    """The prompt rows of an ``atlas export --format grpo`` file as training examples, or None when ``source`` is
    not such a file (a trace export, or ``approved``).

    Each row is the teacher doing the session's task itself (kind ``escalation``): the execution prompt the export
    wrote, the session's final answer as the completion (for SFT and GKD), and the columns the reward functions
    read (``expected`` from the export's ``ground_truth``, ``attempt_correct`` from the verifiable outcome when
    the checks decided). The review gate was applied when the file was exported (approved only by default)."""
    path = Path(source)
    if str(source) == "approved" or not path.is_file():
        return None
    examples: list[dict[str, Any]] = []
    for number, row in jsonl_rows(path, "atlas export"):
        if not isinstance(row, dict) or "prompt" not in row or "steps" in row:
            return None if number == 1 else _not_grpo(path, number)
        if learning_key is not None and row.get("learning_key") != learning_key:
            continue
        outcome = row.get("verifiable_outcome")
        answer = str(row.get("final_answer") or "")
        examples.append({
            "prompt": row["prompt"], "completion": [{"role": "assistant", "content": answer}], "kind": "escalation",
            "task": str(row.get("task") or ""), "attempt": answer,
            "attempt_correct": None if outcome is None else outcome >= 1.0, "expected": row.get("ground_truth"),
            "session_reward": row.get("session_reward"), "session_id": str(row.get("session_id") or ""),
            "learning_key": str(row.get("learning_key") or ""),
        })
    return examples


def _not_grpo(path: Path, number: int) -> Any:
    raise AtlasError(f"{path}:{number} is not a grpo export row; the file mixes formats: export again with `atlas export --format grpo`")


def teacher_examples(
    records: Iterable[dict[str, Any]],
    *,
    kinds: Sequence[str] = EXAMPLE_KINDS,
    context_budget_chars: int = _DEFAULT_BUDGET,
    prefill: bool = False,
) -> list[dict[str, Any]]:
    """One example per recorded teacher decision of the given ``kinds`` (see the module docs for the columns).

    ``prefill=True`` ends each verdict prompt with :data:`VERDICT_PREFILL` as an assistant message, and the
    completion then holds only what follows it.
    """
    unknown = set(kinds) - set(EXAMPLE_KINDS)
    if unknown:
        raise AtlasError(f"unknown example kind(s) {', '.join(sorted(unknown))}; use {', '.join(EXAMPLE_KINDS)}")
    examples: list[dict[str, Any]] = []
    for record in records:
        session = _Session(record, context_budget_chars)
        if "plan" in kinds:
            examples.extend(session.plan_examples())
        if "step" in kinds:
            examples.extend(session.step_examples(prefill))
        if "answer" in kinds:
            examples.extend(session.answer_examples(prefill))
        if "escalation" in kinds:
            examples.extend(session.escalation_examples())
    return examples


def split_examples(examples: Sequence[dict[str, Any]], held_out: float = 0.2, *, seed: int = 0,
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out), each shuffled with ``seed``, split by task: every example of a task (all its sessions)
    lands on one side, so the held-out reward measures tasks the model was not trained on."""
    if not 0.0 <= held_out < 1.0:
        raise AtlasError(f"held_out must be in [0, 1): got {held_out}")
    rng = random.Random(seed)

    def group(example: dict[str, Any]) -> str:
        return str(example.get("task") or example["session_id"])

    tasks = sorted({group(e) for e in examples})
    rng.shuffle(tasks)
    count = min(round(len(tasks) * held_out), len(tasks) - 1)  # at least one task is left to train on
    if held_out > 0 and count == 0 and len(tasks) > 1:
        count = 1
    held = set(tasks[:max(0, count)])
    train = [e for e in examples if group(e) not in held]
    kept = [e for e in examples if group(e) in held]
    rng.shuffle(train)
    rng.shuffle(kept)
    return train, kept


class _Session:
    """One trace record, read for the teacher's decisions in it."""

    def __init__(self, record: dict[str, Any], budget: int) -> None:
        self.record = record
        self.budget = budget
        self.task = str(record.get("task") or "")
        self.lessons = record.get("teacher_learning") or ""
        metadata = record.get("session_metadata") or {}
        self.expected = expected_answer_of(metadata) if isinstance(metadata, dict) else None
        self.approved = record.get("review_status") == "approved"
        reward = record.get("session_reward") or {}
        self.session_reward = reward.get("score") if isinstance(reward, dict) else None
        checks = (reward.get("breakdown") or {}).get("checks") if isinstance(reward, dict) else None
        self.final_outcome = mean_or_none([v for v in (checks or {}).values() if isinstance(v, (int, float))])
        self.steps = [_runtime_step(s) for s in record.get("steps") or []]
        self.attempt_of_step = [int(s.get("attempts") or 1) for s in record.get("steps") or []]
        self.events = record.get("trajectory_events") or []

    def _example(self, kind: str, prompt: list[dict[str, str]], completion: str, attempt: str,
                 correct: bool | None) -> dict[str, Any]:
        return {
            "prompt": prompt, "completion": [{"role": "assistant", "content": completion}], "kind": kind,
            "task": self.task, "attempt": attempt, "attempt_correct": correct, "expected": self.expected,
            "session_reward": self.session_reward, "session_id": str(self.record.get("session_id") or ""),
            "learning_key": str(self.record.get("learning_key") or ""),
        }

    def _verdict(self, kind: str, messages: list[dict[str, str]], verdict: dict[str, Any], attempt: str,
                 correct: bool | None, prefill: bool) -> dict[str, Any]:
        text = json.dumps({"accepted": verdict["accepted"], "guidance": verdict.get("guidance") or "",
                           "reason": verdict.get("reason") or ""}, ensure_ascii=False)
        if prefill:
            messages = [*messages, {"role": "assistant", "content": VERDICT_PREFILL}]
            text = text[len(VERDICT_PREFILL):]
        return self._example(kind, messages, text, attempt, correct)

    def answer_examples(self, prefill: bool) -> list[dict[str, Any]]:
        attempts = [a for a in self.record.get("attempts") or [] if a.get("accepted") is not None]
        final = self.record.get("final_answer")
        examples = []
        for position, attempt in enumerate(attempts):
            number, answer = int(attempt["attempt"]), str(attempt.get("answer") or "")
            is_final = position == len(attempts) - 1 and answer == final
            steps = [s for s, a in zip(self.steps, self.attempt_of_step, strict=True) if a <= number]
            messages = answer_validation_messages(self.task, answer, render_steps(steps, self.budget), self.lessons,
                                                  attempt.get("checks") or "")
            verdict = {"accepted": attempt["accepted"], "guidance": attempt.get("guidance"),
                       "reason": attempt.get("verdict_reason")}
            examples.append(self._verdict("answer", messages, verdict, answer,
                                          self._correct(answer, is_final, attempt["accepted"]), prefill))
        return examples

    def _correct(self, answer: str, is_final: bool, recorded: bool) -> bool | None:
        if self.expected is not None:
            return answer_matches(answer, self.expected)
        if is_final and self.final_outcome is not None:
            return self.final_outcome >= 0.5
        return recorded if self.approved else None

    def step_examples(self, prefill: bool) -> list[dict[str, Any]]:
        plan = [str(p.get("description") or "") for p in (self.record.get("plan") or {}).get("steps") or []
                if isinstance(p, dict)]
        examples = []
        for position, step in enumerate(self.record.get("steps") or []):
            validation = step.get("validation") or {}
            if validation.get("accepted") is None:
                continue
            earlier = render_steps(self.steps[:position][-8:], self.budget // 2)
            current = render_steps([self.steps[position]], self.budget // 2)
            messages = step_validation_messages(self.task, plan, earlier, current, self.lessons)
            score = (step.get("reward") or {}).get("score")
            # the step judge's measured score first; else the verdict a reviewer approved
            correct = score >= 0.5 if score is not None else bool(validation["accepted"]) if self.approved else None
            examples.append(self._verdict("step", messages, validation, current, correct, prefill))
        return examples

    def plan_examples(self) -> list[dict[str, Any]]:
        plan = self.record.get("plan") or {}
        review = next((e.get("payload") or {} for e in self.events if e.get("event_type") == "plan_reviewed"), None)
        if not plan.get("reviewed") or review is None or review.get("error"):
            return []  # no review, or the teacher failed and the plan passed unreviewed: nothing to learn from
        proposed = [str(p.get("description") or "") for p in plan.get("proposed_steps") or [] if isinstance(p, dict)]
        steps = [str(p.get("description") or "") for p in plan.get("steps") or [] if isinstance(p, dict)]
        completion = json.dumps({"approved": bool(review.get("approved")), "steps": steps,
                                 "concerns": list(plan.get("concerns") or [])}, ensure_ascii=False)
        messages = plan_review_messages(self.task, proposed, self.lessons)
        return [self._example("plan", messages, completion, "\n".join(proposed), True if self.approved else None)]

    def escalation_examples(self) -> list[dict[str, Any]]:
        examples = []
        for note in self.record.get("guidance") or []:
            if note.get("kind") == "escalation" and note.get("source") == "teacher" and note.get("content"):
                answer = str(note["content"])
                correct = answer_matches(answer, self.expected) if self.expected is not None else \
                    (True if self.approved else None)
                examples.append(self._example("escalation", execution_messages(self.task, self.lessons), answer,
                                              answer, correct))
        return examples


def _runtime_step(step: dict[str, Any]) -> dict[str, Any]:
    """A trace step in the shape :func:`~atlas_learning.prompts.render_steps` reads at run time."""
    runtime = step.get("runtime") or {}
    return {"id": step.get("id"), "name": step.get("name"), "kind": step.get("kind"), "tool_name": step.get("tool"),
            "tool_args": step.get("tool_params") or None, "input": step.get("trace"), "output": step.get("output"),
            "error": runtime.get("error")}
