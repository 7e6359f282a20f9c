"""Nix's own flags (issue 24, item 4): `--show-trace`, `--option NAME VALUE`,
`--keep-going`, `--builders SPEC` reach every Nix call that evaluates or
builds, as nixos-rebuild passes them; `-L` shows the build logs. Asserted at
the argv boundary: process.run records the commands, Nix never runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rehearse.core import output
from rehearse.core.errors import ExitCode
from rehearse.host import nix, process
from rehearse.host.progress_view import Renderer
from tests.unit.test_input import main

FLAGS = ["--show-trace", "--option", "cores", "2", "--option", "substitute", "false", "--keep-going"]
WORDS = ["--show-trace", "--keep-going", "--builders", "ssh://b x86_64-linux", "--option", "cores", "2"]
WORDS += ["--option", "substitute", "false"]


def recording(monkeypatch: pytest.MonkeyPatch, returncode: int = 1, stdout: str = "") -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: Sequence[str | Path], **kw: Any) -> process.Completed:
        calls.append([str(a) for a in argv])
        out = "{}" if argv[0] == "nix-instantiate" else stdout
        return process.Completed([str(a) for a in argv], returncode, out, "error: it failed\n")

    monkeypatch.setattr(process, "run", run)
    return calls


def test_up_hands_nixs_flags_to_the_evaluation(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cwd / "configuration.nix").write_text("{ }\n")
    calls = recording(monkeypatch)
    code = main("up", "./configuration.nix", *FLAGS, "--builders", "ssh://b x86_64-linux", "-L")
    assert code == ExitCode.CONFIG  # Nix failed (faked): its message, as before
    [argv] = [c for c in calls if c[0] == "nix-instantiate"]
    at = argv.index("--show-trace")
    assert argv[at : at + len(WORDS)] == WORDS
    assert "-L" not in argv  # nix-build refuses it: rehearse shows the logs itself


def test_every_nix_call_that_evaluates_or_builds_gets_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nix.use_flags(nix.NixFlags(show_trace=True, options=(("cores", "2"),)))
    source = nix.Source(configuration=tmp_path / "configuration.nix")
    calls = recording(monkeypatch, returncode=0, stdout=f"/nix/store/{'a' * 32}-system\n")
    nix.build(source, None, ["toplevel"], tmp_path / "out")
    nix.server_eval(source)
    drv = tmp_path / "system.drv"
    drv.write_text("")
    monkeypatch.setattr(nix.os, "readlink", lambda p: "/nix/store/x")
    nix.build_server(source, tmp_path / "out", drv_path=str(drv))
    flake = tmp_path / "flake"
    flake.mkdir()
    nix.ensure_flake_lock(nix.Source(flake=str(flake), attr="web"))
    assert [c[0] for c in calls] == ["nix-build", "nix-instantiate", "nix-store", "nix"]
    for argv in calls:
        at = argv.index("--show-trace")
        assert argv[at : at + 4] == ["--show-trace", "--option", "cores", "2"], argv


def test_no_flag_no_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = recording(monkeypatch, returncode=0, stdout=f"/nix/store/{'a' * 32}-system\n")
    nix.build(nix.Source(configuration=tmp_path / "c.nix"), None, ["toplevel"], tmp_path / "out")
    assert not {"--show-trace", "--keep-going", "--builders"} & set(calls[0])
    assert "--option" not in calls[0][: calls[0].index("--argstr")]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["deploy", "fripon", "--option", "", "2"], "error: --option NAME VALUE: the setting's name is empty."),
        (
            ["promote", "fripon", "--to", "root@h", "--build-host", "b", "--builders", "ssh://b"],
            "error: --build-host and --builders both say where Nix builds: give one.",
        ),
    ],
)
def test_bad_nix_flags_are_usage_errors(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    calls = recording(monkeypatch)
    assert main(*argv) == ExitCode.USAGE
    assert says in capsys.readouterr().err.splitlines()
    assert calls == []


def test_print_build_logs_shows_each_line_as_it_comes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda stream=None: False)
    drv = f"/nix/store/{'b' * 32}-hello-1.0.drv"
    lines = [
        '@nix {"action":"start","id":7,"type":105,"fields":["' + drv + '"]}',
        '@nix {"action":"result","id":7,"type":101,"fields":["compiling hello.c"]}',
    ]
    for build_logs, shown in ((True, True), (False, False)):
        view = Renderer(build_logs=build_logs)
        for line in lines:
            view(line)
        assert ("hello-1.0> compiling hello.c" in capsys.readouterr().err) is shown
