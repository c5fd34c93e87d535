"""A learning simulation: does the loop learn, unlearn and relearn, given capable fake models over real HTTP?

What it simulates. Three task families, interleaved, each task worded differently and with a known answer:
CRC32 checksums (the answer: 8 lowercase hex digits), HTTP status codes (the number) and dates for a billing
API (ISO 8601, YYYY-MM-DD). Each family has a trap: unaided, the student answers in the wrong form (decimal, the
reason phrase, a US date). The student is a deterministic function of its instructions, plus a seeded share of
slips (``--slip-rate``, 10%) in which it ignores them: a cue in its instructions (the family's lesson, a worked
example of the family, i.e. one of its tasks followed by an answer in some form, or the teacher's guidance) makes
it answer in the cued form: the teacher's guidance wins over lessons, lessons over worked examples, and among
cues of one kind the latest wins. Two
thirds of the way through, the date family regresses: the billing API now takes a UTC timestamp
(YYYY-MM-DDT00:00:00Z), so the old lesson no longer suffices, and neither do old worked examples.

The supervision roles (teacher, judge_small, judge_large, probe, synthesizer) are capable fake models behind an
OpenAI-compatible server on 127.0.0.1 (``benchmarks/_sim_server.py``), reached through the real ``openai``
provider; they tell requests apart by the structured output asked for (``response_format.json_schema.name``)
and the system prompt, and find the task in the prompt. The teacher knows every task's answer: it accepts right
answers and rejects wrong ones with guidance that fixes them, approves plans and accepts steps. The judges score
outcome and process 1 for a right answer, else 0, efficiency the same divided by 1 + the rejected attempts,
confidence 0.9. The probe answers paired at confidence 0.7. The synthesizer proposes the session's family's
lesson when its prompt's current playbook lacks it: helpful ones for HTTP and dates (after the regression the new
date lesson, retiring the old one by id); for checksums a HARMFUL one (C notation, 0x-prefixed), proposed again
whenever it is not live, and the helpful one too once the prompt lists the harmful one as retired. Tokens are
counted as about four characters a token. Requests the fake models do not recognise get a default answer and
are reported on stderr.

Runs: learning on vs off (``playbook.enabled`` and, where the config has it, ``examples.enabled`` false), the
same tasks, models and slips, a fresh SQLite store in a temp dir and a fresh agent name (learning key) each; for
(1) ``shared``: one learning key, no task family given (the core must tell families apart), and (2) ``family``:
the task family given per call (``task_family=`` where ``Supervisor.begin`` takes it, else in the metadata).
Every session's expected answer goes in its metadata (``expected_answer``), so the core's built-in check decides.

Printed per run: final success (the check on the final answer), unaided success (first attempt right, before any
guidance) overall and over the last two thirds, supervision tokens by role, teacher calls, the lanes per family,
what became of the harmful lesson, sessions given another family's lesson, how many task families the core ran the
sessions under (and how many of those mix true families). Then the targets, PASS/FAIL side by
side (printed, never asserted: the exit status is 0 when the targets fail):
- final success with learning on >= off; unaided success over the last two thirds at least 30 points higher on;
- supervision tokens (every role but the student) over the last two thirds: on at most 0.75x off;
- the harmful lesson retired within 6 sessions in which it was injected (or never injected), and never live again;
- no session given a lesson or worked example of another family;
- the regressed family leaves auto at its next session and gets the teacher's help until it recovers (until its
  first session whose first attempt is right, no session of it runs in auto).

Run: .venv/bin/python benchmarks/learning_sim.py [--sessions-per-family 10] [--seed 0] [--runs shared,family]
     [--slip-rate 0.1]
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _sim_server import ChatRequest, SimServer, UnknownRequests, schema_default  # noqa: E402

from atlas_learning.config import AtlasConfig, PlaybookConfig  # noqa: E402
from atlas_learning.rewards import answer_matches  # noqa: E402
from atlas_learning.store import PlaybookEntryRecord  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402

FAMILIES = ("checksum", "http", "date")
HARMFUL_FAMILY, REGRESSED_FAMILY = "checksum", "date"
#: The form of a right answer per family; the regressed family's after the regression.
RIGHT_STYLE = {"checksum": "hex", "http": "code", "date": "iso"}
REGRESSED_STYLE = "utc"
#: The trap: what the student answers with no cue.
TRAP_STYLE = {"checksum": "decimal", "http": "phrase", "date": "us"}
SUPERVISION_ROLES = ("teacher", "judge_small", "judge_large", "probe", "synthesizer")
API_KEY_ENV = "SIM_OPENAI_API_KEY"  # not ATLAS_*: the config reads those as overrides
LANE_LETTERS = {"auto": "a", "paired": "p", "coach": "c", "escalate": "e"}
TARGET_UNAIDED_GAIN, TARGET_TOKEN_RATIO, TARGET_RETIRE_WITHIN = 30.0, 0.75, 6

# ------------------------------------------------------------------------------------------------ the tasks

CHECKSUM_PAYLOADS = ("hello world", "atlas", "invoice-117", "release 2.4.1", "user:alice", "GET /index.html",
                     "backup of march", "lorem ipsum", "config.yaml", "ping")
CHECKSUM_WORDINGS = (
    "Compute the CRC32 checksum of the string '{}'.",
    'What is the CRC-32 of the text "{}"?',
    "A file holds exactly the UTF-8 bytes of '{}'. Report its CRC32 checksum.",
    "For the upload manifest, give the CRC32 of '{}'.",
    "Checksum needed: CRC32 over the text '{}'.",
)
HTTP_CASES = (
    ("the requested page does not exist", 404, "Not Found"),
    ("a resource has moved to a new URL for good", 301, "Moved Permanently"),
    ("the server is down for maintenance for a while", 503, "Service Unavailable"),
    ("the request carries no valid credentials", 401, "Unauthorized"),
    ("a client has sent too many requests in a minute", 429, "Too Many Requests"),
    ("a POST has just created a new record", 201, "Created"),
    ("the cached copy the client holds is still fresh", 304, "Not Modified"),
    ("the user is known but may not see this document", 403, "Forbidden"),
    ("an upload conflicts with a newer version on the server", 409, "Conflict"),
    ("the handler crashed with an unexpected exception", 500, "Internal Server Error"),
    ("the request body is malformed JSON", 400, "Bad Request"),
    ("a DELETE succeeded and there is nothing to send back", 204, "No Content"),
)
HTTP_WORDINGS = (
    "Which HTTP status code should a server return when {}?",
    "An API client asks: what status does the server send back if {}?",
    "Name the HTTP response status for this case: {}.",
    "Our gateway must signal that {}. Which HTTP status applies?",
    "Pick the right HTTP status for a response where {}.",
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DATE_WORDINGS = (
    "Convert {long} to the date format our billing API expects.",
    "The invoice is dated {day} {month} {year}; write that date for the billing API.",
    "Format the due date {dotted} (day.month.year) for the billing API.",
    "A customer says the payment left on {weekday}, {long}. Give the date as the billing API wants it.",
    "Record the contract start date, {long}, in the billing API's date format.",
)


@dataclass(frozen=True)
class Task:
    """One session's task: where it stands in the run, its text, and the answer in every form the student knows."""

    index: int
    family: str
    position: int  # within its family
    text: str
    answers: Mapping[str, str]
    style: str  # the form of the right answer

    @property
    def expected(self) -> str:
        return self.answers[self.style]


def _cycled(items: Sequence[Any], i: int) -> tuple[Any, str]:
    """The i-th item, cycling, and a suffix that keeps later rounds distinct."""
    return items[i % len(items)], (f" (#{i // len(items) + 1})" if i >= len(items) else "")


def checksum_task(i: int) -> tuple[str, dict[str, str]]:
    payload, suffix = _cycled(CHECKSUM_PAYLOADS, i)
    payload += suffix
    crc = zlib.crc32(payload.encode())
    text = CHECKSUM_WORDINGS[i % len(CHECKSUM_WORDINGS)].format(payload)
    return text, {"decimal": str(crc), "hex": f"{crc:08x}", "c_hex": f"0x{crc:08x}"}


def http_task(i: int) -> tuple[str, dict[str, str]]:
    (situation, code, phrase), suffix = _cycled(HTTP_CASES, i)
    text = HTTP_WORDINGS[i % len(HTTP_WORDINGS)].format(situation + suffix)
    return text, {"phrase": phrase, "code": str(code)}


def date_task(i: int) -> tuple[str, dict[str, str]]:
    day = date(2024, 1, 9) + timedelta(days=41 * i)
    month = MONTHS[day.month - 1]
    text = DATE_WORDINGS[i % len(DATE_WORDINGS)].format(
        long=f"{month} {day.day}, {day.year}", day=day.day, month=month, year=day.year,
        dotted=f"{day.day:02}.{day.month:02}.{day.year}", weekday=WEEKDAYS[day.weekday()])
    iso = day.isoformat()
    return text, {"us": f"{day.month:02}/{day.day:02}/{day.year}", "iso": iso, "utc": f"{iso}T00:00:00Z"}


TASK_BUILDERS: dict[str, Callable[[int], tuple[str, dict[str, str]]]] = {
    "checksum": checksum_task, "http": http_task, "date": date_task}


def regression_point(per_family: int) -> int:
    """The regressed family's first position under the new rule: two thirds of the way through."""
    return (2 * per_family) // 3


def build_tasks(per_family: int) -> list[Task]:
    """The families interleaved, one task of each per round."""
    regress_at = regression_point(per_family)
    tasks: list[Task] = []
    for position in range(per_family):
        for family in FAMILIES:
            text, answers = TASK_BUILDERS[family](position)
            regressed = family == REGRESSED_FAMILY and position >= regress_at
            tasks.append(Task(len(tasks), family, position, text, answers, REGRESSED_STYLE if regressed else RIGHT_STYLE[family]))
    return tasks


# ---------------------------------------------------------------------------------------------- the student


@dataclass(frozen=True)
class Cue:
    """Text that makes the student answer in ``style``. An example cue is an answer's shape, looked for only just
    after a task of the family (a worked example); the others count anywhere."""

    style: str
    pattern: re.Pattern[str]
    example: bool = False


CUES: dict[str, tuple[Cue, ...]] = {
    "checksum": (
        Cue("hex", re.compile(r"hexadecimal digits", re.IGNORECASE)),
        Cue("c_hex", re.compile(r"\bC notation\b", re.IGNORECASE)),
        Cue("hex", re.compile(r"(?<![0-9a-fx])[0-9a-f]{8}(?![0-9a-f])"), example=True),
        Cue("c_hex", re.compile(r"\b0x[0-9a-f]{8}\b"), example=True),
    ),
    "http": (
        Cue("code", re.compile(r"numeric status code", re.IGNORECASE)),
        Cue("code", re.compile(r"(?<![\w.:/%-])[1-5]\d\d(?![\w.:/%-])"), example=True),
    ),
    "date": (
        Cue("iso", re.compile(r"YYYY-MM-DD(?!T)")),
        Cue("utc", re.compile(r"YYYY-MM-DDT00:00:00Z")),
        Cue("iso", re.compile(r"\b\d{4}-\d{2}-\d{2}(?!T)"), example=True),
        Cue("utc", re.compile(r"\b\d{4}-\d{2}-\d{2}T00:00:00Z"), example=True),
    ),
}
#: Where the core's instructions put the teacher's guidance; cues after it win.
GUIDANCE_HEADER = "Teacher guidance"
#: Characters of a task's opening that identify a worked example of its family, and how far after it its answer is.
EXAMPLE_OPENING, EXAMPLE_WINDOW = 24, 400


class Student:
    """Answers in the form its instructions cue; with no cue (or when it slips) it falls into the family's trap."""

    def __init__(self, tasks: Sequence[Task], *, seed: int, slip_rate: float) -> None:
        self.seed, self.slip_rate = seed, slip_rate
        self._openings = {family: sorted({t.text[:EXAMPLE_OPENING] for t in tasks if t.family == family}) for family in FAMILIES}

    def answer(self, task: Task, instructions: str, attempt: int) -> str:
        """The answer to ``task`` on its ``attempt``-th try (0 first): the same inputs give the same answer."""
        if random.Random(f"{self.seed}:{task.index}:{attempt}").random() < self.slip_rate:
            return task.answers[TRAP_STYLE[task.family]]
        return task.answers[self.style(task.family, instructions)]

    def style(self, family: str, instructions: str) -> str:
        """The cued form: the teacher's guidance first (its phrases, else an answer it quotes), then lessons, then
        worked examples; the latest cue among equals. No cue: the trap."""
        guidance = instructions.rfind(GUIDANCE_HEADER)
        advice = instructions[guidance:] if guidance >= 0 else ""
        # Guidance counts whole: a capable student also follows an answer it quotes ("expected '2024-01-09'").
        tiers = (self._phrase_cues(family, advice) or self._shape_cues(family, advice),
                 self._phrase_cues(family, instructions), self._example_cues(family, instructions))
        found = next((cues for cues in tiers if cues), None)
        return max(found)[1] if found else TRAP_STYLE[family]

    @staticmethod
    def _phrase_cues(family: str, text: str) -> list[tuple[int, str]]:
        return [(m.start(), cue.style) for cue in CUES[family] if not cue.example for m in cue.pattern.finditer(text)]

    @staticmethod
    def _shape_cues(family: str, text: str) -> list[tuple[int, str]]:
        return [(m.start(), cue.style) for cue in CUES[family] if cue.example for m in cue.pattern.finditer(text)]

    def _example_cues(self, family: str, text: str) -> list[tuple[int, str]]:
        return [(m.start(), cue.style) for start, end in self._example_windows(family, text)
                for cue in CUES[family] if cue.example for m in cue.pattern.finditer(text, start, end)]

    def _example_windows(self, family: str, text: str) -> list[tuple[int, int]]:
        """Where a worked example of the family may show its answer: just after each of its tasks' openings."""
        return [(m.end(), m.end() + EXAMPLE_WINDOW) for opening in self._openings[family]
                for m in re.finditer(re.escape(opening), text)]


# ----------------------------------------------------------------------------------------- the fake models


@dataclass(frozen=True)
class Lesson:
    family: str
    text: str
    applies_when: str
    harmful: bool = False


#: The synthesizer's lessons, by the form of answer that following them gives.
LESSONS: dict[str, Lesson] = {
    "hex": Lesson("checksum", "Report CRC32 checksums as 8 lowercase hexadecimal digits, with no prefix.",
                  "computing a CRC32 checksum"),
    "c_hex": Lesson("checksum", "Write checksums in C notation, with a 0x prefix as C source code does.",
                    "computing a CRC32 checksum", harmful=True),
    "code": Lesson("http", "Answer HTTP status questions with the numeric status code, e.g. 404, not the reason phrase.",
                   "choosing an HTTP status code"),
    "iso": Lesson("date", "Write dates for the billing API in ISO 8601 form, YYYY-MM-DD.",
                  "formatting a date for the billing API"),
    "utc": Lesson("date", "The billing API now takes UTC timestamps: write dates as YYYY-MM-DDT00:00:00Z.",
                  "formatting a date for the billing API"),
}
HARMFUL = {lesson.family: lesson for lesson in LESSONS.values() if lesson.harmful}
#: The teacher's guidance on rejecting an answer, by the form the right answer takes.
GUIDANCE = {
    "hex": "Give the CRC32 as 8 lowercase hexadecimal digits, with no 0x prefix.",
    "code": "Answer with the numeric status code, not its reason phrase.",
    "iso": "The billing API takes ISO 8601 dates: write the date as YYYY-MM-DD.",
    "utc": "The billing API now takes a UTC timestamp: write the date as YYYY-MM-DDT00:00:00Z.",
}
#: Phrases of the core's system prompts (atlas_learning/prompts.py) that tell requests with one schema apart.
STEP_VALIDATION = "watching a student agent work"
ANSWER_VALIDATION = "checking a student agent's final answer"
EXECUTION = "Complete the task yourself"

_STEP_LINE = re.compile(r"^#(\d+) ", re.MULTILINE)
_ENTRY_ID = re.compile(r"^\W*\[([^\]\s]+)\]")
_PLAYBOOK_HEADER = re.compile(r"^Current playbook:", re.MULTILINE)
_RETIRED_HEADER = re.compile(r"^[^\n:]*\bretired\b[^\n:]*:", re.IGNORECASE | re.MULTILINE)


def field(prompt: str, name: str) -> str:
    """The value of a prompt's first ``Name:`` line: the rest of that line, or else the next non-empty line."""
    match = re.search(rf"^{re.escape(name)}:[ \t]*(.*)$", prompt, re.MULTILINE)
    if match is None:
        return ""
    if match.group(1).strip():
        return match.group(1).strip()
    return next((line.strip() for line in prompt[match.end():].splitlines() if line.strip()), "")


def playbook_parts(prompt: str) -> tuple[str, str]:
    """The live and the retired lessons a synthesis prompt lists: from each one's header to the other's, or to the
    end. (Entries span lines, a worked example's ``Answer:`` among them, so no other header ends a part.)"""
    marks = sorted((m.start(), part) for part, header in (("live", _PLAYBOOK_HEADER), ("retired", _RETIRED_HEADER))
                   for m in [header.search(prompt)] if m is not None)
    parts = {"live": "", "retired": ""}
    for i, (start, part) in enumerate(marks):
        parts[part] = prompt[start:marks[i + 1][0] if i + 1 < len(marks) else len(prompt)]
    return parts["live"], parts["retired"]


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


def mentions(text: str, lesson: Lesson) -> bool:
    """Does ``text`` list the lesson (its opening, in case the core cut it)?"""
    return _squash(lesson.text)[:48] in _squash(text)


def entry_id_in(playbook: str, lesson: Lesson) -> str | None:
    """The id the prompt's playbook lists the lesson under (``[id] lesson``), if any."""
    for line in playbook.splitlines():
        match = _ENTRY_ID.match(line)
        if match and mentions(line, lesson):
            return match.group(1)
    return None


def _verdict(accepted: bool, guidance: str, reason: str) -> dict[str, Any]:
    return {"accepted": accepted, "guidance": guidance, "reason": reason}


def _judgement(outcome: float, process: float, efficiency: float, confidence: float, rationale: str) -> dict[str, Any]:
    return {"outcome": outcome, "process": process, "efficiency": efficiency, "confidence": confidence, "rationale": rationale}


def _add(lesson: Lesson, reason: str) -> dict[str, Any]:
    return {"op": "add", "entry_id": None, "audience": "student", "lesson": lesson.text,
            "applies_when": lesson.applies_when, "scope": "family", "reason": reason}


class FakeModels:
    """Every supervision role, answering as a capable model would; the server's responder."""

    def __init__(self, tasks: Sequence[Task], unknown: UnknownRequests) -> None:
        self.tasks = list(tasks)
        self._by_text = {t.text: t for t in tasks}
        self.unknown = unknown
        self._handlers: dict[str, Callable[[ChatRequest], Any]] = {
            "Verdict": self.verdict,
            "PlanReview": self.plan_review,
            "SessionJudgement": self.judge_session,
            "StepJudgements": self.judge_steps,
            "PlaybookChanges": self.synthesize,
            "ProbeAnswer": self.probe,
        }

    def __call__(self, request: ChatRequest) -> str:
        if request.schema_name is None:
            return self.text(request)
        handler = self._handlers.get(request.schema_name)
        if handler is None:
            self.unknown.note(f"schema {request.schema_name}", request.system)
            return json.dumps(schema_default(request.schema or {}))
        return json.dumps(handler(request))

    # ------------------------------------------------------------------------------------------ reading
    def task_in(self, request: ChatRequest) -> Task | None:
        """The task the request is about: the ``Task:`` line, else the first known task its prompt quotes."""
        named = field(request.user, "Task")
        if named in self._by_text:
            return self._by_text[named]
        return next((t for t in self.tasks if t.text in request.user), None)

    @staticmethod
    def final_answer(request: ChatRequest) -> str:
        return field(request.user, "Final answer")

    # ------------------------------------------------------------------------------------------ roles
    def text(self, request: ChatRequest) -> str:
        """Plain-text requests: the teacher executing an escalated task."""
        task = self.task_in(request)
        if EXECUTION in request.system and task is not None:
            return task.expected
        self.unknown.note("plain text", request.system or request.user)
        return "ok"

    def verdict(self, request: ChatRequest) -> dict[str, Any]:
        if STEP_VALIDATION in request.system:
            return _verdict(True, "", "the step moves the task forward")
        if ANSWER_VALIDATION not in request.system:
            self.unknown.note("Verdict", request.system)
            if "Final answer:" not in request.user:
                return _verdict(True, "", "nothing to object to")
        return self.validate_answer(request)

    def validate_answer(self, request: ChatRequest) -> dict[str, Any]:
        task = self.task_in(request)
        if task is None:
            self.unknown.note("Verdict on an unknown task", request.user)
            return _verdict(True, "", "cannot tell; accepted")
        if answer_matches(self.final_answer(request), task.expected):
            return _verdict(True, "", "the answer is right")
        return _verdict(False, GUIDANCE[task.style], "the answer is not in the form this task needs")

    def plan_review(self, request: ChatRequest) -> dict[str, Any]:
        return {"approved": True, "steps": [], "concerns": []}

    def judge_session(self, request: ChatRequest) -> dict[str, Any]:
        task = self.task_in(request)
        if task is None:
            self.unknown.note("SessionJudgement on an unknown task", request.user)
            return _judgement(0.5, 0.5, 0.5, 0.3, "cannot tell what the task was")
        right = 1.0 if answer_matches(self.final_answer(request), task.expected) else 0.0
        rejected = field(request.user, "Teacher verdicts").count("rejected")
        return _judgement(right, right, right / (1 + rejected), 0.9, "right answer" if right else "wrong answer")

    def judge_steps(self, request: ChatRequest) -> dict[str, Any]:
        steps = sorted({int(n) for n in _STEP_LINE.findall(request.user)})
        return {"steps": [{"step": n, "score": 1.0, "rationale": "served the task"} for n in steps]}

    def probe(self, request: ChatRequest) -> dict[str, Any]:
        return {"lane": "paired", "confidence": 0.7, "reason": "the teacher should check the answer"}

    def synthesize(self, request: ChatRequest) -> dict[str, Any]:
        task = self.task_in(request)
        if task is None:
            self.unknown.note("PlaybookChanges on an unknown task", request.user)
            return {"changes": []}
        live, retired = playbook_parts(request.user)
        changes = []
        harmful = HARMFUL.get(task.family)
        if harmful is not None and not mentions(live, harmful):  # stubborn: proposed whenever it is not live
            changes.append(_add(harmful, "checksums are conventionally written in C notation"))
        helpful = LESSONS[task.style]
        if (harmful is None or mentions(retired, harmful)) and not mentions(live, helpful) and not mentions(retired, helpful):
            changes.append(_add(helpful, "the teacher asked for this form"))
        for style, stale in LESSONS.items():
            entry_id = entry_id_in(live, stale) if stale.family == task.family and style != task.style and not stale.harmful else None
            if entry_id is not None:
                changes.append({"op": "retire", "entry_id": entry_id, "audience": "student", "lesson": "", "applies_when": "",
                                "scope": "family", "reason": "it no longer gives the right answer for these tasks"})
        return {"changes": changes[:3]}


# ------------------------------------------------------------------------------------------------ the runs

#: Whether this core takes the task family as a keyword (else it goes in the metadata).
TAKES_TASK_FAMILY = "task_family" in inspect.signature(Supervisor.begin).parameters


@dataclass(frozen=True)
class Outcome:
    """What one session did, as the figures need it."""

    task: Task
    lane: str
    first_ok: bool
    final_ok: bool
    tokens: Mapping[str, int]  # supervision tokens by role
    teacher_calls: int
    lessons_used: tuple[str, ...]
    session_id: str
    learning_key: str
    registry_versions: frozenset[int]  # the playbook versions its learning produced
    core_family: str | None  # the task family the core ran it under (None: a core without families)


@dataclass(frozen=True)
class Change:
    """One row of a playbook's history."""

    change: str
    lesson: str
    status: str
    registry_version: int
    session_id: str | None


@dataclass(frozen=True)
class RunReport:
    mode: str
    learning: bool
    outcomes: tuple[Outcome, ...]
    entries: Mapping[str, str]  # playbook entry id -> lesson text
    history: tuple[Change, ...]
    seconds: float

    @property
    def name(self) -> str:
        return f"{self.mode} {'on' if self.learning else 'off'}"


def sim_config(base_url: str, workdir: Path, learning: bool, seed: int) -> dict[str, Any]:
    """Every role on the sim server through the openai provider; a fresh SQLite store; learning on or off; the
    playbook's withholding draws seeded where the core has them."""
    def role(name: str) -> dict[str, Any]:
        return {"provider": "openai", "model": f"sim-{name}", "base_url": base_url, "api_key_env": API_KEY_ENV}

    config: dict[str, Any] = {
        "models": {"default": role("default"), **{name: role(name) for name in SUPERVISION_ROLES}},
        "storage": {"url": f"sqlite:///{workdir / 'atlas.db'}", "spool_dir": str(workdir / "spool")},
        "playbook": {"enabled": learning, **({"seed": seed} if "seed" in PlaybookConfig.model_fields else {})},
    }
    if "examples" in AtlasConfig.model_fields:
        config["examples"] = {"enabled": learning}
    return config


def begin_arguments(task: Task, give_family: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"expected_answer": task.expected}
    if not give_family:
        return {"metadata": metadata}
    if TAKES_TASK_FAMILY:
        return {"metadata": metadata, "task_family": task.family}
    return {"metadata": {**metadata, "task_family": task.family}}


def run_session(supervisor: Supervisor, task: Task, agent_name: str, give_family: bool, student: Student) -> Outcome:
    answers: list[str] = []

    def attempt(instructions: str) -> str:
        answers.append(student.answer(task, instructions, len(answers)))
        return answers[-1]

    result = supervisor.supervise(task.text, attempt, agent_name=agent_name, **begin_arguments(task, give_family))
    usage = {role: int(u.get("input_tokens") or 0) + int(u.get("output_tokens") or 0)
             for role, u in result.usage_by_role.items() if role != "student"}
    return Outcome(
        task=task, lane=result.lane, first_ok=bool(answers) and answer_matches(answers[0], task.expected),
        final_ok=answer_matches(result.final_answer, task.expected), tokens=usage,
        teacher_calls=int(result.usage_by_role.get("teacher", {}).get("calls") or 0),
        lessons_used=tuple(result.lessons_used), session_id=result.session_id, learning_key=result.learning_key,
        registry_versions=frozenset(c.registry_version for c in result.lessons_learned),
        core_family=getattr(result, "task_family", None),
    )


def simulate(mode: str, learning: bool, tasks: Sequence[Task], student: Student, base_url: str, workdir: Path) -> RunReport:
    agent_name = f"sim-{mode}-{'on' if learning else 'off'}"
    started = time.perf_counter()
    with Supervisor(sim_config(base_url, workdir / agent_name, learning, student.seed)) as supervisor:
        outcomes = tuple(run_session(supervisor, task, agent_name, mode == "family", student) for task in tasks)
        keys = sorted({o.learning_key for o in outcomes})
        history = tuple(Change(r.change, r.lesson, r.status, r.registry_version, r.session_id)
                        for key in keys for r in supervisor.playbook.history(key))
        entries = {e.id: e.lesson for e in supervisor.store.rows(PlaybookEntryRecord)}
    return RunReport(mode, learning, outcomes, entries, history, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------- the figures


def late(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The last two thirds of the run."""
    return list(outcomes[len(outcomes) // 3:])


def rate(outcomes: Sequence[Outcome], ok: Callable[[Outcome], bool]) -> float:
    return sum(1 for o in outcomes if ok(o)) / len(outcomes) if outcomes else 0.0


def tokens_by_role(outcomes: Sequence[Outcome]) -> Counter[str]:
    total: Counter[str] = Counter()
    for outcome in outcomes:
        total.update(outcome.tokens)
    return total


def lesson_family(report: RunReport, entry_id: str) -> str | None:
    """The family an entry belongs to: the synthesizer's lesson it is, or the task a worked example quotes."""
    text = report.entries.get(entry_id)
    if text is None:
        return None
    lesson = next((lesson for lesson in LESSONS.values() if lesson.text == text.strip()), None)
    if lesson is not None:
        return lesson.family
    return next((o.task.family for o in report.outcomes if o.task.text[:EXAMPLE_OPENING] in text), None)


def family_grouping(report: RunReport) -> str:
    """How many task families the core ran the sessions under, and how many of them mix true families."""
    groups: dict[str, set[str]] = {}
    for outcome in report.outcomes:
        if outcome.core_family is not None:
            groups.setdefault(outcome.core_family, set()).add(outcome.task.family)
    if not groups:
        return "-"
    return f"{len(groups)} ({sum(1 for families in groups.values() if len(families) > 1)} mixed)"


def cross_family_sessions(report: RunReport) -> int:
    """Sessions that were given at least one lesson or example of another family."""
    return sum(1 for o in report.outcomes
               if any(lesson_family(report, e) not in (None, o.task.family) for e in o.lessons_used))


@dataclass(frozen=True)
class HarmfulFate:
    retired: bool
    retired_at: int | None  # the session whose finish retired it (None: never, or not traceable)
    injected_before: int  # sessions it was injected in, up to and including that one (all, if never retired)
    injected_after: int
    live_again: bool  # re-added (or brought back) after its retirement


def session_of(report: RunReport, change: Change) -> int | None:
    for outcome in report.outcomes:
        if outcome.session_id == change.session_id or change.registry_version in outcome.registry_versions:
            return outcome.task.index
    return None


def harmful_fate(report: RunReport) -> HarmfulFate:
    text = HARMFUL[HARMFUL_FAMILY].text
    ids = {entry_id for entry_id, lesson in report.entries.items() if lesson.strip() == text}
    rows = [c for c in report.history if c.lesson.strip() == text]
    retire = next((c for c in rows if c.change == "retire"), None)
    at = session_of(report, retire) if retire is not None else None
    cutoff = at if at is not None else math.inf
    injected = [o.task.index for o in report.outcomes if ids & set(o.lessons_used)]
    live_again = retire is not None and any(c.registry_version > retire.registry_version and c.status != "retired" for c in rows)
    return HarmfulFate(retire is not None, at, sum(1 for i in injected if i <= cutoff),
                       sum(1 for i in injected if i > cutoff), live_again)


def regression_fate(report: RunReport, regress_at: int) -> tuple[list[Outcome], bool]:
    """The regressed family's sessions from the regression on, and whether none of them ran in auto between the
    first (which cannot know) and the first whose first attempt was right (its recovery)."""
    after = [o for o in report.outcomes if o.task.family == REGRESSED_FAMILY and o.task.position >= regress_at]
    recovered = next((i for i, o in enumerate(after) if o.first_ok), len(after))
    return after, all(o.lane != "auto" for o in after[1:recovered])


def lane_letters(outcomes: Sequence[Outcome], regress_at: int | None = None) -> str:
    """``c p a``: the lane's letter, upper case when the first attempt was wrong, ``!`` when the final answer was;
    ``|`` before the regression."""
    letters = []
    for outcome in outcomes:
        if regress_at is not None and outcome.task.position == regress_at:
            letters.append("|")
        letter = LANE_LETTERS.get(outcome.lane, "?")
        letters.append((letter if outcome.first_ok else letter.upper()) + ("" if outcome.final_ok else "!"))
    return " ".join(letters)


# -------------------------------------------------------------------------------------------- the printing


def _count(outcomes: Sequence[Outcome], ok: Callable[[Outcome], bool]) -> str:
    return f"{sum(1 for o in outcomes if ok(o))}/{len(outcomes)} {rate(outcomes, ok):4.0%}"


def _harmful_cells(report: RunReport) -> tuple[str, str, str]:
    if not report.learning:
        return "-", "-", "-"
    fate = harmful_fate(report)
    at = "never" if not fate.retired else "?" if fate.retired_at is None else f"session {fate.retired_at}"
    return at, f"{fate.injected_before} (+{fate.injected_after} after)", "yes" if fate.live_again else "no"


def figure_rows(reports: Sequence[RunReport]) -> list[tuple[str, list[str]]]:
    roles = sorted({role for r in reports for o in r.outcomes for role in o.tokens})
    harmful = [_harmful_cells(r) for r in reports]
    rows: list[tuple[str, list[str]]] = [
        ("final success", [_count(r.outcomes, lambda o: o.final_ok) for r in reports]),
        ("unaided success", [_count(r.outcomes, lambda o: o.first_ok) for r in reports]),
        ("unaided, last 2/3", [_count(late(r.outcomes), lambda o: o.first_ok) for r in reports]),
        ("teacher calls", [str(sum(o.teacher_calls for o in r.outcomes)) for r in reports]),
    ]
    rows += [(f"tokens: {role}", [f"{tokens_by_role(r.outcomes)[role]:,}" for r in reports]) for role in roles]
    rows += [
        ("tokens: all supervision", [f"{sum(tokens_by_role(r.outcomes).values()):,}" for r in reports]),
        ("tokens, last 2/3", [f"{sum(tokens_by_role(late(r.outcomes)).values()):,}" for r in reports]),
        ("harmful lesson retired", [h[0] for h in harmful]),
        ("  injected in (sessions)", [h[1] for h in harmful]),
        ("  live again after", [h[2] for h in harmful]),
        ("another family's lesson", [f"{cross_family_sessions(r)} sessions" if r.learning else "-" for r in reports]),
        ("families the core used", [family_grouping(r) for r in reports]),
        ("wall time", [f"{r.seconds:.1f} s" for r in reports]),
    ]
    return rows


def print_table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *[(name, *cells) for name, cells in rows], strict=True)]
    for line in [tuple(header), *[(name, *cells) for name, cells in rows]]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def print_lanes(report: RunReport, regress_at: int) -> None:
    print(f"lanes, {report.name}:")
    for family in FAMILIES:
        outcomes = [o for o in report.outcomes if o.task.family == family]
        print(f"  {family:<9} {lane_letters(outcomes, regress_at if family == REGRESSED_FAMILY else None)}")
    after, _ = regression_fate(report, regress_at)
    print(f"  {REGRESSED_FAMILY} after the regression: {lane_letters(after)}")


def targets(off: RunReport, on: RunReport, regress_at: int) -> list[tuple[str, bool, str]]:
    """(target, met, the figures behind it) for one mode's pair of runs."""
    final_on, final_off = rate(on.outcomes, lambda o: o.final_ok), rate(off.outcomes, lambda o: o.final_ok)
    gain = 100 * (rate(late(on.outcomes), lambda o: o.first_ok) - rate(late(off.outcomes), lambda o: o.first_ok))
    tokens_off = sum(tokens_by_role(late(off.outcomes)).values())
    ratio = sum(tokens_by_role(late(on.outcomes)).values()) / tokens_off if tokens_off else math.inf
    fate = harmful_fate(on)
    harmless = fate.injected_before == 0 or (fate.retired and fate.injected_before <= TARGET_RETIRE_WITHIN)
    cross = cross_family_sessions(on)
    after, handled = regression_fate(on, regress_at)
    fate_text = (f"retired after {fate.injected_before} injections" if fate.retired
                 else "never injected" if not fate.injected_before else f"still live after {fate.injected_before} injections")
    return [
        ("final success: on >= off", final_on >= final_off, f"{final_on:.0%} vs {final_off:.0%}"),
        (f"unaided, last 2/3: on - off >= {TARGET_UNAIDED_GAIN:.0f} points", gain >= TARGET_UNAIDED_GAIN, f"{gain:+.0f} points"),
        (f"tokens, last 2/3: on <= {TARGET_TOKEN_RATIO}x off", ratio <= TARGET_TOKEN_RATIO, f"{ratio:.2f}x"),
        (f"harmful lesson retired within {TARGET_RETIRE_WITHIN} injections, never live again",
         harmless and not fate.live_again, fate_text + ("; live again" if fate.live_again else "")),
        ("no lesson of another family injected", cross == 0, f"{cross} sessions"),
        ("regressed family leaves auto, teacher helps until recovered", handled, lane_letters(after)),
    ]


def print_targets(pairs: Mapping[str, tuple[RunReport, RunReport]], regress_at: int) -> None:
    by_mode = {mode: targets(off, on, regress_at) for mode, (off, on) in pairs.items()}
    names = [name for name, _, _ in next(iter(by_mode.values()))]
    rows = [(name, [f"{'PASS' if results[i][1] else 'FAIL'} {results[i][2]}" for results in by_mode.values()])
            for i, name in enumerate(names)]
    print_table(["target", *by_mode], rows)


# ------------------------------------------------------------------------------------------------ the entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions-per-family", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seeds the student's slips")
    parser.add_argument("--slip-rate", type=float, default=0.1, help="share of attempts in which the student ignores its instructions")
    parser.add_argument("--runs", default="shared,family", help="comma-separated: shared (one key, no family given), family")
    args = parser.parse_args()
    modes = [m.strip() for m in args.runs.split(",") if m.strip()]
    if not modes or set(modes) - {"shared", "family"} or args.sessions_per_family < 3:
        parser.error("--runs takes shared and/or family; --sessions-per-family at least 3")
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # also for libraries that set their own loggers' level lower
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    os.environ.setdefault(API_KEY_ENV, "sim-not-a-real-key")

    tasks = build_tasks(args.sessions_per_family)
    regress_at = regression_point(args.sessions_per_family)
    student = Student(tasks, seed=args.seed, slip_rate=args.slip_rate)
    unknown = UnknownRequests()
    pairs: dict[str, tuple[RunReport, RunReport]] = {}
    with SimServer(FakeModels(tasks, unknown)) as server, tempfile.TemporaryDirectory() as tmp:
        print(f"learning_sim: {len(FAMILIES)} families x {args.sessions_per_family} sessions, interleaved; seed {args.seed}, "
              f"slip rate {args.slip_rate:.0%}; {REGRESSED_FAMILY} regresses at its session {regress_at}; "
              f"models at {server.base_url}")
        print(f"core: task_family keyword {'yes' if TAKES_TASK_FAMILY else 'no (given in metadata)'}; "
              f"examples config {'yes' if 'examples' in AtlasConfig.model_fields else 'no'}")
        for mode in modes:
            pairs[mode] = tuple(simulate(mode, learning, tasks, student, server.base_url, Path(tmp))  # type: ignore[assignment]
                                for learning in (False, True))
    reports = [report for pair in pairs.values() for report in pair]
    print()
    print_table(["", *[r.name for r in reports]], figure_rows(reports))
    print()
    print("lane letters: a auto, p paired, c coach, e escalate; upper case: first attempt wrong; !: final answer wrong; "
          "|: the regression")
    for report in reports:
        print_lanes(report, regress_at)
    print()
    print_targets(pairs, regress_at)
    print(f"\nunknown requests to the sim server: {unknown.summary()}")


if __name__ == "__main__":
    main()
