"""State: reducers (ints, strings, lists, a custom one), Overwrite, private keys, input/output schemas,
pydantic and dataclass states, and message removal."""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Overwrite, StateUpdate
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from ._harness import Built, both_apis

THREAD = {"configurable": {"thread_id": "state"}}


def chain(state_schema, nodes: dict, *, checkpointer=True, **graph_kwargs) -> tuple[StateGraph, Counter]:
    """A StateGraph running ``nodes`` (name -> function of the state) in order; each run is counted."""
    counts = Counter()
    graph = StateGraph(state_schema, **graph_kwargs)
    previous = START
    for name, function in nodes.items():
        def node(state, _name=name, _function=function):
            counts[_name] += 1
            return _function(state)

        graph.add_node(name, node)
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph, counts


def compiled(atlas, state_schema, nodes, **kwargs) -> Built:
    graph, counts = chain(state_schema, nodes, **kwargs)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


class Tally(TypedDict):
    total: Annotated[int, operator.add]
    text: Annotated[str, operator.add]
    items: Annotated[list[str], operator.add]


@both_apis
async def test_int_reducer_adds_once(conformance, api) -> None:
    """5 in, the node adds 1: 6, not 11 (the update applied once)."""

    async def drive(app):
        await app.invoke({"total": 5, "text": "", "items": []}, THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(lambda atlas: compiled(atlas, Tally, {"add_one": lambda s: {"total": 1}}), drive, api)
    assert outcome.bare.steps[0][1]["total"] == 6


@both_apis
async def test_str_reducer_appends_once(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"total": 0, "text": "ab", "items": []}, THREAD)
        await app.invoke({"text": "!"}, THREAD)  # a second turn on the thread: the reducer sees the saved "abc"

    outcome = await conformance.check(lambda atlas: compiled(atlas, Tally, {"add_c": lambda s: {"text": "c"}}), drive, api)
    assert outcome.bare.steps[1][1]["text"] == "abc!c"


@both_apis
async def test_list_reducer_across_turns(conformance, api) -> None:
    nodes = {"one": lambda s: {"items": ["one"]}, "two": lambda s: {"items": ["two"]}}

    async def drive(app):
        await app.invoke({"total": 0, "text": "", "items": ["start"]}, THREAD)
        await app.invoke({"items": ["again"]}, THREAD)

    outcome = await conformance.check(lambda atlas: compiled(atlas, Tally, nodes), drive, api)
    assert outcome.bare.steps[1][1]["items"] == ["start", "one", "two", "again", "one", "two"]


@both_apis
async def test_overwrite_bypasses_the_reducer(conformance, api) -> None:
    nodes = {"add": lambda s: {"items": ["x"]}, "reset": lambda s: {"items": Overwrite(["only"])}, "after": lambda s: {"items": ["after"]}}

    async def drive(app):
        await app.invoke({"total": 0, "text": "", "items": ["a", "b"]}, THREAD)

    outcome = await conformance.check(lambda atlas: compiled(atlas, Tally, nodes), drive, api)
    assert outcome.bare.steps[0][1]["items"] == ["only", "after"]


def count_merges(current: list[str], new: list[str]) -> list[str]:
    """A reducer whose result is not a function of the two values alone: it numbers each merge."""
    return [*current, *(f"{len(current)}:{item}" for item in new)]


class Numbered(TypedDict):
    entries: Annotated[list[str], count_merges]


@both_apis
async def test_custom_reducer_applied_once_per_update(conformance, api) -> None:
    nodes = {"one": lambda s: {"entries": ["one"]}, "two": lambda s: {"entries": ["two"]}}

    async def drive(app):
        await app.invoke({"entries": ["in"]}, THREAD)

    outcome = await conformance.check(lambda atlas: compiled(atlas, Numbered, nodes), drive, api)
    assert outcome.bare.steps[0][1]["entries"] == ["0:in", "1:one", "2:two"]


class Overall(TypedDict):
    question: str
    answer: str


class Private(TypedDict):
    scratch: str


def private_graph(atlas) -> Built:
    """A node writes a private key (not in the overall state) that the next node reads."""
    counts = Counter()

    def think(state: Overall) -> Private:
        counts["think"] += 1
        return {"scratch": state["question"].upper()}

    def answer(state: Private) -> Overall:
        counts["answer"] += 1
        return {"answer": f"answer to {state['scratch']}"}

    graph = StateGraph(Overall)
    graph.add_node("think", think)
    graph.add_node("answer", answer)
    graph.add_edge(START, "think")
    graph.add_edge("think", "answer")
    graph.add_edge("answer", END)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_private_state_between_nodes(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"question": "why"}, THREAD)
        await app.get_state(THREAD)
        await app.history(THREAD)

    outcome = await conformance.check(private_graph, drive, api)
    assert outcome.bare.steps[0][1] == {"question": "why", "answer": "answer to WHY"}


class In(TypedDict):
    question: str


class Out(TypedDict):
    answer: str


class Full(In, Out):
    notes: list[str]


def schemas_graph(atlas) -> Built:
    """input_schema and output_schema narrower than the state: an internal key lives only in checkpoints."""
    counts = Counter()

    def research(state: In) -> Full:
        counts["research"] += 1
        return {"notes": [f"looked up {state['question']}"]}

    def write(state: Full) -> Out:
        counts["write"] += 1
        return {"answer": f"{state['question']}: {len(state['notes'])} note(s)"}

    graph = StateGraph(Full, input_schema=In, output_schema=Out)
    graph.add_node("research", research)
    graph.add_node("write", write)
    graph.add_edge(START, "research")
    graph.add_edge("research", "write")
    graph.add_edge("write", END)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_input_and_output_schemas(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"question": "tides"}, THREAD)
        await app.get_state(THREAD)
        await app.stream({"question": "moons"}, {"configurable": {"thread_id": "other"}}, stream_mode=["values", "updates"])
        app.note("input schema", app.app.get_input_jsonschema())
        app.note("output schema", app.app.get_output_jsonschema())

    outcome = await conformance.check(schemas_graph, drive, api)
    assert outcome.bare.steps[0][1] == {"answer": "tides: 1 note(s)"}
    assert outcome.bare.steps[1][1]["StateSnapshot"]["values"]["notes"] == ["looked up tides"]


class Ticket(BaseModel):
    title: str
    priority: int = 3
    tags: Annotated[list[str], operator.add] = Field(default_factory=list)


@both_apis
async def test_pydantic_state(conformance, api) -> None:
    nodes = {"triage": lambda s: {"priority": 1 if "urgent" in s.title else s.priority, "tags": ["triaged"]},
             "label": lambda s: {"tags": [f"p{s.priority}"]}}

    async def drive(app):
        await app.invoke({"title": "urgent: printer"}, THREAD)
        await app.get_state(THREAD)
        await app.invoke({"title": 7}, {"configurable": {"thread_id": "bad"}})  # a validation error, as bare raises it

    outcome = await conformance.check(lambda atlas: compiled(atlas, Ticket, nodes), drive, api)
    assert outcome.bare.steps[0][1] == {"title": "urgent: printer", "priority": 1, "tags": ["triaged", "p1"]}


@dataclass
class Basket:
    fruit: str
    count: int = 0
    seen: Annotated[list[str], operator.add] = field(default_factory=list)


@both_apis
async def test_dataclass_state(conformance, api) -> None:
    nodes = {"pick": lambda s: {"count": s.count + 2, "seen": [s.fruit]}, "check": lambda s: {"seen": [f"{s.count} {s.fruit}"]}}

    async def drive(app):
        await app.invoke({"fruit": "pear"}, THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(lambda atlas: compiled(atlas, Basket, nodes), drive, api)
    assert outcome.bare.steps[0][1] == {"fruit": "pear", "count": 2, "seen": ["pear", "2 pear"]}


def tidy(state: MessagesState) -> dict:
    """Remove every message but the last, and answer."""
    return {"messages": [*(RemoveMessage(id=m.id) for m in state["messages"][:-1]), AIMessage("tidied", id="tidy")]}


@both_apis
async def test_messages_removed_by_a_node(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"messages": [HumanMessage("one", id="h1"), HumanMessage("two", id="h2")]}, THREAD)
        await app.update_state(THREAD, {"messages": [RemoveMessage(id="tidy")]})
        await app.get_state(THREAD)

    outcome = await conformance.check(lambda atlas: compiled(atlas, MessagesState, {"tidy": tidy}), drive, api)
    assert [m["id"] for m in outcome.bare.steps[0][1]["messages"]] == ["h2", "tidy"]


def echo_back(state: MessagesState) -> dict:
    """A node that returns its whole input plus a reply (add_messages keeps one copy of each id)."""
    return {"messages": [*state["messages"], AIMessage(f"{len(state['messages'])} messages so far", id="reply")]}


@both_apis
async def test_a_node_returning_its_input_messages(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"messages": [HumanMessage("one", id="h1")]}, THREAD)
        await app.stream({"messages": [HumanMessage("two", id="h2")]}, THREAD, stream_mode=["messages", "updates"])

    outcome = await conformance.check(lambda atlas: compiled(atlas, MessagesState, {"echo_back": echo_back}), drive, api)
    assert [m["id"] for m in outcome.bare.steps[0][1]["messages"]] == ["h1", "reply"]


@both_apis
async def test_bulk_update_state_and_copy(conformance, api) -> None:
    """bulk_update_state (several supersteps at once) and update_state(as_node="__copy__") on a thread."""
    nodes = {"one": lambda s: {"items": ["one"]}, "two": lambda s: {"items": ["two"]}}

    async def drive(app):
        await app.invoke({"total": 0, "text": "", "items": []}, THREAD)
        if app.api == "sync":
            app.note("bulk", app.app.bulk_update_state(THREAD, [[StateUpdate({"items": ["a"]}, "one")], [StateUpdate({"text": "b"}, "two")]]))
        else:
            app.note("bulk", await app.app.abulk_update_state(THREAD, [[StateUpdate({"items": ["a"]}, "one")], [StateUpdate({"text": "b"}, "two")]]))
        await app.update_state(THREAD, None, as_node="__copy__")
        await app.history(THREAD)

    await conformance.check(lambda atlas: compiled(atlas, Tally, nodes), drive, api)
