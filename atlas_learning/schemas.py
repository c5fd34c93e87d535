"""What the supervision roles answer: pydantic models used as structured outputs.

Each is small on purpose: the embedded local model must fill it with schema-constrained decoding, and every
field is something the loop acts on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "PlanReview",
    "Verdict",
    "SessionJudgement",
    "StepJudgement",
    "StepJudgements",
    "ProbeAnswer",
    "LessonChange",
    "PlaybookChanges",
]

Score = Field(ge=0.0, le=1.0)


class PlanReview(BaseModel):
    """The teacher's review of the student's plan: the plan to follow and what to watch out for."""

    approved: bool
    steps: list[str] = Field(default_factory=list, max_length=12, description="the plan to follow, amended if needed")
    concerns: list[str] = Field(default_factory=list, max_length=5)


class Verdict(BaseModel):
    """The teacher's verdict on a step or an answer, with guidance for the student when it rejects."""

    accepted: bool
    guidance: str = Field("", max_length=600, description="what the student should do differently")
    reason: str = Field("", max_length=400)


class SessionJudgement(BaseModel):
    """A judge's scores of a whole session, each 0..1."""

    outcome: float = Score
    process: float = Score
    efficiency: float = Score
    confidence: float = Score
    rationale: str = Field("", max_length=400)


class StepJudgement(BaseModel):
    step: int = Field(ge=0)
    score: float = Score
    rationale: str = Field("", max_length=200)


class StepJudgements(BaseModel):
    """A judge's process-quality score of each step, in one call."""

    steps: list[StepJudgement] = Field(default_factory=list, max_length=50)


class ProbeAnswer(BaseModel):
    """The probe model's view of how much supervision a task needs."""

    lane: Literal["auto", "paired", "coach", "escalate"]
    confidence: float = Score
    reason: str = Field("", max_length=300)


class LessonChange(BaseModel):
    """One change to the playbook: add a lesson, refine one (by id), or retire one (by id)."""

    op: Literal["add", "refine", "retire"]
    entry_id: str | None = Field(None, description="the id of the entry to refine or retire")
    audience: Literal["student", "teacher"] = "student"
    lesson: str = Field("", max_length=300, description="an imperative instruction, e.g. 'List the folder before reading a file.'")
    applies_when: str = Field("", max_length=200)
    #: ``family``: for tasks of the session's task family only; ``general``: for every task of the key.
    scope: Literal["family", "general"] = "family"
    reason: str = Field("", max_length=200)


class PlaybookChanges(BaseModel):
    """The synthesizer's deltas from one session; empty when the session taught nothing new."""

    changes: list[LessonChange] = Field(default_factory=list, max_length=3)
