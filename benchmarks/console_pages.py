"""Server time of the console's pages on large stores (issue 19; goal: the session list in <= 300 ms).

Fills a SQLite file and a PostgreSQL schema with N sessions each (default 10,000 and 100,000; 2 steps a session,
5 learning keys, 4 lanes, every review status, rewards spread over 0..1), then times each page through the app
in-process (Starlette's TestClient: routing, the queries, the template; no network): the first page of the list,
filtered lists, a page deep in the keyset paging, and one session. Prints the median and the slowest of the
timed runs per page.

    python benchmarks/console_pages.py                       # both stores, 10k and 100k
    python benchmarks/console_pages.py --sizes 10000 --backends sqlite
    python benchmarks/console_pages.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas_learning.config import AtlasConfig  # noqa: E402
from atlas_learning.store import SessionRecord, StepRecord, Store  # noqa: E402

KEYS = ["mcp-file-ops", "support", "billing", "research", "triage"]
LANES = ["auto", "paired", "coach", "escalate"]
REVIEWS = ["pending", "approved", "quarantined"]


def fill(store: Store, sessions: int, *, seed: int = 7) -> str:
    """Insert ``sessions`` sessions (and two steps each) in bulk; returns one session id from the middle."""
    rng = random.Random(seed)
    table, steps = SessionRecord.__table__, StepRecord.__table__  # type: ignore[attr-defined]
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    middle = ""
    batch = 5000
    with store.engine.begin() as connection:
        for first in range(0, sessions, batch):
            rows, step_rows = [], []
            for n in range(first, min(first + batch, sessions)):
                sid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
                started = start + timedelta(seconds=n * 30 + rng.random())
                key = KEYS[n % len(KEYS)]
                rows.append({"id": sid, "learning_key": key, "task_family": f"{key}-f{n % 7}", "agent_name": "agent",
                             "task": f"task {n}: read the file and report what it lists " * 3, "lane": LANES[rng.randrange(4)],
                             "lane_confidence": 0.7, "lane_reason": "prior", "lane_source": "prior",
                             "status": "completed" if rng.random() > 0.02 else "failed", "final_answer": "3 items",
                             "reward": round(rng.random(), 3), "review_status": REVIEWS[rng.randrange(3)], "drift_alert": False,
                             "interventions": 0, "retries": 0, "lessons_used": [], "explored": False,
                             "usage_by_role": {"student": {"calls": 1, "input_tokens": 100, "output_tokens": 20}},
                             "total_tokens": 120, "session_metadata": {}, "started_at": started,
                             "finished_at": started + timedelta(seconds=5)})
                for index in range(2):
                    step_rows.append({"id": uuid.UUID(int=rng.getrandbits(128), version=4).hex, "session_id": sid, "step_index": index,
                                      "attempt": 1, "kind": "tool_call", "name": "read_file", "tool_name": "read_file",
                                      "tool_args": {"path": "notes/todo.txt"}, "output": "- a\n- b", "status": "ok",
                                      "input_tokens": 0, "output_tokens": 0, "started_at": started, "ended_at": started,
                                      "duration_ms": 1.0, "step_metadata": {}})
                if n == sessions // 2:
                    middle = sid
            connection.execute(table.insert(), rows)
            connection.execute(steps.insert(), step_rows)
    if store.backend == "postgresql":
        with store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    else:
        with store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
    return middle


def time_pages(store: Store, url: str, middle: str, *, runs: int) -> dict[str, tuple[float, float]]:
    middle_day = store.get(SessionRecord, middle).started_at.date().isoformat()  # about half the sessions are newer
    from starlette.testclient import TestClient

    from atlas_learning.console.app import ConsoleSettings, create_app

    config = AtlasConfig.load({"storage": {"url": url}}, environ={})
    app = create_app(ConsoleSettings(store=store, config=config, reviewer="bench", allowed_hosts=None))
    client = TestClient(app)
    deep = client.get("/sessions?per_page=50")
    cursor = None
    for _ in range(40):  # walk 40 pages down the keyset, as a reviewer paging would
        marker = 'id="older" href="/sessions?'
        text = deep.text
        if marker not in text:
            break
        href = text.split(marker, 1)[1].split('"', 1)[0].replace("&amp;", "&")
        cursor = href
        deep = client.get("/sessions?" + href)
    pages = {
        "list, first page (50)": "/sessions",
        "list, key filter": "/sessions?key=support",
        "list, pending + reward >= 0.8": "/sessions?review=pending&min_reward=0.8",
        "list, key + family + lane": "/sessions?key=support&family=support-f1&lane=coach",
        "list, since a date (half of them)": f"/sessions?since={middle_day}",
        "list, 41st page (keyset)": "/sessions?" + (cursor or ""),
        "one session": f"/sessions/{middle}",
    }
    figures = {}
    for name, path in pages.items():
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        took = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(path)
            took.append((time.perf_counter() - started) * 1000)
        figures[name] = (statistics.median(took), max(took))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"console page server time (ms, median / slowest of {args.runs} runs), in-process TestClient")
    for backend in args.backends.split(","):
        for size in sizes:
            with tempfile.TemporaryDirectory() as folder:
                schema = None
                if backend == "sqlite":
                    url = f"sqlite:///{folder}/atlas.db"
                else:
                    import psycopg

                    schema = f"console_bench_{uuid.uuid4().hex[:8]}"
                    with psycopg.connect(args.pg_url.replace("+psycopg", ""), autocommit=True) as connection:
                        connection.execute(f'CREATE SCHEMA "{schema}"')
                    url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
                try:
                    with Store(url) as store:
                        started = time.perf_counter()
                        middle = fill(store, size)
                        filled = time.perf_counter() - started
                        figures = time_pages(store, url, middle, runs=args.runs)
                    print(f"\n{backend}, {size:,} sessions (filled in {filled:.0f} s)")
                    for name, (median, slowest) in figures.items():
                        print(f"  {name:<34} {median:7.1f} / {slowest:7.1f}")
                finally:
                    if schema is not None:
                        import psycopg

                        with psycopg.connect(args.pg_url.replace("+psycopg", ""), autocommit=True) as connection:
                            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
