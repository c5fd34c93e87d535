"""with_atlas's and AtlasMiddleware's cost on a LangGraph agent: the bare graph against the wrapped ones, auto lane.

A create_agent agent on an instant fake chat model makes two tool calls and answers; the supervision roles are
instant scripted models and the store is SQLite. Medians over repeated invocations.

Each wrap is timed twice: the user's call alone (the supervisor drained after each call, outside the timed span)
and back to back (the background finish of one call shares the process, and the GIL, with the next calls).
Goals (issues 4 and 13): wrapped at most 1.3x the bare wall time, and at most 3 ms added per session.
Run: .venv/bin/python benchmarks/langgraph_overhead.py [--runs 200]
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


def timed(graph, model, runs: int, supervisor: Supervisor | None = None) -> float:
    """Median ms of ``runs`` invocations; with ``supervisor``, drained after each one outside the timed span (the
    user's call alone), else back to back (the background finishes share the process with the next calls)."""
    samples = []
    for _ in range(runs):
        model.messages = turns()  # a fresh script per run; the graph is built once, as in real use
        started = time.perf_counter()
        graph.invoke({"messages": [HumanMessage("How many items are in todo.txt?")]})
        samples.append((time.perf_counter() - started) * 1000)
        if supervisor is not None:
            supervisor.drain()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    runs = parser.parse_args().runs
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
            for graph, model in ((bare, bare_model), (wrapped, graph_model), (with_middleware, middleware_model)):
                timed(graph, model, 20, supervisor)  # warm up
            rows = [("bare graph", timed(bare, bare_model, runs), None)]
            for name, graph, model in (("with_atlas", wrapped, graph_model), ("AtlasMiddleware", with_middleware, middleware_model)):
                rows.append((f"{name}, call alone", timed(graph, model, runs, supervisor), "drained between calls"))
                rows.append((f"{name}, back to back", timed(graph, model, runs), "background finishes overlap"))
                supervisor.drain()
    bare_ms = rows[0][1]
    print(f"median of {runs} runs, auto lane, two tool calls, instant supervision models, SQLite")
    print(f"{'':<32} {'ms':>7} {'ratio':>6} {'added':>8}")
    for name, ms, note in rows:
        print(f"{name:<32} {ms:>7.2f} {ms / bare_ms:>5.2f}x {ms - bare_ms:>7.2f}   {note or ''}")
    print("goals (issue 13): <= 1.3x bare and <= 3 ms added")


if __name__ == "__main__":
    main()
