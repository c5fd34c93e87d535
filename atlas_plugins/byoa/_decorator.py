"""``@atlas_agent``: any agent class under Atlas supervision, used exactly as before.

The class's entry method (``run`` by default, else ``__call__``, or the one named) is replaced by a supervised
version with the same signature and return type, sync or async. Per call:

1. a session begins (the task is the method's first argument: a string, a dict or a pydantic model);
2. lessons, the teacher's plan and guidance reach the agent through, in this order of preference, a ``lessons``
   parameter of the method, a ``guidance`` parameter (guidance only), or an ``instructions`` attribute of the
   instance (extended for the duration of the call, then restored);
3. inside the method the agent reports what it does through :func:`atlas_context` (steps, tool calls, tokens),
   so its own tools are visible to judges and learning;
4. in paired and coach, the answer is validated; a rejection with retries left calls the method again with the
   guidance; in coach, a class that also has ``plan(task)`` and ``execute_step(step, guidance)`` gets its plan
   reviewed and every step validated, as the agent calls them;
5. the session finishes (judges, learning, storage). ``atlas_result(agent)`` returns its SessionResult.

An agent that raises still ends its session (``error``) and the exception propagates as before. An error in
Atlas itself is logged and the agent runs unsupervised.

Per call, the session's task family, learning key and metadata come from :func:`atlas_learning.session_options`
around the call (the entry method keeps the user's signature, so the decorator adds no keyword of its own)::

    with session_options(task_family="refunds", metadata={"ticket": 42}):
        agent.run("Refund order 1234")

A ``learning_key`` given to the decorator is the call's explicit key, so it wins over one in ``session_options``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_type_hints, overload

from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.supervisor import SessionResult, SupervisedRun, Supervisor, as_text

__all__ = ["atlas_agent", "atlas_context", "atlas_result", "AgentContext"]

log = logging.getLogger("atlas_plugins.byoa")

C = TypeVar("C", bound=type)

_current: contextvars.ContextVar[SupervisedRun | None] = contextvars.ContextVar("atlas_byoa_run", default=None)


class AgentContext:
    """What an agent may report about its own work during a supervised call. Outside one, every method is a
    no-op, so the same agent code runs with or without Atlas."""

    def __init__(self, run: SupervisedRun | None) -> None:
        self._run = run

    @property
    def supervised(self) -> bool:
        return self._run is not None

    @property
    def lane(self) -> str | None:
        return self._run.lane if self._run else None

    @property
    def session_id(self) -> str | None:
        return self._run.session_id if self._run else None

    @property
    def instructions(self) -> str:
        """Lessons, plan, concerns and guidance for the agent's next model call ('' when unsupervised)."""
        return self._run.instructions if self._run else ""

    def step(self, name: str, *, input: Any = None, output: Any = None, error: str | None = None, description: str | None = None) -> str | None:
        """Record a step of the agent's own (a stage of its work); returns the step id."""
        return self._record(kind="node", name=name, input=input, output=output, error=error, description=description)

    def tool_call(self, name: str, args: Any = None, output: Any = None, *, error: str | None = None) -> str | None:
        """Record a call of one of the agent's own tools; in the coach lane the teacher validates it."""
        step = self._record(kind="tool_call", name=name, tool_name=name, tool_args=args, output=output, error=error)
        if step and self._run is not None and self._run.lane == "coach":
            _safely(lambda: self._run.validate_step(step))  # type: ignore[union-attr]
        return step

    def model_call(self, model: str = "", *, input_tokens: int = 0, output_tokens: int = 0, provider: str = "",
                   cost_usd: float | None = None, output: Any = None) -> str | None:
        """Record a call the agent made to its own model: tokens and cost count as the student's."""
        if self._run is None:
            return None
        return _safely(lambda: self._run.record_model_call(provider=provider, model=model, input_tokens=input_tokens,  # type: ignore[union-attr]
                                                           output_tokens=output_tokens, cost_usd=cost_usd, output=output))

    def _record(self, **fields: Any) -> str | None:
        if self._run is None:
            return None
        return _safely(lambda: self._run.record_step(**fields))  # type: ignore[union-attr]


def atlas_context() -> AgentContext:
    """The supervised call in progress in this thread or task (a no-op context when there is none)."""
    return AgentContext(_current.get())


class _ClassState:
    """Per decorated class: its supervisor (built on first use) and its instances' last results."""

    def __init__(self, factory: Callable[[], Supervisor]) -> None:
        self._factory = factory
        self._supervisor: Supervisor | None = None
        self._lock = threading.Lock()
        self.results: weakref.WeakKeyDictionary[Any, SessionResult] = weakref.WeakKeyDictionary()
        self.last_result: SessionResult | None = None

    @property
    def supervisor(self) -> Supervisor:
        with self._lock:
            if self._supervisor is None:
                self._supervisor = self._factory()
            return self._supervisor

    def remember(self, instance: Any, result: SessionResult) -> None:
        self.last_result = result
        try:
            self.results[instance] = result
        except TypeError:  # an instance that cannot be weakly referenced: the class keeps the last result only
            pass


def atlas_result(agent: Any) -> SessionResult | None:
    """The last session of a decorated agent instance (or, given the class, of any of its instances)."""
    state: _ClassState | None = getattr(agent if isinstance(agent, type) else type(agent), "__atlas_state__", None)
    if state is None:
        raise TypeError(f"{agent!r} is not an @atlas_agent class or instance")
    if isinstance(agent, type):
        return state.last_result
    try:
        return state.results.get(agent, None)
    except TypeError:
        return state.last_result


@overload
def atlas_agent(cls: C, /) -> C: ...


@overload
def atlas_agent(
    *,
    config: AtlasConfig | Mapping[str, Any] | str | Path | None = None,
    learning_key: str | None = None,
    method: str | None = None,
    agent_name: str | None = None,
    checks: Sequence[Check] = (),
    supervisor: Supervisor | None = None,
) -> Callable[[C], C]: ...


def atlas_agent(
    cls: Any = None,
    /,
    *,
    config: AtlasConfig | Mapping[str, Any] | str | Path | None = None,
    learning_key: str | None = None,
    method: str | None = None,
    agent_name: str | None = None,
    checks: Sequence[Check] = (),
    supervisor: Supervisor | None = None,
) -> Any:
    """Put an agent class under supervision: ``@atlas_agent`` or ``@atlas_agent(config=..., learning_key=...)``.

    ``method`` names the entry method (default ``run``, else ``__call__``). ``config`` is an AtlasConfig, a dict
    or a YAML path; the supervisor is built on the first call and shared by the class's instances.
    """

    def decorate(target: type) -> type:
        if not isinstance(target, type):
            raise TypeError("@atlas_agent decorates a class; wrap a function with Supervisor.supervise instead")
        name = method or ("run" if callable(getattr(target, "run", None)) else "__call__")
        entry = getattr(target, name, None)
        if not callable(entry) or (name == "__call__" and entry is type.__call__):
            raise TypeError(f"{target.__name__} has no {name}() method; name the entry method with @atlas_agent(method=...)")
        state = _ClassState(lambda: supervisor or Supervisor(config, checks=checks))
        target.__atlas_state__ = state  # type: ignore[attr-defined]
        spec = _EntrySpec(target, name, entry, agent_name or target.__name__, learning_key, state)
        setattr(target, name, spec.wrapper())
        for hook in ("plan", "execute_step"):
            original = getattr(target, hook, None)
            if callable(original):
                setattr(target, hook, _wrap_hook(hook, original))
        return target

    return decorate(cls) if cls is not None else decorate


class _EntrySpec:
    """How to call one decorated entry method under supervision."""

    def __init__(self, cls: type, name: str, entry: Callable[..., Any], agent_name: str, learning_key: str | None, state: _ClassState) -> None:
        self.cls, self.name, self.entry = cls, name, entry
        self.agent_name, self.learning_key, self.state = agent_name, learning_key, state
        parameters = inspect.signature(entry).parameters
        self.takes_lessons = "lessons" in parameters
        self.takes_guidance = "guidance" in parameters
        try:
            self.returns_text = get_type_hints(entry).get("return") is str
        except Exception:  # noqa: BLE001 - unresolvable annotations: we simply do not know
            self.returns_text = False
        self.has_plan_steps = callable(getattr(cls, "plan", None)) and callable(getattr(cls, "execute_step", None))
        self.is_async = inspect.iscoroutinefunction(entry)

    def wrapper(self) -> Callable[..., Any]:
        spec = self
        if self.is_async:

            @functools.wraps(self.entry)
            async def supervised_async(instance: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
                run = await spec._abegin(task)
                if run is None:
                    return await spec.entry(instance, task, *args, **kwargs)
                return await spec._adrive(run, instance, task, args, kwargs)

            return supervised_async

        @functools.wraps(self.entry)
        def supervised(instance: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
            run = spec._begin(task)
            if run is None:
                return spec.entry(instance, task, *args, **kwargs)
            return spec._drive(run, instance, task, args, kwargs)

        return supervised

    # ---------------------------------------------------------------------------------------------- sync
    def _begin(self, task: Any) -> SupervisedRun | None:
        try:
            run = self.state.supervisor.begin(as_text(task), agent_name=self.agent_name, learning_key=self.learning_key)
        except Exception:  # noqa: BLE001 - Atlas failing must not stop the agent
            log.exception("atlas could not begin a session for %s; running unsupervised", self.agent_name)
            return None
        self._note_supervision_level(run)
        return run

    def _drive(self, run: SupervisedRun, instance: Any, task: Any, args: tuple, kwargs: dict) -> Any:
        token = _current.set(run)
        try:
            if run.lane == "escalate" and self.returns_text:
                answer = _safely(run.escalate)
                if answer is not None:
                    return self._finish(run, instance, answer)
            while True:
                try:
                    result = self._call(run, instance, task, args, kwargs)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    _safely(lambda message=error: run.finish(error=message))
                    raise
                if run.lane == "auto" or not self._rejected(_safely(lambda answer=result: run.validate_answer(answer))) or not run.can_retry:
                    return self._finish(run, instance, result)
        finally:
            _current.reset(token)

    def _finish(self, run: SupervisedRun, instance: Any, result: Any) -> Any:
        finished = _safely(lambda: run.finish(result))
        if finished is not None:
            self.state.remember(instance, finished)
        return result

    def _call(self, run: SupervisedRun, instance: Any, task: Any, args: tuple, kwargs: dict) -> Any:
        call_kwargs, restore = self._inject(run, instance, kwargs)
        try:
            return self.entry(instance, task, *args, **call_kwargs)
        finally:
            restore()

    # --------------------------------------------------------------------------------------------- async
    async def _abegin(self, task: Any) -> SupervisedRun | None:
        try:
            run = await self.state.supervisor.abegin(as_text(task), agent_name=self.agent_name, learning_key=self.learning_key)
        except Exception:  # noqa: BLE001
            log.exception("atlas could not begin a session for %s; running unsupervised", self.agent_name)
            return None
        self._note_supervision_level(run)
        return run

    async def _adrive(self, run: SupervisedRun, instance: Any, task: Any, args: tuple, kwargs: dict) -> Any:
        token = _current.set(run)
        try:
            if run.lane == "escalate" and self.returns_text:
                answer = await _asafely(run.aescalate)
                if answer is not None:
                    return await self._afinish(run, instance, answer)
            while True:
                call_kwargs, restore = self._inject(run, instance, kwargs)
                try:
                    result = await self.entry(instance, task, *args, **call_kwargs)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    await _asafely(lambda message=error: run.afinish(error=message))
                    raise
                finally:
                    restore()
                if run.lane == "auto" or not self._rejected(await _asafely(lambda answer=result: run.avalidate_answer(answer))) or not run.can_retry:
                    return await self._afinish(run, instance, result)
        finally:
            _current.reset(token)

    async def _afinish(self, run: SupervisedRun, instance: Any, result: Any) -> Any:
        finished = await _asafely(lambda: run.afinish(result))
        if finished is not None:
            self.state.remember(instance, finished)
        return result

    # ------------------------------------------------------------------------------------------- shared
    def _inject(self, run: SupervisedRun, instance: Any, kwargs: dict) -> tuple[dict, Callable[[], None]]:
        """Hand lessons and guidance to the agent; returns the call's kwargs and how to undo an attribute change."""
        call_kwargs = dict(kwargs)
        instructions = run.instructions
        if self.takes_lessons and "lessons" not in kwargs:
            call_kwargs["lessons"] = instructions
        if self.takes_guidance and "guidance" not in kwargs:
            call_kwargs["guidance"] = "\n".join(run.pending_guidance) or None
        if self.takes_lessons or not instructions or not isinstance(getattr(instance, "instructions", None), str):
            return call_kwargs, lambda: None
        original = instance.instructions
        instance.instructions = f"{original}\n\n{instructions}" if original else instructions

        def restore() -> None:
            instance.instructions = original

        return call_kwargs, restore

    def _note_supervision_level(self, run: SupervisedRun) -> None:
        if run.lane == "coach" and not self.has_plan_steps:
            run.metadata["supervision_level"] = (f"answer level: {self.cls.__name__} has no plan() and execute_step(), "
                                                 "so the teacher validates the answer, not each step")
        elif run.lane == "escalate" and not self.returns_text:
            run.metadata["supervision_level"] = (f"escalation needs {self.cls.__name__}.{self.name}() to return str; "
                                                 "the agent ran under answer-level supervision instead")
        if not (self.takes_lessons or self.takes_guidance):
            run.metadata.setdefault("instructions_channel", "the instance's instructions attribute, if it has one")

    @staticmethod
    def _rejected(verdict: Any) -> bool:
        return verdict is not None and verdict.accepted is False


def _wrap_hook(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """plan() and execute_step(): reviewed and validated in coach, recorded in every lane, as the agent calls them."""
    if name == "plan":

        @functools.wraps(original)
        def plan(instance: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
            steps = original(instance, task, *args, **kwargs)
            run = _current.get()
            if run is None or run.lane != "coach" or not isinstance(steps, (list, tuple)):
                return steps
            review = _safely(lambda: run.review_plan([as_text(s) for s in steps]))
            if review is None or not all(isinstance(s, str) for s in steps):
                return steps  # objects we cannot rebuild: the review is recorded and shown through instructions
            return type(steps)(review.steps) if review.steps else steps

        return plan

    takes_guidance = "guidance" in inspect.signature(original).parameters

    @functools.wraps(original)
    def execute_step(instance: Any, step: Any, *args: Any, **kwargs: Any) -> Any:
        run = _current.get()
        if run is None:
            return original(instance, step, *args, **kwargs)
        if takes_guidance and "guidance" not in kwargs and not args:
            kwargs["guidance"] = "\n".join(run.take_guidance()) or None
        try:
            output = original(instance, step, *args, **kwargs)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            _safely(lambda: run.record_step(kind="node", name="execute_step", input=as_text(step), error=error))
            raise
        step_id = _safely(lambda: run.record_step(kind="node", name="execute_step", description=as_text(step)[:500], input=as_text(step), output=output))
        if step_id and run.lane == "coach":
            _safely(lambda: run.validate_step(step_id))
        return output

    return execute_step


def _safely(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception:  # noqa: BLE001 - supervision must never fail the user's agent
        log.exception("atlas supervision step failed; the agent goes on")
        return None


async def _asafely(action: Callable[[], Any]) -> Any:
    try:
        return await action()
    except Exception:  # noqa: BLE001
        log.exception("atlas supervision step failed; the agent goes on")
        return None
