"""The linters are part of the test suite (ruff, ruff format, mypy strict)."""

from __future__ import annotations

import sys

from tests.conftest import REPO, run


def test_ruff() -> None:
    result = run([sys.executable, "-m", "ruff", "check", "src", "tests"], cwd=REPO)
    assert result.returncode == 0, result.stdout


def test_ruff_format() -> None:
    result = run([sys.executable, "-m", "ruff", "format", "--check", "src", "tests"], cwd=REPO)
    assert result.returncode == 0, result.stdout


def test_mypy() -> None:
    result = run([sys.executable, "-m", "mypy"], cwd=REPO)
    assert result.returncode == 0, result.stdout
