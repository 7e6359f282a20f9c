"""The activation protocol, the same for a VM and a real server.

A new system is activated by guest/activate.sh as a transient systemd unit
that survives a dropped SSH session, and goes back to the previous system by
itself unless rehearse confirms the new one, in time, over a connection made
after the switch (the magic rollback of deploy-rs). guest/start.sh starts it
and is rehearse's line to it: one SSH session carries the script, the
registration of new store paths, the log and rehearse's word.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rehearse.config import ACTIVATION_TIMEOUT, Check
from rehearse.core import output
from rehearse.core.errors import Interrupted, RehearseError
from rehearse.core.values import CheckKind
from rehearse.host import answers, nix, process, scripts, ssh
from rehearse.host.answers import Settled

RUN_DIR = "/run/rehearse"

# Why the new system would lock the server out (None: it would not); runs
# after a good switch, while the activation waits for rehearse's verdict.
ServerCheck = Callable[[], "str | None"]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    switch_rc: int | None
    result: str  # the guest's: "confirmed", "rolled-back REASON RC", "kept REASON" or "reboot-required …"
    failed_units: list[str]
    generation: int | None = None  # the profile generation the activation made or switched to
    after_switch: float | None = None  # seconds from the switch's end to the guest's verdict

    @property
    def reboot_required(self) -> bool:
        return self.result.startswith("reboot-required")

    @property
    def kept(self) -> bool:
        """It failed, and stays in place as asked (deploy --keep-failed)."""
        return self.result.startswith("kept ")

    @property
    def reason(self) -> str | None:
        """Why it was rolled back (or kept), without the rollback's exit code."""
        if self.ok:
            return None
        if self.kept:
            return self.result.removeprefix("kept ")
        return re.sub(r" -?\d+$", "", self.result.removeprefix("rolled-back "))

    @property
    def why(self) -> str:
        """The verdict as a person reads it: why it was rolled back, in words."""
        return answers.verdict_words(self.result)

    @property
    def failed_check(self) -> bool:
        """Whether a check of rehearse.toml rejected the new system (its
        reason is run_check's: "`CMD` …", "tcp …" or "http …")."""
        return not self.ok and (self.reason or "").startswith(("`", "tcp ", "http "))

    def report(self) -> dict[str, Any]:
        """The outcome's fields of a --json report (deploy, rollback, promote)."""
        return {
            "generation": self.generation,
            "switch_rc": self.switch_rc,
            "failed_units": self.failed_units,
            "result": "confirmed" if self.ok else "kept" if self.kept else "rolled-back",
            "reason": None if self.ok else self.reason if self.kept else self.result.removeprefix("rolled-back "),
        }


@dataclass
class Activation:
    """What the guest's log told so far. Marker lines carry a per-activation
    nonce (guest/activate.sh): output of the switch cannot pass for one."""

    nonce: str
    who: str = "the other side"  # for answers' errors
    rc: int | None = None
    result: str | None = None
    generation: int | None = None
    lines: list[str] = field(default_factory=list)
    seen: int = 0  # log lines read so far (a reconnection reads the log again)
    verified: bool = False  # the health check after a successful switch has run
    switched_at: float | None = None  # time.monotonic() when the switch's exit code came
    failed: list[str] | None = None  # units failed just after a good switch (the guest's first look)
    keep_failed: bool = False  # a failure stays in place (deploy --keep-failed)

    def feed(self, line: str) -> str | None:
        """Take one log line; returns the marker's key when it was one."""
        self.seen += 1
        prefix = f"@@rehearse-{self.nonce} "
        if not line.startswith(prefix):
            self.lines.append(answers.log_line(line))
            output.info(self.lines[-1])
            return None
        key, _, value = line[len(prefix) :].partition("=")
        if key == "rc":
            self.rc = answers.marker_number(self.who, value, signed=True)
            self.switched_at = time.monotonic()
        elif key == "generation":
            self.generation = answers.marker_number(self.who, value) or None if value else None
        elif key == "failed":
            self.failed = answers.failed_units(self.who, value)
        elif key == "result":
            self.result = answers.result(self.who, value)
        return key


class NotVisible(Exception):
    """start.sh found new paths the guest does not see through the host
    store: nothing was started."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"{len(paths)} paths not visible in the guest")
        self.paths = paths


@dataclass(frozen=True)
class Verify:
    """How the new system is to be verified after a good switch."""

    checks: tuple[Check, ...] = ()
    server_check: ServerCheck | None = None
    # A new login must work (the switch touched the sshd rehearse logs in
    # through); else a new connection that gets its greeting will do.
    fresh_login: bool = True
    # Whether that sshd greets a new connection (only asked when not fresh_login).
    greets: Callable[[], bool] | None = None


def activate(
    remote: ssh.Remote,
    system: str,
    confirm_timeout: float,
    verify: Verify,
    *,
    generation: int | None = None,
    activation_timeout: float = ACTIVATION_TIMEOUT,
    register: list[str] | None = None,
    action: str = "test",
    keep_profile: bool = False,
    keep_failed: bool = False,
) -> Outcome:
    """Set the profile and switch, detached on the other side; stream its
    output; verify and confirm, or let it roll back. One SSH session starts
    the activation (guest/start.sh), carries the registration of the new
    paths (`register`, seen through the host store: raises NotVisible when
    the guest does not see one), follows the log and takes rehearse's word.
    If the session drops, reconnect and carry on from the log.
    keep_profile: the system profile is left alone (`promote --test`, as
    `nixos-rebuild test`): no generation, and a rollback switches back to
    the system that ran.
    keep_failed: a failed switch, unit or check leaves the new system in
    place, unconfirmed (the result is "kept REASON"); a new system that
    gives no word in time (rehearse cannot reach it) still rolls back."""
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    d = f"{RUN_DIR}/{run_id}"
    st = Activation(nonce=secrets.token_hex(8), who=remote.who, keep_failed=keep_failed)
    script = scripts.guest("activate.sh")
    registration = nix.dump_db(register) if register else ""
    args = [d, st.nonce, system, str(math.ceil(confirm_timeout)), str(math.ceil(activation_timeout)), action]
    if generation is not None:
        assert not keep_profile
        args.append(str(generation))
    elif keep_profile:
        args.append("keep")
    if keep_failed:
        args.insert(0, "--keep-failed")
    argv = scripts.sh(
        "start.sh", d, st.nonce, str(len(script.encode())), str(len(registration.encode())), " ".join(args),
        *(register or []),
    )  # fmt: skip
    missing: list[str] = []
    stdin = ssh.stdin(remote, script + registration)  # a sudo password's line first (ssh.py)
    try:
        with process.stream(ssh.argv(remote, argv), input=stdin, keep_stdin=True) as stream:
            for line in stream:
                if line.startswith(f"@@rehearse-{st.nonce} missing "):
                    missing.append(answers.store_path(st.who, line.split(" ", 2)[2], among=set(register or ())))
                    continue
                key = st.feed(line)
                if (key == "rc" and _switched(remote, d, st, verify, confirm_timeout, stream)) or st.result is not None:
                    break
        if missing:
            raise NotVisible(missing)
        if st.result is None:
            _recover(remote, d, st, verify, confirm_timeout, activation_timeout)
    except answers.BadAnswer:
        # An answer that does not fit proves nothing good of the new system:
        # it rolls back now rather than at its timeout.
        ssh.run(remote, scripts.sh("reject.sh", d, "rehearse refused an answer of the guest"), check=False)
        raise
    except KeyboardInterrupt:
        raise Interrupted(*whereabouts(remote.who, st, confirm_timeout)) from None
    assert st.result is not None
    return Outcome(
        ok=st.result == "confirmed",
        switch_rc=st.rc,
        result=st.result,
        failed_units=st.failed if st.failed else _failed_units("\n".join(st.lines)),
        generation=st.generation,
        after_switch=round(time.monotonic() - st.switched_at, 2) if st.switched_at is not None else None,
    )


def after(who: str, result: str) -> str:
    """Where an activation's verdict (`result`) left `who`."""
    if result == "confirmed":
        return f"{who} runs the new system (confirmed)"
    if result.startswith("kept"):
        return f"{who} runs the new system, kept as --keep-failed asked (not confirmed)"
    if result.startswith("reboot-required"):
        return f"{who} still runs its old system; its next start boots the new one"
    return f"{who} was rolled back: it runs its old system again"


def whereabouts(who: str, st: Activation, confirm_timeout: float) -> tuple[str, str | None]:
    """Where an activation interrupted on this side left the other (it goes
    on there, detached): what to say, and a hint."""
    settle = "nothing to do: it decides alone; the next deploy (or promote) settles it first"
    if st.result is not None:
        return after(who, st.result), None
    if st.rc is None:
        return (
            f"{who} was switching to the new system; unless confirmed, it rolls itself back "
            f"{math.ceil(confirm_timeout)} s after the switch (or it still runs its old system)",
            settle,
        )
    if st.rc != 0:
        return f"the switch failed on {who}; it is rolling back to its old system", None
    left = confirm_timeout - (time.monotonic() - (st.switched_at or time.monotonic()))
    return f"{who} runs the new system unconfirmed; it rolls itself back in {max(0, math.ceil(left))} s", settle


def _switched(
    remote: ssh.Remote,
    d: str,
    st: Activation,
    verify: Verify,
    confirm_timeout: float,
    line: process.Stream | None = None,
) -> bool:
    """The switch ended: verify and confirm a good one. True when the
    verdict is known. `line`: the session that started the activation,
    which passes rehearse's word on (guest/start.sh); without it, new
    sessions do."""
    if st.rc != 0 or st.verified:
        return st.result is not None
    st.verified = True
    verdict = verify_and_confirm(remote, d, verify, confirm_timeout, line=line, failed=st.failed)
    if verdict.result is not None:
        st.result = verdict.result
        return True
    if verdict.why is not None:
        then = "keeping it, as --keep-failed asked" if st.keep_failed else "rolling back"
        output.warn(f"check failed: {verdict.why}; {then}")
        said = " ".join(verdict.why.split())
        if line is None or not line.send(f"reject {said}\n"):
            ssh.run(remote, scripts.sh("reject.sh", d, said), check=False)
    return False


def _recover(
    remote: ssh.Remote, d: str, st: Activation, verify: Verify, confirm_timeout: float, activation_timeout: float
) -> None:
    """The session following the activation dropped. The activation goes on
    under PID 1 over there: read its log again over new connections; a
    switch that ended well is verified and confirmed (not left to roll back),
    and a configuration that cut SSH off rolls back, after which SSH answers."""
    output.warn(f"the SSH session to {remote.describe()} dropped during the activation; reconnecting")
    deadline = time.monotonic() + activation_timeout + confirm_timeout + 120
    said = False
    while time.monotonic() < deadline:
        r = ssh.run(remote, ["cat", f"{d}/log"], check=False, master=False, connect_timeout=5, timeout=30)
        if r.returncode == 0:
            for line in r.stdout.splitlines()[st.seen :]:
                if st.feed(line) == "rc" and _switched(remote, d, st, verify, confirm_timeout):
                    return
            if st.result is not None or (st.rc == 0 and _switched(remote, d, st, verify, confirm_timeout)):
                return
        elif r.returncode == 255 and not said:
            output.warn(
                f"{remote.describe()} does not answer SSH; waiting for it to roll back (up to {confirm_timeout:.0f} s)"
            )
            said = True
        time.sleep(1)
    raise RehearseError(
        f"{remote.describe()} gave no verdict on the activation in time.",
        hint="look at `rehearse console` and `rehearse generations`; it may need `rehearse rollback`",
    )


def settle(remote: ssh.Remote, timeout: float) -> Settled:
    """Settle what an interrupted deploy left pending (guest/settle.sh: it
    is rolled back), and ask what runs — the system to plan against. One
    round trip when nothing is pending."""
    out = ssh.run(remote, scripts.sh("settle.sh", RUN_DIR, str(math.ceil(timeout))), timeout=timeout + 60)
    return answers.settled(remote.who, out.stdout)


def _failed_units(text: str) -> list[str]:
    """The units switch-to-configuration said failed (its free output: what
    is not a unit's name is left out)."""
    m = re.search(r"the following units failed: (.+)", text)
    return [u.strip() for u in m.group(1).split(",") if answers.UNIT.fullmatch(u.strip())] if m else []


# --- verify -----------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    why: str | None  # why the new system is rejected; None: not rejected
    result: str | None  # the guest's verdict, when it is already known


def verify_and_confirm(
    remote: ssh.Remote,
    d: str,
    verify: Verify,
    budget: float,
    *,
    line: process.Stream | None = None,
    failed: list[str] | None = None,
) -> Verdict:
    """Confirm the new system when it is healthy.

    rehearse must reach it anew: a ControlMaster session opened before the
    switch proves nothing about a restarted sshd (a deploy-rs lesson). When
    the switch touched the sshd rehearse logs in through (fresh_login), a
    new login must work; when it left it running as it was, a new connection
    that gets its greeting proves it still listens (a key exchange less:
    about a second of an emulated guest's CPU). The check of the server's
    own sshd (server_ssh.py) runs meanwhile.

    With `line` (the session that started the activation, guest/start.sh)
    and `failed` (the units the guest found failed after the switch), the
    word goes over that session and the verdict comes in the log (None
    here). Without them (that session dropped) the look and the word go over
    new sessions."""
    streaming = line is not None and failed is not None
    waits = bool(verify.checks) or verify.server_check is not None or streaming
    confirm = scripts.guest("confirm.sh")

    def greets() -> bool:
        return not verify.fresh_login and verify.greets is not None and verify.greets()

    with ThreadPoolExecutor(max_workers=1) as pool:
        server = pool.submit(output.bound(verify.server_check)) if verify.server_check is not None else None
        if streaming:
            reached = (
                greets()
                or ssh.run(remote, ["true"], master=False, check=False, connect_timeout=10, timeout=60).returncode == 0
            )
            out = "failed units: " + " ".join(failed or []) if failed else "healthy"
        else:
            look = scripts.sh("look.sh", "wait" if waits else "confirm", d, confirm)
            fresh = ssh.run(remote, look, master=greets(), check=False, connect_timeout=10, timeout=60)
            reached, out = fresh.returncode == 0, _look(remote.who, fresh.stdout.strip())
        server_verdict = server.result() if server is not None else None
    if not reached:
        output.warn(f"a new SSH connection to {remote.describe()} failed; it rolls back by itself unless confirmed")
        return Verdict(None, None)
    if not out.startswith("healthy"):
        return Verdict(out, None)
    known = _known(remote.who, out)
    if server_verdict is not None:
        return Verdict(server_verdict, None)
    deadline = time.monotonic() + max(5.0, budget - 15)
    for check in verify.checks:
        why = run_check(remote, check, deadline)
        if why is not None:
            return Verdict(why, None)
    if line is not None and line.send("confirm\n"):
        return Verdict(None, None)  # the verdict follows in the log
    if waits:
        known = _known(remote.who, ssh.run(remote, scripts.sh("confirm.sh", d), check=False).stdout.strip())
    return Verdict(None, known)


def _look(who: str, out: str) -> str:
    """guest/look.sh's answer: "failed units: UNIT…", or "healthy" and what
    confirm.sh printed; anything else is shown as it is, made printable,
    and rejects the new system."""
    if out.startswith("failed units: "):
        return "failed units: " + " ".join(answers.failed_units(who, out.removeprefix("failed units: ")))
    return out if out.startswith("healthy") and "\n" not in out else answers.text(out, 300)


def _known(who: str, out: str) -> str | None:
    """The verdict after "healthy", when it is out."""
    if not out.startswith("healthy"):
        return None
    verdict = out[len("healthy") :].strip()
    return answers.result(who, verdict) if verdict else None


# How long one try of a `cmd` check may take: a check is a quick probe, and a
# hung one must not use up the time the activation waits for confirmation.
CMD_TRY_TIMEOUT = 30.0


def run_check(remote: ssh.Remote, check: Check, deadline: float) -> str | None:
    """Try `check` until it passes (None) or `deadline` (time.monotonic())
    has passed; then why its last try failed. A try that fails in any way,
    including one that runs out of time, is tried again."""
    try:
        return _run_check(remote, check, deadline)
    finally:
        output.live_end()


def _run_check(remote: ssh.Remote, check: Check, deadline: float) -> str | None:
    import http.client
    import socket
    import urllib.request

    last = ""
    while True:
        try:
            if check.kind == CheckKind.CMD:
                limit = math.ceil(min(CMD_TRY_TIMEOUT, max(5.0, deadline - time.monotonic())))
                started = time.monotonic()
                r = ssh.run(remote, scripts.sh("check.sh", str(limit), check.target), check=False, timeout=limit + 10)
                if r.returncode == 0:
                    return None
                # Killed by the host's limit, or by the guest's `timeout` (124, or
                # 137 after its SIGKILL) once the limit had passed.
                guest_limit = r.returncode in (124, 137) and time.monotonic() - started >= limit
                if (isinstance(r, process.Completed) and r.timed_out) or guest_limit:
                    last = f"`{check.target}` did not finish within {limit} s"
                else:
                    last = (
                        f"`{check.target}` exited {r.returncode}: {answers.text((r.stderr or r.stdout).strip()[-200:])}"
                    )
            elif check.kind == CheckKind.TCP:
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
            last = f"{check.kind} {check.target}: {plain_failure(e)}"
        left = deadline - time.monotonic()
        if left < 0:
            return last
        # On a terminal, the wait is seen (the next try, the time left).
        shown = check.target if check.kind != "cmd" else f"`{check.target}`"
        output.live(f"waiting for {shown} — retrying, {math.ceil(left)} s left")
        time.sleep(2)


def plain_failure(e: BaseException) -> str:
    """Why a try of a `tcp` or `http` check failed, in plain words (not
    `[Errno 104] Connection reset by peer`)."""
    import http.client
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"it answered {e.code} {e.reason}".rstrip()
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        return plain_failure(e.reason)
    if isinstance(e, ConnectionRefusedError):
        return "nothing listens on the port (connection refused)"
    if isinstance(e, ConnectionResetError | http.client.RemoteDisconnected | ConnectionAbortedError):
        return "nothing answered: the connection was closed at once (is the service listening in the VM yet?)"
    if isinstance(e, TimeoutError):
        return "no answer in time"
    if isinstance(e, http.client.HTTPException):
        return "what answers on the port does not speak HTTP"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e) or type(e).__name__
