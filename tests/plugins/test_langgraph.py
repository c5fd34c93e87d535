"""with_atlas on real LangGraph graphs with fake models and real tools, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import operator
from typing import Annotated, TypedDict

import pytest
from langchain.agents import AgentState, create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from atlas_learning import session_options
from atlas_learning.background import PendingSession
from atlas_learning.schemas import LessonChange
from atlas_learning.store import (
    AttemptRecord,
    GuidanceRecord,
    ModelCallRecord,
    SessionRecord,
    StepRecord,
    TrajectoryEventRecord,
)
from atlas_plugins.langgraph import AtlasGraph, with_atlas
from atlas_plugins.langgraph._messages import INSTRUCTIONS_ID
from tests.support import ACCEPT, HeldJudge

QUESTION = "How many items are in notes/todo.txt?"


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools and remembers what it was sent."""

    seen: list = []

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        type(self).seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


@tool
def read_file(path: str) -> str:
    """Read a text file from the notes folder."""
    return {"notes/todo.txt": "- milk\n- eggs\n- bread"}.get(path, f"no such file: {path}")


@tool
def count_lines(text: str) -> int:
    """Count the lines of a text."""
    return len(text.splitlines())


def agent(*answers: AIMessage, checkpointer=None) -> CompiledStateGraph:
    """create_agent on a fake model that reads the file, counts, and answers (per attempt)."""
    ToolCallingFake.seen = []
    turns = []
    for answer in answers or (AIMessage("There are 3 items."),):
        turns += [
            AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "notes/todo.txt"}, "id": f"r{len(turns)}"}]),
            AIMessage("", tool_calls=[{"name": "count_lines", "args": {"text": "- milk\n- eggs\n- bread"}, "id": f"c{len(turns)}"}]),
            answer,
        ]
    # disable_streaming: the fake cannot stream a tool-call-only message; "messages" mode still emits whole messages
    return create_agent(ToolCallingFake(messages=iter(turns), disable_streaming=True), tools=[read_file, count_lines], system_prompt="You answer questions about notes.",
                        checkpointer=checkpointer)


def injected(request) -> str:
    """The instructions Atlas added to one model request ('' when none)."""
    return "".join(m.content for m in request if getattr(m, "id", None) == INSTRUCTIONS_ID)


def steps_of(supervisor, session_id):
    assert supervisor.drain(10)  # sessions end in the background: what the store holds once they are finished
    return supervisor.store.rows(StepRecord, StepRecord.session_id == session_id, order_by=StepRecord.step_index)


def test_create_agent_is_a_drop_in_and_every_call_is_a_step(make_supervisor) -> None:
    bare = agent().invoke({"messages": [HumanMessage(QUESTION)]})
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(agent(), supervisor=supervisor, agent_name="notes")
    assert isinstance(app, CompiledStateGraph) and isinstance(app, AtlasGraph)
    wrapped = app.invoke({"messages": [HumanMessage(QUESTION)]})
    assert wrapped.keys() == bare.keys()
    assert [(m.type, m.content) for m in wrapped["messages"]] == [(m.type, m.content) for m in bare["messages"]]
    result = app.session_result()
    assert (result.lane, result.final_answer) == ("auto", "There are 3 items.") and result.reward == pytest.approx(0.9)
    assert isinstance(result, PendingSession)  # the call did not wait for the judges: the result is read later
    steps = steps_of(supervisor, result.session_id)
    assert [(s.kind, s.tool_name) for s in steps] == [("model_call", None), ("tool_call", "read_file"), ("model_call", None),
                                                      ("tool_call", "count_lines"), ("model_call", None)]
    assert steps[1].tool_args == {"path": "notes/todo.txt"} and steps[1].output == "- milk\n- eggs\n- bread"
    assert steps[3].output == "3"
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert (session.learning_key, session.task, session.lane, session.status) == ("notes", QUESTION, "auto", "completed")
    assert len(supervisor.store.rows(ModelCallRecord, ModelCallRecord.session_id == result.session_id, ModelCallRecord.role == "student")) == 3


def test_the_graph_shows_probe_lanes_student_teacher_and_judge(make_supervisor) -> None:
    app = with_atlas(agent(), supervisor=make_supervisor())
    mermaid = app.get_graph().draw_mermaid()
    for node in ("atlas_probe", "atlas_teacher", "atlas_escalate", "atlas_judge", "model", "tools"):
        assert node in mermaid  # the student is the user's own nodes
    assert "atlas_probe -. &nbsp;run&nbsp; .-> model" in mermaid and "atlas_probe -. &nbsp;escalate&nbsp; .-> atlas_escalate" in mermaid
    assert "model -.-> atlas_teacher" in mermaid and "atlas_teacher -. &nbsp;retry&nbsp; .-> model" in mermaid
    assert "model -.-> tools" in mermaid and "atlas_judge --> __end__" in mermaid


def test_lessons_and_plan_reach_the_model_but_never_the_state(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"PlanReview": {"approved": True, "steps": ["read the file", "count the lines"], "concerns": []}}},
                                 supervision={"lane": "coach"})
    supervisor.playbook.apply("notes", [LessonChange(op="add", lesson="Count the items with count_lines, never by eye.", applies_when="how many items")])
    app = with_atlas(agent(), supervisor=supervisor, learning_key="notes")
    out = app.invoke({"messages": [HumanMessage(QUESTION)]})
    first = injected(ToolCallingFake.seen[0])
    assert "Count the items with count_lines" in first and "count the lines" in first
    assert all(getattr(m, "id", None) != INSTRUCTIONS_ID for m in out["messages"])
    assert app.session_result().lessons_used


def test_a_node_that_builds_its_own_prompt_reads_current_instructions(make_supervisor) -> None:
    from atlas_plugins.langgraph import current_instructions

    class Question(TypedDict):
        question: str
        prompt: str

    graph = StateGraph(Question)
    graph.add_node("build", lambda s: {"prompt": f"{current_instructions()}\n\nQ: {s['question']}"})
    graph.add_edge(START, "build")
    graph.add_edge("build", END)
    supervisor = make_supervisor(supervision={"lane": "paired"})
    supervisor.playbook.apply("quiz", [LessonChange(op="add", lesson="Answer with one number.", applies_when="how many items")])
    out = with_atlas(graph, supervisor=supervisor, learning_key="quiz").invoke({"question": QUESTION})
    assert "Answer with one number." in out["prompt"] and out["prompt"].endswith(QUESTION)
    assert current_instructions() == ""  # outside a supervised node there are none
    bare = graph.compile().invoke({"question": QUESTION})
    assert bare["prompt"] == f"\n\nQ: {QUESTION}"


def test_coach_validates_each_tool_call_and_guidance_reaches_the_next_model_call(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Count with count_lines instead of guessing.", "reason": "x"},
                {"accepted": True, "guidance": "", "reason": "ok"}, {"accepted": True, "guidance": "", "reason": "ok"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "coach"})
    app = with_atlas(agent(), supervisor=supervisor)
    app.invoke({"messages": [HumanMessage(QUESTION)]})
    assert "Count with count_lines instead of guessing." not in injected(ToolCallingFake.seen[0])
    assert "Count with count_lines instead of guessing." in injected(ToolCallingFake.seen[1])
    result = app.session_result()
    assert [v.accepted for v in result.verdicts] == [False, True, True]  # two tool calls, then the answer
    assert result.verdicts[0].step_id == steps_of(supervisor, result.session_id)[1].id


def test_paired_rejection_retries_with_guidance_and_keeps_only_the_accepted_attempt(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Give the number and list the items.", "reason": "vague"},
                {"accepted": True, "guidance": "", "reason": "complete"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired"})
    app = with_atlas(agent(AIMessage("Some items."), AIMessage("3 items: milk, eggs, bread.")), supervisor=supervisor)
    out = app.invoke({"messages": [HumanMessage(QUESTION)]})
    assert [m.content for m in out["messages"] if m.type == "ai" and m.content] == ["3 items: milk, eggs, bread."]
    assert [m.type for m in out["messages"]].count("human") == 1
    guidance = "Give the number and list the items."
    assert [guidance in injected(request) for request in ToolCallingFake.seen] == [False] * 3 + [True] * 3  # the whole retry
    result = app.session_result()
    assert supervisor.drain(10)
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == result.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("Some items.", False), ("3 items: milk, eggs, bread.", True)]
    assert {s.attempt for s in steps_of(supervisor, result.session_id)} == {1, 2}


class Numbers(TypedDict):
    numbers: list[int]
    cleaned: list[int]
    total: int
    report: str


def numbers_graph() -> StateGraph:
    graph = StateGraph(Numbers)
    graph.add_node("clean", lambda s: {"cleaned": [n for n in s["numbers"] if n >= 0]})
    graph.add_node("add", lambda s: {"total": sum(s["cleaned"])})
    graph.add_node("report", lambda s: {"report": f"{len(s['cleaned'])} numbers sum to {s['total']}"})
    graph.add_edge(START, "clean")
    graph.add_edge("clean", "add")
    graph.add_edge("add", "report")
    graph.add_edge("report", END)
    return graph


def test_custom_graph_without_messages_keeps_its_keys_and_nodes_become_steps(make_supervisor) -> None:
    bare = numbers_graph().compile().invoke({"numbers": [3, -1, 4]})
    supervisor = make_supervisor(supervision={"lane": "paired"})
    app = with_atlas(numbers_graph(), supervisor=supervisor, agent_name="numbers")
    assert app.invoke({"numbers": [3, -1, 4]}) == bare
    result = app.session_result()
    assert [(s.kind, s.name) for s in steps_of(supervisor, result.session_id)] == [("node", "clean"), ("node", "add"), ("node", "report")]
    assert '"report": "2 numbers sum to 7"' in result.final_answer
    assert supervisor.drain(10)
    assert supervisor.store.get(SessionRecord, result.session_id).task == '{"numbers": [3, -1, 4]}'


def test_stream_modes_and_subgraphs(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(agent(), supervisor=supervisor)
    chunks = list(app.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode=["updates", "messages", "custom", "values"], subgraphs=True))
    modes = {mode for _, mode, _ in chunks}
    assert modes == {"updates", "messages", "custom", "values"}
    top_updates = [data for ns, mode, data in chunks if mode == "updates" and not ns]
    assert [node for update in top_updates for node in update] == ["model", "tools", "model", "tools", "model"]  # the user's nodes, top level
    streamed = [data[0] for _, mode, data in chunks if mode == "messages"]
    assert streamed and all(getattr(m, "id", None) != INSTRUCTIONS_ID for m in streamed)
    assert not any("judge" in str(m.content).lower() for m in streamed)  # no supervision call in the user's stream
    custom = [data for _, mode, data in chunks if mode == "custom"]
    announced = custom[-1]["atlas_session"]  # what is known when the session ends; the rest comes in the background
    assert announced == {"session_id": app.session_result().session_id, "final_answer": "There are 3 items."}
    assert app.session_result().lane == "auto"
    assert [data for ns, mode, data in chunks if mode == "values" and not ns][-1]["messages"][-1].content == "There are 3 items."


def test_checkpointer_threads_and_a_second_turn(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(agent(AIMessage("3 items."), AIMessage("Milk, eggs and bread."), checkpointer=InMemorySaver()), supervisor=supervisor)
    config = {"configurable": {"thread_id": "t1"}}
    app.invoke({"messages": [HumanMessage(QUESTION)]}, config)
    first = app.session_result(config)
    out = app.invoke({"messages": [HumanMessage("Which items?")]}, config)
    second = app.session_result(config)
    assert [m.content for m in out["messages"] if m.type == "human"] == [QUESTION, "Which items?"]
    assert app.get_state(config).values["messages"][-1].content == "Milk, eggs and bread."
    assert first.session_id != second.session_id and second.final_answer == "Milk, eggs and bread."
    assert supervisor.drain(10)
    assert supervisor.store.get(SessionRecord, second.session_id).session_metadata["thread_id"] == "t1"


def test_escalation_to_a_human_interrupts_and_resumes(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate", "escalation": "human"})
    spy = spy_begin(supervisor)
    app = with_atlas(agent(), supervisor=supervisor, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "h1"}}
    paused = app.invoke({"messages": [HumanMessage(QUESTION)]}, config)
    question = paused["__interrupt__"][0].value["atlas_escalation"]
    assert question["task"] == QUESTION
    out = app.invoke(Command(resume="Three: milk, eggs, bread."), config)
    assert out["messages"][-1].content == "Three: milk, eggs, bread."
    result = app.session_result(config)
    assert result.lane == "escalate" and result.final_answer == "Three: milk, eggs, bread."
    assert not ToolCallingFake.seen  # the student never ran
    assert [run.session_id for run in spy.runs] == [result.session_id]  # the resumed call went on with its session
    assert supervisor.drain(10)
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert (session.status, session.final_answer) == ("completed", "Three: milk, eggs, bread.")
    [guidance] = supervisor.store.rows(GuidanceRecord, GuidanceRecord.session_id == result.session_id)
    assert (guidance.source, guidance.kind, guidance.content) == ("human", "escalation", "Three: milk, eggs, bread.")


async def test_ainvoke_and_astream(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(agent(), supervisor=supervisor)
    out = await app.ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert out["messages"][-1].content == "There are 3 items."
    assert len(steps_of(supervisor, app.session_result().session_id)) == 5
    app = with_atlas(agent(), supervisor=supervisor)
    updates = [chunk async for chunk in app.astream({"messages": [HumanMessage(QUESTION)]}, stream_mode="updates")]
    assert [next(iter(u)) for u in updates] == ["model", "tools", "model", "tools", "model"]  # as bare: no Atlas node


def test_a_plain_reducer_free_state_and_operator_reducers_survive(make_supervisor) -> None:
    class Log(TypedDict):
        events: Annotated[list[str], operator.add]

    graph = StateGraph(Log)
    graph.add_node("one", lambda s: {"events": ["one"]})
    graph.add_node("two", lambda s: {"events": ["two"]})
    graph.add_edge(START, "one")
    graph.add_edge("one", "two")
    graph.add_edge("two", END)
    app = with_atlas(graph, supervisor=make_supervisor(supervision={"lane": "auto"}))
    assert app.invoke({"events": ["start"]}) == {"events": ["start", "one", "two"]}


def test_checks_and_metadata_reach_the_session_with_a_shared_supervisor(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    def says_three(context) -> bool:
        return "3" in context.final_answer

    def per_call(context) -> float:
        return 0.5

    app = with_atlas(agent(), supervisor=supervisor, agent_name="notes", checks=[says_three])
    app.invoke({"messages": [HumanMessage(QUESTION)]},
               {"configurable": {"atlas_metadata": {"task_id": 7}, "atlas_checks": [per_call]}})
    result = app.session_result()
    assert result.reward_breakdown["checks"] == {"says_three": 1.0, "per_call": 0.5}
    assert supervisor.drain(10)
    [session] = supervisor.store.rows(SessionRecord, SessionRecord.id == result.session_id)
    assert session.session_metadata["task_id"] == 7
    assert supervisor.checks == []  # the graph's checks stay with the graph, not the shared supervisor


def test_task_family_and_learning_key_per_invocation(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    app = with_atlas(agent(*[AIMessage("There are 3 items.")] * 4), supervisor=supervisor, agent_name="notes")
    ask = {"messages": [HumanMessage(QUESTION)]}

    app.invoke(ask, {"configurable": {"atlas_task_family": "counting"}})
    app.invoke(ask, {"configurable": {"atlas_metadata": {"task_family": "listing", "task_id": 7}}})
    app.invoke(ask, {"configurable": {"atlas_task_family": "counting", "atlas_learning_key": "notes-desk"}})
    with session_options(task_family="auditing"):  # reaches the session through LangGraph's copied context
        app.invoke(ask)
    assert supervisor.drain(10)

    assert spy.identities() == [("notes", "counting"), ("notes", "listing"), ("notes-desk", "counting"), ("notes", "auditing")]
    assert spy.metadata(1)["task_id"] == 7 and "task_id" not in spy.metadata(0)


def test_a_raising_agent_ends_its_session_as_failed_and_the_error_propagates(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @tool
    def explode(path: str) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    fake = ToolCallingFake(messages=iter([AIMessage("", tool_calls=[{"name": "explode", "args": {"path": "x"}, "id": "e"}])]),
                           disable_streaming=True)
    app = with_atlas(create_agent(fake, tools=[explode]), supervisor=supervisor, agent_name="boom")
    with pytest.raises(RuntimeError, match="disk on fire"):
        app.invoke({"messages": [HumanMessage("Read x")]})
    result = app.session_result()
    assert result is not None
    assert supervisor.drain(10)
    [session] = supervisor.store.rows(SessionRecord, SessionRecord.id == result.session_id)
    assert session.status == "failed" and "disk on fire" in session.session_metadata["error"]
    assert app._atlas.sessions == {}  # nothing left running


def test_middleware_hooks_that_change_nothing_are_not_steps(make_supervisor) -> None:
    from langchain.agents.middleware import AgentMiddleware

    class Quiet(AgentMiddleware):
        def before_model(self, state, runtime):
            return None

    supervisor = make_supervisor(supervision={"lane": "auto"})
    fake = ToolCallingFake(messages=iter([AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "notes/todo.txt"}, "id": "r"}]),
                                          AIMessage("There are 3 items.")]), disable_streaming=True)
    app = with_atlas(create_agent(fake, tools=[read_file], middleware=[Quiet()]), supervisor=supervisor, agent_name="quiet")
    app.invoke({"messages": [HumanMessage(QUESTION)]})
    steps = steps_of(supervisor, app.session_result().session_id)
    assert [s.kind for s in steps] == ["model_call", "tool_call", "model_call"]


# ------------------------------------------------------------------------- the session protocol, end to end
def attempts_of(supervisor, session_id):
    assert supervisor.drain(10)
    return supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == session_id, order_by=AttemptRecord.attempt)


def events_of(supervisor, session_id) -> list[str]:
    assert supervisor.drain(10)
    rows = supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session_id, order_by=TrajectoryEventRecord.seq)
    return [row.event_type for row in rows]


REJECT = {"accepted": False, "guidance": "List the items by name.", "reason": "vague"}


def test_rejected_until_out_of_retries_the_last_answer_stands(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired", "max_retries": 1})
    app = with_atlas(agent(AIMessage("Some items."), AIMessage("A few items.")), supervisor=supervisor)
    out = app.invoke({"messages": [HumanMessage(QUESTION)]})
    assert out["messages"][-1].content == "A few items."  # no third run: the answer stands
    assert len(ToolCallingFake.seen) == 6
    result = app.session_result()
    assert (result.attempts, result.accepted, result.final_answer) == (2, False, "A few items.")
    assert [(a.answer, a.accepted) for a in attempts_of(supervisor, result.session_id)] == [("Some items.", False), ("A few items.", False)]
    assert supervisor.store.get(SessionRecord, result.session_id).status == "completed"


def test_guidance_only_keeps_the_first_answer_and_records_the_rejection(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired", "retry": "guidance_only"})
    app = with_atlas(agent(AIMessage("Some items."), AIMessage("never asked for")), supervisor=supervisor)
    out = app.invoke({"messages": [HumanMessage(QUESTION)]})
    assert out["messages"][-1].content == "Some items." and len(ToolCallingFake.seen) == 3  # one attempt
    result = app.session_result()
    [attempt] = attempts_of(supervisor, result.session_id)
    assert (attempt.answer, attempt.accepted, attempt.guidance) == ("Some items.", False, "List the items by name.")
    guidance = supervisor.store.rows(GuidanceRecord, GuidanceRecord.session_id == result.session_id)
    assert [(g.kind, g.content) for g in guidance] == [("answer", "List the items by name.")]
    assert "retry_skipped" in events_of(supervisor, result.session_id)
    assert result.attempts == 1 and supervisor.store.get(SessionRecord, result.session_id).status == "completed"


async def test_ainvoke_retries_a_rejected_answer_with_the_guidance(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Give the number and list the items.", "reason": "vague"}, ACCEPT]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired"})
    app = with_atlas(agent(AIMessage("Some items."), AIMessage("3 items: milk, eggs, bread.")), supervisor=supervisor)
    out = await app.ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert [m.content for m in out["messages"] if m.type == "ai" and m.content] == ["3 items: milk, eggs, bread."]
    assert ["Give the number" in injected(request) for request in ToolCallingFake.seen] == [False] * 3 + [True] * 3
    result = await app.session_result()
    assert (result.attempts, result.accepted) == (2, True)


async def test_ainvoke_coach_rejected_step_guidance_reaches_the_next_model_call(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Count with count_lines instead of guessing.", "reason": "x"}, ACCEPT, ACCEPT]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "coach"})
    app = with_atlas(agent(), supervisor=supervisor)
    await app.ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert ["Count with count_lines" in injected(request) for request in ToolCallingFake.seen] == [False, True, False]
    result = app.session_result()
    assert [v.accepted for v in result.verdicts] == [False, True, True]
    assert result.verdicts[0].step_id == steps_of(supervisor, result.session_id)[1].id


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
async def test_every_tool_step_is_reported_in_every_lane(make_supervisor, monkeypatch, asynchronous) -> None:
    from atlas_learning.supervisor import SupervisedRun

    reported: list[str] = []
    done, adone = SupervisedRun.tool_call_done, SupervisedRun.atool_call_done

    def spy(self, step_id):
        reported.append(step_id)
        return done(self, step_id)

    async def aspy(self, step_id):
        reported.append(step_id)
        return await adone(self, step_id)

    monkeypatch.setattr(SupervisedRun, "tool_call_done", spy if not asynchronous else None)
    monkeypatch.setattr(SupervisedRun, "atool_call_done", aspy if asynchronous else None)  # the other twin must not run
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(agent(), supervisor=supervisor)
    ask = {"messages": [HumanMessage(QUESTION)]}
    await app.ainvoke(ask) if asynchronous else app.invoke(ask)
    tool_steps = [s.id for s in steps_of(supervisor, app.session_result().session_id) if s.kind == "tool_call"]
    assert len(tool_steps) == 2 and reported == tool_steps


async def test_ainvoke_a_raising_agent_ends_its_session_as_failed(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})

    @tool
    def explode(path: str) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    fake = ToolCallingFake(messages=iter([AIMessage("", tool_calls=[{"name": "explode", "args": {"path": "x"}, "id": "e"}])]),
                           disable_streaming=True)
    app = with_atlas(create_agent(fake, tools=[explode]), supervisor=supervisor, agent_name="boom")
    with pytest.raises(RuntimeError, match="disk on fire"):
        await app.ainvoke({"messages": [HumanMessage("Read x")]})
    result = app.session_result()
    assert supervisor.drain(10)
    session = supervisor.store.get(SessionRecord, result.session_id)
    assert session.status == "failed" and "RuntimeError: disk on fire" in session.session_metadata["error"]
    assert app._atlas.sessions == {}
    assert [s.error for s in steps_of(supervisor, result.session_id) if s.kind == "tool_call"] == ["RuntimeError: disk on fire"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
async def test_the_call_does_not_wait_for_the_judges(make_supervisor, asynchronous) -> None:
    import threading

    judge = HeldJudge()  # answers only once released: a call that waited for judging would hang
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}, "judge_large": {"SessionJudgement": judge}},
                                 supervision={"lane": "auto"})
    app = with_atlas(numbers_graph(), supervisor=supervisor, agent_name="numbers")
    out = await app.ainvoke({"numbers": [3, -1, 4]}) if asynchronous else app.invoke({"numbers": [3, -1, 4]})
    pending = app.session_result()
    assert out["report"] == "2 numbers sum to 7"
    assert isinstance(pending, PendingSession) and not pending.done()
    assert threading.get_ident() not in judge.threads  # judged on the background finisher, never in the call
    assert '"report": "2 numbers sum to 7"' in pending.final_answer  # known at once
    judge.release()
    assert pending.reward == pytest.approx(0.9)  # reading the reward waits for the background finish
    assert pending.done() and supervisor.session_result(pending.session_id).reward == pytest.approx(0.9)


def test_escalation_to_the_teacher_answers_in_place_of_the_student(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"text": "There are 3 items: milk, eggs, bread."}}, supervision={"lane": "escalate"})
    app = with_atlas(agent(), supervisor=supervisor)
    updates = [next(iter(u)) for u in app.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="updates")]
    assert updates == ["atlas_escalate"] and not ToolCallingFake.seen  # the escalation graph delivers the answer
    result = app.session_result()
    assert (result.lane, result.final_answer, result.attempts) == ("escalate", "There are 3 items: milk, eggs, bread.", 0)


def test_escalation_without_a_messages_key_lets_the_graph_run(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate"})
    app = with_atlas(numbers_graph(), supervisor=supervisor, agent_name="numbers")
    assert app.invoke({"numbers": [3, -1, 4]})["report"] == "2 numbers sum to 7"  # it cannot take a text answer
    result = app.session_result()
    assert [s.kind for s in steps_of(supervisor, result.session_id)] == ["node", "node", "node"]
    assert "supervision_level" in supervisor.store.get(SessionRecord, result.session_id).session_metadata


async def test_async_escalation_to_a_human_interrupts_and_resumes(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate", "escalation": "human"})
    spy = spy_begin(supervisor)
    app = with_atlas(agent(), supervisor=supervisor, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "ah1"}}
    paused = await app.ainvoke({"messages": [HumanMessage(QUESTION)]}, config)
    assert paused["__interrupt__"][0].value["atlas_escalation"]["task"] == QUESTION
    out = await app.ainvoke(Command(resume="Three."), config)
    assert out["messages"][-1].content == "Three."
    result = app.session_result(config)
    assert (result.final_answer, len(spy.runs)) == ("Three.", 1) and not ToolCallingFake.seen


def test_a_paused_run_that_is_never_resumed_ends_as_cancelled(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate", "escalation": "human"})
    spy = spy_begin(supervisor)
    app = with_atlas(agent(), supervisor=supervisor, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "h2"}}
    app.invoke({"messages": [HumanMessage(QUESTION)]}, config)
    app.invoke({"messages": [HumanMessage("Which items?")]}, config)  # new input, not a resume: a new session
    out = app.invoke(Command(resume="Milk, eggs, bread."), config)
    assert out["messages"][-1].content == "Milk, eggs, bread."
    first, second = spy.runs
    assert supervisor.drain(10)
    abandoned = supervisor.store.get(SessionRecord, first.session_id)
    assert (abandoned.status, abandoned.session_metadata["error"]) == ("failed", "cancelled")
    assert app.session_result(config).session_id == second.session_id
    assert supervisor.store.get(SessionRecord, second.session_id).task == "Which items?"


def test_a_stream_closed_early_ends_its_session_as_cancelled(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    app = with_atlas(agent(), supervisor=supervisor)
    stream = app.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="updates")
    assert next(iter(next(stream))) == "model"
    stream.close()
    [run] = spy.runs
    assert run.ended and app._atlas.sessions == {}
    assert supervisor.drain(10)
    assert supervisor.store.get(SessionRecord, run.session_id).status == "failed"


async def test_an_async_stream_closed_early_ends_its_session_as_cancelled(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    app = with_atlas(agent(), supervisor=supervisor)
    stream = app.astream({"messages": [HumanMessage(QUESTION)]}, stream_mode="updates")
    assert next(iter(await stream.__anext__())) == "model"
    await stream.aclose()
    [run] = spy.runs
    assert run.ended and app._atlas.sessions == {}
    assert supervisor.drain(10)
    stored = supervisor.store.get(SessionRecord, run.session_id)
    assert (stored.status, stored.session_metadata["error"]) == ("failed", "cancelled")


def test_langgraph_control_flow_is_registered_once_per_supervisor(make_supervisor) -> None:
    from langgraph.errors import GraphInterrupt, ParentCommand

    supervisor = make_supervisor()
    with_atlas(agent(), supervisor=supervisor)
    with_atlas(numbers_graph(), supervisor=supervisor)
    assert GraphInterrupt in supervisor.control_flow and ParentCommand in supervisor.control_flow
    assert len(supervisor.control_flow) == len(set(supervisor.control_flow))


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_retry_on_a_thread_forks_from_the_run_input_so_the_thread_holds_only_the_accepted_attempt(make_supervisor, asynchronous) -> None:
    verdicts = [{"accepted": False, "guidance": "Give the number and list the items.", "reason": "vague"}, ACCEPT, ACCEPT]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired"})
    app = with_atlas(agent(AIMessage("Some items."), AIMessage("3 items: milk, eggs, bread."), AIMessage("Milk, eggs and bread.")),
                     supervisor=supervisor, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "retry-1"}}
    call = app.ainvoke if asynchronous else None

    async def invoke(value):
        return await call(value, config) if call else app.invoke(value, config)

    out = await invoke({"messages": [HumanMessage(QUESTION)]})
    answers = [m.content for m in out["messages"] if m.type == "ai" and m.content]
    assert answers == ["3 items: milk, eggs, bread."]  # the rejected attempt is on a branch the thread left
    state = app.get_state(config)
    assert [m.content for m in state.values["messages"] if m.type == "ai" and m.content] == answers and state.next == ()
    assert ["Give the number" in injected(r) for r in ToolCallingFake.seen] == [False] * 3 + [True] * 3
    first = app.session_result(config)
    assert (first.attempts, first.accepted) == (2, True)
    out = await invoke({"messages": [HumanMessage("Which items?")]})  # the thread goes on from the accepted attempt
    assert [m.content for m in out["messages"] if m.type == "human"] == [QUESTION, "Which items?"]
    assert [m.content for m in out["messages"] if m.type == "ai" and m.content] == ["3 items: milk, eggs, bread.", "Milk, eggs and bread."]
    assert app.session_result(config).session_id != first.session_id


def test_a_retry_applies_reducers_once_and_without_a_checkpointer_starts_from_the_same_input(make_supervisor) -> None:
    class Tally(TypedDict):
        count: Annotated[int, operator.add]
        answer: str

    runs = []

    def work(state):
        runs.append(state["count"])
        return {"count": 1, "answer": f"count is {state['count'] + 1}"}

    graph = StateGraph(Tally)
    graph.add_node("work", work)
    graph.add_edge(START, "work")
    graph.add_edge("work", END)
    verdicts = [{"accepted": False, "guidance": "Again.", "reason": "check"}, ACCEPT]
    for checkpointer in (None, InMemorySaver()):
        runs.clear()
        supervisor = make_supervisor({"teacher": {"Verdict": list(verdicts)}}, supervision={"lane": "paired"})
        app = with_atlas(graph, supervisor=supervisor, checkpointer=checkpointer, agent_name="tally")
        config = {"configurable": {"thread_id": "tally"}} if checkpointer else None
        assert app.invoke({"count": 5}, config) == {"count": 6, "answer": "count is 6"}
        assert runs == [5, 5]  # the retry ran from the same state, not from the rejected attempt's
        assert app.session_result(config).attempts == 2


def test_a_tool_that_returns_a_command_is_stored_by_its_tool_message(make_supervisor) -> None:
    class Noted(AgentState):
        note: str

    @tool
    def remember(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Remember a note."""
        return Command(update={"note": text, "messages": [ToolMessage(f"noted: {text}", tool_call_id=tool_call_id)]})

    ToolCallingFake.seen = []
    turns = [AIMessage("", tool_calls=[{"name": "remember", "args": {"text": "buy milk"}, "id": "n1"}]), AIMessage("Noted.")]
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(create_agent(ToolCallingFake(messages=iter(turns)), tools=[remember], state_schema=Noted), supervisor=supervisor)
    out = app.invoke({"messages": [HumanMessage("Remember to buy milk.")]})
    assert out["note"] == "buy milk"
    [step] = [s for s in steps_of(supervisor, app.session_result().session_id) if s.kind == "tool_call"]
    assert (step.tool_name, step.output) == ("remember", "noted: buy milk")


def test_with_durability_exit_a_rejected_answer_stands(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": REJECT}}, supervision={"lane": "paired"})
    app = with_atlas(agent(AIMessage("Some items."), AIMessage("never asked for")), supervisor=supervisor, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "exit-1"}}
    out = app.invoke({"messages": [HumanMessage(QUESTION)]}, config, durability="exit")
    assert out["messages"][-1].content == "Some items." and len(ToolCallingFake.seen) == 3  # no checkpoint to fork from
    result = app.session_result(config)
    assert (result.attempts, result.accepted) == (1, False)
    assert "retry_skipped" in events_of(supervisor, result.session_id)


def test_a_secret_in_a_node_step_is_redacted_before_the_step_is_cut(make_supervisor) -> None:
    class Doc(TypedDict):
        text: str
        summary: str

    secret = "sk-proj-" + "Z9y8X7w6" * 4
    graph = StateGraph(Doc)
    graph.add_node("summarise", lambda s: {"summary": f"{len(s['text'])} characters"})
    graph.add_edge(START, "summarise")
    graph.add_edge("summarise", END)
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(graph, supervisor=supervisor, agent_name="docs", task_from=lambda state: "summarise the document")
    app.invoke({"text": "x" * 3975 + secret})  # the step's 4,000-character cut falls inside the key
    [step] = steps_of(supervisor, app.session_result().session_id)
    stored = json.dumps(step.input)  # redacted first: the state fits the cut once the key is out, so it stays data
    assert step.kind == "node" and "[REDACTED]" in stored and secret[:12] not in stored


@pytest.mark.parametrize("wrap", ["with_atlas", "middleware"])
def test_a_model_answer_out_of_schema_is_kept_on_its_failed_step(make_supervisor, wrap: str) -> None:
    """The student's model answered out of schema twice (the repair too): the run fails as bare would, and the
    failed model-call step keeps what the model said (redacted), not only the error."""
    from atlas_learning.errors import InvalidOutputError
    from atlas_learning.models import ScriptedModel
    from atlas_plugins.langgraph import AtlasMiddleware
    from atlas_plugins.langgraph.chat_model import AtlasChatModel

    @tool
    def read_file(path: str) -> str:
        """Read a file."""
        return "- milk"

    secret = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    said = f'{{"step": {{"action": "delete_everything", "token": "{secret}"'
    model = AtlasChatModel(ScriptedModel(responses=[said, said]))
    supervisor = make_supervisor(supervision={"lane": "auto"})
    if wrap == "with_atlas":
        app = with_atlas(create_agent(model, tools=[read_file]), supervisor=supervisor, agent_name="broken")
    else:
        app = create_agent(model, tools=[read_file], middleware=[AtlasMiddleware(supervisor=supervisor, agent_name="broken")])
    with pytest.raises(InvalidOutputError):
        app.invoke({"messages": [HumanMessage("What is in todo.txt?")]})
    assert supervisor.drain(30)
    failed = [s for s in supervisor.store.rows(StepRecord) if s.kind == "model_call" and s.error]
    assert len(failed) == 1 and "InvalidOutputError" in failed[0].error
    assert "delete_everything" in (failed[0].output or "") and secret not in failed[0].output
    from atlas_learning.export import iter_records
    from atlas_learning.store import SessionFilter

    chats = list(iter_records(supervisor.store, format="messages", where=SessionFilter(review_status=None, limit=None)))
    assert chats and "delete_everything" not in json.dumps(chats)  # no turn of the chat: the training data never has it
