"""Bare-vs-wrapped conformance: run one pattern on the bare graph and under ``with_atlas``, compare what a
LangGraph user sees.

A *pattern* is two functions:

* a factory ``build(atlas) -> Built``: builds everything fresh (graph, fake models, counters) and passes the
  graph it means to supervise through ``atlas``: the identity for the bare run, ``with_atlas(graph,
  supervisor=...)`` for the wrapped run. Most factories end with ``atlas(graph.compile(...))``; one that puts an
  agent inside a parent graph wraps only the agent.
* a driver ``async drive(app)``: user code on a :class:`RecordingApp`, whose ``invoke``, ``stream``,
  ``get_state``, ``update_state``, ... call the sync or the async API (by the test's ``api``) and append what
  they return to the transcript. Exceptions are recorded (type and message), not raised.

The transcripts (plus the factory's side-effect counters) must be equal after :func:`plain` normalises what
legitimately varies between two runs: uuid-like and 32-hex ids (message ids made at run time, checkpoint, run
and task ids, interrupt ids; each distinct id becomes its order of first appearance), timestamps, and custom
stream chunks ``{"atlas_session": ...}`` (Atlas's one documented addition: filtered out, and checked apart).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import itertools
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from langgraph.types import Command

Wrap = Callable[..., Any]
#: Run a pattern through the sync API and through the async one.
both_apis = pytest.mark.parametrize("api", ["sync", "async"])


@dataclass
class Built:
    """What a factory built: the app the user calls, and the counters its nodes, tools and models bump."""

    app: Any
    counts: Counter = field(default_factory=Counter)


Factory = Callable[[Wrap], Built]
Driver = Callable[["RecordingApp"], Awaitable[None]]

# ------------------------------------------------------------------------------------------- normalising
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
#: Wall-clock fields: thread timestamps of snapshots and debug events.
_TIMES = {"ts", "created_at", "timestamp"}


class Ids:
    """uuid-like ids -> ``<id N>``, N the id's order of first appearance in one transcript."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        return _ID.sub(lambda m: f"<id {self.seen.setdefault(m.group(0), len(self.seen))}>", text)


def plain(value: Any, ids: Ids) -> Any:
    """A comparable, printable form of anything LangGraph hands back."""
    from langchain_core.messages import BaseMessage
    from pydantic import BaseModel

    kind = type(value).__name__
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return ids(value)
    if isinstance(value, BaseException):
        return {"raised": kind, "message": ids(str(value))}
    if isinstance(value, BaseMessage):
        return {"message": kind, **plain(value.model_dump(), ids)}
    if isinstance(value, BaseModel):
        return {"model": kind, **plain(value.model_dump(), ids)}
    if kind == "Interrupt":
        return {"Interrupt": plain(value.value, ids), "id": ids(value.id)}
    if kind == "Send":
        return {"Send": value.node, "arg": plain(value.arg, ids)}
    if kind == "Overwrite":
        return {"Overwrite": plain(value.value, ids)}
    if isinstance(value, Command):
        return {"Command": plain({"graph": value.graph, "update": value.update, "resume": value.resume, "goto": value.goto}, ids)}
    if kind in ("StateSnapshot", "PregelTask"):  # NamedTuples: by field, timestamps dropped
        fields = {k: plain(v, ids) for k, v in value._asdict().items() if k not in _TIMES}
        if kind == "PregelTask" and value.name == "__start__":
            # The input task's stored result is the input as it was when its write was saved, which races
            # add_messages giving the same objects ids (even bare runs differ): compare it without message ids.
            fields["result"] = _without_message_ids(fields["result"])
        return {kind: fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": kind, **{f.name: plain(getattr(value, f.name), ids) for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        return {plain(k, ids): plain(v, ids) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, tuple):
        return tuple(plain(v, ids) for v in value)
    if isinstance(value, list):
        return [plain(v, ids) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v, ids) for v in value), key=repr)
    return {"object": kind, "repr": ids(repr(value))}


def _without_message_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_message_ids(v) for k, v in value.items() if not (k == "id" and "message" in value)}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_message_ids(v) for v in value)
    return value


def is_announcement(data: Any) -> bool:
    """Atlas's custom stream event naming the session: the one documented addition to a wrapped stream."""
    return isinstance(data, Mapping) and set(data) == {"atlas_session"}


def split_chunk(chunk: Any, stream_mode: Any, subgraphs: bool, version: str) -> tuple[tuple, str, Any]:
    """(namespace, mode, payload) of one stream chunk, in any of the shapes ``stream`` yields."""
    if version == "v2":
        return tuple(chunk["ns"]), chunk["type"], chunk["data"]
    multi = isinstance(stream_mode, (list, tuple))
    ns: tuple = ()
    if subgraphs:
        ns, chunk = chunk[0], (chunk[1:] if multi else chunk[1])
    if multi:
        mode, data = chunk
    else:
        mode, data = stream_mode, chunk
    return ns, mode, data


# ------------------------------------------------------------------------------------------- recording
@dataclass
class Transcript:
    steps: list[tuple[str, Any]] = field(default_factory=list)
    #: User-visible runs started (a resume continues one; a replay or fork from a checkpoint starts one).
    runs: int = 0
    #: Per stream call with "custom" in its modes that finished: the namespaces of its atlas_session events.
    announcements: list[list[tuple]] = field(default_factory=list)


class RecordingApp:
    """The app as a driver sees it: each call goes to the sync or async API and is recorded."""

    def __init__(self, app: Any, api: str) -> None:
        self.app = app
        self.api = api
        self.transcript = Transcript()
        self.ids = Ids()

    # ------------------------------------------------------------------------------------- recording
    def record(self, label: str, value: Any) -> None:
        self.transcript.steps.append((label, plain(value, self.ids)))

    def _count_run(self, input: Any, config: Any, runs: int | None) -> None:
        """New input starts a run; ``Command(resume=...)`` and None go on with the paused one, except None
        from a past checkpoint (a replay or a fork). ``runs`` says otherwise where a driver knows better."""
        if runs is None:
            if isinstance(input, Command):
                runs = 0 if input.resume is not None else 1
            elif input is None:  # going on from a pause; from a past checkpoint it is a replay: a new run
                runs = 1 if ((config or {}).get("configurable") or {}).get("checkpoint_id") else 0
            else:
                runs = 1
        self.transcript.runs += runs

    async def _call(self, label: str, sync: Callable[[], Any], asynchronous: Callable[[], Awaitable[Any]],
                    shown: Callable[[Any], Any] = lambda result: result) -> Any:
        """Call the API (sync or async), record what the user sees (``shown(result)``, or the exception) and
        return the result (the exception, when one was raised)."""
        try:
            result = sync() if self.api == "sync" else await asynchronous()
        except Exception as exc:  # noqa: BLE001 - the user sees it: part of the transcript
            self.record(label, exc)
            return exc
        view = shown(result)
        self.record(label, await view if inspect.isawaitable(view) else view)
        return result

    # ---------------------------------------------------------------------------------------- the API
    async def invoke(self, input: Any, config: Any = None, *, runs: int | None = None, unordered: bool = False,
                     **kwargs: Any) -> Any:
        """``unordered``: parallel tasks interrupted, in whatever order they finished (sorted before comparing)."""
        self._count_run(input, config, runs)

        def shown(out: Any) -> Any:
            if unordered and isinstance(out, Mapping) and "__interrupt__" in out:
                return {**out, "__interrupt__": _sorted(out["__interrupt__"])}
            return out

        return await self._call("invoke", lambda: self.app.invoke(input, config, **kwargs),
                                lambda: self.app.ainvoke(input, config, **kwargs), shown)

    async def stream(self, input: Any, config: Any = None, *, stream_mode: Any = "values", subgraphs: bool = False,
                     runs: int | None = None, version: str = "v1", unordered: bool = False, take: int | None = None,
                     **kwargs: Any) -> list[Any]:
        """The chunks, less Atlas's ``atlas_session`` announcements (kept apart, for a check of their own).
        ``unordered``: tasks run in parallel and stream in whatever order they finish, even bare; the chunks
        are compared sorted (by their text with ids left out, before ids are numbered). ``take``: stop reading
        after that many chunks and close the stream, as a client that goes away does."""
        self._count_run(input, config, runs)
        options = {"stream_mode": stream_mode, "subgraphs": subgraphs, **kwargs}
        if version != "v1":
            options["version"] = version
        modes = stream_mode if isinstance(stream_mode, (list, tuple)) else [stream_mode]

        def read() -> list[Any]:
            stream = self.app.stream(input, config, **options)
            chunks = list(itertools.islice(stream, take))
            stream.close()
            return chunks

        async def collect() -> list[Any]:
            chunks, stream = [], self.app.astream(input, config, **options)
            async for chunk in stream:
                chunks.append(chunk)
                if take is not None and len(chunks) >= take:
                    break
            await stream.aclose()
            return chunks

        async def shown(chunks: list[Any]) -> list[Any]:
            kept, announced = [], []
            for chunk in chunks:
                ns, mode, data = split_chunk(chunk, stream_mode, subgraphs, version)
                (announced.append(ns) if mode == "custom" and is_announcement(data) else kept.append(chunk))
            closed_early = take is not None and len(chunks) >= take
            if "custom" in modes and not closed_early and await self._finished(config):
                self.transcript.announcements.append(announced)
            return _sorted(kept) if unordered else kept

        chunks = await self._call(f"stream {stream_mode}", read, collect, shown)
        return [] if isinstance(chunks, Exception) else [c for c in chunks if not _announces(c, stream_mode, subgraphs, version)]

    async def events(self, input: Any, config: Any = None, *, version: str = "v2", runs: int | None = None,
                     **kwargs: Any) -> Any:
        """``astream_events`` (v2: LangChain's run events; there is no sync v2) or ``stream_events`` v3
        (LangGraph's event protocol): the events, and for v3 the run's output."""
        self._count_run(input, config, runs)

        def sync() -> Any:
            run = self.app.stream_events(input, config, version=version, **kwargs)
            return list(run) if version != "v3" else {"events": list(run), "output": run.output}

        async def asynchronous() -> Any:
            if version != "v3":
                return [event async for event in self.app.astream_events(input, config, version=version, **kwargs)]
            run = await self.app.astream_events(input, config, version=version, **kwargs)
            return {"events": [event async for event in run], "output": await run.output()}

        return await self._call(f"events {version}", sync, asynchronous)

    async def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> Any:
        self.transcript.runs += len(inputs)
        return await self._call("batch", lambda: self.app.batch(inputs, config, **kwargs),
                                lambda: self.app.abatch(inputs, config, **kwargs))

    async def _finished(self, config: Any) -> bool:
        """Whether the run just streamed ended (no pause left), outside the transcript."""
        if not ((config or {}).get("configurable") or {}).get("thread_id") or getattr(self.app, "checkpointer", None) is None:
            return True
        state = self.app.get_state(config) if self.api == "sync" else await self.app.aget_state(config)
        return not state.next

    async def get_state(self, config: Any, *, subgraphs: bool = False) -> Any:
        return await self._call("get_state", lambda: self.app.get_state(config, subgraphs=subgraphs),
                                lambda: self.app.aget_state(config, subgraphs=subgraphs))

    async def history(self, config: Any, **kwargs: Any) -> list[Any]:
        async def collect() -> list[Any]:
            return [s async for s in self.app.aget_state_history(config, **kwargs)]

        snapshots = await self._call("history", lambda: list(self.app.get_state_history(config, **kwargs)), collect)
        return [] if isinstance(snapshots, Exception) else snapshots

    async def update_state(self, config: Any, values: Any, as_node: str | None = None, **kwargs: Any) -> Any:
        return await self._call("update_state", lambda: self.app.update_state(config, values, as_node=as_node, **kwargs),
                                lambda: self.app.aupdate_state(config, values, as_node=as_node, **kwargs))

    def note(self, label: str, value: Any) -> None:
        """Anything else the user can observe (an attribute, a drawing, printed output)."""
        self.record(label, value)

    @contextlib.contextmanager
    def printed(self, label: str = "stdout") -> Any:
        """Record what the block prints (``debug=True`` output)."""
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            yield
        self.record(label, buffer.getvalue())


def _sorted(items: Any) -> list[Any]:
    """Items in an order that does not depend on run-time ids or timing."""
    blind = Ids()
    return sorted(items, key=lambda item: _ID.sub("", repr(plain(item, blind))))


def _announces(chunk: Any, stream_mode: Any, subgraphs: bool, version: str) -> bool:
    _, mode, data = split_chunk(chunk, stream_mode, subgraphs, version)
    return mode == "custom" and is_announcement(data)


def find(snapshots: list[Any], **wanted: Any) -> Any:
    """The first snapshot (newest first, as history lists them) whose fields match: ``find(h, next=("b",))``.
    None when there is none (the driver goes on; the transcripts tell the difference)."""
    for snapshot in snapshots:
        if all(getattr(snapshot, key) == value for key, value in wanted.items()):
            return snapshot
    return None


async def drive_pattern(build: Factory, drive: Driver, atlas: Wrap, api: str) -> tuple[Transcript, Built]:
    built = build(atlas)
    app = RecordingApp(built.app, api)
    try:
        await drive(app)
    except Exception as exc:  # noqa: BLE001 - a driver tripped on an unexpected shape: show it, with what came before
        app.record("driver failed", exc)
    app.record("counts", dict(built.counts))
    return app.transcript, built


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def first_difference(wrapped: Any, bare: Any, path: str = "") -> str | None:
    """Where two plain values first differ, in words; None when equal."""
    if type(wrapped) is not type(bare):
        return f"{path or '.'}: wrapped {_short(wrapped)}, bare {_short(bare)}"
    if isinstance(bare, dict):
        extra, missing = [k for k in wrapped if k not in bare], [k for k in bare if k not in wrapped]
        if extra or missing:
            return f"{path or '.'}: wrapped has keys {extra} more, {missing} fewer than bare"
        for key in bare:
            found = first_difference(wrapped[key], bare[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(bare, (list, tuple)):
        for index, (w, b) in enumerate(zip(wrapped, bare, strict=False)):
            found = first_difference(w, b, f"{path}[{index}]")
            if found:
                return found
        if len(wrapped) != len(bare):
            longer, name = (wrapped, "wrapped") if len(wrapped) > len(bare) else (bare, "bare")
            return (f"{path or '.'}: {len(wrapped)} items wrapped, {len(bare)} bare; "
                    f"first of {name}'s extra: {_short(longer[min(len(wrapped), len(bare))])}")
        return None
    if isinstance(bare, str) and wrapped != bare and max(len(wrapped), len(bare)) > 80:
        at = next((i for i, (w, b) in enumerate(zip(wrapped, bare, strict=False)) if w != b), min(len(wrapped), len(bare)))
        start = max(0, at - 30)
        return f"{path or '.'}: from character {at}: wrapped {wrapped[start:at + 90]!r}, bare {bare[start:at + 90]!r}"
    return None if wrapped == bare else f"{path or '.'}: wrapped {_short(wrapped)}, bare {_short(bare)}"


def assert_same(bare: Transcript, wrapped: Transcript) -> None:
    """Equal transcripts. The message names the first differing step and where in it (no full diff: pytest's
    of two transcripts is long to compute and longer to read)."""
    for index, ((label, b), (w_label, w)) in enumerate(zip(bare.steps, wrapped.steps, strict=False)):
        if (w_label, w) != (label, b):
            where = first_difference(w, b) if w_label == label else f"the wrapped run's call was {w_label!r}"
            raise AssertionError(f"step {index} ({label}) {where}")
    if len(wrapped.steps) != len(bare.steps):
        raise AssertionError(f"the wrapped run made {len(wrapped.steps)} calls, bare {len(bare.steps)}")
