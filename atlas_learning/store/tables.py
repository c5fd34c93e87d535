"""The store's tables: everything a session produces, as SQLModel classes.

One schema serves SQLite and PostgreSQL. Identifiers of sessions, steps and playbook entries are 32-character
hex UUIDs made by the writer: they travel in traces and exports, and a row spooled during a store outage keeps
them, so rows that point at it stay valid. Rows nothing points at use integer keys. Times are timezone-aware
UTC on both backends. Free-form structures (tool arguments, judge samples, per-role usage) are JSON (JSONB on
PostgreSQL).

Status values are plain strings checked by the code that writes them; the tuples below list them.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

__all__ = [
    "LANES",
    "LANE_SOURCES",
    "SESSION_STATUSES",
    "SpoolMarkRecord",
    "REVIEW_STATUSES",
    "STEP_KINDS",
    "PLAYBOOK_AUDIENCES",
    "PLAYBOOK_STATUSES",
    "PLAYBOOK_KINDS",
    "MetaRecord",
    "SessionRecord",
    "PlanRecord",
    "StepRecord",
    "AttemptRecord",
    "GuidanceRecord",
    "RewardRecord",
    "TrajectoryEventRecord",
    "ModelCallRecord",
    "PlaybookRegistryRecord",
    "PlaybookEntryRecord",
    "PlaybookVersionRecord",
    "ReviewLogRecord",
    "new_id",
    "utcnow",
]

LANES = ("auto", "paired", "coach", "escalate")
LANE_SOURCES = ("prior", "probe", "config", "fallback")
#: ``abandoned``: its process died while it ran (marked by the next process that opened the store).
SESSION_STATUSES = ("running", "completed", "failed", "abandoned")
REVIEW_STATUSES = ("pending", "approved", "quarantined")
STEP_KINDS = ("model_call", "tool_call", "node")
PLAYBOOK_AUDIENCES = ("student", "teacher")
PLAYBOOK_STATUSES = ("provisional", "active", "retired")
PLAYBOOK_KINDS = ("lesson", "example")


def new_id() -> str:
    """A new 32-character hex identifier (a random UUID4). Drawn from the ``random`` module's generator, which
    the OS seeds and which is reseeded in a forked child: ids need to be unique, not secret, and this avoids a
    system call per row."""
    return uuid.UUID(int=random.getrandbits(128), version=4).hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


_JSON = JSON().with_variant(JSONB(), "postgresql")


def _json_or_null() -> Any:
    return Field(default=None, sa_column=Column(_JSON, nullable=True))


def _json_dict() -> Any:
    return Field(default_factory=dict, sa_column=Column(_JSON, nullable=False))


def _json_list() -> Any:
    return Field(default_factory=list, sa_column=Column(_JSON, nullable=False))


def _text(nullable: bool = True) -> Any:
    return Field(default=None if nullable else "", sa_column=Column(Text, nullable=nullable))


def _time(index: bool = False, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True, index=index))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=index))


class MetaRecord(SQLModel, table=True):
    """Key/value facts about the database itself, such as ``schema_version``."""

    __tablename__ = "atlas_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)


class SessionRecord(SQLModel, table=True):
    """One supervised run of an agent on one task."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_key_started", "learning_key", "started_at"),
        Index("ix_sessions_review_started", "review_status", "started_at"),
        Index("ix_sessions_started", "started_at", "id"),  # unfiltered listings and exports page on this
        Index("ix_sessions_key_family_started", "learning_key", "task_family", "started_at"),  # a family's lane history
        Index("ix_sessions_status", "status"),  # the sweep for sessions whose process died
    )
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    learning_key: str = Field(max_length=256)
    #: The task family inside the key (given per call or inferred from the task): lane history is per family.
    task_family: str | None = Field(default=None, max_length=128)
    agent_name: str = Field(default="", max_length=256)
    task: str = _text(nullable=False)
    lane: str | None = Field(default=None, max_length=16, index=True)
    lane_confidence: float | None = None
    lane_reason: str | None = _text()
    lane_source: str | None = Field(default=None, max_length=16)
    status: str = Field(default="running", max_length=16)
    final_answer: str | None = _text()
    reward: float | None = Field(default=None, index=True)
    reward_reason: str | None = _text()
    #: Whether the final answer passed its verifiable checks (None: no check decided). A failed check counts as
    #: a failed session for the lane prior, whatever the judges said.
    checks_passed: bool | None = None
    review_status: str = Field(default="pending", max_length=16)
    review_note: str | None = _text()
    drift_alert: bool = False
    drift_reason: str | None = _text()
    #: Times the teacher rejected work or gave step guidance; the probe reads it as a sign of need.
    interventions: int = 0
    retries: int = 0
    #: Playbook entry ids injected into this session, for impact statistics.
    lessons_used: list[str] = _json_list()
    #: A lesson that applied, and by its impact so far helps, was withheld for the impact comparison: a failure
    #: of this session is the experiment's, and the lane prior does not count it.
    explored: bool = False
    #: ``{role: {"calls", "input_tokens", "output_tokens", "cost_usd"}}``
    usage_by_role: dict[str, Any] = _json_dict()
    total_tokens: int = 0
    total_cost_usd: float | None = None
    session_metadata: dict[str, Any] = _json_dict()
    started_at: datetime = _time()
    finished_at: datetime | None = _time(nullable=True)
    #: The process that runs the session, ``host:pid:start`` (see ``atlas_learning.store.process_owner``): a
    #: session left ``running`` by a process that no longer exists is marked ``abandoned``.
    owner: str | None = Field(default=None, max_length=160)


class SpoolMarkRecord(SQLModel, table=True):
    """How many lines of a spool file are in the store: written in the transaction that stores them, so a replay
    interrupted at any point (even between its commit and the file's deletion) never writes a line twice."""

    __tablename__ = "atlas_spool_marks"
    name: str = Field(primary_key=True, max_length=200)
    lines: int = 0


class PlanRecord(SQLModel, table=True):
    """A plan the student proposed, or the teacher's amended version of it."""

    __tablename__ = "plans"
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", index=True, max_length=32, ondelete="CASCADE")
    #: ``proposed`` by the student or ``reviewed`` by the teacher.
    kind: str = Field(default="proposed", max_length=16)
    #: ``[{"step_id": int, "description": str, "depends_on": [int]}]``
    steps: list[dict[str, Any]] = _json_list()
    concerns: list[str] = _json_list()
    created_at: datetime = _time()


class StepRecord(SQLModel, table=True):
    """One thing the student did: a model call, a tool call, or a graph node."""

    __tablename__ = "steps"
    __table_args__ = (Index("ix_steps_session_index", "session_id", "step_index"),)
    #: Made by the writer, not the database, so guidance and rewards can point at a step before it is stored.
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    session_id: str = Field(foreign_key="sessions.id", max_length=32, ondelete="CASCADE")
    step_index: int = 0
    attempt: int = 1
    kind: str = Field(default="tool_call", max_length=16)
    name: str = Field(default="", max_length=256)
    description: str | None = _text()
    tool_name: str | None = Field(default=None, max_length=256, index=True)
    tool_args: Any = _json_or_null()
    input: Any = _json_or_null()
    output: str | None = _text()
    error: str | None = _text()
    status: str = Field(default="ok", max_length=16)
    input_tokens: int = 0
    output_tokens: int = 0
    started_at: datetime = _time()
    ended_at: datetime | None = _time(nullable=True)
    duration_ms: float | None = None
    step_metadata: dict[str, Any] = _json_dict()


class AttemptRecord(SQLModel, table=True):
    """One answer the student gave, with the teacher's verdict on it."""

    __tablename__ = "attempts"
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", index=True, max_length=32, ondelete="CASCADE")
    attempt: int = 1
    answer: str | None = _text()
    accepted: bool | None = None
    verdict_reason: str | None = _text()
    guidance: str | None = _text()
    #: The verifiable checks' results on this attempt, as the teacher was shown them.
    checks: str | None = _text()
    created_at: datetime = _time()


class GuidanceRecord(SQLModel, table=True):
    """A note the teacher (or a human) gave the student: on the plan, a step, an answer, or an escalation."""

    __tablename__ = "guidance"
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", index=True, max_length=32, ondelete="CASCADE")
    step_id: str | None = Field(default=None, foreign_key="steps.id", max_length=32, ondelete="SET NULL")
    source: str = Field(default="teacher", max_length=16)
    kind: str = Field(default="step", max_length=16)
    content: str = _text(nullable=False)
    created_at: datetime = _time()


class RewardRecord(SQLModel, table=True):
    """A step or session reward with every judge sample and whether the large judge arbitrated.

    ``score`` is None with ``status='no_reward'`` and a ``reason`` when no judge could answer.
    """

    __tablename__ = "rewards"
    __table_args__ = (Index("ix_rewards_session_scope", "session_id", "scope"),)
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", max_length=32, ondelete="CASCADE")
    step_id: str | None = Field(default=None, foreign_key="steps.id", max_length=32, ondelete="SET NULL")
    scope: str = Field(default="session", max_length=16)
    score: float | None = None
    status: str = Field(default="ok", max_length=16)
    reason: str | None = _text()
    #: ``{"outcome": 0.9, "process": 0.7, "efficiency": 0.8}`` and any verifiable checks.
    breakdown: dict[str, Any] = _json_dict()
    #: ``[{"judge": "small", "temperature": 0.2, "score": 0.8, "rationale": "...", "raw": "..."}]``
    samples: list[dict[str, Any]] = _json_list()
    escalated: bool = False
    created_at: datetime = _time()


class TrajectoryEventRecord(SQLModel, table=True):
    """An ordered event of the session's trajectory (lane chosen, step, verdict, span, ...)."""

    __tablename__ = "trajectory_events"
    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),)
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", max_length=32, ondelete="CASCADE")
    seq: int = 0
    event_type: str = Field(max_length=64)
    payload: dict[str, Any] = _json_dict()
    created_at: datetime = _time()


class ModelCallRecord(SQLModel, table=True):
    """One model call made for a session, by role: tokens, cost and latency."""

    __tablename__ = "model_calls"
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", index=True, max_length=32, ondelete="CASCADE")
    role: str = Field(max_length=32)
    purpose: str = Field(default="", max_length=64)
    provider: str = Field(default="", max_length=32)
    model: str = Field(default="", max_length=256)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: int = 1
    error: str | None = _text()
    created_at: datetime = _time()


class PlaybookRegistryRecord(SQLModel, table=True):
    """The version counter of one learning key's playbook; writers bump it with compare-and-set."""

    __tablename__ = "playbook_registry"
    learning_key: str = Field(primary_key=True, max_length=256)
    version: int = 0
    updated_at: datetime = _time()


class PlaybookEntryRecord(SQLModel, table=True):
    """A lesson in a learning key's playbook, with its provenance and impact statistics."""

    __tablename__ = "playbook_entries"
    __table_args__ = (Index("ix_playbook_key_status", "learning_key", "status"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    learning_key: str = Field(max_length=256)
    audience: str = Field(default="student", max_length=16)
    #: ``lesson`` (an instruction) or ``example`` (a worked example from a verified success).
    kind: str = Field(default="lesson", max_length=16)
    #: The task family the entry is scoped to; None for a key-wide entry.
    task_family: str | None = Field(default=None, max_length=128)
    lesson: str = _text(nullable=False)
    applies_when: str | None = _text()
    status: str = Field(default="provisional", max_length=16)
    version: int = 1
    #: Session ids that produced or refined the entry.
    provenance: list[str] = _json_list()
    uses: int = 0
    reward_sum_with: float = 0.0
    reward_count_with: int = 0
    reward_sum_without: float = 0.0
    reward_count_without: int = 0
    created_at: datetime = _time()
    updated_at: datetime = _time()


class PlaybookVersionRecord(SQLModel, table=True):
    """One change to a playbook entry: the entry as it stood after the change, for history and diffs."""

    __tablename__ = "playbook_versions"
    __table_args__ = (
        UniqueConstraint("entry_id", "version", name="uq_playbook_entry_version"),
        Index("ix_playbook_versions_key_registry", "learning_key", "registry_version"),
    )
    id: int | None = Field(default=None, primary_key=True)
    entry_id: str = Field(foreign_key="playbook_entries.id", max_length=32, ondelete="CASCADE")
    learning_key: str = Field(max_length=256)
    version: int = 1
    #: The registry version this change produced.
    registry_version: int = 0
    change: str = Field(default="add", max_length=16)
    audience: str = Field(default="student", max_length=16)
    lesson: str = _text(nullable=False)
    applies_when: str | None = _text()
    status: str = Field(default="provisional", max_length=16)
    session_id: str | None = Field(default=None, max_length=32)
    #: Why the change was made: the synthesizer's reason, the impact figures, or ``manual: <reason>``.
    reason: str | None = _text()
    created_at: datetime = _time()


class ReviewLogRecord(SQLModel, table=True):
    """Who changed a session's review status, when, and why."""

    __tablename__ = "review_log"
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", index=True, max_length=32, ondelete="CASCADE")
    from_status: str = Field(max_length=16)
    to_status: str = Field(max_length=16)
    reviewer: str = Field(default="", max_length=256)
    note: str | None = _text()
    created_at: datetime = _time()
