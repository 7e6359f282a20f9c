"""The one place where rehearse starts processes.

Every child goes through `run` (wait for it) or `spawn` (start it detached);
both log the command line at debug level as a copy-pasteable shell line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from rehearse import output
from rehearse.errors import RehearseError

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


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    on_stderr: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and capture stdout and stderr as text.

    With on_stderr, each line of stderr (without its newline) is also given
    to it as it comes (Nix's progress), and still captured.
    """
    args = [str(a) for a in argv]
    if "/" not in args[0]:
        require(args[0])
    output.command(shlex.join(args))
    full_env = {**os.environ, **env} if env is not None else None
    if on_stderr is None:
        # Without input, the child gets no stdin: an ssh would otherwise read
        # what the user types (the answer to "activate it?") from the terminal.
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        result = subprocess.run(
            args, check=False, capture_output=True, text=True, env=full_env, timeout=timeout, **stdin
        )
    else:
        result = _run_streaming(args, full_env, input, timeout, on_stderr)
    if check and result.returncode != 0:
        raise RehearseError(
            f"command failed with exit code {result.returncode}: {shlex.join(args)}\n{result.stderr.strip()}"
        )
    return result


def _run_streaming(
    args: list[str],
    env: Mapping[str, str] | None,
    input: str | None,
    timeout: float | None,
    on_stderr: Callable[[str], None],
) -> subprocess.CompletedProcess[str]:
    with subprocess.Popen(
        args,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
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
            threading.Thread(target=pump, args=(proc.stderr, "err", on_stderr), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            if input is not None and proc.stdin is not None:
                proc.stdin.write(input)
                proc.stdin.close()
            proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
        for t in threads:
            t.join()
        return subprocess.CompletedProcess(args, proc.returncode, "".join(captured["out"]), "".join(captured["err"]))


@contextlib.contextmanager
def stream(argv: Sequence[str | Path], *, input: str | None = None) -> Iterator[Iterator[str]]:
    """Run a command and give its stdout line by line (stderr goes to ours);
    leaving the block ends the command if it still runs."""
    args = [str(a) for a in argv]
    output.command(shlex.join(args))
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        if input is not None and proc.stdin is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        yield (line.rstrip("\n") for line in proc.stdout)
    finally:
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
