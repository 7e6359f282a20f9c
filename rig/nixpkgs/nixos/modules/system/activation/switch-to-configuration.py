# switch-to-configuration of the mini nixpkgs, for the rig's Debian guest.
# Interface and order of steps as NixOS's switch-to-configuration-ng
# (pkgs/by-name/sw/switch-to-configuration-ng/src/main.rs):
#   switch-to-configuration check|switch|boot|test|dry-activate
# 1. the lock /run/nixos/switch-to-configuration.lock (flock, not waiting:
#    held → "Could not acquire lock", exit 11, the errno EWOULDBLOCK);
# 2. the pre-switch checks (system.preSwitchChecks) with the new system and
#    the action as arguments, unless NIXOS_NO_CHECK=1: failed →
#    "Pre-switch checks failed", exit 1; `check` stops here (0);
# 3. switch/boot: the boot loader: system.build.installBootLoader with the
#    new system as argument (failed → "Failed to install bootloader", 1),
#    then a sync; a direct-boot VM has none ("no boot loader to install
#    (direct boot)"); boot stops here;
# 4. init-interface-version of /run/current-system against the new one's:
#    different → the "incompatible ‘init’" warning and exit 100
#    (test, switch and dry-activate alike);
# 5. dry-activate prints what it would do (0); test/switch stop removed
#    units, run `activate` (failed → "Failed to run activate script", 2),
#    restart/reload/start changed and new units (a failed unit → 4).
# Usage error → 1; not root → "Error: … must be run as the root user", 1.
# It compares the units of the running system (/run/current-system) with
# this one's, stops removed units, restarts or stop/starts changed ones
# (honouring X-StopIfChanged / X-RestartIfChanged / X-ReloadIfChanged),
# starts new wanted ones, runs `activate`, and reports failed units.
#
# Rig only: the guest boots Debian, whose rig-activate.service runs
# `switch-to-configuration test` for the booted system where NixOS's stage 2
# runs its `activate`. That run (no /run/current-system yet, and
# /run/booted-system is this system) stands for stage 2: no pre-switch
# checks, no init interface comparison, as when NixOS boots.
# The guest's python3 is a minimal one: standard library basics only.
import errno
import fcntl
import os
import subprocess
import sys
import time

OUT = "@out@"
PRE_SWITCH_CHECK = "@preSwitchCheck@"
# The boot loader's installer (grub.nix: the rig's install-grub); empty in
# the rig's direct-boot VM (qemu-vm.nix), which has no boot loader.
INSTALL_BOOTLOADER = "@installBootLoader@"
LOCK = "/run/nixos/switch-to-configuration.lock"
UNIT_DIR = "etc/systemd/system"
# timers.target too: startAt's timers (systemd.nix) start with the switch,
# as NixOS's, which starts what any active target wants.
TARGETS = ("multi-user.target", "default.target", "sysinit.target", "basic.target", "sockets.target", "timers.target")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def systemctl(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", *args], check=check, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def units_of(toplevel: str | None) -> dict[str, str | None]:
    """Unit name → the unit file's text, or None when the unit is masked."""
    units: dict[str, str | None] = {}
    if toplevel is None:
        return units
    d = os.path.join(toplevel, UNIT_DIR)
    if not os.path.isdir(d):
        return units
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if "." not in name or os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        if real == "/dev/null":
            units[name] = None
        else:
            with open(real) as f:
                units[name] = f.read()
    return units


def unit_tree(toplevel: str | None) -> list[tuple[str, str]]:
    """Every unit file and .wants/.requires link of a system, with its target."""
    if toplevel is None:
        return []
    root = os.path.join(toplevel, UNIT_DIR)
    tree = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            tree.append((os.path.relpath(path, root), os.path.realpath(path)))
    return sorted(tree)


def wanted(toplevel: str, unit: str) -> bool:
    return any(
        os.path.lexists(os.path.join(toplevel, UNIT_DIR, f"{t}.{kind}", unit))
        for t in TARGETS
        for kind in ("wants", "requires")
    )


def prop(text: str, key: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1].strip()
    return None


def active_units() -> set[str]:
    """The units systemd has active (or activating, reloading), asked once,
    as NixOS's switch asks systemd once for all units (ListUnits); a unit
    systemd has not loaded is inactive, as `systemctl is-active` says."""
    out = systemctl("list-units", "--all", "--plain", "--no-legend", "--full").stdout
    active = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] in ("active", "activating", "reloading"):
            active.add(fields[0])
    return active


def plan(old: str | None) -> dict[str, list[str]]:
    old_units, new_units = units_of(old), units_of(OUT)
    p: dict[str, list[str]] = {"stop": [], "restart": [], "reload": [], "start": []}
    running = active_units()
    for unit, text in old_units.items():
        if text is None:
            continue
        new = new_units.get(unit)
        active = unit in running
        if new is None:
            if active:
                p["stop"].append(unit)
        elif new != text:
            if prop(new, "X-RestartIfChanged") == "false":
                continue
            if not active:
                if wanted(OUT, unit):
                    p["start"].append(unit)
            elif prop(new, "X-ReloadIfChanged") == "true":
                p["reload"].append(unit)
            elif prop(new, "X-StopIfChanged") == "false":
                p["restart"].append(unit)
            else:
                p["stop"].append(unit)
                p["start"].append(unit)
    for unit, text in new_units.items():
        if text is not None and old_units.get(unit) is None and wanted(OUT, unit):
            p["start"].append(unit)
    return p


def failed_units() -> list[str]:
    out = systemctl("list-units", "--failed", "--plain", "--no-legend", "--full").stdout
    return [line.split()[0] for line in out.splitlines() if line.split()]


def current_system() -> str | None:
    try:
        return os.path.realpath("/run/current-system", strict=True)
    except OSError:
        return None


USAGE = """Usage: {argv0} [check|switch|boot|test|dry-activate]
check:        run pre-switch checks and exit
switch:       make the configuration the boot default and activate now
boot:         make the configuration the boot default
test:         activate the configuration, but don't make it the boot default
dry-activate: show what would be done if this configuration were activated
"""

INCOMPATIBLE_INIT = (
    "Warning: the new NixOS configuration has an \u2018init\u2019 that is\n"
    "incompatible with the current configuration.  The new configuration\n"
    "won't take effect until you reboot the system.\n"
)


def log_utf8(msg: str) -> None:
    """A line with non-ASCII text, as UTF-8 whatever the locale."""
    sys.stderr.flush()
    sys.stderr.buffer.write((msg + "\n").encode("utf-8"))
    sys.stderr.buffer.flush()


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def booting() -> bool:
    """The rig's boot-time activation of the booted system (see the top)."""
    if os.path.lexists("/run/current-system"):
        return False
    return os.path.realpath("/run/booted-system") == os.path.realpath(OUT)


def main() -> int:
    argv0 = os.path.basename(sys.argv[0]) or "switch-to-configuration"
    actions = ("switch", "boot", "test", "dry-activate", "check")
    if len(sys.argv) < 2 or sys.argv[1] not in actions:
        log(USAGE.format(argv0=argv0))
        return 1
    action = sys.argv[1]
    if os.geteuid() != 0:
        log(f"Error: {argv0} must be run as the root user")
        return 1
    os.environ["NIXOS_ACTION"] = action

    os.makedirs("/run/nixos", exist_ok=True)
    os.chmod("/run/nixos", 0o755)
    try:
        lock = open(LOCK, "a")
    except OSError as e:
        log("Could not open lock")
        return e.errno or 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        log("Could not acquire lock")
        return e.errno or errno.EWOULDBLOCK

    boot_time = booting()
    if os.environ.get("NIXOS_NO_CHECK", "") != "1" and not boot_time:
        argv = PRE_SWITCH_CHECK.split()
        try:
            ok = bool(argv) and subprocess.run([*argv, OUT, action], check=False).returncode == 0
        except OSError:
            ok = False
        if not ok:
            log("Pre-switch checks failed")
            return 1
    if action == "check":
        return 0

    if action in ("switch", "boot"):
        if not INSTALL_BOOTLOADER:
            # A direct-boot VM has no boot loader to install.
            log("no boot loader to install (direct boot)")
        else:
            argv = INSTALL_BOOTLOADER.split()
            try:
                ok = subprocess.run([*argv, OUT], check=False).returncode == 0
            except OSError:
                ok = False
            if not ok:
                log("Failed to install bootloader")
                return 1
            # As NixOS: in case the new configuration hangs the system.
            if os.environ.get("NIXOS_NO_SYNC", "") != "1":
                os.sync()
        if action == "boot":
            return 0

    if not boot_time:
        current_version = read_text("/run/current-system/init-interface-version") or ""
        new_version = read_text(os.path.join(OUT, "init-interface-version"))
        if new_version is None:
            log(
                "Error: File init-interface-version should exist\n\n"
                "Caused by:\n    No such file or directory (os error 2)"
            )
            return 1
        if current_version != new_version:
            log_utf8(INCOMPATIBLE_INIT)
            return 100

    current = current_system()
    p = plan(current)
    if action == "dry-activate":
        if p["stop"]:
            log("would stop the following units: " + ", ".join(p["stop"]))
        log("would activate the configuration...")
        for verb in ("restart", "reload", "start"):
            if p[verb]:
                log(f"would {verb} the following units: " + ", ".join(p[verb]))
        return 0

    status = 0
    if p["stop"]:
        log("stopping the following units: " + ", ".join(p["stop"]))
        systemctl("stop", "--", *p["stop"])
    # Failures of an earlier generation are history: forget them, so only
    # what fails now is reported.
    systemctl("reset-failed")
    log("activating the configuration...")
    if subprocess.run([os.path.join(OUT, "activate"), OUT], check=False).returncode != 0:
        log("Failed to run activate script")
        status = 2
    # systemd reads unit files again only when some changed (nothing else
    # of systemd's configuration is managed by the mini nixpkgs).
    if unit_tree(current) != unit_tree(OUT):
        systemctl("daemon-reload")
    for verb, doing in (("reload", "reloading"), ("restart", "restarting"), ("start", "starting")):
        if p[verb]:
            log(f"{doing} the following units: " + ", ".join(p[verb]))
            result = systemctl(verb, "--", *p[verb])
            if result.returncode != 0 and result.stdout.strip():
                log(result.stdout.strip())
    if p["restart"] or p["start"]:
        # A simple service that exits at once fails just after its start job
        # returned: give it a moment, so it is reported here.
        time.sleep(0.5)
    failed = failed_units()
    if failed:
        log("warning: the following units failed: " + ", ".join(failed))
        for unit in failed:
            log(systemctl("status", "--no-pager", "--lines=10", "--", unit).stdout.rstrip())
        status = 4
    return status


sys.exit(main())
