"""Property-based tests (hypothesis) of what users type: VM names, forwards
and rehearse.toml. Whatever the input, rehearse answers with a value that is
well-formed or with a RehearseError of exit code 2 — never another exception."""

from __future__ import annotations

import datetime
import math
import re
import string
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rehearse import config
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import qemu
from rehearse.store.state import check_name

# Modest, so the unit suite stays fast; no deadline: a shared CPU is slow at times.
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text TOML can hold: any character but lone surrogates, which no UTF-8 file can.
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


# --- names ------------------------------------------------------------------

NAME_CHARS = string.ascii_letters + string.digits + "-_."


def is_name(s: str) -> bool:
    """The language of VM names, written independently of state.NAME_RE:
    1 to 63 ASCII letters, digits, '-', '_' and '.', the first a letter or
    digit."""
    return 1 <= len(s) <= 63 and all(c in NAME_CHARS for c in s) and s[0] in string.ascii_letters + string.digits


names = st.one_of(
    st.text(max_size=70),
    st.text(st.sampled_from(NAME_CHARS + "/\n\0 é٣ａ"), max_size=70),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", fullmatch=True),
)


@SETTINGS
@given(names)
def test_check_name_accepts_exactly_the_names(s: str) -> None:
    try:
        assert check_name(s) == s
    except RehearseError as e:
        assert e.exit_code == ExitCode.USAGE
        assert not is_name(s)
        return
    assert is_name(s)
    # a safe path component: one level below the root, nothing more
    root = Path("/state")
    assert "/" not in s and "\0" not in s and s not in (".", "..") and s.isprintable() and not s.isspace()
    assert (root / s).parent == root and (root / s).name == s


# --- forwards ---------------------------------------------------------------

forward_specs = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"((tcp|udp|TCP|x)/)?\d{1,6}:\d{1,6}", fullmatch=True),  # \d: any script's digits
    st.builds(lambda h, g: f"{h}:{g}", st.integers(-5, 70000), st.integers(-5, 70000)),
)


@SETTINGS
@given(forward_specs)
def test_parse_forward_gives_a_valid_forward_or_a_usage_error(spec: str) -> None:
    try:
        f = config.parse_forward(spec)
    except RehearseError as e:
        assert e.exit_code == ExitCode.USAGE
        return
    assert 1 <= f.host_port <= 65535 and 1 <= f.guest_port <= 65535 and f.proto in ("tcp", "udp")
    # what it read is what was written, in ASCII digits only
    m = re.fullmatch(r"(?:(tcp|udp)/)?([0-9]+):([0-9]+)", spec)
    assert m and (int(m[2]), int(m[3]), m[1] or "tcp") == (f.host_port, f.guest_port, f.proto)


@SETTINGS
@given(st.integers(1, 65535), st.integers(1, 65535), st.sampled_from(["tcp", "udp", None]))
def test_forward_round_trip(host: int, guest: int, proto: str | None) -> None:
    spec = f"{proto}/{host}:{guest}" if proto else f"{host}:{guest}"
    assert config.parse_forward(spec) == qemu.Forward(host, guest, proto or "tcp")


@SETTINGS
@given(st.lists(st.builds(qemu.Forward, st.integers(1, 5), st.integers(1, 3), st.sampled_from(["tcp", "udp"]))))
def test_unique_forwards(forwards: list[qemu.Forward]) -> None:
    try:
        unique = config.unique_forwards(forwards)
    except RehearseError as e:
        assert e.exit_code == ExitCode.USAGE
        assert len({(f.proto, f.host_port) for f in forwards}) < len(set(forwards))
        return
    assert set(unique) == set(forwards) and len(unique) == len({(f.proto, f.host_port) for f in forwards})


# --- rehearse.toml ----------------------------------------------------------

leaves = st.one_of(
    TEXT,
    st.integers(-(2**70), 2**70),
    st.floats(),  # nan and infinities included: TOML has them
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=10,
)
ports = st.one_of(st.integers(-2, 70000), leaves)
numbers = st.one_of(st.integers(-10, 100000), st.floats(-1, 100000), st.sampled_from([math.nan, math.inf]), leaves)
urls = st.sampled_from(["http://127.0.0.1:8080/", "https://h:99999/", "ftp://h/", "http://", "http://h/ é", ""])
good_checks = st.one_of(
    st.builds(lambda c: {"cmd": c}, st.text(string.printable, min_size=1, max_size=10)),
    st.builds(lambda p: {"tcp": p}, st.integers(1, 65535)),
    st.builds(lambda u: {"http": u}, st.just("http://127.0.0.1:8080/")),
)
checks = st.one_of(
    good_checks,
    st.dictionaries(st.sampled_from(["cmd", "tcp", "http", "timeout"]), st.one_of(ports, urls, TEXT), max_size=3),
)
good_forwards = st.builds(
    lambda h, g, p: f"{p}/{h}:{g}" if p else f"{h}:{g}",
    st.integers(1, 65535),
    st.integers(1, 65535),
    st.sampled_from(["tcp", "udp", None]),
)
forward_lists = st.lists(st.one_of(good_forwards, forward_specs, leaves), max_size=4)

# Per setting: good values, values near what it takes, and anything at all.
targeted = {
    "nixpkgs": st.one_of(st.sampled_from(["../np", "https://example.org/x.tar.gz"]), TEXT, values),
    "configuration": st.one_of(st.just("c.nix"), TEXT, values),
    "flake": st.one_of(st.just(".#fripon"), TEXT, values),
    "forward": st.one_of(st.lists(good_forwards, max_size=3), forward_lists, values),
    "ssh_timeout": st.one_of(st.floats(1, 86400), numbers),
    "confirm_timeout": st.one_of(st.integers(5, 86400), numbers),
    "activation_timeout": st.one_of(st.floats(10, 86400), numbers),
    "checks": st.one_of(st.lists(good_checks, max_size=3), st.lists(st.one_of(checks, leaves), max_size=3), values),
}
documents = st.tuples(
    st.fixed_dictionaries({}, optional=targeted),
    st.one_of(st.just({}), st.dictionaries(TEXT, values, max_size=2)),  # unknown settings, sometimes
).map(lambda both: {**both[1], **both[0]})


def well_typed(s: config.Settings) -> None:
    """What every Settings that load_settings returns is made of."""
    assert s.nixpkgs is None or (isinstance(s.nixpkgs, str) and s.nixpkgs and "\0" not in s.nixpkgs)
    assert s.configuration is None or (isinstance(s.configuration, Path) and s.configuration.is_absolute())
    assert s.flake is None or (isinstance(s.flake, str) and s.flake.partition("#")[2])
    assert s.configuration is None or s.flake is None
    assert all(
        isinstance(f, qemu.Forward) and 1 <= f.host_port <= 65535 and 1 <= f.guest_port <= 65535 for f in s.forward
    )
    assert len({(f.proto, f.host_port) for f in s.forward}) == len(s.forward)
    for value, bounds in (
        (s.ssh_timeout, config.SSH_WAIT),
        (s.confirm_timeout, config.CONFIRM),
        (s.activation_timeout, config.ACTIVATION),
    ):
        assert isinstance(value, float) and bounds.minimum <= value <= bounds.maximum
        assert not bounds.whole or value.is_integer()
    for c in s.checks:
        assert isinstance(c, config.Check) and isinstance(c.target, str) and c.target
        if c.kind == "tcp":
            assert 1 <= int(c.target) <= 65535
        elif c.kind == "http":
            assert urllib.parse.urlsplit(c.target).scheme in ("http", "https")
        else:
            assert c.kind == "cmd" and "\0" not in c.target


def load_text(data: bytes) -> config.Settings | RehearseError:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rehearse.toml"
        path.write_bytes(data)
        try:
            s = config.load_settings(Path(d))
        except RehearseError as e:
            assert e.exit_code == ExitCode.USAGE
            for line in e.message.splitlines():  # every error names the file
                assert line.startswith(f"{path}: "), line
            return e
    well_typed(s)
    return s


@SETTINGS
@given(documents)
def test_rehearse_toml_gives_settings_or_a_usage_error(doc: dict[str, Any]) -> None:
    load_text(tomli_w.dumps(doc).encode())


@SETTINGS
@given(st.one_of(st.binary(max_size=60), TEXT.map(str.encode)))
def test_any_bytes_as_rehearse_toml(data: bytes) -> None:
    load_text(data)


def test_a_document_with_every_setting_loads() -> None:
    """The generator above can write a good file too (a sanity check of the
    TOML writer with the types it is given)."""
    doc = {
        "nixpkgs": "../np",
        "configuration": "c.nix",
        "forward": ["8080:80"],
        "ssh_timeout": 10,
        "confirm_timeout": 5.5,
        "activation_timeout": 60,
        "checks": [{"cmd": "true"}, {"tcp": 22}, {"http": "http://127.0.0.1/"}],
    }
    s = load_text(tomli_w.dumps(doc).encode())
    assert isinstance(s, config.Settings) and s.confirm_timeout == 6.0 and len(s.checks) == 3
    assert isinstance(load_text(tomli_w.dumps({"x": datetime.date(2024, 1, 1)}).encode()), RehearseError)
