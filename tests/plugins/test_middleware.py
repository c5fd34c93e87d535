"""AtlasMiddleware on real create_agent agents with a fake tool-calling model and real tools, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, interrupt

from atlas_learning import session_options
from atlas_learning.background import PendingSession
from atlas_learning.schemas import LessonChange
from atlas_learning.store import (
    AttemptRecord,
    GuidanceRecord,
    ModelCallRecord,
    PlanRecord,
    SessionRecord,
    StepRecord,
)
from atlas_learning.supervisor import SupervisedRun, Supervisor
from atlas_plugins.langgraph._messages import INSTRUCTIONS_ID
from atlas_plugins.langgraph.middleware import SESSION_KEY, AtlasMiddleware
from tests.support import ACCEPT, GOOD_JUDGEMENT, HeldJudge

TASK = "How many items are in notes/todo.txt?"
FILES = {"notes/todo.txt": "- milk\n- eggs\n- bread", "notes/done.txt": "- tea"}
BASE_PROMPT = "You are a careful file agent."
LESSON = "Count only lines that start with a dash."
REJECT = {"accepted": False, "guidance": "Count the lines again; there are three.", "reason": "wrong count"}
REJECT_STEP = {"accepted": False, "guidance": "Also read notes/done.txt before answering.", "reason": "incomplete"}


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools and keeps what each call was sent (``seen``)."""

    seen: list = []

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


@tool
def read_file(path: str) -> str:
    """Read a text file from the notes folder."""
    return FILES.get(path, f"no such file: {path}")


@tool
def count_lines(text: str) -> int:
    """Count the lines of a text."""
    return len(text.splitlines())


def read(path: str = "notes/todo.txt", call_id: str = "r1") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": path}, "id": call_id}],
                     usage_metadata={"input_tokens": 40, "output_tokens": 7, "total_tokens": 47})


def answer(text: str) -> AIMessage:
    return AIMessage(text, usage_metadata={"input_tokens": 60, "output_tokens": 5, "total_tokens": 65})


def build(middleware: AtlasMiddleware, *turns: AIMessage, checkpointer=None):
    """A create_agent agent on a fresh fake model (its message iterator is single-use)."""
    model = ToolCallingFake(messages=iter(turns), seen=[])
    agent = create_agent(model, tools=[read_file, count_lines], system_prompt=BASE_PROMPT, middleware=[middleware],
                         checkpointer=checkpointer)
    return agent, model


def system_text(messages) -> str:
    assert isinstance(messages[0], SystemMessage), "the model got no system message"
    return messages[0].text


def ask(text: str = TASK) -> dict:
    return {"messages": [("user", text)]}


def assert_no_atlas_messages(output: dict, *atlas_texts: str) -> None:
    """The user's conversation holds no system message and nothing Atlas injected."""
    for message in output["messages"]:
        assert not isinstance(message, SystemMessage)
        assert message.id != INSTRUCTIONS_ID
        for text in atlas_texts:
            assert text not in message.text
    assert SESSION_KEY not in output


# ------------------------------------------------------------------------------------------------ tests
def test_session_records_each_model_and_tool_call(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, model = build(atlas, read(), answer("There are 3 items."))
    config = {"configurable": {"thread_id": "thread-1"}}

    output = agent.invoke(ask(), config)

    assert output["messages"][-1].text == "There are 3 items."
    result = atlas.last_result
    assert isinstance(result, PendingSession) and result.final_answer == "There are 3 items."
    assert atlas.result_for(config) is result and atlas.result_for("thread-1") is result
    assert result.lane == "auto" and result.reward is not None  # reading a field waits for the background finish
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert (session.task, session.agent_name, session.learning_key) == (TASK, "files", "files")
    assert (session.lane, session.status, session.final_answer) == ("auto", "completed", "There are 3 items.")
    assert session.reward == result.reward and abs(session.reward - 0.9) < 1e-6  # GOOD_JUDGEMENT everywhere
    assert session.session_metadata["thread_id"] == "thread-1"
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == result.session_id, order_by=StepRecord.step_index)
    assert [s.kind for s in steps] == ["model_call", "tool_call", "model_call"]
    assert (steps[1].tool_name, steps[1].tool_args, steps[1].output, steps[1].error) == (
        "read_file", {"path": "notes/todo.txt"}, FILES["notes/todo.txt"], None)
    assert "read_file" in steps[0].output and steps[2].output == "There are 3 items."
    assert [(s.input_tokens, s.output_tokens) for s in steps if s.kind == "model_call"] == [(40, 7), (60, 5)]
    calls = supervisor.store.rows(ModelCallRecord, ModelCallRecord.session_id == result.session_id,
                                  ModelCallRecord.role == "student")
    assert len(calls) == 2 and all(c.provider and c.purpose == "agent" for c in calls)
    assert result.usage_by_role["student"]["input_tokens"] == 100
    assert len(model.seen) == 2
    assert_no_atlas_messages(output)


def test_lessons_reach_the_system_prompt_not_the_state(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.playbook.apply("files", [LessonChange(op="add", lesson=LESSON, applies_when="how many items")])
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, model = build(atlas, read(), answer("3"))

    output = agent.invoke(ask())

    assert len(model.seen) == 2
    for sent in model.seen:
        prompt = system_text(sent)
        assert prompt.startswith(BASE_PROMPT) and LESSON in prompt
        assert sum(isinstance(m, SystemMessage) for m in sent) == 1
    assert atlas.last_result.lessons_used and atlas.result_for({"configurable": {}}) is None
    assert_no_atlas_messages(output, LESSON)


def test_coach_reviews_the_plan_validates_tool_calls_and_guidance_reaches_the_next_call(make_supervisor) -> None:
    plan = {"approved": True, "steps": ["read notes/todo.txt", "count the dashes"], "concerns": ["Ignore blank lines."]}
    supervisor = make_supervisor({"teacher": {"PlanReview": plan, "Verdict": [REJECT_STEP, ACCEPT, ACCEPT]}},
                                 supervision={"lane": "coach"})
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, model = build(atlas, read(), read("notes/done.txt", "r2"), answer("3 items to do, 1 done."))

    output = agent.invoke(ask())

    result = atlas.last_result
    assert result.lane == "coach" and result.accepted is True
    supervisor.drain()
    first, second, third = (system_text(sent) for sent in model.seen)
    assert "count the dashes" in first and "Ignore blank lines." in first and REJECT_STEP["guidance"] not in first
    assert REJECT_STEP["guidance"] in second  # the rejected step's guidance goes into the next model call
    assert REJECT_STEP["guidance"] not in third  # once
    # the teacher judged both tool calls, then the answer
    step_verdicts = [v for v in result.verdicts if v.step_id is not None]
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == result.session_id, StepRecord.kind == "tool_call",
                                  order_by=StepRecord.step_index)
    assert [v.step_id for v in step_verdicts] == [s.id for s in steps]
    assert [v.accepted for v in step_verdicts] == [False, True]
    guidance = supervisor.store.rows(GuidanceRecord, GuidanceRecord.session_id == result.session_id, GuidanceRecord.kind == "step")
    assert [(g.content, g.step_id) for g in guidance] == [(REJECT_STEP["guidance"], steps[0].id)]
    plans = supervisor.store.rows(PlanRecord, PlanRecord.session_id == result.session_id)
    assert sorted(p.kind for p in plans) == ["proposed", "reviewed"]
    assert_no_atlas_messages(output, REJECT_STEP["guidance"], "Ignore blank lines.")


def test_paired_rejection_jumps_back_to_the_model_and_the_retry_is_validated(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, model = build(atlas, read(), answer("There are 2 items."), answer("There are 3 items."))

    output = agent.invoke(ask())

    assert output["messages"][-1].text == "There are 3 items."
    assert_no_atlas_messages(output, "There are 2 items.", REJECT["guidance"])  # the rejected draft left the state
    assert len(model.seen) == 3
    retry = model.seen[2]
    assert REJECT["guidance"] in system_text(retry) and REJECT["guidance"] not in system_text(model.seen[1])
    assert retry[-1].type == "tool"  # the retry starts from the same conversation, not after the rejected draft
    assert all("There are 2 items." not in m.text for m in retry)  # the draft left; the guidance says what to fix
    result = atlas.last_result
    assert (result.lane, result.attempts, result.accepted, result.final_answer) == ("paired", 2, True, "There are 3 items.")
    supervisor.drain()
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.attempt, a.answer, a.accepted) for a in attempts] == [
        (1, "There are 2 items.", False), (2, "There are 3 items.", True)]
    assert attempts[0].guidance == REJECT["guidance"]
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.retries == 1 and session.final_answer == "There are 3 items."
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == result.session_id, order_by=StepRecord.step_index)
    assert [(s.kind, s.attempt) for s in steps] == [("model_call", 1), ("tool_call", 1), ("model_call", 1), ("model_call", 2)]


def test_a_rejection_without_retries_left_stands(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired", "max_retries": 0})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas, answer("There are 2 items."))

    output = agent.invoke(ask())

    assert output["messages"][-1].text == "There are 2 items." and len(model.seen) == 1
    assert (atlas.last_result.attempts, atlas.last_result.accepted) == (1, False)


async def test_ainvoke_supervises_with_the_async_hooks(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT_STEP, REJECT, ACCEPT]}}, supervision={"lane": "coach"})
    supervisor.playbook.apply("files", [LessonChange(op="add", lesson=LESSON, applies_when="how many items")])
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, model = build(atlas, read(), answer("2"), answer("3"))

    output = await agent.ainvoke(ask(), {"configurable": {"thread_id": "async-thread"}})

    assert output["messages"][-1].text == "3"
    assert all(LESSON in system_text(sent) for sent in model.seen)
    assert REJECT_STEP["guidance"] in system_text(model.seen[1]) and REJECT["guidance"] in system_text(model.seen[2])
    result = atlas.result_for("async-thread")
    assert result is atlas.last_result and (result.lane, result.attempts, result.accepted) == ("coach", 2, True)
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.status == "completed" and session.reward is not None
    assert_no_atlas_messages(output, LESSON, REJECT["guidance"])


def test_task_family_learning_key_metadata_and_checks_per_invocation(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, _ = build(atlas, *[answer("There are 3 items.")] * 4)

    def per_call(context) -> float:
        return 0.5

    agent.invoke(ask(), {"configurable": {"atlas_task_family": "counting", "thread_id": "t1"}})
    agent.invoke(ask(), {"configurable": {"atlas_metadata": {"task_family": "listing", "ticket": 7}, "atlas_checks": [per_call]}})
    checked = atlas.last_result
    agent.invoke(ask(), {"configurable": {"atlas_task_family": "counting", "atlas_learning_key": "files-desk"}})
    with session_options(task_family="auditing"):
        agent.invoke(ask())

    assert spy.identities() == [("files", "counting"), ("files", "listing"), ("files-desk", "counting"), ("files", "auditing")]
    assert checked.reward_breakdown["checks"] == {"per_call": 0.5}
    assert "checks" not in atlas.last_result.reward_breakdown  # one invocation's checks stay with it
    assert spy.metadata(0)["thread_id"] == "t1" and "ticket" not in spy.metadata(0)
    assert (spy.metadata(1)["ticket"], spy.metadata(1)["framework"]) == (7, "langchain")  # merged over the middleware's


async def test_per_invocation_options_reach_the_async_hooks(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files", learning_key="notes")
    agent, _ = build(atlas, answer("3"), answer("1"))

    await agent.ainvoke(ask(), {"configurable": {"atlas_task_family": "counting"}})
    await agent.ainvoke(ask(), {"configurable": {"atlas_task_family": "listing", "atlas_metadata": {"ticket": 8}}})

    assert spy.identities() == [("notes", "counting"), ("notes", "listing")]
    assert spy.metadata(1)["ticket"] == 8


def test_escalate_lane_answers_with_the_teacher_without_calling_the_model(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"text": "There are 3 items (teacher)."}}, supervision={"lane": "escalate"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas)  # no scripted turns: calling the model would fail

    output = agent.invoke(ask())

    assert [m.type for m in output["messages"]] == ["human", "ai"]
    assert output["messages"][-1].text == "There are 3 items (teacher)."
    assert model.seen == []
    result = atlas.last_result
    assert (result.lane, result.final_answer) == ("escalate", "There are 3 items (teacher).")


def test_human_escalation_through_interrupt_resumes_the_same_session(make_supervisor) -> None:
    def human(task, context):
        return interrupt({"task": task, "session_id": context["session_id"]})

    supervisor = make_supervisor(human=human, supervision={"lane": "escalate", "escalation": "human"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "needs-a-human"}}

    paused = agent.invoke(ask(), config)
    assert paused["__interrupt__"][0].value["task"] == TASK
    output = agent.invoke(Command(resume="Three items, says the human."), config)

    assert output["messages"][-1].text == "Three items, says the human." and model.seen == []
    result = atlas.result_for(config)
    assert result.final_answer == "Three items, says the human."
    assert (result.lane, result.attempts) == ("escalate", 0)  # the delivered answer is not reported as an attempt
    supervisor.drain()
    assert [s.id for s in supervisor.store.rows(SessionRecord)] == [result.session_id]  # one session, resumed


def test_an_escalation_left_for_another_task_ends_cancelled(make_supervisor) -> None:
    def human(task, context):
        return interrupt({"task": task})

    supervisor = make_supervisor(human=human, supervision={"lane": "escalate", "escalation": "human"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, _ = build(atlas, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "moves-on"}}

    assert "__interrupt__" in agent.invoke(ask(), config)
    assert "__interrupt__" in agent.invoke(ask("Another question"), config)  # the first one is left

    supervisor.drain()
    sessions = {s.task: s for s in supervisor.store.rows(SessionRecord)}
    assert (sessions[TASK].status, sessions[TASK].session_metadata["error"]) == ("failed", "cancelled")
    assert sessions["Another question"].status == "running"  # still waiting for its human

def test_concurrent_invocations_keep_their_own_sessions(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": ACCEPT}}, supervision={"lane": "coach"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    paths = [f"notes/file{i}.txt" for i in range(4)]
    results = {}

    def one(path: str) -> None:
        agent, _ = build(atlas, read(path), read(path, "r2"), answer(f"done with {path}"))
        agent.invoke(ask(f"Summarize {path}"))

    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    supervisor.drain()
    for session in supervisor.store.rows(SessionRecord):
        results[session.task] = session
    assert sorted(results) == sorted(f"Summarize {p}" for p in paths)
    for path in paths:
        session = results[f"Summarize {path}"]
        assert session.final_answer == f"done with {path}" and session.status == "completed"
        steps = supervisor.store.rows(StepRecord, StepRecord.session_id == session.id, StepRecord.kind == "tool_call")
        assert [s.tool_args for s in steps] == [{"path": path}, {"path": path}]
    assert atlas._runs == {}


async def test_concurrent_async_invocations_keep_their_own_sessions(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    paths = [f"notes/file{i}.txt" for i in range(4)]
    agents = [build(atlas, read(p), answer(f"done with {p}"))[0] for p in paths]

    await asyncio.gather(*(a.ainvoke(ask(f"Summarize {p}")) for a, p in zip(agents, paths, strict=True)))

    supervisor.drain()
    sessions = {s.task: s for s in supervisor.store.rows(SessionRecord)}
    for path in paths:
        session = sessions[f"Summarize {path}"]
        assert session.final_answer == f"done with {path}"
        steps = supervisor.store.rows(StepRecord, StepRecord.session_id == session.id, StepRecord.kind == "tool_call")
        assert [s.tool_args for s in steps] == [{"path": path}]


def test_a_tool_error_is_recorded_as_a_failed_step(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    bad_call = AIMessage("", tool_calls=[{"name": "count_lines", "args": {"txt": "x"}, "id": "bad"}])
    agent, _ = build(atlas, bad_call, answer("could not count"))

    output = agent.invoke(ask())

    assert output["messages"][-1].text == "could not count"
    supervisor.drain()
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == atlas.last_result.session_id, StepRecord.kind == "tool_call")
    assert len(steps) == 1 and steps[0].status == "error" and steps[0].error


class BrokenSupervisor(Supervisor):
    def begin(self, *args, **kwargs):
        raise RuntimeError("atlas is down")

    async def abegin(self, *args, **kwargs):
        raise RuntimeError("atlas is down")


async def test_a_broken_supervisor_never_fails_the_agent(store_url, tmp_path, caplog) -> None:
    supervisor = BrokenSupervisor({"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")}})
    try:
        atlas = AtlasMiddleware(supervisor=supervisor)
        agent, model = build(atlas, read(), answer("3"))
        assert agent.invoke(ask())["messages"][-1].text == "3"
        agent, model = build(atlas, read(), answer("3"))
        assert (await agent.ainvoke(ask()))["messages"][-1].text == "3"
        assert all(system_text(sent) == BASE_PROMPT for sent in model.seen)  # unsupervised: nothing injected
        assert atlas.last_result is None and "atlas is down" in caplog.text
    finally:
        supervisor.close()


async def test_failures_inside_a_session_are_logged_and_the_agent_goes_on(make_supervisor, monkeypatch, caplog) -> None:
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": GOOD_JUDGEMENT}}, supervision={"lane": "coach"})
    atlas = AtlasMiddleware(supervisor=supervisor)

    def explode(*args, **kwargs):
        raise RuntimeError("atlas bug")

    for name in ("record_step", "record_model_call", "start", "astart", "tool_call_done", "atool_call_done",
                 "final_answer", "afinal_answer"):
        monkeypatch.setattr(SupervisedRun, name, explode)
    monkeypatch.setattr(SupervisedRun, "instructions", property(explode))

    agent, model = build(atlas, read(), answer("3"))
    assert agent.invoke(ask())["messages"][-1].text == "3"
    agent, model = build(atlas, read(), answer("3"))
    assert (await agent.ainvoke(ask()))["messages"][-1].text == "3"
    assert system_text(model.seen[0]) == BASE_PROMPT
    assert "atlas bug" in caplog.text
    # the sessions still finished, with what could be recorded
    supervisor.drain()
    sessions = supervisor.store.rows(SessionRecord, SessionRecord.status == "completed")
    assert atlas.last_result is not None and [s.final_answer for s in sessions] == ["3", "3"]
    assert atlas._runs == {}


def test_instructions_become_the_system_message_when_the_agent_has_none(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.playbook.apply("agent", [LessonChange(op="add", lesson=LESSON, applies_when="how many items")])
    atlas = AtlasMiddleware(supervisor=supervisor)
    model = ToolCallingFake(messages=iter([answer("3")]), seen=[])
    agent = create_agent(model, tools=[read_file], middleware=[atlas])

    output = agent.invoke(ask())

    sent = model.seen[0]
    assert sent[0].id == INSTRUCTIONS_ID and LESSON in system_text(sent)
    assert_no_atlas_messages(output, LESSON)


def test_instructions_append_to_a_system_message_made_of_blocks() -> None:
    from atlas_plugins.langgraph.middleware import _append_system

    blocks = SystemMessage(content=[{"type": "text", "text": BASE_PROMPT, "cache_control": {"type": "ephemeral"}}], id="base")
    merged = _append_system(blocks, LESSON)
    assert merged.id == "base" and merged.content[0] == blocks.content[0] and merged.text.endswith(LESSON)
    assert blocks.text == BASE_PROMPT  # the original is untouched
    assert _append_system(SystemMessage(BASE_PROMPT), LESSON).text == f"{BASE_PROMPT}\n\n{LESSON}"


# ------------------------------------------------------------------------------- the protocol, lane by lane
def test_rejected_until_out_of_retries_the_last_answer_stands(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired", "max_retries": 2})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas, answer("1 item"), answer("2 items"), answer("4 items"))

    output = agent.invoke(ask())

    assert output["messages"][-1].text == "4 items" and len(model.seen) == 3
    assert REJECT["guidance"] not in system_text(model.seen[0])
    assert all(REJECT["guidance"] in system_text(sent) for sent in model.seen[1:])  # for the whole retry
    result = atlas.last_result
    assert (result.attempts, result.accepted, result.final_answer) == (3, False, "4 items")
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert (session.status, session.retries, session.final_answer) == ("completed", 2, "4 items")
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("1 item", False), ("2 items", False), ("4 items", False)]
    assert_no_atlas_messages(output, "1 item", "2 items", REJECT["guidance"])


def test_guidance_only_records_the_rejection_and_runs_once(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired", "retry": "guidance_only"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas, read(), answer("There are 2 items."), answer("never asked"))

    output = agent.invoke(ask())

    assert output["messages"][-1].text == "There are 2 items." and len(model.seen) == 2
    result = atlas.last_result
    assert (result.attempts, result.accepted) == (1, False)
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert (session.status, session.retries, session.final_answer) == ("completed", 0, "There are 2 items.")
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id)
    assert [(a.accepted, a.guidance) for a in attempts] == [(False, REJECT["guidance"])]
    guidance = supervisor.store.rows(GuidanceRecord, GuidanceRecord.session_id == result.session_id, GuidanceRecord.kind == "answer")
    assert [g.content for g in guidance] == [REJECT["guidance"]]


def test_a_side_effecting_attempt_is_not_rerun(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}},
                                 supervision={"lane": "paired", "side_effect_tools": ["read_file"]})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas, read(), answer("There are 2 items."), answer("never asked"))

    output = agent.invoke(ask())

    assert output["messages"][-1].text == "There are 2 items." and len(model.seen) == 2
    assert (atlas.last_result.attempts, atlas.last_result.accepted) == (1, False)


def test_auto_lane_checks_the_answer_and_a_failed_check_retries(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="files")
    agent, model = build(atlas, read(), answer("There are 2 items."), answer("There are 3 items."))

    def counts_three(context) -> tuple[float, str]:
        return (1.0, "three") if "3" in context.final_answer else (0.0, "the file lists three items")

    output = agent.invoke(ask(), {"configurable": {"atlas_checks": [counts_three]}})

    assert output["messages"][-1].text == "There are 3 items." and len(model.seen) == 3
    assert "the file lists three items" in system_text(model.seen[2])  # the check's guidance reached the retry
    result = atlas.last_result
    assert (result.lane, result.attempts, result.accepted, result.checks_passed) == ("auto", 2, True, True)
    supervisor.drain()
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("There are 2 items.", False), ("There are 3 items.", True)]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_answer_from_a_return_direct_tool_is_reported_and_retried(make_supervisor, asynchronous) -> None:
    @tool(return_direct=True)
    def lookup(path: str) -> str:
        """Look the answer up."""
        return "2 items"

    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    call = AIMessage("", tool_calls=[{"name": "lookup", "args": {"path": "notes/todo.txt"}, "id": "l1"}])
    model = ToolCallingFake(messages=iter([call, answer("There are 3 items.")]), seen=[])
    agent = create_agent(model, tools=[lookup], system_prompt=BASE_PROMPT, middleware=[atlas])

    output = asyncio.run(agent.ainvoke(ask())) if asynchronous else agent.invoke(ask())

    assert output["messages"][-1].text == "There are 3 items." and len(model.seen) == 2
    assert REJECT["guidance"] in system_text(model.seen[1])
    result = atlas.last_result
    assert (result.attempts, result.accepted, result.final_answer) == (2, True, "There are 3 items.")
    supervisor.drain()
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("2 items", False), ("There are 3 items.", True)]


@pytest.mark.parametrize("lane", ["auto", "paired", "coach"])
def test_bare_and_supervised_agents_give_the_same_messages_when_accepted(make_supervisor, lane) -> None:
    turns = (read(), read("notes/done.txt", "r2"), answer("3 items to do, 1 done."))
    bare_model = ToolCallingFake(messages=iter(turns), seen=[])
    bare = create_agent(bare_model, tools=[read_file, count_lines], system_prompt=BASE_PROMPT).invoke(ask())
    supervisor = make_supervisor(supervision={"lane": lane})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, model = build(atlas, *turns)

    wrapped = agent.invoke(ask())

    def shape(messages):
        return [(m.type, m.text, [c["name"] for c in getattr(m, "tool_calls", None) or []]) for m in messages]

    assert shape(wrapped["messages"]) == shape(bare["messages"])
    assert [shape(sent) for sent in model.seen] == [shape(sent) for sent in bare_model.seen]
    assert set(wrapped) == set(bare)
    assert atlas.last_result.final_answer == "3 items to do, 1 done."


# ------------------------------------------------------------------------------- failures and the background
class FailingModel(ToolCallingFake):
    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        raise RuntimeError("model is down")

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        raise RuntimeError("model is down")


@tool
def explode(path: str) -> str:
    """A tool that fails."""
    raise RuntimeError("disk on fire")


def test_an_agent_that_raises_ends_its_session_failed_and_the_error_propagates(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "coach"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    call = AIMessage("", tool_calls=[{"name": "explode", "args": {"path": "x"}, "id": "e1"}])
    model = ToolCallingFake(messages=iter([call]), seen=[])
    agent = create_agent(model, tools=[explode], middleware=[atlas])
    config = {"configurable": {"thread_id": "fails"}}

    with pytest.raises(RuntimeError, match="disk on fire"):
        agent.invoke(ask(), config)

    result = atlas.result_for(config)
    assert result is atlas.last_result and atlas._runs == {}
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.status == "failed" and "disk on fire" in session.session_metadata["error"]
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == result.session_id, StepRecord.kind == "tool_call")
    assert [(s.tool_name, s.status) for s in steps] == [("explode", "error")]


async def test_an_async_agent_whose_model_raises_ends_its_session_failed(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent = create_agent(FailingModel(messages=iter([]), seen=[]), tools=[read_file], middleware=[atlas])

    with pytest.raises(RuntimeError, match="model is down"):
        await agent.ainvoke(ask())

    result = await atlas.last_result
    assert result.reward is not None and atlas._runs == {}
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.status == "failed" and "model is down" in session.session_metadata["error"]


class HangingModel(ToolCallingFake):
    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        await asyncio.sleep(30)
        raise AssertionError("not cancelled")


async def test_a_cancelled_async_agent_ends_its_session_cancelled(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    model = HangingModel(messages=iter([]), seen=[])
    agent = create_agent(model, tools=[read_file], middleware=[atlas])

    task = asyncio.ensure_future(agent.ainvoke(ask()))
    for _ in range(200):
        if model.seen:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert atlas.last_result is not None and atlas._runs == {}
    supervisor.drain()
    session = supervisor.store.get(SessionRecord, atlas.last_result.session_id)
    assert (session.status, session.session_metadata["error"]) == ("failed", "cancelled")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_agent_call_does_not_wait_for_judging(make_supervisor, asynchronous) -> None:
    judge = HeldJudge()  # answers only once released: a call that waited for judging would hang
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}, "judge_large": {"SessionJudgement": judge}},
                                 supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    agent, _ = build(atlas, read(), answer("There are 3 items."))

    output = asyncio.run(agent.ainvoke(ask())) if asynchronous else agent.invoke(ask())

    assert output["messages"][-1].text == "There are 3 items."
    pending = atlas.last_result
    assert isinstance(pending, PendingSession) and not pending.done()
    assert threading.get_ident() not in judge.threads  # judged on the background finisher, never in the call
    assert pending.final_answer == "There are 3 items."
    judge.release()
    assert pending.result(timeout=30).reward is not None and pending.done()


def test_the_middleware_lets_langgraph_control_flow_through(make_supervisor) -> None:
    supervisor = make_supervisor()
    AtlasMiddleware(supervisor=supervisor)
    AtlasMiddleware(supervisor=supervisor)
    assert supervisor.control_flow.count(GraphBubbleUp) == 1  # added once


def test_a_structured_response_is_the_answer_reported(make_supervisor) -> None:
    from langchain.agents.structured_output import ToolStrategy
    from pydantic import BaseModel

    class Count(BaseModel):
        items: int

    supervisor = make_supervisor({"teacher": {"Verdict": [REJECT, ACCEPT]}}, supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor)
    turns = [AIMessage("", tool_calls=[{"name": "Count", "args": {"items": n}, "id": f"s{n}"}]) for n in (2, 3)]
    model = ToolCallingFake(messages=iter(turns), seen=[])
    agent = create_agent(model, tools=[read_file], system_prompt=BASE_PROMPT, middleware=[atlas],
                         response_format=ToolStrategy(Count))

    output = agent.invoke(ask())

    assert output["structured_response"] == Count(items=3) and len(model.seen) == 2
    assert REJECT["guidance"] in system_text(model.seen[1])
    result = atlas.last_result
    assert (result.attempts, result.accepted, result.final_answer) == (2, True, '{"items":3}')
    supervisor.drain()
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [('{"items":2}', False), ('{"items":3}', True)]


def test_an_invocation_stopped_outside_a_model_or_tool_call_ends_at_the_threads_next_one(make_supervisor) -> None:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.errors import GraphRecursionError

    class Looping(BaseChatModel):
        """Calls a tool forever: LangGraph's recursion limit stops it, outside any model or tool call."""

        calls: int = 0

        @property
        def _llm_type(self) -> str:
            return "looping"

        def bind_tools(self, tools, **kwargs):
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            self.calls += 1
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=[
                {"name": "lookup", "args": {"order": self.calls}, "id": f"c{self.calls}"}]))])

    @tool
    def lookup(order: int) -> str:
        """Look an order up."""
        return "shipped"

    supervisor = make_supervisor(supervision={"lane": "auto"})
    agent = create_agent(Looping(), tools=[lookup], middleware=[AtlasMiddleware(supervisor=supervisor)], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-1"}, "recursion_limit": 6}
    with pytest.raises(GraphRecursionError):
        agent.invoke({"messages": [("user", "status of order 1?")]}, config)
    with pytest.raises(GraphRecursionError):
        agent.invoke({"messages": [("user", "status of order 2?")]}, config)
    supervisor.drain()
    sessions = sorted(supervisor.store.list_sessions(), key=lambda s: s.started_at)
    assert sessions[0].status == "failed" and "abandoned" in sessions[0].session_metadata["error"]
    assert sessions[1].status == "running"  # the thread has not begun another invocation yet


def test_a_tool_objects_schema_is_converted_once_and_a_dicts_every_time(monkeypatch) -> None:
    import langchain_core.utils.function_calling as function_calling
    from langchain_core.tools import tool as make_tool

    from atlas_plugins.langgraph._messages import tool_schemas

    @make_tool
    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    converted = []
    real = function_calling.convert_to_openai_tool
    monkeypatch.setattr(function_calling, "convert_to_openai_tool", lambda t: converted.append(t) or real(t))
    offered = {"type": "function", "function": {"name": "ping", "description": "Ping.", "parameters": {"type": "object", "properties": {}}}}
    first, second = tool_schemas([lookup, offered]), tool_schemas([lookup, offered])
    assert first == second and [s["function"]["name"] for s in first] == ["lookup", "ping"]
    assert [getattr(t, "name", None) for t in converted].count("lookup") == 1  # the tool object: once
    assert sum(1 for t in converted if t is offered) == 2  # a dict can change between calls: every time
    first[0]["function"]["name"] = "changed"
    assert tool_schemas([lookup])[0]["function"]["name"] == "lookup"  # callers get copies, not the cache
