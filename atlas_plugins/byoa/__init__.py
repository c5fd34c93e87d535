"""Bring your own agent: ``@atlas_agent`` puts any agent class under Atlas supervision.

>>> from atlas_plugins.byoa import atlas_agent, atlas_context, atlas_result
>>> @atlas_agent(learning_key="calculator")
... class Calculator:
...     def run(self, task: str, guidance: str | None = None) -> str:
...         atlas_context().tool_call("eval", {"expression": task}, output="42")
...         return "42"

The class is used exactly as before; see :mod:`atlas_plugins.byoa._decorator` for how lessons, guidance, plan
review and step validation reach it.
"""

from ._decorator import AgentContext, atlas_agent, atlas_context, atlas_result

__all__ = ["atlas_agent", "atlas_context", "atlas_result", "AgentContext"]
