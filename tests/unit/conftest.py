"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory, with rehearse's state under it."""
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture(autouse=True)
def no_nix_flags() -> Iterator[None]:
    """Nix's flags a command line set (--show-trace …) end with its test."""
    from rehearse.host import nix

    yield
    nix.use_flags(nix.NixFlags())
