"""Relevance of short texts to a task: the tokenizer shared by every lexical comparison, and a BM25 index.

Lessons, worked examples and past tasks are short, so their BM25 scores (``bm25s``, Lucene variant) are
normalised by each document's score against itself: :meth:`RelevanceIndex.relevance` is then the share of a
document's IDF-weighted content that the query speaks to, 0..1, comparable across documents and usable with a
fixed threshold. Words keep their digits ("sha256", "q3", "404"): in tasks they are often the point.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["RelevanceIndex", "terms", "tokens"]

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "the a an and or of to in on for with is are be it this that as at by from into before after then when "
    "use your you its all any each not no do does did was were has have had can will should must".split()
)
_SUFFIXES = ("ing", "ies", "ed", "es", "s")


def _stem(word: str) -> str:
    """A light suffix strip (reading -> read, files -> file), applied alike to every text compared."""
    if any(ch.isdigit() for ch in word):
        return word
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + (2 if suffix == "ies" else 3) and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


_LETTERS_DASH_DIGITS = re.compile(r"(?<=[a-z])-(?=\d)")


def tokens(text: str) -> list[str]:
    """The content words of a text in order: lower-cased, stemmed, without stopwords; words of one or two letters
    are dropped unless they hold a digit ("q3" stays, "to" goes). A dash between letters and digits is dropped, so
    "SHA-256" and "sha256", "CRC-32" and "CRC32" are one word."""
    return list(_tokens(text))


@functools.lru_cache(maxsize=8192)
def _tokens(text: str) -> tuple[str, ...]:
    # Remembered: a session tokenizes its task several times (family, retrieval, coverage) and every session the
    # lessons it is given.
    return tuple(_stem(w) for w in _TOKEN.findall(_LETTERS_DASH_DIGITS.sub("", text.lower()))
                 if w not in _STOPWORDS and (len(w) > 2 or (len(w) == 2 and any(ch.isdigit() for ch in w))))


@functools.lru_cache(maxsize=8192)
def terms(text: str) -> frozenset[str]:
    """The set of :func:`tokens` of a text."""
    return frozenset(_tokens(text))


class RelevanceIndex:
    """BM25 over a fixed list of documents; built once, queried many times (``bm25s`` is imported on first use)."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.size = len(documents)
        self._retriever: Any = None
        self._self_scores: Any = None
        corpus = [tokens(d) for d in documents]
        if self.size and any(corpus):
            import bm25s
            import numpy as np

            self._retriever = bm25s.BM25()
            self._retriever.index(corpus, show_progress=False)
            scores = self._retriever.scores
            self._self_scores = np.bincount(scores["indices"], weights=scores["data"], minlength=self.size)[: self.size]

    def relevance(self, query: str) -> list[float]:
        """For each document, the share of its own BM25 weight that ``query`` matches, 0..1."""
        scores = [0.0] * self.size
        for position, score in self.matches(query).items():
            scores[position] = score
        return scores

    def matches(self, query: str, *, at_least: float = 0.0, include: Sequence[int] = ()) -> dict[int, float]:
        """The documents ``query`` matches at all, by position, with their relevance (see :meth:`relevance`);
        with ``at_least``, only those that reach it, and those in ``include`` whatever their relevance."""
        if self._retriever is None:
            return {}
        query_tokens = sorted(set(tokens(query)))
        if not query_tokens:
            return {}
        import numpy as np

        # BM25 of a query is the sum of its tokens' columns of the index's (document x token) score matrix:
        # read just those columns, so the cost follows the query's postings, not the number of documents.
        vocabulary, scores = self._retriever.vocab_dict, self._retriever.scores
        columns = [vocabulary[t] for t in query_tokens if t in vocabulary]
        if not columns:
            return {}
        indptr = scores["indptr"]
        spans = [np.arange(indptr[c], indptr[c + 1]) for c in columns]
        picked = np.concatenate(spans)
        documents = scores["indices"][picked]
        raw = np.bincount(documents, weights=scores["data"][picked], minlength=self.size)[: self.size]
        hits = np.flatnonzero((raw > 0) & (self._self_scores > 0))
        relevance = np.minimum(1.0, raw[hits] / self._self_scores[hits])
        if at_least > 0:
            keep = relevance >= at_least
            if len(include):
                keep |= np.isin(hits, np.asarray(include))
            hits, relevance = hits[keep], relevance[keep]
        return dict(zip(hits.tolist(), relevance.tolist(), strict=True))
