"""``atlas console``: serve the review console (atlas_learning.console) on this machine with uvicorn."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import typer

from ..errors import AtlasError, UsageError
from ._common import load_config, open_store

_INSTALL_HINT = "atlas console needs the console extra: pip install 'atlas-plugins[console]'"


def console(*, config: Path | None, store: str | None = None, host: str, port: int, token: str | None, read_only: bool, reviewer: str | None) -> None:
    try:
        import uvicorn

        from ..console.app import ConsoleSettings, create_app, default_reviewer, is_loopback
    except ImportError as exc:
        raise AtlasError(f"{_INSTALL_HINT} ({exc})") from None
    if not 0 < port < 65536:
        raise UsageError(f"--port: expected 1..65535, got {port}")
    if token is not None and len(token) < 16:
        raise UsageError("--token: use at least 16 characters (or leave it out to have one generated)")
    loopback = is_loopback(host)
    if not loopback and token is None:
        token = secrets.token_urlsafe(24)
    loaded = load_config(config, store)
    with open_store(loaded) as opened:
        settings = ConsoleSettings(store=opened, config=loaded, token=token, read_only=read_only,
                                   reviewer=reviewer or default_reviewer(),
                                   allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"] if loopback else None)
        app = create_app(settings)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
        typer.echo(f"atlas console on {url} ({opened!r}{', read-only' if read_only else ''}); Ctrl-C stops it")
        if not loopback:
            typer.echo("bound off loopback: every request needs the token above (kept in a cookie after the first visit)")
        sys.stdout.flush()  # the URL (and its token) before the server blocks, also when piped
        uvicorn.run(app, host=host, port=port, log_level="warning")
