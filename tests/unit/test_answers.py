"""The boundary where what a guest or a server answers is read (answers.py):
hostile answers — option-like words, paths outside the store or outside
what was asked, escape sequences, bytes that are not UTF-8, huge and empty
outputs — never reach an argv, the terminal or a state file unvetted."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rehearse.core import output
from rehearse.core.errors import ExitCode
from rehearse.host import answers, nix, process
from rehearse.host.answers import BadAnswer
from rehearse.host.plan import Units
from rehearse.targets import activation
from rehearse.targets.target import Plan, PushOptions
from tests.unit.test_target import CURRENT, SYSTEM, A, B, Processes, vm

PROFILE = "/nix/var/nix/profiles/system"
OPTION_ATTACK = "999999999999\n--option\nplugin-files\n/root/.local/state/rehearse/evil/xchg/evil.so\n"

# What a hostile guest prints: option-like words, paths outside the store,
# almost-store paths, escape sequences, control characters, bidirectional
# overrides, text that was not UTF-8 (process.run shows it as \xNN), huge
# and empty outputs.
HOSTILE_WORDS = st.sampled_from(
    [
        "--option",
        "plugin-files",
        "-x",
        "/etc/passwd",
        "/nix/store/../../etc/passwd",
        "/nix/store/" + "e" * 32 + "-e",  # e is not in Nix's base32
        "/nix/store/" + "a" * 31 + "-short",
        "/nix/store/" + "a" * 32 + "-.hidden",
        A + "/sub",
        A + "\x1b[2J",
        "\x1b]0;owned\x07",
        "\x1b[31mred\x1b[0m",
        "\r\x1b[K",
        "\u202eevil",
        "\\xff\\xfe",
        "",
        " ",
        "0x10",
        "-1",
        "1e9",
        "١٢٣",  # digits, but not ASCII ones
    ]
)
HOSTILE_TEXT = st.one_of(
    st.text(),
    st.lists(st.one_of(HOSTILE_WORDS, st.text(max_size=20)), max_size=12).map("\n".join),
    st.binary().map(lambda b: b.decode("utf-8", errors="backslashreplace")),
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def vetted_or_refused(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except BadAnswer as e:
        assert e.exit_code == ExitCode.BAD_ANSWER
        assert not CONTROL.search(e.message), e.message
        assert "nothing was done" in e.message
        return None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE_TEXT)
def test_room_takes_only_a_number_and_paths_it_was_asked_about(out: str) -> None:
    room = vetted_or_refused(answers.room, "web", out, {A, B})
    if room is not None:
        assert room.free >= 0
        assert set(room.missing) <= {A, B}


@settings(max_examples=300)
@given(HOSTILE_TEXT)
def test_generations_are_store_paths_and_numbers(out: str) -> None:
    gens = vetted_or_refused(answers.generations, "web", out, PROFILE)
    if gens is not None:
        assert gens.running == "" or nix.STORE_PATH.fullmatch(gens.running)
        for g in gens.generations:
            assert nix.STORE_PATH.fullmatch(g.system) and g.number >= 0 and g.date >= 0


@settings(max_examples=300)
@given(HOSTILE_TEXT)
def test_settled_says_a_store_path_and_printable_lines(out: str) -> None:
    s = vetted_or_refused(answers.settled, "web", out)
    if s is not None:
        assert s.current == "" or nix.STORE_PATH.fullmatch(s.current)
        assert not any(CONTROL.search(m) for m in s.messages)


@settings(max_examples=300)
@given(HOSTILE_TEXT)
def test_dry_activate_gives_unit_names_and_printable_lines(out: str) -> None:
    u = vetted_or_refused(answers.dry_activate, "web", out)
    if u is not None:
        for name in (*u.stop, *u.restart, *u.reload, *u.start, *u.skip):
            assert answers.UNIT.fullmatch(name)
        assert not any(CONTROL.search(x) for x in (*u.other, *u.swap_off))


@settings(max_examples=200)
@given(HOSTILE_TEXT)
def test_host_keys_and_failed_units_are_what_they_say(out: str) -> None:
    for key in vetted_or_refused(answers.host_keys, "web", out) or []:
        assert answers.HOST_KEY.fullmatch(key)
    for unit in vetted_or_refused(answers.failed_units, "web", out) or []:
        assert answers.UNIT.fullmatch(unit)


@settings(max_examples=300)
@given(HOSTILE_TEXT)
def test_free_text_and_the_terminal_never_carry_an_escape(out: str) -> None:
    assert not CONTROL.search(answers.text(out).replace("\n", "").replace("\t", ""))
    assert len(answers.text(out)) <= answers.MAX_TEXT
    assert "\x1b" not in answers.console(out.encode("utf-8", errors="surrogateescape"))


@settings(max_examples=200)
@given(HOSTILE_TEXT)
def test_the_terminal_sink_shows_only_rehearses_own_colours(out: str) -> None:
    err = io.StringIO()
    saved = sys.stderr
    sys.stderr = err
    try:
        output.warn(out)
        output.error("failed", hint=out)
    finally:
        sys.stderr = saved
    shown = re.sub(r"\x1b\[[0-9;]*m", "", err.getvalue())
    assert not CONTROL.search(shown.replace("\n", "").replace("\t", ""))


@given(st.integers(min_value=0, max_value=10), st.sampled_from(["--option", "x", "/tmp/a", ""]))
def test_an_activations_markers_are_numbers_and_verdicts(n: int, word: str) -> None:
    st_ = activation.Activation(nonce="n0", who="web")
    st_.feed(f"@@rehearse-n0 rc={n}")
    st_.feed(f"@@rehearse-n0 generation={n}")
    assert st_.rc == n and st_.generation == (n or None)
    for key in ("rc", "generation", "result", "failed"):
        with pytest.raises(BadAnswer):
            st_.feed(f"@@rehearse-n0 {key}={word}\x1b[2J")


def test_a_verdicts_reason_is_made_printable() -> None:
    assert answers.result("web", "rolled-back check failed\x1b]0;x\x07 4") == "rolled-back check failed\\x1b]0;x\\x07 4"
    assert answers.result("web", "confirmed") == "confirmed"


def test_the_option_attack_is_refused_before_nix_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer that made the host's Nix load a file the guest wrote
    (issue 22): refused, and no nix-store or nix-copy-closure runs."""
    procs = Processes(monkeypatch)
    procs.answer("sh", stdout=OPTION_ATTACK)
    with pytest.raises(BadAnswer) as e:
        vm(tmp_path).push(Plan(CURRENT, SYSTEM, None, Units(), [A, B]), PushOptions(copy=True))
    assert [a[0] for a in procs.argvs] == ["ssh"]
    assert "the VM x answered something that is not a store path: '--option'; nothing was done" in str(e.value)


def test_a_path_it_was_not_asked_about_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    procs = Processes(monkeypatch)
    procs.answer("sh", stdout=f"{1 << 40}\n{CURRENT}\n")  # a real store path, not asked about
    with pytest.raises(BadAnswer):
        vm(tmp_path).push(Plan(CURRENT, SYSTEM, None, Units(), [A, B]), PushOptions(copy=True))
    assert [a[0] for a in procs.argvs] == ["ssh"]


def test_nix_is_never_given_a_word_that_is_not_a_store_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(process, "run", lambda argv, **kw: calls.append(argv))
    for fn in (nix.sizes, nix.dump_db):
        with pytest.raises(Exception, match="not a store path"):
            fn([A, "--option"])
    with pytest.raises(Exception, match="not a store path"):
        nix.copy_closure("root@127.0.0.1", ["plugin-files"], [])
    assert calls == []


def test_a_huge_answer_is_refused() -> None:
    with pytest.raises(BadAnswer):
        answers.room("web", "1\n" + (A + "\n") * (answers.MAX_ANSWER // len(A)), {A})


def test_an_empty_answer_is_refused_where_a_number_is_due() -> None:
    with pytest.raises(BadAnswer):
        answers.room("web", "", {A})
    assert answers.running_system("web", "") == ""
    assert answers.generations("web", "", PROFILE).generations == []


def test_bytes_that_are_not_utf8_are_shown_not_raised() -> None:
    r = process.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'/nix/store/\\xff\\xfe\\n')"])
    assert r.stdout == "/nix/store/\\xff\\xfe\n"
    with pytest.raises(BadAnswer):
        answers.running_system("web", r.stdout)
    with process.stream([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'a\\xffb\\n')"]) as lines:
        assert list(lines) == ["a\\xffb"]


def test_the_console_drops_colours_and_escapes_the_rest() -> None:
    shown = answers.console(b"\x1b[0;32m  OK  \x1b[0m started\r\n\x1b]0;owned\x07\xff\n")
    assert shown == "  OK   started\n\\x1b]0;owned\\x07\\xff\n"


def test_check_output_is_printable(monkeypatch: pytest.MonkeyPatch) -> None:
    from rehearse.config import Check

    monkeypatch.setattr(
        activation.ssh, "run", lambda *a, **kw: subprocess.CompletedProcess([], 1, "", "bad\x1b[2J\x1b]0;t\x07")
    )
    why = activation.run_check(None, Check("cmd", "true"), 0)  # type: ignore[arg-type]
    assert why is not None and "\x1b" not in why and "\\x1b[2J" in why


def test_the_guests_rollback_line_says_its_reason_in_words() -> None:
    line = "rehearse: rolling back to /nix/store/aaaa-nixos-system-x (not-confirmed)"
    assert (
        answers.log_line(line)
        == "rehearse: rolling back to /nix/store/aaaa-nixos-system-x (no confirmation came in time)"
    )
    assert answers.log_line("setting up /etc...") == "setting up /etc..."
    assert "\x1b" not in answers.log_line("\x1b]0;pwned\x07 (not-confirmed)")
