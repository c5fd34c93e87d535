"""The reward rules shared by run time and training, and the TRL reward functions built on them."""

from __future__ import annotations

import json

import pytest

from atlas_learning.config import AtlasConfig, ModelSettings
from atlas_learning.errors import AtlasError
from atlas_learning.models import create_model
from atlas_learning.rewards import (
    DEFAULT_EFFICIENCY_WEIGHT,
    answer_matches,
    efficiency_bonus,
    parse_verdict,
    teaching_reward,
    verdict_reward,
)
from atlas_learning.train import (
    ExpectedAnswerReward,
    JudgeReward,
    TeachingReward,
    VerdictReward,
    completion_text,
    make_rewards,
)
from tests.support import GOOD_JUDGEMENT, ScriptedRoles, default_answers

GUIDANCE = "Add the numbers."


@pytest.mark.parametrize(("answer", "expected", "matches"), [
    ("391", "391", True), ("The total is 391.", "391", True), ("391 or 392", "391", False), ("1,000", "1000", True),
    ("The capital is Paris", "Paris", True), ("Parisian", "Paris", False), ("  PARIS. ", "paris", True), ("", "x", False),
    ("values 1,2", "12", False), ("between 3-5", "5", True), ("It is \u22125", "-5", True), ("1000", "1 000", True),
    ("1", "1 000", False), ("0.1", ".1", True), ("2024-05-07", "7", True),
])
def test_answer_matches(answer: str, expected: str, matches: bool) -> None:
    assert answer_matches(answer, expected) is matches


def test_teaching_reward_four_cases() -> None:
    bonus = efficiency_bonus(GUIDANCE)
    assert 0 < bonus < DEFAULT_EFFICIENCY_WEIGHT
    assert teaching_reward(False, True, GUIDANCE) == pytest.approx(1.0 + bonus)   # wrong -> right
    assert teaching_reward(True, True, GUIDANCE) == pytest.approx(bonus)          # right -> right
    assert teaching_reward(True, False, GUIDANCE) == -1.0                         # right -> wrong
    assert teaching_reward(False, False, GUIDANCE) == 0.0                         # wrong -> wrong


def test_efficiency_bonus_prefers_short_guidance() -> None:
    assert efficiency_bonus("") == DEFAULT_EFFICIENCY_WEIGHT
    assert efficiency_bonus("word " * 200) == 0.0
    assert efficiency_bonus("a b c") > efficiency_bonus("a b c d e f g h")


def test_verdict_reward_levels() -> None:
    valid_accept = json.dumps({"accepted": True, "guidance": "", "reason": "ok"})
    assert verdict_reward(valid_accept, True) == 1.0
    assert verdict_reward(valid_accept, False) == 0.0
    assert verdict_reward('{"accepted": false, "guid', False) == 0.5  # right decision, cut-off JSON
    assert verdict_reward("looks fine to me", True) == 0.0
    assert parse_verdict("garbage").accepted is None


def test_completion_text_puts_the_prefill_back() -> None:
    prompt = [{"role": "user", "content": "q"}, {"role": "assistant", "content": '{"accepted": '}]
    assert completion_text(prompt, [{"role": "assistant", "content": "true}"}]) == '{"accepted": true}'
    assert completion_text("rendered prompt", "true}", '{"accepted": ') == '{"accepted": true}'
    assert completion_text([{"role": "user", "content": "q"}], "plain") == "plain"


def test_verdict_and_expected_answer_rewards_apply_to_their_rows_only() -> None:
    rows = dict(prompts=["p"] * 3, completions=['{"accepted": true, "guidance": "", "reason": ""}', "42", "41"],
                kind=["answer", "escalation", "escalation"], attempt_correct=[True, None, None], expected=[None, "42", "42"])
    assert VerdictReward()(**rows) == [1.0, None, None]
    assert ExpectedAnswerReward()(**rows) == [None, 1.0, 0.0]


def _student(answer: str):
    return create_model(ModelSettings(provider="scripted", options={"responses": [answer], "cycle": True}), role="student")


def test_teaching_reward_function_rolls_the_student_out() -> None:
    reject = json.dumps({"accepted": False, "guidance": GUIDANCE, "reason": "wrong"})
    accept = json.dumps({"accepted": True, "guidance": "", "reason": "ok"})
    columns = dict(prompts=["p"] * 4, kind=["answer"] * 4, task=["What is 2 + 2?"] * 4, expected=["4"] * 4)
    helped = TeachingReward(_student("4"))(completions=[reject, reject, accept, accept],
                                           attempt_correct=[False, True, True, False], **columns)
    bonus = efficiency_bonus(GUIDANCE)
    assert helped == pytest.approx([1.0 + bonus, bonus, DEFAULT_EFFICIENCY_WEIGHT, 0.0])
    unreadable = TeachingReward(_student("4"))(completions=["no idea", reject], attempt_correct=[False, False],
                                               **{k: [v[0], v[0]] if k != "kind" else ["answer", "step"] for k, v in columns.items()})
    assert unreadable == [None, None]  # an unreadable verdict, and a step row, are not scored

    class Broken:
        def generate(self, *args, **kwargs):
            raise RuntimeError("student down")

    assert TeachingReward(Broken())(completions=[reject], attempt_correct=[False], **{k: v[:1] for k, v in columns.items()}) == [None]
    hurt = TeachingReward(_student("5"))(completions=[reject], attempt_correct=[True], **{k: v[:1] for k, v in columns.items()})
    assert hurt == [-1.0]


def test_judge_reward_runs_the_runtime_judges() -> None:
    config = AtlasConfig.load({"judges": {"temperatures": [0.0]}}, environ={})
    answers = default_answers()
    reward = JudgeReward(ScriptedRoles(config, answers), config.judges)
    scores = reward(prompts=["p", "p"], completions=["Paris", "x"], kind=["escalation", "answer"], task=["Capital?", "t"])
    assert scores[1] is None
    assert scores[0] == pytest.approx(sum(GOOD_JUDGEMENT[k] * w for k, w in config.judges.weights.items()) / sum(config.judges.weights.values()))
    answers["judge_small"]["SessionJudgement"] = RuntimeError("down")
    answers["judge_large"]["SessionJudgement"] = RuntimeError("down")
    assert JudgeReward(ScriptedRoles(config, answers), config.judges)(
        prompts=["p"], completions=["Paris"], kind=["escalation"], task=["Capital?"]) == [None]


def test_make_rewards_names_and_errors() -> None:
    assert [r.__name__ for r in make_rewards(["verdict", "expected_answer"])] == ["verdict", "expected_answer"]
    with pytest.raises(AtlasError, match="unknown reward"):
        make_rewards(["vibes"])
    with pytest.raises(AtlasError, match="student model"):
        make_rewards(["teaching"])


def test_a_student_turn_is_scored_against_the_recorded_step() -> None:
    from atlas_learning.train.rewards import StudentStepReward, step_match

    call = '{"step": {"action": "read_file", "arguments": {"path": "notes.txt"}}}'
    assert step_match('{"step": {"action": "read_file", "arguments": {"path": "notes.txt", "limit": null}}}', call) == 1.0
    assert step_match('{"action": "read_file", "arguments": {"path": "todo.txt"}}', call) == 0.5  # same tool, other file
    assert step_match('{"step": {"action": "final_answer", "answer": "3"}}', call) == 0.0
    assert step_match("not json", call) == 0.0
    answer = '{"step": {"action": "final_answer", "answer": "3"}}'
    assert step_match('{"step": {"action": "final_answer", "answer": "It has 3 lines."}}', answer) == 1.0
    assert step_match('{"step": {"action": "final_answer", "answer": "4"}}', answer) == 0.5
    reward = StudentStepReward()
    rows = reward(prompts=[[], []], completions=[[{"role": "assistant", "content": call}], "x"], kind=["student", "answer"],
                  expected_step=[call, None])
    assert rows == [1.0, None]  # a teacher row is not the student's to score
