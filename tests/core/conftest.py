"""Core tests use the scripted supervisor fixtures shared with the plugin tests (tests/support.py)."""

from tests.support import (  # noqa: F401 - fixtures and names re-exported for the tests here
    ACCEPT,
    GOOD_JUDGEMENT,
    POOR_JUDGEMENT,
    ScriptedRoles,
    by_schema,
    default_answers,
    make_supervisor,
)
