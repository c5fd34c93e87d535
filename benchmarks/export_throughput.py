"""Export throughput and memory: `export_sessions` over synthetic sessions on SQLite and PostgreSQL.

Each synthetic session has 10 steps as an agent records them (5 model calls, each asking for a tool or giving the
answer, the first with the system prompt and tool schemas it was sent; 5 tool calls), a session reward with three
judge samples, a step reward per step, a reviewed plan and 4 trajectory events; all are approved. The same sessions
are bulk-inserted (Core executemany) into SQLite and PostgreSQL, then `export_sessions` writes JSONL in each format
(all three unless --format picks one) to a temporary file for the first 2,000, 5,000 and N sessions. Every
measurement runs in a fresh process: sessions/s is the median of three untraced runs, then the peak of Python
allocations (tracemalloc) and the growth of peak RSS are taken during one more run. Flat memory means the peaks do
not grow with N. The CPU seconds this process spent are printed beside the wall time: on a machine shared with
other work the wall time stretches and the CPU time does not (PostgreSQL's own work is in its server process).

Goal (issue): at least 5,000 sessions/s for the trace format at 10,000 sessions with flat memory.
Run: .venv/bin/python benchmarks/export_throughput.py [--sessions 10000] [--format trace] [--no-postgres]
PostgreSQL: $ATLAS_TEST_POSTGRES_URL or postgresql+psycopg://postgres@127.0.0.1:5432/test (a schema of its own,
dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from atlas_learning.store import (  # noqa: E402
    PlanRecord,
    RewardRecord,
    SessionRecord,
    StepRecord,
    Store,
    TrajectoryEventRecord,
)

PG_URL = os.environ.get("ATLAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: The steps of a session: model calls ask for the tool calls after them (the one at 6 for two at once), the last answers.
SHAPE = ("model", "tool", "model", "tool", "model", "tool", "model", "tool", "tool", "model")
STEPS_PER_SESSION = len(SHAPE)
CHUNK = 1000  # sessions per insert transaction
SYSTEM = "You summarise files in notes/.\n\nPlan to follow:\n1. list notes/\n2. read the file"
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a text file from notes/.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def _rows(first: int, count: int, start: datetime) -> dict[type, list[dict]]:
    sessions, steps, rewards, events, plans = [], [], [], [], []
    for number in range(first, first + count):
        sid = uuid.uuid4().hex
        began = start + timedelta(milliseconds=number)
        reward = 0.5 + (number % 50) / 100
        sessions.append({
            "id": sid, "learning_key": f"bench:{number % 5}", "agent_name": "bench", "task": f"Summarise file {number} in notes/",
            "lane": "paired", "lane_confidence": 0.8, "lane_reason": "history is good", "lane_source": "prior",
            "status": "completed", "final_answer": f"The file {number} lists 3 items: a, b and c.", "reward": reward,
            "reward_reason": "3 small-judge samples agreed", "review_status": "approved", "review_note": None,
            "drift_alert": False, "drift_reason": None, "interventions": 0, "retries": 0, "lessons_used": [],
            "usage_by_role": {"teacher": {"calls": 1, "input_tokens": 420, "output_tokens": 35, "cost_usd": 0.0004},
                              "judge_small": {"calls": 4, "input_tokens": 2100, "output_tokens": 180, "cost_usd": 0.0011}},
            "total_tokens": 2735, "total_cost_usd": 0.0015, "session_metadata": {"lane_signals": {"sessions": 12, "good_streak": 3}},
            "started_at": began, "finished_at": began + timedelta(seconds=4),
        })
        plans.append({"session_id": sid, "kind": "reviewed", "steps": [{"step_id": 1, "description": "list notes/"},
                      {"step_id": 2, "description": "read the file"}], "concerns": [], "created_at": began})
        for index in range(STEPS_PER_SESSION):
            step_id = uuid.uuid4().hex
            at = began + timedelta(milliseconds=100 * index)
            path = f"notes/{number}-{index}.txt"
            if SHAPE[index] == "model":  # a model call: it asks for the next tool (or two), the last one answers
                asks = [{"name": "read_file", "arguments": {"path": f"notes/{number}-{n}.txt"}}
                        for n in range(index + 1, len(SHAPE)) if SHAPE[n] == "tool"]
                asks = asks[:2] if index == 6 else asks[:1]
                output = json.dumps({"content": "", "tool_calls": asks}) if asks else f"The file {number} lists 3 items: a, b and c."
                step = {"kind": "model_call", "name": "bench-model", "tool_name": None, "tool_args": None, "output": output,
                        "step_metadata": {"system": SYSTEM, "tools": TOOLS} if index == 0 else {}}
            else:
                step = {"kind": "tool_call", "name": "read_file", "tool_name": "read_file", "tool_args": {"path": path},
                        "output": f"- item a\n- item b\n- item c ({index})", "step_metadata": {"tool_call_id": f"call-{index}"}}
            steps.append({
                "id": step_id, "session_id": sid, "step_index": index, "attempt": 1, "description": None, "input": None,
                "error": None, "status": "ok", "input_tokens": 120, "output_tokens": 24, "started_at": at,
                "ended_at": at + timedelta(milliseconds=40), "duration_ms": 40.0, **step,
            })
            rewards.append({"session_id": sid, "step_id": step_id, "scope": "step", "score": 0.8, "status": "ok",
                            "reason": "useful read", "breakdown": {}, "samples": [], "escalated": False, "created_at": at})
        samples = [{"judge": "small", "temperature": t, "outcome": 0.9, "process": 0.8, "efficiency": 0.7, "confidence": 0.9,
                    "rationale": "correct count"} for t in (0.0, 0.4, 0.8)]
        rewards.append({"session_id": sid, "step_id": None, "scope": "session", "score": reward, "status": "ok",
                        "reason": "3 small-judge samples agreed", "breakdown": {"outcome": 0.9, "process": 0.8, "efficiency": 0.7,
                        "judge_confidence": 0.9}, "samples": samples, "escalated": False, "created_at": began})
        for seq, (kind, payload) in enumerate([
            ("session_started", {"learning_key": f"bench:{number % 5}", "agent_name": "bench"}),
            ("lane_chosen", {"lane": "paired", "confidence": 0.8, "source": "prior"}),
            ("verdict", {"accepted": True, "guidance": "", "reason": "correct", "attempt": 1, "step_id": None}),
            ("reward", {"score": reward, "status": "ok", "escalated": False}),
        ]):
            events.append({"session_id": sid, "seq": seq, "event_type": kind, "payload": payload, "created_at": began})
    return {SessionRecord: sessions, PlanRecord: plans, StepRecord: steps, RewardRecord: rewards, TrajectoryEventRecord: events}


def populate(store: Store, total: int) -> float:
    """Insert ``total`` synthetic sessions; returns the seconds it took."""
    started = time.perf_counter()
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for first in range(0, total, CHUNK):
        batch = _rows(first, min(CHUNK, total - first), start)
        with store.engine.begin() as connection:
            for table, rows in batch.items():
                connection.execute(insert(table.__table__), rows)  # type: ignore[attr-defined]
    return time.perf_counter() - started


def child(url: str, sessions: int, export_format: str, mode: str) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    import resource

    from atlas_learning.export import export_sessions
    from atlas_learning.store import SessionFilter

    where = SessionFilter(review_status=("approved",), limit=sessions)
    with Store(url, migrate=False) as store, tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "export.jsonl"
        export_sessions(store, target, format=export_format, where=SessionFilter(review_status=("approved",), limit=50))  # warm up
        result: dict[str, float | int] = {}
        if mode == "time":  # the median of three runs
            runs, cpu = [], []
            for _ in range(3):
                started, cpu_started = time.perf_counter(), time.process_time()
                count = export_sessions(store, target, format=export_format, where=where)
                runs.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
            result.update(seconds=statistics.median(runs), cpu_seconds=statistics.median(cpu), count=count,
                          bytes=target.stat().st_size)
        else:
            import tracemalloc

            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tracemalloc.start()
            count = export_sessions(store, target, format=export_format, where=where)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result.update(count=count, tracemalloc_peak_mib=peak / 2**20, rss_growth_mib=(rss_after - rss_before) / 1024)
    print(json.dumps(result))


def measure(url: str, sessions: int, export_format: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for mode in ("time", "memory"):
        done = subprocess.run([sys.executable, __file__, "--child", url, str(sessions), export_format, mode],
                              check=True, capture_output=True, text=True)
        figures.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return figures


def report(label: str, url: str, sizes: list[int], export_format: str) -> None:
    for size in sizes:
        f = measure(url, size, export_format)
        rate = f["count"] / f["seconds"] if f["seconds"] else float("inf")
        print(f"{label:<10} {export_format:<8} {int(f['count']):>7} sessions  {f['seconds']:7.2f} s  {rate:8.0f} sessions/s  "
              f"(this process's CPU {f['cpu_seconds']:5.2f} s)  "
              f"{f['bytes'] / 2**20:7.1f} MiB written  tracemalloc peak {f['tracemalloc_peak_mib']:6.1f} MiB  "
              f"RSS growth {f['rss_growth_mib']:6.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--format", choices=("trace", "messages", "grpo"), help="one format (default: all three)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    sizes = sorted({s for s in (2_000, 5_000, args.sessions) if s <= args.sessions})
    formats = [args.format] if args.format else ["trace", "messages", "grpo"]
    print(f"formats {', '.join(formats)}; {STEPS_PER_SESSION} steps (5 model calls, 5 tool calls), 11 rewards, 4 events, "
          "1 plan per session; goal >= 5000 sessions/s (trace)")

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        with Store(url) as store:
            print(f"sqlite     inserted {args.sessions} sessions in {populate(store, args.sessions):.1f} s", flush=True)
        for export_format in formats:
            report("sqlite", url, sizes, export_format)

    if args.no_postgres:
        return
    import psycopg

    plain = PG_URL.replace("+psycopg", "")
    schema = f"atlas_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        print(f"postgres   skipped: {str(exc).strip().splitlines()[0]}")
        return
    try:
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
        with Store(url) as store:
            print(f"postgres   inserted {args.sessions} sessions in {populate(store, args.sessions):.1f} s", flush=True)
            with store.engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
        for export_format in formats:
            report("postgres", url, sizes, export_format)
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
