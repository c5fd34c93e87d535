"""Plugin tests use the scripted supervisor fixtures shared with the core tests (tests/support.py)."""

from tests.support import make_supervisor  # noqa: F401 - the fixture
