"""``atlas run``: import the configured agent (``agent.import_path``) and run it once under supervision.

What the object is decides how it is wrapped (``agent.kind: auto`` tells them apart by type):

* a LangGraph graph (compiled, or a StateGraph): ``atlas_plugins.langgraph.with_atlas(graph, config)``, invoked with
  ``{"messages": [("user", task)]}``;
* an OpenAI Agents SDK ``Agent``: ``atlas_plugins.openai_agents.with_atlas(agent, config).run_sync(task)``;
* a class (or an instance of one) with an entry method: ``@atlas_agent(config=...)`` applied to the class, an
  instance made with no arguments, its entry method called with the task;
* a function ``f(task) -> str`` (``f(task, instructions=...)`` gets lessons and guidance too):
  ``Supervisor(config).supervise(task, ...)``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError
from ._common import fmt_reward, load_config


def _ensure_import_path(config_path: Path | None) -> None:
    folders = [Path.cwd()]
    if config_path is not None:
        folders.insert(0, config_path.resolve().parent)
    for folder in reversed(folders):
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
                             "(or the folder of atlas.yaml) or fix agent.import_path") from None
        raise AtlasError(f"agent.import_path {import_path!r}: importing {module_name} failed: {exc}") from None
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


def run_agent(*, config: Path | None, task: str, as_json: bool) -> None:
    loaded = load_config(config)
    origin = str(config) if config is not None else "atlas.yaml"
    agent = loaded.agent
    if not agent.import_path:
        raise AtlasError(f"{origin}: agent.import_path is not set; run `atlas env init` or add agent: {{import_path: package.module:object}}")
    if not task.strip():
        raise AtlasError("--task: give the task to run, e.g. --task \"How many files are in ./data?\"")
    _ensure_import_path(config)
    obj = load_object(agent.import_path)
    kind = _kind(obj, agent)
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


def _run_langgraph(obj: Any, config: Any, task: str, agent: Any) -> tuple[Any, Any]:
    from atlas_plugins.langgraph import with_atlas

    app = with_atlas(obj, config, agent_name=agent.name)
    try:
        output = app.invoke({"messages": [("user", task)]})
        result = app.session_result()
    finally:
        app.supervisor.close()
    return _last_message(output, result), result


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
        }
    if as_json:
        typer.echo(json.dumps({"kind": kind, "answer": _jsonable(answer), "session": session}, indent=2, default=str))
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
