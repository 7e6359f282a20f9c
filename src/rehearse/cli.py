"""rehearse's command line: parse, turn into values, dispatch. Nothing here
runs a process; errors become exit codes only in main()."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rehearse.errors import RehearseError

if TYPE_CHECKING:
    from rehearse.nix import Source


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rehearse", description="Rehearse a NixOS server change in a local VM.")
    p.add_argument("--debug", action="store_true", help="log every command and show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="build the configuration's VM and boot it")
    up.add_argument("configuration", nargs="?", help="the server's configuration.nix")
    up.add_argument("--flake", metavar="REF#NAME", help="a flake's nixosConfigurations.NAME")
    up.add_argument(
        "-I",
        dest="include",
        action="append",
        default=[],
        metavar="nixpkgs=PATH",
        help="add to the Nix search path (as nix-build -I)",
    )
    up.add_argument("--name", help="the VM's name (default: its networking.hostName)")
    up.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="HOST:GUEST",
        help="forward 127.0.0.1:HOST to the VM's GUEST port (repeatable)",
    )
    up.add_argument("--gui", action="store_true", help="open QEMU's window (headless by default)")
    up.add_argument("--timeout", type=float, default=None, help="seconds to wait for SSH (default 300)")
    up.add_argument(
        "--rebuild",
        action="store_true",
        help="build from the configuration even if the VM has a deployed system to restart with",
    )

    dp = sub.add_parser("deploy", help="build the configuration and switch the running VM to it")
    dp.add_argument("name")
    dp.add_argument("configuration", nargs="?", help="another configuration.nix (default: the one given to up)")
    dp.add_argument("--flake", metavar="REF#NAME", help="another flake configuration")
    dp.add_argument("-I", dest="include", action="append", default=[], metavar="nixpkgs=PATH")
    dp.add_argument("--dry-run", action="store_true", help="build and show the plan; activate nothing")
    dp.add_argument("-y", "--yes", action="store_true", help="do not ask before activating")
    dp.add_argument("--copy", action="store_true", help="copy the closure even when the VM sees the host store")
    dp.add_argument(
        "--confirm-timeout",
        type=float,
        default=None,
        help="seconds the VM waits for confirmation before rolling back (default 60)",
    )

    g = sub.add_parser("generations", help="list a VM's system generations")
    g.add_argument("name")
    g.add_argument("--json", action="store_true")

    rb = sub.add_parser("rollback", help="switch a VM back to an earlier generation")
    rb.add_argument("name")
    rb.add_argument("--to", type=int, metavar="N", help="the generation (default: the one before the current)")
    rb.add_argument("--confirm-timeout", type=float, default=None)

    s = sub.add_parser("ssh", help="log into a VM, or run a command in it")
    s.add_argument("name")
    s.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND...")

    st = sub.add_parser("status", help="list the VMs")
    st.add_argument("--json", action="store_true")

    c = sub.add_parser("console", help="show a VM's serial console")
    c.add_argument("name")
    c.add_argument("-f", "--follow", action="store_true")

    for verb, text in (
        ("down", "power a VM off"),
        ("destroy", "power a VM off and delete its disk and state"),
    ):
        d = sub.add_parser(verb, help=text)
        d.add_argument("name")
        d.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for power-off before killing")

    cp = sub.add_parser("completion", help="print the shell completion script for bash, zsh or fish")
    cp.add_argument("shell", choices=("bash", "zsh", "fish"))
    _mark_completions(sub)
    return p


def _mark_completions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """What the completion scripts offer for positionals, by their dest: a
    `name` is a VM's (from the state directory), a `configuration` a path."""
    from rehearse import completion

    for command in sub.choices.values():
        for action in command._get_positional_actions():
            if action.dest == "name":
                completion.mark_vm_name(action)
            elif action.dest == "configuration":
                completion.mark_path(action)


def dispatch(args: argparse.Namespace) -> int:
    from rehearse import config, lifecycle

    match args.command:
        case "up":
            settings = config.load_settings()
            source = config.resolve_source(args.configuration, args.flake, args.include, settings)
            forwards = tuple(config.parse_forward(f) for f in (*settings.forward, *args.forward))
            lifecycle.up(
                lifecycle.UpRequest(
                    source=source,
                    name=args.name,
                    forwards=forwards,
                    gui=args.gui,
                    ssh_timeout=args.timeout if args.timeout is not None else settings.ssh_timeout,
                    rebuild=args.rebuild,
                )
            )
        case "deploy":
            from rehearse import deploy

            settings = config.load_settings()
            other: Source | None = None
            if args.configuration or args.flake or args.include:
                other = config.resolve_source(args.configuration, args.flake, args.include, settings)
            return deploy.run_deploy(
                deploy.DeployRequest(
                    name=args.name,
                    source=other,
                    dry_run=args.dry_run,
                    yes=args.yes,
                    force_copy=args.copy,
                    confirm_timeout=args.confirm_timeout or settings.confirm_timeout,
                    checks=tuple(deploy.Check.parse(c) for c in settings.checks),
                )
            )
        case "generations":
            from rehearse import deploy

            deploy.generations(args.name, args.json)
        case "rollback":
            from rehearse import deploy

            settings = config.load_settings()
            return deploy.rollback(args.name, args.to, args.confirm_timeout or settings.confirm_timeout)
        case "ssh":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return lifecycle.ssh_command(args.name, cmd)
        case "status":
            lifecycle.status(args.json)
        case "console":
            lifecycle.console(args.name, args.follow)
        case "down":
            lifecycle.down(args.name, args.timeout)
        case "destroy":
            lifecycle.destroy(args.name, args.timeout)
        case "completion":
            from rehearse import completion, output

            output.result(completion.script(parser(), args.shell))
        case _:
            raise AssertionError(args.command)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    try:
        code = dispatch(args)
    except RehearseError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
