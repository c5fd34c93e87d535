"""Async nodes and tools: graphs whose nodes are all coroutines, through ainvoke/astream and through the sync
API (where bare raises, the same error); a client that closes a stream early."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from typing import Annotated

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from ._fakes import ScriptedChat, ask, call, notes_script, notes_tools
from ._harness import Built, both_apis


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]


def async_graph(atlas) -> Built:
    """fetch (async) -> respond (async, calls a streaming model) -> polish (async)."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=[AIMessage("Here is the async answer to your question.")], cycle=True)

    async def fetch(state: Chat) -> Chat:
        counts["fetch"] += 1
        await asyncio.sleep(0)
        return {"log": ["fetched"]}

    async def respond(state: Chat) -> Chat:
        counts["respond"] += 1
        return {"messages": [await model.ainvoke(state["messages"])]}

    async def polish(state: Chat) -> Chat:
        counts["polish"] += 1
        return {"log": [f"{len(state['messages'])} messages"]}

    graph = StateGraph(Chat)
    for name, node in (("fetch", fetch), ("respond", respond), ("polish", polish)):
        graph.add_node(name, node)
    graph.add_edge(START, "fetch")
    graph.add_edge("fetch", "respond")
    graph.add_edge("respond", "polish")
    graph.add_edge("polish", END)
    return Built(atlas(graph.compile()), counts)


async def test_async_nodes_through_ainvoke_and_astream(conformance) -> None:
    async def drive(app):
        await app.invoke(ask("Async?"))
        await app.stream(ask("Async?"), stream_mode=["updates", "messages", "values"])

    await conformance.check(async_graph, drive, "async")


async def test_async_nodes_through_the_sync_api(conformance) -> None:
    """Bare raises for a coroutine-only node called synchronously: the same error, the session not left running."""

    async def drive(app):
        await app.invoke(ask("Sync?"))
        await app.stream(ask("Sync?"), stream_mode="updates")

    outcome = await conformance.check(async_graph, drive, "sync")
    assert outcome.bare.steps[0][1]["raised"] == "TypeError"


def async_tool_agent(atlas) -> Built:
    counts = Counter()

    @tool
    async def lookup(term: str) -> str:
        """Look a term up."""
        counts["lookup"] += 1
        await asyncio.sleep(0)
        return f"{term}: a small bird"

    model = ScriptedChat(counts=counts, script=[call("lookup", "l1", term="wren"), AIMessage("A wren is a small bird.")])
    return Built(atlas(create_agent(model, tools=[lookup])), counts)


async def test_async_tool_in_create_agent(conformance) -> None:
    async def drive(app):
        await app.stream({"messages": [HumanMessage("What is a wren?")]}, stream_mode=["updates", "messages"])

    await conformance.check(async_tool_agent, drive, "async")


@both_apis
async def test_a_stream_closed_early(conformance, api) -> None:
    """The client reads two updates and goes away: bare stops; wrapped stops too and ends its session."""

    def build(atlas):
        counts = Counter()
        model = ScriptedChat(script=notes_script(), counts=counts)
        return Built(atlas(create_agent(model, tools=notes_tools(counts))), counts)

    async def drive(app):
        await app.stream(ask(), stream_mode="updates", take=2)

    outcome = await conformance.check(build, drive, api)
    assert outcome.built.counts["model"] <= 2
