"""The store on SQLite and PostgreSQL: every table round-trips, filters work, migrations upgrade in place."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text

from atlas_learning.errors import StoreError
from atlas_learning.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AttemptRecord,
    GuidanceRecord,
    Migration,
    ModelCallRecord,
    PlanRecord,
    PlaybookEntryRecord,
    PlaybookRegistryRecord,
    PlaybookVersionRecord,
    ReviewLogRecord,
    RewardRecord,
    SessionFilter,
    SessionRecord,
    StepRecord,
    Store,
    TrajectoryEventRecord,
)


def _session(store: Store, **fields) -> SessionRecord:
    return store.add(SessionRecord(learning_key=fields.pop("learning_key", "mcp-files"), task=fields.pop("task", "list files"), **fields))[0]


def test_fresh_database_is_stamped_with_latest_schema(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    tables = set(inspect(store.engine).get_table_names())
    assert {"sessions", "plans", "steps", "attempts", "guidance", "rewards", "trajectory_events", "model_calls",
            "playbook_entries", "playbook_versions", "playbook_registry", "review_log", "atlas_meta"} <= tables


def test_session_round_trips_json_and_aware_timestamps(store: Store) -> None:
    usage = {"teacher": {"calls": 2, "input_tokens": 120, "output_tokens": 40, "cost_usd": 0.0003}}
    created = _session(store, lane="coach", lane_confidence=0.4, lane_reason="no history", lane_source="prior",
                       usage_by_role=usage, session_metadata={"thread_id": "t-1", "tags": ["a", "b"]})
    loaded = store.get(SessionRecord, created.id)
    assert loaded is not None and loaded is not created
    assert loaded.usage_by_role == usage
    assert loaded.session_metadata == {"thread_id": "t-1", "tags": ["a", "b"]}
    assert loaded.review_status == "pending" and loaded.status == "running"
    assert loaded.started_at.tzinfo is not None
    assert abs((loaded.started_at - created.started_at).total_seconds()) < 1e-3


def test_every_child_table_round_trips_under_a_session(store: Store) -> None:
    session = _session(store)
    step = store.add(StepRecord(session_id=session.id, step_index=0, kind="tool_call", name="read_file",
                                tool_name="read_file", tool_args={"path": "notes/a.txt"}, output="hello",
                                input_tokens=3, output_tokens=1, duration_ms=1.5))[0]
    store.add(
        PlanRecord(session_id=session.id, kind="reviewed", steps=[{"step_id": 1, "description": "read"}], concerns=["check the path"]),
        AttemptRecord(session_id=session.id, attempt=1, answer="hello", accepted=False, guidance="quote the file"),
        GuidanceRecord(session_id=session.id, step_id=step.id, kind="step", content="use list_files first"),
        RewardRecord(session_id=session.id, step_id=step.id, scope="step", score=0.75,
                     samples=[{"judge": "small", "temperature": 0.2, "score": 0.7}, {"judge": "small", "temperature": 0.6, "score": 0.8}]),
        RewardRecord(session_id=session.id, scope="session", score=None, status="no_reward", reason="judge unreachable"),
        TrajectoryEventRecord(session_id=session.id, seq=0, event_type="lane_chosen", payload={"lane": "coach"}),
        ModelCallRecord(session_id=session.id, role="teacher", provider="scripted", model="scripted", input_tokens=10, output_tokens=5, cost_usd=0.0),
        ReviewLogRecord(session_id=session.id, from_status="pending", to_status="approved", reviewer="ana", note="looks right"),
    )
    assert store.rows(StepRecord, StepRecord.session_id == session.id)[0].tool_args == {"path": "notes/a.txt"}
    plan = store.rows(PlanRecord, PlanRecord.session_id == session.id)[0]
    assert plan.steps[0]["description"] == "read" and plan.concerns == ["check the path"]
    rewards = store.rows(RewardRecord, RewardRecord.session_id == session.id, order_by=RewardRecord.id)
    assert [r.scope for r in rewards] == ["step", "session"]
    assert len(rewards[0].samples) == 2 and rewards[1].score is None and rewards[1].status == "no_reward"
    assert store.rows(GuidanceRecord, GuidanceRecord.step_id == step.id)[0].content == "use list_files first"
    assert store.rows(AttemptRecord)[0].accepted is False
    assert store.rows(TrajectoryEventRecord)[0].payload == {"lane": "coach"}
    assert store.rows(ModelCallRecord)[0].role == "teacher"
    assert store.rows(ReviewLogRecord)[0].to_status == "approved"


def test_event_sequence_numbers_are_unique_per_session(store: Store) -> None:
    session = _session(store)
    store.add(TrajectoryEventRecord(session_id=session.id, seq=0, event_type="step"))
    with pytest.raises(StoreError):
        store.add(TrajectoryEventRecord(session_id=session.id, seq=0, event_type="step"))


def test_child_rows_need_an_existing_session(store: Store) -> None:
    with pytest.raises(StoreError):
        store.add(StepRecord(session_id="0" * 32, name="orphan"))


def test_playbook_entry_with_version_history(store: Store) -> None:
    session = _session(store)
    store.add(PlaybookRegistryRecord(learning_key="mcp-files", version=1))
    entry = store.add(PlaybookEntryRecord(learning_key="mcp-files", lesson="List the directory before reading.", provenance=[session.id]))[0]
    store.add(PlaybookVersionRecord(entry_id=entry.id, learning_key="mcp-files", version=1, registry_version=1,
                                    change="add", lesson=entry.lesson, session_id=session.id))
    with pytest.raises(StoreError):  # one row per (entry, version)
        store.add(PlaybookVersionRecord(entry_id=entry.id, learning_key="mcp-files", version=1, lesson="dup"))
    assert store.get(PlaybookEntryRecord, entry.id).provenance == [session.id]


def test_filters_by_key_lane_review_reward_and_time(store: Store) -> None:
    now = datetime.now(timezone.utc)
    for i in range(6):
        _session(store, learning_key="a" if i < 4 else "b", lane="auto" if i % 2 else "coach", reward=i / 5,
                 review_status="approved" if i < 3 else "pending", started_at=now - timedelta(hours=i))
    assert len(store.list_sessions(SessionFilter(learning_key="a"))) == 4
    assert {s.lane for s in store.list_sessions(SessionFilter(lane="auto"))} == {"auto"}
    approved = store.list_sessions(SessionFilter(review_status=("approved",)))
    assert [s.reward for s in approved] == [0.0, 0.2, 0.4]  # newest first
    assert [s.reward for s in store.list_sessions(SessionFilter(min_reward=0.5, max_reward=0.85))] == [0.6, 0.8]
    assert len(store.list_sessions(SessionFilter(since=now - timedelta(hours=2, minutes=30)))) == 3
    page = store.list_sessions(SessionFilter(limit=2, offset=2))
    assert [s.reward for s in page] == [0.4, 0.6]
    assert store.count_sessions(SessionFilter(learning_key="a", limit=1)) == 4


def test_update_session(store: Store) -> None:
    session = _session(store)
    store.update_session(session.id, status="completed", reward=0.9, final_answer="3 files")
    assert store.get(SessionRecord, session.id).reward == 0.9
    with pytest.raises(StoreError, match="no session"):
        store.update_session("f" * 32, reward=1.0)
    with pytest.raises(StoreError, match="no field"):
        store.update_session(session.id, colour="blue")


def test_concurrent_writers_lose_nothing(store: Store) -> None:
    session = _session(store)

    def write(worker: int) -> None:
        for i in range(20):
            store.add(TrajectoryEventRecord(session_id=session.id, seq=worker * 100 + i, event_type="step"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session.id)) == 80


def test_migrations_upgrade_an_existing_database_in_place(store_url: str) -> None:
    with Store(store_url) as old:
        kept = _session(old, task="written before the upgrade")
    added_column = Migration(SCHEMA_VERSION + 1, "sessions.priority", lambda c: c.execute(text("ALTER TABLE sessions ADD COLUMN priority INTEGER DEFAULT 0")))
    with Store(store_url, migrate=False) as upgraded:
        assert upgraded.migrate([*MIGRATIONS, added_column]) == SCHEMA_VERSION + 1
        assert upgraded.schema_version() == SCHEMA_VERSION + 1
        assert "priority" in {c["name"] for c in inspect(upgraded.engine).get_columns("sessions")}
        assert upgraded.get(SessionRecord, kept.id).task == "written before the upgrade"
        assert upgraded.migrate([*MIGRATIONS, added_column]) == SCHEMA_VERSION + 1  # idempotent
    with pytest.raises(StoreError, match="newer than this atlas-plugins"):
        Store(store_url)  # the code's latest version is older than the database's


def test_unreachable_postgres_is_one_clear_line() -> None:
    with pytest.raises(StoreError) as caught:
        Store("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    message = str(caught.value)
    assert "cannot use PostgreSQL" in message and "start the server or fix storage.url" in message
    assert "\n" not in message


def test_sqlite_directory_is_created(tmp_path) -> None:
    with Store(f"sqlite:///{tmp_path / 'deep' / 'er' / 'atlas.db'}") as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "deep" / "er" / "atlas.db").is_file()


def test_password_never_shown_in_repr() -> None:
    store = Store("postgresql+psycopg://user:s3cret@127.0.0.1:1/db", migrate=False)
    assert "s3cret" not in repr(store)
