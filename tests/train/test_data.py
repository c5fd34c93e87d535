"""Teacher examples from stored sessions: the review gate, the prompts the teacher saw, the outcome labels."""

from __future__ import annotations

import json

import pytest

from atlas_learning.errors import AtlasError
from atlas_learning.export import export_sessions
from atlas_learning.prompts import answer_validation_messages
from atlas_learning.store import SessionFilter, Store
from atlas_learning.train import VERDICT_PREFILL, load_sessions, split_examples, teacher_examples


def test_approved_sessions_only_unless_asked(sum_sessions) -> None:
    url, ids = sum_sessions
    approved = load_sessions("approved", store_url=url)
    assert sorted(r["session_id"] for r in approved) == sorted(ids[:10])
    everything = load_sessions("approved", store_url=url, review_status=None)
    assert sorted(r["session_id"] for r in everything) == sorted(ids)
    pending = load_sessions("approved", store_url=url, review_status=["pending"])
    assert [r["session_id"] for r in pending] == [ids[10]]


def test_jsonl_source_honours_the_gate_too(sum_sessions, tmp_path) -> None:
    url, ids = sum_sessions
    path = tmp_path / "all.jsonl"
    with Store(url) as store:
        written = export_sessions(store, path, where=SessionFilter(review_status=None))
    assert written == 12
    assert sorted(r["session_id"] for r in load_sessions(path)) == sorted(ids[:10])
    assert len(load_sessions(path, review_status=None)) == 12


def test_answer_examples_rebuild_the_teachers_prompt_and_label_attempts(sum_sessions) -> None:
    url, _ = sum_sessions
    records = load_sessions("approved", store_url=url)
    examples = teacher_examples(records, kinds=["answer"])
    retried = [r for r in records if len(r["attempts"]) == 2]
    assert len(retried) == 5 and len(examples) == 15  # 5 first-time right + 5 x (wrong, right)
    wrong = [e for e in examples if e["attempt"] == "I don't know."]
    assert len(wrong) == 5 and all(e["attempt_correct"] is False for e in wrong)
    first = wrong[0]
    verdict = json.loads(first["completion"][0]["content"])
    assert verdict["accepted"] is False and "Add the two numbers" in verdict["guidance"]
    shown = f"- expected_answer_check: FAILED (0.00) expected '{first['expected']}'"  # the checks the teacher was shown
    assert first["prompt"] == answer_validation_messages(first["task"], "I don't know.", "(no steps recorded)", "", shown)
    right = [e for e in examples if e["attempt"] != "I don't know."]
    assert all(e["attempt_correct"] is True and e["expected"] == e["attempt"] for e in right)


def test_prefill_moves_the_verdicts_first_words_into_the_prompt(sum_sessions) -> None:
    url, _ = sum_sessions
    example = teacher_examples(load_sessions("approved", store_url=url), kinds=["answer"], prefill=True)[0]
    assert example["prompt"][-1] == {"role": "assistant", "content": VERDICT_PREFILL}
    assert json.loads(VERDICT_PREFILL + example["completion"][0]["content"])["accepted"] in (True, False)


def test_split_keeps_each_task_on_one_side(sum_sessions) -> None:
    url, _ = sum_sessions
    examples = teacher_examples(load_sessions("approved", store_url=url))
    train, held = split_examples(examples, 0.3, seed=1)
    assert train and held and len(train) + len(held) == len(examples)
    assert not {e["session_id"] for e in train} & {e["session_id"] for e in held}
    repeated = [{**e, "session_id": e["session_id"] + "-again"} for e in examples]  # every task ran twice
    train, held = split_examples([*examples, *repeated], 0.3, seed=1)
    assert held and not {e["task"] for e in train} & {e["task"] for e in held}


def test_split_always_leaves_a_session_to_train_on() -> None:
    examples = [{"session_id": "a", "task": "t1"}, {"session_id": "b", "task": "t2"}]
    train, held = split_examples(examples, 0.9)
    assert len(train) == 1 and len(held) == 1


def test_set_values_are_typed() -> None:
    from atlas_learning._commands.training import parse_settings

    assert parse_settings(["learning_rate=5e-3", "max_steps=10", "lora=true", "kinds=answer,step", "name=x"]) == {
        "learning_rate": 0.005, "max_steps": 10, "lora": True, "kinds": "answer,step", "name": "x"}
    with pytest.raises(AtlasError, match="key=value"):
        parse_settings(["oops"])


def test_bad_sources_say_what_to_do(tmp_path) -> None:
    with pytest.raises(AtlasError, match="no such file"):
        load_sessions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "x", "steps": []}\nnot json\n')
    with pytest.raises(AtlasError, match=r"bad.jsonl:2 is not JSON"):
        load_sessions(bad, review_status=None)
    grpo = tmp_path / "grpo.jsonl"
    grpo.write_text('{"prompt": [], "task": "x"}\n')
    with pytest.raises(AtlasError, match="not a trace record"):
        load_sessions(grpo)
    with pytest.raises(AtlasError, match="storage.url"):
        load_sessions("approved")
    with pytest.raises(AtlasError, match="unknown example kind"):
        teacher_examples([], kinds=["nope"])


def test_runtime_records_the_teaching_reward_of_a_retry(sum_sessions) -> None:
    url, _ = sum_sessions
    records = load_sessions("approved", store_url=url)
    retried = [r for r in records if len(r["attempts"]) == 2]
    once = [r for r in records if len(r["attempts"]) == 1]
    assert all(1.0 < r["session_reward"]["breakdown"]["teaching"] <= 1.5 for r in retried)  # wrong -> right
    assert all("teaching" not in r["session_reward"]["breakdown"] for r in once)
    assert all(r["session_reward"]["breakdown"]["checks"] == {"expected_answer_check": 1.0} for r in records)
