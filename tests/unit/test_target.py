"""The deploy pipeline's steps over a target, at the argv level: one process
wrapper (process.run) is patched, and the exact commands are asserted, as
nixos-rebuild-ng's tests do."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from rehearse.core.errors import RehearseError
from rehearse.core.values import Address
from rehearse.host import process, scripts
from rehearse.host.plan import Units
from rehearse.pipeline import deploy
from rehearse.store.state import VMDir, VMState
from rehearse.targets import target
from rehearse.targets.target import Plan, PushOptions, Server

SYSTEM = Path("/nix/store/" + "s" * 32 + "-nixos-system-fripon-25.11")
CURRENT = "/nix/store/" + "c" * 32 + "-nixos-system-fripon-25.11"
A = "/nix/store/" + "a" * 32 + "-a"
B = "/nix/store/" + "b" * 32 + "-b"

Answer = Callable[[list[str], dict[str, object]], process.Completed]


class Processes:
    """Every command rehearse runs, and canned answers by its first word
    (ssh: by what the remote command starts with)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.argvs: list[list[str]] = []
        self.kws: list[dict[str, object]] = []
        self.answers: dict[str, Answer] = {}
        monkeypatch.setattr(process, "run", self.run)

    def run(self, argv: list[str], **kw: object) -> process.Completed:
        argv = [str(a) for a in argv]
        self.argvs.append(argv)
        self.kws.append(kw)
        key = argv[-1].split()[0] if argv[0] == "ssh" else argv[0]
        answer = self.answers.get(key)
        return answer(argv, kw) if answer else process.Completed(argv, 0, "", "")

    def answer(self, key: str, stdout: str = "", rc: int = 0, stderr: str = "") -> None:
        self.answers[key] = lambda argv, kw: process.Completed(argv, rc, stdout, stderr)


@pytest.fixture
def procs(monkeypatch: pytest.MonkeyPatch) -> Processes:
    return Processes(monkeypatch)


def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: bool) -> Server:
    monkeypatch.setenv("NIX_SSHOPTS", "-i /home/me/.ssh/deploy")
    return Server(Address.parse("admin@fripon.example.org:2222"), VMDir("fripon", tmp_path), **kw)


def test_a_server_gets_the_closure_compressed_with_the_users_ssh_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Processes
) -> None:
    s = server(tmp_path, monkeypatch)
    pl = Plan(CURRENT, SYSTEM, None, None, [A, B], {A: 1000, B: 234})
    pushed = s.push(pl, PushOptions(use_substitutes=True))
    assert (pushed.registered, pushed.copied) == (0, 2)
    [argv] = procs.argvs
    assert argv == [
        "nix-copy-closure",
        "--to",
        "admin@fripon.example.org",
        "--gzip",
        "--use-substitutes",
        "--",
        str(SYSTEM),
    ]
    env = procs.kws[0]["env"]
    assert isinstance(env, dict)
    opts = env["NIX_SSHOPTS"]
    # The user's NIX_SSHOPTS, the port, strict host keys, rehearse's master.
    assert opts.startswith("-i /home/me/.ssh/deploy -o BatchMode=yes -o StrictHostKeyChecking=yes")
    assert "-p 2222" in opts and "ControlMaster=auto" in opts and "StrictHostKeyChecking=no" not in opts


def test_a_server_that_lacks_nothing_gets_no_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Processes
) -> None:
    assert (
        server(tmp_path, monkeypatch)
        .push(Plan(CURRENT, SYSTEM, None, None, []), PushOptions(use_substitutes=False))
        .copied
        == 0
    )
    assert procs.argvs == []


def test_a_failed_copy_activates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Processes) -> None:
    procs.answer("nix-copy-closure", rc=1, stderr="error: cannot add path: not a trusted user")
    with pytest.raises(RehearseError) as e:
        server(tmp_path, monkeypatch).push(Plan(CURRENT, SYSTEM, None, None, [A]), PushOptions(use_substitutes=False))
    assert "nothing was activated" in e.value.message and "not a trusted user" in e.value.message
    assert "trusted-users" in (e.value.hint or "")


def test_the_server_plan_asks_what_it_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Processes) -> None:
    procs.answer("nix-store", stdout=f"{SYSTEM}\n{A}\n{B}\n")  # the closure, on this machine
    procs.answer("sudo", stdout=f"{A}\n")  # what the server lacks (through sudo -n)
    s = server(tmp_path, monkeypatch, sudo=True)
    procs.answers["nix-store"] = lambda argv, kw: process.Completed(
        argv, 0, f"{SYSTEM}\n{A}\n{B}\n" if "--requisites" in argv else "4096\n", ""
    )
    pl = s.plan(CURRENT, SYSTEM)  # CURRENT is not on this machine
    assert (
        pl.to_push == [A]
        and pl.push_bytes == 4096
        and pl.push_sizes == {A: 4096}
        and pl.diff is None
        and pl.units is None
    )
    ask = next(a for a in procs.argvs if a[0] == "ssh")
    assert ask[-1] == "sudo -n xargs -r nix-store --check-validity --print-invalid --"
    i = procs.argvs.index(ask)
    assert procs.kws[i]["input"] == f"{SYSTEM}\n{A}\n{B}\n"


def test_a_server_without_nix_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Processes) -> None:
    procs.answer("sh", stdout=f"current {CURRENT}\n")
    with pytest.raises(RehearseError, match="no nix-store on its PATH"):
        server(tmp_path, monkeypatch).settle(60)
    procs.answer("sh", stdout=f"settled 20261127-1 rolled-back superseded 0\ncurrent {CURRENT}\nnix\n")
    settled = server(tmp_path, monkeypatch).settle(60)
    assert settled.current == CURRENT and "20261127-1" in settled.messages[0]
    assert procs.argvs[-1][-1].endswith(f"reach /run/rehearse 60 {shlex.quote(scripts.guest('settle.sh'))}")


def vm(tmp_path: Path) -> target.VM:
    from rehearse.host.ssh import Remote

    remote = Remote("127.0.0.1", 2222, "root", tmp_path / "id", tmp_path / "known_hosts", "rehearse-x")
    return target.VM(VMDir("x", tmp_path), VMState(name="x"), remote)


def test_a_vm_registers_without_copying_unless_asked(tmp_path: Path, procs: Processes) -> None:
    pl = Plan(CURRENT, SYSTEM, None, Units(), [A, B])
    pushed = vm(tmp_path).push(pl, PushOptions(copy=False))
    assert (pushed.registered, pushed.copied, pushed.pending) == (2, 0, [A, B])
    assert procs.argvs == []  # it goes with the activation: no round trip


def test_a_vm_copy_is_refused_when_its_store_has_no_room(tmp_path: Path, procs: Processes) -> None:
    procs.answer("sh", stdout=f"{10 * 1024 * 1024}\n{A}\n")  # room.sh: 10 MiB free, lacks A
    procs.answer("nix-store", stdout="1048576\n")
    with pytest.raises(RehearseError) as e:
        vm(tmp_path).push(Plan(CURRENT, SYSTEM, None, Units(), [A, B]), PushOptions(copy=True))
    assert "Nothing was changed" in e.value.message
    assert [a[0] for a in procs.argvs] == ["ssh", "nix-store"]  # no nix-copy-closure
    assert procs.argvs[0][-1].startswith("sh -c ") and procs.argvs[0][-1].endswith(f"room {A} {B}")


def test_a_vm_copy_sends_only_what_it_lacks(tmp_path: Path, procs: Processes) -> None:
    procs.answer("sh", stdout=f"{1 << 40}\n{B}\n")
    procs.answer("nix-store", stdout="100\n")
    vm(tmp_path).push(Plan(CURRENT, SYSTEM, None, Units(), [A, B]), PushOptions(copy=True))
    assert procs.argvs[-1] == ["nix-copy-closure", "--to", "root@127.0.0.1", "--", B]


def test_generations_are_read_from_the_profile(procs: Processes, tmp_path: Path) -> None:
    p = target.PROFILE
    procs.answer(
        "sh",
        stdout=f"{p}-1-link {CURRENT} 100\n{p}-2-link {SYSTEM} 200\n"
        f"current system-2-link\nrunning {SYSTEM}\nbooted {CURRENT}\n",
    )
    gens = vm(tmp_path).generations()
    assert [(g.number, g.booted) for g in gens.generations] == [(1, True), (2, False)]
    assert gens.current == 2 and gens.running == str(SYSTEM) and gens.system_of(1) == CURRENT
    assert procs.argvs[0][-1].endswith(f"generations {p}")


def test_the_guest_scripts_are_files_run_by_sh(procs: Processes, tmp_path: Path) -> None:
    assert scripts.sh("room.sh", A)[:2] == ["sh", "-c"]
    assert scripts.sh("room.sh", A)[2] == scripts.guest("room.sh")
    assert scripts.sh("room.sh", A)[3:] == ["room", A]


def test_a_server_rollback_switches_and_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Processes) -> None:
    """rollback --server: its generations, read over its SSH, and a `switch`
    (the boot entry goes back too) after the user's yes."""
    from rehearse.targets import activation

    seen: list[tuple[str, str, int | None]] = []

    def activate(remote: object, system: str, timeout: float, verify: object, **kw: object) -> activation.Outcome:
        seen.append((system, str(kw["action"]), kw.get("generation")))  # type: ignore[arg-type]
        return activation.Outcome(True, 0, "confirmed", [], generation=1)

    monkeypatch.setattr(activation, "activate", activate)
    monkeypatch.setattr(activation, "settle", lambda remote, timeout: activation.Settled(str(SYSTEM), []))
    p = target.PROFILE
    procs.answer("sh", stdout=f"{p}-1-link {CURRENT} 100\n{p}-2-link {SYSTEM} 200\ncurrent system-2-link\n")
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    VMDir("fripon").create()
    s = Server(Address.parse("admin@fripon.example.org:2222"), VMDir("fripon"))
    report = deploy.rollback(deploy.RollbackRequest("fripon", None, 30.0, server=s, yes=True)).to_json()
    assert report["result"] == "confirmed" and report.get("target") == "admin@fripon.example.org:2222"
    assert seen == [(CURRENT, "switch", 1)]
    from rehearse.store import history

    [entry] = history.load(s.history)
    assert entry["system"] == CURRENT and entry["action"] == "switch"


def test_copy_progress_counts_paths_and_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    progress = target.CopyProgress({A: 3 * 1024 * 1024, B: 1024 * 1024})
    progress.line("copying 2 paths...")
    progress.line(f"copying path '{A}' to 'ssh://admin@fripon.example.org'...")
    progress.line(f"copying path '{B}' to 'ssh://admin@fripon.example.org'...")
    err = capsys.readouterr().err
    assert "copying 2 paths..." in err
    assert "[1/2] 3.0 MiB of 4.0 MiB: a" in err and "[2/2] 4.0 MiB of 4.0 MiB: b" in err
