"""Per-call Atlas options that a LangGraph or LangChain caller puts in ``config["configurable"]``.

``with_atlas`` and ``AtlasMiddleware`` both read them here, so the keys mean the same thing in both::

    app.invoke(input, {"configurable": {"atlas_task_family": "refunds", "atlas_learning_key": "support",
                                        "atlas_metadata": {"ticket": 42}, "atlas_checks": [my_check]}})

The adapters only pass these through to :meth:`~atlas_learning.supervisor.Supervisor.begin`; the core resolves
the task family and learning key from there (the call, its metadata, ``session_options``, config, inference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from atlas_learning.judges import Check

__all__ = ["CHECKS_KEY", "LEARNING_KEY_KEY", "METADATA_KEY", "TASK_FAMILY_KEY", "BeginOptions", "begin_options",
           "current_configurable"]

#: Session metadata for this invocation (merged over the adapter's own).
METADATA_KEY = "atlas_metadata"
#: Verifiable checks for this invocation (added to the adapter's own).
CHECKS_KEY = "atlas_checks"
#: The task family of this invocation's session, inside its learning key.
TASK_FAMILY_KEY = "atlas_task_family"
#: The learning key of this invocation's session (instead of the adapter's ``learning_key=``).
LEARNING_KEY_KEY = "atlas_learning_key"


class BeginOptions(TypedDict):
    """The keyword arguments of ``Supervisor.begin`` that an invocation's config can set."""

    learning_key: str | None
    task_family: str | None
    metadata: dict[str, Any]
    checks: list[Check]


def begin_options(configurable: Mapping[str, Any] | None, *, learning_key: str | None,
                  metadata: Mapping[str, Any], checks: Sequence[Check]) -> BeginOptions:
    """The adapter's own begin arguments with the invocation's per-call options on top: its learning key and
    task family when given, its metadata merged over the adapter's, its checks after the adapter's."""
    configurable = configurable or {}
    return BeginOptions(
        learning_key=configurable.get(LEARNING_KEY_KEY) or learning_key,
        task_family=configurable.get(TASK_FAMILY_KEY),
        metadata={**metadata, **(configurable.get(METADATA_KEY) or {})},
        checks=[*checks, *(configurable.get(CHECKS_KEY) or ())],
    )


def current_configurable() -> Mapping[str, Any]:
    """``configurable`` of the runnable config in force (inside a node or a middleware hook); empty outside one."""
    try:
        from langgraph.config import get_config

        return get_config().get("configurable") or {}
    except Exception:  # noqa: BLE001 - outside a runnable context there is no config
        return {}
