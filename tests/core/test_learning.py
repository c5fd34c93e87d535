"""The learning core's mechanisms: retrieval, withholding, the impact rule, tombstones, task families, checks in
the loop, worked examples, synthesizer gating, judge reduction, the supervision budget and Migration 2."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import inspect, text

from atlas_learning.config import PlaybookConfig
from atlas_learning.families import TaskFamilies
from atlas_learning.judges import CheckResult
from atlas_learning.playbook import (
    PlaybookRegistry,
    estimate_tokens,
    impact_verdict,
    probability_helps,
    render_examples,
    render_lessons,
    select_entries,
)
from atlas_learning.probe import load_history
from atlas_learning.retrieval import RelevanceIndex, tokens
from atlas_learning.schemas import LessonChange
from atlas_learning.store import SCHEMA_VERSION, PlaybookEntryRecord, SessionRecord, Store

from .conftest import ACCEPT

TASK = "Read notes/todo.txt and report how many items it lists"


def entry(lesson: str = "List the folder before reading any file.", *, status: str = "provisional", family: str | None = None,
          kind: str = "lesson", **stats) -> PlaybookEntryRecord:
    return PlaybookEntryRecord(learning_key="k", lesson=lesson, status=status, task_family=family, kind=kind, **stats)


def says_three(context) -> CheckResult:
    return CheckResult(1.0 if "3" in context.final_answer else 0.0, "the answer must say 3")


def calls(result, role: str) -> int:
    return result.usage_by_role.get(role, {}).get("calls", 0)


def titles(supervisor, role: str) -> list[str]:
    return [schema["title"] if schema else "text" for _, schema in supervisor.models.get(role).requests]


# ------------------------------------------------------------------------------------------- 1. retrieval
def test_tokens_keep_words_with_digits_and_drop_stopwords() -> None:
    words = tokens("Compute the sha256 of the q3 report after a 404 error, to be sure")
    assert {"sha256", "q3", "404", "compute", "report", "error"} <= set(words)
    assert not {"the", "of", "after", "a", "to", "be"} & set(words)


def test_relevance_is_zero_for_unrelated_documents_and_higher_for_related_ones() -> None:
    index = RelevanceIndex(["Compute the sha256 checksum of the archive", "Bake a chocolate cake with flour"])
    related, unrelated = index.relevance("sha256 checksum of the downloaded archive")
    assert related > 0.5 and unrelated == 0.0
    assert index.relevance("zebra giraffe") == [0.0, 0.0]
    assert RelevanceIndex([]).relevance("anything") == []


def test_select_entries_threshold_family_scope_and_boost() -> None:
    config = PlaybookConfig(relevance_threshold=0.2, family_boost=0.25)
    weak, general, other, own_weak = entry("weak one"), entry("general one"), entry("other family", family="B"), entry("own", family="A")
    relevance = {weak.id: 0.1, general.id: 0.3, other.id: 0.99, own_weak.id: 0.05}
    picked = select_entries([weak, general, other, own_weak], relevance, family="A", audience="student", kind="lesson",
                            token_budget=400, config=config)
    assert {e.id for e in picked.chosen} == {general.id, own_weak.id}  # weak under threshold; other family never
    assert picked.scores[own_weak.id] == pytest.approx(0.30)  # 0.05 + the family boost
    # with equal relevance, the same-family entry ranks first
    same, plain = entry("same family", family="A"), entry("no family")
    top = select_entries([plain, same], {same.id: 0.5, plain.id: 0.5}, family="A", audience="student", kind="lesson",
                         token_budget=400, config=config, max_count=1)
    assert [e.id for e in top.chosen] == [same.id]


def test_token_budget_counts_the_whole_rendered_block() -> None:
    lesson = entry("Quote the sha256 digest exactly as the tool printed it.")
    block = estimate_tokens(render_lessons([lesson]))
    assert estimate_tokens(f"- {lesson.lesson}") < block - 1  # the line alone would fit a budget one under the block

    def chosen(budget: int) -> list[PlaybookEntryRecord]:
        return select_entries([lesson], {lesson.id: 1.0}, family=None, audience="student", kind="lesson", token_budget=budget,
                              config=PlaybookConfig()).chosen

    assert chosen(block) == [lesson] and chosen(block - 1) == []


@pytest.mark.parametrize("kind", ["lesson", "example"])
def test_budget_count_is_the_rendered_length_of_many_entries(kind: str) -> None:
    rng = random.Random(3)
    render = render_examples if kind == "example" else render_lessons
    pool = [entry(" ".join(rng.choice(["quote", "the", "digest", "sha256", "of", "every", "file"]) for _ in range(rng.randint(3, 30))),
                  kind=kind, applies_when=rng.choice(["", "a digest is asked for"])) for _ in range(12)]
    partial = 0
    for budget in range(5, 400, 7):
        picked = select_entries(pool, {e.id: 1.0 for e in pool}, family=None, audience="student", kind=kind,
                                token_budget=budget, config=PlaybookConfig()).chosen
        assert estimate_tokens(render(picked)) <= budget
        # greedy in rank order: an entry left out did not fit next to those taken before it, so not next to all
        assert all(estimate_tokens(render([*picked, left])) > budget for left in pool if left not in picked)
        partial += 0 < len(picked) < len(pool)
    assert partial > 10  # many budgets take a part of the pool: the checks above had something to look at


# ----------------------------------------------------------------------------------------- 2. withholding
def withheld_share(candidate: PlaybookEntryRecord, config: PlaybookConfig, draws: int = 4000, seed: int = 7) -> float:
    rng = random.Random(seed)
    held = sum(bool(select_entries([candidate], {candidate.id: 1.0}, family=None, audience="student", kind="lesson", token_budget=400,
                                   config=config, draw=rng.random).withheld) for _ in range(draws))
    return held / draws


def test_balanced_trial_entry_is_withheld_at_the_trial_rate() -> None:
    config = PlaybookConfig(trial_explore_rate=0.3, explore_rate=0.0, trial_allocation="balanced")
    assert withheld_share(entry(reward_count_with=1, reward_count_without=1), config) == pytest.approx(0.3, abs=0.03)


def test_big_stick_sends_the_session_to_the_smaller_arm() -> None:
    leads_with = entry(reward_count_with=4, reward_count_without=2)
    leads_without = entry(reward_count_with=2, reward_count_without=4)
    balanced = {"max_imbalance": 2, "trial_allocation": "balanced"}
    assert withheld_share(leads_with, PlaybookConfig(trial_explore_rate=0.0, **balanced), draws=200) == 1.0
    assert withheld_share(leads_without, PlaybookConfig(trial_explore_rate=1.0, **balanced), draws=200) == 0.0


def test_adaptive_trials_withhold_less_as_the_evidence_says_the_lesson_helps() -> None:
    config = PlaybookConfig(trial_explore_rate=0.5, explore_rate=0.1, min_without=2, max_imbalance=2)
    assert config.trial_allocation == "adaptive"
    assert withheld_share(entry(), config) == pytest.approx(0.5, abs=0.03)  # nothing known: P(helps) is 0.5
    helping = entry(reward_count_with=3, reward_sum_with=3.0, reward_count_without=2, reward_sum_without=0.0)
    assert withheld_share(helping, config) == pytest.approx(0.1, abs=0.02)  # evidently helps: the floor
    hurting = entry(reward_count_with=3, reward_sum_with=0.0, reward_count_without=2, reward_sum_without=2.0)
    assert withheld_share(hurting, config) == pytest.approx(0.5, abs=0.03)  # evidently hurts: the ceiling
    # the big stick only until the "without" arm has its minimum
    assert withheld_share(entry(reward_count_with=3, reward_sum_with=3.0, reward_count_without=1), config, draws=200) == 1.0
    assert withheld_share(entry(reward_count_with=2, reward_count_without=4), config, draws=200) == 0.0


def test_active_entry_is_withheld_at_the_explore_rate() -> None:
    config = PlaybookConfig(trial_explore_rate=1.0, explore_rate=0.1)
    assert withheld_share(entry(status="active", reward_count_with=9, reward_count_without=0), config) == pytest.approx(0.1, abs=0.02)


# ---------------------------------------------------------------------------------------- 3. the impact rule
def arms(n_with: int, sum_with: float, n_without: int, sum_without: float, status: str = "provisional") -> PlaybookEntryRecord:
    return entry(status=status, reward_count_with=n_with, reward_sum_with=sum_with, reward_count_without=n_without,
                 reward_sum_without=sum_without)


def test_impact_verdict_waits_for_both_arms() -> None:
    config = PlaybookConfig(min_with=3, min_without=2)
    assert impact_verdict(arms(2, 2.0, 5, 0.0), config) is None
    assert impact_verdict(arms(5, 5.0, 1, 0.0), config) is None


def test_impact_verdict_activates_helpful_and_retires_harmful_entries() -> None:
    config = PlaybookConfig()
    status, reason = impact_verdict(arms(3, 3.0, 2, 0.0), config)
    assert status == "active" and reason.startswith("impact: probably helps") and "(n=3)" in reason
    status, reason = impact_verdict(arms(3, 0.0, 2, 2.0), config)
    assert status == "retired" and "probably harmful" in reason
    assert impact_verdict(arms(3, 0.0, 2, 2.0, status="active"), config)[0] == "retired"  # an active one turning harmful


def test_impact_verdict_retires_an_entry_with_no_effect_after_max_trial_uses() -> None:
    config = PlaybookConfig(max_trial_uses=12)
    assert impact_verdict(arms(11, 5.5, 11, 5.5), config) is None
    status, reason = impact_verdict(arms(12, 6.0, 12, 6.0), config)
    assert status == "retired" and "no effect shown after 12 uses" in reason
    assert impact_verdict(arms(12, 6.0, 12, 6.0, status="active"), config) is None  # an active entry is not on trial


def test_probability_helps_is_symmetric() -> None:
    assert probability_helps(arms(4, 2.0, 4, 2.0)) == pytest.approx(0.5)
    assert probability_helps(arms(5, 4.0, 3, 1.0)) + probability_helps(arms(3, 1.0, 5, 4.0)) == pytest.approx(1.0)
    assert probability_helps(arms(5, 4.0, 3, 1.0)) > 0.8


# ------------------------------------------------------------------------------------------ 4. tombstones
def test_retired_lessons_are_tombstones_with_reasons(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())
    lesson = "Guess the file contents quickly without reading."
    [added] = registry.apply("k", [LessonChange(op="add", lesson=lesson)], session_id="s1")
    registry.retire("k", added.entry_id, reason="bad advice")
    version = registry.version("k")
    again = registry.apply("k", [LessonChange(op="add", lesson=lesson), LessonChange(op="add", lesson="Quickly guess the file contents without reading!")],
                           session_id="s2")
    assert [c.op for c in again] == ["refused", "refused"] and all("tombstone" in c.reason for c in again)
    assert registry.version("k") == version and registry.live_entries("k") == []
    assert registry.retired_lessons("k") == [lesson]
    reasons = {h.change: h.reason for h in registry.history("k")}
    assert reasons["retire"] == "manual: bad advice" and reasons["add"]


def test_impact_changes_record_their_figures_and_confirms_are_history_rows(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())
    [added] = registry.apply("k", [LessonChange(op="add", lesson="Check the path argument before reading.")], session_id="s1")
    confirm = registry.apply("k", [LessonChange(op="add", lesson="check the path argument before reading")], session_id="s2")
    assert [(c.op, c.entry_id) for c in confirm] == [("confirm", added.entry_id)]
    assert registry.apply("k", [LessonChange(op="add", lesson="Check the path argument before reading!")], session_id="s2") == []
    assert registry.live_entries("k")[0].provenance == ["s1", "s2"]
    for _ in range(2):
        registry.record_impact("k", [], [added.entry_id], 0.0)
    for _ in range(3):
        changes = registry.record_impact("k", [added.entry_id], [], 1.0)
    assert [c.op for c in changes] == ["activate"]
    rows = [(h.change, h.reason, h.session_id) for h in registry.history("k")]
    assert [r[0] for r in rows] == ["add", "confirm", "activate"]
    assert rows[1][2] == "s2" and rows[2][1].startswith("impact: probably helps; P(helps)")


# ---------------------------------------------------------------------------------------- 5. task families
FAST = {"llm_probe": False, "warmup_sessions": 1, "auto_streak": 2}


def test_families_keep_separate_lane_histories(make_supervisor) -> None:
    supervisor = make_supervisor(supervision=FAST)
    lanes_a = [supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count").lane for _ in range(3)]
    assert lanes_a == ["coach", "paired", "auto"]
    other = supervisor.supervise("Summarise the q3 changelog in two sentences", lambda _: "ok", agent_name="files", task_family="summary")
    assert other.lane == "coach" and other.task_family == "summary"
    assert supervisor.store.get(SessionRecord, other.session_id).task_family == "summary"
    assert supervisor.begin(TASK, agent_name="files", task_family="count").lane == "auto"  # B's start did not disturb A


def test_a_family_that_fails_its_checks_in_auto_leaves_auto(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={**FAST, "max_retries": 0})
    for _ in range(2):
        supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count")
    failed = supervisor.supervise(TASK, lambda _: "2 items", agent_name="files", task_family="count", metadata={"expected_answer": "3 items"})
    assert failed.lane == "auto" and failed.checks_passed is False
    assert supervisor.begin(TASK, agent_name="files", task_family="count").lane != "auto"


def test_similar_tasks_join_one_inferred_family_and_unrelated_ones_start_another(store) -> None:
    families = TaskFamilies(store, threshold=0.25)
    first = families.infer("k", "Compute the sha256 checksum of release.tar.gz")
    assert first.new and first.family.startswith("auto:")
    families.remember("k", "Compute the sha256 checksum of release.tar.gz", first.family)
    similar = families.infer("k", "Compute the sha256 checksum of backup.zip")
    assert (similar.family, similar.new) == (first.family, False) and similar.similarity >= 0.25
    unrelated = families.infer("k", "Bake a chocolate cake with almond flour")
    assert unrelated.new and unrelated.family.startswith("auto:") and unrelated.family != first.family


def test_begin_without_a_family_infers_one(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    first = supervisor.supervise("Compute the sha256 checksum of release.tar.gz", lambda _: "abc", agent_name="h")
    second = supervisor.supervise("Compute the sha256 checksum of backup.zip", lambda _: "def", agent_name="h")
    third = supervisor.supervise("Bake a chocolate cake with almond flour", lambda _: "cake", agent_name="h")
    assert first.task_family.startswith("auto:") and first.task_family_source == "inferred"
    assert second.task_family == first.task_family and third.task_family not in (None, first.task_family)
    assert supervisor.store.get(SessionRecord, second.session_id).task_family == first.task_family


def test_load_history_reads_one_family_and_counts_failed_checks_as_zero(store) -> None:
    rows = [("count", 0.9, None, "completed"), ("count", 0.9, False, "completed"), ("count", None, None, "completed"),
            ("other", 0.1, None, "completed"), ("count", 0.9, True, "running")]
    store.add(*(SessionRecord(learning_key="k", agent_name="a", task="t", task_family=family, reward=reward, checks_passed=passed,
                              status=status, lane="paired") for family, reward, passed, status in rows))
    history = load_history(store, "k", 10, "count")
    assert sorted(history.rewards) == [0.0, 0.9] and history.finished == 3  # the unscored one counts for the warm-up only
    assert sorted(history.interventions) == [0, 1]
    assert sorted(load_history(store, "k", 10).rewards) == [0.0, 0.1, 0.9]


# ---------------------------------------------------------------------------------------- 6. checks in the loop
def test_in_paired_a_failing_check_rejects_what_the_teacher_accepts(make_supervisor) -> None:
    prompts: list[str] = []
    supervisor = make_supervisor({"teacher": {"Verdict": lambda messages: prompts.append(messages[-1]["content"]) or ACCEPT}},
                                 supervision={"lane": "paired"}, checks=[says_three])
    run = supervisor.begin(TASK, agent_name="files")
    verdict = run.validate_answer("2 items")
    assert verdict.accepted is False and "the answer must say 3" in verdict.guidance and run.can_retry
    assert "the answer must say 3" in run.instructions
    assert len(prompts) == 1 and "Verifiable checks on this answer" in prompts[0] and "FAILED" in prompts[0]
    assert run.validate_answer("3 items").accepted is True
    assert run.finish("3 items").checks_passed is True


def test_in_auto_checks_alone_reject_and_the_retry_counts_against_the_prior(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"}, checks=[says_three])
    answers = iter(["2 items", "3 items"])
    seen: list[str] = []
    result = supervisor.supervise(TASK, lambda instructions: seen.append(instructions) or next(answers), agent_name="files")
    assert result.attempts == 2 and result.checks_passed is True and [v.accepted for v in result.verdicts] == [False, True]
    assert "the answer must say 3" in seen[1]
    assert calls(result, "teacher") == 0 and supervisor.models.get("teacher").requests == []
    history = load_history(supervisor.store, "files", 10, result.task_family)
    assert history.rewards == (0.0,) and history.interventions[0] >= 1  # the student needed the check


# ------------------------------------------------------------------------------------------ 7. worked examples
def verified_session(supervisor, task: str = TASK, family: str = "count", answer: str = "3 items"):
    run = supervisor.begin(task, agent_name="files", task_family=family)
    run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt"}, output="- a\n- b\n- c")
    return run, run.finish(answer)


def test_a_verified_session_becomes_a_worked_example_for_its_family(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"}, checks=[says_three])
    _, first = verified_session(supervisor)
    examples = [e for e in supervisor.playbook.live_entries("files") if e.kind == "example"]
    assert len(examples) == 1 and examples[0].task_family == "count" and examples[0].provenance == [first.session_id]
    assert "read_file" in examples[0].lesson and "3 items" in examples[0].lesson
    run = supervisor.begin("Read notes/todo.txt and say how many items are listed", agent_name="files", task_family="count")
    assert "Worked example" in run.instructions and [e.id for e in run.examples] == [e.id for e in examples]
    run.finish("3")
    elsewhere = supervisor.begin("Read notes/todo.txt and say how many items are listed", agent_name="files", task_family="other")
    assert "Worked example" not in elsewhere.instructions  # scoped to its family
    elsewhere.finish("3")


def test_no_worked_examples_when_disabled_or_unverified(make_supervisor) -> None:
    off = make_supervisor(supervision={"lane": "auto"}, checks=[says_three], examples={"enabled": False})
    verified_session(off)
    assert [e for e in off.playbook.live_entries("files") if e.kind == "example"] == []
    failing = make_supervisor(supervision={"lane": "auto"}, checks=[says_three])
    verified_session(failing, answer="2 items")
    assert [e for e in failing.playbook.live_entries("files") if e.kind == "example"] == []


def test_a_full_family_keeps_its_examples_until_one_is_retired(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())
    texts = ["Task: count items in todo\nAnswer: 3", "Task: summarise q3 changelog\nAnswer: two lines", "Task: hash the release archive\nAnswer: abc"]
    first, second = (registry.add_example("k", t, task_family="f", session_id=None, max_per_family=2, reason="r")[0].entry_id for t in texts[:2])
    assert registry.add_example("k", texts[2], task_family="f", session_id=None, max_per_family=2, reason="r") == []  # full: no churn
    for _ in range(3):
        registry.record_impact("k", [second], [], 0.0)  # given three times, never right: retired as ineffective
    assert {e.id for e in registry.live_entries("k")} == {first}
    [added] = registry.add_example("k", texts[2], task_family="f", session_id=None, max_per_family=2, reason="r")  # the freed slot
    assert {e.id for e in registry.live_entries("k")} == {first, added.entry_id}
    assert registry.add_example("k", texts[1], task_family="f", session_id=None, max_per_family=3, reason="r") == []  # tombstone
    assert registry.add_example("k", texts[1], task_family="g", session_id=None, max_per_family=2, reason="r")  # another family


# ------------------------------------------------------------------------------------- 8. synthesizer gating
def test_clean_success_past_warmup_does_not_call_the_synthesizer(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired", "warmup_sessions": 1})
    first = supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count")
    assert calls(first, "synthesizer") == 1 and "new task family" in first.learning_note
    second = supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count")
    assert calls(second, "synthesizer") == 0 and "synthesizer not asked" in second.learning_note


def test_a_rejection_calls_the_synthesizer(make_supervisor) -> None:
    reject = {"accepted": False, "guidance": "Count the dashes.", "reason": "wrong"}
    supervisor = make_supervisor({"teacher": {"Verdict": [ACCEPT, reject, ACCEPT]}}, supervision={"lane": "paired", "warmup_sessions": 1})
    supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count")
    result = supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count")
    assert result.attempts == 2 and calls(result, "synthesizer") == 1 and "rejected work" in result.learning_note


def test_synthesize_always_always_calls_the_synthesizer(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired", "warmup_sessions": 1}, playbook={"synthesize": "always"})
    results = [supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family="count") for _ in range(2)]
    assert [calls(r, "synthesizer") for r in results] == [1, 1] and "always" in results[1].learning_note


# ------------------------------------------------------------------------------------------------ 9. judges
@pytest.mark.parametrize(("mode", "session_samples", "step_calls"), [("one_sample", 1, 0), ("skip", 0, 0), ("full", 3, 1)])
def test_judging_is_reduced_when_checks_decide(make_supervisor, mode, session_samples, step_calls) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"}, checks=[says_three], judges={"when_checks_decide": mode})
    _, result = verified_session(supervisor)
    asked = titles(supervisor, "judge_small")
    assert (asked.count("SessionJudgement"), asked.count("StepJudgements")) == (session_samples, step_calls)
    assert calls(result, "judge_large") == 0 and result.checks_passed is True
    expected = {"one_sample": pytest.approx(0.5 * 1.0 + 0.5 * 0.9), "skip": 1.0, "full": pytest.approx(0.95)}[mode]
    assert result.reward == expected


def test_adaptive_judging_skips_a_clean_pass_and_samples_once_after_a_rejection(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"}, checks=[says_three])  # when_checks_decide: adaptive
    _, clean = verified_session(supervisor)
    assert titles(supervisor, "judge_small").count("SessionJudgement") == 0 and calls(clean, "judge_small") == 0
    assert clean.reward == 1.0 and "skipped" in clean.reward_reason
    answers = iter(["2 items", "3 items"])
    retried = supervisor.supervise(TASK, lambda _: next(answers), agent_name="files", task_family="count")
    assert retried.attempts == 2 and retried.checks_passed is True
    assert titles(supervisor, "judge_small").count("SessionJudgement") == 1 and calls(retried, "judge_small") == 1


def test_an_undecided_check_keeps_full_judging(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"}, checks=[says_three, lambda c: None], judges={"when_checks_decide": "skip"})
    verified_session(supervisor)
    assert titles(supervisor, "judge_small").count("SessionJudgement") == 3


# ------------------------------------------------------------------------------------ 10. supervision budget
def test_supervision_token_budget_skips_later_calls_and_says_why(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired", "max_tokens_per_session": 1})
    run = supervisor.begin(TASK, agent_name="files")
    assert run.validate_answer("3 items").accepted is True  # the first call is within budget
    result = run.finish("3 items")
    assert calls(result, "teacher") == 1 and calls(result, "judge_small") == 0 and calls(result, "synthesizer") == 0
    assert result.reward is None and result.reward_status == "no_reward"
    note = supervisor.store.get(SessionRecord, result.session_id).session_metadata["supervision_budget"]
    assert "supervision token budget reached" in note and "max_tokens_per_session 1" in note and "judge_small" in note
    assert supervisor.store.get(SessionRecord, result.session_id).status == "completed"


# ------------------------------------------------------------------------------------------- 11. Migration 2
V2_COLUMNS = (("sessions", "task_family"), ("sessions", "checks_passed"), ("playbook_entries", "kind"),
              ("playbook_entries", "task_family"), ("playbook_versions", "reason"), ("attempts", "checks"))


def columns(engine) -> dict[str, set[str]]:
    inspector = inspect(engine)
    return {table: {c["name"] for c in inspector.get_columns(table)} for table in inspector.get_table_names()}


def test_migration_2_upgrades_a_version_1_database_in_place(store_url: str) -> None:
    """Every v2 column is dropped (ALTER TABLE DROP COLUMN works on SQLite >= 3.35 and PostgreSQL) and the
    database stamped version 1; opening it must bring back exactly the current schema."""
    with Store(store_url) as old:
        fresh = columns(old.engine)
        old.add(SessionRecord(id="a" * 32, learning_key="k", agent_name="a", task="kept through the upgrade"))
        with old.engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_sessions_key_family_started"))
            for table, column in V2_COLUMNS:
                connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            connection.execute(text("UPDATE atlas_meta SET value = '1' WHERE key = 'schema_version'"))
        assert old.schema_version() == 1 and "reason" not in columns(old.engine)["playbook_versions"]
    with Store(store_url) as upgraded:
        assert upgraded.schema_version() == SCHEMA_VERSION == 3
        assert columns(upgraded.engine) == fresh
        assert "ix_sessions_key_family_started" in {i["name"] for i in inspect(upgraded.engine).get_indexes("sessions")}
        assert upgraded.get(SessionRecord, "a" * 32).task == "kept through the upgrade"
        registry = PlaybookRegistry(upgraded)
        registry.apply("k", [LessonChange(op="add", lesson="Read the file before answering.", reason="after upgrade")])
        assert registry.live_entries("k")[0].kind == "lesson" and registry.history("k")[0].reason == "after upgrade"


def test_migration_3_adds_session_owners_and_spool_marks_in_place(store_url: str) -> None:
    with Store(store_url) as old:
        fresh = columns(old.engine)
        old.add(SessionRecord(id="b" * 32, learning_key="k", agent_name="a", task="kept through the upgrade"))
        with old.engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_sessions_status"))
            connection.execute(text("ALTER TABLE sessions DROP COLUMN owner"))
            connection.execute(text("DROP TABLE atlas_spool_marks"))
            connection.execute(text("UPDATE atlas_meta SET value = '2' WHERE key = 'schema_version'"))
    with Store(store_url) as upgraded:
        assert upgraded.schema_version() == 3
        assert columns(upgraded.engine) == fresh
        assert upgraded.get(SessionRecord, "b" * 32).owner is None


def test_family_scoped_candidates_see_fresh_impact_counts(store) -> None:
    """Regression: the view's per-family grouping once kept stale impact counts after record_impact."""
    registry = PlaybookRegistry(store, PlaybookConfig())
    [added] = registry.apply("k", [LessonChange(op="add", lesson="Quote the digest exactly as printed.", scope="family")], task_family="f")
    registry.view("k").candidates("zebra giraffe", "f")  # a session of the family whose task matches no word of it
    for _ in range(2):
        registry.record_impact("k", [added.entry_id], [], 1.0)
    candidates, relevance = registry.view("k").candidates("zebra giraffe", "f")
    assert [e.reward_count_with for e in candidates] == [2]
    chosen = select_entries(candidates, relevance, family="f", audience="student", kind="lesson", token_budget=400,
                            config=PlaybookConfig(trial_explore_rate=0.0, max_imbalance=2), draw=lambda: 0.99)
    assert [e.id for e in chosen.withheld] == [added.entry_id]  # the with-arm leads by 2: this session goes without


# ------------------------------------------------------------------------------- found in review, fixed
def test_a_refine_cannot_bring_back_a_tombstone(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())
    bad, good = registry.apply("k", [LessonChange(op="add", lesson="Guess the file contents quickly without reading."),
                                     LessonChange(op="add", lesson="List the folder before reading any file.")])
    registry.retire("k", bad.entry_id, reason="harmful")
    registry.apply("k", [LessonChange(op="refine", entry_id=good.entry_id, lesson="Guess the file contents quickly without reading.")])
    assert [e.lesson for e in registry.live_entries("k")] == ["List the folder before reading any file."]


def test_a_lesson_scoped_to_another_family_is_not_confirmed_in_its_place(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())
    registry.apply("k", [LessonChange(op="add", lesson="Quote the sha256 digest exactly as printed.")], session_id="s1", task_family="A")
    applied = registry.apply("k", [LessonChange(op="add", lesson="Quote the sha256 digest exactly as printed")], session_id="s2", task_family="B")
    assert [c.op for c in applied] == ["add"]
    assert sorted(e.task_family for e in registry.live_entries("k")) == ["A", "B"]


def test_select_entries_accepts_any_iterable() -> None:
    lesson = entry()
    picked = select_entries(iter([lesson]), {lesson.id: 1.0}, family=None, audience="student", kind="lesson", token_budget=400,
                            config=PlaybookConfig())
    assert picked.chosen == [lesson]


# ------------------------------------------------------------------------- efficacy, safe exploration, counts
def test_a_lesson_that_never_makes_the_student_right_is_retired_as_ineffective() -> None:
    failing = entry(reward_sum_with=0.0, reward_count_with=3)  # nothing withheld yet: no comparison possible
    status, reason = impact_verdict(failing, PlaybookConfig())
    assert status == "retired" and reason.startswith("impact: ineffective")
    assert impact_verdict(entry(reward_sum_with=1.0, reward_count_with=3), PlaybookConfig()) is None  # 1 of 3: undecided
    assert impact_verdict(entry(status="active", reward_sum_with=0.0, reward_count_with=3), PlaybookConfig()) is None


def test_lessons_are_withheld_only_where_the_teacher_validates(make_supervisor) -> None:
    explore = {"trial_explore_rate": 1.0, "explore_rate": 1.0}
    for lane, withheld in (("auto", False), ("paired", True)):
        supervisor = make_supervisor(supervision={"lane": lane}, playbook=explore)
        supervisor.playbook.apply("files", [LessonChange(op="add", lesson="Count the items with count_lines, never by eye.",
                                                         applies_when="how many items")])
        run = supervisor.begin(TASK, agent_name="files")
        assert bool(run.withheld) is withheld and bool(run.lessons) is not withheld
        result = run.finish("3 items")
        assert supervisor.store.get(SessionRecord, result.session_id).explored is False  # nothing says the lesson helps yet


def test_a_session_without_a_helping_lesson_is_marked_explored(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"}, playbook={"explore_rate": 1.0})
    [added] = supervisor.playbook.apply("files", [LessonChange(op="add", lesson="Count the items with count_lines, never by eye.",
                                                               applies_when="how many items")])
    for given, outcome in (([added.entry_id], 1.0), ([added.entry_id], 1.0), ([added.entry_id], 1.0), ([], 0.0), ([], 0.0)):
        supervisor.playbook.record_impact("files", given, [] if given else [added.entry_id], outcome)  # activated: it helps
    run = supervisor.begin(TASK, agent_name="files")
    assert [e.id for e in run.withheld] == [added.entry_id]
    result = run.finish("3 items")
    assert supervisor.store.get(SessionRecord, result.session_id).explored is True


def test_an_experiments_failure_is_not_lane_evidence(store) -> None:
    def add(explored: bool, interventions: int) -> None:
        store.add(SessionRecord(learning_key="k", task_family="f", task="t", status="completed", reward=0.9, lane="paired",
                                interventions=interventions, explored=explored))

    add(explored=True, interventions=1)   # a lesson was withheld and the teacher had to step in: left out
    add(explored=True, interventions=0)   # withheld, yet fine: counts
    add(explored=False, interventions=1)  # no experiment: counts with its intervention
    history = load_history(store, "k", 10, "f")
    assert history.finished == 3 and sorted(history.interventions) == [0, 1]


def test_impact_counts_through_the_recorder_land_in_the_store_and_the_cache(make_supervisor) -> None:
    supervisor = make_supervisor()
    registry = supervisor.playbook
    [added] = registry.apply("files", [LessonChange(op="add", lesson="Count the items with count_lines, never by eye.")])
    registry.view("files")  # cached
    for outcome in (1.0, 0.0):
        assert registry.record_impact("files", [added.entry_id], [], outcome, recorder=supervisor.recorder) == []
    registry.record_impact("files", [], [added.entry_id], 0.5, recorder=supervisor.recorder)
    [cached] = registry.view("files").get([added.entry_id])
    assert (cached.uses, cached.reward_count_with, cached.reward_sum_with, cached.reward_count_without) == (2, 2, 1.0, 1)
    assert supervisor.recorder.flush()
    stored = supervisor.store.get(PlaybookEntryRecord, added.entry_id)
    assert (stored.uses, stored.reward_count_with, stored.reward_sum_with, stored.reward_sum_without) == (2, 2, 1.0, 0.5)


def test_dashes_between_letters_and_digits_do_not_split_a_word() -> None:
    assert "sha256" in tokens("Verify the SHA-256 digest") and "crc32" in tokens("the CRC-32 of it")
    assert {"well", "known"} <= set(tokens("a well-known tool"))


def test_lessons_and_examples_together_fit_the_injection_budget(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"}, playbook={"inject_token_budget": 60})
    registry = supervisor.playbook
    registry.apply("files", [LessonChange(op="add", lesson="Count the items with count_lines, never by eye.")], task_family="count")
    registry.add_example("files", f"Task: {TASK}\n- read_file(notes/todo.txt) -> - a\n- b\n- c\nAnswer: 3 items", task_family="count",
                         session_id=None, max_per_family=3, reason="r")
    run = supervisor.begin(TASK, agent_name="files", task_family="count")
    assert run.lessons and not run.examples and estimate_tokens(run.instructions) <= 60  # no room left for the example
    roomy = make_supervisor(supervision={"lane": "paired"}, playbook={"inject_token_budget": 400})
    roomy_run = roomy.begin(TASK, agent_name="files", task_family="count")
    assert roomy_run.lessons and roomy_run.examples and "Worked example" in roomy_run.instructions


def test_inferred_family_names_and_worked_examples_hold_no_secrets(make_supervisor) -> None:
    secret = "ghp_" + "a1B2c3D4e5F6g7H8i9J0" * 2
    supervisor = make_supervisor(supervision={"lane": "paired"})
    task = f"Rotate the deploy token {secret} and report how many items the todo list has " + "x" * 290
    result = supervisor.supervise(task, lambda _: f"3 items; old token {secret}", agent_name="files", checks=[says_three])
    assert secret not in (result.task_family or "") and "ghp_" not in (result.task_family or "")
    examples = [e for e in supervisor.store.rows(PlaybookEntryRecord) if e.kind == "example"]
    assert examples and all("ghp_" not in e.lesson for e in examples)  # redacted before the example was cut


def test_a_long_family_name_keeps_its_history(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"llm_probe": False, "warmup_sessions": 1, "auto_streak": 1})
    family = "f" * 300
    lanes = [supervisor.supervise(TASK, lambda _: "3 items", agent_name="files", task_family=family).lane for _ in range(3)]
    assert lanes[0] == "coach" and lanes[-1] != "coach"


def test_a_lesson_retired_to_make_room_is_no_tombstone(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig(total_token_budget=100))
    long = [LessonChange(op="add", lesson=" ".join(f"{topic}{j}" for j in range(12))) for topic in ("spreadsheets", "archives", "symlinks", "manifests", "backups")]
    evicted = [c for c in registry.apply("k", long) if c.op == "retire"]
    assert evicted and evicted[0].reason == "playbook over its token budget"
    registry.apply("k", [LessonChange(op="retire", entry_id=e.id) for e in registry.live_entries("k")])  # make room again
    again = registry.apply("k", [LessonChange(op="add", lesson=evicted[0].lesson)])
    assert [c.op for c in again] == ["add"]


def test_entries_read_in_a_fresh_process(store_url: str) -> None:
    import subprocess
    import sys

    PlaybookRegistry(Store(store_url)).apply("k", [LessonChange(op="add", lesson="Read the file before answering it.")])
    code = ("import sys; from atlas_learning.store import Store; from atlas_learning.playbook import PlaybookRegistry; "
            "print(PlaybookRegistry(Store(sys.argv[1])).live_entries('k')[0].lesson)")
    done = subprocess.run([sys.executable, "-c", code, store_url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Read the file before answering it."


def test_the_playbook_view_trusts_its_version_for_view_cache_s_and_this_process_s_changes_show_at_once(store) -> None:
    ours = PlaybookRegistry(store, PlaybookConfig(), view_cache_s=60)
    theirs = PlaybookRegistry(store, PlaybookConfig())  # another process on the same store
    [mine] = ours.apply("files", [LessonChange(op="add", lesson="Count the items with count_lines, never by eye.")])
    assert [e.id for e in ours.view("files").entries] == [mine.entry_id]
    [other] = theirs.apply("files", [LessonChange(op="add", lesson="Quote the file path exactly as given.")])
    assert [e.id for e in ours.view("files").entries] == [mine.entry_id]  # within view_cache_s: not read again
    [third] = ours.apply("files", [LessonChange(op="add", lesson="Report the count as a number, not a word.")])
    assert {e.id for e in ours.view("files").entries} == {mine.entry_id, other.entry_id, third.entry_id}  # own change: read
    assert {e.id for e in PlaybookRegistry(store, PlaybookConfig()).view("files").entries} == {mine.entry_id, other.entry_id, third.entry_id}
