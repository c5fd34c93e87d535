"""Shared test support: a supervisor on scripted models, once per store backend.

Scripted roles answer by the schema they are asked for (``Verdict``, ``SessionJudgement``, ...), so a test
states what each kind of question gets without caring about call order. A value may be a list (answered in
turn, the last one repeating), a callable ``(messages) -> answer``, or an exception to raise.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from atlas_learning.config import AtlasConfig
from atlas_learning.models import RoleModels, ScriptedModel
from atlas_learning.supervisor import SupervisedRun, Supervisor

GOOD_JUDGEMENT = {"outcome": 0.9, "process": 0.9, "efficiency": 0.9, "confidence": 0.9, "rationale": "done"}
POOR_JUDGEMENT = {"outcome": 0.1, "process": 0.2, "efficiency": 0.3, "confidence": 0.9, "rationale": "wrong"}
ACCEPT = {"accepted": True, "guidance": "", "reason": "correct"}


def run_with_terminal_stderr(args: list[str], **options: Any) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """Run ``args`` with stdout piped and stderr a pseudo-terminal (what a user at a terminal sees of progress
    output); returns the result and everything the terminal got. ``options`` go to :func:`subprocess.run`."""
    import pty

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, **options)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    return result, b"".join(chunks).decode("utf-8", "replace")


class HeldJudge:
    """A judge whose answers wait until the test releases them, and which notes the threads it ran on.

    A user's call that waited for judging would hang here (until ``timeout_s``, then the judge fails), not merely
    run slow: so "the call returns before its session is judged" is tested by order, not by a clock that a loaded
    CI machine (or a fresh clone's first imports) can stretch."""

    def __init__(self, judgement: dict[str, Any] = GOOD_JUDGEMENT, *, timeout_s: float = 10.0) -> None:
        self.judgement = judgement
        self.timeout_s = timeout_s
        self.threads: set[int] = set()
        self._released = threading.Event()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def __call__(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        self.threads.add(threading.get_ident())
        if not self._released.wait(self.timeout_s):
            raise TimeoutError("the held judge was never released: the caller waited for judging")
        return self.judgement


def by_schema(answers: dict[str, Any]) -> Callable[[list[dict[str, str]], dict[str, Any] | None], Any]:
    """A scripted response that picks its answer by the requested schema's title ('text' for plain calls)."""
    turns: dict[str, int] = {}
    lock = threading.Lock()  # judge samples ask at once, from several threads

    def respond(messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
        title = schema["title"] if schema else "text"
        if title not in answers:
            raise AssertionError(f"unexpected {title} request")
        answer = answers[title]
        if isinstance(answer, list):
            with lock:
                index = turns.get(title, 0)
                turns[title] = index + 1
            answer = answer[min(index, len(answer) - 1)]
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(messages)
        return answer

    return respond


class ScriptedRoles(RoleModels):
    """RoleModels whose roles are ScriptedModels answering by schema; tests swap answers per role."""

    def __init__(self, config: AtlasConfig, answers: dict[str, dict[str, Any]]) -> None:
        super().__init__(config)
        self.answers = answers

    def get(self, role: str) -> ScriptedModel:
        with self._lock:
            if role not in self._by_role:
                model = ScriptedModel(role=role, ledger=self.ledger, responses=[by_schema(self.answers.get(role, {}))], cycle=True)
                model.settings = model.settings.model_copy(update={"max_retries": 0})
                self._by_role[role] = model
            return self._by_role[role]  # type: ignore[return-value]


def default_answers() -> dict[str, dict[str, Any]]:
    return {
        "teacher": {"Verdict": ACCEPT, "PlanReview": {"approved": True, "steps": [], "concerns": []}, "text": "teacher's answer"},
        "judge_small": {"SessionJudgement": GOOD_JUDGEMENT, "StepJudgements": {"steps": []}},
        "judge_large": {"SessionJudgement": GOOD_JUDGEMENT},
        "probe": {"ProbeAnswer": {"lane": "paired", "confidence": 0.7, "reason": "unsure"}},
        "synthesizer": {"PlaybookChanges": {"changes": []}},
    }


#: For a test whose subject is not the store (a model trained on what a store holds, for one): it runs on SQLite
#: only. Reading the same data from both stores has tests of their own (``test_each_model_turn_is_an_example...``).
ON_SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@pytest.fixture
def make_supervisor(store_url: str, tmp_path) -> Iterator[Callable[..., Supervisor]]:
    """Build supervisors on one database; ``answers`` overrides roles, ``config`` overrides config sections."""
    made: list[Supervisor] = []

    def make(answers: dict[str, dict[str, Any]] | None = None, *, checks=(), human=None, **config: Any) -> Supervisor:
        roles = default_answers()
        for role, by_title in (answers or {}).items():
            roles[role] = {**roles.get(role, {}), **by_title}
        # Nothing is withheld at random unless a test asks for it: the A/B withholding has tests of its own.
        config["playbook"] = {"trial_explore_rate": 0.0, "explore_rate": 0.0, **config.get("playbook", {})}
        loaded = AtlasConfig.load({"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")}, **config}, environ={})
        supervisor = Supervisor(loaded, models=ScriptedRoles(loaded, roles), checks=checks, human=human)
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        supervisor.close()


def record_begun(supervisor: Supervisor, patch: Callable[[Any, str, Any], None] = setattr) -> list[SupervisedRun]:
    """The sessions a supervisor begins from now on, as adapters ask for them: ``begin`` and ``abegin`` still do
    their work, and each SupervisedRun they return is appended to the returned list. ``patch`` sets the spies
    (``monkeypatch.setattr`` to undo them after a test)."""
    runs: list[SupervisedRun] = []
    begin, abegin = supervisor.begin, supervisor.abegin

    def spied_begin(*args: Any, **kwargs: Any) -> SupervisedRun:
        run = begin(*args, **kwargs)
        runs.append(run)
        return run

    async def spied_abegin(*args: Any, **kwargs: Any) -> SupervisedRun:
        run = await abegin(*args, **kwargs)
        runs.append(run)
        return run

    patch(supervisor, "begin", spied_begin)
    patch(supervisor, "abegin", spied_abegin)
    return runs


def local_agents_tracing() -> Iterator[None]:
    """Agents SDK tracing on, with no processor but what a test adds: the SDK's default exporter never tries the
    network. A generator for a pytest fixture; without the SDK it does nothing."""
    try:
        from agents.tracing import get_trace_provider, set_trace_processors, set_tracing_disabled
    except ImportError:
        yield
        return
    provider = get_trace_provider()
    before = list(getattr(getattr(provider, "_multi_processor", None), "_processors", ()))
    set_trace_processors([])
    set_tracing_disabled(False)
    yield
    set_trace_processors(before)
