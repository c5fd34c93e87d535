"""create_agent (langchain.agents) with tools, bare and wrapped: invoke, every stream mode, token streaming,
structured output, tools that return Commands, write to the stream or read the runtime context, and the
middleware that keeps per-thread state (call limits, summaries)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pytest
from langchain.agents import AgentState, create_agent
from langchain.agents.middleware import (
    AgentMiddleware,
    ModelCallLimitMiddleware,
    ModelRequest,
    SummarizationMiddleware,
    dynamic_prompt,
)
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.types import Command
from pydantic import BaseModel

from ._fakes import ScriptedChat, ask, call, notes_script, notes_tools
from ._harness import Built, both_apis

THREAD = {"configurable": {"thread_id": "agent-thread"}}


def notes_agent(atlas, **kwargs) -> Built:
    """create_agent that reads a file, counts its lines and answers (three model calls, two tool calls)."""
    counts = Counter()
    model = ScriptedChat(script=notes_script(), counts=counts)
    agent = create_agent(model, tools=notes_tools(counts), system_prompt="You answer questions about notes.", **kwargs)
    return Built(atlas(agent), counts)


@both_apis
async def test_create_agent_invoke(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask())

    outcome = await conformance.check(notes_agent, drive, api)
    assert outcome.built.counts == {"model": 3, "read_file": 1, "count_lines": 1}


MODES = ["values", "updates", "messages", "custom", "debug", "checkpoints", "tasks",
         ["values", "updates", "messages", "custom", "debug"]]


def _mode_id(mode) -> str:
    return "+".join(mode) if isinstance(mode, list) else mode


@pytest.mark.parametrize("subgraphs", [False, True], ids=["flat", "subgraphs"])
@pytest.mark.parametrize("mode", MODES, ids=_mode_id)
async def test_create_agent_stream_mode(conformance, mode, subgraphs) -> None:
    """Every stream mode, alone and in a list, with and without subgraphs (on a thread: checkpoints stream too)."""

    async def drive(app):
        await app.stream(ask(), THREAD, stream_mode=mode, subgraphs=subgraphs)

    await conformance.check(lambda atlas: notes_agent(atlas, checkpointer=InMemorySaver()), drive)


@pytest.mark.parametrize("subgraphs", [False, True], ids=["flat", "subgraphs"])
async def test_create_agent_astream_modes(conformance, subgraphs) -> None:
    async def drive(app):
        await app.stream(ask(), THREAD, stream_mode=MODES[-1], subgraphs=subgraphs)

    await conformance.check(lambda atlas: notes_agent(atlas, checkpointer=InMemorySaver()), drive, "async")


@both_apis
async def test_v2_stream_parts(conformance, api) -> None:
    """``version="v2"``: typed stream parts (type, ns, data)."""

    async def drive(app):
        await app.stream(ask(), stream_mode=["updates", "messages", "custom"], version="v2")

    await conformance.check(notes_agent, drive, api)


@both_apis
async def test_message_tokens_stream_as_many_chunks_from_the_model_node(conformance, api) -> None:
    async def drive(app):
        await app.stream(ask(), stream_mode="messages")

    outcome = await conformance.check(notes_agent, drive, api)
    [(_, chunks)] = outcome.bare.steps[:1]
    answer_tokens = [c for c, meta in chunks if c["type"] == "AIMessageChunk" and c["content"]]
    assert len(answer_tokens) > 8 and {meta["langgraph_node"] for _, meta in chunks} == {"model", "tools"}


class Weather(BaseModel):
    city: str
    temperature_c: int


def weather_agent(atlas) -> Built:
    counts = Counter()

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        counts["get_weather"] += 1
        return "sunny, 21 C"

    model = ScriptedChat(counts=counts, script=[call("get_weather", "w1", city="Lisbon"),
                                                call("Weather", "s1", city="Lisbon", temperature_c=21)])
    return Built(atlas(create_agent(model, tools=[get_weather], response_format=Weather)), counts)


@both_apis
async def test_structured_response(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask("Weather in Lisbon?"))

    outcome = await conformance.check(weather_agent, drive, api)
    assert outcome.bare.steps[0][1]["structured_response"] == {"model": "Weather", "city": "Lisbon", "temperature_c": 21}
    [session] = outcome.sessions()
    assert json.loads(session.final_answer or "null") == {"city": "Lisbon", "temperature_c": 21}


class Profile(AgentState):
    user_name: str


def profile_agent(atlas) -> Built:
    """A tool that returns ``Command(update=...)``: a custom state key and its ToolMessage."""
    counts = Counter()

    @tool
    def remember_name(name: str, runtime: ToolRuntime) -> Command:
        """Remember the user's name."""
        counts["remember_name"] += 1
        return Command(update={"user_name": name, "messages": [ToolMessage("remembered", tool_call_id=runtime.tool_call_id)]})

    model = ScriptedChat(counts=counts, script=[call("remember_name", "n1", name="Ada"), AIMessage("Hello Ada.")], cycle=True)
    return Built(atlas(create_agent(model, tools=[remember_name], state_schema=Profile)), counts)


@both_apis
async def test_tool_returning_a_command_update(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask("I am Ada."))
        await app.stream(ask("I am Ada."), stream_mode="updates")

    outcome = await conformance.check(profile_agent, drive, api)
    assert outcome.bare.steps[0][1]["user_name"] == "Ada"


def progress_agent(atlas) -> Built:
    """A tool that writes progress to the custom stream."""
    counts = Counter()

    @tool
    def crunch(n: int) -> str:
        """Crunch a number, reporting progress."""
        counts["crunch"] += 1
        writer = get_stream_writer()
        for done in range(1, n + 1):
            writer({"progress": f"{done}/{n}"})
        return "crunched"

    model = ScriptedChat(counts=counts, script=[call("crunch", "k1", n=3), AIMessage("Done.")])
    return Built(atlas(create_agent(model, tools=[crunch])), counts)


@both_apis
@pytest.mark.parametrize("subgraphs", [False, True], ids=["flat", "subgraphs"])
async def test_stream_writer_in_a_tool(conformance, api, subgraphs) -> None:
    async def drive(app):
        await app.stream(ask("Crunch 3."), stream_mode=["custom", "updates"], subgraphs=subgraphs)

    outcome = await conformance.check(progress_agent, drive, api)
    custom = [c for c in outcome.bare.steps[0][1] if c[-2] == "custom"]
    assert [c[-1] for c in custom] == [{"progress": "1/3"}, {"progress": "2/3"}, {"progress": "3/3"}]


@dataclass
class Caller:
    user_id: str


def context_agent(atlas) -> Built:
    counts = Counter()

    @tool
    def whoami(runtime: ToolRuntime[Caller]) -> str:
        """The caller's user id."""
        counts["whoami"] += 1
        return runtime.context.user_id

    model = ScriptedChat(counts=counts, script=[call("whoami", "u1"), AIMessage("You are u-42.")])
    return Built(atlas(create_agent(model, tools=[whoami], context_schema=Caller)), counts)


@both_apis
async def test_tool_reads_the_runtime_context(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask("Who am I?"), context=Caller(user_id="u-42"))

    outcome = await conformance.check(context_agent, drive, api)
    assert outcome.bare.steps[0][1]["messages"][2]["content"] == "u-42"


def limited_agent(atlas, exit_behavior: str) -> Built:
    """ModelCallLimitMiddleware(thread_limit=4): the first run makes 3 model calls; the second hits the limit."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=notes_script(), cycle=True)
    agent = create_agent(model, tools=notes_tools(counts), checkpointer=InMemorySaver(),
                         middleware=[ModelCallLimitMiddleware(thread_limit=4, exit_behavior=exit_behavior)])
    return Built(atlas(agent), counts)


@both_apis
@pytest.mark.parametrize("exit_behavior", ["end", "error"])
async def test_model_call_limit_on_a_thread(conformance, api, exit_behavior) -> None:
    async def drive(app):
        await app.invoke(ask(), THREAD)
        await app.invoke(ask("And in notes/todo.txt again?"), THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(lambda atlas: limited_agent(atlas, exit_behavior), drive, api)
    assert outcome.built.counts["model"] == 4


def summarising_agent(atlas) -> Built:
    """SummarizationMiddleware: past 6 messages, all but the last 2 become a summary (a fake summariser)."""
    counts = Counter()
    summariser = ScriptedChat(counts=counts, label="summariser", script=[AIMessage("The user asked about notes.")], cycle=True)
    model = ScriptedChat(counts=counts, script=notes_script(), cycle=True)
    agent = create_agent(model, tools=notes_tools(counts), checkpointer=InMemorySaver(),
                         middleware=[SummarizationMiddleware(summariser, trigger=("messages", 6), keep=("messages", 2))])
    return Built(atlas(agent), counts)


@both_apis
async def test_summarization_middleware_on_a_thread(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask(), THREAD)
        await app.invoke(ask("Count them again."), THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(summarising_agent, drive, api)
    assert outcome.built.counts["summariser"] >= 1


class Audit(AgentMiddleware):
    """before_model / after_model hooks that write state: their nodes show in the stream."""

    class State(AgentState):
        model_turns: int

    state_schema = State

    def before_model(self, state, runtime):
        return {"model_turns": state.get("model_turns", 0) + 1}

    def after_model(self, state, runtime):
        return None


@both_apis
async def test_middleware_hook_nodes(conformance, api) -> None:
    async def drive(app):
        await app.stream(ask(), stream_mode="updates")

    await conformance.check(lambda atlas: notes_agent(atlas, middleware=[Audit()]), drive, api)


def looping_agent(atlas) -> Built:
    """A model that calls a tool forever."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=[call("read_file", "again", path="notes/todo.txt")], cycle=True)
    return Built(atlas(create_agent(model, tools=notes_tools(counts))), counts)


@both_apis
async def test_agent_hits_the_recursion_limit_at_the_same_step(conformance, api) -> None:
    async def drive(app):
        await app.stream(ask(), {"recursion_limit": 7}, stream_mode="updates")

    outcome = await conformance.check(looping_agent, drive, api)
    assert outcome.bare.steps[0][1]["raised"] == "GraphRecursionError"


def failing_tool_agent(atlas) -> Built:
    counts = Counter()

    @tool
    def explode(path: str) -> str:
        """Always fails."""
        counts["explode"] += 1
        raise RuntimeError("disk on fire")

    model = ScriptedChat(counts=counts, script=[call("explode", "e1", path="x")])
    return Built(atlas(create_agent(model, tools=[explode])), counts)


@both_apis
async def test_a_raising_tool_propagates_the_same_error(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask("Read x"))

    outcome = await conformance.check(failing_tool_agent, drive, api)
    assert outcome.bare.steps[0][1] == {"raised": "RuntimeError", "message": "disk on fire"}
    assert [s.status for s in outcome.sessions()] == ["failed"]


@both_apis
async def test_second_turn_on_a_thread(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask(), THREAD)
        await app.invoke(ask("Again?"), THREAD)
        await app.history(THREAD)

    def build(atlas):
        counts = Counter()
        model = ScriptedChat(script=notes_script(), counts=counts, cycle=True)
        return Built(atlas(create_agent(model, tools=notes_tools(counts), checkpointer=InMemorySaver(), name="notes")), counts)

    await conformance.check(build, drive, api)


@both_apis
async def test_agent_name_in_stream_metadata(conformance, api) -> None:
    async def drive(app):
        app.note("name", app.app.name)
        await app.stream(ask(), stream_mode="messages")

    await conformance.check(lambda atlas: notes_agent(atlas, name="notes_agent"), drive, api)


@dynamic_prompt
def caller_prompt(request: ModelRequest) -> str:
    """A system prompt built per call from the runtime context."""
    return f"You help {request.runtime.context.user_id}."


def prompted_agent(atlas) -> Built:
    """create_agent with a dynamic prompt from the context; the model answers with the prompt it was sent."""
    counts = Counter()

    class Echoing(ScriptedChat):
        def _next(self, messages):
            super()._next(messages)
            return AIMessage(" | ".join(f"{m.type}: {m.content}" for m in messages if m.type == "system"))

    model = Echoing(counts=counts, script=[AIMessage("")], cycle=True)
    return Built(atlas(create_agent(model, middleware=[caller_prompt], context_schema=Caller)), counts)


@both_apis
async def test_dynamic_prompt_from_the_context(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask("Hi"), context=Caller(user_id="u-9"))

    outcome = await conformance.check(prompted_agent, drive, api)
    assert outcome.bare.steps[0][1]["messages"][-1]["content"] == "system: You help u-9."


def agent_with_a_subagent_tool(atlas) -> Built:
    """An agent whose tool runs another (bare) agent: the inner model's tokens stream through the outer graph."""
    counts = Counter()
    inner_model = ScriptedChat(counts=counts, label="inner model", script=[AIMessage("The inner agent says three items.")])
    inner = create_agent(inner_model, name="researcher")

    @tool
    def research(question: str) -> str:
        """Ask the research agent."""
        counts["research"] += 1
        return inner.invoke(ask(question))["messages"][-1].content

    model = ScriptedChat(counts=counts, script=[call("research", "q1", question="How many items?"), AIMessage("Three.")])
    return Built(atlas(create_agent(model, tools=[research])), counts)


@both_apis
@pytest.mark.parametrize("subgraphs", [False, True], ids=["flat", "subgraphs"])
async def test_a_subagent_inside_a_tool(conformance, api, subgraphs) -> None:
    async def drive(app):
        await app.stream(ask("How many?"), stream_mode=["messages", "updates"], subgraphs=subgraphs)

    await conformance.check(agent_with_a_subagent_tool, drive, api)
