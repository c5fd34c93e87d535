"""Control flow: the recursion limit, Send fan-out with a reducer, Command(goto=...), conditional edges and
entry points, parallel branches joined by a deferred node, retries, and errors raised by nodes."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated, Literal

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, RetryPolicy, Send
from typing_extensions import TypedDict

from ._harness import Built, both_apis

THREAD = {"configurable": {"thread_id": "flow"}}


class Loop(TypedDict, total=False):
    n: int
    path: Annotated[list[str], operator.add]


def counting(counts: Counter, name: str, update):
    def node(state):
        counts[name] += 1
        return update(state)

    return node


def loop_graph(atlas, *, stop_at: int | None = None) -> Built:
    """tick -> tick -> ... (forever, or until n reaches ``stop_at``)."""
    counts = Counter()
    graph = StateGraph(Loop)
    graph.add_node("tick", counting(counts, "tick", lambda s: {"n": s["n"] + 1, "path": [f"tick {s['n']}"]}))
    graph.add_edge(START, "tick")
    graph.add_conditional_edges("tick", lambda s: END if stop_at is not None and s["n"] >= stop_at else "tick")
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_recursion_limit_raises_at_the_same_step(conformance, api) -> None:
    async def drive(app):
        await app.stream({"n": 0}, {"recursion_limit": 4, **THREAD}, stream_mode="updates")
        await app.get_state(THREAD)

    outcome = await conformance.check(loop_graph, drive, api)
    assert outcome.bare.steps[0][1]["raised"] == "GraphRecursionError" and outcome.built.counts == {"tick": 4}
    assert [s.status for s in outcome.sessions()] == ["failed"]


@both_apis
async def test_the_tightest_recursion_limit_bare_allows_is_enough(conformance, api) -> None:
    """Five ticks finish under recursion_limit=6 and not under 5 (the input step counts too): the same wrapped,
    however many steps supervision takes."""

    async def drive(app):
        await app.invoke({"n": 0}, {"recursion_limit": 6, "configurable": {"thread_id": "enough"}})
        await app.invoke({"n": 0}, {"recursion_limit": 5, "configurable": {"thread_id": "short"}})

    outcome = await conformance.check(lambda atlas: loop_graph(atlas, stop_at=5), drive, api)
    assert outcome.bare.steps[0][1]["n"] == 5 and outcome.bare.steps[1][1]["raised"] == "GraphRecursionError"


class Essays(TypedDict, total=False):
    topics: list[str]
    topic: str
    drafts: Annotated[list[str], operator.add]
    best: str


def map_reduce(atlas) -> Built:
    counts = Counter()

    def fan_out(state: Essays):
        return [Send("draft", {"topic": t}) for t in state["topics"]]

    graph = StateGraph(Essays)
    graph.add_node("draft", counting(counts, "draft", lambda s: {"drafts": [f"on {s['topic']}"]}))
    graph.add_node("pick", counting(counts, "pick", lambda s: {"best": max(s["drafts"], key=len)}))
    graph.add_conditional_edges(START, fan_out, ["draft"])
    graph.add_edge("draft", "pick")
    graph.add_edge("pick", END)
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_send_map_reduce(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"topics": ["owls", "lighthouses", "tea"]})
        await app.stream({"topics": ["a", "bb"]}, stream_mode=["updates", "debug"], unordered=True)

    outcome = await conformance.check(map_reduce, drive, api)
    assert outcome.bare.steps[0][1]["drafts"] == ["on owls", "on lighthouses", "on tea"]


class Route(TypedDict, total=False):
    text: str
    kind: str
    log: Annotated[list[str], operator.add]


def command_graph(atlas) -> Built:
    """A node that routes with Command(goto=..., update=...) among declared destinations."""
    counts = Counter()

    def classify(state: Route) -> Command[Literal["shout", "whisper"]]:
        counts["classify"] += 1
        loud = state["text"].endswith("!")
        return Command(goto="shout" if loud else "whisper", update={"kind": "loud" if loud else "quiet"})

    def finish(state: Route) -> Command:
        counts["finish"] += 1
        return Command(goto=END, update={"log": ["finished"]})

    graph = StateGraph(Route)
    graph.add_node("classify", classify)
    graph.add_node("shout", counting(counts, "shout", lambda s: {"log": [s["text"].upper()]}))
    graph.add_node("whisper", counting(counts, "whisper", lambda s: {"log": [s["text"].lower()]}))
    graph.add_node("finish", finish)
    graph.add_edge(START, "classify")
    graph.add_edge("shout", "finish")
    graph.add_edge("whisper", "finish")
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_command_goto(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"text": "Hi!"})
        await app.stream({"text": "Psst"}, stream_mode="updates")

    outcome = await conformance.check(command_graph, drive, api)
    assert outcome.built.counts == {"classify": 2, "shout": 1, "whisper": 1, "finish": 2}


def send_by_command(atlas) -> Built:
    """A node that fans out with Command(goto=[Send(...), ...])."""
    counts = Counter()

    def split(state: Essays) -> Command:
        counts["split"] += 1
        return Command(goto=[Send("draft", {"topic": t}) for t in state["topics"]], update={"best": "pending"})

    graph = StateGraph(Essays)
    graph.add_node("split", split, destinations=("draft",))
    graph.add_node("draft", counting(counts, "draft", lambda s: {"drafts": [f"on {s['topic']}"]}))
    graph.add_edge(START, "split")
    graph.add_edge("draft", END)
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_command_goto_send(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"topics": ["x", "y"]})

    outcome = await conformance.check(send_by_command, drive, api)
    assert outcome.bare.steps[0][1]["drafts"] == ["on x", "on y"]


def branching(atlas) -> Built:
    """A conditional entry point and a conditional edge with a path map."""
    counts = Counter()
    graph = StateGraph(Route)
    graph.add_node("short", counting(counts, "short", lambda s: {"kind": "short"}))
    graph.add_node("long", counting(counts, "long", lambda s: {"kind": "long"}))
    graph.add_node("again", counting(counts, "again", lambda s: {"log": ["again"], "text": s["text"][:-1]}))
    graph.add_conditional_edges(START, lambda s: "s" if len(s["text"]) < 4 else "l", {"s": "short", "l": "long"})
    graph.add_conditional_edges("long", lambda s: "again", {"again": "again"})
    graph.add_conditional_edges("again", lambda s: "done" if len(s["text"]) < 4 else "more", {"done": END, "more": "long"})
    graph.add_edge("short", END)
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_conditional_edges(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"text": "abc"})
        await app.stream({"text": "abcdef"}, stream_mode="updates")

    outcome = await conformance.check(branching, drive, api)
    assert outcome.built.counts == {"short": 1, "long": 3, "again": 3}


def deferred_join(atlas) -> Built:
    """start -> (a -> a2 -> a3) and (b) -> join (defer=True: runs once, when both branches are done)."""
    counts = Counter()
    graph = StateGraph(Route)
    for name in ("a", "a2", "a3", "b"):
        graph.add_node(name, counting(counts, name, lambda s, _n=name: {"log": [_n]}))
    graph.add_node("join", counting(counts, "join", lambda s: {"kind": "+".join(s["log"])}), defer=True)
    graph.add_edge(START, "a")
    graph.add_edge(START, "b")
    graph.add_edge("a", "a2")
    graph.add_edge("a2", "a3")
    graph.add_edge("a3", "join")
    graph.add_edge("b", "join")
    graph.add_edge("join", END)
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_parallel_branches_with_a_deferred_join(conformance, api) -> None:
    async def drive(app):
        await app.stream({"text": "x"}, stream_mode=["updates", "values"], unordered=True)

    outcome = await conformance.check(deferred_join, drive, api)
    assert outcome.built.counts["join"] == 1


def flaky(atlas) -> Built:
    """A node that fails twice, then works, under RetryPolicy."""
    counts = Counter()

    def fetch(state: Route) -> Route:
        counts["fetch"] += 1
        if counts["fetch"] % 3:
            raise ConnectionError(f"attempt {counts['fetch']} failed")
        return {"log": [f"fetched after {counts['fetch']}"]}

    graph = StateGraph(Route)
    graph.add_node("fetch", fetch, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False,
                                                             retry_on=ConnectionError))
    graph.add_edge(START, "fetch")
    graph.add_edge("fetch", END)
    return Built(atlas(graph.compile()), counts)


@both_apis
async def test_retry_policy_on_a_flaky_node(conformance, api) -> None:
    async def drive(app):
        await app.stream({"text": "x"}, stream_mode=["updates", "tasks"])

    outcome = await conformance.check(flaky, drive, api)
    assert outcome.built.counts == {"fetch": 3}


def raising(atlas) -> Built:
    counts = Counter()

    def check(state: Route) -> Route:
        counts["check"] += 1
        raise ValueError(f"bad input: {state['text']!r}")

    graph = StateGraph(Route)
    graph.add_node("prepare", counting(counts, "prepare", lambda s: {"log": ["prepared"]}))
    graph.add_node("check", check)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "check")
    graph.add_edge("check", END)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_a_node_error_propagates_unchanged(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"text": "x"}, THREAD)
        await app.stream({"text": "y"}, {"configurable": {"thread_id": "streamed"}}, stream_mode="updates")
        await app.get_state(THREAD)

    outcome = await conformance.check(raising, drive, api)
    assert outcome.bare.steps[0][1] == {"raised": "ValueError", "message": "bad input: 'x'"}
    assert [s.status for s in outcome.sessions()] == ["failed", "failed"]


def goto_parent(atlas) -> Built:
    """A node in a subgraph hands off to a node of its parent: Command(graph=Command.PARENT, goto=...)."""
    counts = Counter()

    def handoff(state: Route) -> Command:
        counts["handoff"] += 1
        return Command(graph=Command.PARENT, goto="billing", update={"log": ["handed off"]})

    inner = StateGraph(Route)
    inner.add_node("handoff", handoff)
    inner.add_edge(START, "handoff")
    desk = inner.compile()

    parent = StateGraph(Route)
    parent.add_node("desk", desk, destinations=("billing",))
    parent.add_node("billing", counting(counts, "billing", lambda s: {"log": ["billed"]}))
    parent.add_edge(START, "desk")
    parent.add_edge("billing", END)
    return Built(atlas(parent.compile()), counts)


@both_apis
async def test_command_to_the_parent_graph(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"text": "refund"})
        await app.stream({"text": "refund"}, stream_mode="updates", subgraphs=True)

    outcome = await conformance.check(goto_parent, drive, api)
    assert outcome.bare.steps[0][1]["log"] == ["handed off", "billed"]
