"""How fast the embedded local model is on this machine: load time and generation speed.

    python benchmarks/local_model.py [--model smollm2] [--runs 3] [--max-tokens 128] [--threads N]

Load time is measured in fresh processes (a cold process; the OS file cache is warm after the first one), split
into importing xllamacpp and loading the weights. Generation is measured in this process after one warm-up call:
a free-text prompt and a schema-constrained structured call, each averaged over ``--runs`` runs. Figures: output
tokens per second end to end (tokens / wall time of the call, prompt processing included) and llama.cpp's own
decode and prompt rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from pydantic import BaseModel, Field

from atlas_learning.config import ModelSettings
from atlas_learning.errors import InvalidOutputError
from atlas_learning.models.local import LocalModel

_LOAD_SNIPPET = """
import json, sys, time
started = time.perf_counter()
import xllamacpp  # noqa: F401
imported = time.perf_counter()
from atlas_learning.config import ModelSettings
from atlas_learning.errors import InvalidOutputError
from atlas_learning.models.local import LocalModel
model = LocalModel(ModelSettings(provider="local", model=sys.argv[1], options=json.loads(sys.argv[2])))
before = time.perf_counter()
model.load()
loaded = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": loaded - before}))
"""


class Step(BaseModel):
    action: str = Field(max_length=40)
    tool: str = Field(max_length=20)


class Plan(BaseModel):
    """Bounded so that a valid object always fits in about 150 tokens."""

    goal: str = Field(max_length=60)
    steps: list[Step] = Field(min_length=2, max_length=3)
    confident: bool


def _cold_loads(model: str, options: dict[str, Any], runs: int) -> list[dict[str, float]]:
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _LOAD_SNIPPET, model, json.dumps(options)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def _measure(model: LocalModel, prompts: list[str], output_type: type[BaseModel] | None, max_tokens: int) -> None:
    """Tokens per second over the calls; tokens come from the usage ledger, so failed structured calls count too."""
    rates, decode, prefill, tokens, requests, valid = [], [], [], [], 0, 0
    backend = model._entry.backend if model._entry else None
    for prompt in prompts:
        before = model.ledger.total()
        started = time.perf_counter()
        try:
            response = model.generate(prompt, output_type=output_type, max_tokens=max_tokens)
            valid += response.output is not None
        except InvalidOutputError:
            pass
        elapsed = time.perf_counter() - started
        used = model.ledger.total()
        calls, produced = used.calls - before.calls, used.output_tokens - before.output_tokens
        rates.append(produced / elapsed)
        tokens.append(produced / calls)
        requests += calls
        timings = getattr(backend, "last_timings", {}) or {}
        if timings:
            decode.append(timings.get("predicted_per_second", 0.0))
            prefill.append(timings.get("prompt_per_second", 0.0))
    print(
        f"  output tokens per request:    {statistics.mean(tokens):.0f} (max_tokens {max_tokens}, {requests} requests)"
    )
    if output_type is not None:
        print(f"  valid {output_type.__name__} objects:         {valid}/{len(prompts)}")
    print(
        f"  end-to-end tokens/s:          {statistics.mean(rates):.1f} (runs: {', '.join(f'{r:.1f}' for r in rates)})"
    )
    if decode:
        print(f"  llama.cpp decode tokens/s:    {statistics.mean(decode):.1f}")
        print(f"  llama.cpp prompt tokens/s:    {statistics.mean(prefill):.1f} (uncached part of the prompt)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    options: dict[str, Any] = {"n_threads": args.threads} if args.threads else {}

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(f"model: {args.model}, threads: {args.threads or os.cpu_count()}")

    loads = _cold_loads(args.model, options, args.runs)
    print(f"cold load, fresh process ({args.runs} runs):")
    print(f"  import xllamacpp s:           {statistics.mean(r['import_s'] for r in loads):.3f}")
    load_runs = ", ".join(f"{r['load_s']:.3f}" for r in loads)
    print(f"  load weights s:               {statistics.mean(r['load_s'] for r in loads):.3f} (runs: {load_runs})")

    model = LocalModel(ModelSettings(provider="local", model=args.model, options=options))
    model.generate("Hello", max_tokens=4)  # warm-up: the load and first-call allocations are not measured
    topics = ["the moon", "bread", "rivers", "chess", "volcanoes", "bees", "glass", "trains"]
    print(f"text generation ({args.runs} runs):")
    _measure(model, [f"Write a short paragraph about {t}." for t in topics[: args.runs]], None, args.max_tokens)
    print(f"structured, schema-constrained generation ({args.runs} runs):")
    plans = [f"Plan how to learn about {t}. Answer in JSON." for t in topics[: args.runs]]
    _measure(model, plans, Plan, max(args.max_tokens, 192))
    model.close()


if __name__ == "__main__":
    main()
