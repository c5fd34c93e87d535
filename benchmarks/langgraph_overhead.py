"""with_atlas's and AtlasMiddleware's cost on a LangGraph agent: the bare graph against the wrapped ones, auto lane.

A create_agent agent on an instant fake chat model makes two tool calls and answers; the supervision roles are
instant scripted models and the store is SQLite. Medians over repeated invocations.

Each wrap is timed twice: the user's call alone (the supervisor drained after each call, outside the timed span)
and back to back (the background finish of one call shares the process, and the GIL, with the next calls).
The variants run in short blocks that take turns, so the machine's drift (these machines are noisy) hits all
of them alike; the figures are medians over every block.
Goals (issues 4, 13 and 14): wrapped at most 1.3x the bare wall time, and at most 3 ms added per session.
Run: .venv/bin/python benchmarks/langgraph_overhead.py [--runs 300] [--block 10]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

sys.path.insert(0, str(Path(__file__).parent))
from overhead import InstantRoles  # noqa: E402 - the same instant roles as the core benchmark

from atlas_learning import AtlasConfig, Supervisor  # noqa: E402
from atlas_plugins.langgraph import AtlasMiddleware, with_atlas  # noqa: E402


class FakeToolModel(GenericFakeChatModel):
    def bind_tools(self, tools, **kwargs):
        return self


@tool
def read_file(path: str) -> str:
    """Read a file."""
    return "- milk\n- eggs"


@tool
def count_lines(text: str) -> int:
    """Count lines."""
    return len(text.splitlines())


def turns():
    return iter([
        AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "todo.txt"}, "id": "a"}]),
        AIMessage("", tool_calls=[{"name": "count_lines", "args": {"text": "- milk\n- eggs"}, "id": "b"}]),
        AIMessage("2 items."),
    ])


def block(graph, model, runs: int, supervisor: Supervisor, drained: bool) -> tuple[list[float], list[float]]:
    """(wall ms, process CPU ms) of ``runs`` invocations; with ``drained`` the supervisor is drained after each one
    outside the timed span (the user's call alone), else only after the block (back to back: the background
    finishes share the process with the next calls of the block). The CPU time counts every thread of the
    process during the call: the work the wrap adds, apart from waits and the machine's other load."""
    wall, cpu = [], []
    for _ in range(runs):
        model.messages = turns()  # a fresh script per run; the graph is built once, as in real use
        started, started_cpu = time.perf_counter(), time.process_time()
        graph.invoke({"messages": [HumanMessage("How many items are in todo.txt?")]})
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        if drained:
            supervisor.drain()
    supervisor.drain()  # the next block starts with nothing finishing in the background
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--block", type=int, default=10, help="runs per block; the variants' blocks take turns")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = AtlasConfig.load({"storage": {"url": f"sqlite:///{tmp}/bench.db", "spool_dir": f"{tmp}/spool"},
                                   "supervision": {"lane": "auto"}}, environ={})
        with Supervisor(config, models=InstantRoles(config)) as supervisor:
            bare_model, graph_model, middleware_model = (FakeToolModel(messages=turns()) for _ in range(3))
            bare = create_agent(bare_model, tools=[read_file, count_lines])
            wrapped = with_atlas(create_agent(graph_model, tools=[read_file, count_lines]), supervisor=supervisor, agent_name="bench")
            with_middleware = create_agent(middleware_model, tools=[read_file, count_lines],
                                           middleware=[AtlasMiddleware(supervisor=supervisor, agent_name="bench-mw")])
            variants = [("bare graph", bare, bare_model, True, None),
                        ("with_atlas, call alone", wrapped, graph_model, True, "drained between calls"),
                        ("with_atlas, back to back", wrapped, graph_model, False, "background finishes overlap"),
                        ("AtlasMiddleware, call alone", with_middleware, middleware_model, True, "drained between calls"),
                        ("AtlasMiddleware, back to back", with_middleware, middleware_model, False, "background finishes overlap")]
            for _, graph, model, drained, _ in variants:
                block(graph, model, 20, supervisor, drained)  # warm up
            samples: dict[str, list[float]] = {name: [] for name, *_ in variants}
            cpu: dict[str, list[float]] = {name: [] for name, *_ in variants}
            for _ in range(max(1, args.runs // args.block)):  # blocks in turn: the machine's drift hits every variant alike
                for name, graph, model, drained, _ in variants:
                    wall, used = block(graph, model, args.block, supervisor, drained)
                    samples[name] += wall
                    cpu[name] += used
    bare_ms, bare_cpu = statistics.median(samples["bare graph"]), statistics.mean(cpu["bare graph"])
    print(f"median of {args.runs} runs each, in blocks of {args.block} taking turns; auto lane, two tool calls, "
          "instant supervision models, SQLite")
    print(f"{'':<32} {'ms':>7} {'ratio':>6} {'added':>8}   {'CPU ms':>7} {'ratio':>6}")
    for name, *_, note in variants:
        ms, used = statistics.median(samples[name]), statistics.mean(cpu[name])
        print(f"{name:<32} {ms:>7.2f} {ms / bare_ms:>5.2f}x {ms - bare_ms:>7.2f}   {used:>7.2f} {used / bare_cpu:>5.2f}x   "
              f"{note or ''}")
    print("goals (issues 4, 13, 14), on the wall time: <= 1.3x bare and <= 3 ms added; the CPU columns are the "
          "process's CPU time per call (mean, every thread): the work added, apart from waits")


if __name__ == "__main__":
    main()
