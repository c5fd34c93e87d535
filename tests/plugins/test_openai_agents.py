"""with_atlas on real OpenAI Agents SDK agents (real function tools, real handoffs) driven by a scripted
``agents.Model``, on SQLite and PostgreSQL; plus one run through the SDK's own OpenAI Responses model, replayed
from a hand-written cassette."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import vcr
from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    Model,
    ModelResponse,
    OutputGuardrailTripwireTriggered,
    RunConfig,
    RunHooks,
    Runner,
    Usage,
    function_tool,
    input_guardrail,
    output_guardrail,
)
from agents.run_config import ModelInputData
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from pydantic import BaseModel
from vcr.request import Request

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
from atlas_learning.supervisor import SupervisedRun, Supervisor
from atlas_plugins.openai_agents import AtlasRunner, with_atlas
from tests.support import GOOD_JUDGEMENT, HeldJudge, local_agents_tracing

QUESTION = "Where is my order A1?"
ANSWER = "Order A1 shipped on May 2."
CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"


@pytest.fixture(autouse=True, scope="module")
def local_tracing():
    """Tracing on, with no processor but the one Atlas adds: the SDK's default exporter never tries the network."""
    yield from local_agents_tracing()


# ------------------------------------------------------------------------------------------ the fake model
def message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(id=f"msg_{abs(hash(text))}", type="message", role="assistant", status="completed",
                                 content=[ResponseOutputText(type="output_text", text=text, annotations=[])])


def call(name: str, arguments: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(id=f"fc_{call_id}", call_id=call_id, type="function_call", name=name,
                                    arguments=json.dumps(arguments))


class ScriptModel(Model):
    """An ``agents.Model`` that answers from a script (a text, an output item, or an exception to raise) and
    remembers what each call was sent: the instructions and the input items."""

    def __init__(self, name: str, turns: list[Any]) -> None:
        self.model = name
        self.turns = list(turns)
        self.calls: list[dict[str, Any]] = []

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, *,
                           previous_response_id=None, conversation_id=None, prompt=None) -> ModelResponse:
        self.calls.append({"instructions": system_instructions, "input": copy.deepcopy(input)})
        turn = self.turns.pop(0)
        if isinstance(turn, BaseException):
            raise turn
        n = len(self.calls)
        return ModelResponse(output=[message(turn) if isinstance(turn, str) else turn],
                             usage=Usage(requests=1, input_tokens=100 + n, output_tokens=10 + n, total_tokens=110 + 2 * n),
                             response_id=f"resp_{self.model}_{n}")

    async def stream_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, *,
                              previous_response_id=None, conversation_id=None, prompt=None):
        response = await self.get_response(system_instructions, input, model_settings, tools, output_schema, handoffs, tracing)
        usage = response.usage
        yield ResponseCompletedEvent(type="response.completed", sequence_number=0, response=Response(
            id=response.response_id, created_at=time.time(), model=self.model, object="response", output=response.output,
            parallel_tool_calls=False, tool_choice="auto", tools=[],
            usage=ResponseUsage.model_validate({"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                                                "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                                                "output_tokens_details": {"reasoning_tokens": 0}})))


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up by its id."""
    return {"A1": "shipped on May 2"}.get(order_id, "unknown order")


def triage_turns(attempts: int = 1) -> list[Any]:
    turns = []
    for n in range(attempts):
        turns += [call("lookup_order", {"order_id": "A1"}, f"lookup{n}"), call("transfer_to_writer", {}, f"handoff{n}")]
    return turns


def team(*answers: Any, attempts: int | None = None) -> tuple[Agent, ScriptModel, ScriptModel]:
    """A triage agent that looks the order up and hands off to a writer agent, which answers (once per attempt)."""
    answers = answers or (ANSWER,)
    writer_model = ScriptModel("fake-writer", list(answers))
    triage_model = ScriptModel("fake-triage", triage_turns(attempts or len(answers)))
    writer = Agent(name="writer", instructions="You write the reply to the customer.", model=writer_model)
    triage = Agent(name="triage", instructions="You look orders up.", model=triage_model, tools=[lookup_order], handoffs=[writer])
    return triage, triage_model, writer_model


def steps_of(supervisor: Supervisor, session_id: str) -> list[StepRecord]:
    return supervisor.store.rows(StepRecord, StepRecord.session_id == session_id, order_by=StepRecord.step_index)


# ----------------------------------------------------------------------------------------------- the tests
async def test_every_model_call_tool_call_and_handoff_is_a_step_of_the_session(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    triage, _, _ = team()
    runner = with_atlas(triage, supervisor=supervisor, learning_key="orders")
    assert isinstance(runner, AtlasRunner) and runner.agent_name == "triage"

    result = await runner.run(QUESTION)

    assert result.final_output == ANSWER and result.last_agent.name == "writer"
    session = runner.session_result()
    assert session is result.atlas_session is runner.session_result(result)
    assert isinstance(session, PendingSession) and session.final_answer == ANSWER
    supervisor.drain()
    assert (session.lane, session.final_answer, session.reward) == ("auto", ANSWER, pytest.approx(0.9))
    steps = steps_of(supervisor, session.session_id)
    assert [(s.kind, s.name) for s in steps] == [("model_call", "triage"), ("tool_call", "lookup_order"), ("model_call", "triage"),
                                                 ("handoff", "triage -> writer"), ("model_call", "writer")]
    assert steps[1].tool_args == {"order_id": "A1"} and steps[1].output == "shipped on May 2"
    assert steps[0].step_metadata["model"] == "fake-triage" and steps[4].step_metadata["model"] == "fake-writer"
    assert json.loads(steps[0].output) == {"content": "", "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1"}}]}
    assert steps[4].output == ANSWER
    assert [(s.input_tokens, s.output_tokens) for s in steps if s.kind == "model_call"] == [(101, 11), (102, 12), (101, 11)]
    assert steps[3].step_metadata == {"from_agent": "triage", "to_agent": "writer"}
    calls = supervisor.store.rows(ModelCallRecord, ModelCallRecord.session_id == session.session_id, ModelCallRecord.role == "student")
    assert sorted(c.model for c in calls) == ["fake-triage", "fake-triage", "fake-writer"]
    assert session.usage_by_role["student"]["input_tokens"] == 304 and session.usage_by_role["student"]["output_tokens"] == 34
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert (stored.learning_key, stored.task, stored.lane, stored.status) == ("orders", QUESTION, "auto", "completed")
    assert stored.session_metadata["framework"] == "openai-agents"
    # the SDK's trace spans are trajectory events of the session
    spans = supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session.session_id,
                                  TrajectoryEventRecord.event_type == "span")
    kinds = {e.payload["type"] for e in spans}
    assert {"agent", "function", "handoff"} <= kinds
    function = next(e.payload for e in spans if e.payload["type"] == "function")
    assert function["data"]["name"] == "lookup_order" and function["trace_id"].startswith("trace_")


async def test_spans_of_a_trace_the_caller_opened_are_stored_too(make_supervisor) -> None:
    from agents import trace

    supervisor = make_supervisor(supervision={"lane": "auto"})
    runner = with_atlas(team()[0], supervisor=supervisor)
    with trace("my workflow", metadata={"team": "support"}):
        result = await runner.run(QUESTION)
    supervisor.drain()
    spans = supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == runner.session_result(result).session_id,
                                  TrajectoryEventRecord.event_type == "span")
    assert {"agent", "function", "handoff"} <= {e.payload["type"] for e in spans}


async def test_lessons_plan_and_step_guidance_reach_the_instructions_never_the_input(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Quote the shipping date exactly.", "reason": "x"},
                {"accepted": True, "guidance": "", "reason": "ok"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts,
                                              "PlanReview": {"approved": True, "steps": ["look the order up", "hand off"], "concerns": []}}},
                                 supervision={"lane": "coach"})
    supervisor.playbook.apply("orders", [LessonChange(op="add", lesson="Always look the order up before answering.", applies_when="where is my order")])
    triage, triage_model, writer_model = team()
    runner = with_atlas(triage, supervisor=supervisor, learning_key="orders")

    result = await runner.run(QUESTION)

    first = triage_model.calls[0]
    assert first["instructions"].startswith("You look orders up.\n\n")
    assert "Always look the order up before answering." in first["instructions"] and "1. look the order up" in first["instructions"]
    assert "Quote the shipping date exactly." not in first["instructions"]
    assert first["input"] == [{"content": QUESTION, "role": "user"}]  # the user's input items are untouched
    # coach: the tool call was validated as it ended; its guidance reached the next model call (the core's rule)
    assert "Quote the shipping date exactly." in triage_model.calls[1]["instructions"]
    # shown to the model call after the rejected step; once that call is made, the guidance has been shown
    assert "Quote the shipping date exactly." not in writer_model.calls[0]["instructions"]
    assert writer_model.calls[0]["instructions"].startswith("You write the reply to the customer.")
    session = runner.session_result(result)
    supervisor.drain()
    assert session.lessons_used and [v.accepted for v in session.verdicts] == [False, True]
    assert session.verdicts[0].step_id == steps_of(supervisor, session.session_id)[1].id


async def test_a_paired_rejection_reruns_the_agent_with_guidance_and_the_retry_is_validated(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": "Give the shipping date.", "reason": "vague"},
                {"accepted": True, "guidance": "", "reason": "complete"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired"})
    triage, triage_model, writer_model = team("It shipped.", ANSWER)
    runner = with_atlas(triage, supervisor=supervisor)

    result = await runner.run(QUESTION)

    assert result.final_output == ANSWER
    assert len(triage_model.calls) == 4 and len(writer_model.calls) == 2
    assert all("Give the shipping date." not in c["instructions"] for c in [*triage_model.calls[:2], writer_model.calls[0]])
    for retried in (triage_model.calls[2], triage_model.calls[3], writer_model.calls[1]):  # every call of the retry
        assert "Teacher guidance:\n- Give the shipping date." in retried["instructions"]  # the core's rendering
    assert triage_model.calls[2]["input"] == [{"content": QUESTION, "role": "user"}]  # the retry starts from the input
    session = runner.session_result()
    supervisor.drain()
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == session.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("It shipped.", False), (ANSWER, True)]
    assert (session.attempts, session.accepted, session.final_answer) == (2, True, ANSWER)
    assert {s.attempt for s in steps_of(supervisor, session.session_id)} == {1, 2}
    assert supervisor.store.get(SessionRecord, session.session_id).retries == 1


async def test_a_rejection_without_retries_left_stands(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": {"accepted": False, "guidance": "No.", "reason": "wrong"}}},
                                 supervision={"lane": "paired", "max_retries": 2})
    triage, _, writer_model = team("One.", "Two.", "Three.")
    runner = with_atlas(triage, supervisor=supervisor)
    result = await runner.run(QUESTION)
    assert result.final_output == "Three." and len(writer_model.calls) == 3
    session = runner.session_result()
    assert (session.attempts, session.accepted, session.final_answer) == (3, False, "Three.")  # max_retries + 1
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert (stored.status, stored.retries, stored.final_answer) == ("completed", 2, "Three.")
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == session.session_id, order_by=AttemptRecord.attempt)
    assert [(a.answer, a.accepted) for a in attempts] == [("One.", False), ("Two.", False), ("Three.", False)]


def test_run_sync(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    triage, _, _ = team()
    runner = with_atlas(triage, supervisor=supervisor)
    result = runner.run_sync(QUESTION)
    assert result.final_output == ANSWER
    session = runner.session_result(result)
    assert (session.lane, session.accepted) == ("paired", True)
    supervisor.drain()
    assert len(steps_of(supervisor, session.session_id)) == 5


async def test_run_streamed_is_supervised_and_finished_when_the_stream_ends(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    triage, triage_model, _ = team()
    runner = with_atlas(triage, supervisor=supervisor, learning_key="orders")
    supervisor.playbook.apply("orders", [LessonChange(op="add", lesson="Always look the order up before answering.", applies_when="where is my order")])

    streamed = runner.run_streamed(QUESTION)
    kinds = [event.type async for event in streamed.stream_events()]

    assert streamed.final_output == ANSWER and "run_item_stream_event" in kinds
    assert "Always look the order up before answering." in triage_model.calls[0]["instructions"]
    session = runner.session_result(streamed)
    assert session is not None and (session.lane, session.accepted, session.final_answer) == ("paired", True, ANSWER)
    supervisor.drain()
    steps = steps_of(supervisor, session.session_id)
    assert [s.kind for s in steps] == ["model_call", "tool_call", "model_call", "handoff", "model_call"]
    spans = supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session.session_id,
                                  TrajectoryEventRecord.event_type == "span")
    assert any(e.payload["type"] == "function" for e in spans)


async def test_a_rejected_streamed_answer_stands_and_is_not_rerun(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": {"accepted": False, "guidance": "Be precise.", "reason": "vague"}}},
                                 supervision={"lane": "paired"})
    triage, triage_model, _ = team("It shipped.")
    runner = with_atlas(triage, supervisor=supervisor)
    streamed = runner.run_streamed(QUESTION)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "It shipped." and len(triage_model.calls) == 2
    session = runner.session_result(streamed)
    assert (session.attempts, session.accepted) == (1, False)


async def test_escalation_the_teacher_answers_as_the_final_output(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate"})
    triage, triage_model, writer_model = team()
    runner = with_atlas(triage, supervisor=supervisor)

    result = await runner.run(QUESTION)

    assert result.final_output == "teacher's answer" and result.last_agent is triage
    assert triage_model.calls == [] and writer_model.calls == []
    session = runner.session_result(result)
    assert (session.lane, session.final_answer) == ("escalate", "teacher's answer")
    supervisor.drain()
    assert steps_of(supervisor, session.session_id) == []
    assert supervisor.store.get(SessionRecord, session.session_id).status == "completed"


async def test_escalation_to_a_human(make_supervisor) -> None:
    asked = []

    async def human(task: str, context: dict[str, Any]) -> str:
        asked.append(task)
        return "A human says: May 2."

    supervisor = make_supervisor(supervision={"lane": "escalate", "escalation": "human"})
    triage, triage_model, _ = team()
    runner = with_atlas(triage, supervisor=supervisor, human=human)
    result = await runner.run(QUESTION)
    assert result.final_output == "A human says: May 2." and asked == [QUESTION] and triage_model.calls == []


async def test_the_callers_hooks_and_run_config_are_kept(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.playbook.apply("orders", [LessonChange(op="add", lesson="Always look the order up before answering.", applies_when="where is my order")])
    seen: list[str] = []

    class Mine(RunHooks):
        async def on_llm_end(self, context, agent, response):
            seen.append(f"llm:{agent.name}")

        async def on_tool_end(self, context, agent, tool, result):
            seen.append(f"tool:{tool.name}")

        async def on_handoff(self, context, from_agent, to_agent):
            seen.append(f"handoff:{to_agent.name}")

    def my_filter(data):
        return ModelInputData(input=data.model_data.input, instructions=data.model_data.instructions + " [mine]")

    triage, triage_model, _ = team()
    runner = with_atlas(triage, supervisor=supervisor, learning_key="orders")
    config = RunConfig(call_model_input_filter=my_filter, trace_metadata={"team": "support"}, workflow_name="orders")
    result = await runner.run(QUESTION, hooks=Mine(), run_config=config, max_turns=6)

    assert result.final_output == ANSWER
    assert seen == ["llm:triage", "tool:lookup_order", "llm:triage", "handoff:writer", "llm:writer"]
    instructions = triage_model.calls[0]["instructions"]
    assert instructions.startswith("You look orders up. [mine]\n\n") and "Always look the order up" in instructions
    assert config.call_model_input_filter is my_filter and config.trace_metadata == {"team": "support"}  # not mutated
    supervisor.drain()
    assert len(steps_of(supervisor, runner.session_result().session_id)) == 5


async def test_an_agent_error_finishes_the_session_and_is_raised_unchanged(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    triage, _, _ = team(RuntimeError("model down"))
    runner = with_atlas(triage, supervisor=supervisor)
    with pytest.raises(RuntimeError, match="model down"):
        await runner.run(QUESTION)
    session = runner.session_result()
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert stored.status == "failed" and "model down" in stored.session_metadata["error"]


async def test_a_streamed_run_that_fails_finishes_its_session_with_the_error(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    triage, _, _ = team(RuntimeError("writer down"))
    runner = with_atlas(triage, supervisor=supervisor)
    streamed = runner.run_streamed(QUESTION)
    with pytest.raises(RuntimeError, match="writer down"):
        async for _ in streamed.stream_events():
            pass
    await runner.wait_finished()
    session = runner.session_result()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert stored.status == "failed" and "writer down" in stored.session_metadata["error"]
    assert [s.kind for s in steps_of(supervisor, session.session_id)] == ["model_call", "tool_call", "model_call", "handoff"]


async def test_a_streamed_escalation_runs_the_agent_and_validates_its_answer(make_supervisor) -> None:
    # A streamed run's session begins inside the SDK's run loop: too late to answer in the agent's place, so the
    # runner reports can_take_answer=False and the agent runs, supervised like a paired session.
    supervisor = make_supervisor(supervision={"lane": "escalate"})
    triage, triage_model, writer_model = team()
    runner = with_atlas(triage, supervisor=supervisor)
    streamed = runner.run_streamed(QUESTION)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == ANSWER
    assert all("teacher's answer" not in c["instructions"] for c in [*triage_model.calls, *writer_model.calls])
    session = runner.session_result(streamed)
    assert (session.lane, session.attempts, session.accepted, session.final_answer) == ("escalate", 1, True, ANSWER)
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert stored.status == "completed" and "can return text" in stored.session_metadata["supervision_level"]


class EchoModel(Model):
    """Answers every call with the last user message, after a pause that lets concurrent runs interleave."""

    model = "echo"

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, *,
                           previous_response_id=None, conversation_id=None, prompt=None) -> ModelResponse:
        await asyncio.sleep(0.01)
        text = input if isinstance(input, str) else input[-1]["content"]
        return ModelResponse(output=[message(f"echo: {text}")], usage=Usage(requests=1, input_tokens=len(text), output_tokens=3,
                                                                             total_tokens=len(text) + 3), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


async def test_concurrent_runs_keep_their_own_sessions(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    runner = with_atlas(Agent(name="echo", instructions="Repeat.", model=EchoModel()), supervisor=supervisor)
    questions = [f"question {n}" for n in range(4)]
    results = await asyncio.gather(*(runner.run(q) for q in questions))
    assert [r.final_output for r in results] == [f"echo: {q}" for q in questions]
    supervisor.drain()
    for question, result in zip(questions, results, strict=True):
        session = runner.session_result(result)
        stored = supervisor.store.get(SessionRecord, session.session_id)
        assert (stored.task, session.final_answer) == (question, f"echo: {question}")
        steps = steps_of(supervisor, session.session_id)
        assert len(steps) == 1 and steps[0].output == f"echo: {question}" and steps[0].input_tokens == len(question)
    assert len({runner.session_result(r).session_id for r in results}) == 4


class BrokenSupervisor(Supervisor):
    def begin(self, *args, **kwargs):
        raise RuntimeError("atlas is down")

    async def abegin(self, *args, **kwargs):
        raise RuntimeError("atlas is down")


async def test_a_broken_supervisor_never_fails_the_run(store_url, tmp_path, caplog) -> None:
    supervisor = BrokenSupervisor({"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")}})
    try:
        triage, triage_model, _ = team(ANSWER, ANSWER)
        runner = with_atlas(triage, supervisor=supervisor)
        assert (await runner.run(QUESTION)).final_output == ANSWER
        streamed = runner.run_streamed(QUESTION)
        async for _ in streamed.stream_events():
            pass
        assert streamed.final_output == ANSWER
        assert all(c["instructions"] == "You look orders up." for c in triage_model.calls)  # nothing injected
        assert runner.session_result() is None and "atlas is down" in caplog.text
    finally:
        supervisor.close()


async def test_failures_inside_a_session_are_logged_and_the_run_goes_on(make_supervisor, monkeypatch, caplog) -> None:
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": GOOD_JUDGEMENT}}, supervision={"lane": "coach"})

    def explode(*args, **kwargs):
        raise RuntimeError("atlas bug")

    for name in ("record_step", "record_model_call", "astart", "atool_call_done", "afinal_answer"):
        monkeypatch.setattr(SupervisedRun, name, explode)
    monkeypatch.setattr(SupervisedRun, "instructions", property(explode))
    triage, _, _ = team()
    runner = with_atlas(triage, supervisor=supervisor)

    result = await runner.run(QUESTION)

    assert result.final_output == ANSWER and "atlas bug" in caplog.text
    assert runner.session_result(result) is not None  # the session still ended with what could be recorded
    supervisor.drain()
    assert supervisor.store.get(SessionRecord, runner.session_result().session_id).status == "completed"


async def test_runs_started_with_runner_itself(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    supervisor.playbook.apply("orders", [LessonChange(op="add", lesson="Always look the order up before answering.", applies_when="where is my order")])
    triage, triage_model, _ = team()
    runner = with_atlas(triage, supervisor=supervisor, learning_key="orders")

    async with runner.supervised(QUESTION) as run:
        result = await Runner.run(triage, QUESTION, run_config=runner.run_config(), hooks=runner.hooks(run))

    assert result.final_output == ANSWER
    assert "Always look the order up" in triage_model.calls[0]["instructions"]
    session = runner.session_result()
    assert session.session_id == run.session_id and session.final_answer == ANSWER
    supervisor.drain()
    assert len(steps_of(supervisor, run.session_id)) == 5
    assert runner.run_config().call_model_input_filter is None  # outside a block: nothing supervised


def test_explicit_begin_and_finish_around_runner_run_sync(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    triage, _, _ = team()
    runner = with_atlas(triage, supervisor=supervisor)
    run = runner.begin(QUESTION)
    result = Runner.run_sync(triage, QUESTION, run_config=runner.run_config(run), hooks=runner.hooks(run))
    assert run.final_answer(result.final_output).action == "accept"
    session = runner.finish(run, result)
    assert session is result.atlas_session and (session.final_answer, session.accepted) == (ANSWER, True)
    supervisor.drain()
    assert len(steps_of(supervisor, run.session_id)) == 5


async def test_task_family_and_learning_key_per_run(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    model = ScriptModel("fake-support", [ANSWER] * 5)
    support = Agent(name="support", instructions="Help the customer.", model=model)
    runner = with_atlas(support, supervisor=supervisor, learning_key="orders")

    # the atlas_* arguments go to the session, never to Runner (whose fixed signature would refuse them)
    await runner.run(QUESTION, atlas_task_family="shipping", max_turns=3)
    streamed = runner.run_streamed(QUESTION, atlas_task_family="refunds", atlas_metadata={"ticket": 7})
    async for _ in streamed.stream_events():
        pass
    await runner.run(QUESTION, atlas_task_family="shipping", atlas_learning_key="orders-desk")
    with session_options(task_family="billing"):
        await runner.run(QUESTION)
    async with runner.supervised(QUESTION, task_family="returns") as run:
        await Runner.run(support, QUESTION, run_config=runner.run_config(run), hooks=runner.hooks(run))

    supervisor.drain()
    assert spy.identities() == [("orders", "shipping"), ("orders", "refunds"), ("orders-desk", "shipping"),
                                ("orders", "billing"), ("orders", "returns")]
    assert (spy.metadata(1)["ticket"], spy.metadata(1)["framework"]) == (7, "openai-agents")
    assert "ticket" not in spy.metadata(0) and len(model.calls) == 5


def test_task_family_with_run_sync_and_explicit_begin(make_supervisor, spy_begin) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    spy = spy_begin(supervisor)
    support = Agent(name="support", instructions="Help the customer.", model=ScriptModel("fake-support", [ANSWER] * 2))
    runner = with_atlas(support, supervisor=supervisor)

    assert runner.run_sync(QUESTION, atlas_task_family="shipping", max_turns=3).final_output == ANSWER
    run = runner.begin(QUESTION, task_family="refunds", learning_key="orders-desk")
    runner.finish(run, Runner.run_sync(support, QUESTION, run_config=runner.run_config(run), hooks=runner.hooks(run)))

    supervisor.drain()
    assert spy.identities() == [("support", "shipping"), ("orders-desk", "refunds")]


async def test_agent_hooks_passed_as_run_hooks_are_refused_by_the_sdk_as_usual(make_supervisor) -> None:
    from agents import AgentHooks

    runner = with_atlas(team()[0], supervisor=make_supervisor(supervision={"lane": "auto"}))
    with pytest.raises(TypeError, match="Run hooks must be instances of RunHooks"):
        await runner.run(QUESTION, hooks=AgentHooks())
    assert supervisor_status(runner) == "failed"


def supervisor_status(runner: AtlasRunner) -> str:
    runner.supervisor.drain()
    return runner.supervisor.store.get(SessionRecord, runner.session_result().session_id).status


async def test_atlas_model_runs_an_agent_on_an_atlas_chat_model(make_supervisor) -> None:
    from atlas_learning.models import ScriptedModel
    from atlas_plugins.openai_agents import AtlasModel

    chat = ScriptedModel(responses=["Paris.", "Mars."])
    agent = Agent(name="quiz", instructions="Answer briefly.", model=AtlasModel(chat))
    runner = with_atlas(agent, supervisor=make_supervisor(supervision={"lane": "auto"}))
    assert (await runner.run("Capital of France?")).final_output == "Paris."
    streamed = runner.run_streamed([{"role": "user", "content": "Red planet?"}])
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "Mars."
    runner.supervisor.drain()
    assert chat.requests[0][0] == [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of France?"}]
    steps = steps_of(runner.supervisor, runner.session_result(streamed).session_id)
    assert [(s.kind, s.name, s.step_metadata["provider"], s.step_metadata["model"]) for s in steps] == [
        ("model_call", "quiz", "scripted", "scripted")]
    assert steps[0].input_tokens == 4 and steps[0].output_tokens == 1
    assert runner.supervisor.store.get(SessionRecord, runner.session_result(streamed).session_id).task == "Red planet?"


# ------------------------------------------------------------------------------ the protocol, answer by answer
async def test_retry_guidance_only_keeps_the_answer_and_records_the_rejection(make_supervisor) -> None:
    supervisor = make_supervisor({"teacher": {"Verdict": {"accepted": False, "guidance": "Give the date.", "reason": "vague"}}},
                                 supervision={"lane": "paired", "retry": "guidance_only"})
    triage, triage_model, writer_model = team("It shipped.")
    runner = with_atlas(triage, supervisor=supervisor)

    result = await runner.run(QUESTION)

    assert result.final_output == "It shipped." and (len(triage_model.calls), len(writer_model.calls)) == (2, 1)
    session = runner.session_result(result)
    assert (session.attempts, session.accepted, session.final_answer) == (1, False, "It shipped.")
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert (stored.status, stored.retries) == ("completed", 0)
    attempts = supervisor.store.rows(AttemptRecord, AttemptRecord.session_id == session.session_id)
    assert [(a.answer, a.accepted, a.guidance) for a in attempts] == [("It shipped.", False, "Give the date.")]
    guidance = supervisor.store.rows(GuidanceRecord, GuidanceRecord.session_id == session.session_id)
    assert [(g.kind, g.content) for g in guidance] == [("answer", "Give the date.")]
    skipped = supervisor.store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session.session_id,
                                    TrajectoryEventRecord.event_type == "retry_skipped")
    assert len(skipped) == 1 and "guidance_only" in skipped[0].payload["reason"]


async def test_the_users_call_does_not_wait_for_judging(make_supervisor) -> None:
    judge = HeldJudge()  # answers only once released: a call that waited for judging would hang
    supervisor = make_supervisor({"judge_small": {"SessionJudgement": judge}}, supervision={"lane": "auto"})
    triage, _, _ = team(ANSWER, ANSWER)
    runner = with_atlas(triage, supervisor=supervisor)

    result = await runner.run(QUESTION)
    pending = result.atlas_session
    assert isinstance(pending, PendingSession) and not pending.done()
    assert pending.final_answer == ANSWER  # known at once
    assert threading.get_ident() not in judge.threads  # never judged on the event loop's thread
    judge.release()
    assert (await pending).reward == pytest.approx(0.9)  # the judge's, once the background finish is done

    judge.hold()
    streamed = runner.run_streamed(QUESTION)
    async for _ in streamed.stream_events():
        pass
    assert not streamed.atlas_session.done() and threading.get_ident() not in judge.threads
    judge.release()
    assert streamed.atlas_session.reward == pytest.approx(0.9)  # reading a field waits


class Cancelled(Model):
    """Signals its first call, then never answers."""

    model = "stuck"

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def get_response(self, *args, **kwargs) -> ModelResponse:
        self.called.set()
        await asyncio.sleep(30)
        raise AssertionError("not cancelled")

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


async def test_a_cancelled_run_ends_its_session_as_cancelled(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    model = Cancelled()
    runner = with_atlas(Agent(name="stuck", instructions="Wait.", model=model), supervisor=supervisor)
    task = asyncio.create_task(runner.run(QUESTION))
    await asyncio.wait_for(model.called.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    session = runner.session_result()
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert stored.status == "failed" and stored.session_metadata["error"] == "cancelled"


# ---------------------------------------------------------------------------------------------- guardrails
@output_guardrail
async def no_shipping_news(ctx: Any, agent: Any, output: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info={"checked": str(output)}, tripwire_triggered="shipped" in str(output))


@input_guardrail
async def no_questions(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=True)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "streamed"])
async def test_an_output_guardrail_tripwire_fails_the_session_streamed_or_not(make_supervisor, streamed: bool) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    triage, _, _ = team()
    writer = triage.handoffs[0]
    writer.output_guardrails = [no_shipping_news]  # the writer's answer is the final output
    runner = with_atlas(triage, supervisor=supervisor)

    with pytest.raises(OutputGuardrailTripwireTriggered):
        if streamed:
            result = runner.run_streamed(QUESTION)
            async for _ in result.stream_events():
                pass
        else:
            await runner.run(QUESTION)

    session = runner.session_result()
    if streamed:
        assert session is result.atlas_session  # set by the time the caller's loop is over
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert stored.status == "failed" and "OutputGuardrailTripwireTriggered" in stored.session_metadata["error"]


async def test_a_streamed_run_past_max_turns_fails_the_session(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    runner = with_atlas(team()[0], supervisor=supervisor)
    streamed = runner.run_streamed(QUESTION, max_turns=1)  # the triage agent needs two turns before the handoff
    with pytest.raises(MaxTurnsExceeded):
        async for _ in streamed.stream_events():
            pass
    session = streamed.atlas_session
    assert session.attempts == 0  # no answer was reported
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert stored.status == "failed" and "MaxTurnsExceeded" in stored.session_metadata["error"]


async def test_a_streamed_input_guardrail_tripwire_fails_the_session(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    model = ScriptModel("fake-support", [ANSWER])
    runner = with_atlas(Agent(name="support", instructions="Help.", model=model, input_guardrails=[no_questions]),
                        supervisor=supervisor)
    streamed = runner.run_streamed(QUESTION)
    with pytest.raises(InputGuardrailTripwireTriggered):
        async for _ in streamed.stream_events():
            pass
    await runner.wait_finished()  # the sessions of ended streams are finished (and stored) after this
    stored = supervisor.store.get(SessionRecord, runner.session_result(streamed).session_id)
    assert stored.status == "failed" and "InputGuardrailTripwireTriggered" in stored.session_metadata["error"]


async def test_escalation_a_tripwire_on_the_teachers_answer_is_raised_and_fails_the_session(make_supervisor) -> None:
    @output_guardrail
    async def no_teacher(ctx: Any, agent: Any, output: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered="teacher" in str(output))

    supervisor = make_supervisor(supervision={"lane": "escalate"})
    triage, triage_model, writer_model = team()
    triage.output_guardrails = [no_teacher]
    runner = with_atlas(triage, supervisor=supervisor)

    with pytest.raises(OutputGuardrailTripwireTriggered):
        await runner.run(QUESTION)

    assert triage_model.calls == [] and writer_model.calls == []  # raised, as the SDK does: no student run instead
    session = runner.session_result()
    supervisor.drain()
    stored = supervisor.store.get(SessionRecord, session.session_id)
    assert (stored.lane, stored.status) == ("escalate", "failed")
    assert "OutputGuardrailTripwireTriggered" in stored.session_metadata["error"]


class Reply(BaseModel):
    text: str


async def test_escalation_an_answer_that_is_not_the_output_type_lets_the_student_work(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "escalate"})  # the teacher answers "teacher's answer": not JSON
    model = ScriptModel("fake-support", ['{"text": "May 2"}'])
    runner = with_atlas(Agent(name="support", instructions="Help.", model=model, output_type=Reply), supervisor=supervisor)

    result = await runner.run(QUESTION)

    assert result.final_output == Reply(text="May 2") and len(model.calls) == 1
    session = runner.session_result(result)
    assert (session.lane, session.attempts, session.accepted) == ("escalate", 1, True)  # the teacher validated it
    assert json.loads(session.final_answer) == {"text": "May 2"}


# ------------------------------------------------------------------------------------- agents used as tools
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "streamed"])
async def test_an_agent_used_as_a_tool_gets_no_lessons_and_its_model_calls_are_nested_steps(make_supervisor, streamed: bool) -> None:
    supervisor = make_supervisor(supervision={"lane": "coach"})
    supervisor.playbook.apply("orders", [LessonChange(op="add", lesson="Always look the order up before answering.", applies_when="where is my order")])
    seen: list[str] = []

    class Mine(RunHooks):
        async def on_llm_end(self, context, agent, response):
            seen.append(f"llm:{agent.name}")

    researcher_model = ScriptModel("fake-researcher", [call("lookup_order", {"order_id": "A1"}, "inner1"), "A1 shipped on May 2."])
    researcher = Agent(name="researcher", instructions="You research orders.", model=researcher_model, tools=[lookup_order])
    lead_model = ScriptModel("fake-lead", [call("research", {"input": "order A1"}, "outer1"), ANSWER])
    lead = Agent(name="lead", instructions="You answer customers.", model=lead_model,
                 tools=[researcher.as_tool("research", "Research an order.", hooks=Mine())])
    runner = with_atlas(lead, supervisor=supervisor, learning_key="orders")

    if streamed:
        result = runner.run_streamed(QUESTION)
        async for _ in result.stream_events():
            pass
    else:
        result = await runner.run(QUESTION)

    assert result.final_output == ANSWER
    assert all("Always look the order up before answering." in c["instructions"] for c in lead_model.calls)
    assert [c["instructions"] for c in researcher_model.calls] == ["You research orders."] * 2  # nothing of the lead's
    assert seen == ["llm:researcher", "llm:researcher"]  # the hooks given to as_tool still run
    session = runner.session_result(result)
    supervisor.drain()
    steps = steps_of(supervisor, session.session_id)
    assert [(s.kind, s.name) for s in steps] == [("model_call", "lead"), ("model_call", "researcher"), ("model_call", "researcher"),
                                                 ("tool_call", "research"), ("model_call", "lead")]
    for nested in steps[1:3]:
        assert nested.step_metadata["nested"] is True and nested.step_metadata["agent"] == "researcher"
        assert (nested.step_metadata["parent_agent"], nested.step_metadata["tool_name"], nested.step_metadata["tool_call_id"]) == (
            "lead", "research", "outer1")
        assert nested.step_metadata["model"] == "fake-researcher"
    assert "nested" not in steps[0].step_metadata and "nested" not in steps[4].step_metadata
    assert json.loads(steps[1].output)["tool_calls"] == [{"name": "lookup_order", "arguments": {"order_id": "A1"}}]
    assert steps[2].output == "A1 shipped on May 2." and steps[3].output == "A1 shipped on May 2."
    calls = supervisor.store.rows(ModelCallRecord, ModelCallRecord.session_id == session.session_id, ModelCallRecord.role == "student")
    assert sorted(c.model for c in calls) == ["fake-lead", "fake-lead", "fake-researcher", "fake-researcher"]
    # coach: the lead's tool step was reported and validated; nested model calls are no tool steps
    verdicts = [v for v in session.verdicts if v.step_id is not None]
    assert [v.step_id for v in verdicts] == [steps[3].id]


async def test_a_run_of_the_sub_agent_outside_a_supervised_run_is_left_alone(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    runner = with_atlas(team()[0], supervisor=supervisor)
    await runner.run(QUESTION)  # the SDK's default runner is wrapped from now on
    model = ScriptModel("fake-plain", [ANSWER])
    plain = await Runner.run(Agent(name="plain", instructions="Help.", model=model), QUESTION)
    assert plain.final_output == ANSWER and model.calls[0]["instructions"] == "Help."
    assert getattr(plain, "atlas_session", None) is None


# ------------------------------------------------------------------------ the SDK's own OpenAI Responses model
def _json_body(live: Request, recorded: Request) -> None:
    def parse(request: Request) -> Any:
        body = request.body
        return json.loads(body.decode() if isinstance(body, bytes) else body) if body else None

    assert parse(live) == parse(recorded), "request bodies differ as JSON"


_vcr = vcr.VCR(cassette_library_dir=str(CASSETTES), serializer="yaml", record_mode="none",
               match_on=["method", "scheme", "host", "port", "path", "query", "json_body"],
               filter_headers=["authorization"])
_vcr.register_matcher("json_body", _json_body)


async def test_openai_responses_model_replayed_from_a_cassette(make_supervisor, monkeypatch) -> None:
    from agents import ModelSettings, OpenAIResponsesModel
    from openai import AsyncOpenAI

    for name in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    client = AsyncOpenAI(api_key="sk-test-dummy", max_retries=0)
    agent = Agent(name="orders", instructions="You look orders up.", tools=[lookup_order],
                  model=OpenAIResponsesModel(model="gpt-4.1-mini", openai_client=client),
                  # a fixed cache key: the SDK otherwise sends a random one per run, which no cassette could match
                  model_settings=ModelSettings(extra_args={"prompt_cache_key": "atlas-test"}))
    supervisor = make_supervisor(supervision={"lane": "paired"})
    runner = with_atlas(agent, supervisor=supervisor)

    with _vcr.use_cassette("openai_agents/responses_tool_call.yaml") as played:
        result = await runner.run(QUESTION)

    assert played.all_played and played.play_count == 2
    assert result.final_output == ANSWER
    session = runner.session_result(result)
    supervisor.drain()
    steps = steps_of(supervisor, session.session_id)
    assert [(s.kind, s.name) for s in steps] == [("model_call", "orders"), ("tool_call", "lookup_order"), ("model_call", "orders")]
    assert [(s.input_tokens, s.output_tokens) for s in steps if s.kind == "model_call"] == [(71, 17), (104, 12)]
    assert steps[0].step_metadata["provider"] == "openai" and steps[0].step_metadata["model"] == "gpt-4.1-mini"
    assert steps[0].step_metadata["response_id"] == "resp_atlas_1"
    assert session.usage_by_role["student"]["input_tokens"] == 175 and session.accepted is True
    sent = json.loads(played.requests[1].body)
    assert sent["input"][-1] == {"call_id": "call_lookup_1", "output": "shipped on May 2", "type": "function_call_output"}


async def test_a_streamed_run_paused_for_a_tool_approval_is_not_stored_as_cancelled(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @function_tool(needs_approval=True)
    def refund(order_id: str) -> str:
        """Refund an order."""
        return "refunded"

    model = ScriptModel("fake-refunds", [call("refund", {"order_id": "A1"}, "r1")])
    runner = with_atlas(Agent(name="refunds", instructions="Refund orders.", model=model, tools=[refund]), supervisor=supervisor)
    streamed = runner.run_streamed("Refund order A1")
    [event async for event in streamed.stream_events()]
    assert streamed.interruptions  # the SDK paused for the approval
    await runner.wait_finished()
    supervisor.drain()
    stored = supervisor.store.list_sessions()[0]
    assert stored.status == "completed" and (stored.session_metadata or {}).get("error") != "cancelled"


async def test_a_run_with_sdk_memory_is_not_rerun_and_its_rejection_is_recorded(make_supervisor) -> None:
    from agents import SQLiteSession

    supervisor = make_supervisor({"teacher": {"Verdict": [{"accepted": False, "guidance": "Quote the date.", "reason": "vague"},
                                                             {"accepted": True, "guidance": "", "reason": "ok"}]}},
                                 supervision={"lane": "paired"})
    model = ScriptModel("fake-memory", ["It is on its way.", "Shipped on May 2."])
    runner = with_atlas(Agent(name="memory", instructions="Answer.", model=model), supervisor=supervisor)
    memory = SQLiteSession("conversation-1")
    result = await runner.run(QUESTION, session=memory)
    items = await memory.get_items()
    assert result.final_output == "It is on its way." and len(model.calls) == 1  # not rerun into the same memory
    assert [i.get("role") for i in items].count("user") == 1
    session = runner.session_result(result).result()
    assert session.attempts == 1 and session.accepted is False and session.verdicts[0].guidance == "Quote the date."
