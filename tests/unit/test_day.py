"""A working day with rehearse (issue 24, items 3, 6, 10, 11, 13, 14): each
run in-process, as from the command line, with processes faked."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearse.core.errors import ExitCode
from rehearse.host import nix
from rehearse.store.state import RecordedSource, ServerPort, VMDir, VMState
from tests.unit.test_clear_errors import error_of
from tests.unit.test_input import main


def made_from(root: Path, configuration: Path, name: str = "fripon") -> VMDir:
    d = VMDir(name, root)
    d.create()
    d.save(VMState(name=name, source=RecordedSource(configuration=str(configuration)), runner="/nix/store/x-vm"))
    return d


def test_up_of_another_file_under_a_vms_name_says_so(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 3: it used to say "nothing changed" (running) or start the VM of the first file."""
    (cwd / "configuration.nix").write_text("{ }")
    (cwd / "other.nix").write_text("{ }")
    d = made_from(cwd / "state", cwd / "configuration.nix")
    before = d.file("state.json").read_bytes()
    monkeypatch.setattr(nix, "vm_info", lambda source: nix.VMInfo("fripon", "fripon", True, [], []))
    monkeypatch.setattr(nix, "build", lambda *a, **kw: pytest.fail("built"))
    assert main("up", "./other.nix") == ExitCode.USAGE
    message, hint = error_of(capsys)
    assert message == (f"error: VM fripon was made from {cwd}/configuration.nix, not {cwd}/other.nix; nothing changed.")
    assert hint == (
        f"hint: `rehearse deploy fripon {cwd}/other.nix` switches fripon to it; "
        f"`rehearse up {cwd}/other.nix --name OTHER` makes another VM of it"
    )
    assert d.file("state.json").read_bytes() == before
    # Its own file still starts it (here: from its runner, which is not there: it would build).
    monkeypatch.setattr(nix, "build", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("would build")))
    assert main("up", "./configuration.nix") == ExitCode.FAILED
    assert "would build" in capsys.readouterr().err


def a_system(root: Path, port: int) -> Path:
    """A system whose server's sshd listens on `port`."""
    system = root / f"system-{port}"
    (system / "etc" / "ssh").mkdir(parents=True)
    (system / "etc" / "ssh" / "sshd_config").write_text(f"Port {port}\n")
    (system / "etc" / "systemd" / "system").mkdir(parents=True)
    (system / "etc" / "systemd" / "system" / "sshd.service").write_text("[Service]\n")
    return system


def test_status_shows_only_the_sshd_port_the_running_system_listens_on(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 11: after a deploy moved sshd from 22 to 2022, the line of 22 stayed."""
    import os

    from rehearse.machines import lifecycle
    from rehearse.store.state import process_start

    monkeypatch.setattr(lifecycle, "unpause", lambda vmdir, state: False)
    d = made_from(cwd / "state", cwd / "configuration.nix")
    state = d.load()
    state.pid, state.pid_start, state.ssh_port = os.getpid(), process_start(os.getpid()), 2222
    state.server_ssh = [ServerPort(2222 + 1, 22), ServerPort(2224, 2022)]
    state.system = str(a_system(cwd, 22))
    d.save(state)
    assert main("status") == ExitCode.OK
    out = capsys.readouterr().out
    assert "the server's own sshd (port 22) on 127.0.0.1:2223" in out and "port 2022" not in out
    state.system = str(a_system(cwd, 2022))  # the deploy that moved it
    d.save(state)
    assert main("status") == ExitCode.OK
    out = capsys.readouterr().out
    assert "the server's own sshd (port 2022) on 127.0.0.1:2224" in out and "port 22)" not in out


A = "/nix/store/aaaaaaaa0000000000000000000000aa-nixos-system-fripon-26.11"
B = "/nix/store/bbbbbbbb0000000000000000000000bb-nixos-system-fripon-26.11"
PROFILE = "/nix/var/nix/profiles/system"


def test_one_generation_is_the_booted_one() -> None:
    """Item 6: every generation holding the booted system was marked."""
    from rehearse.host import answers

    def booted(at: int) -> list[int]:
        out = (
            f"{PROFILE}-1-link {A} 100\n{PROFILE}-2-link {B} 200\n{PROFILE}-3-link {A} 300\n"
            f"current system-3-link\nrunning {A}\nbooted {A}\nbooted-at {at}\n"
        )
        return [g.number for g in answers.generations("fripon", out, PROFILE).generations if g.booted]

    assert booted(50) == [1]  # booted before any generation: the first deploy made generation 1 of it
    assert booted(350) == [3]  # restarted after generation 3
    assert booted(250) == [1]
    with pytest.raises(answers.BadAnswer):
        answers.generations("fripon", "booted-at soon\n", PROFILE)


def test_generation_rows_tell_the_generations_apart(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 6: two rows of the same name showed the same text; what rehearse
    deployed says when, from what and what changed; the server's rows say
    what rehearse promoted. Item 14: a stopped VM's are what rehearse recorded."""
    import json

    from rehearse.host.answers import Generation, Generations
    from rehearse.pipeline import deploy
    from rehearse.targets import target

    d = made_from(cwd / "state", cwd / "configuration.nix")
    deploys = [
        {"time": 1_000_000, "system": B, "result": "confirmed", "generation": 2, "source": "/srv/c.nix",
         "changes": "hello 2.12 → 2.12.1, restarts nginx.service"},
        {"time": 1_000_100, "system": A, "result": "rolled-back", "generation": 3, "source": "/srv/c.nix"},
    ]  # fmt: skip
    d.file("deploys.json").write_text(json.dumps(deploys))
    state = d.load()
    state.system = B
    d.save(state)
    # stopped: from what rehearse knows, and says so
    assert main("generations", "fripon") == ExitCode.OK
    out, err = capsys.readouterr()
    assert "fripon is not running: its deploys as rehearse recorded them; `rehearse up fripon` starts it" in err
    assert out.splitlines() == [
        f"     2  {time_of(1_000_000)}  bbbbbbbb nixos-system-fripon-26.11  deployed: "
        "hello 2.12 → 2.12.1, restarts nginx.service (from /srv/c.nix)"
    ]
    assert main("generations", "fripon", "--json") == ExitCode.OK
    [row] = json.loads(capsys.readouterr().out)
    assert row["generation"] == 2 and row["current"] and row["system"] == B
    # running: the VM's own, each row its hash; the one booted marked once
    gens = Generations([Generation(1, A, 100, True), Generation(2, B, 200, False), Generation(3, A, 300, False)], 2, B)
    monkeypatch.setattr(VMState, "alive", lambda self: True)
    monkeypatch.setattr(target.VM, "running", classmethod(lambda cls, vmdir: _Fake(gens)))
    assert main("generations", "fripon") == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"     1  {time_of(100)}  aaaaaaaa nixos-system-fripon-26.11  (booted)"
    assert lines[1] == f"*    2  {time_of(200)}  bbbbbbbb nixos-system-fripon-26.11"
    assert lines[2].startswith(f"        deployed {time_of(1_000_000)}: hello 2.12 → 2.12.1")
    assert lines[3] == f"     3  {time_of(300)}  aaaaaaaa nixos-system-fripon-26.11"
    assert len(lines) == 4
    # a dry run needs the VM: said before anything is built
    monkeypatch.setattr(VMState, "alive", lambda self: False)
    monkeypatch.setattr(nix, "build", lambda *a, **kw: pytest.fail("built"))
    assert main("deploy", "fripon", "--dry-run") == ExitCode.NOT_RUNNING
    message, hint = error_of(capsys)
    assert message.startswith("error: fripon is not running: a dry run asks the running VM what it runs")
    assert hint.startswith("hint: `rehearse up fripon`, then `rehearse deploy fripon --dry-run`")
    assert deploy.changes(None) is None


class _Fake:
    def __init__(self, gens: object) -> None:
        self.gens = gens

    def generations(self) -> object:
        return self.gens


def time_of(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def test_up_warns_of_the_servers_own_failed_assertions(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 10: they first appeared at the next deploy."""
    import os

    from rehearse.host import qemu

    (cwd / "configuration.nix").write_text("{ }")
    runner = cwd / "vm"
    (runner / "bin").mkdir(parents=True)
    (runner / "bin" / "run-fripon-vm").write_text("#!/bin/sh\n")
    (runner / "system").symlink_to(a_system(cwd, 22))
    monkeypatch.setattr(nix, "vm_info", lambda source: nix.VMInfo("fripon", "fripon", True, [], []))
    monkeypatch.setattr(nix, "build", lambda *a, **kw: [runner])
    failed = ["The ‘fileSystems’ option does not specify your root file system."]
    monkeypatch.setattr(nix, "server_eval", lambda source, **kw: nix.ServerEval(failed, None))
    monkeypatch.setattr(qemu, "kvm_works", lambda *a: True)
    monkeypatch.setattr(qemu, "runner_env", lambda *a, **kw: {})
    monkeypatch.setattr(qemu, "start", lambda *a, **kw: os.getpid())
    monkeypatch.setattr(qemu, "wait_for_ssh", lambda *a: None)
    assert main("up", "./configuration.nix") == ExitCode.OK
    err = capsys.readouterr().err
    assert err.count("the server itself could not build this configuration") == 1, err
    assert f"- {failed[0]}" in err
    assert err.index("fripon is up after") < err.index("the server itself could not build")


@pytest.fixture
def execed(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv `rehearse ssh`/`cp` would exec, with VM fripon running on port 2222."""
    import os

    from rehearse.machines import lifecycle

    made_from(cwd / "state", cwd / "configuration.nix")
    monkeypatch.setattr(lifecycle, "running", lambda vmdir: (vmdir.load(), lifecycle.remote_for(vmdir, 2222)))
    argvs: list[list[str]] = []

    def execvp(program: str, argv: list[str]) -> None:
        argvs.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvp", execvp)
    return argvs


@pytest.mark.parametrize(
    "argv",
    [
        ["ssh", "-L", "8080:127.0.0.1:80", "-N", "fripon"],
        ["ssh", "fripon", "-L", "8080:127.0.0.1:80", "-N"],
        ["ssh", "fripon", "--", "-L8080:127.0.0.1:80", "-N"],
        ["ssh", "-N", "fripon", "--", "-L", "8080:127.0.0.1:80"],
    ],
)
def test_ssh_options_reach_ssh(execed: list[list[str]], argv: list[str]) -> None:
    """Item 13: `-L` was refused (before the name) or run as a command (after it)."""
    assert main(*argv) == 0
    [ssh] = execed
    at = ssh.index("root@127.0.0.1")
    assert ssh[at - 3 : at] == ["-L", "8080:127.0.0.1:80", "-N"] or ssh[at - 3 : at] == [
        "-N",
        "-L",
        "8080:127.0.0.1:80",
    ]
    assert ssh[at + 1 :] == [] and "-t" not in ssh
    assert "ClearAllForwardings=yes" not in ssh and "ControlPath=none" in ssh  # a connection of its own
    assert "StrictHostKeyChecking=yes" in ssh


def test_ssh_without_options_is_as_it_was(execed: list[list[str]]) -> None:
    assert main("ssh", "fripon", "--", "ls", "-L", "/") == 0
    [ssh] = execed
    assert ssh[-3:] == ["root@127.0.0.1", "--", "ls -L /"]
    assert "ClearAllForwardings=yes" in ssh and "ControlMaster=auto" in ssh


def test_cp_copies_through_the_vms_channel(cwd: Path, execed: list[list[str]]) -> None:
    assert main("cp", "-r", "./a:b", "fripon:/root/x y") == 0
    [scp] = execed
    assert scp[0] == "scp" and scp[-4:] == ["-r", "--", "./a:b", "root@127.0.0.1:/root/x y"]
    assert scp[scp.index("-P") + 1] == "2222" and "-p" not in scp
    assert f"IdentityFile={cwd}/state/fripon/id_ed25519" in scp and "StrictHostKeyChecking=yes" in scp


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["cp", "a", "b"], "error: which VM? Name one, as NAME:PATH, in the paths to copy from or to."),
        (["cp", "web:/a", "fripon:/b"], "error: one VM at a time: the paths name fripon, web."),
        (["cp", "fripon:/a"], "error: what to copy where? Give the sources, then the target."),
    ],
)
def test_cp_without_one_vm(
    execed: list[list[str]], capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert main(*argv) == ExitCode.USAGE
    assert error_of(capsys)[0] == says
    assert execed == []


def test_ssh_config_is_a_host_block_with_the_pinned_key(
    cwd: Path, execed: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main("ssh-config", "fripon") == 0
    d = cwd / "state" / "fripon"
    assert capsys.readouterr().out.splitlines() == [
        "Host fripon",
        "  HostName 127.0.0.1",
        "  Port 2222",
        "  User root",
        f'  IdentityFile "{d}/id_ed25519"',
        "  IdentitiesOnly yes",
        f'  UserKnownHostsFile "{d}/known_hosts"',
        "  HostKeyAlias rehearse-fripon",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  ForwardAgent no",
    ]


def test_ssh_config_of_a_stopped_vm(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made_from(cwd / "state", cwd / "configuration.nix")
    assert main("ssh-config", "fripon") == ExitCode.NOT_RUNNING
    assert error_of(capsys) == ("error: VM 'fripon' is not running.", "hint: `rehearse up fripon` starts it")


def test_the_servers_listing_marks_what_rehearse_promoted(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 6: the server's rows did not say which rehearse promoted."""
    import json

    from rehearse.host.answers import Generation, Generations
    from rehearse.pipeline import deploy

    d = made_from(cwd / "state", cwd / "configuration.nix")
    promotions = d.file("promotions-x.json")
    promotions.write_text(json.dumps([{"time": 1_000_000, "system": B, "result": "confirmed", "source": "/srv/c.nix"}]))

    class Server:
        history = promotions

        def generations(self) -> Generations:
            return Generations([Generation(7, A, 100, True), Generation(8, B, 200, False)], 8, B)

        def close(self) -> None:
            pass

    deploy.generations("fripon", False, Server())  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == [
        f"     7  {time_of(100)}  aaaaaaaa nixos-system-fripon-26.11  (booted)",
        f"*    8  {time_of(200)}  bbbbbbbb nixos-system-fripon-26.11",
        f"        promoted by rehearse {time_of(1_000_000)}: from /srv/c.nix",
    ]


def test_what_a_deploy_changed_in_a_few_words() -> None:
    from rehearse.host.plan import ClosureDiff, Units
    from rehearse.pipeline import deploy
    from rehearse.targets.target import Plan

    diff = ClosureDiff([("hello", "2.12", "2.12.1")], [("curl", "8.1")], [("wget", "1.21")], [], 0)
    units = Units(stop=("a.service",), start=("a.service", "b.service"), restart=("nginx.service",))
    plan = Plan(A, Path(B), diff, units, [])
    assert (
        deploy.changes(plan)
        == "hello 2.12 → 2.12.1, +curl, -wget, restarts nginx.service, restarts a.service, starts b.service"
    )
    assert deploy.changes(Plan(A, Path(B), None, Units(), [])) == ""
    assert (
        deploy.changes(Plan(A, Path(B), diff, Units(restart=tuple(f"u{i}.service" for i in range(20))), []))[-1] == "…"
    )
