"""The loop's parts on their own: the probe's prior, drift, redaction, playbook retrieval and registry, checks."""

from __future__ import annotations

import math
import random
import string

import pytest

from atlas_learning.config import PlaybookConfig, SupervisionConfig
from atlas_learning.drift import check_drift
from atlas_learning.judges import CheckContext, CheckResult, run_checks
from atlas_learning.playbook import PlaybookRegistry, coverage, render_lessons, select_lessons, similarity
from atlas_learning.probe import KeyHistory, prior_decision
from atlas_learning.redact import Redactor
from atlas_learning.schemas import LessonChange
from atlas_learning.store import PlaybookEntryRecord


def history(*rewards: float, interventions: tuple[int, ...] = ()) -> KeyHistory:
    return KeyHistory(rewards=rewards, lanes=("paired",) * len(rewards), interventions=interventions or (0,) * len(rewards))


@pytest.mark.parametrize(
    ("past", "lane"),
    [((), "coach"), ((0.9,), "coach"), ((0.9, 0.9), "paired"), ((0.9, 0.9, 0.9), "auto"), ((0.3, 0.9, 0.9, 0.9), "paired"), ((0.2, 0.3, 0.4), "coach"),
     ((0.6, 0.9, 0.9, 0.9), "paired"), ((0.85, 0.7, 0.9), "paired")],
)
def test_prior_lanes(past, lane) -> None:
    assert prior_decision(history(*past), 0.0, SupervisionConfig()).lane == lane


def test_prior_needs_few_interventions_for_auto_and_trusts_coverage() -> None:
    config = SupervisionConfig()
    assert prior_decision(history(0.9, 0.9, 0.9, interventions=(1, 1, 0)), 0.0, config).lane == "paired"
    assert prior_decision(history(0.9, 0.9), 0.0, config).lane == "paired"
    assert prior_decision(history(0.9, 0.9), 0.8, config).lane == "auto"  # a well-covered task needs one less


def test_prior_escalates_only_when_configured_and_falls_back_without_history() -> None:
    assert prior_decision(history(0.1, 0.1, 0.1), 0.0, SupervisionConfig()).lane == "coach"
    assert prior_decision(history(0.1, 0.1, 0.1), 0.0, SupervisionConfig(escalate_below_reward=0.2)).lane == "escalate"
    down = prior_decision(KeyHistory(unavailable="store down"), 0.0, SupervisionConfig())
    assert (down.lane, down.source) == ("paired", "fallback") and "store down" in down.reason


def test_drift_scores() -> None:
    steady = [0.8, 0.82, 0.79, 0.85, 0.81, 0.8]
    assert check_drift(0.1, steady).alert
    assert not check_drift(0.8, steady).alert
    assert not check_drift(0.1, steady[:4]).alert  # too short a baseline
    assert not check_drift(0.95, [1, 1, 1, 1, 0.9]).alert  # MAD 0 does not make every wobble an alert
    flat = check_drift(0.2, [1.0] * 6)
    assert flat.alert and math.isinf(flat.mad_z_score)


def test_redaction_keeps_prose_and_structure() -> None:
    redactor = Redactor(extra_patterns=[r"ACME-\d{6}"])
    assert redactor.text("max_tokens: 512 and token count 5") == "max_tokens: 512 and token count 5"
    assert redactor.text("order ACME-123456 shipped") == "order [REDACTED] shipped"
    value = redactor.value({"headers": {"Authorization": "Bearer abcdefghijklmnop"}, "n": 3, "items": ["sk-" + "a" * 30]})
    assert value == {"headers": {"Authorization": "[REDACTED]"}, "n": 3, "items": ["[REDACTED]"]}
    assert Redactor(enabled=False).text("sk-" + "a" * 30).startswith("sk-")


SECRET_SHAPES = {
    "openai": "sk-proj-" + "A1b2C3d4" * 4,
    "anthropic": "sk-ant-api03-" + "x9Y8z7W6" * 3,
    "google": "AIza" + "B" * 35,
    "aws key id": "AKIA" + "ABCDEFGHIJKLMNOP",
    "aws secret": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "github": "ghp_" + "a" * 36,
    "github fine-grained": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "slack": "xoxb-1234567890-abcdefghij",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "bearer": "Authorization: Bearer abcdefghijklmnop1234",
    "basic": "Authorization: Basic dXNlcjpwYXNzd29yZA==",
    "dsn": "postgresql://app:pa/ss%20w0rd@db:5432/x",
    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA75xyz\n-----END RSA PRIVATE KEY-----",
    "pem cut before its end": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "password=": 'password: "hunter22"',
    "api key env": "MY_API_KEY=abc123def456",
}
_rng = random.Random(15)


def _random(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


#: Shapes found by detect-secrets' provider patterns (LIBRARY_PLUGINS) or the near-name entropy check; their
#: bodies are random, as real keys are (the library patterns look only at random-looking tokens).
SECRET_SHAPES |= {
    "gitlab": "glpat-" + _random(20),
    "sendgrid": "SG." + _random(22) + "." + _random(43),
    "twilio": "AC" + _random(32, string.ascii_lowercase + string.digits),
    "telegram": "1234567890:" + _random(35),
    "mailchimp": _random(32, string.hexdigits[:16]) + "-us12",
    "slack webhook": "https://hooks.slack.com/services/T" + _random(10) + "/B" + _random(10) + "/" + _random(24),
    "azure storage": "AccountKey=" + _random(86) + "==",
    "pypi": "pypi-AgEIcHlwaS5vcmc" + _random(80),
    "discord": "M" + _random(23) + "." + _random(6) + "." + _random(27),
    "square": "sq0csp-" + _random(43),
    "ibm cloud iam": "ibm_cloud_iam_api_key: " + _random(44),
    "near a name": "my api key is " + _random(32, string.hexdigits[:16]),
    "near a name, after words": "the staging token (rotated monthly) -> " + _random(24),
}


@pytest.mark.parametrize("shape", sorted(SECRET_SHAPES))
def test_every_secret_shape_is_redacted_in_text_and_in_every_value_type(shape) -> None:
    import dataclasses

    from pydantic import BaseModel

    secret = SECRET_SHAPES[shape]
    redactor = Redactor()
    assert redactor.text(f"before {secret} after").count("[REDACTED]") >= 1
    import re

    # the secret part (the longest token, the last of equals), wherever the shape keeps a prefix such as "Basic "
    body = max(reversed(re.split(r"[\s:=\"'@]+", secret)), key=len)[-10:]

    @dataclasses.dataclass
    class Note:
        text: str

    class Model(BaseModel):
        text: str

    for value in (Note(secret), Model(text=secret), secret.encode(), {secret}, (secret,), {"deep": [{"x": secret}]}):
        assert body not in repr(redactor.value({"field": value})), (shape, type(value).__name__)
        assert body not in repr(redactor.columns({"output": value, "payload": {"deep": value}})), (shape, type(value).__name__)
    assert body not in repr(redactor.columns({"output": secret}))
    clipped = redactor.clip({"text": "x" * 40 + secret}, limit=45)  # the cut would split the secret
    assert body not in clipped


def test_no_column_is_named_like_a_secret_so_rows_redact_their_values_only() -> None:
    """``Redactor.columns`` (every stored row) looks at values, not at column names: it redacts what
    ``Redactor.value`` would only while no column's name says it holds a secret."""
    from sqlmodel import SQLModel

    import atlas_learning.store  # noqa: F401 - every table registered
    from atlas_learning.redact import _secret_key

    columns = [(table.name, column.name) for table in SQLModel.metadata.sorted_tables for column in table.columns]
    assert len(columns) > 50
    assert [c for c in columns if _secret_key(c[1])] == []
    row = {"session_id": "0" * 32, "output": "key sk-" + "a" * 40, "step_metadata": {"api_key": "x", "n": 1}, "input_tokens": 3}
    assert Redactor().columns(row) == Redactor().value(row)
    assert Redactor().columns(row)["step_metadata"]["api_key"] == "[REDACTED]"


def test_redaction_keeps_ordinary_words_that_name_secrets() -> None:
    text = "the token count is 42 and the secret santa list; password reset needed"
    assert Redactor().text(text) == text


@pytest.mark.parametrize("text", [
    "the token budget is token_budget_exceeded_2 for /srv/data/2024/reports_quarterly_final_v2.csv",
    "sha256 of report.csv: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    '{"id": "123e4567-e89b-12d3-a456-426614174000", "status": "done", "rows": 1204}',
    "ACCOUNTS_RECEIVABLE_SUMMARY and SKIP_EMPTY_LINES_IN_REPORTS are the flags",
    "the secret to good caching: invalidate_on_write_and_expire_after_ttl",
])
def test_redaction_keeps_digests_ids_paths_and_identifiers(text: str) -> None:
    """Random-looking tokens are secrets only in a provider's shape or right after a secret-like name."""
    assert Redactor().text(text) == text


ADVERSARIAL = ["hex", "letters", "base64", "url", "identifier", "key-like", "pem headers", "colons", "escaped pem", "escaped pairs",
               "jwt starts", "slashes", "random", "names and tokens"]


@pytest.mark.parametrize(("kind", "size"), [*((k, 10_000) for k in ADVERSARIAL), *((k, 1_000_000) for k in ADVERSARIAL),
                                            *((k, 10_000_000) for k in ("hex", "base64", "url", "escaped pem"))])
def test_redaction_is_linear_on_adversarial_input(kind: str, size: int) -> None:
    import time

    text = {"hex": "a1" * (size // 2), "letters": "ab" * (size // 2), "base64": "QUJD+/" * (size // 6),
            "url": "http://" + "a" * size, "identifier": "word_" * (size // 5), "key-like": "token_" * (size // 6),
            "pem headers": "-----BEGIN PRIVATE KEY-----\n" * (size // 28), "colons": "a:" * (size // 2),
            "escaped pem": "-----BEGIN PRIVATE KEY-----" + "\\\\n" * (size // 3),
            "escaped pairs": 'password\\":' * (size // 11), "jwt starts": "eyJ" * (size // 3), "slashes": "//a" * (size // 3),
            "random": _random(size), "names and tokens": ("api key " + _random(24) + " ") * (size // 33)}[kind]
    started = time.perf_counter()
    Redactor().text(text)
    # about 0.1 s per MB here; a pattern that backtracks over the whole input takes minutes on 1 MB
    assert time.perf_counter() - started < 6 * max(1, size / 1_000_000)


def test_invalid_redaction_pattern_is_a_config_error() -> None:
    from atlas_learning.errors import ConfigError

    with pytest.raises(ConfigError, match="redaction.patterns"):
        Redactor(extra_patterns=["(unclosed"])


def entry(lesson: str, audience: str = "student", status: str = "active", **stats) -> PlaybookEntryRecord:
    return PlaybookEntryRecord(learning_key="k", lesson=lesson, audience=audience, status=status, **stats)


def test_retrieval_prefers_relevant_entries_within_budget() -> None:
    entries = [entry("Quote numbers exactly from the spreadsheet."), entry("List the folder before reading any file."),
               entry("Teacher: check the path argument.", audience="teacher"), entry("Old advice.", status="retired")]
    chosen = select_lessons(entries, "read the file in the data folder", audience="student", token_budget=400)
    assert [e.lesson for e in chosen] == ["List the folder before reading any file."]  # the spreadsheet lesson does not apply
    assert select_lessons(entries, "read the file", audience="student", token_budget=20) == []  # the rendered block is 21 tokens
    assert len(select_lessons(entries, "read the file", audience="student", token_budget=21)) == 1
    assert "List the folder" in render_lessons(chosen) and render_lessons([]) == ""
    assert coverage(chosen[:1], "read the file today") == pytest.approx(2 / 3)  # 'read' and 'file' of read/file/today
    assert similarity("List the folder first", "list the folder first.") == 1.0


def test_registry_history_diff_retire_and_budget(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig(total_token_budget=100))
    added = registry.apply("k", [LessonChange(op="add", lesson="List the folder before reading a file."),
                                 LessonChange(op="add", lesson="list the folder before reading a file")])  # a near-duplicate
    assert [c.op for c in added] == ["add"] and registry.version("k") == 1
    entry_id = added[0].entry_id
    registry.apply("k", [LessonChange(op="refine", entry_id=entry_id, lesson="List the folder, then read the file you need.")])
    registry.retire("k", entry_id, reason="by hand")
    assert [h.change for h in registry.history("k")] == ["add", "refine", "retire"]
    assert registry.diff("k", 1, 2) == [{"entry_id": entry_id, "change": "changed", "before": "List the folder before reading a file.",
                                         "after": "List the folder, then read the file you need.", "status_before": "provisional",
                                         "status": "provisional"}]
    assert registry.diff("k", 0, 1)[0]["change"] == "added"
    assert registry.live_entries("k") == []
    topics = ["spreadsheets", "archives", "symlinks", "manifests", "backups"]
    long_lessons = [LessonChange(op="add", lesson=" ".join(f"{topic}{j}" for j in range(12))) for topic in topics]
    applied = registry.apply("k", long_lessons)
    assert any(c.op == "retire" and "token budget" in c.reason for c in applied)
    assert sum(len(e.lesson) for e in registry.live_entries("k")) / 4 <= 100


def test_impact_promotes_helpful_entries_and_retires_harmful_ones(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())  # min_with 3, min_without 2, decide_confidence 0.8
    helpful, harmful = (c.entry_id for c in registry.apply("k", [LessonChange(op="add", lesson="Check the path first."),
                                                                 LessonChange(op="add", lesson="Guess the file contents quickly.")]))
    for _ in range(2):
        assert registry.record_impact("k", [], [helpful, harmful], 0.5) == []  # sessions it applied to but was withheld from
    assert registry.record_impact("k", [helpful], [], 0.9) == [] and registry.record_impact("k", [helpful], [], 1.0) == []  # n=2 < 3
    changes = registry.record_impact("k", [helpful], [], 0.9)
    assert [(c.op, c.entry_id) for c in changes] == [("activate", helpful)]
    assert "P(helps) 0.8" in changes[0].reason and "(n=3)" in changes[0].reason
    for _ in range(3):
        changes = registry.record_impact("k", [harmful], [], 0.0)
    assert [(c.op, c.entry_id) for c in changes] == [("retire", harmful)] and "probably harmful" in changes[0].reason
    assert [e.id for e in registry.live_entries("k")] == [helpful]
    rows = {(h.entry_id, h.change): h.reason for h in registry.history("k")}
    assert rows[(helpful, "activate")].startswith("impact: probably helps") and rows[(harmful, "retire")].startswith("impact:")
    # the retired text, and a near-duplicate of it, never come back (tombstone)
    again = registry.apply("k", [LessonChange(op="add", lesson="Guess the file contents quickly!"),
                                 LessonChange(op="add", lesson="Quickly guess the file contents.")])
    assert [c.op for c in again] == ["refused", "refused"] and registry.version("k") == 3
    assert [e.id for e in registry.live_entries("k")] == [helpful]


def test_checks_accept_many_shapes_and_survive_errors() -> None:
    def boom(_):
        raise RuntimeError("broken check")

    results = run_checks([lambda c: True, lambda c: 0.25, lambda c: (2.0, "clipped"), lambda c: CheckResult(0.5, "half"),
                          lambda c: None, boom, lambda c: "yes"], CheckContext("t", "a"))
    assert [r.score for r in results] == [1.0, 0.25, 1.0, 0.5, None, None, None]
    assert "broken check" in results[5].reason and "expected CheckResult" in results[6].reason


def test_strings_that_are_not_instructions_never_become_lessons(store) -> None:
    registry = PlaybookRegistry(store, PlaybookConfig())
    applied = registry.apply("k", [LessonChange(op="add", lesson="1.0"), LessonChange(op="add", lesson="log_big.log"),
                                   LessonChange(op="add", lesson="Read the file before answering.")])
    assert [c.lesson for c in applied] == ["Read the file before answering."]
    registry.apply("k", [LessonChange(op="refine", entry_id=applied[0].entry_id, lesson="0.5")])
    assert [e.lesson for e in registry.live_entries("k")] == ["Read the file before answering."]
