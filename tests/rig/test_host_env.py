"""The rig's second host environment (rig/host): a Debian 13 root with Nix ≥ 2.26,
QEMU ≥ 10 and virtiofsd, entered with rig/host/enter, the repository bind-mounted
at its own path and the root's own Nix store (never the host's)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run

pytestmark = pytest.mark.nix

BUILD = REPO / "rig" / "host" / "build"
ENTER = REPO / "rig" / "host" / "enter"
VIRTIOFSD = "/usr/libexec/virtiofsd"


@pytest.fixture(scope="module")
def host_root() -> Path:
    """The root; built here (~1 min) if its recipe changed."""
    result = run([BUILD])
    assert result.returncode == 0, result.stderr[-3000:]
    root = Path(result.stdout.strip().splitlines()[-1])
    assert (root / ".rig-host-info").is_file()
    return root


def enter(*argv: str, cwd: Path | str = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([ENTER, *argv], cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)


def version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    assert m, text
    return tuple(int(g or 0) for g in m.groups())


def test_the_build_is_cached_by_its_recipe_hash(host_root: Path) -> None:
    digest = run([BUILD, "--hash"])
    assert digest.returncode == 0, digest.stderr
    assert host_root.name == f"host-{digest.stdout.strip()}"
    assert (host_root.parent / "host").resolve() == host_root
    again = run([BUILD])
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(host_root)
    assert again.stderr == ""  # nothing built


def test_nix_is_2_26_or_newer(host_root: Path) -> None:
    result = enter("nix", "--version")
    assert result.returncode == 0, result.stderr
    assert version(result.stdout) >= (2, 26), result.stdout


def test_qemu_is_10_or_newer(host_root: Path) -> None:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        result = enter(tool, "--version")
        assert result.returncode == 0, result.stderr
        assert version(result.stdout) >= (10, 0), result.stdout


def test_virtiofsd_serves_qemu_from_its_namespace_sandbox(host_root: Path) -> None:
    result = enter(VIRTIOFSD, "--version")
    assert result.returncode == 0, result.stderr
    assert version(result.stdout) >= (1, 13), result.stdout
    # QEMU (not booting: -S) connects to virtiofsd as root, in its namespace sandbox, and the
    # vhost-user handshake is done; virtiofsd ends when QEMU quits.
    script = f"""
        mkdir /tmp/shared
        {VIRTIOFSD} --socket-path=/tmp/fs.sock --shared-dir=/tmp/shared --sandbox=namespace 2>/tmp/fs.log &
        for i in $(seq 100); do [ -S /tmp/fs.sock ] && break; sleep 0.1; done
        echo quit | timeout 60 qemu-system-x86_64 -accel tcg -nodefaults -display none -monitor stdio -S \\
            -machine q35,memory-backend=mem -m 64M -object memory-backend-memfd,id=mem,size=64M,share=on \\
            -chardev socket,id=fs,path=/tmp/fs.sock -device vhost-user-fs-pci,chardev=fs,tag=shared >/dev/null
        echo "qemu=$?"
        wait $!
        echo "virtiofsd=$?"
        cat /tmp/fs.log
    """
    result = enter("bash", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "qemu=0\n" in result.stdout, result.stdout
    assert "virtiofsd=0\n" in result.stdout, result.stdout
    assert "Client connected, servicing requests" in result.stdout, result.stdout


def test_the_repository_is_at_its_own_path(host_root: Path) -> None:
    result = enter("python", "-c", "import rehearse, sys; print(rehearse.__file__); print(sys.prefix)")
    assert result.returncode == 0, result.stderr
    module, prefix = result.stdout.split()
    assert module == str(REPO / "src" / "rehearse" / "__init__.py")
    assert prefix == "/opt/rehearse-venv"
    # The repository is the host's, not a copy: a file written on one side is on the other.
    marker = REPO / ".pytest_cache" / f"host-env-{os.getpid()}"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("from the host\n")
    try:
        seen = enter("cat", str(marker))
        assert seen.stdout == "from the host\n", seen.stderr
    finally:
        marker.unlink()
    # The current directory is kept inside the repository, / outside it.
    assert enter("pwd", cwd=REPO / "tests" / "rig").stdout == f"{REPO / 'tests' / 'rig'}\n"
    assert enter("pwd", cwd="/").stdout == "/\n"
    # The rehearse entry point runs the repository's code.
    cli = enter("rehearse", "--help")
    assert cli.returncode == 0, cli.stderr
    assert "usage: rehearse" in cli.stdout


def test_the_root_has_its_own_nix_store_and_settings(host_root: Path) -> None:
    expr = (
        'derivation { name = "rig-host-env-probe"; system = builtins.currentSystem; '
        'builder = "/bin/sh"; args = [ "-c" "echo hi > $out" ]; }'
    )
    # The host's Nix settings (as ./run and the tests set them) do not reach the root's Nix.
    env = {"NIX_CONFIG": "substituters =", "NIX_CONF_DIR": "/nonexistent", "NIX_USER_CONF_FILES": "/nonexistent"}
    assert not os.path.samefile(host_root / "nix" / "store", "/nix/store"), "run on the host, not in rig/host/enter"
    result = enter("nix-build", "--no-out-link", "-E", expr, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("/nix/store/") and out.endswith("-rig-host-env-probe"), out
    assert (host_root / out.lstrip("/")).read_text() == "hi\n"
    assert not Path(out).exists()  # not in the host's store
    settings = enter("nix", "--extra-experimental-features", "nix-command", "config", "show", env=env)
    assert settings.returncode == 0, settings.stderr
    lines = settings.stdout.splitlines()
    assert "build-users-group = " in lines
    assert "sandbox = false" in lines
    assert "substituters = " in lines
    shown = enter("sh", "-c", 'echo "$NIX_CONF_DIR ${NIX_USER_CONF_FILES-unset} $HOME"', env=env)
    assert shown.stdout == "/etc/nix unset /root\n"


def test_nothing_leaks_to_the_host(host_root: Path) -> None:
    probe = f"/tmp/rig-host-env-{os.getpid()}"
    result = enter("sh", "-c", f"touch {probe} && ls {probe} && exit 7")
    assert result.returncode == 7, result.stderr  # the command's exit code
    assert result.stdout == f"{probe}\n"
    assert not Path(probe).exists()  # /tmp was private
    mounts = Path("/proc/self/mountinfo").read_text().split("\n")
    assert not [m for m in mounts if f" {host_root}" in m]


@pytest.mark.e2e
def test_a_guest_mounts_a_virtiofs_share_served_in_the_root(host_root: Path, guest_image: Path) -> None:
    # The rig's guest kernel, its root file system read-only (snapshot), init a shell that
    # mounts the share, reads and writes a file, and ends (panic=-1 and -no-reboot: QEMU exits).
    init = "modprobe virtiofs; mount -t virtiofs shared /mnt && cat /mnt/in && echo from-guest >/mnt/out; umount /mnt"
    script = f"""
        mkdir /tmp/shared && echo from-root >/tmp/shared/in
        {VIRTIOFSD} --socket-path=/tmp/fs.sock --shared-dir=/tmp/shared --sandbox=namespace 2>/tmp/fs.log &
        for i in $(seq 100); do [ -S /tmp/fs.sock ] && break; sleep 0.1; done
        timeout 240 qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot -serial stdio -nic none \\
            -machine q35,memory-backend=mem -m 512M -object memory-backend-memfd,id=mem,size=512M,share=on \\
            -chardev socket,id=fs,path=/tmp/fs.sock -device vhost-user-fs-pci,chardev=fs,tag=shared \\
            -drive file={guest_image}/base.qcow2,if=virtio,snapshot=on \\
            -kernel {guest_image}/vmlinuz -initrd {guest_image}/initrd.img \\
            -append 'root=/dev/vda console=ttyS0 quiet panic=-1 init=/bin/bash -- -c "{init}"'
        echo "qemu=$?"
        wait $!
        echo "out=$(cat /tmp/shared/out)"
    """
    result = enter("bash", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "from-root" in result.stdout, result.stdout[-3000:]
    assert "out=from-guest\n" in result.stdout, result.stdout[-3000:]
