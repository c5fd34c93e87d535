"""Every word the student is shown, rendered in one place.

At run time :attr:`SupervisedRun.instructions <atlas_learning.SupervisedRun.instructions>` is
:func:`render_instructions` of the session's injected entries, the reviewed plan, the teacher's concerns and the
pending guidance; the SFT export and the trainer rebuild the same text from the stored rows with the same
functions, so what a model is trained on is what the student saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["render_instructions", "render_guidance"]


def render_guidance(notes: Sequence[str]) -> str:
    """The teacher's guidance block (answer or step guidance, check failures); '' without any."""
    notes = [n for n in notes if n]
    return "Teacher guidance:\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def render_instructions(entries: Sequence[Any] = (), plan: Sequence[str] = (), concerns: Sequence[str] = (),
                        guidance: Sequence[str] = (), *, playbook_text: str | None = None) -> str:
    """What is added to the student's instructions: the playbook block (lessons, then worked examples), the plan to
    follow, what to watch out for, the teacher's guidance; '' when there is nothing. ``playbook_text`` is the
    entries' block already rendered (by ``render_playbook``), for a caller that renders it once."""
    from .playbook import render_playbook

    parts = [playbook_text if playbook_text is not None else render_playbook(list(entries))]
    if plan:
        parts.append("Plan to follow:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(plan)))
    if concerns:
        parts.append("Watch out for:\n" + "\n".join(f"- {c}" for c in concerns))
    parts.append(render_guidance(guidance))
    return "\n\n".join(p for p in parts if p)
