"""Atlas for LangGraph and LangChain agents.

* ``with_atlas(graph)``: any StateGraph or compiled graph (``create_agent``, a prebuilt ReAct agent, a custom
  graph) under supervision; the result is the user's own compiled graph with supervision added in it.
  ``current_instructions()`` gives a node that builds its own prompt what Atlas tells the student.
* ``AtlasMiddleware(...)``: for ``langchain.agents.create_agent(model, tools, middleware=[AtlasMiddleware()])``.
* ``AtlasChatModel(chat_model)``: any Atlas ``ChatModel`` (the embedded local model, say) as a tool-calling LangChain
  chat model, for ``create_agent(AtlasChatModel(model), tools)``.

LangGraph is imported when one of these is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["with_atlas", "AtlasGraph", "current_instructions", "AtlasMiddleware", "AtlasChatModel"]

if TYPE_CHECKING:
    from ._graph import AtlasGraph, current_instructions, with_atlas
    from .chat_model import AtlasChatModel
    from .middleware import AtlasMiddleware


def __getattr__(name: str) -> Any:
    if name in ("with_atlas", "AtlasGraph", "current_instructions"):
        from . import _graph

        return getattr(_graph, name)
    if name == "AtlasMiddleware":
        from .middleware import AtlasMiddleware

        return AtlasMiddleware
    if name == "AtlasChatModel":
        from .chat_model import AtlasChatModel

        return AtlasChatModel
    raise AttributeError(f"module 'atlas_plugins.langgraph' has no attribute {name!r}")
