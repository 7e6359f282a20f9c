"""Fixtures of the unit tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def serving(handle: Callable[[socket.socket], None]) -> socket.socket:
    """A listening socket on a free port of 127.0.0.1 whose one serving
    thread hands each connection, in turn, to `handle`, until it is closed."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment between a check and a local port."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


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
