"""services.openssh, users.users, security.sudo and boot.loader.grub.version of
the mini nixpkgs against NixOS's own behaviour (sshd.nix, users-groups.nix,
sudo.nix, grub.nix): rendering, assertions, warnings, the build-time check."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import MINI_NIXPKGS, fixed_fripon, run

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk test@rig"
ROOT_KEY = f'  users.users.root.openssh.authorizedKeys.keys = [ "{KEY}" ];'


def build_system(tmp_path: Path, extra: str) -> tuple[int, str, str]:
    conf = fixed_fripon(tmp_path, extra=extra)
    expr = f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system"
    result = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    return result.returncode, result.stdout.strip(), result.stderr


def built(tmp_path: Path, extra: str) -> Path:
    code, out, err = build_system(tmp_path, extra)
    assert code == 0, err[-3000:]
    return Path(out)


def test_seed_prints_the_two_real_warnings(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path, ROOT_KEY)
    assert code == 0, err
    lines = err.splitlines()
    conf = tmp_path / "configuration.nix"
    assert (
        f"trace: evaluation warning: The option `services.openssh.permitRootLogin' defined in `{conf}' "
        "has been renamed to `services.openssh.settings.PermitRootLogin'."
    ) in lines
    assert (
        "trace: evaluation warning: The boot.loader.grub.version option does not have any effect anymore, "
        "please remove it from your configuration."
    ) in lines


def test_sshd_config_rendered_like_nixos(tmp_path: Path) -> None:
    system = built(
        tmp_path,
        ROOT_KEY
        + """
  services.openssh.ports = [ 2222 ];
  services.openssh.listenAddresses = [ { addr = "0.0.0.0"; port = 2200; } { addr = "127.0.0.1"; } ];
  services.openssh.settings = {
    AllowUsers = [ "alice" "bob" ];
    PasswordAuthentication = false;
    ClientAliveInterval = 30;
    X11UseLocalhost = null;
  };""",
    )
    text = (system / "etc" / "ssh" / "sshd_config").read_text()
    lines = text.splitlines()
    settings = lines[: lines.index("Banner none")]
    assert settings == sorted(settings)  # keyValue: one line per key, sorted
    for line in (
        "AllowUsers alice bob",
        "ClientAliveInterval 30",
        "PasswordAuthentication no",
        "PermitRootLogin yes",  # the renamed option
        "KbdInteractiveAuthentication yes",
        "UsePAM yes",
        "UseDns no",
        "X11Forwarding no",
        "LogLevel INFO",
        "Macs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
        "Port 2222",
        "ListenAddress 0.0.0.0:2200",
        "ListenAddress 127.0.0.1",
        "AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
    ):
        assert line in lines, line
    assert "X11UseLocalhost" not in text and "DenyUsers" not in text and "AllowGroups" not in text
    # PasswordAuthentication = false: PAM's sshd service refuses passwords.
    pam = (system / "etc" / "pam.d" / "sshd").read_text()
    assert "auth required pam_deny.so" in pam
    # The authorized keys: a copy, mode 0444.
    modes = (system / "etc" / ".rig-etc-modes").read_text().splitlines()
    assert "ssh/authorized_keys.d/root\t0444\t+0\t+0" in modes
    assert KEY in (system / "etc" / "ssh" / "authorized_keys.d" / "root").read_text()
    # Host keys come from sshd-keygen.service, which sshd.service wants.
    units = system / "etc" / "systemd" / "system"
    sshd = (units / "sshd.service").read_text()
    assert "Wants=sshd-keygen.service" in sshd and "X-StopIfChanged=false" in sshd and "KillMode=process" in sshd
    keygen = (units / "sshd-keygen.service").read_text()
    assert "ConditionFileNotEmpty=|!/etc/ssh/ssh_host_ed25519_key" in keygen


def test_open_firewall_and_freeform_type(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path / "a", extra=ROOT_KEY + "\n  services.openssh.ports = [ 2222 2223 ];")
    expr = f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).config.networking.firewall.allowedTCPPorts"
    result = run(["nix-instantiate", "--eval", "--strict", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[ 2222 2223 ]"
    code, _, err = build_system(
        tmp_path / "b", ROOT_KEY + '\n  services.openssh.settings.PermitRootLogin = lib.mkForce "maybe";'
    )
    assert code != 0
    assert "services.openssh.settings.PermitRootLogin' is not of type" in err


def test_bad_sshd_setting_fails_the_build(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path / "a", ROOT_KEY + '\n  services.openssh.settings.NoSuchKeyword = "yes";')
    assert code != 0
    assert "check-sshd-config.drv' failed" in err
    assert "-sshd.conf-final: line 8: Bad configuration option: NoSuchKeyword" in err
    assert "terminating, 1 bad configuration options" in err
    code, _, err = build_system(tmp_path / "b", ROOT_KEY + '\n  services.openssh.settings.Ciphers = [ "rot13" ];')
    assert code != 0
    assert "Bad SSH2 cipher spec 'rot13'." in err


def test_socket_activation_units(tmp_path: Path) -> None:
    system = built(
        tmp_path, ROOT_KEY + "\n  services.openssh.startWhenNeeded = true;\n  services.openssh.ports = [ 22 2222 ];"
    )
    units = system / "etc" / "systemd" / "system"
    assert not (units / "sshd.service").exists()
    socket = (units / "sshd.socket").read_text().splitlines()
    assert "ListenStream=22" in socket and "ListenStream=2222" in socket and "Accept=true" in socket
    assert (units / "sockets.target.wants" / "sshd.socket").exists()
    per_connection = (units / "sshd@.service").read_text()
    assert "StandardInput=socket" in per_connection and " -i " in per_connection
    assert "Wants=sshd-keygen.service" in per_connection


def failed_assertions(err: str) -> str:
    """The assertion messages, without the indentation Nix adds to errors."""
    assert "Failed assertions:" in err, err[-2000:]
    return "\n".join(line.strip() for line in err[err.index("Failed assertions:") :].splitlines()) + "\n"


NO_ROOT_KEY = "  users.users.root.openssh.authorizedKeys.keys = lib.mkForce [ ];"


def test_lockout_assertion(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path, NO_ROOT_KEY)
    assert code != 0
    text = failed_assertions(err)
    assert (
        "- Neither the root account nor any wheel user has a password or SSH authorized key.\n"
        "You must set one to prevent being locked out of your system.\n"
        "If you really want to be locked out of your system, set users.allowNoPasswordLogin = true;\n"
        "However you are most probably better off by setting users.mutableUsers = true; and\n"
        "manually running passwd root to set the root password.\n"
    ) in text
    # A wheel user with a key is enough; so is allowNoPasswordLogin.
    wheel = (
        '  users.users.alice = { isNormalUser = true; extraGroups = [ "wheel" ]; openssh.authorizedKeys.keys = [ "%s" ]; };'
        % KEY
    )
    assert build_system(tmp_path / "w", NO_ROOT_KEY + "\n" + wheel)[0] == 0
    assert build_system(tmp_path / "n", NO_ROOT_KEY + "\n  users.allowNoPasswordLogin = true;")[0] == 0


def test_user_kind_and_group_assertions(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path / "a", ROOT_KEY + '\n  users.users.carol = { home = "/srv/carol"; };')
    assert code != 0
    text = failed_assertions(err)
    assert "- Exactly one of users.users.carol.isSystemUser and users.users.carol.isNormalUser must be set.\n" in text
    assert "- users.users.carol.group is unset. This used to default to\n" in text
    code, _, err = build_system(tmp_path / "b", ROOT_KEY + "\n  users.users.svc.isSystemUser = true;")
    assert code != 0
    text = failed_assertions(err)
    assert "users.users.svc.group is unset." in text and "Exactly one of" not in text


def test_sudoers(tmp_path: Path) -> None:
    system = built(tmp_path, ROOT_KEY + "\n  security.sudo.wheelNeedsPassword = false;")
    sudoers = (system / "etc" / "sudoers").read_text().splitlines()
    assert "root\tALL=(ALL:ALL)\tSETENV: ALL" in sudoers
    assert "%wheel\tALL=(ALL:ALL)\tNOPASSWD:SETENV: ALL" in sudoers
    modes = (system / "etc" / ".rig-etc-modes").read_text().splitlines()
    assert "sudoers\t0440\t+0\t+0" in modes
