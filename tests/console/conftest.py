"""The console's fixtures: a store filled by a real (scripted) supervisor, once per backend; the console served by
uvicorn on a free 127.0.0.1 port in a background thread; headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium. Screenshots go to ``$TEST_ARTIFACTS_DIR/console`` (else a pytest temp
folder); the path is printed."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from atlas_learning.schemas import LessonChange
from atlas_learning.store import Store
from tests.conftest import IN_CI
from tests.support import GOOD_JUDGEMENT, POOR_JUDGEMENT, make_supervisor  # noqa: F401 - the fixture

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TASKS = [
    "Read notes/todo.txt and report how many items it lists",
    "Count the lines of logs/app.log that mention ERROR",
    "List the files in reports/ and name the newest",
    "Read config/settings.ini and report the port",
    "Sum the numbers in data/values.csv",
]
LESSON = "Read the file before counting the items it lists."


@dataclass
class Filled:
    """What the filled store holds: ids by role in the tests."""

    url: str
    finished: list[str]
    running: str
    lesson_id: str
    supervisor: Any


def run_session(supervisor: Any, task: str, *, answer: str = "3 items", error: bool = False) -> str:
    run = supervisor.begin(task, agent_name="files", learning_key="files", task_family="files")
    if run.lane == "coach":
        run.review_plan(["read the file", "count"])
    run.record_model_call(role="student", provider="openai", model="gpt-4.1-mini", input_tokens=90, output_tokens=20, latency_ms=30)
    step = run.record_step(tool_name="read_file", tool_args={"path": task.split()[1] if len(task.split()) > 1 else "x"},
                           output="- a\n- b\n- c", error="ERROR: no such file" if error else None)
    if run.lane == "coach":
        run.validate_step(step)
    if run.lane in ("paired", "coach"):
        run.validate_answer(answer)
    return run.finish(answer).session_id


@pytest.fixture
def filled(make_supervisor, store_url: str) -> Filled:  # noqa: F811
    """Eight finished sessions (rewards high and low, lanes coach and paired) with a lesson injected in them, and one
    session still running."""
    judgements = [GOOD_JUDGEMENT, POOR_JUDGEMENT, GOOD_JUDGEMENT, GOOD_JUDGEMENT, POOR_JUDGEMENT, GOOD_JUDGEMENT, GOOD_JUDGEMENT,
                  GOOD_JUDGEMENT]
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": [j for j in judgements for _ in range(3)]}},
                                 supervision={"llm_probe": False}, playbook={"relevance_threshold": 0.0})
    [applied] = supervisor.playbook.apply("files", [LessonChange(op="add", lesson=LESSON, scope="general", reason="seeded for the console tests")])
    finished = [run_session(supervisor, TASKS[i % len(TASKS)], error=(i == 1)) for i in range(8)]
    running = supervisor.begin("Archive the old reports", agent_name="files", learning_key="files").session_id
    assert supervisor.drain(60)
    supervisor.recorder.flush()
    return Filled(url=store_url, finished=finished, running=running, lesson_id=applied.entry_id, supervisor=supervisor)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    settings: Any
    app: Any


@pytest.fixture
def serve() -> Iterator[Any]:
    """A function that serves a console for a store URL on 127.0.0.1 (uvicorn in a thread) and returns its base URL."""
    import uvicorn

    from atlas_learning.config import AtlasConfig
    from atlas_learning.console.app import ConsoleSettings, create_app

    servers: list[tuple[Any, threading.Thread, Store]] = []

    def start(url: str, **options: Any) -> Served:
        store = Store(url)
        config = AtlasConfig.load({"storage": {"url": url}}, environ={})
        settings = ConsoleSettings(store=store, config=config, reviewer=options.pop("reviewer", "tester"),
                                   allowed_hosts=options.pop("allowed_hosts", ["127.0.0.1", "localhost"]), **options)
        app = create_app(settings)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the console server did not start")
            time.sleep(0.02)
        servers.append((server, thread, store))
        return Served(url=f"http://127.0.0.1:{port}", settings=settings, app=app)

    yield start
    for server, thread, store in servers:
        server.should_exit = True
        thread.join(10)
        store.close()


def _chromium() -> tuple[str, str] | None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(os.environ["TEST_ARTIFACTS_DIR"]) if os.environ.get("TEST_ARTIFACTS_DIR") else tmp_path_factory.mktemp("artifacts")
    folder = root / "console"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture(scope="session")
def browser_session() -> Iterator[Any]:
    """One headless Chromium for the whole run (starting one takes seconds on two cores)."""
    found = _chromium()
    if found is None:
        message = "headless Chromium not found: apt-get install -y chromium chromium-driver (make install does it where apt is available)"
        if IN_CI:
            pytest.fail(f"CI=true requires the browser tests to run: {message}", pytrace=False)
        pytest.skip(message)
    selenium = pytest.importorskip("selenium")
    del selenium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                     "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(browser_session: Any) -> Any:
    browser_session.delete_all_cookies()
    return browser_session
