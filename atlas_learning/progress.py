"""A live status line for sessions in progress: lane, current step, supervision calls, time so far.

It is drawn from the core's events (:mod:`atlas_learning.events`): :func:`attach` subscribes a
:class:`SessionProgress` to a supervisor's event bus, and each event only updates a few fields under a lock;
rich's own thread redraws the line a few times a second, so the thread of the user's call draws only once a
session, when its lane is chosen.
Nothing is subscribed, and nothing is ever written, when the console (stderr by default) is not a terminal.

The ``atlas`` command turns it on for the supervisors it makes (``run``, ``quickstart``) with
:func:`set_default`; a library user asks for it with ``Supervisor(progress=True)``.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from .events import AtlasEvent, EventBus

__all__ = ["SessionProgress", "attach", "default_enabled", "set_default"]

#: Sessions shown at once; more in flight are summed up in one line.
MAX_LINES = 5
#: Seconds without an event after which the line says how long it has been quiet.
QUIET_S = 5.0
_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_default = False


def set_default(enabled: bool) -> None:
    """Show progress for every :class:`~atlas_learning.supervisor.Supervisor` made afterwards in this process
    (what the ``atlas`` command does), as if each was made with ``progress=True``."""
    global _default
    _default = bool(enabled)


def default_enabled() -> bool:
    """Whether :func:`set_default` turned progress on for this process."""
    return _default


@dataclass
class _Session:
    started: float
    last: float = 0.0
    key: str = ""
    lane: str = ""
    steps: int = 0
    step: str = ""
    supervision_calls: int = 0
    attempt: int = 1
    phase: str = "starting"


class SessionProgress:
    """One status line per session in flight, shown while there is one and cleared when the last one finishes.

    Call it with events (it is an :data:`~atlas_learning.events.Subscriber`); :meth:`close` clears the line and
    stops the display. ``console``: where to draw (default: stderr); a console that is not a terminal gets nothing.
    """

    def __init__(self, console: Console | None = None, *, refresh_per_second: float = 8.0) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self._refresh = refresh_per_second
        self._lock = threading.Lock()  # the sessions; held briefly, never while drawing starts or stops
        self._live_lock = threading.Lock()  # starting and stopping the display
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._finished: deque[str] = deque(maxlen=256)
        self._live: Any = None
        self._closed = False
        #: Set by :func:`attach`: takes the display off the event bus when it closes.
        self._unsubscribe: Callable[[], None] | None = None
        # A session that never finishes must not leave the line (and a hidden cursor) behind at exit.
        atexit.register(_close_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------------------------------ events
    def __call__(self, event: AtlasEvent) -> None:
        """Update the session's line from one event (cheap: no drawing happens here)."""
        kind, payload = event.type, event.payload
        with self._lock:
            if self._closed or event.session_id in self._finished:
                return
            if kind == "session_finished":
                self._finished.append(event.session_id)
                gone = self._sessions.pop(event.session_id, None) is not None
                empty = not self._sessions
            else:
                gone = False
                session = self._sessions.get(event.session_id)
                new = session is None
                if new:
                    session = self._sessions[event.session_id] = _Session(started=time.monotonic())
                _apply(session, kind, payload)
                session.last = time.monotonic()
        if kind == "session_finished":
            if gone and empty:
                self._stop()
        elif new:
            self._start()
        if kind == "lane_chosen":  # drawn at once: a session shorter than a redraw interval still shows its lane
            self.refresh()

    # ----------------------------------------------------------------------------------------- drawing
    def __rich__(self) -> RenderableType:
        from rich.text import Text

        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
        frame = _FRAMES[int(now * 10) % len(_FRAMES)]
        text = Text(no_wrap=True, overflow="ellipsis")
        for number, session in enumerate(sessions[:MAX_LINES]):
            if number:
                text.append("\n")
            text.append(f"{frame} ", style="cyan")
            text.append(_line(session, now))
        if len(sessions) > MAX_LINES:
            text.append(f"\n  … and {len(sessions) - MAX_LINES} more sessions in progress", style="dim")
        return text

    def render(self) -> str:
        """The status lines as plain text (what the display shows now, without the spinner)."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
        return "\n".join(_line(s, now) for s in sessions)

    def refresh(self) -> None:
        """Draw now (the display's own thread draws a few times a second); nothing when nothing is shown."""
        with self._live_lock:
            if self._live is not None:
                self._live.refresh()

    def _start(self) -> None:
        from rich.live import Live

        with self._live_lock:
            with self._lock:
                if self._closed or self._live is not None or not self._sessions:
                    return
            # Prints of the user's code land above the line; only when stdout is the same terminal, else they
            # would move from stdout to stderr.
            same_terminal = self.console.file is sys.__stderr__ and _isatty(sys.stdout)
            live = Live(self, console=self.console, refresh_per_second=self._refresh, transient=True,
                        redirect_stdout=same_terminal, redirect_stderr=same_terminal)
            live.start()
            self._live = live

    def _stop(self) -> None:
        with self._live_lock:
            live, self._live = self._live, None
            with self._lock:
                if live is not None and self._sessions and not self._closed:  # one began meanwhile: keep drawing
                    self._live = live
                    return
            if live is not None:
                live.stop()

    def close(self) -> None:
        """Clear the line and stop drawing; later events are ignored. Safe to call twice."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        with self._lock:
            self._closed = True
            self._sessions.clear()
        self._stop()


def _close_at_exit(ref: weakref.ref[SessionProgress]) -> None:
    display = ref()
    if display is not None:
        display.close()


def _apply(session: _Session, kind: str, payload: dict[str, Any]) -> None:
    if kind == "session_started":
        session.key = str(payload.get("learning_key") or "")
        session.phase = "running"
    elif kind == "lane_chosen":
        session.lane = str(payload.get("lane") or "")
        session.phase = "running"
    elif kind == "step":
        session.steps += 1
        kind_of_step = payload.get("kind")
        session.step = "model call" if kind_of_step == "model_call" else str(payload.get("tool_name") or payload.get("name") or kind_of_step or "")
        session.phase = "running"
    elif kind == "model_call":
        session.supervision_calls += 1
        role = str(payload.get("role") or "")
        if role.startswith("judge") and session.phase != "learning":
            session.phase = "judging"
        elif role == "synthesizer":
            session.phase = "learning"
    elif kind == "plan_reviewed":
        session.phase = "plan reviewed"
    elif kind == "retry":
        session.attempt = int(payload.get("attempt") or session.attempt + 1)
        session.phase = "retrying"
    elif kind == "escalated":
        session.lane = "escalate"
    elif kind == "reward":
        session.phase = "learning"


def _line(session: _Session, now: float) -> str:
    parts = [session.key or "session", f"lane {session.lane or '…'}"]
    step = f"step {session.steps}" + (f" {session.step}" if session.step else "") if session.steps else "no steps yet"
    parts.append(step if session.attempt == 1 else f"attempt {session.attempt}, {step}")
    calls = session.supervision_calls
    parts.append(f"{calls} supervision call{'s' if calls != 1 else ''}")
    if session.phase not in ("running", "starting"):
        parts.append(session.phase)
    parts.append(f"{now - session.started:.0f}s")
    quiet = now - (session.last or session.started)
    if quiet >= QUIET_S:  # a model call or a tool is taking its time: say how long since the last thing happened
        parts.append(f"(last event {quiet:.0f}s ago)")
    return "  ".join(parts)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def attach(events: EventBus, *, console: Console | None = None) -> SessionProgress | None:
    """Show progress for the sessions published on ``events``; returns the display (close it when done), or None
    when the console (default: stderr) is not a terminal, in which case nothing is subscribed at all."""
    if console is None:
        if not _isatty(sys.stderr):
            return None
        from rich.console import Console

        console = Console(stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:  # TERM=dumb cannot redraw a line
        return None
    display = SessionProgress(console)
    display._unsubscribe = events.subscribe(display)
    return display
