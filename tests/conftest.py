"""Shared fixtures: the repository's paths, Nix without a binary cache, the
rig's guest image (built once per run, cached by its recipe's hash)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The mini nixpkgs the tests build against: rig/nixpkgs (NixOS 25.11's
# interfaces), or another flavour (rig/nixpkgs-26.11, made by
# rig/flavours/make) named by REHEARSE_TEST_NIXPKGS.
MINI_NIXPKGS = Path(os.environ.get("REHEARSE_TEST_NIXPKGS") or REPO / "rig" / "nixpkgs").resolve()
SHARED = REPO.parent / "shared"

# Nix reads the repository's settings (rig/nix/nix.conf) and no machine-local
# nix.conf, as under ./run: a set-up step that only this machine's own Nix
# configuration made work fails here instead of hiding.
os.environ.setdefault("NIX_CONF_DIR", str(REPO / "rig" / "nix"))
os.environ.setdefault("NIX_USER_CONF_FILES", "")
# Inside rig/host/enter Nix reads that root's nix.conf, which leaves the
# substituters as a user's machine has them: no cache is reachable here, and
# each build would spend seconds trying one.
os.environ.setdefault("NIX_CONFIG", "substituters =")


def run(argv: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The rig's guest image; built here if its recipe changed."""
    result = run([REPO / "rig" / "image" / "build"])
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert (path / "base.qcow2").exists()
    return path


def fixed_fripon(tmp: Path, extra: str = "") -> Path:
    """The seed's fripon with the seed's fix (lib.mkDefault on timesyncd) and
    `extra` module text added; returns its configuration.nix."""
    tmp.mkdir(parents=True, exist_ok=True)
    src = REPO / "examples" / "fripon"
    (tmp / "hardware-configuration.nix").write_text((src / "hardware-configuration.nix").read_text())
    text = (
        (src / "configuration.nix")
        .read_text()
        .replace("services.timesyncd.enable = true;", "services.timesyncd.enable = lib.mkDefault true;")
    )
    assert "lib.mkDefault true" in text
    # `extra` is a module of its own, imported by the configuration, so it
    # may define options the configuration defines too (they merge).
    (tmp / "extra.nix").write_text("{ config, lib, pkgs, ... }:\n{\n" + extra + "\n}\n")
    text = text.replace("./hardware-configuration.nix", "./hardware-configuration.nix\n    ./extra.nix")
    (tmp / "configuration.nix").write_text(text)
    return tmp / "configuration.nix"


def on_a_terminal(
    argv: list[str], answer: bytes, *, prompt: bytes = b"password for", timeout: float = 600, **popen: Any
) -> tuple[int, str, str, bytes]:
    """Run `argv` in a session of its own whose controlling terminal is a new
    pseudo-terminal (its stdin stays /dev/null: what it reads there, it reads
    from /dev/tty), type `answer` once the terminal shows `prompt`. Returns
    its exit code, stdout, stderr and what the terminal showed."""
    master, slave = pty.openpty()
    name = os.ttyname(slave)

    def controlling_terminal() -> None:
        os.close(os.open(name, os.O_RDWR))  # a session leader's first terminal becomes its own

    shown = b""
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=controlling_terminal,
        **popen,
    ) as p:
        try:
            deadline = time.monotonic() + 60
            while prompt not in shown and time.monotonic() < deadline and p.poll() is None:
                if select.select([master], [], [], 0.5)[0]:
                    shown += os.read(master, 4096)
            if prompt in shown:
                os.write(master, answer)
            out, err = p.communicate(timeout=timeout)
            while select.select([master], [], [], 0.2)[0]:
                shown += os.read(master, 4096)
        finally:
            os.close(master)
            os.close(slave)
            if p.poll() is None:
                p.kill()
    return p.returncode, out, err, shown


# ./run runs the suite on two workers (pytest-xdist, `--dist loadfile`: a
# module's tests stay together and in order, on one worker, so a module's
# booted VM is shared by its tests). The modules that take longest go first,
# so that the two workers end near each other; the quick ones fill the gaps.
# From `--durations` of a full run; a module missing here goes after these.
SLOWEST_FIRST = (
    "e2e/test_faults.py",
    "e2e/test_deploy.py",
    "e2e/test_promote.py",
    "rig/test_guest_network.py",
    "e2e/test_generations.py",
    "e2e/test_snapshot.py",
    "e2e/test_promote_sudo.py",
    "e2e/test_servers.py",
    "rig/test_guest.py",
    "rig/test_server_standin.py",
    "e2e/test_security.py",
    "e2e/test_up.py",
    "e2e/test_fleet.py",
    "e2e/test_watch.py",
    "e2e/test_errors.py",
    "rig/test_guest_sshd_socket.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(REPO / "tests").as_posix()
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: each module's own order is kept
