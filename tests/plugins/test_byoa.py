"""@atlas_agent on plain classes: sync, async, dict and pydantic I/O, retries, plan/execute_step, rule-based."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

from atlas_learning import session_options
from atlas_learning.schemas import LessonChange
from atlas_learning.store import AttemptRecord, PlanRecord, SessionRecord, StepRecord
from atlas_plugins.byoa import atlas_agent, atlas_context, atlas_result

REJECT = {"accepted": False, "guidance": "Show the arithmetic.", "reason": "bare number"}
ACCEPT = {"accepted": True, "guidance": "", "reason": "ok"}


def steps_of(supervisor, session_id):
    return supervisor.store.rows(StepRecord, StepRecord.session_id == session_id, order_by=StepRecord.step_index)


def test_sync_agent_keeps_its_type_and_reports_its_own_tools(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor, learning_key="math")
    class Adder:
        """Adds numbers with its own tool."""

        def __init__(self, offset: int = 0) -> None:
            self.offset = offset

        def run(self, task: str) -> str:
            numbers = [int(t) for t in task.split() if t.isdigit()]
            total = sum(numbers) + self.offset
            atlas_context().tool_call("add", {"numbers": numbers}, output=total)
            atlas_context().model_call("tiny-model", input_tokens=12, output_tokens=3)
            return f"The sum is {total}."

    agent = Adder(offset=1)
    assert isinstance(agent, Adder) and Adder.__doc__ == "Adds numbers with its own tool." and Adder.run.__name__ == "run"
    assert agent.run("add 2 and 3") == "The sum is 6."
    result = atlas_result(agent)
    assert (result.lane, result.learning_key, result.final_answer) == ("auto", "math", "The sum is 6.")
    steps = steps_of(supervisor, result.session_id)
    assert [(s.kind, s.tool_name) for s in steps] == [("tool_call", "add"), ("model_call", None)]
    assert steps[0].tool_args == {"numbers": [2, 3]} and steps[0].output == "6"
    assert result.usage_by_role["student"]["input_tokens"] == 12


async def test_async_agent(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})

    @atlas_agent(supervisor=supervisor)
    class Doubler:
        async def run(self, task: str, guidance: str | None = None) -> str:
            return "2 * 21 = 42" if guidance else "42"

    agent = Doubler()
    assert await agent.run("double 21") == "2 * 21 = 42"
    result = atlas_result(agent)
    assert result.attempts == 2 and result.accepted is True


def test_session_options_set_the_task_family_and_key_per_call(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)

    @atlas_agent(supervisor=supervisor)
    class Calculator:
        def run(self, task: str) -> str:
            return "5"

    agent = Calculator()
    with session_options(learning_key="math", metadata={"team": "numbers"}):
        with session_options(task_family="addition", metadata={"ticket": 7}):
            assert agent.run("add 2 and 3") == "5"
        with session_options(task_family="subtraction"):
            agent.run("subtract 3 from 8")
    agent.run("add 1 and 4")  # outside any block: the decorator's defaults again

    assert spy.identities()[:2] == [("math", "addition"), ("math", "subtraction")]
    assert spy.runs[2].learning_key == "Calculator" and spy.runs[2].task_family != "subtraction"
    assert (spy.metadata(0)["team"], spy.metadata(0)["ticket"]) == ("numbers", 7)
    assert spy.metadata(1)["team"] == "numbers" and "ticket" not in spy.metadata(1) and "team" not in spy.metadata(2)
    assert atlas_result(agent).session_id == spy.runs[2].session_id


async def test_session_options_reach_an_async_agent(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)

    @atlas_agent(supervisor=supervisor, learning_key="math")
    class Doubler:
        async def run(self, task: str) -> str:
            return "42"

    agent = Doubler()
    with session_options(task_family="doubling"):
        await agent.run("double 21")
    with session_options(task_family="halving"):
        await agent.run("halve 84")

    assert spy.identities() == [("math", "doubling"), ("math", "halving")]


def test_dict_in_dict_out_and_pydantic_out(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})

    class Total(BaseModel):
        total: int

    @atlas_agent(supervisor=supervisor, method="solve")
    class Summer:
        def solve(self, task: dict) -> dict:
            return {"total": sum(task["numbers"])}

    @atlas_agent(supervisor=supervisor)
    class TypedSummer:
        def __call__(self, task: dict) -> Total:
            return Total(total=sum(task["numbers"]))

    assert Summer().solve({"numbers": [1, 2]}) == {"total": 3}
    typed = TypedSummer()({"numbers": [4, 5]})
    assert isinstance(typed, Total) and typed.total == 9
    stored = supervisor.store.get(SessionRecord, atlas_result(TypedSummer).session_id)
    assert (stored.task, stored.final_answer) == ('{"numbers": [4, 5]}', '{"total":9}')
    assert supervisor.store.get(SessionRecord, atlas_result(Summer).session_id).final_answer == '{"total": 3}'


def test_rejected_answer_is_retried_with_guidance_through_the_guidance_parameter(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    seen = []

    @atlas_agent(supervisor=supervisor)
    class Solver:
        def run(self, task: str, guidance: str | None = None) -> str:
            seen.append(guidance)
            return "17 * 3 = 51" if guidance else "51"

    assert Solver().run("What is 17 * 3?") == "17 * 3 = 51"
    assert seen == [None, "Show the arithmetic."]
    result = atlas_result(Solver)
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("51", False), ("17 * 3 = 51", True)]


def test_lessons_and_guidance_through_the_instructions_attribute(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    supervisor.playbook.apply("solver", [LessonChange(op="add", lesson="Always show the arithmetic behind a number.", applies_when="multiplying numbers")])
    prompts = []

    @atlas_agent(supervisor=supervisor, learning_key="solver")
    class PromptedSolver:
        def __init__(self) -> None:
            self.instructions = "You solve arithmetic."

        def run(self, task: str) -> str:
            prompts.append(self.instructions)
            return "51" if len(prompts) == 1 else "17 * 3 = 51"

    agent = PromptedSolver()
    agent.run("Multiply the numbers 17 and 3.")
    assert prompts[0].startswith("You solve arithmetic.") and "Always show the arithmetic" in prompts[0]
    assert "Show the arithmetic." in prompts[1]
    assert agent.instructions == "You solve arithmetic."  # restored after the call


def test_plan_and_execute_step_are_reviewed_and_validated_in_coach(make_supervisor) -> None:
    review = {"approved": False, "steps": ["find the numbers", "add them", "state the total"], "concerns": ["ignore words"]}
    verdicts = [ACCEPT, {"accepted": False, "guidance": "Use integers, not words.", "reason": "x"}, ACCEPT, ACCEPT]
    supervisor = make_supervisor({"teacher": {"PlanReview": review, "Verdict": verdicts}}, supervision={"lane": "coach"})
    calls = []

    @atlas_agent(supervisor=supervisor)
    class Planner:
        def plan(self, task: str) -> list[str]:
            return ["add them"]

        def execute_step(self, step: str, guidance: str | None = None) -> str:
            calls.append((step, guidance))
            return f"done: {step}"

        def run(self, task: str) -> str:
            return "; ".join(self.execute_step(step) for step in self.plan(task))

    answer = Planner().run("add 2 and 3")
    assert answer == "done: find the numbers; done: add them; done: state the total"
    assert calls == [("find the numbers", None), ("add them", None), ("state the total", "Use integers, not words.")]
    result = atlas_result(Planner)
    plans = supervisor.store.rows(PlanRecord, PlanRecord.session_id == result.session_id, order_by=PlanRecord.id)
    assert [p.kind for p in plans] == ["proposed", "reviewed"] and plans[0].steps[0]["description"] == "add them"
    assert [s.name for s in steps_of(supervisor, result.session_id)] == ["execute_step"] * 3
    assert [v.accepted for v in result.verdicts] == [True, False, True, True]


def test_coach_without_plan_steps_is_answer_level_and_says_why(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "coach"})

    @atlas_agent(supervisor=supervisor)
    class Plain:
        def run(self, task: str) -> str:
            return "ok"

    Plain().run("anything")
    stored = supervisor.store.get(SessionRecord, atlas_result(Plain).session_id)
    assert "has no plan() and execute_step()" in stored.session_metadata["supervision_level"]


def test_rule_based_agent_with_no_model_at_all(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})

    @atlas_agent(supervisor=supervisor, learning_key="router")
    class KeywordRouter:
        """Routes tickets by keyword: no LLM anywhere."""

        rules = {"refund": "billing", "password": "accounts"}

        def run(self, task: str) -> str:
            for keyword, team in self.rules.items():
                if keyword in task.lower():
                    atlas_context().step("match", input=keyword, output=team)
                    return team
            return "general"

    assert KeywordRouter().run("I want a refund") == "billing"
    result = atlas_result(KeywordRouter)
    assert result.reward is not None and [s.name for s in steps_of(supervisor, result.session_id)] == ["match"]
    assert "student" not in result.usage_by_role


def test_escalation_lets_the_teacher_answer_for_text_agents(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate"})

    @atlas_agent(supervisor=supervisor)
    class Hard:
        def run(self, task: str) -> str:
            raise AssertionError("the student must not run")

    assert Hard().run("prove it") == "teacher's answer"


def test_agent_errors_end_the_session_and_propagate(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Broken:
        def run(self, task: str) -> str:
            raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        Broken().run("x")
    stored = supervisor.store.list_sessions()[0]
    assert stored.status == "failed" and stored.session_metadata["error"] == "ValueError: bad input"


def test_atlas_failing_never_stops_the_agent(make_supervisor, caplog) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.begin = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("atlas is broken"))

    @atlas_agent(supervisor=supervisor)
    class Fine:
        def run(self, task: str) -> str:
            atlas_context().tool_call("noop")  # a no-op outside a session
            return "still works"

    with caplog.at_level(logging.ERROR):
        assert Fine().run("x") == "still works"
    assert "running unsupervised" in caplog.text


def test_unsupervised_context_is_a_no_op() -> None:
    context = atlas_context()
    assert not context.supervised and context.tool_call("x") is None and context.instructions == ""


def test_bad_targets_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="has no go\\(\\) method"):
        atlas_agent(method="go")(type("NoGo", (), {}))
    with pytest.raises(TypeError, match="decorates a class"):
        atlas_agent(lambda task: task)
