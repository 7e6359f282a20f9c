"""Issue 10's security and bad-state items that need no VM: the host key and
the guest-writable share, ssh without the user's configuration, the HTTP
check without a proxy, pids without start times, the state root's mode,
names, broken state files, durable writes, QEMU option quoting."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearse.config import Check
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import nix, process, qemu, ssh
from rehearse.machines import lifecycle
from rehearse.store import history as h
from rehearse.store import state
from rehearse.store.state import VMDir, VMState
from rehearse.targets import activation, target


def rehearse(*args: str, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rehearse", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "REHEARSE_STATE_DIR": str(state), **env},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def private_root(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    return root


def vm_with_state(root: Path, name: str, data: object | bytes) -> VMDir:
    """A VM directory whose state.json holds `data` (JSON, or raw bytes)."""
    d = VMDir(name, root)
    d.create()
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    d.file("state.json").write_bytes(raw)
    return d


def remote(tmp_path: Path) -> ssh.Remote:
    return ssh.Remote(
        "127.0.0.1", 2222, "root", tmp_path / "key", tmp_path / "known", "rehearse-x", tmp_path / "ssh.ctl"
    )


# --- Security 1: the host key and the guest-writable share -----------------


def test_a_planted_symlink_in_the_share_is_never_followed(tmp_path: Path) -> None:
    """The issue's attack at the host's side: the guest replaced the key
    files in its share by links to host files; the next `up` makes its keys
    and hands the guest the host key, and no host file changes."""
    d = VMDir("x", private_root(tmp_path))
    d.create()
    lifecycle.ensure_keys(d)
    lifecycle.share_host_key(d)
    pinned = d.file("known_hosts").read_text()
    victim, victim2 = tmp_path / "authorized_keys", tmp_path / "other"
    victim.write_text("ssh-ed25519 AAAA precious\n")
    victim2.write_text("precious too\n")
    shared = d.file("shared")
    (shared / "ssh_host_ed25519_key").unlink()
    (shared / "ssh_host_ed25519_key.pub").unlink()
    (shared / "ssh_host_ed25519_key.pub").symlink_to(victim)
    (shared / "ssh_host_ed25519_key").symlink_to(victim2)
    (shared / "junk").mkdir()
    (shared / "junk" / "link").symlink_to(tmp_path)

    lifecycle.ensure_keys(d)
    lifecycle.share_host_key(d)

    assert victim.read_text() == "ssh-ed25519 AAAA precious\n"
    assert victim2.read_text() == "precious too\n"
    assert tmp_path.exists()
    assert d.file("known_hosts").read_text() == pinned  # the key stayed the one pinned
    assert sorted(p.name for p in shared.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
        st = os.lstat(shared / name)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert (shared / name).read_bytes() == d.file(name).read_bytes()
    assert stat.S_IMODE(d.file("ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700


def test_the_share_itself_as_a_symlink_is_refused(tmp_path: Path) -> None:
    d = VMDir("x", private_root(tmp_path))
    d.create()
    lifecycle.ensure_keys(d)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("keep")
    d.file("shared").symlink_to(elsewhere)
    with pytest.raises(RehearseError, match="symbolic link"):
        lifecycle.share_host_key(d)
    assert (elsewhere / "keep").read_text() == "keep"


def test_a_vm_whose_key_is_still_in_the_share_gets_a_new_one(tmp_path: Path) -> None:
    """Migration: a VM made when the host key lived in shared/. That copy
    could be the guest's work (here a link to a key that is not the VM's):
    it is never read; a new key is made and pinned."""
    d = VMDir("x", private_root(tmp_path))
    d.create()
    d.fresh_dir("shared")
    ssh.generate_key(tmp_path / "planted", "planted")
    (d.file("shared") / "ssh_host_ed25519_key").symlink_to(tmp_path / "planted")
    (d.file("shared") / "ssh_host_ed25519_key.pub").symlink_to(tmp_path / "planted.pub")
    planted_pub = (tmp_path / "planted.pub").read_text()
    lifecycle.ensure_keys(d)
    new_pub = d.file("ssh_host_ed25519_key.pub").read_text()
    assert new_pub != planted_pub
    assert d.file("known_hosts").read_text().split() == ["rehearse-x", *new_pub.split()[:2]]
    assert (tmp_path / "planted.pub").read_text() == planted_pub


# --- Security 3: no user ssh configuration --------------------------------

ISOLATED = ["IdentityAgent=none", "ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes"]


def uses_no_configuration(argv: list[str]) -> bool:
    pairs = list(itertools.pairwise(argv))
    return ("-F", "none") in pairs and all(("-o", o) in pairs for o in ISOLATED)


def test_every_ssh_reads_no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = remote(tmp_path)
    assert uses_no_configuration(ssh.argv(r, ["true"]))
    assert uses_no_configuration(ssh.argv(r, ["true"], master=False))
    assert uses_no_configuration(ssh.argv(r, tty=True))
    assert uses_no_configuration(ssh.close_master_argv(r))
    runs: list[tuple[list[str], dict[str, str] | None]] = []
    path = "/nix/store/" + "a" * 32 + "-x"
    # The guest has room and lacks the path (copy_closure asks it first).
    room = subprocess.CompletedProcess(["ssh"], 0, f"{1 << 40}\n{path}\n", "")
    monkeypatch.setattr(ssh, "run", lambda *a, **kw: room)
    monkeypatch.setattr(nix, "sizes", lambda paths: dict.fromkeys(paths, 1))

    def run(argv: list[str], **kw: object) -> process.Completed:
        runs.append((list(argv), kw.get("env")))  # type: ignore[arg-type]
        return process.Completed(list(argv), 0, "", "")

    monkeypatch.setattr(process, "run", run)
    target.VM(VMDir("x", tmp_path), VMState(name="x"), r).copy([path])
    [(argv, env)] = runs
    assert argv[0] == "nix-copy-closure" and env is not None
    assert uses_no_configuration(env["NIX_SSHOPTS"].split())


def test_a_percent_in_a_path_is_no_ssh_token(tmp_path: Path) -> None:
    r = remote(tmp_path / "100%h")
    argv = ssh.argv(r, ["true"])
    assert f"IdentityFile={tmp_path}/100%%h/key" in argv
    assert f"UserKnownHostsFile={tmp_path}/100%%h/known" in argv
    assert f"ControlPath={tmp_path}/100%%h/ssh.ctl" in argv


def with_hostile_ssh_config(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` where the user's ~/.ssh/config says `ProxyCommand false`.
    ssh finds ~ in the password database, not in $HOME, so the process
    gets a private mount namespace with an /etc/passwd whose entry for us
    has a home of the test's."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  ProxyCommand false\n  ForwardAgent yes\n  LocalForward 127.0.0.1:1 127.0.0.1:1\n"
    )
    me = os.getuid()
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        f = line.split(":")
        if len(f) == 7 and f[2] == str(me):
            f[5] = str(home)
        lines.append(":".join(f))
    (tmp_path / "passwd").write_text("\n".join(lines) + "\n")
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --mount needs privileges)")
    return subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private"),
            *("sh", "-c", 'mount --bind "$0" /etc/passwd && exec "$@"', str(tmp_path / "passwd")),
            *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_hostile_ssh_config_does_not_apply(tmp_path: Path) -> None:
    r = remote(tmp_path)
    argv = ssh.argv(r)
    # The rig works: plain ssh takes the hostile configuration …
    plain = with_hostile_ssh_config(tmp_path, ["ssh", "-G", "root@127.0.0.1"])
    assert "proxycommand false" in plain.stdout and "forwardagent yes" in plain.stdout
    # … and rehearse's does not.
    resolved = with_hostile_ssh_config(tmp_path / "again", [argv[0], "-G", *argv[1:]])
    assert resolved.returncode == 0, resolved.stderr
    assert "proxycommand" not in resolved.stdout
    assert "forwardagent no" in resolved.stdout and "localforward" not in resolved.stdout
    assert "identityagent none" in resolved.stdout


# --- Security 4: the HTTP check uses no proxy -----------------------------


@pytest.fixture
def yes_proxy() -> Iterator[str]:
    """An HTTP proxy on 127.0.0.1 that answers 200 to everything."""

    class Yes(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Yes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_check_goes_through_no_proxy(tmp_path: Path, yes_proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", yes_proxy)
    monkeypatch.setenv("HTTP_PROXY", yes_proxy)
    import urllib.request

    # The proxy does answer for the URL (the rig works) …
    with urllib.request.urlopen("http://127.0.0.1:9/", timeout=5) as resp:
        assert resp.status == 200
    # … but the check asks 127.0.0.1:9 itself, where nothing listens.
    why = activation.run_check(remote(tmp_path), Check("http", "http://127.0.0.1:9/"), time.monotonic())
    assert why is not None and "127.0.0.1:9" in why


# --- Security 5: a pid without its start time is never the VM ----------------


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "100"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_down_never_kills_a_pid_without_its_start_time(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    root = private_root(tmp_path)
    vm_with_state(root, "ghost", {"name": "ghost", "pid": bystander.pid})
    vm_with_state(root, "wrongstart", {"name": "wrongstart", "pid": bystander.pid, "pid_start": 1})
    for name in ("ghost", "wrongstart"):
        result = rehearse("down", name, "--timeout", "1", state=root)
        assert result.returncode == 0, result.stderr
        assert "already stopped" in result.stderr
    time.sleep(0.2)
    assert bystander.poll() is None  # still running
    assert not state.pid_alive(bystander.pid, None)
    assert state.pid_alive(bystander.pid, state.process_start(bystander.pid))
    assert qemu.stop(bystander.pid, None, tmp_path / "no.sock", 1) == "already stopped"
    assert bystander.poll() is None
    assert VMDir("ghost", root).load().pid is None


def test_a_pid_that_is_no_number_is_a_broken_state(tmp_path: Path) -> None:
    root = private_root(tmp_path)
    for pid in (-1, 0, True, "1", 1.5):
        d = vm_with_state(root, "v", {"name": "v", "pid": pid, "pid_start": 5})
        with pytest.raises(RehearseError, match="broken"):
            d.load()


# --- Security 6: the state root's mode -------------------------------------


def test_an_open_existing_root_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "tmplike"
    root.mkdir()
    root.chmod(0o1777)
    for args in (("down", "x"), ("status",), ("destroy", "x"), ("console", "x")):
        result = rehearse(*args, state=root)
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert "can be written by other users (mode 1777)" in result.stderr
        assert "REHEARSE_STATE_DIR" in result.stderr and "Traceback" not in result.stderr
        assert stat.S_IMODE(root.stat().st_mode) == 0o1777
    with pytest.raises(RehearseError, match="written by other users"):
        VMDir("x", root).create()
    assert stat.S_IMODE(root.stat().st_mode) == 0o1777 and list(root.iterdir()) == []


def test_a_root_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory away")
    root = private_root(tmp_path)
    os.chown(root, 65534, 65534)
    with pytest.raises(RehearseError, match="belongs to another user") as e:
        VMDir("x", root).create()
    assert e.value.exit_code == ExitCode.USAGE
    assert root.stat().st_uid == 65534 and list(root.iterdir()) == []


def test_a_private_existing_root_keeps_its_mode(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    root.chmod(0o755)
    d = VMDir("x", root)
    d.create()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert stat.S_IMODE(d.path.stat().st_mode) == 0o700
    new = VMDir("x", tmp_path / "a" / "new-root")
    new.create()
    assert stat.S_IMODE(new.path.parent.stat().st_mode) == 0o700


def test_an_open_vm_directory_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    root = private_root(tmp_path)
    d = vm_with_state(root, "x", {"name": "x"})
    d.path.chmod(0o777)
    result = rehearse("down", "x", state=root)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "the directory of VM 'x'" in result.stderr and "Traceback" not in result.stderr
    assert stat.S_IMODE(d.path.stat().st_mode) == 0o777


def test_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    for args in (("status",), ("down", "x"), ("console", "x"), ("status", "--json")):
        result = rehearse(*args, state=f)
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert f"{f} is not a directory" in result.stderr and "Traceback" not in result.stderr
    assert f.read_text() == ""


def test_a_relative_state_dir_means_the_same_place_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REHEARSE_STATE_DIR", "rel")
    assert state.state_root() == tmp_path / "rel"


# --- Security 7: names and the probe cache ------------------------------


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    for bad in ("evil\n", "evil\n\n", ".kvm-probe", ".hidden", "a/b", ""):
        with pytest.raises(RehearseError, match="invalid VM name"):
            VMDir(bad)


def test_the_probe_cache_is_no_vm(tmp_path: Path) -> None:
    assert not state.NAME_RE.fullmatch(qemu.KVM_CACHE)
    root = private_root(tmp_path)
    (root / qemu.KVM_CACHE).write_text("boot tcg\n")
    (root / "kvm-probe").write_text("boot tcg\n")  # where older versions kept it
    (root / "stray").write_text("")
    (root / "has space").mkdir()
    (root / "has space" / "state.json").write_text("{}")
    vm_with_state(root, "good", {"name": "good"})
    for name in ("kvm-probe", "stray", "nosuch"):
        result = rehearse("down", name, state=root)
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert f"no VM named {name!r}" in result.stderr and "Traceback" not in result.stderr
    status = rehearse("status", "--json", state=root)
    assert status.returncode == 0, status.stderr
    assert [v["name"] for v in json.loads(status.stdout)] == ["good"]
    assert (root / "kvm-probe").read_text() == "boot tcg\n"
    with pytest.raises(RehearseError, match="in the way"):
        VMDir("kvm-probe", root).create()


# --- bad state ------------------------------------------------------------

BROKEN: dict[str, object | bytes] = {
    "empty": b"",
    "corrupt": b'{"name": "corrupt", ',
    "object": {},
    "notutf8": b"\xff\xfe",
    "list": [1],
    "other": {"name": "someone-else"},
    "badtypes": {"name": "badtypes", "forwards": [8080]},
}


def test_broken_state_files_do_not_break_status(tmp_path: Path) -> None:
    root = private_root(tmp_path)
    good = vm_with_state(root, "good", {"name": "good", "system": "/nix/store/x-sys"})
    for name, data in BROKEN.items():
        vm_with_state(root, name, data)
    result = rehearse("status", "--json", state=root)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["good"]["state"] == "stopped" and rows["good"]["system"] == "/nix/store/x-sys"
    assert "error" not in rows["good"]
    for name in BROKEN:
        assert rows[name]["state"] == "broken", name
        assert "is broken" in rows[name]["error"] and "state.json" in rows[name]["error"]
    table = rehearse("status", state=root)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert lines["good"].split()[1] == "stopped"
    assert all(lines[name].split()[1] == "broken" for name in BROKEN)
    # Commands on a broken VM say so; destroy removes it.
    down = rehearse("down", "empty", state=root)
    assert down.returncode == ExitCode.FAILED and "is broken" in down.stderr and "Traceback" not in down.stderr
    assert "rehearse destroy empty" in down.stderr
    gone = rehearse("destroy", "corrupt", state=root)
    assert gone.returncode == 0, gone.stderr
    assert not (root / "corrupt").exists() and good.path.exists()


def test_only_up_makes_a_vm_directory(tmp_path: Path) -> None:
    root = private_root(tmp_path)
    for args in (("down", "nosuch"), ("destroy", "nosuch"), ("console", "nosuch"), ("ssh", "nosuch", "true")):
        result = rehearse(*args, state=root)
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert "no VM named 'nosuch'" in result.stderr
    assert list(root.iterdir()) == []
    missing = tmp_path / "missing"
    assert rehearse("down", "nosuch", state=missing).returncode == ExitCode.USAGE
    assert rehearse("status", state=missing).returncode == 0
    assert not missing.exists()


def test_destroy_removes_a_half_made_vm(tmp_path: Path) -> None:
    root = private_root(tmp_path)
    half = VMDir("half", root)
    half.create()
    (half.path / "id_ed25519").write_text("")
    result = rehearse("destroy", "half", state=root)
    assert result.returncode == 0, result.stderr
    assert not half.path.exists()


def test_console_without_a_log(tmp_path: Path) -> None:
    root = private_root(tmp_path)
    vm_with_state(root, "quiet", {"name": "quiet"})
    result = rehearse("console", "quiet", state=root)
    assert result.returncode == ExitCode.FAILED
    assert "has no console log yet" in result.stderr and "Traceback" not in result.stderr


def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What os.fsync is called on, from now on: 'file' or 'dir'."""
    seen: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_state_writes_are_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = VMDir("x", private_root(tmp_path))
    d.create()
    d.save(VMState(name="x", system="/old"))
    seen = fsyncs(monkeypatch)
    d.save(VMState(name="x", system="/new"))
    assert seen == ["file", "dir"]
    assert d.load().system == "/new"
    assert stat.S_IMODE(d.file("state.json").stat().st_mode) == 0o600
    history = d.file("deploys.json")
    h.record(history, {"system": "/a"})
    assert seen == ["file", "dir", "file", "dir"]
    assert h.load(history) == [{"system": "/a"}]
    assert stat.S_IMODE(history.stat().st_mode) == 0o600

    # A write that fails half-way leaves the old state, whole.
    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        d.save(VMState(name="x", system="/lost"))
    assert d.load().system == "/new"
    assert sorted(p.name for p in d.path.iterdir() if p.name.startswith(".")) in ([], [".state.json.tmp"])


# --- QEMU options ---------------------------------------------------------


def test_qmp_path_commas_are_doubled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = VMDir("x", private_root(tmp_path))
    d.create()
    monkeypatch.setattr(VMDir, "socket", lambda self, name: Path("/run/a,b") / name)
    opts = qemu.runner_env(d, [], gui=False, tcg=True)["QEMU_OPTS"].split()
    assert opts[opts.index("-qmp") + 1] == "unix:/run/a,,b/qmp.sock,server=on,wait=off"
    assert opts[opts.index("-serial") + 1] == f"file:{d.path}/console.log"
    assert qemu.qemu_value("a,b,,c") == "a,,b,,,,c"


def test_qemu_reads_the_paths_as_given(tmp_path: Path) -> None:
    """What QEMU itself makes of the two options, in a directory with a
    comma: -qmp's option list needs the comma doubled, -serial file: takes
    the path as it is."""
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        pytest.skip("no QEMU")
    odd = tmp_path / "a,b"
    odd.mkdir()
    sock, log = odd / "qmp.sock", odd / "console.log"
    proc = subprocess.Popen(
        [
            *(binary, "-machine", "none", "-nodefaults", "-display", "none", "-S"),
            *("-serial", f"file:{log}", "-qmp", f"unix:{qemu.qemu_value(str(sock))},server=on,wait=off"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (sock.exists() and log.exists()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists() and log.exists(), proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()


def test_a_state_path_the_runner_cannot_carry_is_refused_before_anything(tmp_path: Path) -> None:
    for odd in ("a,b", "a b"):
        root = tmp_path / odd
        conf = tmp_path / "configuration.nix"
        conf.write_text("{ }")
        result = rehearse("up", str(conf), state=root)
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert "which the VM runner cannot pass to QEMU" in result.stderr and "Traceback" not in result.stderr
        assert not root.exists()
