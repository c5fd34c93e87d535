"""Scripted stand-ins for every model, so the whole harness runs in seconds with no LLM (``--model scripted``).

* :class:`ScriptedSolver`: the student. A fake tool-calling chat model that plays a task's known solution
  (:meth:`Task.solution`): one tool call per turn, then the answer. Built fresh for every run (its message
  iterator is single-use).
* :class:`ScriptedSupervision`: the supervision roles (teacher, judges, probe, synthesizer) as Atlas scripted
  models answering by the schema they are asked for: the teacher accepts, the judges score well, the probe says
  ``paired`` and the synthesizer proposes one lesson that fits the task (so later tasks get lessons injected).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from atlas_learning.config import AtlasConfig
from atlas_learning.models import RoleModels, ScriptedModel

from .tasks import Task

__all__ = ["LESSONS", "ScriptedSolver", "ScriptedSupervision", "scripted_solver"]


class ScriptedSolver(GenericFakeChatModel):
    """A fake chat model that accepts tools and answers from a script. Bound tools go into the call's parameters,
    as with a real chat model, so a recorded session names the tools its model was offered (the student's
    training prompt lists them, as the served model's does)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def scripted_solver(task: Task, workspace: Path) -> ScriptedSolver:
    """A new solver playing ``task``'s solution on ``workspace``: each tool call, then the final answer."""
    solution = task.solution(Path(workspace))
    turns = [AIMessage("", tool_calls=[{"name": call.name, "args": call.args, "id": f"task{task.id}-call{i}"}])
             for i, call in enumerate(solution.calls)]
    turns.append(AIMessage(solution.answer))
    # disable_streaming: the fake cannot stream a message that is only a tool call
    return ScriptedSolver(messages=iter(turns), disable_streaming=True)


#: What the scripted synthesizer teaches, by what the task mentions (first match wins).
LESSONS: list[tuple[str, str]] = [
    (r"big\.log|large", "For a file over the read limit, use run_command with wc -l, head or tail instead of read_file."),
    (r"\.\./|passwd", "Paths outside the workspace are refused; report the refusal instead of retrying other paths."),
    (r"back ?up|copy", "To copy or back up a file, read it and write exactly the same content to the new path."),
    (r"how many|count|line", "Count with run_command (wc -l, grep -c) instead of counting by eye."),
    (r"", "Use list_files to check that a path exists before reading or writing next to it."),
]

_JUDGEMENT = {"outcome": 0.8, "process": 0.8, "efficiency": 0.8, "confidence": 0.9, "rationale": "the task looks done"}


def _user_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages if m.get("role") == "user")


def _synthesize(messages: list[dict[str, str]]) -> dict[str, Any]:
    text = _user_text(messages)
    task = re.search(r"^Task: (.*)$", text, re.MULTILINE)
    playbook = text.split("Current playbook:", 1)[-1]
    for pattern, lesson in LESSONS:
        if re.search(pattern, task.group(1) if task else text, re.IGNORECASE):
            if lesson in playbook:
                return {"changes": []}
            return {"changes": [{"op": "add", "lesson": lesson, "applies_when": "file tasks in the workspace",
                                 "reason": "seen in a scripted session"}]}
    return {"changes": []}


_ANSWERS: dict[str, dict[str, Any]] = {
    "teacher": {
        "Verdict": {"accepted": True, "guidance": "", "reason": "the result matches the task"},
        "PlanReview": {"approved": True, "steps": [], "concerns": []},
        "text": "I cannot do file work without the tools; the student should retry.",
    },
    "judge_small": {"SessionJudgement": _JUDGEMENT, "StepJudgements": {"steps": []}},
    "judge_large": {"SessionJudgement": _JUDGEMENT, "StepJudgements": {"steps": []}},
    "probe": {"ProbeAnswer": {"lane": "paired", "confidence": 0.7, "reason": "a file task; the teacher checks the answer"}},
    "synthesizer": {"PlaybookChanges": _synthesize},
}


def _respond(role: str):
    answers = _ANSWERS.get(role, _ANSWERS["teacher"])

    def respond(messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
        title = schema.get("title", "text") if schema else "text"
        answer = answers.get(title, answers.get("text", "ok"))
        if callable(answer):
            answer = answer(messages)
        return json.dumps(answer) if isinstance(answer, dict) else answer

    return respond


class ScriptedSupervision(RoleModels):
    """Every supervision role as an Atlas scripted model that answers by the requested schema."""

    def __init__(self, config: AtlasConfig | None = None) -> None:
        super().__init__(config)

    def get(self, role: str) -> ScriptedModel:
        with self._lock:
            if role not in self._by_role:
                model = ScriptedModel(role=role, ledger=self.ledger, responses=[_respond(role)], cycle=True)
                self._by_role[role] = model
            return self._by_role[role]  # type: ignore[return-value]
