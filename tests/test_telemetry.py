"""Sessions as OpenTelemetry traces (issue 19): GenAI semantic-convention spans built from the stored rows, sent to
the SDK's in-memory exporter, to a real OTLP/HTTP receiver on 127.0.0.1 (the protobuf request decoded), by
``atlas export --format otlp`` and by the live exporter in the background. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from atlas_learning.cli import app
from atlas_learning.store import SessionFilter, StepRecord
from atlas_learning.telemetry import LiveExporter, build_session_spans, export_otlp, traces_url
from tests.support import make_supervisor  # noqa: F401 - the fixture

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

# Made of parts so that no line here looks like a credential; the redactor knows this shape (an OpenAI key).
SECRET = "sk-" + "proj-" + "PLANTEDotelSECRET" + "9f8e7d6c5b4a3210ZYXW"
TASK = "Read notes/todo.txt and report how many items it lists"
runner = CliRunner()


def coached_session(supervisor: Any, answer: str = "3 items") -> str:
    """A coached session with a plan, a tool call carrying a secret, a student model call and a verdict."""
    run = supervisor.begin(TASK, agent_name="files", learning_key="files")
    run.review_plan(["read notes/todo.txt", "count the items"])
    run.record_model_call(role="student", provider="openai", model="gpt-4.1-mini", input_tokens=120, output_tokens=30, latency_ms=40)
    step = run.record_step(tool_name="read_file", tool_args={"path": "notes/todo.txt", "api_key": SECRET},
                           output="- a\n- b\n- c")
    run.validate_step(step)
    run.validate_answer(answer)
    return run.finish(answer).session_id


@pytest.fixture
def coached(make_supervisor) -> tuple[Any, str]:  # noqa: F811
    supervisor = make_supervisor(supervision={"lane": "coach", "llm_probe": False})
    session_id = coached_session(supervisor)
    assert supervisor.drain(30)
    supervisor.recorder.flush()
    return supervisor, session_id


def by_name(spans: list[Any]) -> dict[str, list[Any]]:
    named: dict[str, list[Any]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def test_a_stored_session_is_one_trace_of_genai_spans_with_atlas_facts(coached) -> None:
    supervisor, session_id = coached
    spans = build_session_spans(supervisor.store, session_id, capture_content=True)
    named = by_name(spans)
    root = named["invoke_agent files"][0]
    # the trace id is the session id; every other span is the root's child, in the same trace
    assert root.context.trace_id == int(session_id, 16)
    assert root.parent is None
    children = [s for s in spans if s is not root]
    assert children and all(s.parent.span_id == root.context.span_id and s.context.trace_id == root.context.trace_id
                            for s in children)
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "files"
    assert root.attributes["gen_ai.conversation.id"] == session_id
    assert root.attributes["atlas.lane"] == "coach"
    assert root.attributes["atlas.review.status"] == "pending"
    assert root.attributes["atlas.reward"] == pytest.approx(supervisor.session_result(session_id).reward)
    events = {e.name for e in root.events}
    assert {"atlas.plan", "atlas.verdict", "gen_ai.evaluation.result"} <= events
    evaluation = next(e for e in root.events if e.name == "gen_ai.evaluation.result")
    assert evaluation.attributes["gen_ai.evaluation.score.value"] == pytest.approx(root.attributes["atlas.reward"])

    tool = named["execute_tool read_file"][0]
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "read_file"
    assert "notes/todo.txt" in tool.attributes["gen_ai.tool.call.arguments"]
    assert tool.attributes["gen_ai.tool.call.result"] == "- a\n- b\n- c"
    assert any(e.name == "atlas.verdict" for e in tool.events)  # the teacher's verdict on the step
    # span times are the stored step's times
    step = supervisor.store.rows(StepRecord, StepRecord.session_id == session_id, StepRecord.kind == "tool_call")[0]
    assert tool.start_time == int(step.started_at.timestamp() * 1e9)
    assert tool.end_time == int(step.ended_at.timestamp() * 1e9)
    assert root.start_time <= tool.start_time <= tool.end_time <= root.end_time

    student = named["chat gpt-4.1-mini"][0]
    assert student.attributes["gen_ai.operation.name"] == "chat"
    assert student.attributes["gen_ai.request.model"] == "gpt-4.1-mini"
    assert (student.attributes["gen_ai.usage.input_tokens"], student.attributes["gen_ai.usage.output_tokens"]) == (120, 30)
    teacher_calls = [s for s in spans if s.attributes.get("atlas.role") == "teacher"]
    assert teacher_calls, "the teacher's own model calls are spans too"
    for call in teacher_calls:
        assert call.name.startswith("chat ")
        assert call.attributes["gen_ai.provider.name"] == call.attributes["gen_ai.system"]
        assert {"gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"} <= set(call.attributes)
        assert call.start_time <= call.end_time
    # the planted secret went through the store's redaction and stays out of every attribute and event
    dumped = repr([(s.name, dict(s.attributes), [(e.name, dict(e.attributes)) for e in s.events]) for s in spans])
    assert "PLANTEDotelSECRET" not in dumped and "9f8e7d6c5b4a3210ZYXW" not in dumped
    assert "[REDACTED" in dumped or "REDACTED" in dumped


def test_content_is_opt_in_as_the_conventions_say(coached) -> None:
    supervisor, session_id = coached
    spans = build_session_spans(supervisor.store, session_id)  # capture_content defaults to off
    tool = by_name(spans)["execute_tool read_file"][0]
    assert "gen_ai.tool.call.arguments" not in tool.attributes and "gen_ai.tool.call.result" not in tool.attributes
    root = by_name(spans)["invoke_agent files"][0]
    assert "atlas.task" not in root.attributes and "atlas.final_answer" not in root.attributes
    assert tool.attributes["gen_ai.tool.name"] == "read_file"  # names and numbers are not content


def test_export_otlp_pages_the_filter_into_an_sdk_exporter(make_supervisor) -> None:  # noqa: F811
    supervisor = make_supervisor(supervision={"lane": "coach", "llm_probe": False})
    ids = [coached_session(supervisor) for _ in range(3)]
    assert supervisor.drain(30)
    supervisor.recorder.flush()
    memory = InMemorySpanExporter()
    sent = export_otlp(supervisor.store, "http://unused", where=SessionFilter(review_status=None, limit=2), exporter=memory,
                       config=supervisor.config)
    assert sent == 2
    roots = [s for s in memory.get_finished_spans() if s.parent is None]
    assert sorted(f"{r.context.trace_id:032x}" for r in roots) == sorted(ids[1:])  # newest first, two of them


class Receiver:
    """A tiny OTLP/HTTP collector on 127.0.0.1: decodes each ExportTraceServiceRequest it gets."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                outer.requests.append(request)
                outer.paths.append(self.path)
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(b"")
                outer.got.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        return [span for request in self.requests for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


def attributes(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return out


def test_atlas_export_format_otlp_sends_protobuf_to_a_collector(coached, receiver: Receiver, tmp_path: Path) -> None:
    supervisor, session_id = coached
    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": supervisor.store.url}, "telemetry": {"capture_content": True,
                                                                                              "headers": {"x-team": "atlas"}}}))
    result = runner.invoke(app, ["export", "--format", "otlp", "--endpoint", receiver.url, "--status", "pending", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert f"exported 1 session (pending) as OpenTelemetry traces to {receiver.url}/v1/traces" in result.output
    assert receiver.paths == ["/v1/traces"]
    assert receiver.headers[0].get("x-team") == "atlas"
    assert receiver.headers[0].get("content-type") == "application/x-protobuf"
    spans = receiver.spans()
    root = next(s for s in spans if not s.parent_span_id)
    assert root.name == "invoke_agent files" and root.trace_id.hex() == session_id
    assert {s.parent_span_id for s in spans if s is not root} == {root.span_id}
    tool = next(s for s in spans if s.name == "execute_tool read_file")
    assert attributes(tool)["gen_ai.tool.name"] == "read_file"
    assert "notes/todo.txt" in attributes(tool)["gen_ai.tool.call.arguments"]
    chats = [attributes(s) for s in spans if s.name.startswith("chat ")]
    assert chats and all(a["gen_ai.operation.name"] == "chat" and "gen_ai.usage.input_tokens" in a for a in chats)
    resource = receiver.requests[0].resource_spans[0].resource
    assert {kv.key: kv.value.string_value for kv in resource.attributes}["service.name"] == "atlas"
    raw = b"".join(r.SerializeToString() for r in receiver.requests)
    assert b"PLANTEDotelSECRET" not in raw and b"9f8e7d6c5b4a3210ZYXW" not in raw
    # the review gate holds for traces too: nothing approved, nothing sent
    result = runner.invoke(app, ["export", "--format", "otlp", "--endpoint", receiver.url, "-c", str(config)])
    assert result.exit_code == 0 and "exported 0 sessions (approved)" in result.output


def test_export_otlp_options_are_checked_in_one_line(tmp_path: Path, receiver: Receiver) -> None:
    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{tmp_path / 'a.db'}"}}))
    cases = [
        (["--format", "otlp"], "--format otlp needs --endpoint URL"),
        (["--format", "trace", "--endpoint", receiver.url, "-o", "x.jsonl"], "--endpoint goes with --format otlp"),
        (["--format", "otlp", "--endpoint", "127.0.0.1:4318"], "expected an http(s):// URL"),
        (["--format", "otlp", "--endpoint", receiver.url, "-o", "x.jsonl"], "drop --output"),
        (["--format", "trace"], "--output: name the .jsonl file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["export", *args, "-c", str(config)])
        assert result.exit_code == 2, (args, result.output)  # usage errors
        assert message in result.output and result.output.count("\n") == 1, (args, result.output)
    assert traces_url("http://h:4318/") == "http://h:4318/v1/traces"
    assert traces_url("https://cloud.langfuse.com/api/public/otel") == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    assert traces_url("http://h:4318/v1/traces") == "http://h:4318/v1/traces"


def test_an_unreachable_collector_is_one_line_not_a_traceback(coached, tmp_path: Path) -> None:
    supervisor, _ = coached
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # nothing listens there now
    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": supervisor.store.url}, "telemetry": {"timeout_s": 2}}))
    result = runner.invoke(app, ["export", "--format", "otlp", "--endpoint", url, "--status", "pending", "-c", str(config)])
    assert result.exit_code == 1  # not a usage error: the collector failed
    assert "did not take the spans" in result.output and "Traceback" not in result.output


class HeldExporter:
    """An SDK-shaped exporter that waits for the test before it takes spans, noting the thread it ran on."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.spans: list[Any] = []
        self.threads: set[str] = set()

    def export(self, spans: Any) -> SpanExportResult:
        self.threads.add(threading.current_thread().name)
        assert self.released.wait(20), "never released"
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def test_the_live_exporter_sends_in_the_background_never_on_the_users_call(make_supervisor) -> None:  # noqa: F811
    supervisor = make_supervisor(supervision={"lane": "coach", "llm_probe": False})
    held = HeldExporter()
    live = LiveExporter(supervisor, exporter=held)
    try:
        # finish() returns (the session judged and stored) while the exporter is still held: nobody waits for it
        session_id = coached_session(supervisor)
        assert not held.spans
        held.released.set()
        assert live.wait(20)
        assert held.threads == {"atlas-otlp-export"}
        roots = [s for s in held.spans if s.parent is None]
        assert [f"{r.context.trace_id:032x}" for r in roots] == [session_id]
        # it waited for the session's rows: the trace is complete, reward and steps included
        assert "atlas.reward" in roots[0].attributes and any(s.name == "execute_tool read_file" for s in held.spans)
        assert live.sent == 1 and live.failed == 0
    finally:
        held.released.set()
        live.close()


def test_telemetry_otlp_endpoint_turns_the_live_exporter_on(make_supervisor, receiver: Receiver) -> None:  # noqa: F811
    supervisor = make_supervisor(supervision={"lane": "coach", "llm_probe": False}, telemetry={"otlp_endpoint": receiver.url})
    assert isinstance(supervisor.telemetry, LiveExporter)
    session_id = coached_session(supervisor)
    assert supervisor.telemetry.wait(20)
    assert receiver.got.wait(5)
    roots = [s for s in receiver.spans() if not s.parent_span_id]
    assert [r.trace_id.hex() for r in roots] == [session_id]
    start, end = roots[0].start_time_unix_nano, roots[0].end_time_unix_nano
    assert 0 < end - start < timedelta(minutes=5).total_seconds() * 1e9
    plain = make_supervisor()
    assert plain.telemetry is None  # off unless configured


def test_no_secret_shape_of_the_corpus_reaches_a_collector(make_supervisor, receiver: Receiver) -> None:  # noqa: F811
    """Every shape of tests/core/test_secret_corpus.py planted in a tool's arguments, output and error, the task and
    the answer; with content captured, no 8 characters of any random part reach the collector's bytes."""
    import random

    from tests.core.test_secret_corpus import ALNUM, SHAPES, WINDOW

    rng = random.Random(19)
    parts: list[str] = []

    def token(n: int, alphabet: str = ALNUM, register: bool = True) -> str:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if register:
            parts.append(value)
        return value

    planted = {name: build(token)[0] for name, build in SHAPES.items()}
    supervisor = make_supervisor(supervision={"lane": "paired", "llm_probe": False}, telemetry={"capture_content": True})
    for secret in planted.values():
        run = supervisor.begin(f"deploy with {secret}", agent_name="files", learning_key="corpus")
        run.record_step(tool_name="deploy", tool_args={"note": f"use {secret} here", "nested": [{"value": secret}]},
                        output=f"done; {secret}", error=f"failed once: {secret}")
        run.finish(f"the answer mentions {secret}")
    assert supervisor.drain(60)
    supervisor.recorder.flush()
    sent = export_otlp(supervisor.store, receiver.url, where=SessionFilter(review_status=None), config=supervisor.config)
    assert sent == len(SHAPES)
    raw = b"".join(r.SerializeToString() for r in receiver.requests).decode("utf-8", "replace")
    assert sum(1 for s in receiver.spans() if s.name == "execute_tool deploy") == len(SHAPES)
    assert "gen_ai.tool.call.arguments" in raw  # content was captured: the check below means something
    leaked = {part for part in parts if any(part[i : i + WINDOW] in raw for i in range(len(part) - WINDOW + 1))}
    assert not leaked, f"{len(leaked)} planted secrets reached the collector"
