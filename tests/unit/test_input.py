"""Bad input gets a clear error and exit code 2, changes nothing and never
shows a traceback: rehearse.toml, forwards, durations, names, and commands
that run out of time."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from rehearse import config
from rehearse.commands import cli, requests
from rehearse.config import Check
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import process, qemu, scripts, ssh
from rehearse.machines import lifecycle
from rehearse.pipeline import deploy
from rehearse.pipeline.run import Report
from rehearse.store.state import RecordedSource, VMDir, VMState, check_name, process_start
from rehearse.targets import activation
from tests.unit.conftest import serving

# --- rehearse.toml ----------------------------------------------------------


def load(tmp_path: Path, text: str) -> config.Settings:
    (tmp_path / "rehearse.toml").write_text(text)
    return config.load_settings(tmp_path)


def bad_toml(tmp_path: Path, text: str) -> RehearseError:
    with pytest.raises(RehearseError) as e:
        load(tmp_path, text)
    assert e.value.exit_code == ExitCode.USAGE
    for line in e.value.message.splitlines():  # every error names the file
        assert line.startswith(f"{tmp_path / 'rehearse.toml'}: "), line
    return e.value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("flake = 1", 'flake: expected a flake reference REF#NAME, e.g. ".#fripon", found 1'),
        ('flake = "."', 'flake: expected a flake reference REF#NAME, e.g. ".#fripon", found "."'),
        ("forward = [8080]", 'forward[0]: expected a "HOST:GUEST" string, e.g. "8080:80", found 8080'),
        ("forward = 8080", 'forward: expected a list of "HOST:GUEST" strings, found 8080'),
        ('forward = "8080:80"', 'forward: expected a list of "HOST:GUEST" strings, found "8080:80"'),
        ('forward = ["8080"]', 'forward[0]: invalid forward "8080": expected HOST:GUEST'),
        ('forward = ["70000:80"]', 'forward[0]: invalid forward "70000:80": port 70000 is out of range'),
        ('forward = ["８０８０:80"]', 'forward[0]: invalid forward "８０８０:80"'),
        ('forward = ["8080:80", "8080:81"]', "forward: host port 8080 (tcp) is forwarded twice"),
        ('ssh_timeout = "abc"', 'ssh_timeout: expected a number of seconds from 1 to 86400, found "abc"'),
        ("ssh_timeout = -1", "ssh_timeout: expected a number of seconds from 1 to 86400, found -1"),
        ('confirm_timeout = "x"', 'confirm_timeout: expected a number of seconds from 5 to 86400, found "x"'),
        ("confirm_timeout = 0", "confirm_timeout: expected a number of seconds from 5 to 86400, found 0"),
        ("confirm_timeout = 0.5", "confirm_timeout: expected a number of seconds from 5 to 86400, found 0.5"),
        ("confirm_timeout = nan", "confirm_timeout: expected a number of seconds from 5 to 86400, found nan"),
        ("confirm_timeout = inf", "confirm_timeout: expected a number of seconds from 5 to 86400, found inf"),
        ("confirm_timeout = true", "confirm_timeout: expected a number of seconds from 5 to 86400, found true"),
        ("activation_timeout = 5", "activation_timeout: expected a number of seconds from 10 to 86400, found 5"),
        ("checks = [1]", "checks[0]: expected a check: a table with one of cmd, tcp or http, found 1"),
        ('checks = ["mycmd"]', 'checks[0]: expected a check: a table with one of cmd, tcp or http, found "mycmd"'),
        ('checks = { cmd = "x" }', 'checks: expected a list of checks, e.g. [ { cmd = "…" }, { tcp = 8080 } ], found'),
        ('checks = [{ tcp = "abc" }]', 'checks[0]: tcp: expected a port number from 1 to 65535, found "abc"'),
        ("checks = [{ tcp = 70000 }]", "checks[0]: tcp: expected a port number from 1 to 65535, found 70000"),
        ("checks = [{ tcp = 0 }]", "checks[0]: tcp: expected a port number from 1 to 65535, found 0"),
        ("checks = [{ tcp = true }]", "checks[0]: tcp: expected a port number from 1 to 65535, found true"),
        ('checks = [{ http = "ftp://127.0.0.1/" }]', "checks[0]: http: expected an http:// or https:// URL"),
        ('checks = [{ http = "http://" }]', "checks[0]: http: expected an http:// or https:// URL"),
        ('checks = [{ http = "http://127.0.0.1:99999/" }]', "checks[0]: http: expected an http:// or https:// URL"),
        ('checks = [{ http = "http://127.0.0.1/é" }]', "checks[0]: http: expected an http:// or https:// URL"),
        ('checks = [{ cmd = "" }]', 'checks[0]: cmd: expected a shell command as a string, found ""'),
        ('checks = [{ cmd = "a\\u0000b" }]', 'checks[0]: cmd: expected a shell command as a string, found "a\\u0000b"'),
        ("checks = [{ cmd = 1 }]", "checks[0]: cmd: expected a shell command as a string, found 1"),
        ('checks = [{ cmd = "x", tcp = 80 }]', "checks[0]: expected exactly one of cmd, tcp or http, found"),
        ("checks = [{}]", "checks[0]: expected exactly one of cmd, tcp or http, found {}"),
        ('checks = [{ cmd = "x", timeout = 3 }]', "checks[0]: unknown key timeout in"),
        (
            "configuration = 1",
            'configuration: expected the path of a configuration.nix, e.g. "./configuration.nix", found 1',
        ),
        ("nixpkgs = 1", "nixpkgs: expected a path or anything `-I nixpkgs=` takes"),
        ('nixpkgs = ""', 'nixpkgs: expected a path or anything `-I nixpkgs=` takes, e.g. "../nixpkgs", found ""'),
        ('configuration = "a.nix"\nflake = ".#x"', "configuration and flake are both set"),
        ('"a\\nb" = 1', '"a\\nb": unknown setting'),
    ],
)
def test_a_wrong_value_in_rehearse_toml_says_where_what_and_what_was_expected(
    tmp_path: Path, text: str, says: str
) -> None:
    e = bad_toml(tmp_path, text)
    assert f"{tmp_path / 'rehearse.toml'}: {says}" in e.message


def test_rehearse_toml_is_checked_whole(tmp_path: Path) -> None:
    e = bad_toml(tmp_path, 'flake = 1\nforward = 8080\nconfirm_timout = 60\nchecks = [{ tcp = "abc" }]\n')
    assert len(e.message.splitlines()) == 4  # every error at once, not one per run
    assert e.hint and "did you mean confirm_timeout?" in e.hint


def test_a_good_rehearse_toml_becomes_values(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        'nixpkgs = "https://example.org/nixpkgs.tar.gz"\nconfiguration = "srv/configuration.nix"\n'
        'forward = ["8080:80", "udp/5353:53", "8080:80"]\nssh_timeout = 1.5\nconfirm_timeout = 7.2\n'
        "activation_timeout = 900\n"
        'checks = [{ cmd = "systemctl is-active nginx" }, { tcp = 8080 }, { http = "https://127.0.0.1:8443/x?y" }]\n',
    )
    assert s.nixpkgs == "https://example.org/nixpkgs.tar.gz"
    assert s.configuration == tmp_path.resolve() / "srv" / "configuration.nix"
    assert s.forward == (qemu.Forward(8080, 80), qemu.Forward(5353, 53, "udp"))  # the same forward twice is one
    assert (s.ssh_timeout, s.confirm_timeout, s.activation_timeout) == (1.5, 8.0, 900.0)  # the VM's: whole, up
    assert s.checks == (
        Check("cmd", "systemctl is-active nginx"),
        Check("tcp", "8080"),
        Check("http", "https://127.0.0.1:8443/x?y"),
    )
    assert config.load_settings(tmp_path / "nowhere") == config.Settings()
    assert config.Settings().activation_timeout == 600.0


def test_rehearse_toml_that_is_not_a_readable_file(tmp_path: Path) -> None:
    toml = tmp_path / "rehearse.toml"
    toml.mkdir()
    with pytest.raises(RehearseError, match=r"rehearse.toml: is a directory; expected a TOML file") as e:
        config.load_settings(tmp_path)
    assert e.value.exit_code == ExitCode.USAGE
    toml.rmdir()
    toml.write_bytes(b'flake = ".#caf\xe9"\n')  # Latin-1
    with pytest.raises(RehearseError, match=r"rehearse.toml: is not UTF-8 text \(byte 0xe9 at offset 14\)"):
        config.load_settings(tmp_path)
    toml.unlink()
    toml.symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(
        RehearseError, match=r"rehearse.toml: a symbolic link to .*elsewhere.toml, which does not exist"
    ):
        config.load_settings(tmp_path)
    (tmp_path / "elsewhere.toml").write_text("confirm_timeout = 9\n")
    assert config.load_settings(tmp_path).confirm_timeout == 9.0  # a link to a file is fine
    toml.unlink()
    os.mkfifo(toml)  # reading it would block for ever
    with pytest.raises(RehearseError, match=r"rehearse.toml: is not a regular file"):
        config.load_settings(tmp_path)
    toml.unlink()
    toml.symlink_to(toml)
    with pytest.raises(RehearseError, match=r"rehearse.toml: cannot read it: Too many levels of symbolic links"):
        config.load_settings(tmp_path)
    toml.unlink()
    toml.write_text("a = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(RehearseError, match=r"rehearse.toml: "):
        config.load_settings(tmp_path)


def test_cli_names_the_file_in_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rehearse.toml").write_text("forward = 8080\n")
    with pytest.raises(RehearseError) as e:
        config.load_settings()
    assert e.value.message == 'rehearse.toml: forward: expected a list of "HOST:GUEST" strings, found 8080'


def stopped_vm(root: Path, name: str = "fripon") -> VMDir:
    d = VMDir(name, root)
    d.create()
    d.save(VMState(name=name, source=RecordedSource("/srv/configuration.nix")))
    return d


def main(*argv: str) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    assert isinstance(e.value.code, int)
    return e.value.code


def test_a_check_that_cannot_run_stops_deploy_before_anything(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """{ tcp = "abc" } used to be found after the activation, as a traceback."""
    stopped_vm(cwd / "state")
    (cwd / "rehearse.toml").write_text('checks = [{ tcp = "abc" }]\n')
    assert main("deploy", "fripon", "--yes") == ExitCode.USAGE  # not NOT_RUNNING: the file comes first
    err = capsys.readouterr().err
    assert 'error: rehearse.toml: checks[0]: tcp: expected a port number from 1 to 65535, found "abc"' in err
    assert "Traceback" not in err


def test_deploy_and_rollback_get_the_checks_and_timeouts(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[object] = []

    done = Report(name="fripon", action="deploy", source="", exit_code=0)

    def run_deploy(req: deploy.DeployRequest) -> Report:
        got.append(req)
        return done

    def rollback(*a: object, **kw: object) -> Report:
        got.append((a, kw))
        return done

    monkeypatch.setattr(deploy, "run_deploy", run_deploy)
    monkeypatch.setattr(deploy, "rollback", rollback)
    (cwd / "rehearse.toml").write_text("activation_timeout = 900\nconfirm_timeout = 30\nchecks = [{ tcp = 8080 }]\n")
    assert main("deploy", "fripon") == 0
    assert main("deploy", "fripon", "--activation-timeout", "45.5", "--confirm-timeout", "12") == 0
    assert main("rollback", "fripon", "--activation-timeout", "20") == 0
    first, second, rb = got
    assert isinstance(first, deploy.DeployRequest) and isinstance(second, deploy.DeployRequest)
    assert first.checks == (Check("tcp", "8080"),)
    assert (first.activation_timeout, first.confirm_timeout) == (900.0, 30.0)
    assert (second.activation_timeout, second.confirm_timeout) == (46.0, 12.0)
    assert rb == ((deploy.RollbackRequest("fripon", None, 30.0, activation_timeout=20.0, yes=False),), {})


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("deploy", "fripon", "--confirm-timeout", "0"), "--confirm-timeout: expected a number of seconds from 5"),
        (("deploy", "fripon", "--confirm-timeout", "nan"), "found nan"),
        (("deploy", "fripon", "--confirm-timeout", "inf"), "found inf"),
        (("deploy", "fripon", "--confirm-timeout", "0.5"), "found 0.5"),
        (("deploy", "fripon", "--activation-timeout", "-1"), "--activation-timeout: expected a number of seconds"),
        (("rollback", "fripon", "--confirm-timeout", "nan"), "--confirm-timeout: expected"),
        (("rollback", "fripon", "--activation-timeout", "1e9"), "found 1000000000"),
        (("up", "fripon", "--timeout", "nan"), "--timeout: expected a number of seconds from 1 to 86400, found nan"),
        (("up", "fripon", "--timeout", "-1"), "--timeout: expected a number of seconds from 1 to 86400, found -1"),
        (("down", "fripon", "--timeout", "nan"), "--timeout: expected a number of seconds from 0 to 86400, found nan"),
        (("down", "fripon", "--timeout", "-1"), "--timeout: expected a number of seconds from 0 to 86400, found -1"),
        (("destroy", "fripon", "--timeout", "nan"), "found nan"),
        (("destroy", "fripon", "--timeout", "inf"), "found inf"),
        (("down", "fripon", "--timeout", "６０"), "not a number of seconds: '６０'"),
        (("up", "fripon", "--name", ""), "invalid VM name ''"),
    ],
)
def test_bad_flags_exit_2_and_change_nothing(
    cwd: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    d = stopped_vm(cwd / "state")
    before = {p.name: p.stat().st_mtime_ns for p in d.path.iterdir()}
    assert main(*argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert {p.name: p.stat().st_mtime_ns for p in d.path.iterdir()} == before  # destroy with nan destroyed nothing


def test_empty_words_are_refused_not_ignored(cwd: Path) -> None:
    stopped_vm(cwd / "state")
    (cwd / "rehearse.toml").write_text('configuration = "c.nix"\n')
    (cwd / "c.nix").write_text("{ }")
    settings = config.load_settings()
    for argv, says in (
        (["up", ""], "the configuration or VM name is empty"),
        (["up", "--flake", ""], "--flake is empty"),
        (["up", "fripon", "--name", ""], "invalid VM name ''"),  # used to start fripon, --name ignored
    ):
        with pytest.raises(RehearseError, match=says) as e:
            requests.up_request(cli.parser().parse_args(argv), settings)
        assert e.value.exit_code == ExitCode.USAGE
    with pytest.raises(RehearseError, match="the configuration's path is empty"):
        config.resolve_source("", None, [], settings)  # `deploy fripon ''` used to deploy the recorded one


def test_paths_that_cannot_be_looked_at_are_usage_errors(cwd: Path) -> None:
    settings = config.Settings()
    with pytest.raises(RehearseError, match="File name too long") as e:
        requests.up_request(cli.parser().parse_args(["up", "x" * 300]), settings)
    assert e.value.exit_code == ExitCode.USAGE
    (cwd / "loop.nix").symlink_to(cwd / "loop.nix")
    with pytest.raises(RehearseError, match="Too many levels of symbolic links"):  # was RuntimeError
        config.resolve_source("loop.nix", None, [], settings)


# --- forwards ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", ["８０８０:80", "80:٨٠", "0:80", "80:0", "65536:80", "80:99999", "8080", "TCP/80:80", "80:80\n", " 80:80"]
)
def test_bad_forwards(spec: str) -> None:
    with pytest.raises(RehearseError, match="invalid forward") as e:
        config.parse_forward(spec)
    assert e.value.exit_code == ExitCode.USAGE
    assert "\n" not in e.value.message  # the spec is shown escaped


def test_good_forwards() -> None:
    assert config.parse_forward("1:65535") == qemu.Forward(1, 65535)
    assert config.parse_forward("udp/5353:53") == qemu.Forward(5353, 53, "udp")
    assert config.parse_forward("tcp/08080:80") == qemu.Forward(8080, 80)


def test_one_host_port_goes_to_one_guest_port(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.unique_forwards([qemu.Forward(8080, 80), qemu.Forward(8080, 80), qemu.Forward(8080, 80, "udp")]) == [
        qemu.Forward(8080, 80),
        qemu.Forward(8080, 80, "udp"),
    ]
    # --forward flags, and rehearse.toml with --forward
    args = cli.parser().parse_args(["up", "fripon", "--forward", "8080:80", "--forward", "8080:81"])
    with pytest.raises(RehearseError, match="host port 8080 \\(tcp\\) is forwarded twice") as e:
        requests.up_request(args, config.Settings())
    assert e.value.exit_code == ExitCode.USAGE
    args = cli.parser().parse_args(["up", "fripon", "--forward", "8080:81"])
    with pytest.raises(RehearseError, match="forwarded twice: to the VM's port 80 and to its port 81"):
        requests.up_request(args, config.Settings(forward=(qemu.Forward(8080, 80),)))
    # the configuration's forwardPorts with --forward: an error before a port is even tried
    monkeypatch.setattr(qemu, "port_free", lambda port, host="127.0.0.1": pytest.fail("checked a port"))
    from_config = [{"from": "host", "host": {"port": 8080}, "guest": {"port": 80}, "proto": "tcp"}]
    with pytest.raises(RehearseError, match="forwarded twice"):
        lifecycle.plan_forwards(from_config, (qemu.Forward(8080, 81),))
    # a VM's recorded forwards with new ones (`up NAME --forward …`)
    with pytest.raises(RehearseError, match="forwarded twice"):
        lifecycle.check_forwards([qemu.Forward(8080, 80), qemu.Forward(8080, 81)])


def test_the_ssh_port_is_never_a_forwarded_one() -> None:
    """A forward may use a port of the range `up` picks SSH ports from
    (2222…): the SSH port skips it."""
    start = qemu.pick_port(2222)
    assert qemu.pick_port(2222, taken={start}) > start


# --- names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", ".x", "-x", "..", "a/b", "x\n", "evil\n", "a b", "a" * 64, "é", "café", "ａ", "x\0", "٣"]
)
def test_bad_vm_names(name: str) -> None:
    with pytest.raises(RehearseError, match="invalid VM name") as e:
        check_name(name)
    assert e.value.exit_code == ExitCode.USAGE


def test_good_vm_names() -> None:
    for name in ("fripon", "a" * 63, "web-1.example_2", "0"):
        assert check_name(name) == name


# --- commands that run out of time ------------------------------------------


def gone(pid: int) -> bool:
    for _ in range(50):
        if process_start(pid) is None:  # gone, or a zombie no one reaped yet
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("streaming", [False, True])
def test_a_command_past_its_timeout_is_killed_with_its_group(tmp_path: Path, streaming: bool) -> None:
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait"]
    on_stderr = (lambda line: None) if streaming else None
    t = time.monotonic()
    with pytest.raises(process.TimedOut, match=r"command did not finish within 0.5 s and was killed: sh -c") as e:
        process.run(argv, timeout=0.5, on_stderr=on_stderr)
    assert time.monotonic() - t < 5
    assert e.value.exit_code == ExitCode.FAILED and e.value.timeout == 0.5
    assert gone(int(pidfile.read_text()))  # the child's child too

    # check=False: a failed result, for the callers that poll
    r = process.run(argv, timeout=0.5, check=False, on_stderr=on_stderr)
    assert r.timed_out and r.returncode == -9 and r.stdout == "started\n"
    assert "killed after 0.5 s" in r.stderr
    assert gone(int(pidfile.read_text()))
    assert not process.run(["true"], timeout=5).timed_out


def test_a_daemon_holding_the_pipes_does_not_hang_a_timed_out_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # setsid: the daemon leaves the group, keeps stdout, and outlives the kill
    argv = ["sh", "-c", f"setsid sleep 60 & echo $! > {pidfile}; wait"]
    t = time.monotonic()
    try:
        r = process.run(argv, timeout=0.5, check=False)
        assert r.timed_out and time.monotonic() - t < 10
    finally:
        os.kill(int(pidfile.read_text()), 9)


def cmd_remote(tmp_path: Path) -> ssh.Remote:
    return ssh.Remote("127.0.0.1", 2222, "root", tmp_path / "k", tmp_path / "kh", "rehearse-x")


class Clock:
    """time.monotonic and time.sleep for run_check, without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_cmd_check_past_its_timeout_is_a_failed_try(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("rehearse.targets.activation.time.monotonic", clock.monotonic)
    monkeypatch.setattr("rehearse.targets.activation.time.sleep", clock.sleep)
    calls: list[tuple[list[str], float | None]] = []
    answers = iter([True, True, False])  # timed out twice, then passed

    def fake_run(
        remote: ssh.Remote, command: list[str], *, check: bool = True, timeout: float | None = None, **kw: object
    ) -> process.Completed:
        calls.append((command, timeout))
        assert timeout is not None and not check
        clock.now += timeout
        if next(answers):
            return process.Completed(["ssh"], -9, "", "rehearse: killed", timed_out=True)
        return process.Completed(["ssh"], 0, "", "")

    monkeypatch.setattr(ssh, "run", fake_run)
    check = Check("cmd", "sleep 100")
    assert activation.run_check(cmd_remote(tmp_path), check, deadline=clock.now + 200) is None
    assert len(calls) == 3
    command, timeout = calls[0]
    assert command[:2] == ["sh", "-c"] and command[-2:] == ["30", "sleep 100"]  # the guest's limit, 30 s a try
    assert timeout == 40  # the host's, a little longer

    # Still failing at its deadline: the check's failure, said plainly.
    answers = iter([True] * 100)
    calls.clear()
    why = activation.run_check(cmd_remote(tmp_path), check, deadline=clock.now + 45)
    assert why == "`sleep 100` did not finish within 5 s"
    assert [t for _, t in calls] == [40, 15]  # the last try gets what is left, at least 5 s (+10 on the host)


def test_a_cmd_check_killed_by_the_guests_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("rehearse.targets.activation.time.monotonic", clock.monotonic)
    monkeypatch.setattr("rehearse.targets.activation.time.sleep", clock.sleep)

    def fake_run(remote: ssh.Remote, command: list[str], **kw: object) -> process.Completed:
        clock.now += int(command[-2])
        return process.Completed(["ssh"], 124, "", "")

    monkeypatch.setattr(ssh, "run", fake_run)
    why = activation.run_check(cmd_remote(tmp_path), Check("cmd", "sleep 100"), deadline=clock.now)
    assert why == "`sleep 100` did not finish within 5 s"


def test_the_guest_side_limit_runs_the_command_as_given(tmp_path: Path) -> None:
    """The wrapper run_check sends, run here by a local shell: the check's
    command reaches `sh -c` as it is, and is ended at the limit."""
    script = scripts.guest("check.sh")
    ok = process.run(["sh", "-c", script, "check", "5", "echo \"$0\" 'a  b'; exit 3"], check=False, timeout=10)
    assert (ok.returncode, ok.stdout) == (3, "sh a  b\n")
    t = time.monotonic()
    slow = process.run(["sh", "-c", script, "check", "1", "sleep 30"], check=False, timeout=10)
    assert slow.returncode == 124 and time.monotonic() - t < 5


def test_an_http_check_on_something_that_is_not_http(no_proxy: None) -> None:
    """An SSH server on the port: http.client raises BadStatusLine, which is
    no OSError: it used to end the deploy with a traceback."""

    def greet(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    server = serving(greet)
    port = server.getsockname()[1]
    try:
        why = activation.run_check(
            cmd_remote(Path("/nonexistent")), Check("http", f"http://127.0.0.1:{port}/"), time.monotonic()
        )
    finally:
        server.close()
    assert why is not None and why.startswith(f"http http://127.0.0.1:{port}/: ")


def test_a_stream_keeps_stdin_open_for_words_after_its_input() -> None:
    """deploy's activation session: the script and the registration go
    first, byte-counted (head -c reads no further), then rehearse's words."""
    argv = ["sh", "-c", 'head -c 3; echo; while read -r w; do echo "got $w"; [ "$w" = end ] && exit 0; done']
    with process.stream(argv, input="abcconfirm\n", keep_stdin=True) as s:
        lines = iter(s)
        assert next(lines) == "abc"
        assert next(lines) == "got confirm"
        assert s.send("end\n")
        assert next(lines) == "got end"
        assert list(lines) == []
    assert not s.send("late\n")  # the command is gone: False, no exception


def test_the_guests_first_look_comes_in_its_log() -> None:
    st = activation.Activation(nonce="n0")
    assert st.feed("@@rehearse-n0 failed=a.service b.service ") == "failed"
    assert st.feed("@@rehearse-n0 rc=0") == "rc"
    assert st.failed == ["a.service", "b.service"] and st.rc == 0 and st.switched_at is not None
    assert st.feed("@@rehearse-other failed=x.service") is None  # another nonce: plain output
    assert st.failed == ["a.service", "b.service"]
