"""Reward rules shared by run time and training, so that what the trainer optimises is what sessions are scored on.

- :func:`answer_matches` decides whether an answer is the expected one. At run time it is the built-in check a
  session gets when its metadata carries ``ground_truth`` (or ``expected_answer``); in training it grades
  rollouts of the same tasks.
- :func:`verdict_reward` scores a teacher's verdict on an attempt whose correctness is known from the recorded
  outcome: 1 for the right decision in a well-formed verdict, 0.5 for the right decision in a malformed one, 0
  otherwise.
- :func:`teaching_reward` scores a piece of guidance by what it did to the student, who answered without and then
  with it: wrong-to-right scores 1 plus the efficiency bonus, right-to-right the efficiency bonus alone,
  right-to-wrong -1, anything else 0. The bonus (at most ``efficiency_weight``) rewards short guidance. At run time
  a session whose first answer was rejected and later answer checked records it (``breakdown["teaching"]``).

Everything here is plain Python: no model calls, no heavy imports.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .redact import default_redactor

__all__ = [
    "DEFAULT_EFFICIENCY_WEIGHT",
    "DEFAULT_GUIDANCE_TOKEN_BUDGET",
    "ParsedVerdict",
    "answer_matches",
    "count_tokens",
    "efficiency_bonus",
    "expected_answer_check",
    "expected_answer_of",
    "expected_answer_value",
    "mean_or_none",
    "parse_verdict",
    "teaching_reward",
    "verdict_reward",
]

#: The largest efficiency bonus; guidance of ``DEFAULT_GUIDANCE_TOKEN_BUDGET`` tokens or more earns none.
DEFAULT_EFFICIENCY_WEIGHT = 0.5
DEFAULT_GUIDANCE_TOKEN_BUDGET = 120

# A number: an optional minus not glued to a word (so 3-5 and 2024-05-07 hold no negatives), digits with optional
# thousands commas (1,000 but not 1,2), and an optional decimal part.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])-?\.\d+")
_WORDS = re.compile(r"\w+|[^\w\s]")
_ACCEPTED = re.compile(r'"?accepted"?\s*[:=]\s*(true|false)', re.IGNORECASE)


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-").casefold().strip()
    text = re.sub(r"\s+", " ", text)
    return text.lstrip(" \"'`").rstrip(" .!\"'`")


def _numbers(text: str) -> list[float]:
    values = []
    for raw in _NUMBER.findall(text):
        try:
            values.append(float(raw.replace(",", "")))
        except ValueError:
            continue
    return values


def answer_matches(answer: str, expected: str) -> bool:
    """True when ``answer`` gives the ``expected`` answer.

    Case, spacing and trailing punctuation are ignored. A numeric expected answer matches when it is the last
    number in the answer ("The total is 391." matches "391"); a textual one matches exactly or as a whole phrase
    of a longer answer ("The capital is Paris" matches "Paris", "Parisian" does not).
    """
    got, want = _normalize(str(answer)), _normalize(str(expected))
    if not want:
        return not got
    if got == want:
        return True
    compact = want.replace(" ", "")
    if _NUMBER.fullmatch(compact):
        found = _numbers(got)
        return bool(found) and found[-1] == _numbers(compact)[0]
    return re.search(rf"(?<!\w){re.escape(want)}(?!\w)", got) is not None


def expected_answer_value(metadata: dict[str, Any]) -> Any:
    """The expected answer a session's metadata names: ``ground_truth``, else ``expected_answer``, else None."""
    return metadata.get("ground_truth", metadata.get("expected_answer"))


def expected_answer_of(metadata: dict[str, Any]) -> str | None:
    """:func:`expected_answer_value` as text (JSON for a structured value)."""
    value = expected_answer_value(metadata)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def expected_answer_check(context: Any) -> Any:
    """The built-in verifiable check: does the final answer match the metadata's expected answer?

    ``context`` is a :class:`~atlas_learning.judges.CheckContext`. Returns None (undecided) without an expected
    answer, else ``(1.0 | 0.0, reason)``.
    """
    expected = expected_answer_of(context.metadata)
    if expected is None:
        return None
    if answer_matches(context.final_answer, expected):
        return 1.0, "matches the expected answer"
    return 0.0, f"expected {default_redactor().cut(expected, 80)!r}"  # redacted first: a cut never splits a secret


@dataclass(frozen=True)
class ParsedVerdict:
    """What could be read from a teacher's verdict text: the decision (None if none) and whether it was valid."""

    accepted: bool | None
    well_formed: bool
    guidance: str = ""


def parse_verdict(text: str) -> ParsedVerdict:
    """Read a verdict the way run time does (the ``Verdict`` schema), falling back to finding the decision alone."""
    from .schemas import Verdict

    stripped = text.strip()
    try:
        verdict = Verdict.model_validate_json(stripped)
        return ParsedVerdict(verdict.accepted, True, verdict.guidance)
    except ValueError:
        pass
    match = _ACCEPTED.search(stripped)
    if match:
        return ParsedVerdict(match.group(1).lower() == "true", False)
    return ParsedVerdict(None, False)


def verdict_reward(text: str, attempt_correct: bool) -> float:
    """1.0 for the right decision in a valid verdict, 0.5 for the right decision in a malformed one, else 0.0.

    The right decision accepts a correct attempt and rejects a wrong one.
    """
    parsed = parse_verdict(text)
    if parsed.accepted is None or parsed.accepted != attempt_correct:
        return 0.0
    return 1.0 if parsed.well_formed else 0.5


def count_tokens(text: str) -> int:
    """A model-independent token count: words and punctuation marks."""
    return len(_WORDS.findall(text))


def efficiency_bonus(guidance: str, *, weight: float = DEFAULT_EFFICIENCY_WEIGHT,
                     token_budget: int = DEFAULT_GUIDANCE_TOKEN_BUDGET) -> float:
    """``weight`` for empty guidance, falling linearly to 0 at ``token_budget`` tokens."""
    if token_budget <= 0:
        return 0.0
    return weight * max(0.0, 1.0 - count_tokens(guidance) / token_budget)


def teaching_reward(baseline_correct: bool, guided_correct: bool, guidance: str, *,
                    efficiency_weight: float = DEFAULT_EFFICIENCY_WEIGHT,
                    token_budget: int = DEFAULT_GUIDANCE_TOKEN_BUDGET) -> float:
    """The reward for guidance, from the student's answer without it (baseline) and with it (guided).

    wrong -> right: 1 + bonus; right -> right: bonus; right -> wrong: -1; wrong -> wrong: 0.
    """
    if baseline_correct and not guided_correct:
        return -1.0
    if not guided_correct:
        return 0.0
    bonus = efficiency_bonus(guidance, weight=efficiency_weight, token_budget=token_budget)
    return bonus if baseline_correct else 1.0 + bonus


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
