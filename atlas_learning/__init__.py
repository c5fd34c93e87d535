"""Atlas learning core: supervision, judging, playbook learning and storage for any agent.

The framework-agnostic half of Atlas Plugins. Adapters in ``atlas_plugins`` translate a framework's events into
this package's vocabulary. Names are re-exported here flatly and imported on first use, so ``import
atlas_learning`` stays fast and loads no model SDK, database driver or ML library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AtlasConfig": "atlas_learning.config",
    "ModelSettings": "atlas_learning.config",
    "StorageConfig": "atlas_learning.config",
    "AtlasError": "atlas_learning.errors",
    "ConfigError": "atlas_learning.errors",
    "ModelError": "atlas_learning.errors",
    "AuthenticationError": "atlas_learning.errors",
    "RateLimitError": "atlas_learning.errors",
    "ProviderError": "atlas_learning.errors",
    "ModelTimeoutError": "atlas_learning.errors",
    "InvalidOutputError": "atlas_learning.errors",
    "StoreError": "atlas_learning.errors",
    "ChatModel": "atlas_learning.models",
    "ModelResponse": "atlas_learning.models",
    "RoleModels": "atlas_learning.models",
    "ScriptedModel": "atlas_learning.models",
    "Usage": "atlas_learning.models",
    "UsageLedger": "atlas_learning.models",
    "create_model": "atlas_learning.models",
    "Store": "atlas_learning.store",
    "SessionFilter": "atlas_learning.store",
    "Supervisor": "atlas_learning.supervisor",
    "SupervisedRun": "atlas_learning.supervisor",
    "SessionResult": "atlas_learning.supervisor",
    "VerdictResult": "atlas_learning.supervisor",
    "PendingSession": "atlas_learning.background",
    "Start": "atlas_learning.supervisor",
    "StepDecision": "atlas_learning.supervisor",
    "AnswerDecision": "atlas_learning.supervisor",
    "CheckContext": "atlas_learning.judges",
    "CheckResult": "atlas_learning.judges",
    "AtlasEvent": "atlas_learning.events",
    "session_options": "atlas_learning.context",
    "EventBus": "atlas_learning.events",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .background import PendingSession
    from .config import AtlasConfig, ModelSettings, StorageConfig
    from .context import session_options
    from .errors import (
        AtlasError,
        AuthenticationError,
        ConfigError,
        InvalidOutputError,
        ModelError,
        ModelTimeoutError,
        ProviderError,
        RateLimitError,
        StoreError,
    )
    from .events import AtlasEvent, EventBus
    from .judges import CheckContext, CheckResult
    from .models import ChatModel, ModelResponse, RoleModels, ScriptedModel, Usage, UsageLedger, create_model
    from .store import SessionFilter, Store
    from .supervisor import AnswerDecision, SessionResult, Start, StepDecision, SupervisedRun, Supervisor, VerdictResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atlas_learning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
