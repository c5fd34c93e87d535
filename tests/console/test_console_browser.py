"""The console through a real browser: headless Chromium (Debian's chromium and chromium-driver) driven by Selenium,
against the console served by uvicorn on 127.0.0.1, on SQLite and on PostgreSQL. Each case checks what the page
shows and what the store and the review log hold afterwards; the main pages are saved as screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atlas_learning._commands.review import set_review_status
from atlas_learning.store import PlaybookEntryRecord, PlaybookVersionRecord, ReviewLogRecord, SessionRecord, Store

from .conftest import LESSON, Filled

pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def wait(browser: Any, condition: Any, timeout: float = 15) -> Any:
    return WebDriverWait(browser, timeout).until(condition)


def shot(browser: Any, artifacts: Path, name: str, backend: str) -> Path:
    path = artifacts / f"{name}-{backend}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def backend(filled: Filled) -> str:
    return "postgres" if filled.url.startswith("postgresql") else "sqlite"


def rows(browser: Any) -> list[str]:
    return [r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, "tr.row")]


def at_session(browser: Any, session_id: str) -> None:
    """Wait until the page shown is this session's, loaded (its script's key handler is in place)."""
    try:
        wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, f'div.session-head[data-session="{session_id}"]')))
    except Exception:
        raise AssertionError(f"expected session {session_id} at {browser.current_url}: {browser.find_element(By.TAG_NAME, 'main').text[:300]}") from None
    wait(browser, lambda b: b.execute_script("return document.readyState") == "complete")


def keypress(browser: Any, key: str, *, navigates: bool = False) -> None:
    """Press a key on the page; with ``navigates``, wait until the page it leads to has replaced this one."""
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(key)
    if navigates:
        wait(browser, EC.staleness_of(body))


def test_the_list_filters_and_opens_a_session(filled: Filled, serve: Any, browser: Any, artifacts: Path) -> None:
    served = serve(filled.url)
    browser.get(f"{served.url}/sessions")
    assert set(rows(browser)) == {*filled.finished, filled.running}
    assert browser.find_element(By.ID, "match-count").text == "9 matching sessions"
    shot(browser, artifacts, "sessions", backend(filled))
    # filter by the form: finished sessions with a high reward
    browser.find_element(By.NAME, "min_reward").send_keys("0.8")
    browser.find_element(By.CSS_SELECTOR, "select[name=status] option[value=completed]").click()
    browser.find_element(By.ID, "apply-filters").click()
    wait(browser, EC.url_contains("min_reward=0.8"))
    with Store(filled.url) as store:
        expected = {r.id for r in store.list_sessions() if r.status == "completed" and r.reward is not None and r.reward >= 0.8}
    assert set(rows(browser)) == expected and 0 < len(expected) < 9
    # j selects the first row, Enter opens it
    keypress(browser, "j")
    first = browser.find_element(By.CSS_SELECTOR, "tr.row.selected").get_attribute("data-id")
    keypress(browser, Keys.ENTER, navigates=True)
    at_session(browser, first)
    timeline = browser.find_element(By.ID, "timeline").text.lower()
    with Store(filled.url) as store:
        lane = store.get(SessionRecord, first).lane
    for expected_text in ("read_file", "model call", "session reward", "answer 1", *(["plan (proposed)"] if lane == "coach" else [])):
        assert expected_text in timeline, expected_text
    assert browser.find_elements(By.CSS_SELECTOR, "#judge-samples tr")
    assert LESSON in browser.page_source  # the lesson injected into it
    shot(browser, artifacts, "session", backend(filled))


def test_approve_and_quarantine_with_notes_reach_the_store_and_the_log(filled: Filled, serve: Any, browser: Any) -> None:
    served = serve(filled.url)
    approve_id, quarantine_id = filled.finished[0], filled.finished[1]
    for session_id, button, note in ((approve_id, "approve", "looks right"), (quarantine_id, "quarantine", "the file was missing")):
        browser.get(f"{served.url}/sessions/{session_id}")
        browser.find_element(By.ID, "note").send_keys(note)
        browser.find_element(By.ID, button).click()
        flash = wait(browser, EC.presence_of_element_located((By.ID, "flash")))
        assert session_id[:12] in flash.text
        assert browser.find_element(By.ID, "review-status").text.startswith({"approve": "approved", "quarantine": "quarantined"}[button])
        assert note in browser.find_element(By.ID, "review-log").text
    with Store(filled.url) as store:
        assert store.get(SessionRecord, approve_id).review_status == "approved"
        assert store.get(SessionRecord, quarantine_id).review_status == "quarantined"
        logged = {(r.session_id, r.from_status, r.to_status, r.reviewer, r.note) for r in store.rows(ReviewLogRecord)}
    assert logged == {(approve_id, "pending", "approved", "tester", "looks right"),
                      (quarantine_id, "pending", "quarantined", "tester", "the file was missing")}


def test_a_queue_of_five_pending_sessions_is_reviewed_by_keyboard(filled: Filled, serve: Any, browser: Any) -> None:
    served = serve(filled.url)
    queue = filled.finished[3:]  # five; the other finished ones are decided already
    with Store(filled.url) as store:
        set_review_status(store, served.settings.config, filled.finished[:3], "approved", reviewer="setup", note=None)
        order = [r.id for r in sorted((store.get(SessionRecord, i) for i in queue), key=lambda r: (r.started_at, r.id))]
    assert len(order) == 5
    browser.get(f"{served.url}/queue")
    plan = ["a", "q", "n", "a", "p"]  # approve, quarantine, skip, approve, back to pending (stays in the queue)
    for index, key in enumerate(plan):
        at_session(browser, order[index])
        assert "queue=1" in browser.current_url
        if key != "n":
            keypress(browser, "/")  # the note field
            note = browser.switch_to.active_element
            assert note.get_attribute("id") == "note"
            note.send_keys(f"queue {index}", Keys.ESCAPE)  # Escape leaves it: the shortcut keys are live again
        keypress(browser, key, navigates=True)
    # the last session went back to pending: the queue wraps to the oldest one still pending, the skipped one
    at_session(browser, order[2])
    with Store(filled.url) as store:
        statuses = [store.get(SessionRecord, i).review_status for i in order]
        notes = {r.session_id: r.note for r in store.rows(ReviewLogRecord) if r.reviewer == "tester"}
    assert statuses == ["approved", "quarantined", "pending", "approved", "pending"]
    assert notes == {order[0]: "queue 0", order[1]: "queue 1", order[3]: "queue 3"}  # pending -> pending changes nothing
    # the queue ends when nothing is pending
    keypress(browser, "a", navigates=True)
    at_session(browser, order[4])
    keypress(browser, "q", navigates=True)
    flash = wait(browser, EC.presence_of_element_located((By.ID, "flash")))
    assert "no pending sessions left" in flash.text and "/sessions?" in browser.current_url


def test_the_gate_refuses_to_approve_a_running_session(filled: Filled, serve: Any, browser: Any) -> None:
    served = serve(filled.url)
    browser.get(f"{served.url}/sessions/{filled.running}")
    assert browser.find_element(By.ID, "session-status").text.startswith("running")
    browser.find_element(By.ID, "note").send_keys("too early")
    browser.find_element(By.ID, "approve").click()
    error = wait(browser, EC.presence_of_element_located((By.ID, "flash-error")))
    assert "is running: only finished sessions can be approved" in error.text
    with Store(filled.url) as store:
        assert store.get(SessionRecord, filled.running).review_status == "pending"
        assert store.rows(ReviewLogRecord, ReviewLogRecord.session_id == filled.running) == []


def test_a_lesson_is_retired_with_its_reason(filled: Filled, serve: Any, browser: Any, artifacts: Path) -> None:
    served = serve(filled.url)
    browser.get(f"{served.url}/playbook?key=files")
    row = browser.find_element(By.ID, f"e-{filled.lesson_id}")
    assert LESSON in row.text
    shot(browser, artifacts, "playbook", backend(filled))
    row.find_element(By.NAME, "reason").send_keys("misleads on empty files")
    row.find_element(By.TAG_NAME, "button").click()
    flash = wait(browser, EC.presence_of_element_located((By.ID, "flash")))
    assert f"retired {filled.lesson_id[:12]}" in flash.text
    assert LESSON in browser.find_element(By.ID, "entries-retired").text
    assert "misleads on empty files" in browser.find_element(By.ID, "history").text
    with Store(filled.url) as store:
        assert store.get(PlaybookEntryRecord, filled.lesson_id).status == "retired"
        last = store.rows(PlaybookVersionRecord, PlaybookVersionRecord.entry_id == filled.lesson_id, order_by=PlaybookVersionRecord.id)[-1]
    assert last.status == "retired" and "misleads on empty files" in last.reason


def test_the_learning_chart_is_rendered(filled: Filled, serve: Any, browser: Any, artifacts: Path) -> None:
    served = serve(filled.url)
    browser.get(f"{served.url}/learning?key=files&window=3")
    charts = browser.find_elements(By.CSS_SELECTOR, "figure svg.chart")
    assert len(charts) == 3
    with Store(filled.url) as store:
        scored = [r.reward for r in sorted(store.list_sessions(), key=lambda r: r.started_at) if r.reward is not None]
    points = browser.find_elements(By.CSS_SELECTOR, "#chart-reward circle.point")
    assert len(points) >= len(scored) > 0  # one point per scored session (and the window lines' points)
    reward_line = browser.find_element(By.CSS_SELECTOR, '#chart-reward polyline[data-series="reward"]')
    assert len(reward_line.get_attribute("points").split()) == len(scored)
    assert reward_line.size["width"] > 300  # drawn across the chart, not collapsed
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-lanes rect.bar")
    assert {b.get_attribute("data-lane") for b in bars} <= {"auto", "paired", "coach", "escalate", "none"} and bars
    shot(browser, artifacts, "learning", backend(filled))
