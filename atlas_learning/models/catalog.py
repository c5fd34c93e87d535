"""What Atlas knows about cloud models: which parameters each accepts and what its tokens cost. Data, in one place.

A model is looked up by its exact name first (``gpt-4o-2024-05-13`` is priced apart from ``gpt-4o``), then by the
longest family prefix (``gpt-5-mini-2025-08-07`` is ``gpt-5-mini``). A model in no row is unknown: its cost is
unknown (never a guessed one) and its parameters are the provider's defaults, corrected at run time where the API
says a parameter is unsupported (see :class:`~atlas_learning.models.openai.OpenAIModel`).

Sources, read when the rows were written (2025; list prices, standard tier, USD per million tokens; **not
re-checked against a live page or API since**):
- OpenAI: platform.openai.com/docs/pricing and the reasoning guide (reasoning models - the o-series and the
  gpt-5 family but its ``-chat`` models - reject ``temperature`` other than the default and take
  ``reasoning_effort``; every model takes ``max_completion_tokens``). Cached input is part of ``prompt_tokens``.
- Anthropic: docs.anthropic.com pricing (cache reads 0.1x input, 5-minute cache writes 1.25x input; both are
  counted apart from ``input_tokens``). Models newer than these rows are in the SDK's model list but not priced here.
- Google: ai.google.dev/gemini-api/docs/pricing (2.5 Pro has a tier above 200k prompt tokens). Thinking tokens are
  billed as output and count against ``max_output_tokens``. Cached tokens are part of ``prompt_token_count``.
A role's ``input_cost_per_mtok`` / ``output_cost_per_mtok`` override a row's prices.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelFacts", "Prices", "facts_for", "MODELS", "CHECKED"]

#: When the rows below were last compared with their sources.
CHECKED = "2025 (providers' pricing and model pages; not re-checked since)"


@dataclass(frozen=True)
class Prices:
    """USD per million tokens. ``cached_input`` and ``cache_write`` default to ``input`` when a provider has none;
    ``long_*`` apply past ``long_context_tokens`` prompt tokens."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    long_context_tokens: int | None = None
    long_input: float | None = None
    long_output: float | None = None
    long_cached_input: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0) -> float:
        """USD for one call. ``input_tokens`` are the uncached, unwritten ones (each kind is counted once)."""
        prompt = input_tokens + cached_input_tokens + cache_write_tokens
        long = self.long_context_tokens is not None and prompt > self.long_context_tokens
        rate_in = (self.long_input if long and self.long_input is not None else self.input)
        rate_out = (self.long_output if long and self.long_output is not None else self.output)
        cached = self.long_cached_input if long and self.long_cached_input is not None else self.cached_input
        total = (input_tokens * rate_in + output_tokens * rate_out
                 + cached_input_tokens * (rate_in if cached is None else cached)
                 + cache_write_tokens * (rate_in if self.cache_write is None else self.cache_write))
        return total / 1_000_000


@dataclass(frozen=True)
class ModelFacts:
    """What one model (or family) accepts and costs."""

    #: Whether ``temperature`` may be sent (False: the API refuses any value but its default).
    temperature: bool = True
    #: Whether a reasoning effort (OpenAI ``reasoning_effort``) is accepted.
    reasoning_effort: bool = False
    prices: Prices | None = None
    #: Anthropic: ``output_format`` (native ``output_config.format``, the default, also for models newer than these
    #: rows) or ``tool`` (forced tool use, for models from before native structured outputs).
    structured: str = "output_format"


_REASONING = dict(temperature=False, reasoning_effort=True)

#: provider -> model name or family prefix -> facts.
MODELS: dict[str, dict[str, ModelFacts]] = {
    "openai": {
        "gpt-5": ModelFacts(**_REASONING, prices=Prices(1.25, 10.00, cached_input=0.125)),
        "gpt-5-mini": ModelFacts(**_REASONING, prices=Prices(0.25, 2.00, cached_input=0.025)),
        "gpt-5-nano": ModelFacts(**_REASONING, prices=Prices(0.05, 0.40, cached_input=0.005)),
        "gpt-5.1": ModelFacts(**_REASONING, prices=Prices(1.25, 10.00, cached_input=0.125)),
        "gpt-5-chat-latest": ModelFacts(prices=Prices(1.25, 10.00, cached_input=0.125)),
        "gpt-5.1-chat-latest": ModelFacts(prices=Prices(1.25, 10.00, cached_input=0.125)),
        # newer gpt-5.x: reasoning models like their family, prices not known here
        "gpt-5.2": ModelFacts(**_REASONING),
        "gpt-5.2-chat-latest": ModelFacts(),
        "gpt-5.3-chat-latest": ModelFacts(),
        "o1": ModelFacts(**_REASONING, prices=Prices(15.00, 60.00, cached_input=7.50)),
        "o1-mini": ModelFacts(**_REASONING, prices=Prices(1.10, 4.40, cached_input=0.55)),
        "o3": ModelFacts(**_REASONING, prices=Prices(2.00, 8.00, cached_input=0.50)),
        "o3-mini": ModelFacts(**_REASONING, prices=Prices(1.10, 4.40, cached_input=0.55)),
        "o4-mini": ModelFacts(**_REASONING, prices=Prices(1.10, 4.40, cached_input=0.275)),
        "gpt-4.1": ModelFacts(prices=Prices(2.00, 8.00, cached_input=0.50)),
        "gpt-4.1-mini": ModelFacts(prices=Prices(0.40, 1.60, cached_input=0.10)),
        "gpt-4.1-nano": ModelFacts(prices=Prices(0.10, 0.40, cached_input=0.025)),
        "gpt-4o": ModelFacts(prices=Prices(2.50, 10.00, cached_input=1.25)),
        "gpt-4o-2024-05-13": ModelFacts(prices=Prices(5.00, 15.00)),
        "gpt-4o-mini": ModelFacts(prices=Prices(0.15, 0.60, cached_input=0.075)),
    },
    "anthropic": {
        "claude-opus-4-5": ModelFacts(prices=Prices(5.00, 25.00, cached_input=0.50, cache_write=6.25)),
        "claude-opus-4-1": ModelFacts(prices=Prices(15.00, 75.00, cached_input=1.50, cache_write=18.75)),
        "claude-opus-4": ModelFacts(structured="tool", prices=Prices(15.00, 75.00, cached_input=1.50, cache_write=18.75)),
        "claude-opus-4-0": ModelFacts(structured="tool", prices=Prices(15.00, 75.00, cached_input=1.50, cache_write=18.75)),
        "claude-sonnet-4": ModelFacts(structured="tool", prices=Prices(3.00, 15.00, cached_input=0.30, cache_write=3.75)),
        "claude-sonnet-4-0": ModelFacts(structured="tool", prices=Prices(3.00, 15.00, cached_input=0.30, cache_write=3.75)),
        "claude-sonnet-4-5": ModelFacts(prices=Prices(3.00, 15.00, cached_input=0.30, cache_write=3.75)),
        "claude-haiku-4-5": ModelFacts(prices=Prices(1.00, 5.00, cached_input=0.10, cache_write=1.25)),
        # in the SDK's model list (anthropic 2.16), newer than the price sources: native structured output, no price
        "claude-sonnet-4-6": ModelFacts(),
        "claude-3-5-haiku": ModelFacts(structured="tool", prices=Prices(0.80, 4.00, cached_input=0.08, cache_write=1.00)),
    },
    "google": {
        "gemini-2.5-pro": ModelFacts(prices=Prices(1.25, 10.00, cached_input=0.125, long_context_tokens=200_000,
                                                   long_input=2.50, long_output=15.00, long_cached_input=0.25)),
        "gemini-2.5-flash": ModelFacts(prices=Prices(0.30, 2.50, cached_input=0.03)),
        "gemini-2.5-flash-lite": ModelFacts(prices=Prices(0.10, 0.40, cached_input=0.01)),
        "gemini-2.0-flash": ModelFacts(prices=Prices(0.10, 0.40, cached_input=0.025)),
        "gemini-2.0-flash-lite": ModelFacts(prices=Prices(0.075, 0.30)),
    },
}

_UNKNOWN = ModelFacts()


def facts_for(provider: str, model: str) -> ModelFacts:
    """The row for ``model``: its exact name, else the longest family prefix that ends at a name boundary
    (``gpt-4o`` is not ``gpt-4o-mini``'s family, ``gpt-5`` is not ``gpt-5.1``'s), else unknown facts."""
    rows = MODELS.get(provider, {})
    if model in rows:
        return rows[model]
    best = max((name for name in rows if model.startswith(name) and _continues(model, name)), key=len, default=None)
    return rows[best] if best is not None else _UNKNOWN


def _continues(model: str, family: str) -> bool:
    """Whether ``model`` is ``family`` with a date or a tag after it (``-2025-08-07``, ``-20251001``, ``-latest``),
    not another family or version (``-mini``, ``-lite``, ``.1``, ``-6``)."""
    rest = model[len(family):]
    if not rest:
        return True
    if not rest.startswith("-"):
        return False
    head = rest[1:].split("-", 1)[0]
    return (head.isdigit() and len(head) >= 3) or head in ("latest", "preview", "exp")
