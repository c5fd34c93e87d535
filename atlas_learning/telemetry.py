"""Sessions as OpenTelemetry traces, following the GenAI semantic conventions (needs the ``otel`` extra).

One stored session becomes one trace whose id is the session id:

- ``invoke_agent {agent}`` (the root): ``gen_ai.operation.name``, ``gen_ai.agent.name``, ``gen_ai.conversation.id``,
  the session's token totals, and Atlas's own facts as ``atlas.*`` attributes (lane and why, status, reward,
  review status, retries, lessons used); verdicts, guidance, the session reward (``gen_ai.evaluation.result``)
  and review changes as events;
- ``execute_tool {tool}`` per tool call (``gen_ai.tool.name``, ``gen_ai.tool.call.id``, and with
  ``capture_content`` the opt-in ``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``), its step reward
  and the teacher's verdict on it as events, an error as the span's status and ``error.type``;
- ``chat {model}`` per model call, the student's and every supervision role's (``gen_ai.provider.name`` and
  the older ``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``atlas.role``, ``atlas.cost_usd``);
- a span named after the node for a graph node step.

Times come from the stored rows (a step's start and end, a model call's end and latency, the session's start
and finish). Everything read is what the store holds, already redacted, and is passed through the configured
redactor once more before it leaves. The SDK and the exporter are imported only when a trace is built.

``export_otlp`` sends the sessions of a filter to an OTLP/HTTP endpoint (``atlas export --format otlp``);
``LiveExporter`` subscribes to a supervisor's ``session_finished`` events and sends each finished session from
a background thread (``telemetry.otlp_endpoint``).
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import AtlasError, UsageError

if TYPE_CHECKING:
    from .config import AtlasConfig, TelemetryConfig
    from .events import AtlasEvent
    from .redact import Redactor
    from .store import SessionFilter, Store

__all__ = ["LiveExporter", "build_session_spans", "export_command", "export_otlp", "traces_url"]

log = logging.getLogger("atlas_learning.telemetry")

#: The instrumentation scope the spans carry.
SCOPE = "atlas_learning"
#: Content attributes are cut to this many characters (backends refuse or truncate huge attributes anyway).
CONTENT_LIMIT = 8000
_INSTALL_HINT = "OpenTelemetry export needs the otel extra: pip install 'atlas-plugins[otel]'"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for an endpoint: a base URL gets ``/v1/traces``, a full traces URL stays."""
    endpoint = endpoint.strip()
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"--endpoint {endpoint!r}: expected an http(s):// URL, e.g. http://127.0.0.1:4318")
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def _sdk() -> Any:
    try:
        from opentelemetry.sdk import trace as sdk_trace
    except ImportError:
        raise AtlasError(_INSTALL_HINT) from None
    return sdk_trace


def _ns(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000_000)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


@functools.cache
def _sdk_classes() -> tuple[type, type]:
    """The id generator and span processor, subclasses of the SDK's own (defined once the SDK is imported)."""
    _sdk()
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class SessionIds(RandomIdGenerator):
        """Random span ids; the next trace id is the session's (a session id is a random 128-bit UUID4)."""

        next_trace_id: int | None = None

        def generate_trace_id(self) -> int:
            trace_id, self.next_trace_id = self.next_trace_id, None
            return trace_id if trace_id else super().generate_trace_id()

    class Collect(SpanProcessor):
        """Keeps finished spans for an explicit, checked export."""

        def __init__(self) -> None:
            self.spans: list[Any] = []

        def on_end(self, span: Any) -> None:
            self.spans.append(span)

    return SessionIds, Collect


class _Builder:
    """A tracer provider whose spans are collected, one session's trace at a time (thread-safe)."""

    def __init__(self, service_name: str) -> None:
        sdk_trace = _sdk()
        from opentelemetry.sdk.resources import Resource

        ids, collect = _sdk_classes()
        self._ids = ids()
        self._collect = collect()
        self.provider = sdk_trace.TracerProvider(resource=Resource.create({"service.name": service_name}), id_generator=self._ids)
        self.provider.add_span_processor(self._collect)
        from . import __version__

        self.tracer = self.provider.get_tracer(SCOPE, __version__)
        self._lock = threading.Lock()

    def build(self, store: Store, session_id: str, *, capture_content: bool, redactor: Redactor | None) -> list[Any]:
        with self._lock:
            self._collect.spans = []
            _emit_session(self, store, session_id, capture_content=capture_content, redactor=redactor)
            spans, self._collect.spans = self._collect.spans, []
        return spans


def build_session_spans(store: Store, session_id: str, *, capture_content: bool = False, redactor: Redactor | None = None,
                        service_name: str = "atlas") -> list[Any]:
    """The finished SDK spans (``ReadableSpan``) of one stored session's trace, root last. Raises AtlasError when
    the session does not exist."""
    return _Builder(service_name).build(store, session_id, capture_content=capture_content, redactor=redactor)


def _details(store: Store, session_id: str) -> dict[str, Any]:
    from ._commands.sessions import _details as session_details
    from .store import ModelCallRecord, SessionRecord

    record = store.get(SessionRecord, session_id)
    if record is None:
        raise AtlasError(f"no session {session_id} in {store!r}; list them with `atlas sessions`")
    details = session_details(store, session_id)
    details["model_calls"] = store.rows(ModelCallRecord, ModelCallRecord.session_id == session_id, order_by=ModelCallRecord.id)
    details["record"] = record
    return details


def _emit_session(builder: _Builder, store: Store, session_id: str, *, capture_content: bool, redactor: Redactor | None) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    d = _details(store, session_id)
    s = d["record"]

    def clean(value: Any) -> str:
        text = _json(value)
        if redactor is not None:
            text = redactor.text(text)
        return text if len(text) <= CONTENT_LIMIT else text[: CONTENT_LIMIT - 1] + "…"

    starts = [s.started_at] + [st.started_at for st in d["steps"]]
    ends = [t for t in [s.finished_at, *(st.ended_at for st in d["steps"]), *(c.created_at for c in d["model_calls"])] if t]
    start, end = min(starts), max([*ends, s.started_at])
    builder._ids.next_trace_id = int(s.id, 16) if len(s.id) == 32 else None  # noqa: SLF001 - the builder's own generator
    agent = s.agent_name or s.learning_key
    root_attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": s.id,
        "gen_ai.usage.input_tokens": sum(int((u or {}).get("input_tokens") or 0) for u in (s.usage_by_role or {}).values() if isinstance(u, dict)),
        "gen_ai.usage.output_tokens": sum(int((u or {}).get("output_tokens") or 0) for u in (s.usage_by_role or {}).values() if isinstance(u, dict)),
        "atlas.session.id": s.id,
        "atlas.learning_key": s.learning_key,
        "atlas.status": s.status,
        "atlas.review.status": s.review_status,
        "atlas.retries": s.retries,
        "atlas.interventions": s.interventions,
        "atlas.total_tokens": s.total_tokens,
        "atlas.lessons_used": list(s.lessons_used or []),
        "atlas.drift_alert": bool(s.drift_alert),
    }
    optional = {"atlas.task_family": s.task_family, "atlas.lane": s.lane, "atlas.lane.source": s.lane_source,
                "atlas.lane.confidence": s.lane_confidence, "atlas.lane.reason": s.lane_reason and clean(s.lane_reason),
                "atlas.reward": s.reward, "atlas.reward.reason": s.reward_reason and clean(s.reward_reason),
                "atlas.checks_passed": s.checks_passed, "atlas.cost_usd": s.total_cost_usd,
                "atlas.review.note": s.review_note and clean(s.review_note)}
    root_attributes.update({k: v for k, v in optional.items() if v is not None})
    if capture_content:
        root_attributes["atlas.task"] = clean(s.task)
        if s.final_answer is not None:
            root_attributes["atlas.final_answer"] = clean(s.final_answer)
    root = builder.tracer.start_span(f"invoke_agent {agent}", kind=SpanKind.INTERNAL, start_time=_ns(start), attributes=root_attributes)
    if s.status in ("failed", "abandoned"):
        root.set_status(Status(StatusCode.ERROR, s.status))
        root.set_attribute("error.type", s.status)
    context = trace.set_span_in_context(root)

    for plan in d["plans"]:
        attributes: dict[str, Any] = {"atlas.plan.kind": plan.kind, "atlas.plan.steps": len(plan.steps)}
        if capture_content:
            attributes["atlas.plan.content"] = clean([p.get("description", p) if isinstance(p, dict) else p for p in plan.steps])
        root.add_event("atlas.plan", attributes, timestamp=_ns(plan.created_at))
    for attempt in d["attempts"]:
        attributes = {"atlas.attempt": attempt.attempt, "atlas.verdict.accepted": "unverified" if attempt.accepted is None
                      else str(attempt.accepted).lower()}
        if attempt.verdict_reason:
            attributes["atlas.verdict.reason"] = clean(attempt.verdict_reason)
        if capture_content and attempt.answer is not None:
            attributes["atlas.answer"] = clean(attempt.answer)
        if capture_content and attempt.guidance:
            attributes["atlas.guidance"] = clean(attempt.guidance)
        root.add_event("atlas.verdict", attributes, timestamp=_ns(attempt.created_at))
    for note in d["guidance"]:
        if note.step_id:
            continue  # on its step's span
        attributes = {"atlas.guidance.source": note.source, "atlas.guidance.kind": note.kind}
        if capture_content:
            attributes["atlas.guidance.content"] = clean(note.content)
        root.add_event("atlas.guidance", attributes, timestamp=_ns(note.created_at))
    for reward in d["rewards"]:
        if reward.scope != "session":
            continue
        root.add_event("gen_ai.evaluation.result", _evaluation(reward, "atlas.session_reward", clean), timestamp=_ns(reward.created_at))
    for entry in d["reviews"]:
        attributes = {"atlas.review.from": entry.from_status, "atlas.review.to": entry.to_status, "atlas.review.reviewer": entry.reviewer}
        if entry.note:
            attributes["atlas.review.note"] = clean(entry.note)
        root.add_event("atlas.review", attributes, timestamp=_ns(entry.created_at))

    step_rewards = {r.step_id: r for r in d["rewards"] if r.scope == "step" and r.step_id}
    step_guidance: dict[str, list[Any]] = {}
    for note in d["guidance"]:
        if note.step_id:
            step_guidance.setdefault(note.step_id, []).append(note)
    step_verdicts = {(e.payload or {}).get("step_id"): e for e in d["verdicts"] if (e.payload or {}).get("step_id")}
    model_steps = False
    for step in d["steps"]:
        step_end = step.ended_at or (step.started_at + timedelta(milliseconds=step.duration_ms or 0))
        attributes = {"atlas.step.index": step.step_index, "atlas.step.attempt": step.attempt, "atlas.step.kind": step.kind}
        if step.kind == "tool_call":
            name = step.tool_name or step.name
            attributes.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.type": "function",
                               "gen_ai.tool.call.id": step.id})
            if capture_content:
                args = step.tool_args if step.tool_args is not None else step.input
                if args is not None:
                    attributes["gen_ai.tool.call.arguments"] = clean(args)
                if step.output is not None:
                    attributes["gen_ai.tool.call.result"] = clean(step.output)
            span = builder.tracer.start_span(f"execute_tool {name}", context=context, kind=SpanKind.INTERNAL,
                                             start_time=_ns(step.started_at), attributes=attributes)
        elif step.kind == "model_call":
            model_steps = True
            model = step.name or "model"
            attributes.update({"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "atlas.role": "student",
                               "gen_ai.usage.input_tokens": step.input_tokens, "gen_ai.usage.output_tokens": step.output_tokens})
            if capture_content and step.output is not None:
                attributes["atlas.output"] = clean(step.output)
            span = builder.tracer.start_span(f"chat {model}", context=context, kind=SpanKind.CLIENT,
                                             start_time=_ns(step.started_at), attributes=attributes)
        else:
            if capture_content and step.input is not None:
                attributes["atlas.input"] = clean(step.input)
            if capture_content and step.output is not None:
                attributes["atlas.output"] = clean(step.output)
            span = builder.tracer.start_span(step.name or step.kind, context=context, kind=SpanKind.INTERNAL,
                                             start_time=_ns(step.started_at), attributes=attributes)
        verdict = step_verdicts.get(step.id)
        if verdict is not None:
            payload = verdict.payload or {}
            accepted = payload.get("accepted")
            event: dict[str, Any] = {"atlas.verdict.accepted": "unverified" if accepted is None else str(accepted).lower()}
            if payload.get("reason"):
                event["atlas.verdict.reason"] = clean(payload["reason"])
            span.add_event("atlas.verdict", event, timestamp=_ns(verdict.created_at))
        for note in step_guidance.get(step.id, []):
            event = {"atlas.guidance.source": note.source, "atlas.guidance.kind": note.kind}
            if capture_content:
                event["atlas.guidance.content"] = clean(note.content)
            span.add_event("atlas.guidance", event, timestamp=_ns(note.created_at))
        reward = step_rewards.get(step.id)
        if reward is not None:
            span.add_event("gen_ai.evaluation.result", _evaluation(reward, "atlas.step_reward", clean), timestamp=_ns(reward.created_at))
        if step.error:
            span.set_status(Status(StatusCode.ERROR, clean(step.error)[:500]))
            span.set_attribute("error.type", "tool_error" if step.kind == "tool_call" else "error")
        span.end(end_time=_ns(max(step_end, step.started_at)))

    for call in d["model_calls"]:
        if model_steps and call.role == "student" and call.purpose == "agent":
            continue  # the same call, already a span from its step
        finished = call.created_at
        began = finished - timedelta(milliseconds=call.latency_ms or 0)
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": call.model or "unknown",
                      "gen_ai.usage.input_tokens": call.input_tokens, "gen_ai.usage.output_tokens": call.output_tokens,
                      "atlas.role": call.role, "atlas.purpose": call.purpose, "atlas.attempts": call.attempts}
        if call.provider:
            attributes["gen_ai.provider.name"] = call.provider
            attributes["gen_ai.system"] = call.provider
        if call.cost_usd is not None:
            attributes["atlas.cost_usd"] = call.cost_usd
        span = builder.tracer.start_span(f"chat {call.model or call.role}", context=context, kind=SpanKind.CLIENT,
                                         start_time=_ns(began), attributes=attributes)
        if call.error:
            span.set_status(Status(StatusCode.ERROR, clean(call.error)[:500]))
            span.set_attribute("error.type", "model_error")
        span.end(end_time=_ns(finished))
    root.end(end_time=_ns(end))


def _evaluation(reward: Any, name: str, clean: Callable[[Any], str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.evaluation.name": name, "atlas.reward.status": reward.status,
                                  "atlas.reward.escalated": bool(reward.escalated), "atlas.reward.samples": len(reward.samples or [])}
    if reward.score is not None:
        attributes["gen_ai.evaluation.score.value"] = float(reward.score)
    if reward.reason:
        attributes["gen_ai.evaluation.explanation"] = clean(reward.reason)
    for part, value in (reward.breakdown or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[f"atlas.reward.{part}"] = float(value)
    return attributes


def _otlp_exporter(endpoint: str, headers: dict[str, str] | None, timeout_s: float) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise AtlasError(_INSTALL_HINT) from None
    return OTLPSpanExporter(endpoint=traces_url(endpoint), headers=dict(headers or {}), timeout=timeout_s)


def _send(exporter: Any, spans: Sequence[Any], endpoint: str) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    if spans and exporter.export(list(spans)) is not SpanExportResult.SUCCESS:
        raise AtlasError(f"the OTLP endpoint {traces_url(endpoint)} did not take the spans (see the log above); "
                         "check --endpoint and that the collector is running")


def export_otlp(store: Store, endpoint: str, *, where: SessionFilter | None = None, config: AtlasConfig | None = None,
                exporter: Any = None, batch_spans: int = 512, progress: Callable[[int], None] | None = None) -> int:
    """Send the sessions matching ``where`` (newest first, in pages) to an OTLP/HTTP endpoint as traces and return
    how many were sent. ``exporter`` replaces the OTLP exporter (any SDK ``SpanExporter``, for tests)."""
    from .config import AtlasConfig
    from .redact import Redactor
    from .store import SessionFilter

    config = config or AtlasConfig.load()
    telemetry = config.telemetry
    redactor = Redactor(config.redaction.patterns, enabled=config.redaction.enabled)
    where = where or SessionFilter()
    if exporter is None:
        exporter = _otlp_exporter(endpoint, telemetry.headers, telemetry.timeout_s)
    builder = _Builder(telemetry.service_name)
    sent, pending = 0, []
    page = 200
    remaining = where.limit
    offset = where.offset
    while remaining is None or remaining > 0:
        size = page if remaining is None else min(page, remaining)
        chunk = store.list_sessions(replace(where, limit=size, offset=offset))
        if not chunk:
            break
        offset += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
        for record in chunk:
            pending.extend(builder.build(store, record.id, capture_content=telemetry.capture_content, redactor=redactor))
            sent += 1
            if len(pending) >= batch_spans:
                _send(exporter, pending, endpoint)
                pending = []
            if progress is not None:
                progress(sent)
        if len(chunk) < size:
            break
    _send(exporter, pending, endpoint)
    exporter.shutdown()
    return sent


def export_command(*, config: AtlasConfig, fmt: str, endpoint: str | None, output: str | None, where: SessionFilter) -> None:
    """``atlas export --format otlp --endpoint URL``: checks the options, sends, prints one summary line."""
    import typer

    from ._commands._common import open_store

    if fmt != "otlp":
        raise UsageError(f"--endpoint goes with --format otlp (got --format {fmt}); drop --endpoint to write JSONL")
    endpoint = endpoint or config.telemetry.otlp_endpoint
    if not endpoint:
        raise UsageError("--format otlp needs --endpoint URL (an OTLP/HTTP collector, e.g. http://127.0.0.1:4318) "
                         "or telemetry.otlp_endpoint in atlas.yaml")
    if output is not None:
        raise UsageError("--format otlp sends traces to --endpoint; drop --output")
    url = traces_url(endpoint)
    _sdk()
    with open_store(config) as store:
        count = export_otlp(store, endpoint, where=where, config=config)
    statuses = ", ".join(where.review_status or ()) if where.review_status else "every status"
    typer.echo(f"exported {count} session{'s' if count != 1 else ''} ({statuses}) as OpenTelemetry traces to {url}")


class LiveExporter:
    """Sends each session a supervisor finishes to ``telemetry.otlp_endpoint``, from one background thread.

    The subscriber only puts the session id on a bounded queue (a full queue drops it, logged): the user's call
    and the finish worker never wait for the network. The thread waits for the recorder to have written the
    session, builds its trace from the store and exports it; a failing endpoint is logged, never raised.
    """

    def __init__(self, supervisor: Any, *, exporter: Any = None, max_queue: int = 1000) -> None:
        config = supervisor.config.telemetry
        if not config.otlp_endpoint and exporter is None:
            raise AtlasError("telemetry.otlp_endpoint is not set; set it to an OTLP/HTTP URL such as http://127.0.0.1:4318")
        self._supervisor = supervisor
        self._config: TelemetryConfig = config
        self._exporter = exporter if exporter is not None else _otlp_exporter(config.otlp_endpoint, config.headers, config.timeout_s)
        self._builder = _Builder(config.service_name)
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max_queue)
        self.sent = 0
        self.failed = 0
        self._idle = threading.Condition()
        self._outstanding = 0
        self._unsubscribe = supervisor.events.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="atlas-otlp-export", daemon=True)
        self._thread.start()

    @classmethod
    def attach(cls, supervisor: Any) -> LiveExporter | None:
        """A live exporter for a supervisor whose config sets ``telemetry.otlp_endpoint``; None (logged) when the
        otel extra is missing, so a run never fails for its telemetry."""
        try:
            return cls(supervisor)
        except AtlasError as exc:
            log.warning("OpenTelemetry export is off: %s", exc)
            return None

    def _on_event(self, event: AtlasEvent) -> None:
        if event.type != "session_finished":
            return
        with self._idle:
            self._outstanding += 1
        try:
            self._queue.put_nowait(event.session_id)
        except queue.Full:
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()
            log.warning("OpenTelemetry export queue is full; session %s is not sent (atlas export --format otlp sends it later)",
                        event.session_id)

    def _run(self) -> None:
        from .redact import Redactor

        redaction = self._supervisor.config.redaction
        redactor = Redactor(redaction.patterns, enabled=redaction.enabled)
        while True:
            session_id = self._queue.get()
            if session_id is None:
                return
            try:
                self._supervisor.recorder.flush(timeout=self._config.timeout_s)
                spans = self._builder.build(self._supervisor.store, session_id, capture_content=self._config.capture_content,
                                            redactor=redactor)
                _send(self._exporter, spans, self._config.otlp_endpoint or "exporter")
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - telemetry never breaks supervision
                self.failed += 1
                log.warning("OpenTelemetry export of session %s failed: %s", session_id, str(exc).splitlines()[0] if str(exc) else exc)
            finally:
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every session queued so far has been sent (or failed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop listening, send what is queued (waiting at most ``timeout``), stop the thread."""
        self._unsubscribe()
        self.wait(timeout)
        self._queue.put(None)
        self._thread.join(timeout)
        self._exporter.shutdown()

