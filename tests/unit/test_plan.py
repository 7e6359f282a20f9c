"""Plan rendering: the closure diff and dry-activate's units as a person
reads them. Diffs are built by hand (ClosureDiff is a value); one test asks
real Nix for two small closures."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from rehearse import deploy, plan
from rehearse.plan import ClosureDiff, Units, parse_dry_activate, render
from tests.conftest import run

H = "/nix/store/" + "a" * 32 + "-"  # a store path prefix
ESC = re.compile(r"\033\[[0-9;]*m")


def diff(**kw: object) -> ClosureDiff:
    values: dict[str, object] = {"changed": [], "added": [], "removed": [], "rebuilt": [], "size_delta": 0}
    values.update(kw)
    return ClosureDiff(**values)  # type: ignore[arg-type]


def row(lines: list[str], key: str) -> str:
    """The line whose name column is `key`."""
    found = [line for line in lines if re.match(rf"^  [ +~-] {re.escape(key)}\s", line)]
    assert len(found) == 1, (key, lines)
    return found[0]


# --- parse_dry_activate -----------------------------------------------------

# What switch-to-configuration-ng prints in a dry run (nixpkgs
# pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs, in its order),
# around a line of the activation script's own dry run.
NG_OUTPUT = """\
would stop the following units: foo.service, old-timer.timer
would NOT stop the following changed units: ac-host.service, -.mount
would stop swap device: /dev/vdb
would activate the configuration...
setting up /etc...
would restart systemd
would reload the following units: dbus-broker.service, nix-daemon.socket
would restart the following units: sshd.service, systemd-journald.service
would start the following units: foo.service, nginx.service
"""

# The rig's mini switch-to-configuration (rig/nixpkgs/.../switch-to-configuration.py).
RIG_OUTPUT = """\
would stop the following units: broken.service
would activate the configuration...
would restart the following units: sshd.service
would start the following units: broken.service, hello.service
"""


def test_parse_switch_to_configuration_ng() -> None:
    units = parse_dry_activate(NG_OUTPUT)
    assert units == Units(
        stop=("foo.service", "old-timer.timer"),
        restart=("sshd.service", "systemd-journald.service"),
        reload=("dbus-broker.service", "nix-daemon.socket"),
        start=("foo.service", "nginx.service"),
        skip=("ac-host.service", "-.mount"),
        swap_off=("/dev/vdb",),
        restart_systemd=True,
        activate=True,
    )
    assert units.cycled == ("foo.service",)


def test_parse_the_rigs_output_and_keep_other_would_lines() -> None:
    units = parse_dry_activate(RIG_OUTPUT + "would create group nginx\nno boot loader to install (direct boot)\n")
    assert units.stop == ("broken.service",)
    assert units.restart == ("sshd.service",)
    assert units.start == ("broken.service", "hello.service")
    assert units.activate and not units.restart_systemd
    assert units.other == ("would create group nginx",)


def test_parse_nothing() -> None:
    assert parse_dry_activate("") == Units()
    assert parse_dry_activate("would activate the configuration...\n") == Units(activate=True)


def test_units_to_json() -> None:
    data = parse_dry_activate(NG_OUTPUT).to_json()
    assert data["stop"] == ["foo.service", "old-timer.timer"]
    assert data["not_stopped"] == ["ac-host.service", "-.mount"]
    assert data["restart_systemd"] is True
    assert data["swap_off"] == ["/dev/vdb"]


# --- render -----------------------------------------------------------------


def test_version_change() -> None:
    lines = render(diff(changed=[("openssh", "9.2p1", "9.3p1")]), Units())
    assert row(lines, "openssh").split() == ["openssh", "9.2p1", "→", "9.3p1"]


def test_added_and_removed_packages() -> None:
    lines = render(diff(added=[("htop", "3.3.0")], removed=[("nano", "7.2")]), Units())
    assert row(lines, "htop").split() == ["+", "htop", "3.3.0"]
    assert row(lines, "nano").split() == ["-", "nano", "7.2"]


def test_order_and_alignment() -> None:
    d = diff(
        changed=[("zsh", "5.8", "5.9"), ("openssh", "9.2p1", "9.3p1")],
        added=[("htop", "3.3.0")],
        removed=[("nano", "7.2")],
        rebuilt=[("openssl", "3.0.14")],
        size_delta=1258291,
        added_paths=[H + "x"] * 12,
        removed_paths=[H + "y"] * 3,
    )
    lines = render(d, parse_dry_activate(NG_OUTPUT))
    keys = [line[4:].split()[0] for line in lines]
    assert keys[:6] == ["openssh", "zsh", "htop", "nano", "rebuilt", "closure"]
    assert keys[6:] == ["stop", "restart", "reload", "start", "restart", "keep", "swapoff"]
    # Every value starts in the same column, two spaces after the widest name.
    width = max(len(k) for k in keys)
    for line in lines:
        assert line[4 + width : 4 + width + 2] == "  " and line[4 + width + 2] != " ", lines


def test_plumbing_is_not_a_package() -> None:
    d = diff(
        added=[("unit-nginx.service", ""), ("nginx", "1.26.1"), ("users-groups.json", ""), ("nginx.conf", "")],
        removed=[("etc-foo", ""), ("nano", "7.2")],
        changed=[("nixos-system-fripon", "25.05", "25.11"), ("openssh", "9.2p1", "9.3p1")],
        rebuilt=[("etc", ""), ("system-path", ""), ("sshd-pre-start", ""), ("openssl", "3.0.14")],
    )
    lines = render(d, Units())
    text = "\n".join(lines)
    assert row(lines, "nginx").split() == ["+", "nginx", "1.26.1"]
    assert row(lines, "nano").split() == ["-", "nano", "7.2"]
    assert "openssh" in text
    for name in ("unit-nginx.service", "users-groups.json", "nginx.conf", "etc-foo", "nixos-system-fripon"):
        assert not any(line[2:4] in ("+ ", "- ") and name in line for line in lines), name
    assert row(lines, "rebuilt").split() == ["~", "rebuilt", "1", "(openssl)"]
    assert row(lines, "config").startswith("  ~ config")
    assert "8 (etc, etc-foo, nginx.conf, nixos-system-fripon, …)" in row(lines, "config")
    data = d.to_json()
    assert [a["name"] for a in data["added"]] == ["nginx"]
    assert data["rebuilt"] == ["openssl"]
    assert "unit-nginx.service" in data["config"] and "nixos-system-fripon" in data["config"]


def test_size_line() -> None:
    d = diff(size_delta=1258291, added_paths=[H + "x"] * 12, removed_paths=[H + "y"] * 3)
    assert row(render(d, Units()), "closure").split(None, 1)[1] == "+1.2 MiB (12 paths added, 3 removed)"
    shrunk = diff(size_delta=-2048, added_paths=[H + "x"], removed_paths=[H + "y"] * 2)
    assert row(render(shrunk, Units()), "closure").split(None, 1)[1] == "-2.0 KiB (1 paths added, 2 removed)"


def test_units_by_verb() -> None:
    units = parse_dry_activate(RIG_OUTPUT.replace("sshd.service", "sshd.service, a.service"))
    lines = render(diff(), units)
    verbs = [line.split()[0] for line in lines[1:]]
    assert verbs == ["restart", "start"]  # broken.service: stopped, then started
    assert row(lines, "restart").split(None, 1)[1] == "a.service, broken.service, sshd.service"
    assert row(lines, "start").split(None, 1)[1] == "hello.service"
    stop_only = render(diff(), parse_dry_activate("would stop the following units: gone.service\n"))
    assert row(stop_only, "stop").split(None, 1)[1] == "gone.service"


def test_ng_units_render() -> None:
    lines = render(diff(), parse_dry_activate(NG_OUTPUT))
    assert row(lines, "stop").split(None, 1)[1] == "old-timer.timer"
    assert row(lines, "reload").split(None, 1)[1] == "dbus-broker.service, nix-daemon.socket"
    restarts = [line for line in lines if line.split()[0] == "restart"]
    assert restarts[0].split(None, 1)[1] == "foo.service, sshd.service, systemd-journald.service"
    assert "systemd" in restarts[1] and "re-execute" in restarts[1]
    assert "ac-host.service" in row(lines, "keep") and "left running" in row(lines, "keep")
    assert row(lines, "swapoff").split(None, 1)[1] == "/dev/vdb"


def test_small_change_is_short() -> None:
    """Only an /etc file changed: the toplevel, etc and the file's store paths."""
    d = diff(
        rebuilt=[("etc", ""), ("etc-motd", ""), ("nixos-system-fripon", "25.11pre-mini")],
        size_delta=8,
        added_paths=[H + "etc", H + "etc-motd", H + "nixos-system-fripon-25.11pre-mini"],
        removed_paths=[H + "etc", H + "etc-motd", H + "nixos-system-fripon-25.11pre-mini"],
    )
    lines = render(d, parse_dry_activate("would activate the configuration...\n"))
    assert lines == [
        "  ~ config   3 (etc, etc-motd, nixos-system-fripon)",
        "    closure  +8 B (3 paths added, 3 removed)",
        "    units    none stopped, restarted, reloaded or started",
    ]


def test_many_names_are_cut_unless_verbose() -> None:
    many = [f"unit-s{i}.service" for i in range(30)]
    d = diff(
        added=[(n, "") for n in many],
        added_paths=[H + n for n in many],
        removed_paths=[H + "etc"],
        rebuilt=[("etc", "")],
    )
    starts = ", ".join(f"s{i}.service" for i in range(30))
    units = parse_dry_activate(f"would start the following units: {starts}\n")
    short = render(d, units)
    assert len(short) == 3
    assert row(short, "config").endswith(", …)") and "31 (" in row(short, "config")
    assert row(short, "start").endswith("… (22 more)")
    assert not any("/nix/store/" in line for line in short)

    full = render(d, units, verbose=True)
    for n in many:
        assert f"+ {H}{n}" in "\n".join(full)
    assert f"- {H}etc" in "\n".join(full)
    assert "added store paths (30):" in "\n".join(full)
    assert "removed store paths (1):" in "\n".join(full)
    assert "…" not in "\n".join(full)
    assert all(f"s{i}.service" in row(full, "start") for i in range(30))


def test_no_colour_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    d = diff(changed=[("openssh", "9.2p1", "9.3p1")], added=[("htop", "3.3.0")], removed=[("nano", "7.2")])
    units = parse_dry_activate(RIG_OUTPUT)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    plain = render(d, units, verbose=True)
    assert not any("\033" in line for line in plain)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    coloured = render(d, units)
    assert any("\033[" in line for line in coloured)
    # Colour does not move the columns.
    assert [ESC.sub("", line) for line in coloured] == render_plain(d, units, monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not any("\033" in line for line in render(d, units))


def render_plain(d: ClosureDiff, units: Units, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    with monkeypatch.context() as m:
        m.setattr("sys.stderr", io.StringIO())
        return render(d, units)


def test_diff_to_json() -> None:
    d = diff(changed=[("openssh", "9.2p1", "9.3p1")], size_delta=-5, removed_paths=[H + "openssh-9.2p1"])
    data = d.to_json()
    assert data["changed"] == [{"name": "openssh", "old": "9.2p1", "new": "9.3p1"}]
    assert data["size_delta"] == -5 and data["removed_paths"] == [H + "openssh-9.2p1"]


def test_names_still_importable_from_deploy() -> None:
    assert deploy.closure_diff is plan.closure_diff and deploy.store_name is plan.store_name
    assert deploy.ClosureDiff is plan.ClosureDiff


# --- real Nix -----------------------------------------------------------------

# Two tiny "systems": the toplevel refers to hello (which refers to a library
# both share), to etc (whose text changes) and to one other package; a store
# path's references are the store paths written into it.
CLOSURES = """\
{ hello, extra, motd }:
let
  drv = name: text: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo '${text}' > $out" ];
  };
  lib = drv "libfoo-1.0" "libfoo";
  extraPkg = if extra == "htop" then drv "htop-3.3.0" "htop" else drv "nano-7.2" "nano";
in drv "nixos-system-test-1" "${drv "hello-${hello}" "hello ${lib}"} ${extraPkg} ${drv "etc" motd}"
"""


@pytest.mark.nix
def test_closure_diff_with_real_nix(tmp_path: Path) -> None:
    (tmp_path / "system.nix").write_text(CLOSURES)

    def build(hello: str, extra: str, motd: str) -> Path:
        args = ["--argstr", "hello", hello, "--argstr", "extra", extra, "--argstr", "motd", motd]
        result = run(["nix-build", "--no-out-link", tmp_path / "system.nix", *args])
        assert result.returncode == 0, result.stderr[-2000:]
        return Path(result.stdout.strip())

    old, new = build("2.10", "nano", "hi"), build("2.12", "htop", "hello")
    d = plan.closure_diff(old, new)
    assert d.changed == [("hello", "2.10", "2.12")]
    assert d.added == [("htop", "3.3.0")]
    assert d.removed == [("nano", "7.2")]
    assert ("etc", "") in d.rebuilt and ("nixos-system-test", "1") in d.rebuilt
    assert not any("libfoo" in p for p in d.added_paths + d.removed_paths)  # shared, unchanged
    assert len(d.added_paths) == len(d.removed_paths) == 4
    lines = render(d, Units())
    assert row(lines, "hello").split() == ["hello", "2.10", "→", "2.12"]
    assert row(lines, "htop").split() == ["+", "htop", "3.3.0"]
    assert row(lines, "nano").split() == ["-", "nano", "7.2"]
    assert row(lines, "config").endswith("config   2 (etc, nixos-system-test)")
    assert plan.closure_diff(None, new).added_paths == sorted(
        run(["nix-store", "--query", "--requisites", new]).stdout.split()
    )
