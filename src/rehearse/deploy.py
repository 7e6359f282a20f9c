"""Deploy a configuration into a running VM: build → plan → push → activate
→ verify → (roll back). Everything after the build goes through a `Remote`,
so the same steps can later serve a real server.

Activation runs in the guest as a transient systemd unit (guest/activate.sh)
that survives a dropped SSH session and rolls the system back by itself
unless rehearse confirms the new one over a fresh SSH connection in time.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rehearse import nix, plan, process, ssh
from rehearse.errors import RehearseError

# The plan's values, importable from here as before they moved to plan.py.
from rehearse.plan import ClosureDiff as ClosureDiff
from rehearse.plan import closure_diff as closure_diff
from rehearse.plan import human as human
from rehearse.plan import split_name as split_name
from rehearse.plan import store_name as store_name

log = logging.getLogger("rehearse")

PROFILE = "/nix/var/nix/profiles/system"
RUN_DIR = "/run/rehearse"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- push -----------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    registered: int  # made valid in the guest without copying (host store shared)
    copied: int  # given to nix-copy-closure, which copies those the guest lacks


# One round trip: when the guest sees every path through the host store it
# mounts (NixOS VMs mount the host /nix/store read-only at /nix/.ro-store,
# under an overlay on /nix/store), it registers them from the host's
# registration data (nix-store --dump-db); else it names those it cannot see.
# The paths are those of the new closure that the running system's closure
# lacks (computed on the host: no question to the guest's Nix database;
# registering a path that is already valid again changes nothing).
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
if [ $missing = 0 ]; then nix-store --load-db; echo registered; else cat >/dev/null; fi
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
        log.info("not visible in the guest: %s", line.removeprefix("missing "))
    copy_closure(remote, paths)
    return Pushed(0, len(paths))


def copy_closure(remote: ssh.Remote, paths: list[str]) -> None:
    opts = " ".join(ssh.options(remote))
    process.run(["nix-copy-closure", "--to", remote.target, *paths], env={"NIX_SSHOPTS": opts})


# --- activate -------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    switch_rc: int | None
    result: str  # "confirmed" or "rolled-back REASON RC"
    failed_units: list[str]
    generation: int | None = None  # the profile generation the activation made or switched to


def activate(
    remote: ssh.Remote, system: Path, confirm_timeout: float, checks: list[Check], generation: int | None = None
) -> Outcome:
    """Set the profile and switch, detached in the guest; stream its output;
    verify over a fresh connection and confirm, or let the guest roll back."""
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    d = f"{RUN_DIR}/{run_id}"
    script = (resources.files("rehearse") / "guest" / "activate.sh").read_text()
    # One session starts the unit and follows its log (inotify, no polling);
    # if the session drops, the unit goes on.
    start_and_follow = (
        f"set -e; umask 077; mkdir -p {d}; cat > {d}/activate.sh; : > {d}/log; "
        f"systemd-run --unit=rehearse-activate-{run_id} --collect --no-ask-password --quiet --service-type=exec "
        f"-E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER -E NIXOS_NO_CHECK "
        f"/bin/sh {d}/activate.sh {d} {shlex.quote(str(system))} {int(confirm_timeout)}"
        + (f" {generation}" if generation is not None else "")
        + f"; exec tail -n +1 -f {d}/log"
    )
    rc: int | None = None
    result: str | None = None
    new_generation: int | None = None
    lines: list[str] = []
    with process.stream(ssh.argv(remote, ["sh", "-c", start_and_follow]), input=script) as stream:
        for line in stream:
            if line.startswith("@@rehearse rc="):
                rc = int(line.split("=", 1)[1])
                if rc == 0:
                    verdict, result = verify_and_confirm(remote, d, checks, confirm_timeout)
                    if result is not None:
                        break
                    if verdict is not None:
                        say(f"rehearse: check failed: {verdict}; rolling back")
                        ssh.run(
                            remote,
                            ["sh", "-c", f"echo {shlex.quote(verdict)} > {d}/reject; kill -USR2 $(cat {d}/pid)"],
                            check=False,
                        )
            elif line.startswith("@@rehearse generation="):
                new_generation = int(line.split("=", 1)[1] or 0) or None
            elif line.startswith("@@rehearse result="):
                result = line.split("=", 1)[1]
                break
            else:
                lines.append(line)
                say(line)
    if result is None:  # the session dropped: ask the guest over new connections
        result = wait_result(remote, d, confirm_timeout)
    log_text = "\n".join(lines)
    return Outcome(
        ok=result == "confirmed",
        switch_rc=rc,
        result=result,
        failed_units=_failed_units(log_text),
        generation=new_generation,
    )


def _failed_units(text: str) -> list[str]:
    m = re.search(r"the following units failed: (.+)", text)
    return [u.strip() for u in m.group(1).split(",")] if m else []


def wait_result(remote: ssh.Remote, d: str, confirm_timeout: float) -> str:
    """The guest's verdict when the log session dropped: poll DIR/result over
    new connections (a configuration that cut SSH off is rolled back after
    confirm_timeout, and SSH comes back)."""
    deadline = time.monotonic() + confirm_timeout + 180
    said = False
    while time.monotonic() < deadline:
        r = ssh.run(remote, ["cat", f"{d}/result"], check=False, master=False, connect_timeout=5, timeout=30)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
        if r.returncode == 255 and not said:
            say(f"rehearse: the VM does not answer SSH; waiting for it to roll back (up to {confirm_timeout:.0f} s)")
            said = True
        time.sleep(1)
    raise RehearseError(
        "the VM gave no verdict on the activation in time.",
        hint="look at `rehearse console` and `rehearse generations`; the VM may need `rehearse rollback`",
    )


# --- checks ---------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A health check from rehearse.toml: a command in the guest, a TCP port
    or an HTTP URL reached through a forwarded port."""

    kind: str  # "cmd" | "tcp" | "http"
    target: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Check:
        for kind in ("cmd", "tcp", "http"):
            if kind in data:
                return cls(kind, str(data[kind]))
        raise RehearseError(f"unknown check {data!r}.", hint='write { cmd = "…" }, { tcp = PORT } or { http = "URL" }')


def verify_and_confirm(remote: ssh.Remote, d: str, checks: list[Check], budget: float) -> tuple[str | None, str | None]:
    """Confirm the new system to the guest when it is healthy. Returns (why
    not, the guest's result if already known). The first look goes over a
    *fresh* SSH connection: a ControlMaster session opened before the switch
    proves nothing about the new sshd (a deploy-rs lesson). Without
    configured checks that one connection also confirms and reads the
    guest's verdict; with checks, confirmation follows them."""
    look = (
        "failed=$(systemctl list-units --failed --plain --no-legend --full | awk '{print $1}' | tr '\\n' ' '); "
        'if [ -n "$failed" ]; then echo "failed units: $failed"; exit 0; fi; '
        + ("echo healthy" if checks else _CONFIRM.format(d=d))
    )
    fresh = ssh.run(remote, ["sh", "-c", look], master=False, check=False, connect_timeout=10, timeout=60)
    if fresh.returncode != 0:
        say("rehearse: a new SSH connection to the VM failed; the VM rolls back by itself unless it is confirmed")
        return None, None
    out = fresh.stdout.strip()
    if not out.startswith("healthy"):
        return out, None
    known = out[len("healthy") :].strip() or None
    deadline = time.monotonic() + max(5.0, budget - 15)
    for check in checks:
        why = run_check(remote, check, deadline)
        if why is not None:
            return why, None
    if checks:
        confirmed = ssh.run(remote, ["sh", "-c", _CONFIRM.format(d=d)], check=False).stdout.strip()
        known = confirmed[len("healthy") :].strip() or None
    return None, known


# Confirm (SIGUSR1 to the activation script, again if it came too early) and
# read the guest's result in the same session.
_CONFIRM = (
    "i=0; kill -USR1 $(cat {d}/pid); "
    "while [ ! -s {d}/result ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); "
    "[ $((i % 10)) = 0 ] && kill -USR1 $(cat {d}/pid) 2>/dev/null; done; "
    'echo "healthy $(cat {d}/result 2>/dev/null)"'
)


def run_check(remote: ssh.Remote, check: Check, deadline: float) -> str | None:
    import socket
    import urllib.request

    last = ""
    while True:
        try:
            if check.kind == "cmd":
                r = ssh.run(remote, ["sh", "-c", check.target], check=False, timeout=30)
                if r.returncode == 0:
                    return None
                last = f"`{check.target}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}"
            elif check.kind == "tcp":
                with socket.create_connection(("127.0.0.1", int(check.target)), timeout=3):
                    return None
            else:
                with urllib.request.urlopen(check.target, timeout=5) as resp:
                    if 200 <= resp.status < 300:
                        return None
                    last = f"{check.target} answered {resp.status}"
        except OSError as e:
            last = f"{check.kind} {check.target}: {e}"
        if time.monotonic() > deadline:
            return last
        time.sleep(2)


# --- history --------------------------------------------------------------


def record(history: Path, entry: dict[str, Any]) -> None:
    entries = load_history(history)
    entries.append(entry)
    tmp = history.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.chmod(0o600)
    tmp.replace(history)


def load_history(history: Path) -> list[dict[str, Any]]:
    try:
        data: list[dict[str, Any]] = json.loads(history.read_text())
        return data
    except FileNotFoundError:
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
    verbose: bool = False  # the plan lists every name, unit and store path


def run_deploy(req: DeployRequest) -> int:
    from rehearse import lifecycle
    from rehearse.state import VMDir

    vmdir = VMDir(req.name)
    with vmdir.locked("rehearse deploy"):
        state, remote = lifecycle.running(vmdir)
        source = req.source or nix.Source.from_json(state.source)
        times: dict[str, float] = {}
        t = time.monotonic()
        say(f"building {source.describe()}...")
        system, runner = nix.build(source, vmdir.file("settings.json"), ["toplevel", "vm"], vmdir.file("next"))
        times["build"] = time.monotonic() - t
        current = ssh.run(remote, ["readlink", "/run/current-system"]).stdout.strip()
        if str(system) == current:
            say(f"{req.name} already runs {system}: nothing to deploy")
            return 0
        diff = closure_diff(Path(current) if current else None, system)
        t = time.monotonic()
        # dry-activate needs only the files of the new system, which a VM
        # sharing the host store already sees: ask for it while pushing.
        dry_argv = [f"{system}/bin/switch-to-configuration", "dry-activate"]
        if req.dry_run:  # changes nothing in the VM, not even its store
            pushed, dry = Pushed(0, 0), ssh.run(remote, dry_argv, check=False)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                early = pool.submit(ssh.run, remote, dry_argv, check=False)
                pushed = push(remote, diff.added_paths, force_copy=req.force_copy)
                dry = early.result()
        times["push"] = time.monotonic() - t
        if dry.returncode != 0 and pushed.copied:
            dry = ssh.run(remote, dry_argv, check=False)
        say(f"plan for {req.name}:\n  {current}\n→ {system}")
        for line in plan.render(diff, plan.parse_dry_activate(dry.stderr + "\n" + dry.stdout), verbose=req.verbose):
            say(line)
        if not req.dry_run:
            say(f"  store: {pushed.registered} new paths registered without copying, {pushed.copied} copied")
        if dry.returncode != 0:
            raise RehearseError(
                f"switch-to-configuration dry-activate failed (exit {dry.returncode}):\n{dry.stderr}",
                hint="with --dry-run the VM must see the new system through the host store it mounts"
                if req.dry_run
                else None,
            )
        if req.dry_run:
            say("dry run: nothing activated")
            return 0
        if not req.yes and sys.stdin.isatty():
            answer = input("activate it? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                say("not activated")
                return 1
        t = time.monotonic()
        outcome = activate(remote, system, req.confirm_timeout, list(req.checks))
        times["activate"] = time.monotonic() - t
        entry = {
            "time": time.time(),
            "system": str(system),
            "previous": current,
            "source": source.describe(),
            "result": outcome.result,
            "generation": outcome.generation,
            "switch_rc": outcome.switch_rc,
            "failed_units": outcome.failed_units,
            "durations": {k: round(v, 2) for k, v in times.items()},
            "pushed": {"registered": pushed.registered, "copied": pushed.copied},
        }
        record(vmdir.file("deploys.json"), entry)
        if outcome.ok:
            # The VM now runs `system`: a restart (down + up) must boot it,
            # so the runner built from the same evaluation becomes the VM's.
            process.run(
                ["nix-store", "--realise", str(runner), "--add-root", str(vmdir.file(f"runners/{runner.name}"))]
            )
            state.runner = str(runner)
            state.system = str(system)
            state.runners[str(system)] = str(runner)
            state.source = source.to_json()
            vmdir.save(state)
            say(
                f"{req.name} runs {store_name(str(system))} (build {times['build']:.1f} s, push {times['push']:.1f} s, "
                f"activate {times['activate']:.1f} s)"
            )
            return 0
        reason = outcome.result
        if outcome.failed_units:
            reason += " — failed units: " + ", ".join(outcome.failed_units)
        raise RehearseError(
            f"the new configuration was rolled back; {req.name} runs {store_name(current)} again ({reason}).",
            hint=f"`rehearse console {req.name}` and the output above show what went wrong",
        )


def guest_generations(remote: ssh.Remote) -> tuple[list[dict[str, Any]], int | None]:
    script = (
        f'for l in {PROFILE}-*-link; do [ -e "$l" ] || continue; '
        'echo "$l $(readlink -f "$l") $(stat -c %Y "$l")"; done; '
        f"echo current $(readlink {PROFILE})"
    )
    out = ssh.run(remote, ["sh", "-c", script]).stdout.splitlines()
    gens: list[dict[str, Any]] = []
    current = None
    for line in out:
        words = line.split()
        if words[0] == "current":
            m = re.search(r"-(\d+)-link$", words[1]) if len(words) > 1 else None
            current = int(m.group(1)) if m else None
            continue
        m = re.search(r"-(\d+)-link$", words[0])
        if m:
            gens.append({"generation": int(m.group(1)), "system": words[1], "date": int(words[2])})
    gens.sort(key=lambda g: g["generation"])
    return gens, current


def generations(name: str, as_json: bool) -> None:
    from rehearse import lifecycle
    from rehearse.state import VMDir

    vmdir = VMDir(name)
    _, remote = lifecycle.running(vmdir)
    gens, current = guest_generations(remote)
    history = {h["system"]: h for h in load_history(vmdir.file("deploys.json")) if h["result"] == "confirmed"}
    rows = []
    for g in gens:
        h = history.get(g["system"])
        rows.append(
            {
                **g,
                "current": g["generation"] == current,
                "deployed": h["time"] if h else None,
                "source": h["source"] if h else None,
                "durations": h["durations"] if h else None,
            }
        )
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for r in rows:
        mark = "*" if r["current"] else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["date"]))
        print(f"{mark} {r['generation']:>4}  {when}  {store_name(r['system'])}")


def rollback(name: str, to: int | None, confirm_timeout: float) -> int:
    from rehearse import lifecycle
    from rehearse.state import VMDir

    vmdir = VMDir(name)
    with vmdir.locked("rehearse rollback"):
        state, remote = lifecycle.running(vmdir)
        gens, current = guest_generations(remote)
        numbers = [g["generation"] for g in gens]
        if to is None:
            older = [n for n in numbers if current is not None and n < current]
            if not older:
                raise RehearseError(
                    f"{name} has no generation before {current}.", hint=f"`rehearse generations {name}` lists them"
                )
            to = older[-1]
        if to not in numbers:
            raise RehearseError(f"{name} has no generation {to}.", hint=f"`rehearse generations {name}` lists them")
        if to == current:
            say(f"{name} already runs generation {to}")
            return 0
        system = Path(next(g["system"] for g in gens if g["generation"] == to))
        say(f"rolling {name} back to generation {to} ({store_name(str(system))})")
        outcome = activate(remote, system, confirm_timeout, [], generation=to)
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
            raise RehearseError(f"rollback to generation {to} did not hold: {outcome.result}")
        state.system = str(system)
        if str(system) in state.runners:
            state.runner = state.runners[str(system)]
        else:
            say(
                f"note: rehearse has no VM runner for this system: a restart (down + up) boots "
                f"{store_name(str(Path(state.runner or '') / 'system'))} until the next deploy"
            )
        vmdir.save(state)
        say(f"{name} runs generation {to}")
        return 0
