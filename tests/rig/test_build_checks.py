"""The checks NixOS makes while it evaluates or builds a system (issue 25),
against the mini nixpkgs: users-groups.nix's assertions and warnings,
sshd.nix's duplicate keys, sudo.nix's `visudo -c`, the service rules of
systemd.nix / systemd-lib.nix (script vs ExecStart, startAt, the default
PATH). No VM: each is decided before anything boots."""

from __future__ import annotations

from pathlib import Path

from tests.rig.test_openssh_users import ROOT_KEY, build_system, built, failed_assertions


def test_duplicate_ids_fail_unless_allowed(tmp_path: Path) -> None:
    users = (
        ROOT_KEY + '\n  users.users.svc = { isSystemUser = true; group = "svc"; uid = 154; };'
        "\n  users.groups.svc.gid = 400;"
    )
    code, _, err = build_system(tmp_path / "uid", users)  # timesyncd's user has uid 154 too
    assert code != 0
    assert "trace: Duplicate uid 154\n" in err
    assert "- UIDs and GIDs must be unique!\n" in failed_assertions(err)
    code, _, err = build_system(
        tmp_path / "gid",
        ROOT_KEY + "\n  users.groups.ops.gid = 1;",  # wheel's
    )
    assert code != 0 and "trace: Duplicate gid 1\n" in err
    assert "- UIDs and GIDs must be unique!\n" in failed_assertions(err)
    assert build_system(tmp_path / "ok", users + "\n  users.enforceIdUniqueness = false;")[0] == 0


def test_undefined_primary_group(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path,
        ROOT_KEY + '\n  users.users.a = { isSystemUser = true; group = "ga"; };'
        '\n  users.users.b = { isSystemUser = true; group = "ga"; };'
        '\n  users.users.c = { isNormalUser = true; group = "gc"; };',
    )
    assert code != 0
    assert (
        "- The following users have a primary group that is undefined: a b c\n"
        "Hint: Add this to your NixOS configuration:\n"
        "users.groups.ga = {};\n"
        "users.groups.gc = {};\n"
    ) in failed_assertions(err)


def test_invalid_user_name(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path,
        ROOT_KEY
        + '\n  users.users."-bad" = { isNormalUser = true; };\n  users.users."d.ok_1" = { isNormalUser = true; };',
    )
    assert code != 0
    text = failed_assertions(err)
    assert '- The username "-bad" is not valid, it does not match the regex "[a-zA-Z0-9_.][a-zA-Z0-9_.-]*".\n' in text
    assert "d.ok_1" not in text


def test_normal_user_below_1000(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path / "a", ROOT_KEY + "\n  users.users.eve = { isNormalUser = true; uid = 999; };")
    assert code != 0
    assert (
        "- A user cannot have a users.users.eve.uid set below 1000 and set users.users.eve.isNormalUser.\n"
        "Either users.users.eve.isSystemUser must be set to true instead of users.users.eve.isNormalUser\n"
        "or users.users.eve.uid must be changed to 1000 or above.\n"
    ) in failed_assertions(err)
    assert (
        build_system(tmp_path / "b", ROOT_KEY + "\n  users.users.eve = { isNormalUser = true; uid = 1000; };")[0] == 0
    )


def test_several_password_options_warn(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path / "immutable",
        ROOT_KEY
        + '\n  users.users.ann = { isNormalUser = true; password = "pw"; hashedPasswordFile = "/run/keys/ann"; };',
    )
    assert code == 0, err
    lines = [line.strip() for line in err.splitlines()]
    start = lines.index("trace: evaluation warning: The user 'ann' has multiple of the options")
    assert lines[start + 1 : start + 18] == [
        "`initialHashedPassword`, `hashedPassword`, `initialPassword`, `password`",
        "& `hashedPasswordFile` set to a non-null value.",
        "",
        "If multiple of these password options are set at the same time then a",
        "specific order of precedence is followed, which can lead to surprising",
        "results. The order of precedence differs depending on whether the",
        "{option}`users.mutableUsers` option is set.",
        "",
        "If the option {option}`users.mutableUsers` is",
        "`false`, then the order of precedence is as shown",
        "below, where values on the left are overridden by values on the right:",
        "{option}`initialHashedPassword` -> {option}`hashedPassword` -> {option}`initialPassword` -> "
        "{option}`password` -> {option}`hashedPasswordFile`",
        "",
        "The values of these options are:",
        '* users.users."ann".hashedPassword: null',
        '* users.users."ann".hashedPasswordFile: "/run/keys/ann"',
        '* users.users."ann".password: "pw"',
    ]
    # With mutable users the initial options count too; one option alone is fine.
    code, _, err = build_system(
        tmp_path / "mutable",
        ROOT_KEY + "\n  users.mutableUsers = lib.mkForce true;"
        '\n  users.users.bob = { isNormalUser = true; initialPassword = "a"; hashedPassword = "!"; };'
        '\n  users.users.cid = { isNormalUser = true; initialPassword = "a"; };',
    )
    assert code == 0, err
    assert "The user 'bob' has multiple of the options" in err and "The user 'cid'" not in err
    assert '* users.users."bob".initialPassword: "a"' in err and "`true`, then the order of precedence" in err


def test_sshd_keys_differing_in_case(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path, ROOT_KEY + "\n  services.openssh.settings = { UseDNS = true; passwordAuthentication = false; };"
    )
    assert code != 0
    assert (
        "- Duplicate sshd config key; does your capitalization match the option's? "
        "Duplicate keys: (PasswordAuthentication, passwordAuthentication), (UseDNS, UseDns)\n"
    ) in failed_assertions(err)


def test_sudoers_checked_by_visudo(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path / "bad", ROOT_KEY + '\n  security.sudo.extraConfig = "Defaults nosuchflag";')
    assert code != 0
    assert "sudoers.drv' failed" in err
    assert 'unknown defaults entry "nosuchflag"' in err
    good = built(tmp_path / "good", ROOT_KEY + '\n  security.sudo.extraConfig = "Defaults lecture = never";')
    assert "Defaults lecture = never" in (good / "etc" / "sudoers").read_text()


def test_script_and_exec_start_conflict(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path / "a",
        ROOT_KEY + '\n  systemd.services.job = { script = "echo hi"; serviceConfig.ExecStart = "/bin/true"; };',
    )
    assert code != 0
    assert "The option `systemd.services.job.serviceConfig.ExecStart' has conflicting definition values:" in err
    assert "/nixos/modules/system/boot/systemd.nix': \"/nix/store/" in err and '-job-start"' in err
    assert 'extra.nix\': "/bin/true"' in err
    # Lists concatenate (unitOption): a second ExecStartPre beside preStart's.
    system = built(
        tmp_path / "b",
        ROOT_KEY + '\n  systemd.services.job = { preStart = "echo pre"; script = "echo hi";'
        ' serviceConfig.ExecStartPre = [ "/bin/true" ]; };',
    )
    unit = (system / "etc" / "systemd" / "system" / "job.service").read_text().splitlines()
    pre = [line for line in unit if line.startswith("ExecStartPre=")]
    assert len(pre) == 2 and "ExecStartPre=/bin/true" in pre and pre[0].endswith("-job-pre-start")


def test_start_at_makes_a_timer(tmp_path: Path) -> None:
    system = built(
        tmp_path,
        ROOT_KEY + '\n  systemd.services.tick = { script = "date"; startAt = [ "*:0/5" "Mon 03:00" ]; };'
        '\n  systemd.services.once = { script = "date"; startAt = "daily"; };'
        '\n  systemd.services.off = { enable = false; script = "date"; startAt = "daily"; };',
    )
    units = system / "etc" / "systemd" / "system"
    timer = (units / "tick.timer").read_text().splitlines()
    assert timer[timer.index("[Timer]") + 1 :][:2] == ["OnCalendar=*:0/5", "OnCalendar=Mon 03:00"]
    assert not any(line.startswith("WantedBy=") for line in timer)  # NixOS links it instead
    assert (units / "timers.target.wants" / "tick.timer").resolve() == (units / "tick.timer").resolve()
    assert "OnCalendar=daily" in (units / "once.timer").read_text()
    assert not (units / "off.timer").exists()
    assert not (units / "timers.target.wants" / "tick.service").exists()


def test_default_service_path(tmp_path: Path) -> None:
    system = built(tmp_path, ROOT_KEY + '\n  systemd.services.job = { script = "ls"; path = [ pkgs.hello ]; };')
    unit = (system / "etc" / "systemd" / "system" / "job.service").read_text().splitlines()
    (env,) = [line for line in unit if line.startswith('Environment="PATH=')]
    dirs = env.removeprefix('Environment="PATH=').removesuffix('"').split(":")
    names = [d.split("-", 1)[1] for d in dirs]
    # makeBinPath then the sbin directories; the service's own first, then the default.
    packages = ["hello-2.12.1", "coreutils-9.1", "findutils-4.9.0", "gnugrep-3.8", "gnused-4.9", "systemd-252"]
    assert names == [f"{p}/bin" for p in packages] + [f"{p}/sbin" for p in packages]
    assert not any(d.startswith(("/usr", "/bin", "/sbin")) for d in dirs)  # no Debian PATH
    for program in ("ls", "install", "find", "grep", "sed", "systemctl"):
        assert any((Path(d) / program).exists() for d in dirs), program
    assert not any((Path(d) / "ip").exists() for d in dirs)  # iproute2 only with `path`


def test_etc_owner_by_name_and_pam_other(tmp_path: Path) -> None:
    system = built(
        tmp_path,
        ROOT_KEY
        + '\n  environment.etc."app.conf" = { text = "x"; mode = "0640"; user = "nobody"; group = "nogroup"; };'
        '\n  environment.etc."ids.conf" = { text = "y"; mode = "0600"; uid = 7; gid = 8; };',
    )
    modes = (system / "etc" / ".rig-etc-modes").read_text().splitlines()
    assert "app.conf\t0640\tnobody\tnogroup" in modes and "ids.conf\t0600\t+7\t+8" in modes
    other = (system / "etc" / "pam.d" / "other").read_text().split("\n")
    assert [line.split() for line in other if line] == [
        [kind, "required", module]
        for kind in ("auth", "account", "password", "session")
        for module in ("pam_warn.so", "pam_deny.so")
    ]


def test_names_longer_than_31_characters_abort(tmp_path: Path) -> None:
    long = "u" * 32
    code, _, err = build_system(tmp_path / "u", ROOT_KEY + f"\n  users.users.{long} = {{ isNormalUser = true; }};")
    assert (
        code != 0
        and f"error: evaluation aborted with the following error message: 'Username '{long}' is longer than 31 characters which is not allowed!'"
        in err
    )
    code, _, err = build_system(
        tmp_path / "g", ROOT_KEY + f'\n  users.users.v = {{ isSystemUser = true; group = "{long}"; }};'
    )
    assert code != 0 and f"Group name '{long}' is longer than 31 characters which is not allowed!" in err
    assert (
        build_system(tmp_path / "ok", ROOT_KEY + f"\n  users.users.{long[:31]} = {{ isNormalUser = true; }};")[0] == 0
    )
