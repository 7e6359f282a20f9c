"""Recognising nixpkgs's conflict message in both of its formats, and the hint."""

from __future__ import annotations

from rehearse.host.nix import Source, evaluation_error, find_conflict

CURRENT = """\
error: The option `virtualisation.vmVariant.services.timesyncd.enable' has conflicting definition values:
       - In `/nix/store/abc-source/nixos/modules/virtualisation/qemu-vm.nix': false
       - In `/etc/nixos/configuration.nix': true
       Use `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.
(use '--show-trace' to show detailed location information)
"""

OLDER = """\
building Nix...
error: The option `services.timesyncd.enable' has conflicting definitions, in `/nix/var/nix/profiles/per-user/root/channels/nixpkgs/nixos/modules/virtualisation/qemu-vm.nix' and `configuration.nix'.
(use '--show-trace' to show detailed location information)
"""

QUOTED = """\
error: The option `home.file.".bashrc".source' has conflicting definition values:
       - In `/a.nix': "x"
       - In `/b.nix': "y"
"""


def test_current_format() -> None:
    c = find_conflict(CURRENT)
    assert c is not None
    assert c.option == "virtualisation.vmVariant.services.timesyncd.enable"
    assert c.files == (
        "/nix/store/abc-source/nixos/modules/virtualisation/qemu-vm.nix",
        "/etc/nixos/configuration.nix",
    )


def test_older_format() -> None:
    c = find_conflict(OLDER)
    assert c is not None
    assert c.option == "services.timesyncd.enable"
    assert c.files[1] == "configuration.nix"


def test_quoted_option_name() -> None:
    c = find_conflict(QUOTED)
    assert c is not None and c.option == 'home.file.".bashrc".source'


def test_no_conflict() -> None:
    assert find_conflict("error: undefined variable 'foo'") is None


def test_hint_names_option_and_both_fixes() -> None:
    for text in (CURRENT, OLDER):
        err = evaluation_error(text, Source(configuration=None))
        assert err.hint is not None
        assert "services.timesyncd.enable = lib.mkDefault <value>;" in err.hint
        assert "virtualisation.vmVariant.services.timesyncd.enable = lib.mkForce <value>;" in err.hint
        assert "qemu-vm.nix" in err.hint
        assert "conflicting" in err.message


def test_missing_nixpkgs_hint() -> None:
    err = evaluation_error(
        "error: file 'nixpkgs/nixos/lib/eval-config.nix' was not found in the Nix search path (add it using $NIX_PATH or -I)",
        Source(configuration=None),
    )
    assert "-I nixpkgs=" in (err.hint or "")
