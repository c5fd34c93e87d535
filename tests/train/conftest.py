"""Training tests run on sessions a scripted supervisor really recorded (tests/support.py), on both stores."""

from __future__ import annotations

import re

import pytest

from atlas_learning.rewards import answer_matches
from atlas_learning.store import Store
from tests.support import make_supervisor  # noqa: F401 - the fixture

WRONG = "I don't know."


def teacher_verdict(messages: list[dict[str, str]]) -> dict[str, object]:
    """A scripted teacher that checks sums: accepts the right number, rejects anything else with guidance."""
    text = messages[-1]["content"]
    a, b = map(int, re.findall(r"\d+", re.search(r"Task: (.*)", text).group(1))[:2])
    answer = text.split("Final answer:\n", 1)[1].split("\nVerifiable checks on this answer:", 1)[0]
    if answer_matches(answer, str(a + b)):
        return {"accepted": True, "guidance": "", "reason": "correct"}
    return {"accepted": False, "guidance": "Add the two numbers; reply with the number only.", "reason": "no number"}


def record_sums(supervisor, count: int, *, seed: int = 0) -> list[str]:
    """``count`` sessions of "What is a + b?": every other one answered wrong first, then right after guidance."""
    import random

    rng = random.Random(seed)
    ids = []
    for index in range(count):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        answers = iter([WRONG, str(a + b)] if index % 2 else [str(a + b)])
        run = supervisor.begin(f"What is {a} + {b}? Answer with the number only.", agent_name="adder",
                               metadata={"ground_truth": str(a + b)})
        answer = next(answers)
        verdict = run.validate_answer(answer)
        while verdict.accepted is False and run.can_retry:
            answer = next(answers)
            verdict = run.validate_answer(answer)
        ids.append(run.finish(answer).session_id)
    return ids


@pytest.fixture
def sum_sessions(make_supervisor, store_url: str) -> tuple[str, list[str]]:  # noqa: F811 - the fixture above
    """(store URL, session ids): 12 reviewed sum sessions; the last two left pending and quarantined."""
    supervisor = make_supervisor({"teacher": {"Verdict": teacher_verdict}}, supervision={"lane": "paired", "max_retries": 1},
                                 drift={"enabled": False})
    ids = record_sums(supervisor, 12)
    with Store(store_url) as store:
        for session_id in ids[:10]:
            store.update_session(session_id, review_status="approved")
        store.update_session(ids[10], review_status="pending")
        store.update_session(ids[11], review_status="quarantined")
    return store_url, ids
