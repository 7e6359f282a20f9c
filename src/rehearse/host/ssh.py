"""SSH to a VM or to a real server: a Remote value and the argv to reach it.

A real server (`promote`) is reached in the user's own SSH world: their
~/.ssh/config, agent and known_hosts, and NIX_SSHOPTS as nixos-rebuild
honours it; its host key must be known (StrictHostKeyChecking=yes, or
accept-new when the user says so), and rehearse keeps a ControlMaster of
its own for the session. Everything below is about a VM.

Host keys are pinned: rehearse writes the known_hosts file itself before the
first connection, under a HostKeyAlias, so StrictHostKeyChecking=yes holds
from the first connection on and a new port never asks for trust again.
One ControlMaster per VM carries the commands of a session.

No ssh configuration is read (`-F none`: neither ~/.ssh/config nor
/etc/ssh/ssh_config): a user's ForwardAgent, ProxyJump, LocalForward … are
for their servers, not for a VM rehearse made. No agent either.

Through sudo (a real server's non-root user, `promote --sudo`): each
command rehearse runs there goes through `sudo -n`, or, with a password
(`--ask-sudo-password`), through `sudo --prompt= --stdin` as nixos-rebuild-ng
runs it, the password being the first line of the command's stdin — never a
word of a command line. See check_sudo and stdin.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import secrets
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import process

# What ssh says when the server's host key is not the pinned one.
_HOST_KEY_REFUSED = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED")


@dataclass(frozen=True)
class Remote:
    host: str
    port: int  # 0: the user's ssh decides (their config, else 22); a VM's is always given
    user: str  # "": the user's ssh decides
    key: Path | None
    known_hosts: Path | None
    host_key_alias: str | None
    control_path: Path | None = None
    # A real server, in the user's own SSH world (see the top); NIX_SSHOPTS's
    # words; the host key policy; sudo before each command rehearse runs
    # (`sudo -n`, or with sudo_password `sudo --prompt= --stdin`; the
    # password is kept out of repr, hence out of tracebacks and logs).
    own_world: bool = False
    extra_options: tuple[str, ...] = ()
    accept_new_host_key: bool = False
    sudo: bool = False
    sudo_password: str | None = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def describe(self) -> str:
        return self.target + (f":{self.port}" if self.port else "")

    @property
    def who(self) -> str:
        """The other side, as messages about its answers name it: "the VM
        NAME", or the server's address."""
        if self.host_key_alias and not self.own_world:
            return f"the VM {self.host_key_alias.removeprefix('rehearse-')}"
        return self.describe()


# The options of every ssh rehearse runs, also `ssh -O exit`: no
# configuration file, no agent, nothing forwarded, and the pinned
# known_hosts left as rehearse wrote it (no host keys added by the server).
ISOLATION = [
    "-F", "none",
    "-o", "IdentityAgent=none",
    "-o", "ForwardAgent=no",
    "-o", "ForwardX11=no",
    "-o", "ClearAllForwardings=yes",
    "-o", "UpdateHostKeys=no",
]  # fmt: skip


def path_option(path: Path) -> str:
    """A path as the value of an ssh option that expands %-tokens
    (IdentityFile, UserKnownHostsFile, ControlPath): a % of the path is
    doubled, or ssh would read it as a token."""
    return str(path).replace("%", "%%")


def options(remote: Remote, *, master: bool = True, connect_timeout: int = 10) -> list[str]:
    """ssh options, as `-o` words, for nix-copy-closure's NIX_SSHOPTS too."""
    if remote.own_world:
        return _own_world_options(remote, master=master, connect_timeout=connect_timeout)
    assert remote.key is not None and remote.known_hosts is not None and remote.host_key_alias is not None
    opts = [
        *ISOLATION,
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", f"IdentityFile={path_option(remote.key)}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={path_option(remote.known_hosts)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"HostKeyAlias={remote.host_key_alias}",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
        "-p", str(remote.port),
    ]  # fmt: skip
    if remote.control_path is not None and master:
        opts += [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={path_option(remote.control_path)}",
            "-o",
            "ControlPersist=600",
        ]
    else:
        opts += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    return opts


def _own_world_options(remote: Remote, *, master: bool, connect_timeout: int) -> list[str]:
    """A real server's: the user's configuration, agent and known_hosts stay
    in force; only what rehearse must decide is given (options on the command
    line win over ~/.ssh/config): no questions, the host key policy, the
    timeouts and rehearse's own ControlMaster."""
    opts = [
        *remote.extra_options,
        "-o", "BatchMode=yes",
        "-o", f"StrictHostKeyChecking={'accept-new' if remote.accept_new_host_key else 'yes'}",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
    ]  # fmt: skip
    if remote.port:
        opts += ["-p", str(remote.port)]
    if remote.control_path is not None and master:
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={path_option(remote.control_path)}"]
        opts += ["-o", "ControlPersist=600"]
    else:
        opts += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    return opts


def argv(
    remote: Remote,
    command: list[str] | None = None,
    *,
    master: bool = True,
    tty: bool = False,
    connect_timeout: int = 10,
    shell_command: str | None = None,
    forwarding: tuple[str, ...] = (),
) -> list[str]:
    """The ssh command line. Each word of `command` is quoted for the remote
    shell (rehearse's own commands); `shell_command` goes to the remote shell
    as it is (what a user typed, as `ssh HOST WORDS…` does). `forwarding`:
    the user's -L/-R/-D/-N words (`rehearse ssh`), on a connection of their
    own (not rehearse's master), with forwardings no longer cleared."""
    opts = options(remote, master=master and not forwarding, connect_timeout=connect_timeout)
    if forwarding:
        at = opts.index("ClearAllForwardings=yes")
        del opts[at - 1 : at + 1]  # its -o too
    words = ["ssh", *opts, *forwarding]
    if tty:
        words.append("-t")
    words.append(remote.target)
    if command:
        if remote.sudo:
            command = [*_sudo_words(remote), *command]
        words += ["--", " ".join(shlex.quote(c) for c in command)]
    elif shell_command:
        words += ["--", shell_command]
    return words


def run(
    remote: Remote,
    command: list[str],
    *,
    check: bool = True,
    master: bool = True,
    input: str | None = None,
    timeout: float | None = None,
    connect_timeout: int = 10,
) -> subprocess.CompletedProcess[str]:
    result = process.run(
        argv(remote, command, master=master, connect_timeout=connect_timeout),
        check=False,
        input=stdin(remote, input),
        timeout=timeout,
    )
    if result.returncode == 255 and remote.own_world and _HOST_KEY_UNKNOWN.search(result.stderr):
        raise unknown_host_key(remote)
    if result.returncode == 255 and _HOST_KEY_REFUSED.search(result.stderr) and remote.own_world:
        raise RehearseError(
            f"{remote.describe()} did not show the host key your known_hosts holds for it (or none is known): "
            "nothing was sent to it.",
            hint=f"check it as you would for ssh {remote.target}; rehearse never disables host key checking",
        )
    if result.returncode == 255 and _HOST_KEY_REFUSED.search(result.stderr):
        raise RehearseError(
            f"the machine on {remote.host}:{remote.port} did not show the host key rehearse pinned for it "
            f"({remote.host_key_alias}): it may be an impostor, or the VM's key was replaced. "
            "Nothing was sent to it.",
            hint=f"if you changed the VM's host key yourself, `rehearse destroy` and `rehearse up` it again; "
            f"else find out what listens on port {remote.port}",
        )
    if check and result.returncode != 0:
        raise RehearseError(
            f"command failed with exit code {result.returncode}: {' '.join(command)}\n{result.stderr.strip()}"
        )
    return result


# What ssh says when no host key is known for the server (a changed one is
# _HOST_KEY_REFUSED's "REMOTE HOST IDENTIFICATION HAS CHANGED").
_HOST_KEY_UNKNOWN = re.compile(r"No \S+ host key is known for")


def unknown_host_key(remote: Remote) -> RehearseError:
    """A server whose host key the user's known_hosts does not hold: refused,
    with the fingerprints it shows (ssh-keyscan), for the user to check."""
    scan = ["ssh-keyscan", *(["-p", str(remote.port)] if remote.port else []), remote.host]
    keys = process.run(scan, check=False, timeout=20).stdout
    prints = process.run(["ssh-keygen", "-l", "-f", "-"], input=keys, check=False).stdout.strip() if keys else ""
    return RehearseError(
        f"the host key of {remote.describe()} is not in your known_hosts; rehearse does not trust it on first "
        "use. Nothing was sent to it." + (f" It shows:\n{prints}" if prints else ""),
        hint="check the fingerprint against the server's own (ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub "
        "on its console), then add it to known_hosts, or run again with --accept-new-host-key",
    )


def close_master_argv(remote: Remote) -> list[str]:
    assert remote.control_path is not None
    isolation = [] if remote.own_world else ISOLATION
    return ["ssh", *isolation, "-o", f"ControlPath={path_option(remote.control_path)}", "-O", "exit", remote.target]


def close_master(remote: Remote) -> None:
    if remote.control_path is not None and remote.control_path.exists():
        process.run(close_master_argv(remote), check=False)


def generate_key(path: Path, comment: str) -> None:
    """An ed25519 key pair without passphrase, private part 0600."""
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)


def write_known_hosts(path: Path, alias: str, public_key_file: Path) -> None:
    key_type, key_data = public_key_file.read_text().split()[:2]
    path.write_text(f"{alias} {key_type} {key_data}\n")
    path.chmod(0o600)


# --- sudo (a real server's non-root user) -------------------------------------

# With a password, what runs under sudo first reads the password's line and
# the marker's line after it: whichever of the two sudo left. sudo reads the
# password only when it wants one (not under a NOPASSWD rule, nor with
# credentials it cached), a byte at a time, so the rest of stdin (an
# activation's script, which guest/start.sh counts in bytes) reaches the
# command as rehearse wrote it, and the password never does. The marker is
# one per rehearse process, and no secret.
_SUDO_MARK = "rehearse-sudo-" + secrets.token_hex(8)
_SUDO_STDIN = (
    'IFS= read -r l && { [ "$l" = "$0" ] || { IFS= read -r l && [ "$l" = "$0" ]; }; } '
    '|| { echo "rehearse: the input after sudo is out of step" >&2; exit 97; }; unset l; exec "$@"'
)


def _sudo_words(remote: Remote) -> list[str]:
    if remote.sudo_password is None:
        return ["sudo", "-n"]
    return ["sudo", "--prompt=", "--stdin", "sh", "-c", _SUDO_STDIN, _SUDO_MARK]


def stdin(remote: Remote, text: str | None) -> str | None:
    """What a command run over `argv(remote, …)` gets on stdin: `text`, and
    with a sudo password that password's line and the marker's first."""
    if remote.sudo and remote.sudo_password is not None:
        return f"{remote.sudo_password}\n{_SUDO_MARK}\n{text or ''}"
    return text


def ask_sudo_password(where: str) -> str:
    """The server's sudo password, asked once on the controlling terminal as
    nixos-rebuild-ng asks it ("[sudo] password for HOST: ", not echoed);
    never read from stdin, a file or the environment."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise RehearseError(
            "--ask-sudo-password asks for the password on a terminal, and rehearse runs without one: nothing was sent.",
            hint="run it from a terminal; without one, the server's user needs sudo without a password (--sudo)",
            exit_code=ExitCode.USAGE,
        ) from None
    output.live_end()
    try:
        return getpass.getpass(f"[sudo] password for {where}: ")
    except EOFError:
        raise RehearseError("no sudo password was given: nothing was sent.", exit_code=ExitCode.USAGE) from None


# sudo's words, in the C locale (check_sudo asks for it).
_SUDO_WANTS_PASSWORD = re.compile(r"a password is required")
_SUDO_WRONG_PASSWORD = re.compile(r"incorrect password attempt|no password was provided")
_SUDO_NOT_ALLOWED = re.compile(r"is not in the sudoers file|is not allowed to (?:execute|run sudo)|may not run sudo")


def check_sudo(remote: Remote) -> None:
    """Before anything is copied or activated: may the server's user run
    commands through sudo as `remote` does (`sudo -n`; or with its password,
    which `sudo -k` checks even if sudo cached credentials)? One round trip,
    as that user. A password that sudo does not want there now (a NOPASSWD
    rule) is kept all the same: the new system may want it."""
    if not remote.sudo:
        return
    plain = dataclasses.replace(remote, sudo=False, sudo_password=None)
    asked = remote.sudo_password is not None
    script = "LC_ALL=C exec sudo " + ("-k --prompt= --stdin true" if asked else "-n true")
    r = run(plain, ["sh", "-c", script], check=False, input=f"{remote.sudo_password}\n" if asked else None)
    where = remote.describe()
    err = r.stderr.strip()
    if r.returncode == 0:
        return
    nothing = "nothing was copied or activated."
    if r.returncode == 255:
        raise RehearseError(f"could not reach {where} over SSH: {err}")
    if r.returncode == 127:
        raise RehearseError(
            f"{where} has no sudo: {nothing}", hint="install it (NixOS: security.sudo.enable), or promote as root"
        )
    if _SUDO_NOT_ALLOWED.search(err):
        raise RehearseError(
            f"{where}: the user may not use sudo there: {nothing}\n{err}",
            hint='on NixOS: users.users.USER.extraGroups = [ "wheel" ], or a rule in security.sudo.extraRules',
        )
    if not asked and _SUDO_WANTS_PASSWORD.search(err):
        raise RehearseError(
            f"sudo on {where} wants a password, and --sudo runs `sudo -n`, which never asks: {nothing}",
            hint="run again with --ask-sudo-password, or let the user use sudo without one "
            "(NixOS: security.sudo.wheelNeedsPassword = false)",
            exit_code=ExitCode.USAGE,
        )
    if asked and _SUDO_WRONG_PASSWORD.search(err):
        raise RehearseError(
            f"sudo on {where} refused the password: {nothing}",
            hint="run again, with the password of that user on the server",
        )
    raise RehearseError(f"sudo on {where} failed (exit {r.returncode}): {nothing}\n{err}")
