"""The one place where rehearse starts processes.

Every child goes through `run` (wait for it) or `spawn` (start it detached);
both log the command line at debug level as a copy-pasteable shell line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from rehearse.core import output
from rehearse.core.errors import RehearseError

# What to install when a program is missing, by program name (Debian names;
# on NixOS these come with the system).
INSTALL_HINTS = {
    "nix-build": "install Nix (Debian: apt-get install nix-bin)",
    "nix-instantiate": "install Nix (Debian: apt-get install nix-bin)",
    "nix-store": "install Nix (Debian: apt-get install nix-bin)",
    "ssh": "install the OpenSSH client (Debian: apt-get install openssh-client)",
    "ssh-keygen": "install the OpenSSH client (Debian: apt-get install openssh-client)",
    "qemu-system-x86_64": "install QEMU (Debian: apt-get install qemu-system-x86 qemu-utils)",
}


def require(program: str) -> str:
    """The path of `program`, or an error that says what to install."""
    path = shutil.which(program)
    if path is None:
        raise RehearseError(f"{program} not found on PATH.", hint=INSTALL_HINTS.get(program))
    return path


class Completed(subprocess.CompletedProcess[str]):
    """A command that ended, or that rehearse killed at its time limit
    (`timed_out`; then `returncode` is -SIGKILL, what it died of)."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str, timed_out: bool = False) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.timed_out = timed_out


class TimedOut(RehearseError):
    """A command did not end within its time limit; it was killed, with
    every process it started in its process group."""

    def __init__(self, args: list[str], timeout: float) -> None:
        super().__init__(f"command did not finish within {timeout:g} s and was killed: {shlex.join(args)}")
        self.command = args
        self.timeout = timeout


# Set by `deploy --watch`: every child in a process group of its own, so the
# terminal's Ctrl-C reaches rehearse alone, which lets a deploy in progress
# finish (or roll back) before it stops.
shielded = False


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    on_stderr: Callable[[str], None] | None = None,
) -> Completed:
    """Run a command to its end and capture stdout and stderr as text.

    With on_stderr, each line of stderr (without its newline) is also given
    to it as it comes (Nix's progress), and still captured.

    With a timeout, the command runs in a process group of its own, and one
    that outlives it is killed with the whole group (an ssh and what it
    started). Then check=True raises TimedOut; check=False returns a failed
    result with `timed_out` set: the callers that pass a timeout poll (wait
    for SSH, for a verdict) and count a hung try as a failed one.
    """
    args = [str(a) for a in argv]
    if "/" not in args[0]:
        require(args[0])
    output.command(shlex.join(args))
    full_env = {**os.environ, **env} if env is not None else None
    with subprocess.Popen(
        args,
        # Without input, the child gets no stdin: an ssh would otherwise read
        # what the user types (the answer to "activate it?") from the terminal.
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Bytes that are not UTF-8 (a guest's file name, a server's
        # message) become \xNN text: never an exception, never a path.
        errors="backslashreplace",
        env=full_env,
        # Its own group only with a timeout, to kill what it started too; a
        # child without one stays in ours and gets the terminal's Ctrl-C.
        process_group=0 if timeout is not None or shielded else None,
    ) as proc:
        try:
            if on_stderr is None:
                out, err, timed_out = _communicate(proc, input, timeout)
            else:
                out, err, timed_out = _communicate_streaming(proc, input, timeout, on_stderr)
        except BaseException:
            _kill(proc, group=timeout is not None)
            raise
    if timed_out:
        assert timeout is not None
        output.debug(f"killed after {timeout:g} s: {shlex.join(args)}")
        if check:
            raise TimedOut(args, timeout)
        return Completed(args, proc.returncode, out, err + f"\nrehearse: killed after {timeout:g} s", True)
    result = Completed(args, proc.returncode, out, err)
    if check and result.returncode != 0:
        raise RehearseError(
            f"command failed with exit code {result.returncode}: {shlex.join(args)}\n{result.stderr.strip()}"
        )
    return result


def _kill(proc: subprocess.Popen[str], *, group: bool) -> None:
    """SIGKILL the child, and with `group` every process of its group (the
    child leads it: process_group=0). The child is not reaped yet, so its
    pid, and the group's id, cannot have gone to another process."""
    if proc.returncode is not None:  # reaped: its pid may be another's now
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def _communicate(proc: subprocess.Popen[str], input: str | None, timeout: float | None) -> tuple[str, str, bool]:
    """stdout, stderr, and whether the child was killed at `timeout`."""
    try:
        out, err = proc.communicate(input, timeout=timeout)
        return out, err, False
    except subprocess.TimeoutExpired:
        _kill(proc, group=True)
    # What the killed group had written. A process that left the group (a
    # daemon) may still hold the pipes: give up on the rest after a while
    # rather than wait for it.
    try:
        out, err = proc.communicate(timeout=5)
        return out or "", err or "", True
    except subprocess.TimeoutExpired:
        proc.wait()
        return "", "", True


def _communicate_streaming(
    proc: subprocess.Popen[str],
    input: str | None,
    timeout: float | None,
    on_stderr: Callable[[str], None],
) -> tuple[str, str, bool]:
    """As _communicate, giving each line of stderr to on_stderr as it comes."""
    captured: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream: IO[str], key: str, callback: Callable[[str], None] | None) -> None:
        for line in stream:
            captured[key].append(line)
            if callback is not None:
                try:
                    callback(line.rstrip("\n"))
                except Exception as e:
                    # The pipe must still be drained, or the child blocks
                    # on a full pipe and never ends: show no more, read on.
                    output.debug(f"on_stderr failed ({e!r}); its lines are captured only")
                    callback = None

    assert proc.stderr is not None and proc.stdout is not None
    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "out", None), daemon=True),
        threading.Thread(target=output.bound(pump), args=(proc.stderr, "err", on_stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        if input is not None and proc.stdin is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill(proc, group=True)
        proc.wait()
        timed_out = True
    for t in threads:
        # The pipes close when the group is gone, unless a daemon that left
        # it holds them: then do not wait for it.
        t.join(timeout=5 if timed_out else None)
    return "".join(captured["out"]), "".join(captured["err"]), timed_out


class Stream:
    """A running command's stdout, line by line; with `keep_stdin`, its
    stdin stays open for `send` (a control channel to the command)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        return (line.rstrip("\n") for line in self._proc.stdout)

    def send(self, text: str) -> bool:
        """Write to the command's stdin; False when it is gone."""
        with self._lock:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(text)
                self._proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False


@contextlib.contextmanager
def stream(argv: Sequence[str | Path], *, input: str | None = None, keep_stdin: bool = False) -> Iterator[Stream]:
    """Run a command and give its stdout line by line (stderr goes to ours);
    leaving the block ends the command if it still runs. `input` is written
    first; with `keep_stdin`, stdin then stays open for Stream.send."""
    args = [str(a) for a in argv]
    output.command(shlex.join(args))
    piped = input is not None or keep_stdin
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        errors="backslashreplace",
        # Shielded (deploy --watch), as in `run`: the terminal's Ctrl-C must
        # not end the session that carries an activation and its verdict.
        process_group=0 if shielded else None,
    )
    try:
        assert proc.stdout is not None
        if input is not None and proc.stdin is not None:
            proc.stdin.write(input)
            if keep_stdin:
                proc.stdin.flush()
            else:
                proc.stdin.close()
        yield Stream(proc)
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def spawn(argv: Sequence[str | Path], *, env: Mapping[str, str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start a long-lived child in its own session, so it outlives us."""
    args = [str(a) for a in argv]
    output.command(shlex.join(args) + "   # detached")
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            args,
            env={**os.environ, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
