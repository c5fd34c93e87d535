"""Durability: a process killed at any point loses nothing it recorded, stores nothing twice, and leaves no
session ``running`` once the next process has opened the store (both stores).

``kill_driver.py`` forks a child per round, kills it with SIGKILL after a random delay (some during its start-up
replay of the last child's journal) and notes every id whose recording call had returned. Then a last
supervisor opens the store: it replays the journals, marks the dead children's sessions abandoned, and the
store is compared with what was produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from atlas_learning.config import AtlasConfig
from atlas_learning.store import ModelCallRecord, SessionRecord, StepRecord, Store
from atlas_learning.supervisor import Supervisor
from tests.support import ScriptedRoles, default_answers

ROUNDS = 50
DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks")
def test_sigkill_at_random_points_loses_nothing_and_stores_nothing_twice(store_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    subprocess.run([sys.executable, str(DRIVER), store_url, str(spool), str(tmp_path), str(ROUNDS), "7"],
                   check=True, timeout=240, cwd=DRIVER.parents[2])
    rounds = [json.loads(line) for line in (tmp_path / "produced.jsonl").read_text().splitlines()]
    assert len(rounds) == ROUNDS
    produced = {sid for r in rounds for sid in r["sessions"]}
    steps = {sid for r in rounds for sid in r["steps"]}
    assert len(produced) > ROUNDS  # most rounds got sessions going before the kill: the test tested something

    # Replaying what 50 killed processes left can take longer than a user call's budget (then it goes on in the
    # background); here the replay is what is tested, so start-up waits for it.
    config = AtlasConfig.load({"storage": {"url": store_url, "spool_dir": str(spool), "read_budget_s": 120}}, environ={})
    with Supervisor(config, models=ScriptedRoles(config, default_answers())) as supervisor:
        assert supervisor.store_problem is None
    with Store(store_url) as store:
        sessions = {row.id: row for row in store.rows(SessionRecord)}
        stored_steps = {row[0] for row in store.read(select(StepRecord.id))}
        # model calls have database-made ids (no conflict a replay could hit): a line stored twice shows here
        calls = store.read(select(ModelCallRecord.session_id, ModelCallRecord.role, ModelCallRecord.created_at, func.count())
                           .group_by(ModelCallRecord.session_id, ModelCallRecord.role, ModelCallRecord.created_at))
    missing = produced - sessions.keys()
    print(f"\n{ROUNDS} SIGKILLs: {len(produced)} sessions produced, {len(produced & sessions.keys())} stored, "
          f"{len(sessions.keys() - produced)} stored whose begin had not returned, {len(steps)} steps produced, "
          f"{len(steps - stored_steps)} missing; statuses {sorted({s.status for s in sessions.values()})}")
    assert not missing, f"{len(missing)} sessions whose begin returned are not in the store"
    assert steps <= stored_steps, f"{len(steps - stored_steps)} steps whose record_step returned are not stored"
    assert len(sessions.keys() - produced) <= ROUNDS  # at most the one being begun when each kill came
    assert calls and all(row[-1] == 1 for row in calls), "a replay stored a model call twice"
    assert not [s.id for s in sessions.values() if s.status == "running"], "sessions left running"
    assert {s.status for s in sessions.values()} <= {"completed", "failed", "abandoned"}
    assert not list(spool.glob("spool-*.jsonl")), "journals left behind after the last supervisor closed"


def test_a_journal_longer_than_its_mapped_part_keeps_every_line(store: Store, tmp_path: Path) -> None:
    from atlas_learning.recorder import Recorder

    recorder = Recorder(store, spool_dir=tmp_path / "spool")
    recorder.journal_map_bytes = 600  # a few lines fit the map; the rest are appended after it
    ids = [f"{i:032d}" for i in range(40)]
    for session_id in ids:
        recorder.insert_later(SessionRecord, id=session_id, learning_key="k", task="t" * 50)
    journal = recorder.journal_path
    assert journal is not None
    text = journal.read_text()
    assert "\x00" in text  # the mapped part's unwritten rest: skipped by replays
    lines = text.replace("\x00", "").splitlines()
    # in order, every one, on disk before close; as redacted fields, which the writer or a replay completes
    assert [json.loads(line)["fields"]["id"] for line in lines] == ids
    recorder.close()
    assert {row.id for row in store.rows(SessionRecord)} == set(ids)
    assert not journal.exists()  # fully stored: deleted at close


def test_a_journaled_row_replays_to_the_row_the_writer_would_have_stored(store: Store, tmp_path: Path) -> None:
    """Write-ahead journals a new row's redacted fields, not the completed row (completing it stays off the caller's
    thread); a replay completes them to the same row: defaults, JSON-safe values, lengths, times. No secret is on disk."""
    from datetime import datetime, timezone

    from atlas_learning.recorder import Recorder, _decode_op
    from atlas_learning.store import TrajectoryEventRecord

    secret = "AKIA" + "Q3EXAMPLE7KEY4ID2XZ"
    recorder = Recorder(store, spool_dir=tmp_path / "spool")
    recorder.insert_later(SessionRecord, id="c" * 32, learning_key="k" * 300, task=f"use {secret}\x00 now",
                          started_at=datetime(2026, 12, 3, 12, 30, 1, 123456))  # naive: stored as UTC
    recorder.insert_later(TrajectoryEventRecord, session_id="c" * 32, seq=0, event_type="span",
                          payload={"ratio": float("nan"), "tags": {"b"}, 3: b"raw", "at": datetime(2026, 1, 2, tzinfo=timezone.utc),
                                   "key": secret})
    journal = recorder.journal_path
    assert journal is not None
    text = journal.read_text().replace("\x00", "")
    assert secret not in text
    replayed = [_decode_op(json.loads(line)).row for line in text.splitlines()]
    recorder.close()
    session = store.get(SessionRecord, "c" * 32)
    assert session is not None and replayed[0]["task"] == session.task and secret not in session.task and "\x00" not in session.task
    assert len(replayed[0]["learning_key"]) == len(session.learning_key) == 256
    assert replayed[0]["started_at"] == session.started_at == datetime(2026, 12, 3, 12, 30, 1, 123456, tzinfo=timezone.utc)
    assert replayed[0]["review_status"] == session.review_status  # a default, filled in by both
    event = store.rows(TrajectoryEventRecord)[0]
    assert replayed[1]["payload"] == event.payload == {"ratio": None, "tags": ["b"], "3": "raw", "at": "2026-01-02T00:00:00+00:00",
                                                       "key": event.payload["key"]}
    assert secret not in json.dumps(event.payload)


def test_a_spool_dir_that_cannot_be_written_falls_back_and_a_later_process_replays_from_there(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlas_learning.recorder import Recorder

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # (tests run as root, so a read-only mode would not stop a write)
    recorder = Recorder(store, spool_dir=blocked / "spool")
    recorder.insert_later(SessionRecord, id="f" * 32, learning_key="k", task="t")
    journal = recorder.journal_path
    fallback = tmp_path / "state" / "atlas-plugins" / "spool"
    assert journal is not None and journal.is_relative_to(fallback)
    line = journal.read_text().replace("\x00", "").splitlines()[0]
    assert json.loads(line)["fields"]["id"] == "f" * 32  # on disk at once, in the fallback folder
    recorder.close()
    # what a process killed before its writer ran leaves there: the next one, configured the same, replays it
    (journal.parent / "spool-1-1-abcdef.jsonl").write_text(line.replace("f" * 32, "e" * 32) + "\n")
    later = Recorder(store, spool_dir=blocked / "spool")
    assert later.replay_spool() == 1
    later.close()
    assert store.get(SessionRecord, "e" * 32) is not None and not list(fallback.rglob("spool-*.jsonl"))
