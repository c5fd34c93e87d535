"""Fixtures of the example tests: the pristine workspace (built once) and a fresh copy of it per test.

``store_url`` (SQLite and PostgreSQL) comes from the root conftest; ``make_supervisor`` (scripted roles) from
tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.mcp_file_ops.workspace import build_pristine, reset_workspace
from tests.support import make_supervisor  # noqa: F401 - the fixture


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pristine(tmp_path_factory.mktemp("mcp_file_ops") / "pristine")


@pytest.fixture
def workspace(tmp_path: Path, pristine: Path) -> Path:
    """A pristine workspace of this test's own, inside ``tmp_path / 'ws'`` (``tmp_path`` itself is 'outside')."""
    return reset_workspace(tmp_path / "ws", pristine)
