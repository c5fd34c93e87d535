"""Issue 15: a corpus of secret shapes planted in every field a session can hold, then looked for in every byte
the system wrote: 0 found.

Each of the shapes below (API keys of the common providers, auth headers, URL and DSN passwords, PEM keys,
``name=value`` assignments) and each value kept under a secret-named dict key is planted, as a fresh instance with
random parts, in every field a session holds, as every value type a field takes (str, nested dict, list, tuple,
set, pydantic model, dataclass, bytes, a dict key), and straddling every cut the project makes (a long tool
output or node state at 4,000 characters, a judge's raw reply at 500, a check's reason at 300, an expected
answer at 80): the task, the metadata, the plan, tool arguments, inputs, outputs, errors, step metadata, spans,
the answers, the session's error, the teacher's plan review, guidance, reasons and escalation answer, the judges'
rationales, raw replies and errors, a check's reason, the synthesizer's lessons, conditions and reasons, review
notes and retirement reasons, LangGraph node state, and a row the store rejects.

Then everything the system wrote is collected: the database (the SQLite file and its WAL byte for byte, and
every row of every table on both backends), every file of the spool folder (journals, rejected rows), every
export format (by the API and by ``atlas export``), every ``--json`` output and the tables of the CLI, the
training data, and the log. No random part of any planted secret (any 8 characters of it) may be found there;
the failure lists which shape leaked from which field into which output.

The secrets are made at run time from a seeded generator: nothing in this file is a real credential.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import string
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from atlas_learning.cli import app
from atlas_learning.export import EXPORT_FORMATS, export_sessions, get_training_sessions, iter_records, session_trace
from atlas_learning.judges import CheckResult
from atlas_learning.store import PlaybookEntryRecord, SessionFilter, Store

#: Characters of a planted secret's random part that, found anywhere, count as a leak.
WINDOW = 8
ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits
LEARNING_KEY = "corpus"
TAG = re.compile(r"\[case-(\d+)/([A-E])\]")
RUN = re.compile(rf"[A-Za-z0-9]{{{WINDOW},}}")
NUMBER_DIGITS = 12
DIGITS = re.compile(rf"[0-9]{{{NUMBER_DIGITS},}}")
FILLER = "lorem ipsum dolor sit amet sed do eiusmod tempor incididunt ut labore et dolore magna aliqua "

Token = Callable[..., str]


def _shape(prefix: str, body: str, suffix: str = "") -> tuple[str, str]:
    """A secret and its main random part (where a cut is placed to straddle it)."""
    return prefix + body + suffix, body


#: name -> builder(token) -> (secret, main random part). Prefixes are split so that no line here looks like a key.
SHAPES: dict[str, Callable[[Token], tuple[str, str]]] = {
    "OpenAI project key": lambda t: _shape("sk-" + "proj-", t(40)),
    "OpenAI legacy key": lambda t: _shape("sk-", t(48)),
    "OpenAI service-account key": lambda t: _shape("sk-" + "svcacct-", t(40)),
    "Anthropic key": lambda t: _shape("sk-" + "ant-api03-", t(60)),
    "Google API key": lambda t: _shape("AI" + "za", t(35)),
    "AWS access key id": lambda t: _shape("AK" + "IA", t(16, UPPER)),
    "AWS secret access key": lambda t: (lambda a, b: ("aws_secret_access_key = " + a + "/" + b, a))(t(16), t(23)),
    "GitHub classic token": lambda t: _shape("gh" + "p_", t(36)),
    "GitHub fine-grained token": lambda t: (lambda a, b: ("github" + "_pat_" + a + "_" + b, a))(t(22), t(59)),
    "Stripe live key": lambda t: _shape("sk" + "_live_", t(24)),
    "Slack bot token": lambda t: _shape("xo" + "xb-" + t(11, string.digits, register=False) + "-"
                                        + t(13, string.digits, register=False) + "-", t(24)),
    "JWT": lambda t: (lambda a, b, c: ("ey" + "J" + a + ".eyJ" + b + "." + c, a))(t(20), t(30), t(43)),
    "Authorization: Bearer": lambda t: _shape("Authorization: " + "Bearer ", t(40)),
    "Authorization: Basic": lambda t: _shape("Authorization: " + "Basic ", t(36), "=="),
    "URL with a password": lambda t: _shape("https://deploy:", t(24), "@git.example.com/app.git"),
    "DSN password with a slash": lambda t: (lambda a, b: ("postgresql://app:" + a + "/" + b + "@db.internal:5432/prod", a))(
        t(16), t(16)),
    "PEM private key": lambda t: (lambda a, b: ("-----BEGIN RSA " + "PRIVATE KEY-----\n" + a + "\n" + b
                                                + "\n-----END RSA " + "PRIVATE KEY-----", a))(t(40), t(40)),
    "PEM private key cut before END": lambda t: (lambda a, b: ("-----BEGIN " + "PRIVATE KEY-----\n" + a + "\n" + b, a))(
        t(40), t(24)),
    "api_key=": lambda t: _shape("api_key=", t(32)),
    "password: quoted": lambda t: _shape('password: "', t(20), '"'),
    "env var *_SECRET=": lambda t: _shape("PAYMENTS_SECRET=", t(32)),
    "JSON client_secret": lambda t: _shape('{"client_secret": "', t(32), '"}'),
    "access_token in a query": lambda t: _shape("https://api.example.com/v1/items?access_token=", t(32)),
    "X-Api-Key header": lambda t: _shape("X-Api-Key: ", t(32)),
    # found by detect-secrets' provider patterns (atlas_learning.redact.LIBRARY_PLUGINS)
    "GitLab personal token": lambda t: _shape("gl" + "pat-", t(20)),
    "SendGrid key": lambda t: (lambda a, b: ("S" + "G." + a + "." + b, b))(t(22), t(43)),
    "Twilio account SID": lambda t: _shape("A" + "C", t(32, string.ascii_lowercase + string.digits)),
    "Telegram bot token": lambda t: _shape(t(10, string.digits, register=False) + ":", t(35)),
    "Slack webhook": lambda t: (lambda a, b, c: ("https://hooks.slack.com/services/T" + a + "/B" + b + "/" + c, c))(
        t(10, UPPER), t(10, UPPER), t(24)),
    # found by its entropy after a secret-like name, in no known shape
    "random key after its name": lambda t: _shape("the staging api key is ", t(32)),
}
SHAPE_NAMES = list(SHAPES)


class Note(BaseModel):
    text: str


@dataclasses.dataclass
class NoteRecord:
    text: str


class Credentials(BaseModel):
    user: str
    password: str
    api_key: str


@dataclasses.dataclass
class Connection:
    host: str
    token: str
    secret: str


class QueryArgs(BaseModel):
    query: str
    limit: int = 3


@dataclasses.dataclass
class PathArgs:
    path: str


def filler(n: int) -> str:
    """``n`` characters of words, ending in a space (so a secret after it starts a word)."""
    assert n > 0, "a cut falls before the secret starts"
    words = (FILLER * (n // len(FILLER) + 2))[: n - 1]
    return words + " "


class Corpus:
    """Makes unique secret instances, remembers which shape and field each was planted in, and finds them."""

    def __init__(self, seed: int = 15) -> None:
        self.rng = random.Random(seed)
        self.windows: dict[str, tuple[str, str]] = {}
        # Planted numbers are matched whole: a part of one is any 8 digits, which the digits of a float or a
        # timestamp hold by chance (a latency's digits matched once in a CI run).
        self.numbers: dict[str, tuple[str, str]] = {}
        self.fields: set[str] = set()
        self.planted = 0
        self.leaks: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self._words: dict[int, str] = {}

    # ------------------------------------------------------------------------------------------ planting
    def _token(self, owner: tuple[str, str]) -> Token:
        def token(n: int, alphabet: str = ALNUM, *, register: bool = True) -> str:
            while True:
                part = "".join(self.rng.choice(alphabet) for _ in range(n))
                windows = [part[i:i + WINDOW] for i in range(n - WINDOW + 1)]
                if not register:
                    return part
                if any(w in self.windows for w in windows) or part.isdigit():
                    continue
                for window in windows:
                    self.windows[window] = owner
                return part

        return token

    def make(self, shape: str, field: str) -> tuple[str, str]:
        with self._lock:
            self.fields.add(field)
            self.planted += 1
            return SHAPES[shape](self._token((shape, field)))

    def secret(self, shape: str, field: str) -> str:
        """A fresh instance of ``shape``, planted in ``field``."""
        return self.make(shape, field)[0]

    def keyed(self, key: str, field: str, kind: str = "str") -> str:
        """A random value to keep under a secret-named ``key`` (no shape of its own: only its key says it is secret)."""
        shape = f"value under a dict key named {key!r} ({kind})"
        with self._lock:
            self.fields.add(field)
            self.planted += 1
            if kind == "int":
                number = str(self.rng.randrange(10**11, 10**12))
                self.numbers[number] = (shape, field)
                return number
            return self._token((shape, field))(24)

    def straddle(self, shape: str, field: str, cut: int, *, head: str = "",
                 wrap: Callable[[str], str] | None = None) -> str:
        """A long text (``head`` first) with a fresh ``shape`` whose main random part the character ``cut`` splits
        in two; with ``wrap``, the cut is at that position of ``wrap(text)`` (the JSON a node state becomes)."""
        secret, main = self.make(shape, field)
        middle = secret.index(main) + len(main) // 2
        lead = cut - middle - len(head)

        def build(lead: int) -> str:
            return head + filler(lead) + secret + " " + filler(300)

        long_text = build(lead)
        if wrap is not None:
            wrapped = wrap(long_text)
            long_text = build(lead - (wrapped.index(main) + len(main) // 2 - cut))
            assert wrap(long_text).index(main) + len(main) // 2 == cut
        return long_text

    def value_types(self, shape: str, field: str) -> dict[Any, Any]:
        """``shape`` as every value type a JSON-like field takes, under neutral key names."""
        s = lambda kind: self.secret(shape, f"{field} ({kind})")  # noqa: E731
        return {"note": s("str"), "context": {"deep": [{"text": s("nested dict")}]}, "lines": ["ok", s("list")],
                "pair": ("ok", s("tuple")), "tags": {s("set")}, "model": Note(text=s("pydantic model")),
                "record": NoteRecord(text=s("dataclass")), "raw": s("bytes").encode(), s("dict key"): "owner"}

    def secret_keys(self, field: str) -> dict[str, Any]:
        """Values under secret-named keys, as every value type."""
        k = lambda key, kind="str": self.keyed(key, field, kind)  # noqa: E731
        return {
            "password": k("password"), "api_key": k("api_key"), "client_secret": k("client_secret"),
            "private_key": k("private_key"), "Authorization": k("Authorization"), "X-Api-Key": k("X-Api-Key"),
            "refresh_token": k("refresh_token"), "db_password": k("db_password", "bytes").encode(),
            "smtp": {"user": "mailer", "password": int(k("password", "int"))},
            "vault": {"token": [k("token", "list")]},
            "login": Credentials(user="svc", password=k("password", "pydantic field"), api_key=k("api_key", "pydantic field")),
            "connection": Connection(host="db", token=k("token", "dataclass field"), secret=k("secret", "dataclass field")),
        }

    def words(self, case: int) -> str:
        """Words of one case's own, so the lessons of different cases are not near-duplicates."""
        with self._lock:
            if case not in self._words:
                self._words[case] = " ".join("".join(self.rng.choice(string.ascii_lowercase) for _ in range(6)) for _ in range(6))
            return self._words[case]

    # ----------------------------------------------------------------------------------------- scanning
    def scan(self, output: str, data: str | bytes) -> None:
        """Record every planted secret a part of which ``data`` holds."""
        content = data.decode("latin-1") if isinstance(data, bytes) else data
        for match in RUN.finditer(content):
            run = match.group()
            for i in range(len(run) - WINDOW + 1):
                owner = self.windows.get(run[i:i + WINDOW])
                if owner is not None:
                    start = match.start() + i
                    context = content[max(0, start - 50):start + 30].replace("\n", "\\n")
                    self.leaks.setdefault(owner, {}).setdefault(output, context)
        for match in DIGITS.finditer(content):
            run = match.group()
            for i in range(len(run) - NUMBER_DIGITS + 1):
                owner = self.numbers.get(run[i:i + NUMBER_DIGITS])
                if owner is not None:
                    context = content[max(0, match.start() + i - 50):match.start() + i + 30].replace("\n", "\\n")
                    self.leaks.setdefault(owner, {}).setdefault(output, context)

    def report(self) -> str:
        by_field: dict[str, dict[str, Any]] = {}
        for (shape, field), outputs in sorted(self.leaks.items()):
            entry = by_field.setdefault(field, {"shapes": [], "outputs": {}, "example": None})
            entry["shapes"].append(shape)
            for output, context in outputs.items():
                entry["outputs"].setdefault(output, context)
                entry["example"] = entry["example"] or f"{shape} in {output}: ...{context}..."
        lines = [f"{len(self.leaks)} of {self.planted} planted secrets leaked, from {len(by_field)} of {len(self.fields)} fields:"]
        for field, entry in sorted(by_field.items()):
            outputs = sorted(entry["outputs"])
            lines.append(f"- {field}: {len(entry['shapes'])} shapes ({', '.join(entry['shapes'])})")
            lines.append(f"    into {len(outputs)} outputs: {', '.join(outputs[:12])}{', ...' if len(outputs) > 12 else ''}")
            lines.append(f"    e.g. {entry['example']}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ scripted roles
def case_of(messages: list[dict[str, str]]) -> tuple[int, str]:
    """The case a supervision prompt is about: the tag at the start of its task."""
    asked = "\n".join(m["content"] for m in messages if m["role"] == "user")
    match = TAG.search(asked)
    assert match is not None, f"no case tag in a prompt: {asked[:200]}"
    return int(match.group(1)), match.group(2)


def scripted_answers(corpus: Corpus) -> dict[str, dict[str, Any]]:
    """Every supervision role answers with secrets of the case's shape in every free-text field it has."""
    calls: dict[tuple[Any, ...], int] = {}
    lock = threading.Lock()

    def count(key: tuple[Any, ...]) -> int:
        with lock:
            calls[key] = calls.get(key, 0) + 1
            return calls[key] - 1

    def about(messages: list[dict[str, str]]) -> tuple[str, str, int]:
        case, kind = case_of(messages)
        return SHAPE_NAMES[case], kind, case

    def verdict(messages: list[dict[str, str]]) -> dict[str, Any]:
        shape, kind, case = about(messages)
        secret = corpus.secret
        if "Step to check:" in messages[-1]["content"]:
            return {"accepted": False, "guidance": f"Never print it: {secret(shape, 'teacher step guidance')}",
                    "reason": f"the step printed {secret(shape, 'teacher step reason')}"}
        if (kind == "A" and count((case, kind, "answer")) == 0) or kind == "C":
            return {"accepted": False, "guidance": f"Leave out {secret(shape, 'teacher answer guidance')}",
                    "reason": f"the answer holds {secret(shape, 'teacher answer reason')}"}
        return {"accepted": True, "guidance": "", "reason": f"fine, though it mentions {secret(shape, 'teacher acceptance reason')}"}

    def plan_review(messages: list[dict[str, str]]) -> dict[str, Any]:
        shape, _, _ = about(messages)
        return {"approved": False, "steps": [f"rotate {corpus.secret(shape, 'teacher plan step')}", "deploy"],
                "concerns": [f"the plan prints {corpus.secret(shape, 'teacher plan concern')}"]}

    def escalation(messages: list[dict[str, str]]) -> str:
        shape, _, _ = about(messages)
        return f"Done it myself with {corpus.secret(shape, 'teacher escalation answer')}"

    def judgement(messages: list[dict[str, str]]) -> Any:
        shape, kind, case = about(messages)
        if "That reply is not valid" in messages[-1]["content"] or count((case, kind, "judge")) == 0:
            return corpus.straddle(shape, "judge raw reply (cut at 500)", 500)  # not JSON: kept as the sample's raw
        return {"outcome": 0.8, "process": 0.7, "efficiency": 0.6, "confidence": 0.3,
                "rationale": f"it quoted {corpus.secret(shape, 'small judge rationale')}"}

    def arbitration(messages: list[dict[str, str]]) -> dict[str, Any]:
        shape, kind, _ = about(messages)
        if kind in ("A", "E"):
            raise RuntimeError(f"judge backend refused the request: {corpus.secret(shape, 'large judge error')}")
        return {"outcome": 0.9, "process": 0.9, "efficiency": 0.9, "confidence": 0.9,
                "rationale": f"saw {corpus.secret(shape, 'large judge rationale')}"}

    def step_judgements(messages: list[dict[str, str]]) -> dict[str, Any]:
        shape, _, _ = about(messages)
        return {"steps": [{"step": i, "score": 0.5, "rationale": f"saw {corpus.secret(shape, 'step judge rationale')}"}
                          for i in range(8)]}

    def synthesis(messages: list[dict[str, str]]) -> dict[str, Any]:
        shape, kind, case = about(messages)
        if kind != "A":
            return {"changes": []}
        words = corpus.words(case)
        return {"changes": [{"op": "add", "scope": "general", "lesson": f"{words}: never paste {corpus.secret(shape, 'synthesizer lesson')}",
                             "applies_when": f"{words.split()[0]} {corpus.secret(shape, 'synthesizer applies_when')}",
                             "reason": f"the agent echoed {corpus.secret(shape, 'synthesizer reason')}"}]}

    return {
        "teacher": {"Verdict": verdict, "PlanReview": plan_review, "text": escalation},
        "judge_small": {"SessionJudgement": judgement, "StepJudgements": step_judgements},
        "judge_large": {"SessionJudgement": arbitration},
        "synthesizer": {"PlaybookChanges": synthesis},
    }


# ---------------------------------------------------------------------------------------------- sessions
class NodeState(TypedDict, total=False):
    notes: str
    log: str
    creds: dict


def coach_session(supervisor: Any, corpus: Corpus, case: int, shape: str) -> str:
    """Coach lane: a plan, tool steps of every argument and output type, a model call, a span, a rejected answer."""
    s = lambda field: corpus.secret(shape, f"coach session: {field}")  # noqa: E731
    task = f"[case-{case:02d}/A] Deploy the service with {s('task')} and report"
    metadata = {**corpus.value_types(shape, "coach session: metadata"), **corpus.secret_keys("coach session: metadata")}
    run = supervisor.begin(task, agent_name=LEARNING_KEY, learning_key=LEARNING_KEY, metadata=metadata)
    run.start(plan=[f"read the config that holds {s('proposed plan step')}", "deploy"])
    steps = [
        run.record_step(tool_name="read_config", tool_args={**corpus.value_types(shape, "coach session: tool_args"),
                                                            **corpus.secret_keys("coach session: tool_args")},
                        input=s("step input"), output=s("tool output (str)"), description=s("step description"),
                        metadata={**corpus.value_types(shape, "coach session: step metadata"),
                                  **corpus.secret_keys("coach session: step metadata")}),
        run.record_step(tool_name="fetch_logs", tool_args=QueryArgs(query=s("tool_args as a pydantic model")),
                        output=corpus.straddle(shape, "coach session: tool output (long, secret at 4000)", 4000)),
        run.record_step(tool_name="fetch_page", tool_args={"page": 2},
                        output=corpus.straddle(shape, "coach session: tool output (long, secret at 500)", 500)),
        run.record_step(tool_name="inspect", tool_args=PathArgs(path=s("tool_args as a dataclass")),
                        output={"body": s("tool output (dict)")}, error=f"inspect failed: {s('step error')}"),
        run.record_step(tool_name="upload", tool_args=s("tool_args as bytes").encode(), output=[s("tool output (list)")]),
        run.record_step(tool_name="tag", tool_args={s("tool_args as a set")}, output=s("tool output (bytes)").encode()),
        run.record_step(tool_name="argv", tool_args=["--token", s("tool_args as a list")], output="ok"),
    ]
    for step in steps:
        run.tool_call_done(step)
    run.record_model_call(role="student", model="tiny", input_tokens=5, output_tokens=5, output=s("student model call output"))
    run.record_event("span", {"name": f"GET {s('span name')}", "attributes": {"http.url": s("span attribute"),
                                                                               **corpus.secret_keys("coach session: span")}})
    run.final_answer(f"Deployed; the key is {s('answer (rejected attempt)')}")
    answer = f"Deployed with {s('final answer')}"
    run.final_answer(answer)
    run.end(answer)
    return run.session_id


def checked_session(supervisor: Any, corpus: Corpus, case: int, shape: str) -> str:
    """Paired lane with a passing check whose long reason the check rendering cuts at 300: a worked example."""
    s = lambda field: corpus.secret(shape, f"checked session: {field}")  # noqa: E731
    reason = corpus.straddle(shape, "checked session: check reason (cut at 300)", 288)

    def audit(context: Any) -> CheckResult:
        return CheckResult(1.0, reason, "audit")

    task = f"[case-{case:02d}/B] Summarise the incident ticket about {s('task')}"
    run = supervisor.begin(task, agent_name=LEARNING_KEY, learning_key=LEARNING_KEY, metadata={"ticket": s("metadata")},
                           checks=[audit])
    run.record_step(tool_name="read_ticket", tool_args={"id": 7, "note": s("tool_args")}, output=s("tool output"))
    answer = f"The ticket is about {s('final answer')}"
    run.final_answer(answer)
    run.end(answer)
    return run.session_id


def failed_session(supervisor: Any, corpus: Corpus, case: int, shape: str) -> str:
    """Paired lane: an expected answer (cut at 80 in the check's reason), a step the store rejects, an exception."""
    s = lambda field: corpus.secret(shape, f"failed session: {field}")  # noqa: E731
    metadata = {"expected_answer": corpus.straddle(shape, "failed session: expected answer (cut at 80)", 80)}
    task = f"[case-{case:02d}/C] Rotate the credentials; {s('task')}"
    run = supervisor.begin(task, agent_name=LEARNING_KEY, learning_key=LEARNING_KEY, metadata=metadata)
    run.record_step(tool_name="rotate", tool_args={"old": s("tool_args")}, error=f"rotation refused: {s('step error')}")
    supervisor.recorder.flush()
    # a token count no column holds: the store refuses the row and the recorder keeps it in rejected-*.jsonl
    run.record_step(tool_name="bulk", tool_args={"rows": s("tool_args of a row the store rejects")}, input_tokens=2**70,
                    output=s("output of a row the store rejects"))
    supervisor.recorder.flush()
    run.final_answer(f"could not rotate {s('answer')}")
    run.failed(RuntimeError(f"rotation crashed: {s('error (an exception)')}"))
    return run.session_id


def escalated_session(supervisor: Any, corpus: Corpus, case: int, shape: str) -> str:
    """Escalate lane: the teacher answers itself."""
    task = f"[case-{case:02d}/D] Recover the backup encrypted with {corpus.secret(shape, 'escalated session: task')}"
    run = supervisor.begin(task, agent_name=LEARNING_KEY, learning_key=LEARNING_KEY)
    started = run.start()
    assert started.answer, "the escalate lane did not get the teacher's answer"
    run.end(started.answer)
    return run.session_id


def graph_session(supervisor: Any, corpus: Corpus, case: int, shape: str) -> str | None:
    """A LangGraph run whose node state and update, longer than 4,000 characters of JSON, the adapter cuts."""
    try:
        from langgraph.graph import END, START, StateGraph

        from atlas_plugins.langgraph import with_atlas
    except ImportError:
        return None
    tag = f"[case-{case:02d}/E] "
    notes = corpus.straddle(shape, "LangGraph node state (long, cut at 4000)", 4000, head=tag,
                            wrap=lambda value: json.dumps({"notes": value}, ensure_ascii=False))
    log = corpus.straddle(shape, "LangGraph node update (long, cut at 4000)", 4000,
                          wrap=lambda value: json.dumps({"log": value}, ensure_ascii=False))
    creds = {**corpus.value_types(shape, "LangGraph node update"), **corpus.secret_keys("LangGraph node update")}

    def work(state: NodeState) -> NodeState:
        return {"log": log, "creds": creds}

    graph = StateGraph(NodeState)
    graph.add_node("work", work)
    graph.add_edge(START, "work")
    graph.add_edge("work", END)
    app = with_atlas(graph, supervisor=supervisor, learning_key=LEARNING_KEY, agent_name=LEARNING_KEY)
    app.invoke({"notes": notes})
    pending = app.session_result()
    assert pending is not None, "the LangGraph run left no session"
    return pending.session_id


# ------------------------------------------------------------------------------------------------ outputs
runner = CliRunner()


def cli(config: Path, *args: str) -> str:
    env: dict[str, str | None] = {"COLUMNS": "200", **{k: None for k in os.environ if k.startswith("ATLAS_")}}
    result = runner.invoke(app, [*args, "--config", str(config)], env=env, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout + result.stderr


def database_rows(store_url: str) -> list[tuple[str, str]]:
    """Every row of every table, as text, one output per table column."""
    engine = create_engine(store_url)
    outputs: dict[str, list[str]] = {}
    try:
        with engine.connect() as connection:
            for table in inspect(connection).get_table_names():
                result = connection.execute(text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                for row in result:
                    for column, value in zip(columns, row, strict=True):
                        shown = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
                        outputs.setdefault(f"db row {table}.{column}", []).append(shown)
    finally:
        engine.dispose()
    return [(label, "\n".join(values)) for label, values in outputs.items()]


def files_under(folder: Path, label: str) -> list[tuple[str, bytes]]:
    return [(f"{label} {path.relative_to(folder)}", path.read_bytes()) for path in sorted(folder.rglob("*")) if path.is_file()]


def sqlite_files(store_url: str) -> list[tuple[str, bytes]]:
    if not store_url.startswith("sqlite"):
        return []
    database = Path(store_url.removeprefix("sqlite:///"))
    return [(f"sqlite file {path.name}", path.read_bytes()) for path in sorted(database.parent.glob(database.name + "*"))]


# -------------------------------------------------------------------------------------------------- test
def test_no_planted_secret_reaches_the_store_the_spool_an_export_or_the_cli(make_supervisor, store_url: str, tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    assert len(SHAPES) >= 20
    caplog.set_level(logging.DEBUG, logger="atlas_learning")
    caplog.set_level(logging.DEBUG, logger="atlas_plugins")
    corpus = Corpus()
    answers = scripted_answers(corpus)
    learn = {"synthesize": "always"}
    coach = make_supervisor(answers, supervision={"lane": "coach"}, playbook=learn)
    paired = make_supervisor(answers, supervision={"lane": "paired"}, playbook=learn)
    escalate = make_supervisor(answers, supervision={"lane": "escalate"}, playbook=learn)
    supervisors = (coach, paired, escalate)

    approve: dict[int, list[str]] = {}
    quarantine: dict[int, str] = {}
    graph_ran = False
    for case, shape in enumerate(SHAPE_NAMES):
        approve[case] = [coach_session(coach, corpus, case, shape), checked_session(paired, corpus, case, shape),
                         escalated_session(escalate, corpus, case, shape)]
        quarantine[case] = failed_session(paired, corpus, case, shape)
        graph_id = graph_session(paired, corpus, case, shape)
        if graph_id is not None:
            approve[case].append(graph_id)
            graph_ran = True
    for supervisor in supervisors:
        assert supervisor.drain(60), "session finishes did not end"
        assert supervisor.recorder.flush(30)

    # The reviewer's notes and retirement reasons, through the CLI.
    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": store_url, "spool_dir": str(tmp_path / "spool")}}))
    outputs: list[tuple[str, str | bytes]] = []
    for case, shape in enumerate(SHAPE_NAMES):
        outputs.append(("atlas review approve --json", cli(config, "review", "approve", *approve[case], "--json", "--note",
                                                           f"looks fine apart from {corpus.secret(shape, 'review note (approve)')}")))
        outputs.append(("atlas review quarantine", cli(config, "review", "quarantine", quarantine[case], "--note",
                                                       f"it leaked {corpus.secret(shape, 'review note (quarantine)')}")))
    with Store(store_url) as store:
        lessons = [e for e in store.rows(PlaybookEntryRecord, PlaybookEntryRecord.learning_key == LEARNING_KEY)
                   if e.kind == "lesson" and e.status != "retired"]
    for case, entry in enumerate(lessons[:len(SHAPE_NAMES)]):
        reason = f"it quoted {corpus.secret(SHAPE_NAMES[case], 'playbook retire reason')}"
        outputs.append(("atlas playbook retire", cli(config, "playbook", "retire", entry.id, "--key", LEARNING_KEY, "--reason", reason)))

    # The spool while the supervisors still hold their journals, then everything left after they close.
    outputs += files_under(tmp_path / "spool", "spool (open)")
    outputs += sqlite_files(store_url)
    for supervisor in supervisors:
        supervisor.close()
    outputs += files_under(tmp_path / "spool", "spool (closed)")
    outputs += sqlite_files(store_url)
    outputs += database_rows(store_url)

    # Every export format, by the API and by the CLI; the training data; every --json output and table.
    exports = tmp_path / "exports"
    every = ["--status", "pending", "--status", "approved", "--status", "quarantined"]
    with Store(store_url) as store:
        ids = [record.id for record in store.list_sessions(SessionFilter(review_status=None, limit=None))]
        for fmt in EXPORT_FORMATS:
            export_sessions(store, exports / f"api-{fmt}.jsonl", format=fmt, where=SessionFilter(review_status=None))
            outputs.append((f"iter_records({fmt})", json.dumps(list(iter_records(store, format=fmt, where=SessionFilter(review_status=None))))))
        outputs += [(f"session_trace {i}", json.dumps(session_trace(store, i))) for i in ids]
        records = get_training_sessions(store, review_status=None)
        outputs.append(("get_training_sessions", json.dumps(records)))
        try:
            from atlas_learning.train.data import teacher_examples
        except ImportError:
            pass
        else:
            outputs.append(("teacher_examples", json.dumps(teacher_examples(records))))
    for fmt in EXPORT_FORMATS:
        outputs.append((f"atlas export -f {fmt} -o FILE (console)", cli(config, "export", "-o", str(exports / f"cli-{fmt}.jsonl"), "-f", fmt, *every)))
        outputs.append((f"atlas export -f {fmt} -o -", cli(config, "export", "-o", "-", "-f", fmt, *every)))
    outputs += files_under(exports, "export file")
    history = [json.loads(line) for line in cli(config, "playbook", "history", "--key", LEARNING_KEY, "--json").splitlines()]  # JSON Lines
    version = max((change["registry_version"] for change in history), default=0)
    for args in (["sessions", "--json", "--limit", "0"], ["sessions", "--limit", "0"], ["report", "--json"], ["report"],
                 ["playbook", "show", "--json"], ["playbook", "show"], ["playbook", "history", "--key", LEARNING_KEY, "--json"],
                 ["playbook", "history", "--key", LEARNING_KEY], ["playbook", "diff", "0", str(version), "--key", LEARNING_KEY, "--json"],
                 ["playbook", "diff", "0", str(version), "--key", LEARNING_KEY]):
        outputs.append((f"atlas {' '.join(args)}", cli(config, *args)))
    for session_id in ids:
        outputs.append(("atlas show --json", cli(config, "show", session_id, "--json")))
        outputs.append(("atlas show", cli(config, "show", session_id)))
    outputs.append(("log", caplog.text))

    # The corpus went where it was meant to: else finding nothing would prove nothing.
    stored = dict(database_rows(store_url))
    planted_paths = {
        "every case's sessions": len(ids) == len(SHAPE_NAMES) * (5 if graph_ran else 4),
        "redacted values": stored.get("db row sessions.session_metadata", "").count("[REDACTED]") >= len(SHAPE_NAMES) * 20,
        "the teacher's guidance": "[REDACTED]" in stored.get("db row guidance.content", ""),
        "the teacher's plan review": "[REDACTED]" in stored.get("db row plans.concerns", ""),
        "the teacher's escalation answer": "escalation" in stored.get("db row guidance.kind", ""),
        "a span": "span" in stored.get("db row trajectory_events.event_type", ""),
        "a worked example": "example" in stored.get("db row playbook_entries.kind", ""),
        "a judge's raw reply": '"raw"' in stored.get("db row rewards.samples", ""),
        "a judge's error": "RuntimeError" in stored.get("db row model_calls.error", ""),
        "a cut check reason": "[cut]" in stored.get("db row attempts.checks", ""),
        "the synthesizer's lessons": len(lessons) >= len(SHAPE_NAMES),
        "review notes": stored.get("db row review_log.note", "").count("[REDACTED]") >= len(ids),
        "a rejected row": any(label.startswith("spool (closed) rejected-") for label, _ in outputs),
        "a cut node state": not graph_ran or "[cut]" in stored.get("db row steps.input", ""),
    }
    assert all(planted_paths.values()), f"the corpus did not reach: {[name for name, ok in planted_paths.items() if not ok]}"

    for label, data in outputs:
        corpus.scan(label, data)
    leaked = len(corpus.leaks)
    print(f"secret corpus: {len(SHAPES)} shapes, {corpus.planted} planted in {len(corpus.fields)} fields, "
          f"{len(outputs)} outputs scanned, {leaked} found")  # the figures issue 15 asks for (pytest -s)
    assert leaked == 0, corpus.report()


def test_no_secret_reaches_what_atlas_config_and_env_init_print_or_write(tmp_path: Path) -> None:
    """The configuration and a scanned project hold secrets of their own: a DSN password, keys in a role's
    options, an MCP server's arguments, URL and environment. Neither ``atlas config`` (YAML and JSON) nor the
    atlas.yaml ``atlas env init`` writes, nor what it prints, holds any of them."""
    corpus = Corpus(seed=16)
    password, token, key, arg, url_token, env_token = (corpus.secret(shape, field) for shape, field in (
        ("DSN password with a slash", "storage.url"), ("random key after its name", "role options"),
        ("OpenAI project key", "role options (api_key)"), ("GitHub classic token", "MCP args"),
        ("access_token in a query", "MCP url"), ("Slack bot token", "MCP env")))
    config = tmp_path / "atlas.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"url": password.replace("postgresql://", "postgresql+psycopg://")},
        "models": {"teacher": {"provider": "scripted", "options": {"note": token, "api_key": key, "responses": []}}},
    }), encoding="utf-8")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {
        "github": {"command": "npx", "args": ["-y", "server-github", "--token", arg]},
        "remote": {"url": url_token},
        "slack": {"command": "slack-mcp", "env": {"SLACK_TOKEN": env_token}},
    }}), encoding="utf-8")
    (project / "agent.py").write_text("from langgraph.graph import StateGraph\ngraph = StateGraph(dict).compile()\n", encoding="utf-8")
    outputs = [("atlas config", cli(config, "config")), ("atlas config --json", cli(config, "config", "--json"))]
    env = {k: None for k in os.environ if k.startswith("ATLAS_")}
    result = runner.invoke(app, ["env", "init", str(project)], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = (project / "atlas.yaml").read_text(encoding="utf-8")
    outputs += [("atlas env init", result.stdout + result.stderr), ("atlas env init's atlas.yaml", written)]
    assert "github" in written and "[REDACTED]" in written  # the server was described, its token replaced
    assert "[REDACTED]" in outputs[0][1] and "db.internal" in outputs[0][1]
    for label, data in outputs:
        corpus.scan(label, data)
    assert not corpus.leaks, corpus.report()
