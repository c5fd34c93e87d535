"""Task families inside a learning key, inferred from the task text when the caller names none.

A family is the set of a key's past tasks that carry its name. A new task joins the family whose tasks share
most of its rare words: the similarity of a task to a family is the IDF-weighted share of the task's content
words (those the key has seen before: a word never seen carries no evidence) that appear in the family's tasks,
each word weighted by the share of the family's tasks it appears in (a nearest-
centroid rule over bags of words, kept incrementally, so inference costs the same with 10 or 10,000 past
sessions). Under ``supervision.family_similarity`` the task starts a family of its own, named ``auto:`` plus its
three rarest words. Families given by callers take part like inferred ones, so a caller may name some families
and leave the rest to inference.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field

from sqlmodel import col, select

from .retrieval import tokens
from .store import SessionRecord, Store

__all__ = ["FamilyGuess", "TaskFamilies"]


@dataclass
class _Family:
    tasks: int = 0
    document_frequency: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class FamilyGuess:
    """The family a task was put in, how similar it was to it (0..1), and whether the family is new."""

    family: str
    similarity: float
    new: bool


@dataclass
class _KeyFamilies:
    families: dict[str, _Family] = field(default_factory=dict)
    document_frequency: Counter[str] = field(default_factory=Counter)
    tasks: int = 0

    def add(self, words: set[str], family: str) -> None:
        entry = self.families.setdefault(family, _Family())
        entry.tasks += 1
        entry.document_frequency.update(words)
        self.document_frequency.update(words)
        self.tasks += 1

    def idf(self, word: str) -> float:
        return math.log(1.0 + (self.tasks + 1) / (1 + self.document_frequency[word]))


class TaskFamilies:
    """Per-key family index of one supervisor. Loaded from the store (the last ``window`` sessions) on first use
    of a key, then kept up to date by :meth:`remember` as this process begins sessions."""

    def __init__(self, store: Store, *, threshold: float, window: int = 500) -> None:
        self.store = store
        self.threshold = threshold
        self.window = window
        self._keys: dict[str, _KeyFamilies] = {}
        self._lock = threading.Lock()

    def infer(self, learning_key: str, task: str) -> FamilyGuess:
        """The family ``task`` belongs to (see the module docstring); raises StoreError when the key's history
        cannot be read."""
        words = set(tokens(task))
        known = self._load(learning_key)
        with self._lock:
            weights = {w: known.idf(w) for w in words}
            # Words the key has never seen say nothing about which family a task is in (names, numbers,
            # payloads): only words seen before weigh in.
            total = sum(weight for w, weight in weights.items() if known.document_frequency[w])
            best, best_score = None, 0.0
            for name, family in known.families.items():
                if total <= 0:
                    break
                score = sum(weight * family.document_frequency[w] / family.tasks for w, weight in weights.items()) / total
                if score > best_score or (score == best_score and best is not None and name < best):
                    best, best_score = name, score
        if best is not None and best_score >= self.threshold:
            return FamilyGuess(best, round(best_score, 4), False)
        rarest = sorted(dict.fromkeys(tokens(task)), key=lambda w: -weights.get(w, 0.0))[:3]
        ordered = [w for w in dict.fromkeys(tokens(task)) if w in rarest]
        return FamilyGuess(("auto:" + "-".join(ordered))[:128] if ordered else "auto:other", round(best_score, 4), True)

    def remember(self, learning_key: str, task: str, family: str) -> None:
        """Count a session's task in its family (given or inferred)."""
        known = self._load(learning_key)
        with self._lock:
            known.add(set(tokens(task)), family)

    def _load(self, learning_key: str) -> _KeyFamilies:
        with self._lock:
            known = self._keys.get(learning_key)
        if known is not None:
            return known
        statement = (select(SessionRecord.task, SessionRecord.task_family)
                     .where(SessionRecord.learning_key == learning_key, col(SessionRecord.task_family).is_not(None))
                     .order_by(col(SessionRecord.started_at).desc()).limit(self.window))
        loaded = _KeyFamilies()
        for task, family in self.store.read(statement):
            loaded.add(set(tokens(task)), family)
        with self._lock:
            return self._keys.setdefault(learning_key, loaded)
