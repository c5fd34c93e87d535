"""The Agents SDK's trace spans of supervised runs, stored as trajectory events of their Atlas session.

:class:`AtlasTraceProcessor` is an ordinary ``agents.tracing.TracingProcessor``. One instance is registered per
process (:func:`install_trace_processor`, called by every supervised run; idempotent). A supervised run puts a
key of its own in ``RunConfig.trace_metadata`` (:data:`RUN_KEY`; also the session id, :data:`SESSION_KEY`, when
the session has begun by then), which the SDK copies onto every span of the run's trace. A streamed run's session
begins inside the run, after its trace was created, hence a key rather than the session id. When a span ends,
the processor stores it as a ``span`` event of that session (ids, type,
timing, error, and the span's exported data clipped to a few kB; the recorder redacts secrets first). Spans of a
trace the caller opened themselves (``with trace(...)`` around the run, so the run's metadata is not used) are
matched through the run's context instead. Spans of unsupervised runs, and spans that end after their session
ended, are ignored. The processor exports nothing anywhere and never raises.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

from agents.tracing import TracingProcessor, add_trace_processor, get_trace_provider

from ._items import clip

__all__ = ["AtlasTraceProcessor", "install_trace_processor", "RUN_KEY", "SESSION_KEY"]

log = logging.getLogger("atlas_plugins.openai_agents.tracing")

#: The ``trace_metadata`` key that names a supervised run (the adapter's key for it).
RUN_KEY = "atlas_run"
#: The ``trace_metadata`` key that carries the run's Atlas session id, when known as the trace starts.
SESSION_KEY = "atlas_session_id"
#: The key of the supervised run executing in this context (for spans of a caller's own trace).
current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("atlas_openai_agents_run", default=None)


class AtlasTraceProcessor(TracingProcessor):
    """Stores the spans of supervised runs as ``span`` trajectory events of their session."""

    def __init__(self, data_limit: int = 2000) -> None:
        self.data_limit = data_limit
        self._runs: dict[str, Any] = {}
        self._traces: dict[str, str] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------- sessions
    def watch(self, key: str, run: Any) -> None:
        """Store the spans of traces marked with ``key`` as events of this SupervisedRun, from now on."""
        with self._lock:
            self._runs[key] = run

    def forget(self, key: str) -> None:
        """Stop storing spans for a run (its session ended)."""
        with self._lock:
            self._runs.pop(key, None)
            for trace_id in [t for t, k in self._traces.items() if k == key]:
                del self._traces[trace_id]

    def _run_for(self, trace_id: str | None, metadata: Any) -> Any:
        key = metadata.get(RUN_KEY) if isinstance(metadata, dict) else None
        with self._lock:
            if key is None and trace_id is not None:
                key = self._traces.get(trace_id)
            if key is None:
                key = current_run.get()
            return self._runs.get(key) if key else None

    # ------------------------------------------------------------------------------ processor
    def on_trace_start(self, trace: Any) -> None:
        try:
            metadata = getattr(trace, "metadata", None)
            key = metadata.get(RUN_KEY) if isinstance(metadata, dict) else None
            if key:
                with self._lock:
                    self._traces[trace.trace_id] = key
        except Exception:  # noqa: BLE001 - a processor must never break a run
            log.exception("atlas trace processor: on_trace_start failed")

    def on_trace_end(self, trace: Any) -> None:
        try:
            with self._lock:
                self._traces.pop(getattr(trace, "trace_id", None), None)
        except Exception:  # noqa: BLE001
            log.exception("atlas trace processor: on_trace_end failed")

    def on_span_start(self, span: Any) -> None:
        pass

    def on_span_end(self, span: Any) -> None:
        try:
            run = self._run_for(getattr(span, "trace_id", None), getattr(span, "trace_metadata", None))
            if run is None or run.ended:
                return
            data = span.span_data
            exported = data.export() if hasattr(data, "export") else {}
            payload = {
                "span_id": span.span_id,
                "trace_id": span.trace_id,
                "parent_id": span.parent_id,
                "type": getattr(data, "type", type(data).__name__),
                "name": exported.get("name") if isinstance(exported, dict) else None,
                "started_at": span.started_at,
                "ended_at": span.ended_at,
                "error": clip(span.error, run.supervisor.redactor, 1000) if span.error else None,
                "data": clip(exported, run.supervisor.redactor, self.data_limit),
            }
            # The core's event writer (ordered per session, stored and published like every other event).
            run.record_event("span", payload)
        except Exception:  # noqa: BLE001
            log.exception("atlas trace processor: could not store a span")

    def shutdown(self) -> None:
        with self._lock:
            self._runs.clear()
            self._traces.clear()

    def force_flush(self) -> None:
        pass


_PROCESSOR: AtlasTraceProcessor | None = None
_INSTALL_LOCK = threading.Lock()


def install_trace_processor() -> AtlasTraceProcessor:
    """Register the process-wide :class:`AtlasTraceProcessor` with the SDK's trace provider, once.

    Idempotent: calling it again registers nothing new. If ``set_trace_processors([...])`` replaced the provider's
    processors since, the Atlas processor is added back (the SDK's default provider lists its processors)."""
    global _PROCESSOR
    with _INSTALL_LOCK:
        if _PROCESSOR is None:
            _PROCESSOR = AtlasTraceProcessor()
            add_trace_processor(_PROCESSOR)
            return _PROCESSOR
        try:
            registered = get_trace_provider()._multi_processor._processors  # type: ignore[attr-defined]
        except AttributeError:  # a custom provider that does not list its processors: trust the first registration
            return _PROCESSOR
        if _PROCESSOR not in registered:
            add_trace_processor(_PROCESSOR)
        return _PROCESSOR
