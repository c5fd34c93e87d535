"""Model layer: one small interface over every provider.

>>> from atlas_learning.models import create_model
>>> from atlas_learning.config import ModelSettings
>>> model = create_model(ModelSettings(provider="scripted", options={"responses": ["hi"]}))
>>> model.generate("Say hi").text
'hi'

``create_model(settings)`` builds a :class:`ChatModel` for one role; :class:`RoleModels` resolves every role of an
:class:`~atlas_learning.config.AtlasConfig` (a role left out uses ``default``), sharing one instance between roles
with identical settings so the local model loads once. Provider SDKs are imported only when their provider is used.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from ..config import AtlasConfig, ModelSettings
from ._base import (
    ChatModel,
    Message,
    Messages,
    ModelResponse,
    RawCompletion,
    RoleUsage,
    Usage,
    UsageLedger,
    normalize_messages,
    prices_for,
)

if TYPE_CHECKING:
    from .scripted import ScriptedModel

__all__ = [
    "ChatModel",
    "Message",
    "Messages",
    "ModelResponse",
    "RawCompletion",
    "RoleModels",
    "RoleUsage",
    "ScriptedModel",
    "Usage",
    "UsageLedger",
    "create_model",
    "normalize_messages",
    "prices_for",
]

#: provider name -> "module:ClassName", imported on first use.
_PROVIDERS: dict[str, str] = {
    "openai": "atlas_learning.models.openai:OpenAIModel",
    "anthropic": "atlas_learning.models.anthropic:AnthropicModel",
    "google": "atlas_learning.models.google:GoogleModel",
    "local": "atlas_learning.models.local:LocalModel",
    "scripted": "atlas_learning.models.scripted:ScriptedModel",
}


def model_class(provider: str) -> type[ChatModel]:
    """The ChatModel subclass implementing ``provider``."""
    try:
        module_name, class_name = _PROVIDERS[provider].split(":")
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}: expected one of {', '.join(_PROVIDERS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_model(settings: ModelSettings, *, role: str = "default", ledger: UsageLedger | None = None) -> ChatModel:
    """Build the model for one role from its settings."""
    return model_class(settings.provider)(settings, role=role, ledger=ledger)


class RoleModels:
    """The model of every role in a config, built lazily and shared between roles with equal settings.

    Usage of every call is recorded in ``ledger`` under the role that made it.
    """

    def __init__(self, config: AtlasConfig | None = None, *, ledger: UsageLedger | None = None) -> None:
        self.config = config or AtlasConfig()
        self.ledger = ledger if ledger is not None else UsageLedger()
        self._by_role: dict[str, ChatModel] = {}
        self._lock = threading.Lock()

    def get(self, role: str) -> ChatModel:
        """The model for ``role`` (student, teacher, judge_small, judge_large, probe, synthesizer or default)."""
        with self._lock:
            if role not in self._by_role:
                settings = self.config.models.for_role(role)
                self._by_role[role] = create_model(settings, role=role, ledger=self.ledger)
            return self._by_role[role]

    def close(self) -> None:
        with self._lock:
            for model in self._by_role.values():
                model.close()
            self._by_role.clear()


def __getattr__(name: str) -> object:
    if name == "ScriptedModel":
        from .scripted import ScriptedModel

        return ScriptedModel
    raise AttributeError(name)
