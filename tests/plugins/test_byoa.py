"""@atlas_agent on plain classes: sync, async, dict and pydantic I/O, retries, plan/execute_step, rule-based."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

from atlas_learning import session_options
from atlas_learning.schemas import LessonChange
from atlas_learning.store import AttemptRecord, PlanRecord, SessionRecord, StepRecord
from atlas_plugins.byoa import atlas_agent, atlas_context, atlas_result
from tests.support import HeldJudge

REJECT = {"accepted": False, "guidance": "Show the arithmetic.", "reason": "bare number"}
ACCEPT = {"accepted": True, "guidance": "", "reason": "ok"}


def steps_of(supervisor, session_id):
    supervisor.drain()  # the session finishes in the background
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
    supervisor.drain()  # the session finishes in the background
    stored = supervisor.store.get(SessionRecord, atlas_result(TypedSummer).session_id)
    assert (stored.task, stored.final_answer) == ('{"numbers": [4, 5]}', '{"total":9}')
    supervisor.drain()  # the session finishes in the background
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
    supervisor.drain()  # the session finishes in the background
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
    supervisor.drain()  # the session finishes in the background
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
    supervisor.drain()  # the session finishes in the background
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
    supervisor.drain()  # the session finishes in the background
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


# ------------------------------------------------------------------------ the core decides; common agent shapes
LESSON = LessonChange(op="add", lesson="Always show the arithmetic behind a number.", applies_when="multiplying numbers")


def test_the_call_returns_before_its_session_is_judged(make_supervisor) -> None:
    import threading

    judge = HeldJudge()
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}}, supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Quick:
        def run(self, task: str) -> str:
            return "done"

    agent = Quick()
    assert agent.run("anything") == "done"  # the judge answers only once released below: waiting for it would hang
    pending = atlas_result(agent)
    assert pending.final_answer == "done" and not pending.done()
    assert threading.get_ident() not in judge.threads  # judged on the background finisher, never in the call
    judge.release()
    assert pending.reward == pytest.approx(0.9) and pending.done()  # reading a field waits for the finish


def test_overlapping_calls_on_one_instance_each_see_their_own_lessons_and_leave_none(make_supervisor) -> None:
    import threading

    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.playbook.apply("shared", [LESSON])
    both_inside = threading.Barrier(2, timeout=5)
    seen: dict[str, str] = {}

    @atlas_agent(supervisor=supervisor, learning_key="shared")
    class Agent:
        instructions = "Base."

        def run(self, task: str) -> str:
            both_inside.wait()  # the two calls overlap here
            seen[task] = self.instructions
            return "ok"

    agent = Agent()
    threads = [threading.Thread(target=agent.run, args=(task,)) for task in ("Multiply the numbers 2 and 3.", "Say hello.")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "Always show the arithmetic" in seen["Multiply the numbers 2 and 3."]
    assert seen["Say hello."] == "Base."  # no lesson applies to it, and the other call's lesson is not there
    assert agent.instructions == "Base." and "instructions" not in vars(agent)  # nothing written, nothing left


@pytest.mark.parametrize("shape", ["property", "frozen_dataclass", "pydantic", "slots"])
def test_read_only_or_frozen_instructions_still_get_the_lessons(make_supervisor, shape) -> None:
    import dataclasses

    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.playbook.apply("shapes", [LESSON])
    seen = []

    def run(self, task: str) -> str:
        seen.append(self.instructions)
        return "6"

    if shape == "property":
        cls = type("PropertyAgent", (), {"instructions": property(lambda self: "Base."), "run": run})
        make = cls
    elif shape == "frozen_dataclass":
        cls = dataclasses.make_dataclass("FrozenAgent", [("instructions", str, dataclasses.field(default="Base."))],
                                         namespace={"run": run}, frozen=True)
        make = cls
    elif shape == "pydantic":
        cls = type("PydanticAgent", (BaseModel,), {"__annotations__": {"instructions": str}, "instructions": "Base.", "run": run,
                                                    "model_config": {"frozen": True}})
        make = cls
    else:
        def init(self) -> None:
            self.instructions = "Base."
        cls = type("SlotsAgent", (), {"__slots__": ("instructions",), "__init__": init, "run": run})
        make = cls
    decorated = atlas_agent(supervisor=supervisor, learning_key="shapes")(cls)
    agent = make()
    assert agent.run("Multiply the numbers 2 and 3.") == "6"
    assert seen[0].startswith("Base.") and "Always show the arithmetic" in seen[0]
    assert agent.instructions == "Base."
    assert atlas_result(decorated).result().lessons_used  # stored with the lesson it used


def test_the_entry_methods_own_signature_is_honoured(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class ByName:
        def run(self, question: str = "What is 1 + 1?", *, verbose: bool = False) -> str:
            return f"{question} -> 2{'!' if verbose else ''}"

    agent = ByName()
    assert agent.run(question="What is 2?", verbose=True) == "What is 2? -> 2!"
    assert atlas_result(agent).result().final_answer == "What is 2? -> 2!"
    assert agent.run() == "What is 1 + 1? -> 2"  # the defaulted task
    supervisor.drain()
    assert {s.task for s in supervisor.store.list_sessions()} == {"What is 2?", "What is 1 + 1?"}
    with pytest.raises(TypeError):
        agent.run("a", "b", "c")  # arguments that do not bind: the method's own TypeError, no session

    @atlas_agent(supervisor=supervisor, learning_key="static")
    class Static:
        @staticmethod
        def run(task: str) -> str:
            return task.upper()

        @classmethod
        def other(cls, task: str) -> str:
            return cls.__name__

    assert Static.run("shout") == "SHOUT" and Static().run("again") == "AGAIN"
    assert atlas_result(Static).result().final_answer == "AGAIN"

    @atlas_agent(supervisor=supervisor, learning_key="classy", method="build")
    class Classy:
        @classmethod
        def build(cls, task: str) -> str:
            return f"{cls.__name__}: {task}"

    assert Classy.build("x") == "Classy: x" and atlas_result(Classy).result().final_answer == "Classy: x"


async def test_async_plan_and_execute_step_are_awaited_and_reviewed(make_supervisor) -> None:
    review = {"approved": True, "steps": ["find the numbers", "add them"], "concerns": []}
    supervisor = make_supervisor({"teacher": {"PlanReview": review}}, supervision={"lane": "coach"})

    @atlas_agent(supervisor=supervisor)
    class AsyncPlanner:
        async def plan(self, task: str) -> list[str]:
            return ["add them"]

        async def execute_step(self, step: str, guidance: str | None = None) -> str:
            return f"done: {step}"

        async def run(self, task: str) -> str:
            return "; ".join([await self.execute_step(step) for step in await self.plan(task)])

    assert await AsyncPlanner().run("add 2 and 3") == "done: find the numbers; done: add them"
    result = await atlas_result(AsyncPlanner)
    plans = supervisor.store.rows(PlanRecord, PlanRecord.session_id == result.session_id, order_by=PlanRecord.id)
    assert plans[0].steps == [{"step_id": 1, "description": "add them"}]  # the plan itself, not a coroutine
    assert [s.output for s in steps_of(supervisor, result.session_id)] == ["done: find the numbers", "done: add them"]
    assert len([v for v in result.verdicts if v.step_id]) == 2  # both steps validated in coach


def test_generator_entries_are_refused_clearly() -> None:
    class Streamer:
        def run(self, task: str):
            yield task

    with pytest.raises(TypeError, match="is a generator"):
        atlas_agent(Streamer)


def test_atlas_context_reaches_threads_started_in_a_copy_of_the_context(make_supervisor) -> None:
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Fanout:
        def run(self, task: str) -> str:
            with ThreadPoolExecutor(2) as pool:
                for n in (1, 2):
                    pool.submit(contextvars.copy_context().run, lambda n=n: atlas_context().tool_call("fetch", {"n": n}, output=n)).result()
                pool.submit(lambda: atlas_context().tool_call("lost")).result()  # no copy: not supervised, a no-op
            return "fetched"

    Fanout().run("fetch both")
    steps = steps_of(supervisor, atlas_result(Fanout).session_id)
    assert [s.tool_args for s in steps] == [{"n": 1}, {"n": 2}]


def test_checks_are_honoured_with_a_given_supervisor(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto", "max_retries": 1})
    answers = iter(["2", "3"])

    @atlas_agent(supervisor=supervisor, checks=[lambda ctx: 1.0 if ctx.final_answer == "3" else 0.0])
    class Checked:
        def run(self, task: str) -> str:
            return next(answers)

    assert Checked().run("1 + 2") == "3"  # the check rejected "2" even in auto, and the retry passed
    result = atlas_result(Checked).result()
    assert result.attempts == 2 and result.checks_passed is True


def test_a_decorated_subclass_of_a_decorated_class_is_supervised_once(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Base:
        def run(self, task: str) -> str:
            return "base"

    @atlas_agent(supervisor=supervisor)
    class Child(Base):
        def run(self, task: str) -> str:
            return "child+" + super().run(task)

    @atlas_agent(supervisor=supervisor)
    class Inherits(Base):
        pass

    assert Child().run("x") == "child+base"
    assert Inherits().run("y") == "base"
    supervisor.drain()
    assert sorted(s.task for s in supervisor.store.list_sessions()) == ["x", "y"]


@pytest.mark.parametrize("retry", ["guidance_only", "auto"])
def test_retry_semantics_keep_side_effects_from_running_twice(make_supervisor, retry) -> None:
    config = {"lane": "paired", "retry": retry, "side_effect_tools": ["refund"]}
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision=config)
    refunds = []

    @atlas_agent(supervisor=supervisor)
    class Refunder:
        def run(self, task: str) -> str:
            refunds.append(task)
            atlas_context().tool_call("refund", {"order": 1234}, output="refunded")
            return "Refunded order 1234."

    assert Refunder().run("Refund order 1234") == "Refunded order 1234."
    result = atlas_result(Refunder).result()
    assert refunds == ["Refund order 1234"] and result.attempts == 1 and result.accepted is False
    assert result.verdicts[0].guidance == "Show the arithmetic."  # the rejection and guidance are recorded


# ---------------------------------------------------------------------------------- shapes found in review
GUIDED = {"Verdict": [{"accepted": False, "guidance": "Double-check the arithmetic.", "reason": "wrong"}, ACCEPT]}


def test_star_args_entries_take_their_first_argument_as_the_task(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Agent:
        def __call__(self, *args, **kwargs) -> str:
            return f"{len(args)} args"

    assert Agent()("the task", "more") == "2 args"
    assert atlas_result(Agent).result().final_answer == "2 args"
    supervisor.drain()
    assert supervisor.store.list_sessions()[0].task == "the task"


def test_undecorated_subclasses_and_getattr_agents_get_the_lessons_too(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": GUIDED}, supervision={"lane": "paired"})
    seen = []

    @atlas_agent(supervisor=supervisor)
    class Base:
        instructions = "base"

        def run(self, task: str) -> str:
            seen.append(self.instructions)
            return "2"

    class Child(Base):
        instructions = "You are a child agent."

    Child().run("add 1 and 1")
    assert seen[-1].startswith("You are a child agent.") and "Double-check the arithmetic." in seen[-1]
    assert Child().instructions == "You are a child agent."

    @atlas_agent(supervisor=make_supervisor({"teacher": GUIDED}, supervision={"lane": "paired"}))
    class Proxy:
        def __init__(self) -> None:
            self._settings = {"instructions": "You are a proxy."}

        def __getattr__(self, name):
            try:
                return self.__dict__["_settings"][name]
            except KeyError:
                raise AttributeError(name) from None

        def run(self, task: str) -> str:
            seen.append(self.instructions)
            return "2"

    Proxy().run("add 1 and 1")
    assert seen[-1].startswith("You are a proxy.") and "Double-check the arithmetic." in seen[-1]


def test_lessons_given_by_the_caller_or_positional_only_are_honoured(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": GUIDED}, supervision={"lane": "paired"})

    @atlas_agent(supervisor=supervisor)
    class Positional:
        def run(self, task: str, lessons: str = "") -> str:
            return lessons

    assert Positional().run("add 1 and 1", "my own lessons") == "my own lessons"  # passed by position: kept

    @atlas_agent(supervisor=make_supervisor({"teacher": GUIDED}, supervision={"lane": "paired"}))
    class PositionalOnly:
        def run(self, task: str, lessons: str = "", /) -> str:
            return lessons

    assert "Double-check the arithmetic." in PositionalOnly().run("add 1 and 1")  # the retry got the guidance


def test_an_interrupted_agent_ends_its_session(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Interrupted:
        def run(self, task: str) -> str:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Interrupted().run("add 1 and 1")
    supervisor.drain()
    stored = supervisor.store.list_sessions()[0]
    assert stored.status == "failed" and stored.session_metadata["error"].startswith("KeyboardInterrupt")
