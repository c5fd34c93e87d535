"""How long the user's call waits for supervision, for every integration, bare against wrapped.

Five integrations run the same small agent (one tool call, then the answer): ``Supervisor.supervise``,
``@atlas_agent``, ``with_atlas`` on a LangGraph ``create_agent`` graph, ``AtlasMiddleware`` in ``create_agent``,
and the Agents SDK ``with_atlas`` runner. The agents' own models are instant fakes; every supervision role (teacher,
judges, synthesizer, probe) is a scripted model that answers after ``--latency-ms`` (200 by default), so any
supervision call on the user's path shows as that much waiting. Lanes are forced by config (auto, then paired).

Each sample times one user call; after it (outside the timed span) the supervisor is drained, so the background
finish of one call never overlaps the next one's timing. Bare and wrapped calls alternate; medians are printed.

Goals (issue 13): in auto the wrapped call returns within bare + 10 ms; in paired within bare + one teacher call
(``--latency-ms``) + 10 ms. A second table runs the same with instant supervision models (``--instant-runs``
samples): ratio and ms added per call; the Agents SDK and @atlas_agent goal there is <= 2 ms added in auto.
PASS/FAIL is printed, never asserted.
Run: .venv/bin/python benchmarks/supervision_latency.py [--runs 7] [--latency-ms 200] [--instant-runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from overhead import ANSWERS  # noqa: E402 - the same scripted answers as the core benchmark

from atlas_learning.config import AtlasConfig  # noqa: E402
from atlas_learning.models import RoleModels, ScriptedModel  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402

TASK = "How many items are in todo.txt?"
ANSWER = "2 items."


class SlowRoles(RoleModels):
    """Every supervision role answers by the schema asked for, after ``delay_s``."""

    def __init__(self, config: AtlasConfig, delay_s: float) -> None:
        super().__init__(config)
        self.delay_s = delay_s

    def get(self, role: str) -> ScriptedModel:
        delay = self.delay_s

        def answer(_messages: Any, schema: Any) -> Any:
            if delay:
                time.sleep(delay)
            return ANSWERS[schema["title"]] if schema else "ok"

        with self._lock:
            if role not in self._by_role:
                self._by_role[role] = ScriptedModel(role=role, ledger=self.ledger, cycle=True, responses=[answer])
            return self._by_role[role]  # type: ignore[return-value]


def read_todo(path: str) -> str:
    """Read a file."""
    return "- milk\n- eggs"


# ------------------------------------------------------------------------------------------ integrations
def build_supervise(supervisor: Supervisor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    def attempt(instructions: str) -> str:
        read_todo("todo.txt")
        return ANSWER

    return (lambda: attempt("")), (lambda: supervisor.supervise(TASK, attempt, agent_name="bench-supervise"))


def build_byoa(supervisor: Supervisor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from atlas_plugins.byoa import atlas_agent, atlas_context

    class Agent:
        def run(self, task: str) -> str:
            output = read_todo("todo.txt")
            atlas_context().tool_call("read_todo", {"path": "todo.txt"}, output=output)
            return ANSWER

    class Bare:
        def run(self, task: str) -> str:
            read_todo("todo.txt")
            return ANSWER

    wrapped = atlas_agent(supervisor=supervisor, agent_name="bench-byoa")(Agent)()
    bare = Bare()
    return (lambda: bare.run(TASK)), (lambda: wrapped.run(TASK))


def _langchain_agent(middleware: list[Any]) -> tuple[Any, Callable[[], None]]:
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    class FakeToolModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    def turns() -> Any:
        return iter([AIMessage("", tool_calls=[{"name": "read_todo", "args": {"path": "todo.txt"}, "id": "a"}]), AIMessage(ANSWER)])

    model = FakeToolModel(messages=turns())

    def reset() -> None:
        model.messages = turns()

    return create_agent(model, tools=[tool(read_todo)], middleware=middleware), reset


def build_with_atlas(supervisor: Supervisor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from atlas_plugins.langgraph import with_atlas

    bare, reset_bare = _langchain_agent([])
    graph, reset_wrapped = _langchain_agent([])
    wrapped = with_atlas(graph, supervisor=supervisor, agent_name="bench-graph")
    return _invoker(bare, reset_bare), _invoker(wrapped, reset_wrapped)


def _invoker(agent: Any, reset: Callable[[], None]) -> Callable[[], Any]:
    """One user call of a LangGraph agent, on a fresh script of its fake model."""
    from langchain_core.messages import HumanMessage

    def invoke() -> Any:
        reset()
        return agent.invoke({"messages": [HumanMessage(TASK)]})
    return invoke


def build_middleware(supervisor: Supervisor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from atlas_plugins.langgraph import AtlasMiddleware

    bare, reset_bare = _langchain_agent([])
    wrapped, reset_wrapped = _langchain_agent([AtlasMiddleware(supervisor=supervisor, agent_name="bench-middleware")])
    return _invoker(bare, reset_bare), _invoker(wrapped, reset_wrapped)


def build_agents_sdk(supervisor: Supervisor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import json

    from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool
    from agents.tracing import set_tracing_disabled
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    from atlas_plugins.openai_agents import with_atlas

    set_tracing_disabled(True)

    class InstantModel(Model):
        """A tool call, then the answer; per run."""

        def __init__(self) -> None:
            self.turn = 0

        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            self.turn += 1
            if self.turn % 2 == 1:
                item: Any = ResponseFunctionToolCall(id="fc_1", call_id="c1", type="function_call", name="read_todo",
                                                     arguments=json.dumps({"path": "todo.txt"}))
            else:
                item = ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed",
                                             content=[ResponseOutputText(type="output_text", text=ANSWER, annotations=[])])
            return ModelResponse(output=[item], usage=Usage(requests=1, input_tokens=10, output_tokens=2, total_tokens=12),
                                 response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    tool = function_tool(read_todo)
    bare_agent = Agent(name="bench-sdk", instructions="Answer.", model=InstantModel(), tools=[tool])
    wrapped_agent = Agent(name="bench-sdk", instructions="Answer.", model=InstantModel(), tools=[tool])
    runner = with_atlas(wrapped_agent, supervisor=supervisor)
    return (lambda: Runner.run_sync(bare_agent, TASK)), (lambda: runner.run_sync(TASK))


INTEGRATIONS = {
    "supervise": build_supervise,
    "@atlas_agent": build_byoa,
    "with_atlas (LangGraph)": build_with_atlas,
    "AtlasMiddleware": build_middleware,
    "Agents SDK runner": build_agents_sdk,
}


# ------------------------------------------------------------------------------------------------ measuring
def measure(build: Callable[[Supervisor], tuple[Callable[[], Any], Callable[[], Any]]], lane: str, delay_s: float,
            runs: int, workdir: Path) -> tuple[float, float]:
    """Median ms of the bare and the wrapped call, alternating, the supervisor drained between samples."""
    config = AtlasConfig.load({"storage": {"url": f"sqlite:///{workdir / f'{lane}-{delay_s}.db'}", "spool_dir": str(workdir / "spool")},
                               "supervision": {"lane": lane}}, environ={})
    supervisor = Supervisor(config, models=SlowRoles(config, delay_s))
    try:
        bare, wrapped = build(supervisor)
        bare(), wrapped()  # warm up: imports, statement caches, the key's history
        supervisor.drain()
        bare_ms, wrapped_ms = [], []
        for _ in range(runs):
            started = time.perf_counter()
            bare()
            bare_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            wrapped()
            wrapped_ms.append((time.perf_counter() - started) * 1000)
            supervisor.drain()
        return statistics.median(bare_ms), statistics.median(wrapped_ms)
    finally:
        supervisor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="samples per integration and lane with slow supervision")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--instant-runs", type=int, default=200, help="samples per integration with instant supervision")
    parser.add_argument("--only", default="", help="comma-separated integration names to run (default: all)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    asyncio.set_event_loop(asyncio.new_event_loop())
    chosen = {name: build for name, build in INTEGRATIONS.items() if not args.only or name in args.only.split(",")}
    delay = args.latency_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        print(f"supervision roles answer after {args.latency_ms:g} ms; median of {args.runs} user calls per cell")
        print(f"{'integration':<24} {'lane':<7} {'bare ms':>8} {'wrapped ms':>10} {'added ms':>9} {'goal':>10}  result")
        for name, build in chosen.items():
            for lane, allowed in (("auto", 10.0), ("paired", args.latency_ms + 10.0)):
                bare_ms, wrapped_ms = measure(build, lane, delay, args.runs, Path(tmp))
                added = wrapped_ms - bare_ms
                print(f"{name:<24} {lane:<7} {bare_ms:>8.1f} {wrapped_ms:>10.1f} {added:>9.1f} {'<= ' + format(allowed, 'g'):>10}  "
                      f"{'PASS' if added <= allowed else 'FAIL'}")
        print()
        print(f"instant supervision models, auto lane; median of {args.instant_runs} user calls")
        print(f"{'integration':<24} {'bare ms':>8} {'wrapped ms':>10} {'ratio':>6} {'added ms':>9}")
        for name, build in chosen.items():
            bare_ms, wrapped_ms = measure(build, "auto", 0.0, args.instant_runs, Path(tmp))
            goal = "  (goal <= 2 ms added)" if name in ("Agents SDK runner", "@atlas_agent") else ""
            print(f"{name:<24} {bare_ms:>8.2f} {wrapped_ms:>10.2f} {wrapped_ms / bare_ms:>5.1f}x {wrapped_ms - bare_ms:>9.2f}{goal}")


if __name__ == "__main__":
    main()
