"""Persistence and time travel: history, replay from a checkpoint, forks made with update_state(as_node=...),
past states, and static and call-time breakpoints."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from ._harness import Built, both_apis, find

THREAD = {"configurable": {"thread_id": "travel"}}


class Trip(TypedDict, total=False):
    city: str
    steps: Annotated[list[str], operator.add]


def trip_graph(atlas, *, ask: bool = False, **compile_kwargs) -> Built:
    """plan -> book -> (confirm: interrupt, when ``ask``) -> report."""
    counts = Counter()

    def step(name):
        def node(state: Trip) -> Trip:
            counts[name] += 1
            if name == "confirm":
                return {"steps": [f"confirm {interrupt('confirm?')}"]}
            return {"steps": [f"{name} {state['city']}"]}

        return node

    names = ["plan", "book", *(["confirm"] if ask else []), "report"]
    graph = StateGraph(Trip)
    previous = START
    for name in names:
        graph.add_node(name, step(name))
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver(), **compile_kwargs)), counts)


@both_apis
async def test_state_history(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD)
        await app.history(THREAD)
        await app.history(THREAD, limit=2)

    outcome = await conformance.check(trip_graph, drive, api)
    history = outcome.bare.steps[1][1]
    assert [s["StateSnapshot"]["next"] for s in history] == [(), ("report",), ("book",), ("plan",), ("__start__",)]
    assert [s["StateSnapshot"]["metadata"]["step"] for s in history] == [3, 2, 1, 0, -1]


@both_apis
async def test_replay_from_a_checkpoint_reruns_only_later_nodes(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD)
        before_book = find(await app.history(THREAD), next=("book",))
        await app.invoke(None, before_book.config)
        await app.history(THREAD)

    outcome = await conformance.check(trip_graph, drive, api)
    assert outcome.built.counts == {"plan": 1, "book": 2, "report": 2}


@both_apis
async def test_fork_with_update_state_as_node(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD)
        before_book = find(await app.history(THREAD), next=("book",))
        fork = await app.update_state(before_book.config, {"city": "Rome"}, as_node="plan")
        await app.get_state(fork)
        await app.invoke(None, fork)
        await app.history(THREAD)

    outcome = await conformance.check(trip_graph, drive, api)
    assert outcome.built.counts == {"plan": 1, "book": 2, "report": 2}
    assert outcome.bare.steps[4][1]["steps"] == ["plan Oslo", "book Rome", "report Rome"]


@both_apis
async def test_state_at_a_past_checkpoint(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD)
        first = find(await app.history(THREAD), next=("plan",))
        await app.get_state(first.config)

    await conformance.check(trip_graph, drive, api)


@both_apis
async def test_replay_from_before_an_interrupt_asks_again(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD)
        await app.invoke(Command(resume="yes"), THREAD)
        before = find(await app.history(THREAD), next=("confirm",))
        await app.invoke(None, before.config)
        await app.get_state(THREAD)
        await app.invoke(Command(resume="no"), THREAD)

    outcome = await conformance.check(lambda atlas: trip_graph(atlas, ask=True), drive, api)
    assert outcome.bare.steps[-2][1]["steps"][-2:] == ["confirm no", "report Oslo"]


@both_apis
async def test_compiled_interrupt_before(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD)
        await app.get_state(THREAD)
        await app.invoke(None, THREAD)

    outcome = await conformance.check(lambda atlas: trip_graph(atlas, interrupt_before=["book"]), drive, api)
    assert outcome.bare.steps[1][1]["StateSnapshot"]["next"] == ("book",)


@both_apis
async def test_compiled_interrupt_after(conformance, api) -> None:
    async def drive(app):
        await app.stream({"city": "Oslo"}, THREAD, stream_mode="updates")
        await app.get_state(THREAD)
        await app.stream(None, THREAD, stream_mode="updates")

    outcome = await conformance.check(lambda atlas: trip_graph(atlas, interrupt_after=["plan"]), drive, api)
    assert outcome.bare.steps[0][1][-1] == {"__interrupt__": ()}


@both_apis
async def test_call_time_breakpoints(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD, interrupt_before=["book"])
        await app.get_state(THREAD)
        await app.invoke(None, THREAD, interrupt_after=["book"])
        await app.get_state(THREAD)
        await app.invoke(None, THREAD)

    outcome = await conformance.check(trip_graph, drive, api)
    assert outcome.built.counts == {"plan": 1, "book": 1, "report": 1}


@both_apis
async def test_breakpoint_edit_then_continue(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD, interrupt_before=["report"])
        await app.update_state(THREAD, {"steps": ["human check"]})
        await app.get_state(THREAD)
        await app.invoke(None, THREAD)

    outcome = await conformance.check(trip_graph, drive, api)
    assert outcome.bare.steps[-2][1]["steps"] == ["plan Oslo", "book Oslo", "human check", "report Oslo"]


@both_apis
async def test_durability_exit_saves_only_the_end(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"city": "Oslo"}, THREAD, durability="exit")
        await app.history(THREAD)

    await conformance.check(trip_graph, drive, api)


@both_apis
async def test_interrupt_before_every_node(conformance, api) -> None:
    async def drive(app):
        for _ in range(4):
            await app.invoke({"city": "Oslo"} if _ == 0 else None, THREAD, interrupt_before="*")
            await app.get_state(THREAD)

    outcome = await conformance.check(trip_graph, drive, api)
    assert outcome.built.counts == {"plan": 1, "book": 1, "report": 1}
