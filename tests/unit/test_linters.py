"""The linters are part of the test suite (ruff, ruff format, mypy strict, the layers)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

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


def test_layers() -> None:
    """import-linter's layers contract (pyproject.toml): no module imports
    from a layer above its own, imports inside functions included."""
    result = run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert result.returncode == 0, result.stdout
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The contract can fail: a copy of the package where the bottom layer
    imports the top one is refused."""
    copy = tmp_path / "src"
    shutil.copytree(REPO / "src" / "rehearse", copy / "rehearse", ignore=shutil.ignore_patterns("__pycache__"))
    errors = copy / "rehearse" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom rehearse.commands import cli  # noqa: E402\n")
    result = run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", str(REPO / "pyproject.toml")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(copy)},
    )
    assert result.returncode != 0
    assert "rehearse.core is not allowed to import rehearse.commands" in result.stdout
