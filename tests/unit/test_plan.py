"""Plan rendering: the closure diff and dry-activate's units as a person
reads them. Diffs are built by hand (ClosureDiff is a value); one test asks
real Nix for two small closures."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from rehearse.host import plan
from rehearse.host.plan import ClosureDiff, Units, parse_dry_activate, render
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


# --- units planned on the host ------------------------------------------------

SERVICE = "[Unit]\nDescription=demo\n\n[Service]\nExecStart=/bin/demo {v}\n{extra}\n[Install]\nWantedBy=x\n"


def service(v: str = "1", extra: str = "", unit: str = "") -> str:
    """A unit file's text: `v` is its version, `extra` lines of [Service], `unit` lines of [Unit]."""
    return SERVICE.format(v=v, extra=extra).replace("Description=demo\n", f"Description=demo\n{unit}")


class Top:
    """A fabricated toplevel: etc/systemd/system with its unit files linked
    from a store of their own (as NixOS links them), .wants links, drop-ins,
    an fstab, a systemd link and system.conf."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.root = tmp / name
        self.store = tmp / f"{name}-store"
        self.dir = self.root / "etc" / "systemd" / "system"
        self.dir.mkdir(parents=True)
        self.store.mkdir()

    def unit(self, name: str, text: str | None, *wanted_by: str) -> Top:
        """`text` None masks the unit."""
        target = Path("/dev/null")
        if text is not None:
            target = self.store / name
            target.write_text(text)
        (self.dir / name).symlink_to(target)
        for t in wanted_by:
            (self.dir / f"{t}.wants").mkdir(exist_ok=True)
            (self.dir / f"{t}.wants" / name).symlink_to(target)
        return self

    def dropin(self, unit: str, text: str) -> Top:
        (self.dir / f"{unit}.d").mkdir(exist_ok=True)
        (self.dir / f"{unit}.d" / "override.conf").write_text(text)
        return self

    def file(self, rel: str, text: str) -> Top:
        path = self.root / "etc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return self


def tops(tmp: Path) -> tuple[Top, Top]:
    return Top(tmp, "old"), Top(tmp, "new")


def between(old: Top, new: Top) -> Units:
    units = plan.units_between(old.root, new.root)
    assert units is not None
    return units


def test_host_plan_unchanged_system_touches_nothing(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    for t in (old, new):
        t.unit("a.service", service(), "multi-user.target")
    assert between(old, new) == Units(activate=True)


def test_host_plan_changed_active_service_is_stopped_and_started(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    old.unit("a.service", service("1"), "multi-user.target")
    new.unit("a.service", service("2"), "multi-user.target")
    units = between(old, new)
    assert units.stop == units.start == ("a.service",) and units.cycled == ("a.service",)
    assert row(render(diff(), units), "restart").split() == ["restart", "a.service"]


@pytest.mark.parametrize("section", ["Service", "Unit"])  # real NixOS, the rig's mini
def test_host_plan_honours_the_if_changed_keys(tmp_path: Path, section: str) -> None:
    old, new = tops(tmp_path)
    keys = {"r.service": "X-StopIfChanged=false", "l.service": "X-ReloadIfChanged=true"}
    keys["k.service"] = "X-RestartIfChanged=false"
    for name, key in keys.items():
        where = {"extra": key} if section == "Service" else {"unit": key + "\n"}
        old.unit(name, service("1", **where), "multi-user.target")
        new.unit(name, service("2", **where), "multi-user.target")
    units = between(old, new)
    assert (units.restart, units.reload, units.skip, units.stop, units.start) == (
        ("r.service",),
        ("l.service",),
        ("k.service",),
        (),
        (),
    )
    assert parse_dry_activate(plan.dry_activate_text(units)) == units


def test_host_plan_manual_only_units_are_kept(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    for name, key in (("m.service", "RefuseManualStop=yes"), ("o.service", "X-OnlyManualStart=true")):
        old.unit(name, service("1", unit=key + "\n"), "multi-user.target")
        new.unit(name, service("2", unit=key + "\n"), "multi-user.target")
    assert between(old, new).skip == ("m.service", "o.service")


def test_host_plan_reload_triggers_reload_and_ignored_keys_do_nothing(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    old.unit("t.service", service(unit="X-Reload-Triggers=aaa\n"), "multi-user.target")
    new.unit("t.service", service(unit="X-Reload-Triggers=bbb\n"), "multi-user.target")
    old.unit("d.service", service(), "multi-user.target")
    other = service().replace("Description=demo", "Description=other\nDocumentation=man:x")
    new.unit("d.service", other, "multi-user.target")
    units = between(old, new)
    assert units.reload == ("t.service",)
    assert units.stop == units.start == units.restart == ()


def test_host_plan_removed_units_stop_unless_stop_on_removal_is_off(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    old.unit("gone.service", service(), "multi-user.target")
    old.unit("masked.service", service(), "multi-user.target")
    old.unit("stays.service", service(unit="X-StopOnRemoval=false\n"), "multi-user.target")
    old.unit("idle.service", service())  # wanted by nothing: not running
    new.unit("masked.service", None)
    assert between(old, new).stop == ("gone.service", "masked.service")


def test_host_plan_starts_new_wanted_units_only(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    old.unit("was-masked.service", None)
    new.unit("fresh.service", service(), "multi-user.target")
    new.unit("was-masked.service", service(), "sysinit.target")
    new.unit("unwanted.service", service())
    new.unit("deep.service", service())
    new.unit("mid.service", service(unit="Wants=deep.service\n"), "multi-user.target")
    units = between(old, new)
    assert units.start == ("deep.service", "fresh.service", "mid.service", "was-masked.service")
    assert units.stop == ()


def test_host_plan_changed_oneshot_that_ran_is_started_not_stopped(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    old.unit("once.service", service("1", "Type=oneshot"), "multi-user.target")
    new.unit("once.service", service("2", "Type=oneshot"), "multi-user.target")
    old.unit("kept.service", service("1", "Type=oneshot\nRemainAfterExit=true"), "multi-user.target")
    new.unit("kept.service", service("2", "Type=oneshot\nRemainAfterExit=true"), "multi-user.target")
    units = between(old, new)
    assert units.start == ("kept.service", "once.service") and units.stop == ("kept.service",)


def test_host_plan_socket_activated_service_restarts_its_socket(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    for t in (old, new):
        t.unit("sock.socket", "[Socket]\nListenStream=1\n", "sockets.target")
    old.unit("sock.service", service("1"))
    new.unit("sock.service", service("2"))
    old.unit("x.service", service("1", "Sockets=sock.socket"), "multi-user.target")
    new.unit("x.service", service("2", "Sockets=sock.socket"), "multi-user.target")
    old.unit("y.service", service("1", "Sockets=sock.socket\nX-NotSocketActivated=true"), "multi-user.target")
    new.unit("y.service", service("2", "Sockets=sock.socket\nX-NotSocketActivated=true"), "multi-user.target")
    units = between(old, new)
    assert units.stop == ("sock.socket", "x.service", "y.service")
    assert units.start == ("sock.socket", "y.service")  # x.service starts on demand
    assert units.restart == ()  # sock.service is not running: nothing


def test_host_plan_non_services(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    units = {
        "t.timer": "[Timer]\nOnCalendar={}\n",
        "data.mount": "[Mount]\nWhat=/dev/vdb\nWhere=/data\nType={}\n",
        "-.mount": "[Mount]\nWhat=/dev/vda\nWhere=/\nType={}\n",
        "opts.mount": "[Mount]\nWhat=/dev/vdc\nWhere=/opts\nOptions={}\n",
        "s.socket": "[Socket]\nListenStream={}\n",
        "user.slice": "[Slice]\nCPUQuota={}\n",
        "multi-user.target": "[Unit]\nAfter={}\n",
        "r.target": "[Unit]\nX-StopOnReconfiguration=true\nAfter={}\n",
    }
    for name, text in units.items():
        old.unit(name, text.format("1"), "multi-user.target")
        new.unit(name, text.format("2"), "multi-user.target")
    got = between(old, new)
    assert got.restart == ("data.mount", "t.timer")
    assert got.reload == ("-.mount", "opts.mount")
    assert got.stop == got.start == got.skip == ()  # targets restart silently, as ng filters them


def test_host_plan_drop_ins_and_template_instances(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    for t in (old, new):
        t.unit("d.service", service(), "multi-user.target")
        t.unit("getty@.service", service())
        (t.dir / "getty.target.wants").mkdir()
        (t.dir / "getty.target.wants" / "getty@tty1.service").symlink_to(t.dir / "getty@.service")
    new.dropin("d.service", "[Service]\nEnvironment=X=1\n")
    new.dropin("getty@tty1.service", "[Service]\nX-StopIfChanged=false\nEnvironment=X=1\n")
    units = between(old, new)
    assert units.stop == units.start == ("d.service",)
    assert units.restart == ("getty@tty1.service",)


def test_host_plan_file_systems_and_swaps(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    old.file("fstab", "/dev/vda / ext4 defaults\n/dev/vdb /data ext4 rw\n/dev/vdc /var/lib/my-db xfs rw\n")
    old.file("fstab", old.root.joinpath("etc/fstab").read_text() + "/dev/vdd /gone ext4 rw\n/dev/vde none swap sw\n")
    new.file("fstab", "/dev/vdz / ext4 defaults\n/dev/vdb /data ext4 ro\n/dev/vdy /var/lib/my-db xfs rw\n# a comment\n")
    units = between(old, new)
    assert units.reload == ("data.mount",)
    assert units.restart == ("var-lib-my\\x2ddb.mount",)
    assert units.stop == ("gone.mount",)
    assert units.skip == ("-.mount",)  # / on another device: not unmounted
    assert units.swap_off == ("/dev/vde",)
    assert parse_dry_activate(plan.dry_activate_text(units)) == units


def test_mount_unit_names() -> None:
    assert plan.mount_unit("/") == "-.mount"
    assert plan.mount_unit("/nix//store/") == "nix-store.mount"
    assert plan.mount_unit("/srv/.hidden dir") == "srv-.hidden\\x20dir.mount"
    assert plan.mount_unit("/.x") == "\\x2ex.mount"


def test_host_plan_restarts_systemd_for_a_new_package_or_system_conf(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    assert not between(old, new).restart_systemd  # no systemd link on either side: the rig's case
    for t, version in ((old, "255"), (new, "256")):
        pkg = tmp_path / f"systemd-{version}"
        (pkg / "lib" / "systemd").mkdir(parents=True)
        (pkg / "lib" / "systemd" / "systemd").write_text(version)
        (t.root / "systemd").symlink_to(pkg)
    assert between(old, new).restart_systemd
    (new.root / "systemd").unlink()
    (new.root / "systemd").symlink_to(old.root / "systemd")
    assert not between(old, new).restart_systemd
    new.file("systemd/system.conf", "[Manager]\n")
    assert between(old, new).restart_systemd


def test_host_plan_needs_the_old_system_on_the_host(tmp_path: Path) -> None:
    old, new = tops(tmp_path)
    assert plan.units_between(tmp_path / "collected", new.root) is None
    old.unit("a.service", service(), "multi-user.target")
    (old.store / "a.service").unlink()  # its unit file collected
    assert plan.units_between(old.root, new.root) is None


def test_dry_activate_text_round_trip() -> None:
    units = parse_dry_activate(NG_OUTPUT + "would create group nginx\n")
    assert parse_dry_activate(plan.dry_activate_text(units)) == units


def _services(version: str, names: list[str]) -> str:
    """Module text: oneshot services wanted by multi-user.target whose script
    prints `version`; a name may carry the options after a colon."""
    out = []
    for spec in names:
        name, _, options = spec.partition(":")
        remain = "" if options == "ran" else " RemainAfterExit = true;"
        extra = "" if options in ("", "ran") else f" {options} = false;"
        if options == "reloadIfChanged":
            extra = " reloadIfChanged = true;"
        out.append(
            f'  systemd.services.{name} = {{ wantedBy = [ "multi-user.target" ];{extra} '
            f'serviceConfig = {{ Type = "oneshot";{remain} }}; script = "echo {version}"; }};'
        )
    return "\n".join(out)


def _mini_plan(old: Path, new: Path, active: set[str]) -> dict[str, list[str]]:
    """The decisions of the mini's own switch-to-configuration (the new
    toplevel's bin/switch-to-configuration), with `active` as the units
    systemd lists as active."""
    script = (new / "bin" / "switch-to-configuration").read_text().removesuffix("sys.exit(main())\n")
    namespace: dict[str, object] = {"__name__": "mini_switch"}
    exec(compile(script, "switch-to-configuration", "exec"), namespace)
    namespace["active_units"] = lambda: set(active)
    decided: dict[str, list[str]] = namespace["plan"](str(old))  # type: ignore[operator]
    return decided


@pytest.mark.nix
def test_host_plan_of_two_mini_systems_matches_the_minis_dry_activate(tmp_path: Path) -> None:
    from tests.conftest import MINI_NIXPKGS, fixed_fripon

    def build(name: str, extra: str) -> Path:
        conf = fixed_fripon(tmp_path / name, extra=extra)
        expr = f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system"
        result = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
        assert result.returncode == 0, result.stderr[-2000:]
        return Path(result.stdout.strip())

    both = ["changed", "restarted:stopIfChanged", "reloaded:reloadIfChanged", "kept:restartIfChanged", "ran:ran"]
    old = build("old", _services("1", [*both, "gone"]) + "\n" + _services("0", ["same"]))
    new = build("new", _services("2", [*both, "fresh"]) + "\n" + _services("0", ["same"]))
    units = plan.units_between(old, new)
    assert units is not None
    assert units.stop == ("changed.service", "gone.service")
    assert units.start == ("changed.service", "fresh.service", "ran.service")
    assert (units.restart, units.reload, units.skip) == (
        ("restarted.service",),
        ("reloaded.service",),
        ("kept.service",),
    )
    assert not units.restart_systemd and not units.swap_off
    assert plan.units_between(new, new) == Units(activate=True)

    # The mini decides the same, given the units the host takes as active.
    active = plan.active_units(old)
    assert "sshd.service" in active and "ran.service" not in active
    mini = _mini_plan(old, new, active)
    for verb in ("stop", "restart", "reload", "start"):
        assert sorted(mini[verb]) == list(getattr(units, verb)), verb


def test_a_vm_plans_on_the_host_and_asks_the_guest_only_without_the_old_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from rehearse.host import ssh
    from rehearse.store.state import VMDir, VMState
    from rehearse.targets import target

    old, new = tops(tmp_path)
    old.unit("a.service", service("1"), "multi-user.target")
    new.unit("a.service", service("2"), "multi-user.target")
    guest: list[list[str]] = []

    def ssh_run(remote: object, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        guest.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "would start the following units: b.service\n")

    monkeypatch.setattr(ssh, "run", ssh_run)
    monkeypatch.setattr(plan, "closure_diff", lambda old, new: ClosureDiff([], [], [], [], 0, added_paths=["p"]))
    vm = target.VM(VMDir("vm", tmp_path), VMState(name="vm"), None)  # type: ignore[arg-type]
    pl = vm.plan(str(old.root), new.root)
    # Planned on the host: no round trip; the paths go with the activation.
    assert guest == [] and pl.units is not None and pl.units.cycled == ("a.service",)
    pushed = vm.push(pl, target.PushOptions(copy=False))
    assert (pushed.registered, pushed.copied, pushed.pending) == (1, 0, ["p"]) and guest == []

    # The running system is not on the host: the guest's dry-activate says.
    pl = vm.plan(str(tmp_path / "collected"), new.root)
    assert guest == [[f"{new.root}/bin/switch-to-configuration", "dry-activate"]]
    assert pl.units is not None and pl.units.start == ("b.service",)
