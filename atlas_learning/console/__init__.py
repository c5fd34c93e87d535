"""``atlas console``: a local review console in the browser (needs the ``console`` extra).

Server-rendered pages (Starlette and Jinja2; no build step, nothing from a CDN: the CSS, the small keyboard script
and the SVG charts are served from this package): the session list (filters, keyset paging), one session's
timeline, review (one session, a selection or a whole filter; a keyboard queue), the playbook (retire with a
reason) and the learning curve. Review and retire go through the same functions as ``atlas review`` and
``atlas playbook retire``. Bound to 127.0.0.1 by default; bound elsewhere it needs an access token; every change
needs the page's CSRF token; ``read_only`` refuses every change.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ConsoleSettings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
