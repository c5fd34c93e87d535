"""Graphs inside graphs: a wrapped agent as a node of a parent graph, in a Send fan-out, and called from a
node; a user graph with a compiled subgraph (streamed with subgraphs=True, interrupted inside)."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated

from langchain.agents import create_agent
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

from ._fakes import ScriptedChat, ask, notes_script, notes_tools
from ._harness import Built, both_apis

THREAD = {"configurable": {"thread_id": "parent"}}


def notes_agent(counts: Counter):
    model = ScriptedChat(script=notes_script(), counts=counts, per_conversation=True)
    return create_agent(model, tools=notes_tools(counts), name="notes")


class Desk(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    questions: list[str]
    log: Annotated[list[str], operator.add]


def agent_as_node(atlas) -> Built:
    """intake -> agent (the wrapped create_agent, a node of a bare parent) -> wrap_up."""
    counts = Counter()
    parent = StateGraph(Desk)
    parent.add_node("intake", lambda s: {"log": ["intake"]})
    parent.add_node("agent", atlas(notes_agent(counts)))
    parent.add_node("wrap_up", lambda s: {"log": [f"{len(s['messages'])} messages"]})
    parent.add_edge(START, "intake")
    parent.add_edge("intake", "agent")
    parent.add_edge("agent", "wrap_up")
    parent.add_edge("wrap_up", END)
    return Built(parent.compile(), counts)


@both_apis
async def test_wrapped_agent_as_a_node(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask())
        await app.stream(ask(), stream_mode=["updates", "messages", "custom"], subgraphs=True)
        await app.stream(ask(), stream_mode="values")

    outcome = await conformance.check(agent_as_node, drive, api, sessions=3)
    assert outcome.bare.steps[0][1]["log"] == ["intake", "6 messages"]


def agent_fan_out(atlas) -> Built:
    """The wrapped agent once per question, in parallel (Send), under the parent's checkpointer."""
    counts = Counter()

    def fan_out(state: Desk):
        return [Send("agent", {"messages": [HumanMessage(q)]}) for q in state["questions"]]

    parent = StateGraph(Desk)
    parent.add_node("agent", atlas(notes_agent(counts)))
    parent.add_node("collect", lambda s: {"log": [f"{sum(m.type == 'ai' and bool(m.content) for m in s['messages'])} answers"]})
    parent.add_conditional_edges(START, fan_out, ["agent"])
    parent.add_edge("agent", "collect")
    parent.add_edge("collect", END)
    return Built(parent.compile(checkpointer=InMemorySaver()), counts)


@both_apis
async def test_wrapped_agent_in_a_send_fan_out_under_a_parent_thread(conformance, api) -> None:
    questions = {"questions": ["How many items?", "Which items?", "Any milk?"]}

    async def drive(app):
        await app.invoke(questions, THREAD)
        await app.get_state(THREAD)
        # the three agents stream at once, even bare: their updates compared as a set (each names its question)
        await app.stream(questions, {"configurable": {"thread_id": "second"}}, stream_mode="updates", unordered=True)

    outcome = await conformance.check(agent_fan_out, drive, api, sessions=6)
    assert outcome.bare.steps[0][1]["log"] == ["3 answers"]


def agent_called_from_a_node(atlas) -> Built:
    """A node that calls the wrapped agent twice, as a plain function call."""
    counts = Counter()
    agent = atlas(notes_agent(counts))

    def consult(state: Desk) -> Desk:
        answers = [agent.invoke(ask(q))["messages"][-1].content for q in state["questions"]]
        return {"log": answers}

    parent = StateGraph(Desk)
    parent.add_node("consult", consult)
    parent.add_edge(START, "consult")
    return Built(parent.compile(), counts)


async def test_wrapped_agent_called_from_a_node(conformance) -> None:
    async def drive(app):
        await app.invoke({"questions": ["How many?", "Again?"]})
        await app.stream({"questions": ["Once more?"]}, stream_mode=["updates", "messages"])

    await conformance.check(agent_called_from_a_node, drive, sessions=3)


class Outer(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]
    verdict: str


def with_subgraph(atlas, *, ask_inside: bool = False) -> Built:
    """prepare -> research (a compiled subgraph: search -> (confirm: interrupt) -> summarise) -> decide."""
    counts = Counter()

    def search(state: Outer) -> Outer:
        counts["search"] += 1
        return {"notes": [f"found {state['topic']}"]}

    def confirm(state: Outer) -> Outer:
        counts["confirm"] += 1
        return {"notes": [f"confirmed: {interrupt('keep these notes?')}"]}

    inner = StateGraph(Outer)
    inner.add_node("search", search)
    inner.add_node("summarise", lambda s: {"notes": [f"{len(s['notes'])} notes"]})
    inner.add_edge(START, "search")
    if ask_inside:
        inner.add_node("confirm", confirm)
        inner.add_edge("search", "confirm")
        inner.add_edge("confirm", "summarise")
    else:
        inner.add_edge("search", "summarise")
    inner.add_edge("summarise", END)

    outer = StateGraph(Outer)
    outer.add_node("prepare", lambda s: {"notes": ["prepared"]})
    outer.add_node("research", inner.compile())
    outer.add_node("decide", lambda s: {"verdict": " | ".join(s["notes"])})
    outer.add_edge(START, "prepare")
    outer.add_edge("prepare", "research")
    outer.add_edge("research", "decide")
    outer.add_edge("decide", END)
    return Built(atlas(outer.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_subgraph_streams_under_the_same_namespaces(conformance, api) -> None:
    async def drive(app):
        await app.stream({"topic": "tides"}, THREAD, stream_mode=["updates", "values", "debug"], subgraphs=True)
        await app.history(THREAD)

    outcome = await conformance.check(with_subgraph, drive, api)
    namespaces = {chunk[0] for chunk in outcome.bare.steps[0][1]}
    assert len(namespaces) == 2  # the root, and the research subgraph's task


@both_apis
async def test_interrupt_inside_a_subgraph(conformance, api) -> None:
    async def drive(app):
        await app.stream({"topic": "tides"}, THREAD, stream_mode="updates", subgraphs=True)
        await app.get_state(THREAD, subgraphs=True)
        await app.invoke(Command(resume="yes"), THREAD)
        await app.get_state(THREAD, subgraphs=True)

    outcome = await conformance.check(lambda atlas: with_subgraph(atlas, ask_inside=True), drive, api)
    assert outcome.built.counts == {"search": 1, "confirm": 2}
    # the subgraph returns its whole state, so the parent's reducer adds "prepared" again: LangGraph's own doing
    assert outcome.bare.steps[2][1]["verdict"] == "prepared | prepared | found tides | confirmed: yes | 3 notes"


class Tally(TypedDict, total=False):
    word: str
    seen: Annotated[list[str], operator.add]
    summary: str


def stateful_subgraph(atlas) -> Built:
    """A subgraph compiled with checkpointer=True keeps its own state across the parent's runs on a thread."""
    counts = Counter()
    inner = StateGraph(Tally)
    inner.add_node("remember", lambda s: counts.update(["remember"]) or {"seen": [s["word"]]})
    inner.add_edge(START, "remember")

    def ask_memory(state: Tally) -> Tally:
        seen = memory.invoke({"word": state["word"]})["seen"]
        return {"summary": ",".join(seen)}

    memory = inner.compile(checkpointer=True)
    outer = StateGraph(Tally)
    outer.add_node("ask_memory", ask_memory)
    outer.add_edge(START, "ask_memory")
    return Built(atlas(outer.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_a_stateful_subgraph_across_runs(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"word": "a"}, THREAD)
        await app.invoke({"word": "b"}, THREAD)
        await app.get_state(THREAD, subgraphs=True)

    outcome = await conformance.check(stateful_subgraph, drive, api)
    assert outcome.bare.steps[1][1]["summary"] == "a,b"
