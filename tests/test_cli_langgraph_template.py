"""``atlas env init`` and ``atlas run`` on a project shaped like LangGraph's application template
(langchain-ai/react-agent): a ``src/`` layout package whose graph module exposes ``graph``, async nodes, a ``Context``
dataclass given through ``context=``, an async tool that reads the runtime context, and a ``langgraph.json`` that
names the graph ``"agent"`` as ``"./src/react_agent/graph.py:graph"``.

The project is written into ``tmp_path`` and both commands run from its root, in a fresh process, the way
tests/test_cli_commands.py runs ``atlas run``. The chat model is an offline fake: the template's ``Context.model``
reads the ``MODEL`` environment variable (as the real template does), and ``load_chat_model("fake/...")`` returns
a fake that asks for the ``search`` tool once and then answers from its result. Supervision is scripted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from atlas_learning.config import AtlasConfig
from atlas_learning.store import SessionRecord, StepRecord, Store
from tests.test_cli_commands import UNIVERSAL

TEMPLATE: dict[str, str] = {
    "langgraph.json": """
        {
          "$schema": "https://langgra.ph/schema.json",
          "dependencies": ["."],
          "graphs": {
            "agent": "./src/react_agent/graph.py:graph"
          },
          "env": ".env"
        }
    """,
    "pyproject.toml": """
        [project]
        name = "react-agent"
        version = "0.0.1"

        [tool.setuptools]
        packages = ["react_agent"]

        [tool.setuptools.package-dir]
        "react_agent" = "src/react_agent"
    """,
    "src/react_agent/__init__.py": """
        \"\"\"React Agent: a reasoning and action graph.\"\"\"

        from react_agent.graph import graph

        __all__ = ["graph"]
    """,
    "src/react_agent/prompts.py": """
        SYSTEM_PROMPT = \"\"\"You are a helpful AI assistant.

        System time: {system_time}\"\"\"
    """,
    "src/react_agent/context.py": """
        from __future__ import annotations

        import os
        from dataclasses import dataclass, field, fields

        from . import prompts


        @dataclass(kw_only=True)
        class Context:
            \"\"\"The context for the agent: what a run is configured with.\"\"\"

            system_prompt: str = field(default=prompts.SYSTEM_PROMPT)
            model: str = field(default="anthropic/claude-sonnet-4-5-20250929")
            max_search_results: int = field(default=10)

            def __post_init__(self) -> None:
                \"\"\"Fetch env vars for attributes that were not passed as args.\"\"\"
                for f in fields(self):
                    if f.init and getattr(self, f.name) == f.default:
                        setattr(self, f.name, os.environ.get(f.name.upper(), f.default))
    """,
    "src/react_agent/state.py": """
        from __future__ import annotations

        from dataclasses import dataclass, field
        from typing import Sequence

        from langchain_core.messages import AnyMessage
        from langgraph.graph import add_messages
        from langgraph.managed import IsLastStep
        from typing_extensions import Annotated


        @dataclass
        class InputState:
            messages: Annotated[Sequence[AnyMessage], add_messages] = field(default_factory=list)


        @dataclass
        class State(InputState):
            is_last_step: IsLastStep = field(default=False)
    """,
    "src/react_agent/tools.py": """
        from typing import Any, Callable, List

        from langgraph.runtime import get_runtime

        from react_agent.context import Context


        async def search(query: str) -> dict[str, Any]:
            \"\"\"Search for general web results.\"\"\"
            runtime = get_runtime(Context)
            return {"query": query, "max_results": runtime.context.max_search_results,
                    "results": [{"title": "France", "content": "Paris is the capital of France."}]}


        TOOLS: List[Callable[..., Any]] = [search]
    """,
    "src/react_agent/utils.py": """
        from typing import Any

        from langchain_core.language_models import BaseChatModel
        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        from langchain_core.messages import AIMessage, ToolMessage
        from langchain_core.outputs import ChatGeneration, ChatResult


        class OfflineFake(GenericFakeChatModel):
            \"\"\"Asks for the search tool once, then answers from the tool's result. No network.\"\"\"

            def bind_tools(self, tools: Any, **kwargs: Any) -> "OfflineFake":
                return self

            def _generate(self, messages, stop=None, run_manager=None, **kwargs):
                tool_results = [m for m in messages if isinstance(m, ToolMessage)]
                if tool_results:
                    message = AIMessage(content="Paris is the capital of France.")
                else:
                    question = str(messages[-1].content)
                    message = AIMessage(content="", tool_calls=[{"name": "search", "args": {"query": question}, "id": "call_1"}])
                return ChatResult(generations=[ChatGeneration(message=message)])


        def load_chat_model(fully_specified_name: str) -> BaseChatModel:
            provider, model = fully_specified_name.split("/", maxsplit=1)
            if provider == "fake":
                return OfflineFake(messages=iter(()))
            from langchain.chat_models import init_chat_model

            return init_chat_model(model, model_provider=provider)
    """,
    "src/react_agent/graph.py": """
        \"\"\"A custom Reasoning and Action agent.\"\"\"

        from datetime import datetime, timezone
        from typing import Dict, List, Literal, cast

        from langchain_core.messages import AIMessage
        from langgraph.graph import StateGraph
        from langgraph.prebuilt import ToolNode
        from langgraph.runtime import Runtime

        from react_agent.context import Context
        from react_agent.state import InputState, State
        from react_agent.tools import TOOLS
        from react_agent.utils import load_chat_model


        async def call_model(state: State, runtime: Runtime[Context]) -> Dict[str, List[AIMessage]]:
            model = load_chat_model(runtime.context.model).bind_tools(TOOLS)
            system_message = runtime.context.system_prompt.format(system_time=datetime.now(tz=timezone.utc).isoformat())
            response = cast(AIMessage, await model.ainvoke([{"role": "system", "content": system_message}, *state.messages]))
            if state.is_last_step and response.tool_calls:
                return {"messages": [AIMessage(id=response.id, content="Sorry, I could not find an answer.")]}
            return {"messages": [response]}


        builder = StateGraph(State, input_schema=InputState, context_schema=Context)
        builder.add_node(call_model)
        builder.add_node("tools", ToolNode(TOOLS))
        builder.add_edge("__start__", "call_model")


        def route_model_output(state: State) -> Literal["__end__", "tools"]:
            last_message = state.messages[-1]
            if not isinstance(last_message, AIMessage):
                raise ValueError(f"Expected AIMessage in output edges, but got {type(last_message).__name__}")
            return "tools" if last_message.tool_calls else "__end__"


        builder.add_conditional_edges("call_model", route_model_output)
        builder.add_edge("tools", "call_model")

        graph = builder.compile(name="ReAct Agent")
    """,
}


def make_template(root: Path, **overrides: str | None) -> Path:
    """The react-agent template under ``root``; ``overrides`` replace (or, with None, drop) files by relative path."""
    files = {**TEMPLATE, **overrides}
    for relative, text in files.items():
        if text is None:
            continue
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def atlas(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a fresh process from ``cwd``, with no ATLAS_* variables from this one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_") and k != "PYTHONPATH"}
    code = "from atlas_learning.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, **(env or {})}, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str], starts: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr  # a runtime failure: exit status 1
    assert lines[0].startswith(f"atlas: error: {starts}"), lines[0]
    return lines[0]


def add_offline_supervision(config: Path, store_url: str, tmp_path: Path) -> dict[str, Any]:
    """Keep the ``agent:`` section env init wrote; add scripted models and the test's store."""
    data = yaml.safe_load(config.read_text())
    data["models"] = {"default": {"provider": "scripted", "options": {"responses": [UNIVERSAL], "cycle": True}}}
    data["storage"] = {"url": store_url, "spool_dir": str(tmp_path / "spool")}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def test_env_init_reads_langgraph_json_and_run_drives_the_async_graph(store_url: str, tmp_path: Path) -> None:
    project = make_template(tmp_path / "react-agent")

    init = atlas("env", "init", cwd=project)
    assert init.returncode == 0, init.stderr
    written = project / "atlas.yaml"
    text = written.read_text()
    data = yaml.safe_load(text)
    # the graph langgraph.json names, under its name there, imported the way the project's own code imports it
    assert data["agent"] == {"import_path": "react_agent.graph:graph", "kind": "langgraph", "name": "agent"}
    assert "langgraph.json:5  graphs.agent: ./src/react_agent/graph.py:graph" in text, text
    assert "src/react_agent/graph.py:42  graph = builder.compile()" in text, text
    assert "agent: react_agent.graph:graph (langgraph, langgraph.json graph 'agent')" in init.stdout, init.stdout
    assert AtlasConfig.load(written, environ={}).agent.import_path == "react_agent.graph:graph"

    add_offline_supervision(written, store_url, tmp_path)
    # From the project root, with the fake model chosen through the template's own Context (MODEL=...).
    run = atlas("run", "--task", "What is the capital of France?", "--json", cwd=project, env={"MODEL": "fake/offline"})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["kind"] == "langgraph" and result["answer"] == "Paris is the capital of France."
    session = result["session"]
    assert session["learning_key"] == "agent" and session["accepted"] is True and session["reward"] is not None

    with Store(store_url) as store:
        stored = store.get(SessionRecord, session["session_id"])
        steps = store.rows(StepRecord, StepRecord.session_id == session["session_id"])
    assert stored is not None and stored.status == "completed"
    assert stored.final_answer == "Paris is the capital of France."
    # the async tool ran with the context atlas run built from the graph's context schema (Context())
    searches = [s for s in steps if s.tool_name == "search"]
    assert [s.tool_args for s in searches] == [{"query": "What is the capital of France?"}]
    assert '"max_results": 10' in str(searches[0].output) or "'max_results': 10" in str(searches[0].output)


def test_run_from_a_subfolder_with_config_finds_the_src_layout(store_url: str, tmp_path: Path) -> None:
    project = make_template(tmp_path / "react-agent")
    assert atlas("env", "init", str(project), cwd=tmp_path).returncode == 0
    add_offline_supervision(project / "atlas.yaml", store_url, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = atlas("run", "-c", str(project / "atlas.yaml"), "--task", "Capital of France?", cwd=elsewhere,
                env={"MODEL": "fake/offline"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "Paris is the capital of France."


def test_env_init_takes_every_graph_langgraph_json_names(tmp_path: Path) -> None:
    project = make_template(tmp_path / "app", **{"langgraph.json": json.dumps({
        "dependencies": ["."],
        "graphs": {
            "researcher": {"path": "./src/react_agent/graph.py:builder", "description": "the uncompiled builder"},
            "agent": "react_agent.graph:graph",
        },
    }, indent=2)})
    assert atlas("env", "init", cwd=project).returncode == 0
    text = (project / "atlas.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["agent"] == {"import_path": "react_agent.graph:builder", "kind": "langgraph", "name": "researcher"}
    assert '#   import_path: "react_agent.graph:graph"   kind: langgraph   name: "agent"' in text, text


@pytest.mark.parametrize(("entry", "expected"), [
    ("./src/react_agent/missing.py:graph",
     "langgraph.json: graphs.agent './src/react_agent/missing.py:graph': src/react_agent/missing.py does not exist"),
    ("./src/react_agent/graph.py:grahp",
     "langgraph.json: graphs.agent './src/react_agent/graph.py:grahp': src/react_agent/graph.py defines no module-level 'grahp'"),
    ("./src/react_agent/graph.py",
     "langgraph.json: graphs.agent './src/react_agent/graph.py': expected 'path/to/file.py:object'"),
    ("react_agent.grpah:graph",
     "langgraph.json: graphs.agent 'react_agent.grpah:graph': the project has react_agent but no module react_agent.grpah"),
])
def test_a_langgraph_json_graph_that_does_not_import_is_one_line(tmp_path: Path, entry: str, expected: str) -> None:
    project = make_template(tmp_path / "app", **{"langgraph.json": json.dumps({"graphs": {"agent": entry}})})
    line = one_line_error(atlas("env", "init", cwd=project), expected)
    assert "fix" in line  # it says what to do
    assert not (project / "atlas.yaml").exists()


def test_a_langgraph_json_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    project = make_template(tmp_path / "app", **{"langgraph.json": '{"graphs": {"agent": "./src/react_agent/graph.py:graph",}}'})
    one_line_error(atlas("env", "init", cwd=project), "langgraph.json: not valid JSON (line 1")


def test_run_says_in_one_line_when_the_configured_graph_does_not_import(store_url: str, tmp_path: Path) -> None:
    project = make_template(tmp_path / "app")
    assert atlas("env", "init", cwd=project).returncode == 0
    add_offline_supervision(project / "atlas.yaml", store_url, tmp_path)
    (project / "src/react_agent/graph.py").write_text((project / "src/react_agent/graph.py").read_text().replace("graph = builder", "app = builder"))
    one_line_error(atlas("run", "--task", "x", cwd=project),
                   "agent.import_path 'react_agent.graph:graph': importing react_agent.graph failed")


def test_run_chooses_the_async_api_only_for_graphs_that_need_it() -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    from atlas_learning._commands.run import graph_context, needs_async

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content="done")]}

    async def areply(state: MessagesState) -> dict[str, Any]:
        return reply(state)

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return query

    @tool
    async def alookup(query: str) -> str:
        """Look something up, asynchronously."""
        return query

    def graph(node: Any, tools: list[Any] | None = None) -> Any:
        builder = StateGraph(MessagesState)
        builder.add_node("reply", node)
        builder.add_edge(START, "reply")
        if tools is not None:
            builder.add_node("tools", ToolNode(tools))
            builder.add_edge("reply", "tools")
        return builder

    assert not needs_async(graph(reply).compile()) and not needs_async(graph(reply, [lookup]).compile())  # invoke, as before
    assert needs_async(graph(areply).compile()) and needs_async(graph(areply))  # a compiled graph or its builder
    assert needs_async(graph(reply, [alookup]).compile())  # an async-only tool in a ToolNode
    assert needs_async(graph(graph(areply).compile()).compile())  # an async node inside a subgraph
    assert graph_context(graph(reply).compile()) is None  # no context schema: no context= at all
