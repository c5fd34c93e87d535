"""accelerate config files for training on several GPUs or machines (see docs/training.md).

:func:`launch_config` gives the path of one: ``multi_gpu`` (DDP on one machine), ``deepspeed_zero3`` and
``fsdp2`` (the model sharded across one machine's GPUs), ``multi_node`` (ZeRO-3 over two machines).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import AtlasError

__all__ = ["LAUNCH_CONFIGS", "is_main_process", "launch_config"]

LAUNCH_CONFIGS = ("multi_gpu", "deepspeed_zero3", "fsdp2", "multi_node")


def launch_config(name: str) -> Path:
    """The shipped accelerate config ``name`` (for ``accelerate launch --config_file``)."""
    if name not in LAUNCH_CONFIGS:
        raise AtlasError(f"no launch config {name!r}; choose one of {', '.join(LAUNCH_CONFIGS)}")
    return Path(__file__).with_name(f"{name}.yaml")


def is_main_process() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` / ``accelerate launch`` run (always true outside one):
    the one that scores, logs, plots and prints."""
    return int(os.environ.get("RANK", "0")) == 0
