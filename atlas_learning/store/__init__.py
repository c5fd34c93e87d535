"""Storage of sessions and everything they produce, on SQLite (default) or PostgreSQL.

>>> from atlas_learning.store import Store, SessionRecord
>>> store = Store("sqlite://")            # in memory; Store() opens .atlas/atlas.db
>>> store.add(SessionRecord(learning_key="demo", task="add two numbers"))[0].review_status
'pending'
"""

from __future__ import annotations

from ._store import MIGRATIONS, REVIEW_GATE, SCHEMA_VERSION, Migration, SessionFilter, Store, owner_alive, process_owner
from .tables import (
    LANE_SOURCES,
    LANES,
    PLAYBOOK_AUDIENCES,
    PLAYBOOK_KINDS,
    PLAYBOOK_STATUSES,
    REVIEW_STATUSES,
    SESSION_STATUSES,
    STEP_KINDS,
    AttemptRecord,
    GuidanceRecord,
    MetaRecord,
    ModelCallRecord,
    PlanRecord,
    PlaybookEntryRecord,
    PlaybookRegistryRecord,
    PlaybookVersionRecord,
    ReviewLogRecord,
    RewardRecord,
    SessionRecord,
    SpoolMarkRecord,
    StepRecord,
    TrajectoryEventRecord,
    new_id,
    utcnow,
)

__all__ = [
    "Store",
    "SessionFilter",
    "Migration",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "REVIEW_GATE",
    "owner_alive",
    "process_owner",
    "LANES",
    "LANE_SOURCES",
    "SESSION_STATUSES",
    "SpoolMarkRecord",
    "REVIEW_STATUSES",
    "STEP_KINDS",
    "PLAYBOOK_AUDIENCES",
    "PLAYBOOK_KINDS",
    "PLAYBOOK_STATUSES",
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
