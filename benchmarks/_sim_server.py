"""An OpenAI-compatible chat-completions server on 127.0.0.1 whose replies come from a Python function.

``POST /v1/chat/completions`` takes the documented request body (``model``, ``messages``, optionally
``response_format: {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``) and answers in the
documented shape: one choice with an assistant message and ``finish_reason: "stop"``, and ``usage`` with
``prompt_tokens`` / ``completion_tokens`` / ``total_tokens`` counted as about four characters a token. Any other
path answers 404 in OpenAI's error shape. Requests the responder does not recognise are reported once per kind
on stderr (:class:`UnknownRequests`), with a count at the end. Used by ``benchmarks/learning_sim.py``.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatRequest", "Responder", "SimServer", "UnknownRequests", "count_tokens", "schema_default"]

COMPLETIONS_PATH = "/v1/chat/completions"


def count_tokens(text: str) -> int:
    """About four characters a token, as the core's own budgets count."""
    return len(text) // 4 if text else 0


def _text_of(content: Any) -> str:
    """A message's content as text: a string as it is, a list of content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


@dataclass(frozen=True)
class ChatRequest:
    """What the responder needs of one chat-completions request."""

    model: str
    messages: tuple[tuple[str, str], ...]
    #: ``response_format.json_schema.name`` (the pydantic class name), or None for a plain-text request.
    schema_name: str | None
    schema: dict[str, Any] | None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ChatRequest:
        messages = tuple((str(m.get("role", "")), _text_of(m.get("content"))) for m in body.get("messages") or ())
        response_format = body.get("response_format") or {}
        json_schema = (response_format.get("json_schema") or {}) if response_format.get("type") == "json_schema" else {}
        return cls(str(body.get("model", "")), messages, json_schema.get("name"), json_schema.get("schema"))

    @property
    def system(self) -> str:
        return "\n".join(text for role, text in self.messages if role == "system")

    @property
    def user(self) -> str:
        """The first user message: the request itself (a repair attempt appends more turns after it)."""
        return next((text for role, text in self.messages if role == "user"), "")

    @property
    def prompt_text(self) -> str:
        return "".join(text for _, text in self.messages)


#: Turns a request into the assistant message's text (JSON text for a structured request).
Responder = Callable[[ChatRequest], str]


class UnknownRequests:
    """Requests the fake models did not recognise: the first of each kind goes to stderr, all are counted."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def note(self, kind: str, detail: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            first = self.counts[kind] == 1
        if first:
            print(f"sim server: unknown request ({kind}): {detail[:300]!r}; answered a default", file=sys.stderr)

    def summary(self) -> str:
        return ", ".join(f"{kind} x{count}" for kind, count in sorted(self.counts.items())) or "none"


def schema_default(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A small value that validates against ``schema``: defaults, minimums, the first enum member, empty lists."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {})
        return schema_default(target, root)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return schema_default(options[0], root)
    kind = schema.get("type")
    if kind == "object":
        return {name: schema_default(sub, root) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind == "boolean":
        return True
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    return None if kind == "null" else ""


class SimServer:
    """A ThreadingHTTPServer on an ephemeral 127.0.0.1 port, serving in a background thread while in ``with``."""

    def __init__(self, respond: Responder) -> None:
        self._respond = respond
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sim-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> SimServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions response to a request body."""
        request = ChatRequest.from_body(body)
        text = self._respond(request)
        prompt, completion = count_tokens(request.prompt_text), count_tokens(text)
        return {
            "id": f"chatcmpl-sim-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses its connection

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?")[0].rstrip("/") != COMPLETIONS_PATH:
                    print(f"sim server: POST {self.path} is not served", file=sys.stderr)
                    self._reply(404, _error(f"no route POST {self.path}", "not_found"))
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError as exc:
                    self._reply(400, _error(f"request body is not JSON: {exc}", "invalid_request_error"))
                    return
                try:
                    self._reply(200, server.completion(body))
                except Exception as exc:  # noqa: BLE001 - a fake model's bug is reported, not hidden
                    traceback.print_exc(file=sys.stderr)
                    self._reply(500, _error(f"sim server failed: {type(exc).__name__}: {exc}", "server_error"))

            def do_GET(self) -> None:  # noqa: N802
                print(f"sim server: GET {self.path} is not served", file=sys.stderr)
                self._reply(404, _error(f"no route GET {self.path}", "not_found"))

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
                return

        return Handler


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
