"""What `up` says when the VM's runner dies early."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from rehearse.host import qemu
from rehearse.store.state import VMDir


def dir_with_log(tmp_path: Path, text: str) -> VMDir:
    d = VMDir("fripon", tmp_path)
    d.create()
    d.file("runner.log").write_text(text)
    return d


def test_qemu_missing(tmp_path: Path) -> None:
    d = dir_with_log(
        tmp_path, "/nix/store/x-run-nixos-vm: line 80: /usr/bin/qemu-system-x86_64: No such file or directory\n"
    )
    err = qemu.early_exit_error(d)
    assert "qemu-system-x86_64 not found" in err.message
    assert err.hint is not None and "apt-get install qemu-system-x86" in err.hint


def test_no_display(tmp_path: Path) -> None:
    err = qemu.early_exit_error(dir_with_log(tmp_path, "gtk initialization failed\n"))
    assert "no display" in err.message and "--gui" in (err.hint or "")


def test_other_failure_shows_the_runner_output(tmp_path: Path) -> None:
    err = qemu.early_exit_error(dir_with_log(tmp_path, "qemu: could not open disk image\n"))
    assert "could not open disk image" in err.message


def test_reap_ends_what_the_runner_left_in_its_session() -> None:
    """NixOS 26.11's run script starts virtiofsd daemons beside QEMU; once the
    VM is gone, whatever is left in the runner's session is ended — never
    while the VM still runs."""
    import subprocess

    from rehearse.store.state import process_start

    runner = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; exec sleep 1"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert runner.stdout is not None
    started = process_start(runner.pid)
    daemon = int(runner.stdout.readline())
    assert qemu.reap(runner.pid, started) == []  # the VM runs: nothing is touched
    assert process_start(daemon) is not None
    runner.wait()
    assert qemu.reap(runner.pid, started) == [daemon]
    assert process_start(daemon) is None
    assert qemu.reap(runner.pid, started) == []


def test_a_port_held_only_by_time_wait_connections_is_free() -> None:
    """After a VM's forward closed its connections first (TIME_WAIT on the
    forwarded port), QEMU can listen there again (SO_REUSEADDR): so can up."""
    import socket
    import time

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU's forwards do
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert not qemu.port_free(port)  # a listener holds it
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the forward's side closes first: its socket waits in TIME_WAIT
    client.close()
    listener.close()
    time.sleep(0.2)
    assert qemu.port_free(port)


def _runner(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "run-fripon-vm"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_a_port_taken_before_qemu_listens_is_said_so_the_caller_picks_again(tmp_path: Path) -> None:
    """Two `up`s in two terminals can pick the same free port; the one whose
    QEMU then fails to forward it learns which port, to pick another."""
    d = VMDir("fripon", tmp_path / "state")
    d.create()
    line = "qemu-system-x86_64: -netdev user,id=n: Could not set up host forwarding rule 'tcp:127.0.0.1:2231-:64022'"
    runner = _runner(tmp_path, f'echo "{line}" >&2; exit 1\n')
    with pytest.raises(qemu.PortTaken) as taken:
        qemu.start(runner, {}, d, listens=[2231], timeout=20)
    assert taken.value.port == 2231


def test_start_returns_once_the_forwards_listen(tmp_path: Path) -> None:
    d = VMDir("fripon", tmp_path / "state")
    d.create()
    port = qemu.pick_port(23000)
    listen = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(30)"
    runner = _runner(tmp_path, f'exec {sys.executable} -c "{listen}"\n')
    pid = qemu.start(runner, {}, d, listens=[port], timeout=20)
    try:
        assert not qemu.port_free(port)  # returned after the listen, not before
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_port_another_program_listens_on_is_not_taken_for_qemus(tmp_path: Path) -> None:
    """The race's loser sees its port bound, by the winner: it waits for its
    own QEMU (the runner's session), which then fails to forward it."""
    d = VMDir("fripon", tmp_path / "state")
    d.create()
    port = qemu.pick_port(23100)
    with socket.socket() as winner:
        winner.bind(("127.0.0.1", port))
        winner.listen()
        line = f"qemu-system-x86_64: -netdev user: Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-:22'"
        runner = _runner(tmp_path, f'sleep 1; echo "{line}" >&2; exit 1\n')
        with pytest.raises(qemu.PortTaken) as taken:
            qemu.start(runner, {}, d, listens=[port], timeout=20)
        assert taken.value.port == port
