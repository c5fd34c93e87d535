"""The console over plain HTTP (Starlette's TestClient): every page renders from a filled store, and the guards hold:
no change without the CSRF token, none from another site, none in read-only mode, nothing at all off loopback
without the access token, and no other Host on loopback. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest

from atlas_learning.config import AtlasConfig
from atlas_learning.store import ReviewLogRecord, SessionRecord, Store

from .conftest import LESSON, Filled

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from atlas_learning.console.app import ConsoleSettings, create_app  # noqa: E402

SECRET = "sk-" + "proj-" + "PLANTEDconsoleSECRET" + "0a1b2c3d4e5f6g7h8i9j"


def client_for(url: str, *, base: str = "http://127.0.0.1", **options: Any) -> tuple[TestClient, Store, Any]:
    store = Store(url)
    config = AtlasConfig.load({"storage": {"url": url}}, environ={})
    allowed = options.pop("allowed_hosts", ["127.0.0.1", "localhost"])
    app = create_app(ConsoleSettings(store=store, config=config, reviewer=options.pop("reviewer", "tester"), allowed_hosts=allowed, **options))
    return TestClient(app, base_url=base, follow_redirects=False), store, app


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_every_page_renders_what_the_store_holds(filled: Filled) -> None:
    client, store, _ = client_for(filled.url)
    with client, store:
        listing = client.get("/sessions")
        assert listing.status_code == 200
        assert "9 matching sessions" in listing.text
        assert all(sid[:12] in listing.text for sid in [*filled.finished, filled.running])
        one = client.get(f"/sessions/{filled.finished[0]}")
        assert one.status_code == 200
        for expected in ("read_file", "Timeline", "Judge samples", "gpt-4.1-mini", LESSON, "session reward", "outcome"):
            assert expected in one.text, expected
        assert client.get("/sessions/" + "0" * 32).status_code == 404
        book = client.get("/playbook?key=files")
        assert book.status_code == 200 and LESSON in book.text and "seeded for the console tests" in book.text
        learning = client.get("/learning?key=files")
        assert learning.status_code == 200 and learning.text.count("<svg") == 3
        chart = client.get("/learning/reward.svg?key=files")
        assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
        assert client.get("/static/console.js").status_code == 200 and client.get("/static/console.css").status_code == 200
        assert client.get("/").headers["location"] == "/sessions"


def test_filters_and_keyset_pages_cover_every_session_once(filled: Filled) -> None:
    client, store, _ = client_for(filled.url)
    with client, store:
        seen: list[str] = []
        url = "/sessions?per_page=25&key=files"
        # 9 sessions, pages of 25: one page; with a reward floor fewer
        page = client.get(url)
        seen = re.findall(r'data-id="([0-9a-f]{32})"', page.text)
        assert sorted(seen) == sorted([*filled.finished, filled.running])
        high = re.findall(r'data-id="([0-9a-f]{32})"', client.get("/sessions?min_reward=0.8").text)
        expected = {r.id for r in store.list_sessions() if r.reward is not None and r.reward >= 0.8}
        assert set(high) == expected and 0 < len(expected) < 9
        running = re.findall(r'data-id="([0-9a-f]{32})"', client.get("/sessions?status=running").text)
        assert running == [filled.running]
        today = store.get(SessionRecord, filled.running).started_at.date()
        assert len(re.findall(r'data-id="', client.get(f"/sessions?until={today.isoformat()}").text)) == 9  # the day is included
        before = (today.toordinal() - 1)
        from datetime import date

        assert 'data-id="' not in client.get(f"/sessions?until={date.fromordinal(before).isoformat()}").text
        assert 'data-id="' not in client.get(f"/sessions?since={date.fromordinal(today.toordinal() + 1).isoformat()}").text
        assert len(re.findall(r'data-id="', client.get("/sessions?since=1d").text)) == 9
        assert client.get("/sessions?since=yesterday").status_code == 400
        bad = client.get("/sessions?min_reward=2")
        assert bad.status_code == 400 and "min_reward: expected a reward between 0 and 1" in bad.text
        assert client.get("/sessions?after=garbage").status_code == 400


def test_a_change_without_the_csrf_token_or_from_another_site_is_refused(filled: Filled) -> None:
    client, store, _ = client_for(filled.url)
    target = filled.finished[0]
    with client, store:
        token = csrf_of(client.get(f"/sessions/{target}").text)
        refused = [
            client.post(f"/sessions/{target}/review", data={"action": "approve"}),
            client.post(f"/sessions/{target}/review", data={"action": "approve", "csrf": "forged"}),
            client.post(f"/sessions/{target}/review", data={"action": "approve", "csrf": token}, headers={"Origin": "http://evil.example"}),
            client.post("/review", data={"action": "approve", "scope": "all"}),
            client.post("/playbook/retire", data={"key": "files", "entry_id": filled.lesson_id, "reason": "x"}),
        ]
        assert [r.status_code for r in refused] == [403] * 5
        assert "CSRF token" in refused[0].text and "another site" in refused[2].text
        assert store.get(SessionRecord, target).review_status == "pending"
        assert store.rows(ReviewLogRecord) == []
        ok = client.post(f"/sessions/{target}/review", data={"action": "approve", "csrf": token}, headers={"Origin": "http://127.0.0.1"})
        assert ok.status_code == 303
        assert store.get(SessionRecord, target).review_status == "approved"


def test_off_loopback_every_request_needs_the_access_token(filled: Filled) -> None:
    token = "t0ken-for-the-console-tests"
    client, store, _ = client_for(filled.url, base="http://10.1.2.3:8765", token=token, allowed_hosts=None)
    target = filled.finished[0]
    with client, store:
        assert client.get("/sessions").status_code == 401
        assert client.get("/static/console.js").status_code == 401
        assert client.get("/sessions", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/sessions", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        first = client.get(f"/sessions?token={token}&review=pending")
        assert first.status_code == 303 and first.headers["location"] == "/sessions?review=pending"  # the token leaves the URL
        assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
        page = client.get(f"/sessions/{target}")  # the cookie now
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        client.cookies.clear()
        no_token = client.post(f"/sessions/{target}/review", data={"action": "quarantine", "csrf": csrf})
        assert no_token.status_code == 401
        assert store.get(SessionRecord, target).review_status == "pending"
        with_token = client.post(f"/sessions/{target}/review", data={"action": "quarantine", "csrf": csrf},
                                 headers={"Authorization": f"Bearer {token}"})
        assert with_token.status_code == 303 and store.get(SessionRecord, target).review_status == "quarantined"


def test_on_loopback_only_its_own_host_names_are_answered(filled: Filled) -> None:
    client, store, _ = client_for(filled.url)
    with client, store:
        assert client.get("/sessions", headers={"Host": "rebound.example.com"}).status_code == 400
        assert client.get("/sessions", headers={"Host": "localhost:8765"}).status_code == 200


def test_read_only_shows_no_forms_and_refuses_changes(filled: Filled) -> None:
    client, store, _ = client_for(filled.url, read_only=True)
    target = filled.finished[0]
    with client, store:
        page = client.get(f"/sessions/{target}")
        assert page.status_code == 200 and 'id="review-form"' not in page.text and "read-only" in page.text
        csrf = create_app.__name__  # any value: read-only refuses before the token is looked at
        refused = client.post(f"/sessions/{target}/review", data={"action": "approve", "csrf": csrf})
        assert refused.status_code == 403 and "read-only" in refused.text
        assert store.get(SessionRecord, target).review_status == "pending"


def test_reviews_are_logged_as_the_cli_logs_them_and_the_gate_holds(filled: Filled) -> None:
    from atlas_learning._commands.review import set_review_status

    client, store, _ = client_for(filled.url)
    console_target, cli_target = filled.finished[0], filled.finished[1]
    with client, store:
        csrf = csrf_of(client.get(f"/sessions/{console_target}").text)
        note = f"checked by hand; key {SECRET}"
        assert client.post(f"/sessions/{console_target}/review", data={"action": "quarantine", "note": note, "csrf": csrf}).status_code == 303
        config = AtlasConfig.load({"storage": {"url": filled.url}}, environ={})
        set_review_status(store, config, [cli_target], "quarantined", reviewer="tester", note=note)
        by_console, by_cli = (store.rows(ReviewLogRecord, ReviewLogRecord.session_id == sid)[0] for sid in (console_target, cli_target))
        fields = ("from_status", "to_status", "reviewer", "note")
        assert [getattr(by_console, f) for f in fields] == [getattr(by_cli, f) for f in fields]
        assert "PLANTEDconsoleSECRET" not in by_console.note and "checked by hand" in by_console.note
        assert store.get(SessionRecord, console_target).review_note == by_console.note
        # approving every session of the filter (a running one among them) is refused whole, as `atlas review` refuses it
        response = client.post("/review", data={"action": "approve", "scope": "all", "csrf": csrf, "key": "files"})
        assert response.status_code == 303 and "only+finished+sessions+can+be+approved" in response.headers["location"]
        assert store.get(SessionRecord, filled.running).review_status == "pending"
        assert not [r for r in store.list_sessions() if r.review_status == "approved"]
        # the finished ones of a filter go through; the log has one row per change
        done = client.post("/review", data={"action": "approve", "scope": "all", "csrf": csrf, "status": "completed", "review": "pending",
                                            "note": "bulk"})
        assert done.status_code == 303
        approved = [r for r in store.list_sessions() if r.review_status == "approved"]
        assert approved and all(r.status == "completed" for r in approved)
        assert len(store.rows(ReviewLogRecord, ReviewLogRecord.note == "bulk")) == len(approved)


def test_a_refined_lesson_shows_its_word_diff_in_the_history(filled: Filled) -> None:
    from atlas_learning.schemas import LessonChange

    filled.supervisor.playbook.apply("files", [LessonChange(op="refine", entry_id=filled.lesson_id,
                                                            lesson="Read the whole file before counting the items it lists.",
                                                            reason="be explicit")])
    client, store, _ = client_for(filled.url)
    with client, store:
        page = client.get("/playbook?key=files").text
    assert "<ins>whole</ins>" in page and "be explicit" in page


def test_atlas_console_serves_and_off_loopback_prints_a_token(filled: Filled, tmp_path) -> None:
    import subprocess
    import sys
    import time as clock

    import httpx
    import yaml

    from .conftest import free_port

    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": filled.url}}))
    for host, needs_token in (("127.0.0.1", False), ("0.0.0.0", True)):
        port = free_port()
        where = ["-c", str(config)] if not needs_token else ["--store", filled.url]  # a config file, or --store
        process = subprocess.Popen([sys.executable, "-c", "from atlas_learning.cli import main; main()", "console", "--host", host, "--port", str(port), *where],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            first = process.stdout.readline()
            assert f":{port}/" in first, first
            token = re.search(r"\?token=(\S+)", first)
            assert bool(token) == needs_token, first
            deadline = clock.monotonic() + 30
            while True:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/sessions", timeout=5)
                    break
                except httpx.ConnectError:
                    assert clock.monotonic() < deadline, "the console did not start"
                    clock.sleep(0.2)
            assert response.status_code == (401 if needs_token else 200)
            if needs_token:
                authorised = httpx.get(f"http://127.0.0.1:{port}/sessions", headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=5)
                assert authorised.status_code == 200 and "9 matching sessions" in authorised.text
        finally:
            process.terminate()
            process.wait(10)


def test_keyset_pages_walk_every_session_once_both_ways_with_tied_start_times(store_url: str) -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 3, 1, tzinfo=timezone.utc)
    with Store(store_url) as seeded:  # 60 sessions, in pairs that share a start time
        seeded.add(*(SessionRecord(learning_key="paged", task=f"task {n}", status="completed",
                                   started_at=moment + timedelta(seconds=n // 2)) for n in range(60)))
    client, store, _ = client_for(store_url)
    with client, store:
        pages, urls, url = [], [], "/sessions?per_page=25"
        while url:
            urls.append(url)
            text = client.get(url).text
            pages.append(re.findall(r'data-id="([0-9a-f]{32})"', text))
            older = re.search(r'id="older" href="([^"]+)"', text)
            url = older.group(1).replace("&amp;", "&") if older else None
        assert [len(p) for p in pages] == [25, 25, 10]
        walked = [sid for page in pages for sid in page]
        newest_first = [r.id for r in sorted(store.list_sessions(), key=lambda r: (r.started_at, r.id), reverse=True)]
        assert walked == newest_first  # every session once, in order, ties broken by id
        # "newer" from each page leads back to the page before it, exactly; the first page has no "newer"
        for index in (2, 1):
            newer = re.search(r'id="newer" href="([^"]+)"', client.get(urls[index]).text).group(1).replace("&amp;", "&")
            assert re.findall(r'data-id="([0-9a-f]{32})"', client.get(newer).text) == pages[index - 1]
        assert 'id="newer"' not in client.get(urls[0]).text
