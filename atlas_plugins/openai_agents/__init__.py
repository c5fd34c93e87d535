"""Atlas for OpenAI Agents SDK agents.

* ``with_atlas(agent)`` returns an :class:`AtlasRunner`: ``await runner.run(input)``, ``runner.run_sync(input)`` and
  ``runner.run_streamed(input)`` take ``agents.Runner``'s keyword arguments and return the SDK's own results;
  ``runner.session_result()`` is the session Atlas recorded (a ``PendingSession``: the run returns before the
  session is judged; reading a result field waits for it). For runs you start with ``Runner`` yourself:
  ``async with runner.supervised(input) as run`` plus ``runner.run_config(run)`` and ``runner.hooks(run)``.
* :class:`AtlasModel`: an ``agents.Model`` backed by any Atlas ``ChatModel`` (the embedded local model, for
  instance), so an agent can run offline.
* :class:`AtlasTraceProcessor` / :func:`install_trace_processor`: the SDK's spans of supervised runs, stored as
  trajectory events of their session (registered once per process by the runner).

Importing this package imports the ``agents`` SDK (``pip install 'atlas-plugins[openai-agents]'``).
See docs/openai_agents.md.
"""

from __future__ import annotations

from ._model import AtlasModel
from ._runner import RESULT_ATTRIBUTE, AtlasRunner, with_atlas
from ._tracing import RUN_KEY, SESSION_KEY, AtlasTraceProcessor, install_trace_processor

__all__ = [
    "with_atlas",
    "AtlasRunner",
    "AtlasModel",
    "AtlasTraceProcessor",
    "install_trace_processor",
    "RESULT_ATTRIBUTE",
    "RUN_KEY",
    "SESSION_KEY",
]
