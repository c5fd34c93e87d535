"""AtlasMiddleware on real create_agent agents with a fake tool-calling model and real tools, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt

from atlas_learning import session_options
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
from tests.support import ACCEPT, GOOD_JUDGEMENT

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
    assert result is not None and atlas.result_for(config) is result and atlas.result_for("thread-1") is result
    assert result.lane == "auto" and result.reward is not None
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
    assert REJECT["guidance"] in system_text(retry) and "There are 2 items." in system_text(retry)
    assert retry[-1].type == "tool"  # the retry starts from the same conversation, not after the rejected draft
    result = atlas.last_result
    assert (result.lane, result.attempts, result.accepted, result.final_answer) == ("paired", 2, True, "There are 3 items.")
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
    assert [s.id for s in supervisor.store.rows(SessionRecord)] == [result.session_id]  # one session, resumed


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

    for name in ("record_step", "record_model_call", "validate_step", "avalidate_step", "validate_answer",
                 "avalidate_answer"):
        monkeypatch.setattr(SupervisedRun, name, explode)
    monkeypatch.setattr(SupervisedRun, "instructions", property(explode))

    agent, model = build(atlas, read(), answer("3"))
    assert agent.invoke(ask())["messages"][-1].text == "3"
    agent, model = build(atlas, read(), answer("3"))
    assert (await agent.ainvoke(ask()))["messages"][-1].text == "3"
    assert system_text(model.seen[0]) == BASE_PROMPT
    assert "atlas bug" in caplog.text
    # the sessions still finished, with what could be recorded
    assert atlas.last_result is not None and len(supervisor.store.rows(SessionRecord, SessionRecord.status == "completed")) == 2
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
