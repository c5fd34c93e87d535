"""Where runs begin and end, as the sessions must follow them: threads interleaved, runs at once, a run begun
by update_state, a no-op call on a finished thread, an error on resume, an interrupt inside a wrapped agent
that a parent graph resumes, and the event APIs (astream_events v2, stream_events v3)."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from typing import Annotated

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from ._fakes import ScriptedChat, ask, call, notes_script, notes_tools
from ._harness import Built, both_apis
from .test_hitl import order_graph, shop_agent, shop_tools


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


@both_apis
async def test_interleaved_threads(conformance, api) -> None:
    """t1 pauses, t2 runs to its end, t1 resumes: two runs, two sessions, none left running."""

    async def drive(app):
        await app.invoke({"item": "lamp"}, thread("t1"))
        await app.invoke({"item": "chair"}, thread("t2"))
        await app.invoke(Command(resume="yes"), thread("t2"))
        await app.invoke(Command(resume="no"), thread("t1"))
        await app.get_state(thread("t1"))

    await conformance.check(order_graph, drive, api)


class Echo(TypedDict, total=False):
    text: str
    log: Annotated[list[str], operator.add]


def echo_graph(atlas, checkpointer=None) -> Built:
    counts = Counter()

    async def shout(state: Echo) -> Echo:
        counts["shout"] += 1
        await asyncio.sleep(0.01)
        return {"log": [state["text"].upper()]}

    async def count(state: Echo) -> Echo:
        counts["count"] += 1
        await asyncio.sleep(0)
        return {"log": [f"{len(state['text'])} letters"]}

    graph = StateGraph(Echo)
    graph.add_node("shout", shout)
    graph.add_node("count", count)
    graph.add_edge(START, "shout")
    graph.add_edge("shout", "count")
    graph.add_edge("count", END)
    return Built(atlas(graph.compile(checkpointer=checkpointer)), counts)


async def test_concurrent_runs_without_threads(conformance) -> None:
    async def drive(app):
        outputs = await asyncio.gather(*(app.app.ainvoke({"text": word}) for word in ("owl", "heron", "kite")))
        app.transcript.runs += 3
        app.note("outputs", list(outputs))

    await conformance.check(echo_graph, drive, "async")


async def test_concurrent_runs_on_threads(conformance) -> None:
    async def drive(app):
        words = ("owl", "heron", "kite")
        outputs = await asyncio.gather(*(app.app.ainvoke({"text": w}, thread(w)) for w in words))
        app.transcript.runs += 3
        app.note("outputs", list(outputs))
        for word in words:
            await app.get_state(thread(word))

    await conformance.check(lambda atlas: echo_graph(atlas, InMemorySaver()), drive, "async")


def concurrent_agent_runs(atlas) -> Built:
    counts = Counter()
    model = ScriptedChat(script=notes_script(), counts=counts, per_conversation=True)
    return Built(atlas(create_agent(model, tools=notes_tools(counts))), counts)


async def test_concurrent_agent_runs(conformance) -> None:
    async def drive(app):
        outputs = await asyncio.gather(*(app.app.ainvoke(ask(q)) for q in ("First?", "Second?", "Third?")))
        app.transcript.runs += 3
        app.note("outputs", list(outputs))

    await conformance.check(concurrent_agent_runs, drive, "async")


@both_apis
async def test_a_run_begun_by_update_state_on_a_new_thread(conformance, api) -> None:
    """update_state as a node on an empty thread, then invoke(None): a run with no input of its own."""

    async def drive(app):
        await app.update_state(thread("fresh"), {"item": "desk", "charged": 10}, as_node="charge")
        await app.get_state(thread("fresh"))
        await app.invoke(None, thread("fresh"), runs=1)
        await app.invoke(Command(resume="yes"), thread("fresh"))

    outcome = await conformance.check(order_graph, drive, api)
    assert outcome.built.counts == {"approve": 2, "ship": 1}


@both_apis
async def test_invoking_a_finished_thread_with_none_runs_nothing(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"item": "lamp"}, thread("done"))
        await app.invoke(Command(resume="yes"), thread("done"))
        await app.invoke(None, thread("done"))
        await app.stream(None, thread("done"), stream_mode=["updates", "values"])

    await conformance.check(order_graph, drive, api)


def strict_approval(atlas) -> Built:
    """A node whose resume value it rejects by raising."""
    counts = Counter()

    def approve(state: Echo) -> Echo:
        counts["approve"] += 1
        answer = interrupt("approve?")
        if answer != "yes":
            raise PermissionError(f"not approved: {answer}")
        return {"log": ["approved"]}

    graph = StateGraph(Echo)
    graph.add_node("approve", approve)
    graph.add_edge(START, "approve")
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_an_error_on_resume_fails_the_run(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"text": "x"}, thread("strict"))
        await app.invoke(Command(resume="maybe"), thread("strict"))
        await app.get_state(thread("strict"))

    outcome = await conformance.check(strict_approval, drive, api)
    assert outcome.bare.steps[1][1] == {"raised": "PermissionError", "message": "not approved: maybe"}
    assert [s.status for s in outcome.sessions()] == ["failed"]


class Desk(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]


def paused_inside_a_wrapped_agent(atlas) -> Built:
    """A parent graph (checkpointed) whose node is the wrapped agent; the agent's tool interrupts. The parent
    resumes: the agent goes on with its own run (one session)."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=[call("charge_card", "pay", amount=30), call("ship_order", "ship", address="1 Main St"),
                                                AIMessage("Paid and shipped.")])
    agent = atlas(create_agent(model, tools=shop_tools(counts)))
    parent = StateGraph(Desk)
    parent.add_node("agent", agent)
    parent.add_node("receipt", lambda s: {"log": [f"{len(s['messages'])} messages"]})
    parent.add_edge(START, "agent")
    parent.add_edge("agent", "receipt")
    parent.add_edge("receipt", END)
    return Built(parent.compile(checkpointer=InMemorySaver()), counts)


@both_apis
async def test_interrupt_inside_a_wrapped_agent_resumed_by_its_parent(conformance, api) -> None:
    async def drive(app):
        await app.invoke(ask("Buy the lamp."), thread("parent"))
        await app.get_state(thread("parent"), subgraphs=True)
        await app.invoke(Command(resume="approved"), thread("parent"))

    outcome = await conformance.check(paused_inside_a_wrapped_agent, drive, api, sessions=1)
    assert outcome.built.counts == {"model": 3, "charge_card": 1, "ship_order": 1}


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
async def test_astream_events_v2(conformance) -> None:
    def build(atlas):
        counts = Counter()
        model = ScriptedChat(script=notes_script(), counts=counts)
        return Built(atlas(create_agent(model, tools=notes_tools(counts))), counts)

    async def drive(app):
        await app.events(ask(), version="v2")

    await conformance.check(build, drive, "async")


@both_apis
@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
async def test_stream_events_v3(conformance, api) -> None:
    async def drive(app):
        await app.events(ask("Buy the lamp."), thread("v3"), version="v3")
        await app.events(Command(resume="approved"), thread("v3"), version="v3")

    await conformance.check(shop_agent, drive, api)


def waiting_graph(atlas) -> Built:
    """A node that waits for ever (until its task is cancelled)."""
    counts = Counter()

    async def wait(state: Echo) -> Echo:
        counts["wait"] += 1
        await asyncio.Event().wait()
        return {}

    graph = StateGraph(Echo)
    graph.add_node("prepare", lambda s: counts.update(["prepare"]) or {"log": ["prepared"]})
    graph.add_node("wait", wait)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "wait")
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


async def test_a_cancelled_run(conformance) -> None:
    async def drive(app):
        task = asyncio.ensure_future(app.app.ainvoke({"text": "x"}, thread("cancel")))
        app.transcript.runs += 1
        for _ in range(200):  # until the waiting node has begun (at most a second)
            if (await app.app.aget_state(thread("cancel"))).next == ("wait",):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            app.note("cancelled", True)
        await app.get_state(thread("cancel"))

    outcome = await conformance.check(waiting_graph, drive, "async")
    assert outcome.built.counts == {"prepare": 1, "wait": 1}


def left_alone(atlas) -> Built:
    """with_atlas is called, but the user goes on calling the graph they passed in: it must stay bare."""
    built = order_graph(lambda graph: graph)
    atlas(built.app)
    return built


@both_apis
async def test_the_graph_passed_in_is_left_alone(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"item": "lamp"}, thread("mine"))
        await app.invoke(Command(resume="yes"), thread("mine"))

    await conformance.check(left_alone, drive, api, sessions=0)
