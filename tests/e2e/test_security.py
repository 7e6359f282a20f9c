"""Issue 10's security items against a booted VM: a guest that plants
symlinks in its shared directory, and a user ssh configuration that would
send rehearse's connections elsewhere. The VM is isolated (`up --isolate`,
issue 22): it reaches no service of the host, while its forwards work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fixed_fripon
from tests.e2e.conftest import Rehearse, include, reaches_host

pytestmark = pytest.mark.e2e

NAME = "secvm"
CONF: list[Path] = []


@pytest.fixture(scope="module")
def secvm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    conf = fixed_fripon(tmp_path_factory.mktemp("secvm"))
    CONF.append(conf)
    result = rehearse("up", str(conf), *include(), "--name", NAME, "--isolate")
    assert result.returncode == 0, result.stderr[-4000:]
    yield NAME
    rehearse("destroy", NAME, "--timeout", "5")


def in_guest(rehearse: Rehearse, line: str) -> str:
    result = rehearse("ssh", NAME, "--", line, timeout=120)
    assert result.returncode == 0, (line, result.stderr)
    return result.stdout


def test_the_guest_cannot_make_up_write_host_files(rehearse: Rehearse, secvm: str, tmp_path: Path) -> None:
    vmdir = rehearse.state / secvm
    pinned = (vmdir / "known_hosts").read_text()
    # The attack, with a file of the test as the victim: the guest's
    # link points at a host path, which the host would follow.
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA precious\n")
    in_guest(
        rehearse,
        "cd /tmp/shared && rm -f ssh_host_ed25519_key ssh_host_ed25519_key.pub && "
        f"ln -s {victim} ssh_host_ed25519_key.pub && mkdir d && ln -s {tmp_path} d/up",
    )
    assert os.readlink(vmdir / "shared" / "ssh_host_ed25519_key.pub") == str(victim)  # planted, seen by the host

    down = rehearse("down", secvm)
    assert down.returncode == 0, down.stderr
    up = rehearse("up", secvm)
    assert victim.read_text() == "ssh-ed25519 AAAA precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["authorized_keys"]
    assert up.returncode == 0, up.stderr[-3000:]
    # The VM came up with the key pinned before (strict checking, same pin),
    # which the host keeps in the VM's state directory.
    assert (vmdir / "known_hosts").read_text() == pinned
    host_pub = (vmdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert pinned.split()[1:] == host_pub
    assert in_guest(rehearse, "cat /var/lib/rehearse/ssh_host_ed25519_key.pub").split()[:2] == host_pub
    # Once sshd has it, the host key is gone from the share; nothing planted is left.
    assert in_guest(rehearse, "ls -A /tmp/shared") == ""
    assert list((vmdir / "shared").iterdir()) == []


def test_a_hostile_user_ssh_config_does_not_break_rehearse(rehearse: Rehearse, secvm: str, tmp_path: Path) -> None:
    """`Host *  ProxyCommand false` in the user's ~/.ssh/config would make
    every ssh fail. ssh finds ~ in the password database, not in $HOME: the
    command runs in a private mount namespace whose /etc/passwd gives this
    user the test's home."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --mount needs privileges)")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host *\n  ProxyCommand false\n  ForwardAgent yes\n")
    me = str(os.getuid())
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        f = line.split(":")
        if len(f) == 7 and f[2] == me:
            f[5] = str(home)
        lines.append(":".join(f))
    (tmp_path / "passwd").write_text("\n".join(lines) + "\n")

    def hostile(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *("unshare", "--mount", "--propagation", "private"),
                *("sh", "-c", 'mount --bind "$0" /etc/passwd && exec "$@"', str(tmp_path / "passwd")),
                *argv,
            ],
            env=rehearse.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    vmdir = rehearse.state / secvm
    port = rehearse.vm(secvm)["ssh"].split(":")[1]
    # The rig works: a plain ssh under that configuration fails.
    plain = hostile(
        "ssh",
        *("-p", port, "-i", str(vmdir / "id_ed25519"), "-o", "BatchMode=yes", "-o", "ControlPath=none"),
        *("-o", f"UserKnownHostsFile={vmdir / 'known_hosts'}", "-o", f"HostKeyAlias=rehearse-{secvm}"),
        "root@127.0.0.1",
        "true",
    )
    assert plain.returncode != 0
    # No master left from earlier commands: the next one connects anew.
    subprocess.run(
        ["ssh", "-F", "none", "-o", f"ControlPath={vmdir / 'ssh.ctl'}", "-O", "exit", "root@127.0.0.1"],
        capture_output=True,
        check=False,
    )
    result = hostile(sys.executable, "-m", "rehearse", "ssh", secvm, "--", "hostname; echo ${SSH_AUTH_SOCK:-none}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fripon", "none"]  # connected, and no agent forwarded
    gens = hostile(sys.executable, "-m", "rehearse", "generations", secvm)
    assert gens.returncode == 0, gens.stderr


def test_an_isolated_guest_reaches_no_host_service(rehearse: Rehearse, secvm: str) -> None:
    """QEMU's restrict=on: a port on the host's 127.0.0.1 is closed to the
    guest (test_up.py's VM, not isolated, reaches it), while rehearse's SSH
    forward works. Isolation outlives the `down`/`up` above (an `up NAME`
    without --isolate)."""
    assert rehearse.vm(secvm)["isolated"] is True
    assert not reaches_host(rehearse, secvm)
    status = rehearse("status")
    assert any(line.split()[:1] == ["isolated:"] for line in status.stdout.splitlines()), status.stdout


# --- a guest that lies (issue 22) ------------------------------------------

# Root in the guest shadows a program rehearse's guest scripts call with a
# script of its own (a bind mount over the program's file, gone at the next
# boot): `lie PROGRAM WHEN ANSWER` answers ANSWER (printf's %b) when the
# program's arguments contain WHEN, and runs the real program otherwise.
LIE = r"""
lie() {
  real=$(readlink -f "$(command -v "$1")")
  mkdir -p /root/lies/real
  [ -e "/root/lies/real/.${real##*/}" ] || cp "$real" "/root/lies/real/.${real##*/}"
  cat >"/root/lies/$1" <<EOS
#!/bin/sh
n=\${0##*/}
case "\$*" in *"$2"*) [ "\$n" = "$1" ] && { printf '%b' '$3'; exit 0; } ;; esac
[ -e /root/lies/real/\$n ] || ln -s "/root/lies/real/.${real##*/}" /root/lies/real/\$n
exec /root/lies/real/\$n "\$@"
EOS
  chmod +x "/root/lies/$1"
  mount --bind "/root/lies/$1" "$real"
}
"""
ESC = "\\033]0;pwned\\007\\033[2J"  # retitles the terminal, clears the screen


def lie(rehearse: Rehearse, program: str, when: str, answer: str) -> None:
    in_guest(rehearse, LIE + f"lie {program} '{when}' '{answer}'")


def commands(stderr: str) -> list[str]:
    """The command lines rehearse ran (--debug; their first lines)."""
    return [line for line in stderr.splitlines() if line.startswith("$ ")]


def assert_untouched(
    rehearse: Rehearse, state: str, result: subprocess.CompletedProcess[str], codes: tuple[int, ...] = (11,)
) -> None:
    assert result.returncode in codes, result.stderr[-3000:]
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr or "--debug" in result.args  # --debug shows where it was refused
    assert "\x1b" not in result.stderr + result.stdout  # no escape reached the terminal
    assert (rehearse.state / NAME / "state.json").read_text() == state


def refused(rehearse: Rehearse, state: str, result: subprocess.CompletedProcess[str]) -> None:
    assert_untouched(rehearse, state, result)
    assert "answered something that is not" in result.stderr and "nothing was done" in result.stderr


def test_a_guest_that_lies_gets_nothing_from_the_host(rehearse: Rehearse, secvm: str) -> None:
    """The guest's df, nix-store, readlink and systemctl answer what an
    attacker would; every command ends with a clear error (exit 11), no
    answer reaches Nix's argv or the terminal, the state stays as it was and
    the VM keeps (or goes back to) the system it ran."""
    vmdir = rehearse.state / NAME
    system = in_guest(rehearse, "readlink /run/current-system").strip()
    state = (vmdir / "state.json").read_text()
    CONF[0].parent.joinpath("extra.nix").write_text('{ ... }: { environment.etc."lies".text = "1"; }\n')

    # The attack of issue 22: a plugin the guest wrote, offered to the host's
    # Nix as an option on the copy path (deploy --copy asks room.sh).
    in_guest(rehearse, "printf 'not a plugin' >/tmp/shared/evil.so")
    planted = vmdir / "shared" / "evil.so"
    assert planted.exists()
    lie(
        rehearse,
        "df",
        "/nix/store",
        "Filesystem 1-blocks Used Available Capacity Mounted\\nx 1 1 999999999999 1% /\\n",
    )
    lie(rehearse, "nix-store", "--print-invalid", f"--option\\nplugin-files\\n{planted}\\n")
    copy = rehearse("deploy", NAME, "--copy", "--yes", "--debug")
    refused(rehearse, state, copy)
    assert "is not a store path: '--option'" in copy.stderr
    assert "room.sh PATH..." in copy.stderr  # room.sh ran, and was lied to
    nix = [line for line in commands(copy.stderr) if line.startswith("$ nix")]
    assert not any("plugin-files" in line or "--option" in line or str(planted) in line for line in nix), nix
    assert in_guest(rehearse, "readlink /run/current-system").strip() == system

    # What runs, with escape sequences and bytes that are not UTF-8.
    lie(rehearse, "readlink", "/run/current-system", f"{ESC}/nix/store/\\0377\\0376-evil\\n")
    for argv in (("deploy", NAME, "--yes"), ("generations", NAME)):
        result = rehearse(*argv)
        refused(rehearse, state, result)
        assert "\\x1b]0;pwned" in result.stderr
    status = rehearse("status")
    assert status.returncode == 0 and "\x1b" not in status.stdout + status.stderr
    down = rehearse("down", NAME)  # not stopped by the lie: QEMU is not left running
    assert down.returncode == 0, down.stderr
    assert "\x1b" not in down.stderr and rehearse.vm(NAME)["state"] == "stopped"
    assert json.loads((vmdir / "state.json").read_text())["system"] == system
    up = rehearse("up", NAME)  # the lies were bind mounts: gone with the boot
    assert up.returncode == 0, up.stderr[-3000:]

    # Failed units whose names carry escapes: the new system is refused and
    # rolls back at once.
    state = (vmdir / "state.json").read_text()
    lie(rehearse, "systemctl", "--failed", f"{ESC}evil.service loaded failed failed x\\n")
    result = rehearse("deploy", NAME, "--yes")
    # The switch (which asks systemctl too) or rehearse's look refuses it.
    assert_untouched(rehearse, state, result, codes=(4, 11))
    assert "\\x1b]0;pwned" in result.stderr
    deadline = time.monotonic() + 120
    while in_guest(rehearse, "readlink /run/current-system").strip() != system and time.monotonic() < deadline:
        time.sleep(2)
    assert in_guest(rehearse, "readlink /run/current-system").strip() == system
    in_guest(rehearse, "umount /usr/bin/systemctl")
