"""with_atlas's cost on a LangGraph agent: the bare graph against the wrapped one, auto lane.

A create_agent agent on an instant fake chat model makes two tool calls and answers; the supervision roles are
instant scripted models and the store is SQLite. Medians over repeated invocations.

Goals (issue 4): wrapped at most 1.3x the bare wall time, and at most 3 ms added per session.
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
from atlas_plugins.langgraph import with_atlas  # noqa: E402


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


def timed(graph, model, runs: int) -> float:
    samples = []
    for _ in range(runs):
        model.messages = turns()  # a fresh script per run; the graph is built once, as in real use
        started = time.perf_counter()
        graph.invoke({"messages": [HumanMessage("How many items are in todo.txt?")]})
        samples.append((time.perf_counter() - started) * 1000)
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
            bare_model, wrapped_model = FakeToolModel(messages=turns()), FakeToolModel(messages=turns())
            bare = create_agent(bare_model, tools=[read_file, count_lines])
            wrapped = with_atlas(create_agent(wrapped_model, tools=[read_file, count_lines]), supervisor=supervisor, agent_name="bench")
            timed(bare, bare_model, 20), timed(wrapped, wrapped_model, 20)  # warm up
            bare_ms, wrapped_ms = timed(bare, bare_model, runs), timed(wrapped, wrapped_model, runs)
    print(f"bare graph      {bare_ms:7.2f} ms per run (median of {runs})")
    print(f"with_atlas      {wrapped_ms:7.2f} ms per run (auto lane, two tool calls, SQLite)")
    print(f"ratio           {wrapped_ms / bare_ms:7.2f}x   (goal <= 1.3x)")
    print(f"added           {wrapped_ms - bare_ms:7.2f} ms per session (goal <= 3 ms)")


if __name__ == "__main__":
    main()
