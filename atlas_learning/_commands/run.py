"""``atlas run``: import the configured agent (``agent.import_path``) and run it once under supervision.

What the object is decides how it is wrapped (``agent.kind: auto`` tells them apart by type):

* a LangGraph graph (compiled, or a StateGraph): ``atlas_plugins.langgraph.with_atlas(graph, config)``, invoked with
  ``{"messages": [("user", task)]}``. Through the async API (``ainvoke``, in an event loop of its own) when the
  graph has a node or tool that only has an async implementation (``async def call_model``, an ``async def``
  tool in a ToolNode, in the graph or a subgraph), else through ``invoke`` as before: the sync API cannot run an
  async node, and the async one runs sync nodes in a worker thread, which code written for ``invoke`` may not
  expect. A graph with a context schema (``StateGraph(..., context_schema=Context)``) gets ``context=Context()``,
  built from its defaults (given no context, LangGraph leaves ``runtime.context`` None, which nodes such as the
  template's ``runtime.context.model`` cannot read);
* an OpenAI Agents SDK ``Agent``: ``atlas_plugins.openai_agents.with_atlas(agent, config).run_sync(task)``;
* a class (or an instance of one) with an entry method: ``@atlas_agent(config=...)`` applied to the class, an
  instance made with no arguments, its entry method called with the task;
* a function ``f(task) -> str`` (``f(task, instructions=...)`` gets lessons and guidance too):
  ``Supervisor(config).supervise(task, ...)``.

The import path is the project's: the working folder and the folder of the config file are put on ``sys.path``, and
so is a ``src/`` folder in either (a src layout, such as LangGraph's application template), so ``react_agent.graph``
imports from the project root as it does once the project is installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError, UsageError
from ._common import fmt_reward, load_config


def import_folders(config_path: Path | None) -> list[Path]:
    """The folders ``atlas run`` imports the agent from, in order: the config file's folder and the working
    folder, each followed by its ``src/`` folder when that is a src layout (a folder, not itself a package)."""
    roots = [Path.cwd().resolve()]
    if config_path is not None:
        roots.insert(0, config_path.resolve().parent)
    folders: list[Path] = []
    for root in roots:
        src = root / "src"
        for folder in (root, src) if src.is_dir() and not (src / "__init__.py").exists() else (root,):
            if folder not in folders:
                folders.append(folder)
    return folders


def _ensure_import_path(config_path: Path | None) -> None:
    for folder in reversed(import_folders(config_path)):
        text = str(folder)
        if text not in sys.path:
            sys.path.insert(0, text)


def load_object(import_path: str) -> Any:
    """The object ``package.module:attribute`` names, or an AtlasError saying why not in one line."""
    module_name, _, attribute = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise AtlasError(f"agent.import_path {import_path!r}: no module named {missing!r}; run from the project root "
                             "(atlas run imports from the working folder, the folder of atlas.yaml and a src/ folder in "
                             "either) or fix agent.import_path") from None
        raise AtlasError(f"agent.import_path {import_path!r}: importing {module_name} failed: {exc}; install what the "
                         "project needs (e.g. pip install -e . in its root)") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed at import time: one line saying so
        raise AtlasError(f"agent.import_path {import_path!r}: importing {module_name} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AtlasError(f"agent.import_path {import_path!r}: {module_name} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def _from_module(obj: Any, prefix: str, names: tuple[str, ...] | None = None) -> bool:
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if (module == prefix or module.startswith(prefix + ".")) and (names is None or cls.__name__ in names):
            return True
    return False


def detect_kind(obj: Any) -> str:
    """langgraph, openai_agents, byoa or function, by the object's type; AtlasError when it is none of them."""
    if _from_module(obj, "langgraph"):
        return "langgraph"
    if _from_module(obj, "agents", ("Agent",)):
        return "openai_agents"
    if inspect.isclass(obj):
        return "byoa"
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return "function"
    if callable(getattr(obj, "run", None)):
        return "byoa"
    if callable(obj):
        return "function"
    raise AtlasError(f"agent: a {type(obj).__name__} is not something atlas run can drive: expected a LangGraph graph, "
                     "an Agents SDK Agent, an agent class or a function f(task) -> str")


def _kind(obj: Any, agent: Any) -> str:
    if agent.kind == "auto":
        return detect_kind(obj)
    try:
        detected = detect_kind(obj)
    except AtlasError:
        detected = None
    compatible = detected == agent.kind or (agent.kind == "function" and callable(obj)) or (
        agent.kind == "byoa" and detected == "function" and not inspect.isfunction(obj))
    if not compatible:
        raise AtlasError(f"agent.kind is {agent.kind} but {agent.import_path} is a {type(obj).__name__}"
                         + (f" (it runs as {detected})" if detected else "") + "; fix agent.kind or set it to auto")
    return agent.kind


def run_agent(*, config: Path | None, store: str | None = None, task: str, as_json: bool) -> None:
    loaded = load_config(config, store)
    origin = str(config) if config is not None else "atlas.yaml"
    agent = loaded.agent
    if not agent.import_path:
        raise AtlasError(f"{origin}: agent.import_path is not set; run `atlas env init` or add agent: {{import_path: package.module:object}}")
    if not task.strip():
        raise UsageError("--task: give the task to run, e.g. --task \"How many files are in ./data?\"")
    _ensure_import_path(config)
    obj = load_object(agent.import_path)
    kind = _kind(obj, agent)
    from .. import progress

    progress.set_default(True)  # a live status line on a terminal, for the supervisor whichever wrapper makes
    runners = {"langgraph": _run_langgraph, "openai_agents": _run_openai_agents, "byoa": _run_byoa, "function": _run_function}
    try:
        answer, result = runners[kind](obj, loaded, task, agent)
    except AtlasError:
        raise
    except ImportError as exc:
        raise AtlasError(f"agent.kind {kind}: {exc}; install the matching extra (pip install 'atlas-plugins[all]')") from None
    except Exception as exc:  # noqa: BLE001 - the agent (or its framework) failed: one line; the session records it
        raise AtlasError(f"the agent ({agent.import_path}, {kind}) raised {type(exc).__name__}: {_first_line(exc)}") from None
    _report(answer, result, kind, as_json)
    failures = _role_failures(result)
    for role, error in failures.items():
        typer.echo(f"atlas: {role} failed: {_first_line(error)}", err=True)
    if failures and (result.accepted is None or result.reward is None):
        # the answer is the agent's own, but it could not be supervised as configured: not a success
        raise typer.Exit(3)


def _role_failures(result: Any) -> dict[str, str]:
    """The session's failed supervision roles (the agent's own model, the student, is the agent's business)."""
    failures = getattr(result, "role_failures", None) or {}
    return {role: error for role, error in failures.items() if role != "student"}


def _run_langgraph(obj: Any, config: Any, task: str, agent: Any) -> tuple[Any, Any]:
    from atlas_plugins.langgraph import with_atlas

    context = graph_context(obj)  # before the wrap: a context schema that cannot be built stops here, in one line
    use_async = needs_async(obj)  # of the user's graph: the wrapped one has a sync and an async path at every node
    app = with_atlas(obj, config, agent_name=agent.name)
    inputs = {"messages": [("user", task)]}
    extra = {"context": context} if context is not None else {}
    try:
        if use_async:
            output = asyncio.run(app.ainvoke(inputs, **extra))
        else:
            output = app.invoke(inputs, **extra)
        result = app.session_result()
    finally:
        app.supervisor.close()
    return _last_message(output, result), result


def needs_async(graph: Any) -> bool:
    """Whether a LangGraph graph must run through the async API: a node (or a tool of a ToolNode, or a node of a
    subgraph) has only an async implementation, so ``invoke`` would raise ``TypeError: No synchronous function
    provided``."""
    return _async_only(graph, set(), 0)


def _async_only(runnable: Any, seen: set[int], depth: int) -> bool:
    if runnable is None or id(runnable) in seen or depth > 20:
        return False
    seen.add(id(runnable))
    if inspect.iscoroutinefunction(runnable):
        return True
    # RunnableCallable (a node made from `async def`) and RunnableLambda keep the sync function in .func, the async one in .afunc
    if getattr(runnable, "afunc", None) is not None and getattr(runnable, "func", None) is None:
        return True
    # a tool with only a coroutine (StructuredTool from `async def`), alone or in a ToolNode
    if getattr(runnable, "coroutine", None) is not None and getattr(runnable, "func", None) is None and hasattr(runnable, "args_schema"):
        return True
    tools = getattr(runnable, "tools_by_name", None)
    if isinstance(tools, dict) and any(_async_only(tool, seen, depth + 1) for tool in tools.values()):
        return True
    children: list[Any] = []
    builder = getattr(runnable, "builder", None)  # a compiled StateGraph
    specs = getattr(builder, "nodes", None) if builder is not None else None
    if specs is None and _from_module(runnable, "langgraph.graph", ("StateGraph",)):
        specs = runnable.nodes
    if isinstance(specs, dict):
        children += [getattr(spec, "runnable", None) for spec in specs.values()]
    elif _from_module(runnable, "langgraph.pregel", ("Pregel",)) and isinstance(getattr(runnable, "nodes", None), dict):
        children += [getattr(node, "bound", None) for node in runnable.nodes.values()]  # a graph with no builder
    children += list(getattr(runnable, "steps", None) or [])  # RunnableSequence
    children.append(getattr(runnable, "bound", None))  # RunnableBinding (with_config, bind)
    return any(_async_only(child, seen, depth + 1) for child in children if child is not None)


def graph_context(graph: Any) -> Any:
    """The run context for a graph with a context schema: a dataclass or pydantic schema built from its defaults
    (``Context()``), ``{}`` for another schema (a TypedDict); None when the graph has none."""
    schema = getattr(graph, "context_schema", None)
    if schema is None:
        return None
    if not (dataclasses.is_dataclass(schema) or hasattr(schema, "model_fields")):
        return {}
    try:
        return schema()
    except Exception as exc:  # noqa: BLE001 - the user's schema: one line saying what to change
        name = getattr(schema, "__name__", str(schema))
        raise AtlasError(f"the graph's context schema {name} cannot be built with no arguments "
                         f"({type(exc).__name__}: {_first_line(exc)}); atlas run passes {name}(): give its fields defaults") from None


def _last_message(output: Any, result: Any) -> Any:
    messages = output.get("messages") if isinstance(output, dict) else None
    if messages:
        last = messages[-1]
        content = getattr(last, "content", last)
        if isinstance(content, (tuple, list)) and len(content) == 2 and isinstance(content[0], str):  # ("role", "text")
            content = content[1]
        if isinstance(content, list):  # content blocks
            content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
        return content
    return result.final_answer if result is not None else output


def _run_openai_agents(obj: Any, config: Any, task: str, agent: Any) -> tuple[Any, Any]:
    from atlas_plugins.openai_agents import with_atlas

    runner = with_atlas(obj, config, agent_name=agent.name)
    try:
        output = runner.run_sync(task)
        result = runner.session_result(output)
    finally:
        runner.close()
    return output.final_output, result


def _run_byoa(obj: Any, config: Any, task: str, agent: Any) -> tuple[Any, Any]:
    from atlas_plugins.byoa import atlas_agent, atlas_result

    cls = obj if inspect.isclass(obj) else type(obj)
    if getattr(cls, "__atlas_state__", None) is None:  # a class already under @atlas_agent keeps its own settings
        atlas_agent(config=config, method=agent.method, agent_name=agent.name)(cls)
    if inspect.isclass(obj):
        try:
            instance = cls()
        except TypeError as exc:
            raise AtlasError(f"agent: {cls.__name__}() needs arguments ({exc}); atlas run makes the instance with none — "
                             "point agent.import_path at a ready instance or a function instead") from None
    else:
        instance = obj
    method = agent.method or ("run" if callable(getattr(cls, "run", None)) else "__call__")
    try:
        answer = getattr(instance, method)(task)
        if inspect.isawaitable(answer):
            answer = asyncio.run(_await(answer))
        result = atlas_result(instance)
    finally:
        state = getattr(cls, "__atlas_state__", None)
        supervisor = getattr(state, "_supervisor", None)
        if supervisor is not None:
            supervisor.close()
    return answer, result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _run_function(obj: Any, config: Any, task: str, agent: Any) -> tuple[Any, Any]:
    from ..supervisor import Supervisor

    try:
        takes_instructions = "instructions" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        takes_instructions = False

    def attempt(instructions: str) -> Any:
        produced = obj(task, instructions=instructions) if takes_instructions else obj(task)
        return asyncio.run(_await(produced)) if inspect.isawaitable(produced) else produced

    name = agent.name or getattr(obj, "__name__", None) or "agent"
    with Supervisor(config) as supervisor:
        result = supervisor.supervise(task, attempt, agent_name=name)
    return result.final_answer, result


def _report(answer: Any, result: Any, kind: str, as_json: bool) -> None:
    session = None
    if result is not None:
        session = {
            "session_id": result.session_id, "learning_key": result.learning_key, "lane": result.lane,
            "lane_reason": result.decision.reason, "accepted": result.accepted, "attempts": result.attempts,
            "reward": result.reward, "reward_status": result.reward_status, "reward_reason": result.reward_reason,
            "review_status": result.review_status, "drift_alert": result.drift_alert, "total_tokens": result.total_tokens,
            "total_cost_usd": result.total_cost_usd, "lessons_used": len(result.lessons_used),
            "lessons_learned": [{"op": c.op, "entry_id": c.entry_id, "lesson": c.lesson} for c in result.lessons_learned],
            "role_failures": _role_failures(result),
        }
    if as_json:
        typer.echo(json.dumps({"kind": kind, "answer": _jsonable(answer), "session": session}, default=str))
        return
    typer.echo(answer if isinstance(answer, str) else json.dumps(_jsonable(answer), default=str))
    if session is None:
        typer.echo("atlas: no session was recorded (supervision could not start; see the log above)", err=True)
        return
    accepted = {True: "accepted", False: "rejected", None: "not validated"}[result.accepted]
    typer.echo(
        f"\nsession {result.session_id}  key {result.learning_key}  lane {result.lane}  {accepted} after "
        f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}  reward {fmt_reward(result.reward)}  "
        f"review {result.review_status}  tokens {result.total_tokens}"
        + (f"  lessons learned {len(result.lessons_learned)}" if result.lessons_learned else ""),
        err=False,
    )
    typer.echo(f"details: atlas show {result.session_id[:12]}")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
