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

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints, overload

from atlas_learning.background import PendingSession
from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.supervisor import SupervisedRun, Supervisor, as_text

__all__ = ["atlas_agent", "atlas_context", "atlas_result", "AgentContext"]

log = logging.getLogger("atlas_plugins.byoa")

C = TypeVar("C", bound=type)

#: The supervised call in progress in this context: its run and instance (None for a static or class method).
#: A thread the agent starts sees it when started in a copy of the context (``contextvars.copy_context().run``).
_current: contextvars.ContextVar[tuple[SupervisedRun, Any] | None] = contextvars.ContextVar("atlas_byoa_run", default=None)


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
        if step and self._run is not None:
            _safely(lambda: self._run.tool_call_done(step))  # type: ignore[union-attr]
        return step

    async def atool_call(self, name: str, args: Any = None, output: Any = None, *, error: str | None = None) -> str | None:
        """Async twin of :meth:`tool_call`, for async agents: the teacher's validation does not block the loop."""
        step = self._record(kind="tool_call", name=name, tool_name=name, tool_args=args, output=output, error=error)
        if step and self._run is not None:
            await _asafely(lambda: self._run.atool_call_done(step))  # type: ignore[union-attr]
        return step

    def model_call(self, model: str = "", *, input_tokens: int = 0, output_tokens: int = 0, provider: str = "",
                   cost_usd: float | None = None, output: Any = None, system: str | None = None,
                   tools: Sequence[Mapping[str, Any]] | None = None) -> str | None:
        """Record a call the agent made to its own model: tokens and cost count as the student's.

        For training data that is exactly what the model saw, also give ``system`` (the system prompt sent,
        :attr:`instructions` in it), ``tools`` (the tool schemas offered, ``{"name", "description", "parameters"}``)
        and, as ``output``, the model's text or ``{"content": text, "tool_calls": [{"name", "arguments"}]}``."""
        if self._run is None:
            return None
        return _safely(lambda: self._run.record_model_call(provider=provider, model=model, input_tokens=input_tokens,  # type: ignore[union-attr]
                                                           output_tokens=output_tokens, cost_usd=cost_usd, output=output,
                                                           system=system, tools=tools))

    def _record(self, **fields: Any) -> str | None:
        if self._run is None:
            return None
        return _safely(lambda: self._run.record_step(**fields))  # type: ignore[union-attr]


def atlas_context() -> AgentContext:
    """The supervised call in progress in this thread or task (a no-op context when there is none).

    Context variables follow asyncio tasks; a worker thread sees the call only when it runs in a copy of the
    caller's context (``pool.submit(contextvars.copy_context().run, fn)``), as for any context variable."""
    current = _current.get()
    return AgentContext(current[0] if current is not None else None)


class _ClassState:
    """Per decorated class: its supervisor (built on first use) and its instances' last sessions."""

    def __init__(self, factory: Callable[[], Supervisor]) -> None:
        self._factory = factory
        self._supervisor: Supervisor | None = None
        self._lock = threading.Lock()
        self.results: weakref.WeakKeyDictionary[Any, PendingSession] = weakref.WeakKeyDictionary()
        self.last_result: PendingSession | None = None

    @property
    def supervisor(self) -> Supervisor:
        with self._lock:
            if self._supervisor is None:
                self._supervisor = self._factory()
            return self._supervisor

    def remember(self, instance: Any, result: PendingSession) -> None:
        self.last_result = result
        if instance is None:
            return
        try:
            self.results[instance] = result
        except TypeError:  # an instance that cannot be weakly referenced: the class keeps the last result only
            pass


def atlas_result(agent: Any) -> PendingSession | None:
    """The last session of a decorated agent instance (or, given the class, of any of its instances).

    The call returned before its session was judged and learned from: this is a PendingSession, whose
    ``session_id`` and ``final_answer`` are there at once and whose other SessionResult fields (``reward``,
    ``lane``...) wait for the background finish when read; ``.result()`` gives the SessionResult itself."""
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

    ``method`` names the entry method (default ``run``, else ``__call__``): an instance, static or class method,
    sync or async, called with any of its own parameters (the task is its first one, by position or name).
    ``config`` is an AtlasConfig, a dict or a YAML path; the supervisor is built on the first call and shared by the
    class's instances (or ``supervisor`` is used). ``checks`` apply to every session, with either.
    Generator entry methods are refused: a session needs one answer to validate.
    """

    def decorate(target: type) -> type:
        if not isinstance(target, type):
            raise TypeError("@atlas_agent decorates a class; wrap a function with Supervisor.supervise instead")
        name = method or ("run" if callable(getattr(target, "run", None)) else "__call__")
        raw = inspect.getattr_static(target, name, None)
        kind = "static" if isinstance(raw, staticmethod) else "class" if isinstance(raw, classmethod) else "instance"
        entry = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if not callable(entry) or (name == "__call__" and entry is type.__call__):
            raise TypeError(f"{target.__name__} has no {name}() method; name the entry method with @atlas_agent(method=...)")
        entry = getattr(entry, "__atlas_entry__", entry)  # a subclass of a decorated class: wrap the original once
        if inspect.isgeneratorfunction(entry) or inspect.isasyncgenfunction(entry):
            raise TypeError(f"@atlas_agent: {target.__name__}.{name}() is a generator; supervise a method that returns "
                            "its answer (collect the items inside it)")
        state = _ClassState(lambda: supervisor or Supervisor(config))
        target.__atlas_state__ = state  # type: ignore[attr-defined]
        spec = _EntrySpec(target, name, entry, kind, agent_name or target.__name__, learning_key, list(checks), state)
        wrapped = spec.wrapper()
        setattr(target, name, staticmethod(wrapped) if kind == "static" else classmethod(wrapped) if kind == "class" else wrapped)
        for hook in ("plan", "execute_step"):
            original = target.__dict__.get(hook)
            if callable(original) and not hasattr(original, "__atlas_entry__"):
                setattr(target, hook, _wrap_hook(hook, original))
        if not spec.takes_lessons:
            _install_instructions(target)
        return target

    return decorate(cls) if cls is not None else decorate


#: (instance, text) of the supervised call in progress in this context: what its ``instructions`` attribute adds.
_added: contextvars.ContextVar[tuple[Any, str] | None] = contextvars.ContextVar("atlas_byoa_instructions", default=None)


class _InstructionsAttribute:
    """The class's ``instructions`` attribute, as it was (a value, a property, a slot), plus, while one of the
    instance's supervised calls runs in this context, that call's lessons and guidance. Nothing is written to
    the instance: overlapping calls each see their own, read-only and frozen agents work, and nothing stays."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.original if self.original is not None else self
        base = self._base(instance, owner)
        added = _added.get()
        if added is not None and added[0] is instance and added[1] and isinstance(base, (str, type(None))):
            return f"{base}\n\n{added[1]}" if base else added[1]
        return base

    def _base(self, instance: Any, owner: type | None) -> Any:
        getter = getattr(type(self.original), "__get__", None)
        if getter is not None and (hasattr(type(self.original), "__set__") or hasattr(type(self.original), "__delete__")):
            return getter(self.original, instance, owner)  # a property or a slot
        values = getattr(instance, "__dict__", None)
        if values is not None and "instructions" in values:
            return values["instructions"]
        if self.original is not None:
            return getter(self.original, instance, owner) if getter is not None else self.original
        fallback = getattr(type(instance), "__getattr__", None)
        if fallback is not None:  # a class that serves its attributes itself
            return fallback(instance, "instructions")
        raise AttributeError(f"{type(instance).__name__!r} object has no attribute 'instructions'")

    def __set__(self, instance: Any, value: Any) -> None:
        setter = getattr(type(self.original), "__set__", None)
        if setter is not None:
            setter(self.original, instance, value)
        elif isinstance(self.original, property):
            raise AttributeError(f"property 'instructions' of {type(instance).__name__!r} object has no setter")
        else:
            instance.__dict__["instructions"] = value

    def __delete__(self, instance: Any) -> None:
        deleter = getattr(type(self.original), "__delete__", None)
        if deleter is not None:
            deleter(self.original, instance)
        else:
            del instance.__dict__["instructions"]


def _install_instructions(cls: type) -> None:
    """Make ``instructions`` carry the call's lessons (once per class hierarchy; a method is left alone)."""
    original = inspect.getattr_static(cls, "instructions", None)
    if isinstance(original, _InstructionsAttribute) or inspect.isfunction(original) or isinstance(original, (staticmethod, classmethod)):
        return
    attribute = _InstructionsAttribute(original)
    attribute.__set_name__(cls, "instructions")
    type.__setattr__(cls, "instructions", attribute)


class _EntrySpec:
    """How to call one decorated entry method under supervision."""

    def __init__(self, cls: type, name: str, entry: Callable[..., Any], kind: str, agent_name: str, learning_key: str | None,
                 checks: list[Check], state: _ClassState) -> None:
        self.cls, self.name, self.entry, self.kind = cls, name, entry, kind
        self.agent_name, self.learning_key, self.checks, self.state = agent_name, learning_key, checks, state
        self.signature = inspect.signature(entry)
        parameters = list(self.signature.parameters.values())
        bound_first = kind in ("instance", "class")  # self or cls comes first
        own = parameters[1 if bound_first else 0:]
        candidates = [p for p in own if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_POSITIONAL)
                      and p.name not in ("lessons", "guidance")]
        if not candidates:
            raise TypeError(f"@atlas_agent: {cls.__name__}.{name}() takes no task parameter")
        #: The task's parameter; for ``*args`` the task is its first value.
        self.task_parameter = candidates[0].name
        self.task_is_star = candidates[0].kind == candidates[0].VAR_POSITIONAL
        #: ``lessons`` / ``guidance`` parameters that can only be passed by position (their index), else None.
        self.positional_only = {p.name: i for i, p in enumerate(parameters) if p.kind == p.POSITIONAL_ONLY}
        self.takes_lessons = "lessons" in self.signature.parameters
        self.takes_guidance = "guidance" in self.signature.parameters
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
            async def supervised_async(*args: Any, **kwargs: Any) -> Any:
                call = spec._bind(args, kwargs)
                if call is None:
                    return await spec.entry(*args, **kwargs)
                run = await spec._abegin(call.task)
                if run is None:
                    return await spec.entry(*args, **kwargs)
                return await spec._adrive(run, call)

            supervised_async.__atlas_entry__ = self.entry  # type: ignore[attr-defined]
            return supervised_async

        @functools.wraps(self.entry)
        def supervised(*args: Any, **kwargs: Any) -> Any:
            call = spec._bind(args, kwargs)
            if call is None:
                return spec.entry(*args, **kwargs)
            run = spec._begin(call.task)
            if run is None:
                return spec.entry(*args, **kwargs)
            return spec._drive(run, call)

        supervised.__atlas_entry__ = self.entry  # type: ignore[attr-defined]
        return supervised

    def _bind(self, args: tuple, kwargs: dict) -> _Call | None:
        """The call's arguments by the method's own signature; None to call straight through (arguments that do
        not bind, so the method raises its own TypeError; or a nested call of an instance already supervised)."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        instance = args[0] if self.kind == "instance" and args else None
        current = _current.get()
        if current is not None and instance is not None and current[1] is instance:
            return None  # super().run() from a decorated subclass, or the agent calling itself: one session
        arguments = dict(bound.arguments)
        if self.task_is_star:
            values = arguments.get(self.task_parameter) or ()
            if not values:
                return None
            task = values[0]
        else:
            task = arguments.get(self.task_parameter, self.signature.parameters[self.task_parameter].default)
        if task is inspect.Parameter.empty:
            return None
        given = {name for name in ("lessons", "guidance") if name in arguments}  # by the caller, by name or position
        return _Call(args, kwargs, instance, task, frozenset(given))

    # ---------------------------------------------------------------------------------------------- sync
    def _begin(self, task: Any) -> SupervisedRun | None:
        try:
            run = self.state.supervisor.begin(as_text(task), agent_name=self.agent_name, learning_key=self.learning_key,
                                              checks=self.checks)
        except Exception:  # noqa: BLE001 - Atlas failing must not stop the agent
            log.exception("atlas could not begin a session for %s; running unsupervised", self.agent_name)
            return None
        self._note_channel(run)
        return run

    def _drive(self, run: SupervisedRun, call: _Call) -> Any:
        token = _current.set((run, call.instance))
        try:
            started = _safely(lambda: run.start(plans_later=self.has_plan_steps, can_take_answer=self.returns_text))
            if started is not None and started.answer is not None:
                return self._end(run, call, started.answer)
            while True:
                try:
                    result = self._call(run, call)
                except BaseException as exc:  # KeyboardInterrupt and SystemExit end the session too
                    _safely(lambda error=exc: run.failed(error))
                    raise
                decision = _safely(lambda answer=result: run.final_answer(answer))
                if decision is None or decision.action != "retry":
                    return self._end(run, call, result)
        finally:
            _current.reset(token)

    def _end(self, run: SupervisedRun, call: _Call, result: Any) -> Any:
        pending = _safely(lambda: run.end(result))
        if pending is not None:
            self.state.remember(call.instance, pending)
        return result

    def _call(self, run: SupervisedRun, call: _Call) -> Any:
        args, kwargs = self._channel_args(run, call)
        token = self._add_instructions(run, call)
        try:
            return self.entry(*args, **kwargs)
        finally:
            if token is not None:
                _added.reset(token)

    # --------------------------------------------------------------------------------------------- async
    async def _abegin(self, task: Any) -> SupervisedRun | None:
        try:
            run = await self.state.supervisor.abegin(as_text(task), agent_name=self.agent_name, learning_key=self.learning_key,
                                                     checks=self.checks)
        except Exception:  # noqa: BLE001
            log.exception("atlas could not begin a session for %s; running unsupervised", self.agent_name)
            return None
        self._note_channel(run)
        return run

    async def _adrive(self, run: SupervisedRun, call: _Call) -> Any:
        token = _current.set((run, call.instance))
        try:
            started = await _asafely(lambda: run.astart(plans_later=self.has_plan_steps, can_take_answer=self.returns_text))
            if started is not None and started.answer is not None:
                return await self._aend(run, call, started.answer)
            while True:
                args, kwargs = self._channel_args(run, call)
                added = self._add_instructions(run, call)
                try:
                    result = await self.entry(*args, **kwargs)
                except asyncio.CancelledError:
                    await _asafely(run.acancelled)
                    raise
                except BaseException as exc:
                    await _asafely(lambda error=exc: run.afailed(error))
                    raise
                finally:
                    if added is not None:
                        _added.reset(added)
                decision = await _asafely(lambda answer=result: run.afinal_answer(answer))
                if decision is None or decision.action != "retry":
                    return await self._aend(run, call, result)
        finally:
            _current.reset(token)

    async def _aend(self, run: SupervisedRun, call: _Call, result: Any) -> Any:
        pending = await _asafely(lambda: run.aend(result))
        if pending is not None:
            self.state.remember(call.instance, pending)
        return result

    # ------------------------------------------------------------------------------------------- shared
    def _channel_args(self, run: SupervisedRun, call: _Call) -> tuple[tuple, dict]:
        """The call's arguments plus ``lessons`` / ``guidance`` when the method takes them and the caller did not
        pass them (by name or position); a positional-only one goes in by position."""
        args, kwargs = list(call.args), dict(call.kwargs)
        values = {"lessons": run.instructions, "guidance": "\n".join(run.guidance) or None}
        for name, takes in (("lessons", self.takes_lessons), ("guidance", self.takes_guidance)):
            if not takes or name in call.given:
                continue
            index = self.positional_only.get(name)
            if index is None:
                kwargs[name] = values[name]
            elif index == len(args):
                args.append(values[name])
            # a positional-only one after missing earlier arguments cannot be supplied: the call goes as given
        return tuple(args), kwargs

    def _add_instructions(self, run: SupervisedRun, call: _Call) -> contextvars.Token[Any] | None:
        """Let the instance's ``instructions`` read with this call's lessons (for this context only)."""
        if call.instance is None or self.takes_lessons:
            return None
        _install_instructions(type(call.instance))  # a subclass that set its own instructions attribute, once
        return _added.set((call.instance, run.instructions))

    def _note_channel(self, run: SupervisedRun) -> None:
        """Record, for the reviewer, where the agent gets its instructions and why supervision is coarser."""
        if not self.has_plan_steps:
            run.metadata.setdefault("supervision_level", (f"answer level in coach: {self.cls.__name__} has no plan() and "
                                                          "execute_step(), so the teacher validates the answer, not each step"))
        if not self.returns_text:
            run.metadata.setdefault("escalation", f"{self.cls.__name__}.{self.name}() does not return str: an escalated "
                                                  "session runs the agent instead of taking the teacher's answer")
        if not (self.takes_lessons or self.takes_guidance):
            run.metadata.setdefault("instructions_channel", "the instance's instructions attribute, if it has one")


@dataclass(frozen=True)
class _Call:
    """One call of the entry method: its arguments as given, the instance (None for static/class methods), the task."""

    args: tuple
    kwargs: dict
    instance: Any
    task: Any
    #: ``lessons`` / ``guidance`` the caller passed itself: left as they are.
    given: frozenset[str] = frozenset()


def _wrap_hook(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """plan() and execute_step(): reviewed and validated (the core decides when), recorded in every lane, as the
    agent calls them; async hooks are awaited."""
    is_async = inspect.iscoroutinefunction(original)
    if name == "plan":

        def reviewed(run: SupervisedRun, steps: Any, review: Any) -> Any:
            if review is None or not isinstance(steps, (list, tuple)) or not all(isinstance(s, str) for s in steps):
                return steps  # objects we cannot rebuild: the review is recorded and shown through instructions
            return type(steps)(review.steps) if review.steps else steps

        if is_async:

            @functools.wraps(original)
            async def aplan(instance: Any, *args: Any, **kwargs: Any) -> Any:
                steps = await original(instance, *args, **kwargs)
                current = _current.get()
                if current is None or not isinstance(steps, (list, tuple)):
                    return steps
                run = current[0]
                review = await _asafely(lambda: run.aplan_made([as_text(s) for s in steps]))
                return reviewed(run, steps, review)

            aplan.__atlas_entry__ = original  # type: ignore[attr-defined]
            return aplan

        @functools.wraps(original)
        def plan(instance: Any, *args: Any, **kwargs: Any) -> Any:
            steps = original(instance, *args, **kwargs)
            current = _current.get()
            if current is None or not isinstance(steps, (list, tuple)):
                return steps
            run = current[0]
            review = _safely(lambda: run.plan_made([as_text(s) for s in steps]))
            return reviewed(run, steps, review)

        plan.__atlas_entry__ = original  # type: ignore[attr-defined]
        return plan

    takes_guidance = "guidance" in inspect.signature(original).parameters

    def prepare(run: SupervisedRun, args: tuple, kwargs: dict) -> None:
        if takes_guidance and "guidance" not in kwargs and len(args) < 2:
            kwargs["guidance"] = "\n".join(run.guidance) or None

    def record(run: SupervisedRun, step: Any, output: Any = None, error: str | None = None) -> str | None:
        return _safely(lambda: run.record_step(kind="node", name="execute_step", description=as_text(step)[:500],
                                               input=as_text(step), output=output, error=error))

    if is_async:

        @functools.wraps(original)
        async def aexecute_step(instance: Any, *args: Any, **kwargs: Any) -> Any:
            current = _current.get()
            if current is None:
                return await original(instance, *args, **kwargs)
            run = current[0]
            step = args[0] if args else next(iter(kwargs.values()), None)
            prepare(run, args, kwargs)
            try:
                output = await original(instance, *args, **kwargs)
            except Exception as exc:
                record(run, step, error=f"{type(exc).__name__}: {exc}")
                raise
            step_id = record(run, step, output)
            if step_id:
                await _asafely(lambda: run.atool_call_done(step_id))
            return output

        aexecute_step.__atlas_entry__ = original  # type: ignore[attr-defined]
        return aexecute_step

    @functools.wraps(original)
    def execute_step(instance: Any, *args: Any, **kwargs: Any) -> Any:
        current = _current.get()
        if current is None:
            return original(instance, *args, **kwargs)
        run = current[0]
        step = args[0] if args else next(iter(kwargs.values()), None)
        prepare(run, args, kwargs)
        try:
            output = original(instance, *args, **kwargs)
        except Exception as exc:
            record(run, step, error=f"{type(exc).__name__}: {exc}")
            raise
        step_id = record(run, step, output)
        if step_id:
            _safely(lambda: run.tool_call_done(step_id))
        return output

    execute_step.__atlas_entry__ = original  # type: ignore[attr-defined]
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
