"""Deploy a configuration into a running VM: build → plan → push → activate
→ verify → (roll back). Everything after the build goes through a `Remote`,
so the same steps can later serve a real server.

Activation runs in the guest as a transient systemd unit (guest/activate.sh)
that survives a dropped SSH session and rolls the system back by itself
unless rehearse confirms the new one over a fresh SSH connection in time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import secrets
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from rehearse import nix, output, plan, process, ssh
from rehearse.config import ACTIVATION_TIMEOUT
from rehearse.config import Check as Check  # parsed and checked with rehearse.toml; importable from here
from rehearse.errors import ExitCode, RehearseError

# The plan's values, importable from here as before they moved to plan.py.
from rehearse.plan import ClosureDiff as ClosureDiff
from rehearse.plan import closure_diff as closure_diff
from rehearse.plan import human as human
from rehearse.plan import split_name as split_name
from rehearse.plan import store_name as store_name

if TYPE_CHECKING:
    from rehearse.state import VMDir, VMState

PROFILE = "/nix/var/nix/profiles/system"
RUN_DIR = "/run/rehearse"


# --- push -----------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    registered: int  # made valid in the guest without copying (host store shared)
    copied: int  # given to nix-copy-closure, which copies those the guest lacks
    # Registered with the activation (guest/start.sh), one round trip less;
    # a path the guest cannot see then is copied before the activation starts.
    pending: list[str] | None = None


# One round trip: when the guest sees every path through the host store it
# mounts (NixOS VMs mount the host /nix/store read-only at /nix/.ro-store,
# under an overlay on /nix/store), it keeps the host's registration data
# (nix-store --dump-db) for the activation, which loads it once the verdict
# is out (guest/activate.sh: starting Nix in the guest is off the deploy's
# path); else it names the paths it cannot see. The paths are those of the
# new closure that the running system's closure lacks (computed on the host:
# no question to the guest's Nix database; registering a path that is
# already valid again changes nothing).
_PUSH = r"""
set -e
missing=0
shared=no
if grep -q ' /nix/.ro-store ' /proc/mounts; then shared=yes; fi
for p in "$@"; do
  if [ $shared = yes ] && [ -e "/nix/.ro-store/${p#/nix/store/}" ] && [ -e "$p" ]; then :; else
    echo "missing $p"; missing=1
  fi
done
if [ $missing = 0 ]; then
  umask 077; mkdir -p /run/rehearse; cat >> /run/rehearse/registration; echo registered
else cat >/dev/null; fi
"""


def push(remote: ssh.Remote, paths: list[str], *, force_copy: bool) -> Pushed:
    """Make `paths` (what the new closure adds to the running one) valid in
    the guest's store: register them when the guest sees them through the
    shared host store, else copy them with nix-copy-closure over the VM's
    SSH master (which copies only what the guest lacks)."""
    if not paths:
        return Pushed(0, 0)
    if force_copy:
        copy_closure(remote, paths)
        return Pushed(0, len(paths))
    out = ssh.run(remote, ["sh", "-c", _PUSH, "push", *paths], input=nix.dump_db(paths)).stdout.splitlines()
    if "registered" in out:
        return Pushed(len(paths), 0)
    for line in out:
        output.debug(f"not visible in the guest: {line.removeprefix('missing ')}")
    copy_closure(remote, paths)
    return Pushed(0, len(paths))


# What the guest's store lacks of PATHS, and the room left for it (the
# writable layer of /nix/store: a tmpfs in a NixOS VM by default).
_ROOM = (
    'df -P -B1 /nix/store | tail -n 1 | (read _ _ _ avail _; echo "$avail"); '
    'nix-store --check-validity --print-invalid "$@"'
)


def copy_closure(remote: ssh.Remote, paths: list[str]) -> None:
    """Copy with nix-copy-closure over the VM's SSH master, after checking
    that the guest's store has room for what it lacks: a full disk must
    refuse the deploy before anything changes, not fail half-way."""
    out = ssh.run(remote, ["sh", "-c", _ROOM, "room", *paths]).stdout.split()
    avail, missing = int(out[0]), out[1:]
    needed = sum(nix.sizes(missing).values())
    # Unpacked NARs take about their size; leave a margin for the database.
    if needed + 16 * 1024 * 1024 > avail:
        raise RehearseError(
            f"the VM's store has {human(avail)} free; copying the {len(missing)} paths it lacks needs "
            f"{human(needed)} (+16 MiB of margin). Nothing was changed.",
            hint="give the VM's store more room (virtualisation.memorySize, or virtualisation.diskSize with "
            "virtualisation.writableStoreUseTmpfs = false), or deploy without --copy so the paths are "
            "registered from the host store the VM mounts",
        )
    if not missing:
        return
    opts = " ".join(ssh.options(remote))
    process.run(["nix-copy-closure", "--to", remote.target, *missing], env={"NIX_SSHOPTS": opts})


# --- the server's own sshd ----------------------------------------------------

# Why the new system would lock the server out (None: it would not); runs
# after a good switch, while the guest waits for rehearse's verdict.
ServerCheck = Callable[[], "str | None"]

# How long the server's sshd may take to greet after a switch (a restarted
# sshd, a socket unit coming back) before its port counts as closed.
SERVER_SSH_GRACE = 4.0


def server_ssh_check(
    vmdir: VMDir, state: VMState, remote: ssh.Remote, current: str, system: Path
) -> ServerCheck | None:
    """The check that the new system keeps the server's own SSH open
    (server_ssh.py), or None when neither system runs the server's sshd.
    Ports the VM does not forward yet are forwarded now (QMP hostfwd_add).
    The server's host keys are read through the management channel after
    the switch and pinned, so even this check never trusts on first use."""
    from rehearse import server_ssh, vm

    public = vmdir.file("id_ed25519.pub").read_text()
    old = server_ssh.read(Path(current), public) if current else server_ssh.Sshd(enabled=False)
    new = server_ssh.read(system, public)
    if not old.enabled and not new.enabled:
        return None
    if not new.enabled:
        return lambda: (
            "the server's own sshd is off in the new configuration (services.openssh.enable): "
            "the real server could not be reached over SSH"
        )
    forwards = {int(f["guest"]): int(f["host"]) for f in state.forwards if f.get("proto", "tcp") == "tcp"}
    forwards |= {int(f["guest"]): int(f["host"]) for f in state.server_ssh}
    for port in new.ports:
        if port not in forwards:
            host = vm.pick_port(2200 + port % 100, taken=set(forwards.values()) | {state.ssh_port or 0})
            vm.add_forward(vmdir.socket("qmp.sock"), vm.Forward(host, port))
            forwards[port] = host
            state.server_ssh.append({"host": host, "guest": port})
            vmdir.save(state)
            output.info(f"  the server's sshd port {port} is now forwarded from 127.0.0.1:{host}")
    known_hosts = vmdir.file("server_known_hosts")
    base = ssh.Remote("127.0.0.1", 0, "root", vmdir.file("id_ed25519"), known_hosts, f"rehearse-{vmdir.name}-server")
    keys = " ".join(shlex.quote(f"{k}.pub") for k in server_ssh.host_keys(system))

    def pin() -> None:
        shown = ssh.run(remote, ["sh", "-c", f"cat {keys} 2>/dev/null; true"], check=False).stdout
        lines = [f"{base.host_key_alias} {' '.join(k.split()[:2])}" for k in shown.splitlines() if len(k.split()) >= 2]
        known_hosts.write_text("".join(f"{line}\n" for line in lines))
        known_hosts.chmod(0o600)

    def check() -> str | None:
        # The keys pinned by an earlier check are tried first (a round trip
        # less); read again when the server's sshd shows another.
        pinned = known_hosts.exists() and known_hosts.stat().st_size > 0
        if not pinned:
            pin()
        results = server_ssh.check(base, new, forwards, grace=SERVER_SSH_GRACE)
        if pinned and any(not r.ok and "Host key verification failed" in r.detail for r in results):
            pin()
            results = server_ssh.check(base, new, forwards, grace=SERVER_SSH_GRACE)
        bad = [r for r in results if not r.ok]
        if not bad:
            for r in results:
                output.info(f"  the server's sshd on port {r.port}: {r.detail}")
            return None
        why = "; ".join(f"port {r.port}: {r.detail}" for r in bad)
        if not old.enabled:
            output.warn(f"the server's sshd, new in this configuration, does not let anyone in: {why}")
            return None
        return f"the server's own SSH would lock you out ({why})"

    return check


# --- activate -------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    switch_rc: int | None
    result: str  # "confirmed" or "rolled-back REASON RC"
    failed_units: list[str]
    generation: int | None = None  # the profile generation the activation made or switched to
    after_switch: float | None = None  # seconds from the switch's end to the guest's verdict

    def report(self) -> dict[str, Any]:
        """The outcome's fields of a --json report (deploy, promote)."""
        return {
            "generation": self.generation,
            "switch_rc": self.switch_rc,
            "failed_units": self.failed_units,
            "result": "confirmed" if self.ok else "rolled-back",
            "reason": None if self.ok else self.result.removeprefix("rolled-back "),
        }


@dataclass
class _Activation:
    """What the guest's log told so far. Marker lines carry a per-activation
    nonce (guest/activate.sh): output of the switch cannot pass for one."""

    nonce: str
    rc: int | None = None
    result: str | None = None
    generation: int | None = None
    lines: list[str] = field(default_factory=list)
    seen: int = 0  # log lines read so far (a reconnection reads the log again)
    verified: bool = False  # the health check after a successful switch has run
    switched_at: float | None = None  # time.monotonic() when the switch's exit code came
    failed: list[str] | None = None  # units failed just after a good switch (the guest's first look)

    def feed(self, line: str) -> str | None:
        """Take one log line; returns the marker's key when it was one."""
        self.seen += 1
        prefix = f"@@rehearse-{self.nonce} "
        if not line.startswith(prefix):
            self.lines.append(line)
            output.info(output.printable(line))
            return None
        key, _, value = line[len(prefix) :].partition("=")
        if key == "rc":
            self.rc = int(value)
            self.switched_at = time.monotonic()
        elif key == "generation":
            self.generation = int(value or 0) or None
        elif key == "failed":
            self.failed = value.split()
        elif key == "result":
            self.result = value
        return key


class _NotVisible(Exception):
    """start.sh found new paths the guest does not see through the host
    store: nothing was started."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"{len(paths)} paths not visible in the guest")
        self.paths = paths


def activate(
    remote: ssh.Remote,
    system: Path,
    confirm_timeout: float,
    checks: list[Check],
    generation: int | None = None,
    activation_timeout: float = ACTIVATION_TIMEOUT,
    server_check: ServerCheck | None = None,
    fresh_login: bool = True,
    register: list[str] | None = None,
    action: str = "test",
) -> Outcome:
    """Set the profile and switch, detached in the guest; stream its output;
    verify and confirm, or let the guest roll back. One SSH session starts
    the activation (guest/start.sh), carries the registration of the new
    paths (`register`, seen through the host store: raises _NotVisible when
    the guest does not see one), follows the log and takes rehearse's word.
    If the session drops, reconnect and carry on from the guest's log."""
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    d = f"{RUN_DIR}/{run_id}"
    st = _Activation(nonce=secrets.token_hex(8))
    script = (resources.files("rehearse") / "guest" / "activate.sh").read_text()
    start = (resources.files("rehearse") / "guest" / "start.sh").read_text()
    registration = nix.dump_db(register) if register else ""
    args = [d, st.nonce, str(system), str(math.ceil(confirm_timeout)), str(math.ceil(activation_timeout)), action]
    if generation is not None:
        args.append(str(generation))
    argv = [
        "sh", "-c", start, "start", d, st.nonce,
        str(len(script.encode())), str(len(registration.encode())), " ".join(args),
        *(register or []),
    ]  # fmt: skip
    missing: list[str] = []
    stdin = ssh.stdin(remote, script + registration)  # a sudo password's line first (ssh.py)
    with process.stream(ssh.argv(remote, argv), input=stdin, keep_stdin=True) as stream:
        for line in stream:
            if line.startswith(f"@@rehearse-{st.nonce} missing "):
                missing.append(line.split(" ", 2)[2])
                continue
            key = st.feed(line)
            if (
                key == "rc" and _switched(remote, d, st, checks, confirm_timeout, server_check, fresh_login, stream)
            ) or st.result is not None:
                break
    if missing:
        raise _NotVisible(missing)
    if st.result is None:
        _recover(remote, d, st, checks, confirm_timeout, activation_timeout, server_check)
    assert st.result is not None
    return Outcome(
        ok=st.result == "confirmed",
        switch_rc=st.rc,
        result=st.result,
        failed_units=st.failed if st.failed else _failed_units("\n".join(st.lines)),
        generation=st.generation,
        after_switch=round(time.monotonic() - st.switched_at, 2) if st.switched_at is not None else None,
    )


def _switched(
    remote: ssh.Remote,
    d: str,
    st: _Activation,
    checks: list[Check],
    confirm_timeout: float,
    server_check: ServerCheck | None = None,
    fresh_login: bool = True,
    line: process.Stream | None = None,
) -> bool:
    """The switch ended: verify and confirm a good one. True when the guest's
    verdict is known. `line`: the session that started the activation, which
    passes rehearse's word on (guest/start.sh); without it, new sessions do."""
    if st.rc != 0 or st.verified:
        return st.result is not None
    st.verified = True
    verdict, result = verify_and_confirm(
        remote, d, checks, confirm_timeout, server_check, fresh_login, line=line, failed=st.failed
    )
    if result is not None:
        st.result = result
        return True
    if verdict is not None:
        output.warn(f"check failed: {verdict}; rolling back")
        said = " ".join(verdict.split())
        if line is None or not line.send(f"reject {said}\n"):
            ssh.run(
                remote,
                ["sh", "-c", f"echo {shlex.quote(said)} > {d}/reject; kill -USR2 $(cat {d}/pid)"],
                check=False,
            )
    return False


def _recover(
    remote: ssh.Remote,
    d: str,
    st: _Activation,
    checks: list[Check],
    confirm_timeout: float,
    activation_timeout: float,
    server_check: ServerCheck | None = None,
) -> None:
    """The session following the activation dropped. The activation goes on
    under the guest's PID 1: read its log again over new connections; a
    switch that ended well is verified and confirmed (not left to roll back),
    and a configuration that cut SSH off rolls back, after which SSH answers."""
    output.warn("the SSH session to the VM dropped during the activation; reconnecting")
    deadline = time.monotonic() + activation_timeout + confirm_timeout + 120
    said = False
    while time.monotonic() < deadline:
        r = ssh.run(remote, ["cat", f"{d}/log"], check=False, master=False, connect_timeout=5, timeout=30)
        if r.returncode == 0:
            for line in r.stdout.splitlines()[st.seen :]:
                if st.feed(line) == "rc" and _switched(remote, d, st, checks, confirm_timeout, server_check):
                    return
            if st.result is not None or (
                st.rc == 0 and _switched(remote, d, st, checks, confirm_timeout, server_check)
            ):
                return
        elif r.returncode == 255 and not said:
            output.warn(f"the VM does not answer SSH; waiting for it to roll back (up to {confirm_timeout:.0f} s)")
            said = True
        time.sleep(1)
    raise RehearseError(
        "the VM gave no verdict on the activation in time.",
        hint="look at `rehearse console` and `rehearse generations`; the VM may need `rehearse rollback`",
    )


def settle(remote: ssh.Remote, timeout: float, *, quiet: bool = False) -> tuple[str, list[str]]:
    """Settle what an interrupted deploy left pending in the guest (guest/
    settle.sh: it is rolled back), then return the system the guest runs —
    the one to plan against — and a line per activation settled (said here
    unless `quiet`: _say_settled says them). One round trip when nothing is
    pending."""
    script = (resources.files("rehearse") / "guest" / "settle.sh").read_text()
    out = ssh.run(remote, ["sh", "-c", script, "settle", RUN_DIR, str(math.ceil(timeout))], timeout=timeout + 60)
    current = ""
    settled = []
    for line in out.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "settled":
            run_id, _, verdict = rest.partition(" ")
            settled.append(
                f"an earlier activation ({run_id}) still waited for its verdict: its deployer was interrupted. "
                f"It was rolled back first ({verdict})."
            )
        elif word == "current":
            current = rest.strip()
    if not quiet:
        _say_settled(settled)
    return current, settled


def _say_settled(settled: list[str]) -> None:
    for line in settled:
        output.warn(line)


def _failed_units(text: str) -> list[str]:
    m = re.search(r"the following units failed: (.+)", text)
    return [u.strip() for u in m.group(1).split(",")] if m else []


# --- checks ---------------------------------------------------------------


def verify_and_confirm(
    remote: ssh.Remote,
    d: str,
    checks: list[Check],
    budget: float,
    server_check: ServerCheck | None = None,
    fresh_login: bool = True,
    line: process.Stream | None = None,
    failed: list[str] | None = None,
) -> tuple[str | None, str | None]:
    """Confirm the new system to the guest when it is healthy. Returns (why
    not, the guest's result if already known).

    rehearse must still reach the VM anew: a ControlMaster session opened
    before the switch proves nothing about a restarted sshd (a deploy-rs
    lesson). When the switch touched rehearse's management sshd
    (fresh_login), a new login through it must work; when it left it
    running as it was, a new connection that gets its greeting proves it
    still listens (a key exchange less: about a second of an emulated
    guest's CPU). The check of the server's own sshd (server_ssh.py) runs
    meanwhile: its fresh logins are the deploy-rs lesson for the server.

    With `line` (the session that started the activation, guest/start.sh)
    and `failed` (the units the guest found failed after the switch), the
    word goes over that session and the guest's verdict comes in its log
    (None here). Without them (that session dropped) the look and the word
    go over new sessions."""
    streaming = line is not None and failed is not None
    waits = bool(checks) or server_check is not None or streaming
    look = (
        "failed=$(systemctl list-units --failed --plain --no-legend --full | awk '{print $1}' | tr '\\n' ' '); "
        'if [ -n "$failed" ]; then echo "failed units: $failed"; exit 0; fi; '
        + ("echo healthy" if waits else _CONFIRM.format(d=d))
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        server = pool.submit(server_check) if server_check is not None else None
        if streaming:
            reached = (not fresh_login and _greets(remote)) or ssh.run(
                remote, ["true"], master=False, check=False, connect_timeout=10, timeout=60
            ).returncode == 0
            out = "failed units: " + " ".join(failed or []) if failed else "healthy"
        else:
            fresh = ssh.run(
                remote,
                ["sh", "-c", look],
                master=not fresh_login and _greets(remote),
                check=False,
                connect_timeout=10,
                timeout=60,
            )
            reached, out = fresh.returncode == 0, fresh.stdout.strip()
        server_verdict = server.result() if server is not None else None
    if not reached:
        output.warn("a new SSH connection to the VM failed; the VM rolls back by itself unless it is confirmed")
        return None, None
    if not out.startswith("healthy"):
        return out, None
    known = out[len("healthy") :].strip() or None
    if server_verdict is not None:
        return server_verdict, None
    deadline = time.monotonic() + max(5.0, budget - 15)
    for check in checks:
        why = run_check(remote, check, deadline)
        if why is not None:
            return why, None
    if line is not None and line.send("confirm\n"):
        return None, None  # the guest's verdict follows in its log
    if waits:
        confirmed = ssh.run(remote, ["sh", "-c", _CONFIRM.format(d=d)], check=False).stdout.strip()
        known = confirmed[len("healthy") :].strip() or None
    return None, known


def _greets(remote: ssh.Remote) -> bool:
    """Whether the management sshd answers a new connection with its SSH
    greeting (through the same forward and firewall as any login)."""
    from rehearse import vm

    return vm.ssh_banner(remote.port, timeout=5.0)


# Confirm (SIGUSR1 to the activation script, again if it came too early) and
# read the guest's result in the same session.
_CONFIRM = (
    "i=0; kill -USR1 $(cat {d}/pid); "
    "while [ ! -s {d}/result ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); "
    "[ $((i % 10)) = 0 ] && kill -USR1 $(cat {d}/pid) 2>/dev/null; done; "
    'echo "healthy $(cat {d}/result 2>/dev/null)"'
)


# How long one try of a `cmd` check may take: a check is a quick probe, and a
# hung one must not use up the time the VM waits for confirmation.
CMD_TRY_TIMEOUT = 30.0

# Runs a `cmd` check under the guest's own `timeout` (coreutils), when it has
# one, so a try that takes too long ends in the VM too instead of piling up
# there while rehearse tries again; the host's limit, a little longer, stays
# the one that counts when the connection hangs.
_GUEST_TIMEOUT = 'if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$1" sh -c "$2"; fi; exec sh -c "$2"'


def run_check(remote: ssh.Remote, check: Check, deadline: float) -> str | None:
    """Try `check` until it passes (None) or `deadline` (time.monotonic())
    has passed; then why its last try failed. A try that fails in any way,
    including one that runs out of time, is tried again."""
    import http.client
    import socket
    import urllib.request

    last = ""
    while True:
        try:
            if check.kind == "cmd":
                limit = math.ceil(min(CMD_TRY_TIMEOUT, max(5.0, deadline - time.monotonic())))
                started = time.monotonic()
                r = ssh.run(
                    remote,
                    ["sh", "-c", _GUEST_TIMEOUT, "check", str(limit), check.target],
                    check=False,
                    timeout=limit + 10,
                )
                if r.returncode == 0:
                    return None
                # Killed by the host's limit, or by the guest's `timeout` (124, or
                # 137 after its SIGKILL) once the limit had passed.
                guest_limit = r.returncode in (124, 137) and time.monotonic() - started >= limit
                if (isinstance(r, process.Completed) and r.timed_out) or guest_limit:
                    last = f"`{check.target}` did not finish within {limit} s"
                else:
                    last = f"`{check.target}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}"
            elif check.kind == "tcp":
                # A VM's check names a forwarded port; promote's, HOST:PORT on the server.
                host, _, port = check.target.rpartition(":")
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
                    return None
            else:
                # The URL reaches the VM through a port forwarded on this
                # machine: no proxy (http_proxy …) may answer in its place.
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(check.target, timeout=5) as resp:
                    if 200 <= resp.status < 300:
                        return None
                    last = f"{check.target} answered {resp.status}"
        # http.client's errors are not all OSErrors: something that does not
        # speak HTTP on the port raises BadStatusLine.
        except (OSError, http.client.HTTPException) as e:
            last = f"{check.kind} {check.target}: {str(e) or type(e).__name__}"
        if time.monotonic() > deadline:
            return last
        time.sleep(2)


# --- history --------------------------------------------------------------


def record(history: Path, entry: dict[str, Any]) -> None:
    from rehearse.state import write_durably

    entries = load_history(history, keep_broken=True)
    entries.append(entry)
    write_durably(history, json.dumps(entries, indent=1) + "\n")


def load_history(history: Path, *, keep_broken: bool = False) -> list[dict[str, Any]]:
    """The deploy history; a damaged file is set aside (keep_broken: renamed
    to deploys.json.broken-TIME, so a new entry does not overwrite it) and
    counts as empty — the history is a record, never needed to deploy."""
    try:
        data = json.loads(history.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        data = e
    if isinstance(data, list) and all(isinstance(h, dict) for h in data):
        return data
    output.warn(f"{history} is damaged ({data if isinstance(data, Exception) else 'not a list of entries'})")
    if keep_broken:
        aside = history.with_name(f"{history.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        history.rename(aside)
        output.warn(f"kept it as {aside}; the history starts again")
    return []


# --- the commands ---------------------------------------------------------


@dataclass(frozen=True)
class DeployRequest:
    name: str
    source: nix.Source | None  # None: the configuration recorded at `up`
    dry_run: bool
    yes: bool
    force_copy: bool
    confirm_timeout: float
    checks: tuple[Check, ...]
    include: tuple[str, ...] = ()  # -I entries; with source None they replace the recorded ones
    verbose: bool = False
    activation_timeout: float = ACTIVATION_TIMEOUT  # seconds switch-to-configuration may take in the guest
    ssh_check: bool = True  # check the server's own sshd after the switch (server_ssh.py)


class Report(TypedDict, total=False):
    """The --json document of `deploy` and `rollback`."""

    name: str
    action: str  # "deploy" | "rollback"
    result: str  # "confirmed" | "unchanged" | "dry-run" | "declined" | "rolled-back" | "error"
    exit_code: int
    source: str
    old_system: str | None
    new_system: str
    generation: int | None
    switch_rc: int | None
    failed_units: list[str]
    reason: str | None
    server_failed_assertions: list[str]  # what the server's own system would refuse (the VM's did not)
    durations: dict[str, float]
    store: dict[str, int]  # registered (no copy), copied
    plan: dict[str, Any]
    error: str
    hint: str | None


def run_deploy(req: DeployRequest) -> Report:
    """build → plan → push → activate → verify (the guest rolls back unless
    confirmed). Returns the outcome; a rolled-back deploy raises, with it."""
    from rehearse import lifecycle
    from rehearse.config import merge_include
    from rehearse.state import VMDir

    vmdir = VMDir(req.name)
    with vmdir.locked("rehearse deploy"):
        state, remote = lifecycle.running(vmdir)
        source = req.source
        if source is None:
            recorded = nix.Source.from_json(state.source)
            source = dataclasses.replace(recorded, include=merge_include(recorded.include, list(req.include)))
        report: Report = {"name": req.name, "action": "deploy", "source": source.describe(), "durations": {}}
        times = report["durations"]

        t = time.monotonic()
        output.step(f"building {source.describe()}")
        with ThreadPoolExecutor(max_workers=2) as pool:
            # Beside the VM's build: the server's own system, evaluated; and
            # the guest, settled (what an interrupted deploy left pending is
            # rolled back, as it would be at its timeout) and asked what it runs.
            server = pool.submit(nix.server_eval, source)
            settling = pool.submit(settle, remote, req.activation_timeout, quiet=True)
            system, runner = nix.build(source, vmdir.file("settings.json"), ["toplevel", "vm"], vmdir.file("next"))
            server_eval = server.result()
            failed_on_server = server_eval.failed_assertions
            current, settled = settling.result()
        times["build"] = round(time.monotonic() - t, 2)
        _say_settled(settled)
        if failed_on_server:
            report["server_failed_assertions"] = failed_on_server
            output.warn(
                "the server itself could not build this configuration (the VM can: its variant differs); "
                "Failed assertions:\n" + "".join(f"- {m}\n" for m in failed_on_server).rstrip()
            )
        lifecycle.reconcile(vmdir, state, current)
        report.update(
            {
                "old_system": current or None,
                "new_system": str(system),
            }
        )
        if str(system) == current:
            output.info(f"{req.name} already runs {system}: nothing to deploy")
            return {**report, "result": "unchanged", "exit_code": ExitCode.OK}

        t = time.monotonic()
        diff = closure_diff(Path(current) if current else None, system)
        pushed, dry = _push_and_dry_activate(remote, system, diff.added_paths, req, current)
        times["push"] = round(time.monotonic() - t, 2)
        report["store"] = {"registered": pushed.registered, "copied": pushed.copied}
        report["plan"] = _show_plan(req, current, system, diff, pushed, dry)
        if dry.returncode != 0:
            raise RehearseError(
                f"switch-to-configuration dry-activate failed (exit {dry.returncode}):\n{dry.stderr}",
                hint="with --dry-run the VM must see the new system through the host store it mounts"
                if req.dry_run
                else None,
                report={**report, "result": "error"},
            )
        if req.dry_run:
            output.info("dry run: nothing activated")
            return {**report, "result": "dry-run", "exit_code": ExitCode.OK}
        if not req.yes and sys.stdin.isatty():
            answer = output.ask("activate it? [y/N]")
            if answer.strip().lower() not in ("y", "yes"):
                output.info("not activated; the VM is unchanged")
                return {**report, "result": "declined", "exit_code": ExitCode.DECLINED}

        server_check = server_ssh_check(vmdir, state, remote, current, system) if req.ssh_check else None
        t = time.monotonic()
        output.step(f"activating on {req.name}")
        # A switch that restarts rehearse's own sshd is verified by a new login through it.
        units = report["plan"].get("units") or {}
        touched = {u for k in ("stop", "restart", "start") for u in units.get(k, [])}
        run = functools.partial(
            activate,
            remote,
            system,
            req.confirm_timeout,
            list(req.checks),
            activation_timeout=req.activation_timeout,
            server_check=server_check,
            fresh_login=not units or "rehearse-sshd.service" in touched,
        )
        try:
            outcome = run(register=pushed.pending)
        except _NotVisible as e:
            # The guest does not see them through the host store: copy them.
            for path in e.paths:
                output.debug(f"not visible in the guest: {path}")
            output.info(f"  store: the VM does not see {len(e.paths)} new paths through the host store; copying")
            copy_closure(remote, diff.added_paths)
            report["store"] = {"registered": 0, "copied": len(diff.added_paths)}
            outcome = run()
        times["activate"] = round(time.monotonic() - t, 2)
        if outcome.after_switch is not None:
            times["after_switch"] = outcome.after_switch
        report.update(outcome.report())  # type: ignore[typeddict-item]  # the keys are Report's
        record(vmdir.file("deploys.json"), _history_entry(report, outcome))
        if outcome.result.startswith("reboot-required"):
            return _reboot_required(req, vmdir, state, system, runner, source, report)
        if outcome.ok:
            _adopt(vmdir, state, system, runner, source)
            from rehearse import promote

            passed = ["no failed units", "a new login through rehearse's channel"]
            passed += ["the server's own sshd"] if server_check is not None else []
            passed += [f"{c.kind} {c.target}" for c in req.checks]
            promote.record_rehearsal(vmdir, server_eval.drv_path, str(system), "deploy", passed)
            output.success(
                f"{req.name} runs {store_name(str(system))} (build {times['build']:.1f} s, "
                f"push {times['push']:.1f} s, activate {times['activate']:.1f} s)"
            )
            return {**report, "exit_code": ExitCode.OK}
        reason = re.sub(r" -?\d+$", "", outcome.result.removeprefix("rolled-back "))  # without the rollback's rc
        if outcome.failed_units:
            reason += " — failed units: " + ", ".join(outcome.failed_units)
        raise RehearseError(
            f"the new configuration was rolled back; {req.name} runs {store_name(current)} again ({reason}).",
            hint=f"`rehearse console {req.name}` and the output above show what went wrong",
            exit_code=ExitCode.ROLLED_BACK,
            report=dict(report),
        )


def _reboot_required(
    req: DeployRequest,
    vmdir: VMDir,
    state: VMState,
    system: Path,
    runner: Path,
    source: nix.Source,
    report: Report,
) -> Report:
    """switch-to-configuration exited 100: the new system changes the init
    interface and takes effect only at the next boot. Nothing was activated
    and nothing is rolled back: the VM's profile holds the new system, and
    the next start boots it (its runner is recorded)."""
    from rehearse import lifecycle

    state.runners[str(system)] = str(runner)
    state.runner = str(runner)
    lifecycle.keep_runner(vmdir, runner)
    vmdir.save(state)
    report.update({"result": "reboot-required", "reason": "switch-to-configuration exited 100"})
    output.warn(
        f"reboot required: {store_name(str(system))} changes the init interface (switch-to-configuration exited 100). "
        f"{req.name} still runs {store_name(report.get('old_system') or '')}; its next start boots the new system."
    )
    restart = f"rehearse down {req.name} && rehearse up {req.name}"
    if (
        not req.yes
        and sys.stdin.isatty()
        and output.ask(f"restart {req.name} now? [y/N]").strip().lower() in ("y", "yes")
    ):
        lifecycle.restart(vmdir)
        return {**report, "result": "rebooted", "exit_code": ExitCode.OK}
    output.info(f"to boot it: {restart}")
    return {**report, "source": source.describe(), "exit_code": ExitCode.REBOOT_REQUIRED}


def _push_and_dry_activate(
    remote: ssh.Remote, system: Path, paths: list[str], req: DeployRequest, current: str = ""
) -> tuple[Pushed, subprocess.CompletedProcess[str]]:
    """Push the new paths and plan the switch. The host plans it from the
    running and the new system's unit files (plan.units_between), handed on
    as the lines dry-activate would print; only when the running system is
    not on the host the guest plans it, with dry-activate while the push runs
    (it needs only the new system's files, which a VM sharing the host store
    already sees). A dry run changes nothing in the VM, not even its store."""
    dry_argv = [f"{system}/bin/switch-to-configuration", "dry-activate"]
    units = plan.units_between(Path(current), system) if current else None
    if units is not None:
        if req.dry_run:
            pushed = Pushed(0, 0)
        elif paths and not req.force_copy:
            pushed = Pushed(len(paths), 0, pending=paths)
        else:
            pushed = push(remote, paths, force_copy=req.force_copy)
        return pushed, subprocess.CompletedProcess(["host plan", current], 0, "", plan.dry_activate_text(units))
    output.debug(f"{current or 'the running system'} is not on the host: the guest plans the switch")
    if req.dry_run:
        return Pushed(0, 0), ssh.run(remote, dry_argv, check=False)
    with ThreadPoolExecutor(max_workers=1) as pool:
        early = pool.submit(ssh.run, remote, dry_argv, check=False)
        pushed = push(remote, paths, force_copy=req.force_copy)
        dry = early.result()
    if dry.returncode != 0 and pushed.copied:  # the guest could not see the files before the copy
        dry = ssh.run(remote, dry_argv, check=False)
    return pushed, dry


def _show_plan(
    req: DeployRequest,
    current: str,
    system: Path,
    diff: ClosureDiff,
    pushed: Pushed,
    dry: subprocess.CompletedProcess[str],
) -> dict[str, Any]:
    """Show the plan; return it for --json."""
    units = plan.parse_dry_activate(dry.stderr + "\n" + dry.stdout)
    output.step(f"plan for {req.name}")
    output.info(f"  {current}\n→ {system}")
    for line in plan.render(diff, units, verbose=req.verbose):
        output.info(line)
    if not req.dry_run:
        when = " (with the activation)" if pushed.pending else ""
        output.info(f"  store: {pushed.registered} new paths registered without copying{when}, {pushed.copied} copied")
    return {**diff.to_json(), "units": units.to_json()}


def _history_entry(report: Report, outcome: Outcome) -> dict[str, Any]:
    return {
        "time": time.time(),
        "system": report.get("new_system"),
        "previous": report.get("old_system"),
        "source": report.get("source"),
        "result": outcome.result,
        "generation": outcome.generation,
        "switch_rc": outcome.switch_rc,
        "failed_units": outcome.failed_units,
        "durations": report.get("durations", {}),
        "pushed": report.get("store", {}),
    }


def _adopt(vmdir: VMDir, state: VMState, system: Path, runner: Path, source: nix.Source) -> None:
    """The VM now runs `system`: a restart (down + up) must boot it, so the
    runner built in the same evaluation becomes the VM's."""
    from rehearse import lifecycle

    lifecycle.keep_runner(vmdir, runner)
    state.runner = str(runner)
    state.system = str(system)
    state.runners[str(system)] = str(runner)
    state.source = source.to_json()
    vmdir.save(state)


def guest_generations(remote: ssh.Remote) -> tuple[list[dict[str, Any]], int | None, str]:
    """The guest's system generations (each with `booted`: the system the VM
    booted), the current one's number, and the system it runs."""
    script = (
        f'for l in {PROFILE}-*-link; do [ -e "$l" ] || continue; '
        'echo "$l $(readlink -f "$l") $(stat -c %Y "$l")"; done; '
        f"echo current $(readlink {PROFILE}); echo running $(readlink /run/current-system); "
        "echo booted $(readlink /run/booted-system)"
    )
    out = ssh.run(remote, ["sh", "-c", script]).stdout.splitlines()
    gens: list[dict[str, Any]] = []
    current = None
    running_system = booted = ""
    for line in out:
        words = line.split()
        if words[0] == "booted":
            booted = words[1] if len(words) > 1 else ""
            continue
        if words[0] == "running":
            running_system = words[1] if len(words) > 1 else ""
            continue
        if words[0] == "current":
            m = re.search(r"-(\d+)-link$", words[1]) if len(words) > 1 else None
            current = int(m.group(1)) if m else None
            continue
        m = re.search(r"-(\d+)-link$", words[0])
        if m:
            gens.append({"generation": int(m.group(1)), "system": words[1], "date": int(words[2])})
    gens.sort(key=lambda g: g["generation"])
    for g in gens:
        g["booted"] = g["system"] == booted
    return gens, current, running_system


def generations(name: str, as_json: bool) -> None:
    from rehearse import lifecycle
    from rehearse.state import VMDir

    vmdir = VMDir(name)
    _, remote = lifecycle.running(vmdir)
    gens, current, _ = guest_generations(remote)
    history = {h.get("system"): h for h in load_history(vmdir.file("deploys.json")) if h.get("result") == "confirmed"}
    rows = []
    for g in gens:
        h = history.get(g["system"])
        rows.append(
            {
                **g,
                "current": g["generation"] == current,
                "deployed": h.get("time") if h else None,
                "source": h.get("source") if h else None,
                "durations": h.get("durations") if h else None,
            }
        )
    if as_json:
        output.result(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["current"] else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["date"]))
        booted = "  (booted)" if r["booted"] else ""
        output.result(f"{mark} {r['generation']:>4}  {when}  {store_name(r['system'])}{booted}")


def rollback(
    name: str, to: int | None, confirm_timeout: float, activation_timeout: float = ACTIVATION_TIMEOUT
) -> Report:
    from rehearse import lifecycle
    from rehearse.state import VMDir

    vmdir = VMDir(name)
    with vmdir.locked("rehearse rollback"):
        state, remote = lifecycle.running(vmdir)
        settle(remote, activation_timeout)
        gens, current, running_system = guest_generations(remote)
        lifecycle.reconcile(vmdir, state, running_system)
        numbers = [g["generation"] for g in gens]
        hint = f"`rehearse generations {name}` lists them"
        if to is None:
            older = [n for n in numbers if current is not None and n < current]
            if not older:
                raise RehearseError(f"{name} has no generation before {current}.", hint=hint, exit_code=ExitCode.USAGE)
            to = older[-1]
        if to not in numbers:
            raise RehearseError(f"{name} has no generation {to}.", hint=hint, exit_code=ExitCode.USAGE)
        system = Path(next(g["system"] for g in gens if g["generation"] == to))
        old = next((g["system"] for g in gens if g["generation"] == current), None)
        report: Report = {
            "name": name,
            "action": "rollback",
            "source": f"generation {to}",
            "old_system": old,
            "new_system": str(system),
            "generation": to,
            "durations": {},
        }
        if to == current:
            output.info(f"{name} already runs generation {to}")
            return {**report, "result": "unchanged", "exit_code": ExitCode.OK}
        output.step(f"rolling {name} back to generation {to} ({store_name(str(system))})")
        t = time.monotonic()
        outcome = activate(remote, system, confirm_timeout, [], generation=to, activation_timeout=activation_timeout)
        report["durations"]["activate"] = round(time.monotonic() - t, 2)
        report.update(
            {
                "switch_rc": outcome.switch_rc,
                "failed_units": outcome.failed_units,
                "result": "confirmed" if outcome.ok else "rolled-back",
                "reason": None if outcome.ok else outcome.result.removeprefix("rolled-back "),
            }
        )
        record(
            vmdir.file("deploys.json"),
            {
                "time": time.time(),
                "system": str(system),
                "result": outcome.result,
                "source": f"rollback to generation {to}",
                "durations": {},
            },
        )
        if not outcome.ok:
            raise RehearseError(
                f"rollback to generation {to} did not hold: {outcome.result}",
                exit_code=ExitCode.ROLLED_BACK,
                report=dict(report),
            )
        state.system = str(system)
        if str(system) in state.runners:
            state.runner = state.runners[str(system)]
        else:
            output.warn(
                f"rehearse has no VM runner for this system: a restart (down + up) boots "
                f"{store_name(str(Path(state.runner or '') / 'system'))} until the next deploy"
            )
        vmdir.save(state)
        output.success(f"{name} runs generation {to}")
        return {**report, "exit_code": ExitCode.OK}
