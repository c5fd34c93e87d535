"""Human in the loop: ``interrupt()`` in a tool and in nodes, the state at the pause, editing it, resuming with
``Command(resume=..., update=...)``, several and parallel interrupts, and HumanInTheLoopMiddleware."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

from ._fakes import ScriptedChat, ask, call
from ._harness import Built, both_apis

THREAD = {"configurable": {"thread_id": "hitl"}}


def shop_tools(counts: Counter) -> list:
    @tool
    def charge_card(amount: int) -> str:
        """Charge the customer's card."""
        counts["charge_card"] += 1
        return f"charged {amount}"

    @tool
    def ship_order(address: str) -> str:
        """Ship the order; a person approves first."""
        answer = interrupt({"question": "Ship it?", "address": address})
        counts["ship_order"] += 1
        return f"shipped to {address}: {answer}"

    return [charge_card, ship_order]


def shop_agent(atlas) -> Built:
    """create_agent: charges the card (a side effect), then a tool asks a person through ``interrupt()``."""
    counts = Counter()
    model = ScriptedChat(counts=counts, script=[call("charge_card", "pay", amount=30), call("ship_order", "ship", address="1 Main St"),
                                                AIMessage("Paid and shipped.")])
    return Built(atlas(create_agent(model, tools=shop_tools(counts), checkpointer=InMemorySaver())), counts)


@both_apis
async def test_tool_interrupt_pauses_shows_the_pause_and_resumes(conformance, api) -> None:
    async def drive(app):
        paused = await app.invoke(ask("Buy the lamp."), THREAD)
        assert "__interrupt__" in paused
        await app.get_state(THREAD)
        await app.invoke(Command(resume="approved"), THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(shop_agent, drive, api)
    assert outcome.built.counts == {"model": 3, "charge_card": 1, "ship_order": 1}
    state = outcome.bare.steps[1][1]["StateSnapshot"]
    assert state["next"] == ("tools",) and state["tasks"][0]["PregelTask"]["interrupts"]
    assert state["values"]["messages"][-1]["tool_calls"][0]["name"] == "ship_order"  # the pending tool call


@both_apis
async def test_stream_pauses_at_the_interrupt_and_resumes(conformance, api) -> None:
    async def drive(app):
        await app.stream(ask("Buy the lamp."), THREAD, stream_mode=["updates", "values", "custom"])
        await app.stream(Command(resume="approved"), THREAD, stream_mode=["updates", "values", "custom"])

    await conformance.check(shop_agent, drive, api)


@both_apis
async def test_editing_the_pending_tool_call_at_the_pause(conformance, api) -> None:
    """update_state replaces the AI message's tool call (same id) and the run goes on: the edit is kept, the
    card charged once."""

    async def drive(app):
        await app.invoke(ask("Buy the lamp."), THREAD)
        state = await app.get_state(THREAD)
        pending = state.values["messages"][-1]
        edited = AIMessage("", id=pending.id, tool_calls=[{**pending.tool_calls[0], "args": {"address": "2 Side St"}}])
        await app.update_state(THREAD, {"messages": [edited]})
        await app.invoke(None, THREAD)
        await app.invoke(Command(resume="approved"), THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(shop_agent, drive, api)
    assert outcome.built.counts["charge_card"] == 1
    assert "shipped to 2 Side St: approved" in str(outcome.bare.steps[-2][1])


class Order(TypedDict, total=False):
    item: str
    note: str
    status: str
    charged: Annotated[int, operator.add]
    log: Annotated[list[str], operator.add]


def order_graph(atlas) -> Built:
    """charge (a side effect) -> approve (interrupt) -> ship."""
    counts = Counter()

    def charge(state: Order) -> Order:
        counts["charge"] += 1
        return {"charged": 30, "log": ["charged"]}

    def approve(state: Order) -> Order:
        counts["approve"] += 1
        answer = interrupt({"question": f"Ship {state['item']}?", "note": state.get("note", "")})
        return {"status": answer, "log": [f"approved: {answer}"]}

    def ship(state: Order) -> Order:
        counts["ship"] += 1
        return {"log": [f"shipped {state['item']} ({state.get('note', '')})"]}

    graph = StateGraph(Order)
    graph.add_node("charge", charge)
    graph.add_node("approve", approve)
    graph.add_node("ship", ship)
    graph.add_edge(START, "charge")
    graph.add_edge("charge", "approve")
    graph.add_edge("approve", "ship")
    graph.add_edge("ship", END)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_update_state_at_the_pause_then_resume(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"item": "lamp"}, THREAD)
        await app.update_state(THREAD, {"note": "leave at the door"})
        await app.get_state(THREAD)
        await app.invoke(Command(resume="yes"), THREAD)
        await app.history(THREAD)

    outcome = await conformance.check(order_graph, drive, api)
    assert outcome.built.counts["charge"] == 1
    final = outcome.bare.steps[3][1]
    assert final["charged"] == 30 and final["log"][-1] == "shipped lamp (leave at the door)"


@both_apis
async def test_resume_with_an_update(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"item": "lamp"}, THREAD)
        await app.invoke(Command(resume="yes", update={"note": "gift wrap"}), THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(order_graph, drive, api)
    assert outcome.built.counts == {"charge": 1, "approve": 2, "ship": 1}
    assert outcome.bare.steps[1][1]["log"][-1] == "shipped lamp (gift wrap)"


@both_apis
async def test_new_input_instead_of_a_resume(conformance, api) -> None:
    """A paused thread given new input: the pause is dropped, a new run starts (two runs, two sessions)."""

    async def drive(app):
        await app.invoke({"item": "lamp"}, THREAD)
        await app.invoke({"item": "chair"}, THREAD)
        await app.invoke(Command(resume="yes"), THREAD)
        await app.get_state(THREAD)

    await conformance.check(order_graph, drive, api)


class Form(TypedDict, total=False):
    name: str
    age: str
    answers: Annotated[list[str], operator.add]


def form_graph(atlas) -> Built:
    """One node that asks twice: each resume replays the node up to the next interrupt."""
    counts = Counter()

    def ask_both(state: Form) -> Form:
        counts["ask_both"] += 1
        name = interrupt("name?")
        age = interrupt("age?")
        return {"name": name, "age": age}

    graph = StateGraph(Form)
    graph.add_node("ask_both", ask_both)
    graph.add_edge(START, "ask_both")
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_two_interrupts_in_one_node(conformance, api) -> None:
    async def drive(app):
        await app.invoke({"answers": []}, THREAD)
        await app.invoke(Command(resume="Ada"), THREAD)
        await app.get_state(THREAD)
        await app.invoke(Command(resume="36"), THREAD)

    outcome = await conformance.check(form_graph, drive, api)
    assert outcome.bare.steps[-2][1] == {"name": "Ada", "age": "36", "answers": []}


def parallel_questions(atlas) -> Built:
    """Two Send tasks that each interrupt: resumed together by interrupt id."""
    counts = Counter()

    def fan_out(state: Form):
        return [Send("ask_one", {"name": q}) for q in ("colour?", "size?")]

    def ask_one(state: Form) -> Form:
        counts["ask_one"] += 1
        return {"answers": [f"{state['name']} {interrupt(state['name'])}"]}

    graph = StateGraph(Form)
    graph.add_node("ask_one", ask_one)
    graph.add_conditional_edges(START, fan_out, ["ask_one"])
    graph.add_edge("ask_one", END)
    return Built(atlas(graph.compile(checkpointer=InMemorySaver())), counts)


@both_apis
async def test_parallel_interrupts_resumed_by_id(conformance, api) -> None:
    async def drive(app):
        paused = await app.invoke({"answers": []}, THREAD, unordered=True)
        values = {"colour?": "red", "size?": "large"}
        resume = {i.id: values[i.value] for i in paused.get("__interrupt__", ())}
        await app.get_state(THREAD)
        await app.invoke(Command(resume=resume), THREAD)

    outcome = await conformance.check(parallel_questions, drive, api)
    assert sorted(outcome.bare.steps[-2][1]["answers"]) == ["colour? red", "size? large"]


def hitl_agent(atlas) -> Built:
    """create_agent + HumanInTheLoopMiddleware on the card charge."""
    counts = Counter()
    tools = shop_tools(counts)[:1]
    model = ScriptedChat(counts=counts, script=[call("charge_card", "pay", amount=30), AIMessage("Done.")])
    agent = create_agent(model, tools=tools, checkpointer=InMemorySaver(),
                         middleware=[HumanInTheLoopMiddleware(interrupt_on={"charge_card": True})])
    return Built(atlas(agent), counts)


DECISIONS = {
    "approve": {"type": "approve"},
    "edit": {"type": "edit", "edited_action": {"name": "charge_card", "args": {"amount": 25}}},
    "reject": {"type": "reject", "message": "Too expensive."},
}


@both_apis
@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_human_in_the_loop_middleware(conformance, api, decision) -> None:
    async def drive(app):
        await app.invoke(ask("Pay for the lamp."), THREAD)
        await app.get_state(THREAD)
        await app.invoke(Command(resume={"decisions": [DECISIONS[decision]]}), THREAD)
        await app.get_state(THREAD)

    outcome = await conformance.check(hitl_agent, drive, api)
    assert outcome.built.counts["charge_card"] == (0 if decision == "reject" else 1)
