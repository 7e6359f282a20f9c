"""Nix's progress read from what Nix 2.8 really printed (tests/unit/data,
made by its record.sh), and how rehearse shows it on and off a terminal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rehearse.core import output
from rehearse.core.errors import RehearseError
from rehearse.host import nix, process
from rehearse.host.progress import Failed, Finished, Message, Started, Tracker, store_name
from rehearse.host.progress_view import Renderer, status_line

DATA = Path(__file__).parent / "data"
LIVE = "\r\033[K"  # what output.live writes before each status line


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines(keepends=True)


def track(name: str) -> Tracker:
    tracker = Tracker()
    for line in lines(name):
        tracker.feed(line)
    return tracker


def planned(tracker: Tracker) -> set[str]:
    """The derivations of Nix's "these N derivations will be built:" list."""
    return {store_name(line.strip()) for line in tracker.plain_text().splitlines() if line.endswith(".drv")}


def render(name: str) -> Renderer:
    renderer = Renderer(interval=0)
    for line in lines(name):
        renderer(line)
    renderer.close()
    return renderer


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda stream=None: True)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


def live_lines(err: str) -> list[str]:
    return [part for part in err.split(LIVE) if part and "\n" not in part]


# The tracker


def test_builds_counted_and_named() -> None:
    t = track("nix-build-ok.jsonl")
    assert t.builds == (4, 4, 0, 0)
    assert (
        set(t.started) == set(t.built) == planned(t) == {"hello-2.12", "zlib-1.2.13", "openssl-3.0.8", "openssh-9.2p1"}
    )
    assert len(t.built) == 4
    assert t.built[-1] == "openssh-9.2p1"  # it needs the others
    assert t.errors == [] and t.failures == []


def test_running_builds_and_their_phases() -> None:
    tracker = Tracker()
    seen = []
    for line in lines("nix-build-ok.jsonl"):
        tracker.feed(line)
        seen.append(tracker.status().running)
    assert max(len(r) for r in seen) == 2  # -j2: two leaves side by side
    phases = {(r.name, r.phase) for running in seen for r in running}
    assert ("openssh-9.2p1", "buildPhase") in phases
    assert {p for _, p in phases} == {"", "unpackPhase", "buildPhase", "installPhase"}
    assert tracker.status().running == ()


def test_failed_build_named_with_its_log_tail() -> None:
    t = Tracker()
    events = [e for line in lines("nix-build-fail.jsonl") for e in t.feed(line)]
    assert [e for e in events if isinstance(e, Failed)] == t.failures
    assert [f.name for f in t.failures] == ["libfoo-0.1"]
    log = t.failures[0].log
    assert len(log) == 25  # of 32 lines
    assert log[0] == "libfoo-0.1: compiling unit 7"
    assert log[-1] == "foo.c:12: error: expected ';' before '}' token"
    assert set(t.started) == {"libfoo-0.1", "zlib-1.2.13"}
    assert t.built == []  # zlib was cut short by the failure, not built
    assert t.status().failed == 1


def test_error_text_is_plain() -> None:
    t = track("nix-build-fail.jsonl")
    assert re.fullmatch(r"error: builder for '/nix/store/\w{32}-libfoo-0\.1\.drv' failed with exit code 1", t.errors[0])
    assert "dependencies of derivation" in t.errors[1] and "openssh-9.2p1.drv' failed to build" in t.errors[1]
    assert "\x1b" not in t.plain_text()
    err = nix.evaluation_error(t.plain_text(), nix.Source(configuration=Path("/c.nix")))
    assert err.message.startswith("Nix failed on /c.nix:\nerror: builder for '/nix/store/")
    assert "these 3 derivations" not in err.message


def test_substitution_bytes_copied() -> None:
    tracker = Tracker()
    copied = []
    for line in lines("nix-build-substitute.jsonl"):
        tracker.feed(line)
        copied.append(tracker.status().copied)
    s = tracker.status()
    # "these 2 paths will be fetched (8.58 MiB download, …)", said Nix.
    assert "(8.58 MiB download" in tracker.plain_text()
    assert s.copied == s.copy_expected and round(s.copied / 2**20, 2) == 8.58
    assert tracker.paths_copied == 2
    assert copied == sorted(copied)
    assert any(0 < c < s.copy_expected for c in copied)
    assert tracker.started == [] and tracker.errors == []


def test_nix_copy_paths_without_bytes() -> None:
    t = track("nix-copy.jsonl")
    assert t.paths_copied == 2
    assert t.status().copied == 0  # Nix 2.8's `nix copy` sends no Progress for them


def test_vm_build_of_the_mini_nixpkgs() -> None:
    tracker = Tracker()
    evaluating = []
    for line in lines("nix-build-vm.jsonl"):
        tracker.feed(line)
        evaluating.append(status_line(tracker.status()))
    assert tracker.builds == (6, 6, 0, 0)
    assert {"nixos-vm", "run-nixos-vm", "nixos-system-fripon-25.11pre-mini", "etc-rehearse-recording"} <= set(
        tracker.built
    )
    assert set(tracker.built) == planned(tracker)
    assert any(re.fullmatch(r"evaluating /\S+/rig/nixpkgs/nixos/lib/eval-config\.nix", s) for s in evaluating)
    assert evaluating[-1] == "building 6/6"


def test_conflict_text_is_what_nix_prints_without_json() -> None:
    t = track("nix-eval-conflict.jsonl")
    assert t.plain_text() == (DATA / "nix-eval-conflict.txt").read_text()
    err = nix.evaluation_error(t.plain_text(), nix.Source(configuration=Path("/c.nix")))
    assert err.hint is not None and "services.timesyncd.enable = lib.mkDefault <value>;" in err.hint


def test_missing_nixpkgs_text() -> None:
    t = track("nix-eval-no-nixpkgs.jsonl")
    assert t.plain_text().startswith("error: file 'nixpkgs/nixos/lib/eval-config.nix' was not found")
    err = nix.evaluation_error(t.plain_text(), nix.Source(configuration=Path("/c.nix")))
    assert "-I nixpkgs=" in (err.hint or "")


def test_warning_and_trace_are_messages_not_errors() -> None:
    tracker = Tracker()
    events = [e for line in lines("nix-build-warn-trace.jsonl") for e in tracker.feed(line)]
    assert Message(1, "warning: unknown setting 'no-such-setting'") in events
    assert Message(0, "trace: a trace message") in events
    assert tracker.errors == []
    assert [e for e in events if isinstance(e, Started | Finished)] == [Started("traced-1.0"), Finished("traced-1.0")]


def test_codes_it_does_not_show_are_ignored() -> None:
    # Real lines of activities and results rehearse has no use for: Unknown
    # (0), QueryPathInfo (109), CopyPaths' start, SetExpected of FileTransfer.
    ignored = [
        line
        for line in lines("nix-build-substitute.jsonl") + lines("nix-copy.jsonl")
        if re.search(r'"type":(0|109)\}|"fields":\[101,\d+\]', line)
    ]
    assert len(ignored) > 10
    tracker = Tracker()
    assert [e for line in ignored for e in tracker.feed(line)] == []
    # A type Nix 2.8 does not define (a newer Nix may): a real Build start
    # renumbered is no build; results of an activity never started count nothing.
    start = next(line for line in lines("nix-build-ok.jsonl") if '"action":"start"' in line and '"type":105' in line)
    assert tracker.feed(start.replace('"type":105', '"type":199')) == []
    for line in lines("nix-build-fail.jsonl"):
        if '"action":"result"' in line:
            assert tracker.feed(line) == []
    assert tracker.started == [] and tracker.failures == [] and tracker.builds == (0, 0, 0, 0)
    assert tracker.status().running == () and tracker.plain_text() == ""


def test_malformed_and_plain_lines_pass_through() -> None:
    tracker = Tracker()
    real = lines("nix-build-ok.jsonl")[0].rstrip("\n")
    cut = real[: len(real) // 2]  # a line cut short: not JSON
    assert tracker.feed(cut + "\n") == [Message(3, cut, plain=True)]
    assert tracker.feed("@nix []") == [Message(3, "@nix []", plain=True)]
    for line in lines("nix-eval-conflict.txt"):  # Nix's plain output, as from a Nix without JSON
        assert tracker.feed(line) == [Message(3, line.rstrip("\n"), plain=True)]
    assert tracker.plain_text() == cut + "\n@nix []\n" + (DATA / "nix-eval-conflict.txt").read_text()


def test_store_name() -> None:
    assert store_name("/nix/store/cn5irjsxw4fpkgp9sn0r5d9f2p9qj33w-libfoo-0.1.drv") == "libfoo-0.1"
    assert (
        store_name("/nix/store/m1yx93yq6k50ckqbg7cgki1xijk34741-linux-firmware-20230210") == "linux-firmware-20230210"
    )


# Rendering off a terminal (pytest's stderr is not one)


def test_plain_lines_once_each(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-ok.jsonl").summary()
    err = capsys.readouterr().err.splitlines()
    names = ["hello-2.12", "zlib-1.2.13", "openssl-3.0.8", "openssh-9.2p1"]
    assert sorted(err[:-1]) == sorted([f"building {n}" for n in names] + [f"built {n}" for n in names])
    assert err[-1] == "built 4 derivations"
    assert err.index("built openssl-3.0.8") < err.index("building openssh-9.2p1")


def test_failure_shows_the_log_tail(capsys: pytest.CaptureFixture[str]) -> None:
    renderer = render("nix-build-fail.jsonl")
    err = capsys.readouterr().err.splitlines()
    i = err.index("libfoo-0.1 failed to build; the last 25 lines of its log:")
    assert err[i + 1] == "  libfoo-0.1: compiling unit 7"
    assert err[i + 25] == "  foo.c:12: error: expected ';' before '}' token"
    assert "building libfoo-0.1" in err and not any(line.startswith("built") for line in err)
    assert "error:" not in "\n".join(err[: i + 1])  # Nix's error is the caller's to raise
    assert renderer.tracker.errors


def test_warnings_and_traces_shown(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-warn-trace.jsonl")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: unknown setting 'no-such-setting'",
        "trace: a trace message",
        "building traced-1.0",
        "built traced-1.0",
    ]


def test_build_logs_only_with_debug(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-ok.jsonl")
    assert "unpacking" not in capsys.readouterr().err
    output.configure(debug=True)
    try:
        render("nix-build-ok.jsonl")
    finally:
        output.configure(debug=False)
    err = capsys.readouterr().err
    assert "openssh-9.2p1> openssh-9.2p1: a line on stderr" in err
    assert "these 4 derivations will be built:" in err


def test_substitution_summary(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-substitute.jsonl").summary()
    assert capsys.readouterr().err == "copied 2 paths (8.6 MiB)\n"


# Rendering on a terminal


@pytest.mark.usefixtures("terminal")
def test_live_line_of_builds(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-ok.jsonl")
    err = capsys.readouterr().err
    shown = live_lines(err)
    assert "\n" not in err  # no plain lines on a terminal
    assert err.endswith(LIVE) and output._live is None  # closed
    assert any(re.fullmatch(r"building 0/4 \(running 2: (hello-2\.12|zlib-1\.2\.13) \[\w+\], .+\)", s) for s in shown)
    assert "building 3/4 (running 1: openssh-9.2p1 [buildPhase])" in shown
    assert shown[-1] == "building 4/4"


@pytest.mark.usefixtures("terminal")
def test_live_line_of_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-fail.jsonl")
    err = capsys.readouterr().err
    assert "building 0/2 (running 1: zlib-1.2.13), 1 failed" in live_lines(err)
    assert "libfoo-0.1 failed to build; the last 25 lines of its log:\n" in err


@pytest.mark.usefixtures("terminal")
def test_live_line_of_copies(capsys: pytest.CaptureFixture[str]) -> None:
    render("nix-build-substitute.jsonl")
    shown = live_lines(capsys.readouterr().err)
    assert any(re.fullmatch(r"copied [1-7]\.\d MiB of 8\.6 MiB", s) for s in shown)
    assert shown[-1] == "copied 8.6 MiB of 8.6 MiB"


@pytest.mark.usefixtures("terminal")
def test_live_line_redrawn_at_most_every_interval(capsys: pytest.CaptureFixture[str]) -> None:
    renderer = Renderer(interval=10, clock=lambda: 100.0)
    for line in lines("nix-build-substitute.jsonl"):
        renderer(line)
    assert len(live_lines(capsys.readouterr().err)) == 1  # of ~150 Progress results


# Integration: process.run's on_stderr, nix.build


def test_on_stderr_gets_lines_and_stderr_is_kept() -> None:
    got: list[str] = []
    script = "import sys\nfor i in range(3): print(f'line {i}', file=sys.stderr)\nprint('out')"
    result = process.run([sys.executable, "-c", script], on_stderr=got.append)
    assert got == ["line 0", "line 1", "line 2"]
    assert result.stderr == "line 0\nline 1\nline 2\n" and result.stdout == "out\n"


def test_failing_on_stderr_does_not_block_the_child() -> None:
    def broken(line: str) -> None:
        raise ValueError(line)

    script = "import sys\nfor i in range(200000): print(i, file=sys.stderr)"
    result = process.run([sys.executable, "-c", script], on_stderr=broken, timeout=60)
    assert result.returncode == 0 and result.stderr.count("\n") == 200000


def _fake_nix_build(name: str, code: int, stdout: str, argvs: list[list[str]]) -> object:
    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        argvs.append([str(a) for a in argv])
        on_stderr = kw["on_stderr"]
        assert callable(on_stderr)
        for line in lines(name):
            on_stderr(line.rstrip("\n"))
        return subprocess.CompletedProcess(argv, code, stdout, "".join(lines(name)))

    return run


def test_build_reads_json_and_raises_nix_plain_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    argvs: list[list[str]] = []
    monkeypatch.setattr(process, "run", _fake_nix_build("nix-eval-conflict.jsonl", 1, "", argvs))
    source = nix.Source(configuration=tmp_path / "configuration.nix")
    with pytest.raises(RehearseError) as caught:
        nix.build(source, tmp_path / "settings.json", ["vm"], tmp_path / "vm")
    assert argvs[0][:4] == ["nix-build", "--log-format", "internal-json", "-v"]
    assert caught.value.message.startswith("the configuration does not evaluate as a VM:\nerror: The option `")
    assert "@nix" not in caught.value.message
    assert caught.value.hint and "lib.mkDefault" in caught.value.hint


def test_build_returns_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = "/nix/store/27zkrmiw9qyxdgk1z1ff8bdbiq9529ag-nixos-vm\n"
    monkeypatch.setattr(process, "run", _fake_nix_build("nix-build-vm.jsonl", 0, out, []))
    paths = nix.build(nix.Source(configuration=tmp_path / "c.nix"), tmp_path / "s.json", ["vm"], tmp_path / "vm")
    assert paths == [Path(out.strip())]
    assert capsys.readouterr().err.splitlines()[-2:] == ["built nixos-vm", "built 6 derivations"]
