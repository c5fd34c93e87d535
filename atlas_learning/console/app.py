"""The console's Starlette app: server-rendered pages over one store, review and retire actions through the same
functions as the CLI, and the guards (access token off loopback, CSRF token on every change, read-only mode)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import AtlasError, UsageError
from . import queries
from .svg import LANE_COLORS, learning_charts

HERE = Path(__file__).parent
TOKEN_COOKIE = "atlas_console_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the console on this machine."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ConsoleSettings:
    """How the console runs: the store, who reviews, and its guards."""

    store: Any
    config: Any
    #: Required on every request when set (bound off loopback): ``?token=`` once (kept in a cookie), a cookie, or
    #: ``Authorization: Bearer``.
    token: str | None = None
    read_only: bool = False
    reviewer: str = ""
    #: Host names the console answers to (None: any). On loopback only its own names, so a page on another site
    #: cannot reach it through a DNS name that points at 127.0.0.1.
    allowed_hosts: list[str] | None = None


class _TokenGuard:
    """Refuses every request without the access token (401), when one is set."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            # once in the URL, then a cookie: the token leaves the address bar (and the history) at once
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        header = request.headers.get("authorization", "")
        cookie = request.cookies.get(TOKEN_COOKIE, "")
        bearer = header[7:] if header.lower().startswith("bearer ") else ""
        if any(value and hmac.compare_digest(value.encode(), self.token.encode()) for value in (cookie, bearer)):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse("atlas console: this console needs its access token; open the URL it printed when it "
                                     "started (…/?token=...), or send Authorization: Bearer TOKEN\n", status_code=401)
        await response(scope, receive, send)


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console as an ASGI app (run it with uvicorn; ``atlas console`` does)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(lane_colors=LANE_COLORS, fmt_reward=_fmt_reward, fmt_time=_fmt_time, short=lambda v: (v or "")[:12])
    templates.env.filters["pretty"] = _pretty
    csrf_token = secrets.token_urlsafe(32)
    store = settings.store

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.update(request=request, csrf=csrf_token, read_only=settings.read_only, message=request.query_params.get("msg"),
                       error=context.get("error") or request.query_params.get("err"))
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    async def checked_form(request: Request) -> Any:
        """The posted form, after the guards: read-only refuses, a missing or wrong CSRF token refuses, and so does
        a request whose Origin is another site."""
        if settings.read_only:
            raise _Refused(403, "this console is read-only (started with --read-only); use `atlas review` or restart it without --read-only")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise _Refused(403, f"refused a change posted from another site ({origin})")
        form = await request.form()
        given = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        if not given or not hmac.compare_digest(given.encode(), csrf_token.encode()):
            raise _Refused(403, "refused a change without this page's CSRF token; reload the page and try again")
        return form

    async def sessions_page(request: Request) -> Response:
        started = time.perf_counter()
        try:
            query = queries.ListQuery.from_params(request.query_params)
        except UsageError as exc:
            return render(request, "sessions.html", 400, page=None, query=queries.ListQuery(), error=str(exc), known=_known(store),
                          server_ms=0.0)
        page = queries.session_page(store, query)
        return render(request, "sessions.html", page=page, query=query, known=_known(store), page_sizes=queries.PAGE_SIZES,
                      server_ms=(time.perf_counter() - started) * 1000, count_cap=queries.COUNT_CAP,
                      lanes=queries.LANES, review_statuses=queries.REVIEW_STATUSES, statuses=queries.SESSION_STATUSES)

    async def session_page(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            detail = queries.session_detail(store, session_id)
        except AtlasError as exc:
            return render(request, "error.html", 404, error=str(exc))
        queue = request.query_params.get("queue") == "1"
        following = queries.queue_neighbour(store, session_id) if queue else None
        return render(request, "session.html", d=detail, s=detail["record"], queue=queue, next_pending=following)

    async def review_one(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        form = await checked_form(request)
        action = str(form.get("action") or "")
        note = str(form.get("note") or "").strip() or None
        queue = form.get("queue") == "1"
        try:
            changed, unchanged = _review(settings, [session_id], action, note)
        except AtlasError as exc:
            return RedirectResponse(f"/sessions/{session_id}?" + urlencode({"err": str(exc), **({"queue": "1"} if queue else {})}),
                                    status_code=303)
        message = f"{_status_of(action)}: session {session_id[:12]}" if changed else f"already {_status_of(action)}"
        if queue:
            following = queries.queue_neighbour(store, session_id)
            if following is None:
                return RedirectResponse("/sessions?" + urlencode({"review": "pending", "msg": f"{message}; no pending sessions left"}),
                                        status_code=303)
            return RedirectResponse(f"/sessions/{following}?" + urlencode({"queue": "1", "msg": message}), status_code=303)
        return RedirectResponse(f"/sessions/{session_id}?" + urlencode({"msg": message}), status_code=303)

    async def review_many(request: Request) -> Response:
        form = await checked_form(request)
        action = str(form.get("action") or "")
        note = str(form.get("note") or "").strip() or None
        try:
            query = queries.ListQuery.from_params(form)
            ids = [str(i) for i in form.getlist("ids")] if form.get("scope") != "all" else queries.matching_ids(store, query)
            if not ids:
                raise UsageError("select sessions first (the boxes in the first column), or choose 'every matching session'")
            changed, unchanged = _review(settings, ids, action, note)
        except AtlasError as exc:
            back = queries.ListQuery.from_params(form) if not isinstance(exc, UsageError) else queries.ListQuery()
            return RedirectResponse("/sessions?" + urlencode({**back.params(after=None, before=None), "err": str(exc)}), status_code=303)
        text = f"{_status_of(action)} {len(changed)} session{'s' if len(changed) != 1 else ''}" + (f" ({unchanged} already)" if unchanged else "")
        return RedirectResponse("/sessions?" + urlencode({**query.params(after=None, before=None), "msg": text}), status_code=303)

    async def queue_page(request: Request) -> Response:
        key = request.query_params.get("key") or None
        first = queries.queue_neighbour(store, None, learning_key=key)
        if first is None:
            return RedirectResponse("/sessions?" + urlencode({"review": "pending", "msg": "no finished sessions are waiting for review"}),
                                    status_code=303)
        return RedirectResponse(f"/sessions/{first}?queue=1", status_code=303)

    async def playbook_page(request: Request) -> Response:
        keys = queries.playbook_keys(store)
        key = request.query_params.get("key") or (keys[0] if keys else None)
        book = queries.playbook(store, settings.config, key) if key else None
        return render(request, "playbook.html", keys=keys, key=key, book=book)

    async def retire(request: Request) -> Response:
        from .._commands.playbook import retire_entry

        form = await checked_form(request)
        key, entry_id = str(form.get("key") or ""), str(form.get("entry_id") or "")
        reason = str(form.get("reason") or "").strip()
        if not reason:
            return RedirectResponse("/playbook?" + urlencode({"key": key, "err": "give a reason for retiring the lesson"}), status_code=303)
        try:
            entry, version = retire_entry(store, settings.config, key, entry_id, f"manual: {reason} ({settings.reviewer} in atlas console)")
        except AtlasError as exc:
            return RedirectResponse("/playbook?" + urlencode({"key": key, "err": str(exc)}), status_code=303)
        return RedirectResponse("/playbook?" + urlencode({"key": key, "msg": f"retired {entry.id[:12]} (registry version {version})"}),
                                status_code=303)

    async def learning_page(request: Request) -> Response:
        known = _known(store)
        key = request.query_params.get("key") or (known["keys"][0] if known["keys"] else None)
        window = request.query_params.get("window") or "5"
        if not window.isdigit() or not 1 <= int(window) <= 500:
            return render(request, "error.html", 400, error=f"window: expected a number of sessions from 1 to 500, got {window!r}")
        data = queries.learning_curve(store, key, window=int(window)) if key else None
        charts = learning_charts(data) if data and data["sessions"] else None
        return render(request, "learning.html", keys=known["keys"], key=key, data=data, charts=charts, window=int(window))

    async def chart_svg(request: Request) -> Response:
        key = request.query_params.get("key") or None
        chart = request.path_params["chart"]
        data = queries.learning_curve(store, key)
        if not data["sessions"]:
            return PlainTextResponse(f"no sessions for key {key!r}", status_code=404)
        charts = learning_charts(data)
        if chart not in charts:
            return PlainTextResponse(f"no chart {chart!r}: expected one of {', '.join(charts)}", status_code=404)
        return Response(charts[chart], media_type="image/svg+xml")

    async def home(request: Request) -> Response:
        return RedirectResponse("/sessions", status_code=303)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Refused)
        return PlainTextResponse(f"atlas console: {exc.message}\n", status_code=exc.status)

    routes = [
        Route("/", home),
        Route("/sessions", sessions_page),
        Route("/sessions/{session_id:str}", session_page),
        Route("/sessions/{session_id:str}/review", review_one, methods=["POST"]),
        Route("/review", review_many, methods=["POST"]),
        Route("/queue", queue_page),
        Route("/playbook", playbook_page),
        Route("/playbook/retire", retire, methods=["POST"]),
        Route("/learning", learning_page),
        Route("/learning/{chart:str}.svg", chart_svg),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = []
    if settings.allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts))
    middleware.append(Middleware(_TokenGuard, token=settings.token))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={_Refused: refused})
    app.state.csrf_token = csrf_token
    app.state.settings = settings
    return app


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _review(settings: ConsoleSettings, ids: list[str], action: str, note: str | None) -> tuple[list[dict[str, str]], int]:
    """The CLI's review gate (``atlas review``), for the console's reviewer."""
    from .._commands.review import ACTIONS, set_review_status

    if action not in ACTIONS:
        raise UsageError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    return set_review_status(settings.store, settings.config, ids, ACTIONS[action], reviewer=settings.reviewer, note=note)


def _status_of(action: str) -> str:
    from .._commands.review import ACTIONS

    return ACTIONS.get(action, action)


_KNOWN: dict[int, tuple[float, dict[str, list[str]]]] = {}


def _known(store: Any) -> dict[str, list[str]]:
    """Keys and families for the filters' suggestions, read at most every 30 s."""
    cached = _KNOWN.get(id(store))
    if cached is None or time.monotonic() - cached[0] > 30:
        cached = (time.monotonic(), queries.known_values(store))
        _KNOWN[id(store)] = cached
    return cached[1]


def _fmt_reward(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _fmt_time(moment: Any) -> str:
    from .._commands._common import fmt_time

    return fmt_time(moment)


def _pretty(value: Any) -> str:
    import json

    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def default_reviewer() -> str:
    """Who the review log names: ``$USER``, as ``atlas review`` does (else ``console``, where the CLI says ``cli``)."""
    return os.environ.get("USER") or "console"
