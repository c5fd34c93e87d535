"""What reaches nodes besides the state: runtime context (context_schema), the stream writer, configurable
values, tags and metadata (also in the messages stream's metadata), the user's own callbacks, and batch."""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from ._fakes import ScriptedChat, ask, notes_script, notes_tools
from ._harness import Built, both_apis


@dataclass
class Ctx:
    user: str
    locale: str = "en"


class Greeting(TypedDict, total=False):
    name: str
    lines: Annotated[list[str], operator.add]


def context_graph(atlas) -> Built:
    """Nodes read the run's context through Runtime; one writes progress to the custom stream two ways."""
    counts = Counter()

    def greet(state: Greeting, runtime: Runtime[Ctx]) -> Greeting:
        counts["greet"] += 1
        get_stream_writer()({"stage": "greeting"})
        return {"lines": [f"hello {state['name']} from {runtime.context.user} ({runtime.context.locale})"]}

    def sign(state: Greeting, runtime: Runtime[Ctx]) -> Greeting:
        counts["sign"] += 1
        runtime.stream_writer({"stage": "signing"})
        return {"lines": [f"-- {runtime.context.user}"]}

    graph = StateGraph(Greeting, context_schema=Ctx)
    graph.add_node("greet", greet)
    graph.add_node("sign", sign)
    graph.add_edge(START, "greet")
    graph.add_edge("greet", "sign")
    graph.add_edge("sign", END)
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_runtime_context_reaches_nodes(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"name": "Ada"}, context=Ctx(user="bob", locale="pt"))
        await app.stream({"name": "Ada"}, context={"user": "eve"}, stream_mode=["custom", "updates"])
        app.note("context schema", app.app.get_context_jsonschema())

    outcome = await conformance.check(context_graph, drive, api)
    assert outcome.bare.steps[0][1]["lines"] == ["hello Ada from bob (pt)", "-- bob"]


@both_apis
async def test_stream_writer_in_nodes(conformance, api) -> None:
    async def drive(app):
        await app.stream({"name": "Ada"}, context=Ctx(user="bob"), stream_mode="custom")
        await app.stream({"name": "Ada"}, context=Ctx(user="bob"), stream_mode="custom", subgraphs=True)

    outcome = await conformance.check(context_graph, drive, api)
    assert outcome.bare.steps[0][1] == [{"stage": "greeting"}, {"stage": "signing"}]


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    seen: str


def config_graph(atlas) -> Built:
    """A node reads configurable, tags and metadata from its config and calls a streaming model with it."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=[AIMessage("Configured answer with several words.")], cycle=True)

    def respond(state: Chat, config: RunnableConfig) -> Chat:
        counts["respond"] += 1
        configurable = {k: v for k, v in config["configurable"].items() if not k.startswith("__")}
        seen = f"configurable={sorted(configurable)} user={configurable.get('user_id')} tags={config.get('tags')} " \
               f"metadata={sorted(config.get('metadata', {}))}"
        return {"messages": [model.invoke(state["messages"], config)], "seen": seen}

    graph = StateGraph(Chat)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_configurable_tags_and_metadata_reach_nodes_and_the_messages_stream(conformance, api) -> None:
    config = {"configurable": {"user_id": "u-7"}, "tags": ["billing"], "metadata": {"tenant": "acme"}}

    async def drive(app):
        await app.invoke(ask("Hi"), config)
        await app.stream(ask("Hi"), config, stream_mode="messages")

    outcome = await conformance.check(config_graph, drive, api)
    assert "user=u-7 tags=['billing']" in outcome.bare.steps[0][1]["seen"]


class Runs(BaseCallbackHandler):
    """The user's own callback handler: the runs it hears of, by kind and name."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_chain_start(self, serialized, inputs, *, name=None, tags=None, **kwargs):
        self.events.append(("chain", name, sorted(t for t in tags or [] if not t.startswith("seq:"))))

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.events.append(("chat model", [m.type for m in messages[0]]))

    def on_tool_start(self, serialized, input_str, *, name=None, **kwargs):
        self.events.append(("tool", name))


def callback_agent(atlas) -> Built:
    counts = Counter()
    model = ScriptedChat(script=notes_script(), counts=counts)
    return Built(atlas(create_agent(model, tools=notes_tools(counts))), counts)


@both_apis
async def test_user_callbacks_hear_the_same_runs(conformance, api) -> None:
    """What a tracer (LangSmith, Langfuse, a handler of the user's) is told: the same runs, names and tags."""

    async def drive(app):
        runs = Runs()
        await app.invoke(ask(), {"callbacks": [runs], "tags": ["traced"], "run_name": "my agent"})
        app.note("callbacks", runs.events)

    await conformance.check(callback_agent, drive, api)


@both_apis
async def test_batch(conformance, api) -> None:
    async def drive(app):
        await app.batch([{"name": "Ada"}, {"name": "Bo"}], context=Ctx(user="bob"))

    await conformance.check(context_graph, drive, api)


def chain_node_graph(atlas) -> Built:
    """A node that is a LangChain runnable (prompt | model), not a function."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=[AIMessage("A chain answered this.")], cycle=True)
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), MessagesPlaceholder("messages")])
    graph = StateGraph(Chat)
    graph.add_node("chain", prompt | model | (lambda message: {"messages": [message]}))
    graph.add_edge(START, "chain")
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_a_runnable_chain_as_a_node(conformance, api) -> None:
    async def drive(app):
        runs = Runs()
        await app.invoke(ask("Hi"), {"callbacks": [runs]})
        app.note("callbacks", runs.events)
        await app.stream(ask("Hi"), stream_mode=["messages", "updates"])

    await conformance.check(chain_node_graph, drive, api)
