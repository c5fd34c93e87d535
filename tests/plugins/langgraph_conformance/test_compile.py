"""What compile() and with_config() set: a node cache, debug output, the graph's name, config values, a
store, the drawing and the schemas."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated

from langchain_core.runnables import RunnableConfig
from langgraph.cache.memory import InMemoryCache
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from langgraph.types import CachePolicy
from typing_extensions import TypedDict

from ._harness import Built, both_apis

THREAD = {"configurable": {"thread_id": "compile"}}


class Sums(TypedDict, total=False):
    n: int
    square: int
    seen: Annotated[list[str], operator.add]


def square_graph(atlas, *, wrap_compiled=True, **compile_kwargs) -> Built:
    """square (cached by input, when the graph has a cache) -> describe."""
    counts = Counter()

    def square(state: Sums) -> Sums:
        counts["square"] += 1
        return {"square": state["n"] ** 2}

    def describe(state: Sums, config: RunnableConfig) -> Sums:
        counts["describe"] += 1
        return {"seen": [f"{state['n']}^2={state['square']} tags={sorted(config.get('tags', []))} "
                         f"limit={config.get('recursion_limit')}"]}

    graph = StateGraph(Sums)
    graph.add_node("square", square, cache_policy=CachePolicy(key_func=lambda s: str(s.get("n"))))
    graph.add_node("describe", describe)
    graph.add_edge(START, "square")
    graph.add_edge("square", "describe")
    graph.add_edge("describe", END)
    return Built(atlas(graph.compile(**compile_kwargs)), counts)


@both_apis
async def test_node_cache_hits_on_the_second_call(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"n": 4})
        await app.stream({"n": 4}, stream_mode="updates")  # the cached write shows with its metadata
        await app.invoke({"n": 5})

    outcome = await conformance.check(lambda atlas: square_graph(atlas, cache=InMemoryCache()), drive, api)
    assert outcome.built.counts == {"square": 2, "describe": 3}


@both_apis
async def test_debug_true_prints_as_bare(conformance, api) -> None:
    async def drive(app):
        with app.printed():
            await app.invoke({"n": 3})

    outcome = await conformance.check(lambda atlas: square_graph(atlas, debug=True), drive, api)
    assert "square" in outcome.bare.steps[1][1]


@both_apis
async def test_graph_name(conformance, api) -> None:
    async def drive(app):
        app.note("name", [app.app.name, app.app.get_name()])
        await app.stream({"n": 2}, stream_mode="debug")

    await conformance.check(lambda atlas: square_graph(atlas, name="squares"), drive, api)


def configured(atlas) -> Built:
    """with_config on the user's graph: the values reach its nodes through the wrap."""
    built = square_graph(lambda graph: graph)
    return Built(atlas(built.app.with_config(recursion_limit=9, tags=["user-tag"])), built.counts)


@both_apis
async def test_with_config_values_kept(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"n": 2})
        await app.invoke({"n": 2}, {"tags": ["call-tag"]})

    outcome = await conformance.check(configured, drive, api)
    assert outcome.bare.steps[0][1]["seen"] == ["2^2=4 tags=['user-tag'] limit=9"]


@both_apis
async def test_with_config_on_the_returned_graph(conformance, api) -> None:
    def build(atlas):
        built = square_graph(atlas, checkpointer=InMemorySaver())
        return Built(built.app.with_config(recursion_limit=9, tags=["user-tag"], configurable={"thread_id": "fixed"}), built.counts)

    async def drive(app):
        await app.invoke({"n": 2})
        await app.get_state({"configurable": {"thread_id": "fixed"}})

    await conformance.check(build, drive, api)


class Memory(TypedDict, total=False):
    user: str
    greeting: str


def store_graph(atlas) -> Built:
    """compile(store=InMemoryStore()): nodes read and write it through Runtime and get_store()."""
    counts = Counter()
    store = InMemoryStore()

    def remember(state: Memory, runtime: Runtime) -> Memory:
        counts["remember"] += 1
        visits = runtime.store.get(("visits",), state["user"])
        runtime.store.put(("visits",), state["user"], {"n": (visits.value["n"] if visits else 0) + 1})
        return {}

    def greet(state: Memory) -> Memory:
        counts["greet"] += 1
        visits = get_store().get(("visits",), state["user"]).value["n"]
        return {"greeting": f"hello {state['user']}, visit {visits}"}

    graph = StateGraph(Memory)
    graph.add_node("remember", remember)
    graph.add_node("greet", greet)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "greet")
    graph.add_edge("greet", END)
    return Built(atlas(graph.compile(store=store)), counts)


@both_apis
async def test_store_reachable_from_nodes(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"user": "ada"})
        await app.invoke({"user": "ada"})
        app.note("store", [item.value for item in app.app.store.search(("visits",))])

    outcome = await conformance.check(store_graph, drive, api)
    assert outcome.bare.steps[1][1] == {"user": "ada", "greeting": "hello ada, visit 2"}


SUPERVISION = {"atlas_probe", "atlas_escalate", "atlas_teacher", "atlas_judge"}


def user_shape(drawn) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """A drawing as the user's graph: the supervision drawn around it (the documented exception) folded back,
    probe -(run)-> entry as START -> entry, exit -> teacher as exit -> END."""
    edges = set()
    for e in drawn.edges:
        if e.source in SUPERVISION and e.target in SUPERVISION or e.target == "atlas_probe" or e.source in ("atlas_judge", "atlas_teacher"):
            continue
        source = "__start__" if e.source == "atlas_probe" else e.source
        target = "__end__" if e.target == "atlas_teacher" else e.target
        conditional = e.conditional and not (e.source == "atlas_probe" and e.data == "run")
        edges.add((source, target, conditional))
    return sorted(n for n in drawn.nodes if n not in SUPERVISION), sorted(edges)


async def test_drawing(conformance) -> None:
    """The graph a user draws (and LangGraph Studio shows) is the user's, with the supervision drawn around it."""

    async def drive(app):
        for xray in (False, True):
            drawn = app.app.get_graph(xray=xray)
            app.note(f"user's shape, xray={xray}", user_shape(drawn))
            app.note("supervision drawn", SUPERVISION <= set(drawn.nodes) if hasattr(app.app, "session_result") else True)
            drawn.draw_mermaid()  # it still draws

    await conformance.check(square_graph, drive)


@both_apis
async def test_nodes_schemas_and_channels(conformance, api) -> None:
    async def drive(app):
        app.note("nodes", list(app.app.nodes))
        app.note("input schema", app.app.get_input_jsonschema())
        app.note("output schema", app.app.get_output_jsonschema())
        app.note("stream channels", app.app.stream_channels)
        app.note("name", app.app.name)
        app.note("subgraphs", [name for name, _ in app.app.get_subgraphs()])
        await app.invoke({"n": 1}, output_keys=["square"])

    await conformance.check(square_graph, drive, api)


@both_apis
async def test_an_uncompiled_state_graph(conformance, api) -> None:
    """with_atlas(StateGraph) against the user's own graph.compile()."""

    def build(atlas):
        counts = Counter()
        graph = StateGraph(Sums)
        graph.add_node("square", lambda s: counts.update(["square"]) or {"square": s["n"] ** 2})
        graph.add_edge(START, "square")
        wrapped = atlas(graph)
        return Built(wrapped.compile() if isinstance(wrapped, StateGraph) else wrapped, counts)

    async def drive(app):
        await app.invoke({"n": 3})
        await app.stream({"n": 4}, stream_mode="updates")

    await conformance.check(build, drive, api)
