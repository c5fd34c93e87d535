"""How long `import atlas_learning` and `atlas --help` take in a fresh process (median of N runs).

Goals (issues 2 and 6): import at most 0.5 s; `atlas --help` at most 0.5 s.
Run: .venv/bin/python benchmarks/import_time.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(command: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    atlas = shutil.which("atlas", path=str(Path(sys.executable).parent)) or "atlas"
    baseline = median_seconds([sys.executable, "-c", "pass"], runs)
    measured = {
        "python -c pass (interpreter start)": baseline,
        "python -c 'import atlas_learning'": median_seconds([sys.executable, "-c", "import atlas_learning"], runs),
        "python -c 'import atlas_learning.models, atlas_learning.config'": median_seconds(
            [sys.executable, "-c", "import atlas_learning.models, atlas_learning.config"], runs
        ),
        "python -c 'import atlas_learning.store'": median_seconds([sys.executable, "-c", "import atlas_learning.store"], runs),
        "atlas --help": median_seconds([atlas, "--help"], runs),
    }
    for name, seconds in measured.items():
        print(f"{name:<66} {seconds * 1000:7.1f} ms (median of {runs})")


if __name__ == "__main__":
    main()
