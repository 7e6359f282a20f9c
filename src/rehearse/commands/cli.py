"""rehearse's command line: parse, turn into values, dispatch. Nothing here
runs a process; errors become exit codes only in main().

Each command imports the layers it uses inside its branch of dispatch():
building the parser (completion, `--help`) imports none of them, and
`status` only the machines layer. These are the package's only imports
inside functions, with host/nix.py's progress view (a build's, only when
something builds)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rehearse.core import output
from rehearse.core.errors import ExitCode, Interrupted, RehearseError, closest, exit_codes_text

if TYPE_CHECKING:
    from rehearse.config import Settings
    from rehearse.core.values import Address
    from rehearse.host.nix import Source
    from rehearse.pipeline.deploy import DeployRequest
    from rehearse.pipeline.run import Report
    from rehearse.targets.target import Server

DESCRIPTION = """\
Rehearse a NixOS server change in a local VM: build a QEMU VM from the server's
own configuration, boot it, deploy each new version into the running VM (plan,
push, activate, verify, roll back), and see it work before the real server does."""

EPILOG = (
    exit_codes_text()
    + """

environment:
  REHEARSE_STATE_DIR  where VMs live (default $XDG_STATE_HOME/rehearse)
  NO_COLOR            no colour in the output
  NIX_PATH, NIX_CONFIG and nix.conf are Nix's own and passed through untouched"""
)

# One meaning of --all for every command (deploy, down, destroy).
ALL_HELP = (
    "every machine of rehearse.toml's [machines] when the current directory's rehearse.toml has any "
    "(other VMs are left alone); else every VM"
)

INCLUDE_HELP = "add PATH to the Nix search path, as nix-build -I does (e.g. -I nixpkgs=../nixpkgs); repeatable"


def _number(text: str) -> float:
    """A duration flag's value, in ASCII: float() also takes other scripts'
    digits ("６０"). Its bounds are checked later, with rehearse.toml's
    values, by config.seconds."""
    if not text.isascii():
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def _with_flag(flag: str) -> Callable[[str], tuple[str, str]]:
    """An ssh option's value, kept with its flag (-L SPEC), in the order given."""
    return lambda value: (flag, value)


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes (so `rehearse deploy x --debug` works)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show every command rehearse runs, and a traceback on errors",
    )
    return p


def _server_ssh_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust the server's host key on this first connection (ssh's accept-new; a changed key is refused)",
    )
    p.add_argument(
        "--sudo",
        action="store_true",
        help="a non-root user: run rehearse's commands on the server through sudo -n (the copy runs as the user, "
        "who must be one of the server's nix.settings.trusted-users)",
    )
    p.add_argument(
        "--ask-sudo-password",
        action="store_true",
        help="--sudo with a password: ask for it once on the terminal, then give it to each sudo on its stdin "
        "(sudo --prompt= --stdin, as nixos-rebuild-ng)",
    )


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        nargs="?",
        const="",
        metavar="USER@HOST[:PORT]",
        help="the server this VM's configuration is promoted to, not the VM (default: its entry in rehearse.toml's "
        "[promote] table)",
    )
    _server_ssh_options(p)


def _activation_options(p: argparse.ArgumentParser, undo: str) -> None:
    """The options of a command that activates a system in the VM (deploy, rollback)."""
    p.add_argument(
        "--confirm-timeout",
        type=_number,
        default=None,
        help=f"seconds the VM waits for confirmation before {undo} (default 60, at least 5)",
    )
    p.add_argument(
        "--activation-timeout",
        type=_number,
        default=None,
        help="seconds switch-to-configuration may take in the VM before it is stopped and rolled back "
        "(default 600, at least 10); the confirmation window starts when the switch ends",
    )
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON document on stdout")


def _nix_options(p: argparse.ArgumentParser) -> None:
    """Nix's own flags, for a command that builds (as nixos-rebuild passes them)."""
    nix = p.add_argument_group("Nix's options (handed to every Nix evaluation and build, as nixos-rebuild does)")
    nix.add_argument("--show-trace", action="store_true", help="Nix shows the whole trace of an evaluation error")
    nix.add_argument(
        "--option",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set Nix's setting NAME to VALUE, as in nix.conf (repeatable)",
    )
    nix.add_argument(
        "-L", "--print-build-logs", action="store_true", help="print every build's log as it comes, as nix build -L"
    )
    nix.add_argument("--keep-going", action="store_true", help="Nix builds what it can when a build fails")
    nix.add_argument("--builders", metavar="SPEC", help="Nix's remote builders, as its builders setting")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rehearse",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show every command rehearse runs, and a traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".", parents=common)

    up = add("up", "build a configuration's VM and boot it, or restart a VM by name")
    up.add_argument(
        "target",
        nargs="*",
        metavar="CONFIGURATION|NAME",
        help="the server's configuration.nix (a path), the name of an existing VM to start again "
        "(write ./NAME for a path that looks like a name), or a machine of rehearse.toml's [machines]; "
        "several: a fleet, on one private LAN (none: every machine of [machines], if there are any)",
    )
    up.add_argument(
        "--flake",
        action="append",
        default=[],
        metavar="REF#NAME",
        help="build the flake's nixosConfigurations.NAME (repeatable: a fleet)",
    )
    up.add_argument("-I", dest="include", action="append", default=[], metavar="PATH", help=INCLUDE_HELP)
    up.add_argument("--name", help="the VM's name (default: its networking.hostName)")
    up.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="HOST:GUEST",
        help="forward 127.0.0.1:HOST to the VM's GUEST port (repeatable)",
    )
    up.add_argument("--gui", action="store_true", help="open QEMU's window (headless by default)")
    up.add_argument(
        "--isolate",
        action="store_true",
        help="cut the VM off from the host and the outside: it reaches no service on the host's 127.0.0.1 "
        "(10.0.2.2), no other VM's forwards, no network; its forwards still work (restrict_network in "
        "rehearse.toml; the VM stays isolated until destroyed)",
    )
    up.add_argument("--timeout", type=_number, default=None, help="seconds to wait for SSH (default 300, at least 1)")
    up.add_argument(
        "--rebuild",
        action="store_true",
        help="build from the configuration even if the VM has a deployed system to restart with",
    )
    _nix_options(up)

    dp = add("deploy", "build a configuration and switch the running VM to it")
    dp.add_argument("name", nargs="?", help="the VM to deploy to (or --on, --all)")
    dp.add_argument(
        "configuration", nargs="?", help="another configuration.nix (default: the one the VM was made from)"
    )
    dp.add_argument("--flake", metavar="REF#NAME", help="another flake configuration")
    dp.add_argument(
        "-I",
        dest="include",
        action="append",
        default=[],
        metavar="PATH",
        help=INCLUDE_HELP + "; without a configuration, the VM's own configuration is built with it",
    )
    which = dp.add_mutually_exclusive_group()
    which.add_argument(
        "--on",
        metavar="NAMES",
        help="deploy to several VMs, each its own configuration: names and @tags of rehearse.toml's machines, "
        "separated by commas (--on web,db, --on @front); one that fails is rolled back alone",
    )
    which.add_argument("--all", action="store_true", help=ALL_HELP)
    dp.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="with --on or --all: deploy to N machines at once (default 10, as colmena)",
    )
    dp.add_argument(
        "--watch",
        action="store_true",
        help="deploy again on every save of the configuration's files, a line per deploy, until Ctrl-C "
        "(which lets a deploy in progress finish or roll back first)",
    )
    dp.add_argument("--dry-run", action="store_true", help="build and show the plan; activate nothing")
    dp.add_argument("-y", "--yes", action="store_true", help="do not ask before activating")
    dp.add_argument("--copy", action="store_true", help="copy the closure even when the VM sees the host store")
    dp.add_argument(
        "--no-ssh-check",
        dest="ssh_check",
        action="store_false",
        help="do not check after the switch that the server's own sshd still lets its users in",
    )
    dp.add_argument(
        "--keep-failed",
        action="store_true",
        help="leave a failed activation (a failed unit or check) in place to look at it, unconfirmed but not "
        "rolled back; `rehearse rollback NAME` goes back (a new system rehearse cannot reach still rolls back)",
    )
    dp.add_argument("-v", "--verbose", action="store_true", help="list every name, unit and store path of the plan")
    _activation_options(dp, "rolling back")
    _nix_options(dp)

    pr = add("promote", "put the configuration a VM rehearsed on the real server (plan, checks, rollback)")
    pr.add_argument("name", help="the VM that rehearsed it")
    pr.add_argument(
        "--to",
        metavar="USER@HOST[:PORT]",
        help="the server (default: this VM's entry in rehearse.toml's [promote] table); reached with your "
        "own ssh configuration, agent, known_hosts and NIX_SSHOPTS",
    )
    how = pr.add_mutually_exclusive_group()
    how.add_argument(
        "--test",
        dest="action",
        action="store_const",
        const="test",
        help="activate, as nixos-rebuild test: the system profile and boot entry stay as they were (no generation)",
    )
    how.add_argument("--boot", dest="action", action="store_const", const="boot", help="make it the boot entry only")
    pr.set_defaults(action="switch")
    pr.add_argument("--dry-run", action="store_true", help="build and show the plan; nothing goes to the server")
    pr.add_argument("-y", "--yes", action="store_true", help="do not ask before activating")
    pr.add_argument("--force", action="store_true", help="promote a revision the VM never rehearsed (recorded)")
    _server_ssh_options(pr)
    pr.add_argument(
        "--use-substitutes", action="store_true", help="let the server fetch what it can from its own caches"
    )
    pr.add_argument("--build-host", metavar="HOST", help="build on this Nix remote builder (ssh-ng) instead")
    _activation_options(pr, "rolling back")
    _nix_options(pr)

    g = add("generations", "list a VM's system generations (or those of the server it was promoted to)")
    g.add_argument("name", help="the VM")
    g.add_argument("--json", action="store_true", help="print them as JSON on stdout")
    _server_options(g)

    rb = add("rollback", "switch a VM (or the server it was promoted to) back to an earlier generation")
    rb.add_argument("name", help="the VM")
    rb.add_argument("--to", type=int, metavar="N", help="the generation (default: the one before the current)")
    _server_options(rb)
    rb.add_argument("-y", "--yes", action="store_true", help="do not ask before rolling a server back")
    _activation_options(rb, "undoing the rollback")

    sn = add("snapshot", "save a VM's disk, system and state under a tag (the VM may run), or delete one")
    sn.add_argument("name", help="the VM")
    sn.add_argument("tag", nargs="?", help="the snapshot's tag (default: the date and time)")
    sn.add_argument("--delete", action="store_true", help="delete the snapshot TAG")
    sl = add("snapshots", "list a VM's snapshots: tag, time, disk, system")
    sl.add_argument("name", help="the VM")
    sl.add_argument("--json", action="store_true", help="print them as JSON on stdout")
    rs = add("restore", "bring a VM back to a snapshot (disk, system, state) and boot the saved system")
    rs.add_argument("name", help="the VM")
    rs.add_argument("tag", help="the snapshot")
    rs.add_argument(
        "--timeout",
        type=_number,
        default=None,
        help="seconds to wait for a running VM's power-off before making QEMU quit (default 60)",
    )

    s = add("ssh", "log into a VM, or run a command in it (as ssh HOST COMMAND does)")
    # argparse's own usage would read: a command is needed
    s.usage = "%(prog)s [-h] [--debug] [-L SPEC] [-R SPEC] [-D SPEC] [-N] name [-- COMMAND ...]"
    for flag, what in (("-L", "local"), ("-R", "remote"), ("-D", "dynamic")):
        s.add_argument(
            flag,
            dest="ssh_options",
            action="append",
            type=_with_flag(flag),
            default=[],
            metavar="SPEC",
            help=f"a {what} port forwarding, as ssh {flag} (also after the name or its --)",
        )
    s.add_argument("-N", action="store_true", help="run no command (forwardings only), as ssh -N")
    s.add_argument("name", help="the VM")
    s.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="a command for the VM's shell: the words are joined with spaces, as ssh does; none: a login shell",
    ).required = False  # argparse's default for REMAINDER: `ssh` alone would say a command is required

    cpy = add("cp", "copy files to or from a VM (as scp, through the VM's own channel)")
    cpy.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="sources, then the target; NAME:PATH is a path in VM NAME (a local path with a colon: ./PATH)",
    )
    cpy.add_argument("-r", "--recursive", action="store_true", help="copy directories, as scp -r")

    sc = add("ssh-config", "print a VM's Host block for your own ssh, scp and rsync (as vagrant ssh-config)")
    sc.add_argument("name", help="the VM")

    st = add("status", "list the VMs")
    st.add_argument("--json", action="store_true", help="print them as JSON on stdout")

    c = add("console", "show a VM's serial console")
    c.add_argument("name", help="the VM")
    c.add_argument("-f", "--follow", action="store_true", help="keep showing what the console prints")

    for verb, text in (
        ("down", "power VMs off"),
        ("destroy", "power VMs off and delete their disks, snapshots and state"),
    ):
        d = add(verb, text)
        d.add_argument("name", nargs="*", help="the VM (several: each of them, as `up web db` starts them)")
        d.add_argument("--all", action="store_true", help=ALL_HELP)
        if verb == "destroy":
            d.add_argument(
                "-y",
                "--yes",
                action="store_true",
                help="do not ask before destroying several VMs (--all); without a terminal, --all needs it",
            )
        d.add_argument(
            "--timeout",
            type=_number,
            default=None,
            help="seconds to wait for power-off before making QEMU quit (default 60; 0: do not wait)",
        )

    cp = sub.add_parser("completion", help="print the shell completion script for bash, zsh or fish")
    cp.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell: bash, zsh or fish")
    _mark_completions(sub)
    return p


def _mark_completions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """What the completion scripts offer for positionals, by their dest: a
    `name` is a VM's (from the state directory), a `configuration` a path."""
    from rehearse.commands import completion

    for command in sub.choices.values():
        for action in command._get_positional_actions():
            if action.dest == "name":
                completion.mark_vm_name(action)
            elif action.dest in ("configuration", "paths"):  # paths: cp's, local ones
                completion.mark_path(action)
            elif action.dest == "target":  # up: a configuration, or an existing VM's name
                completion.mark_vm_name(action)
                completion.mark_path(action)


def dispatch(args: argparse.Namespace) -> int:
    from rehearse.machines import lifecycle  # config only where needed: `status` must start fast

    if args.command in ("up", "deploy", "promote"):
        _use_nix_flags(args)
    match args.command:
        case "up":
            from rehearse import config
            from rehearse.commands import requests
            from rehearse.fleets import fleet

            settings = config.load_settings()
            request = requests.up_request(args, settings)
            if isinstance(request, fleet.UpRequest):
                return fleet.up(request)
            lifecycle.up(request)
        case "deploy":
            from rehearse import config
            from rehearse.pipeline import deploy

            settings = config.load_settings()
            if args.on is not None or args.all:
                return _fleet_deploy(args, settings)
            if args.parallel is not None:
                raise RehearseError("--parallel goes with --on or --all.", exit_code=ExitCode.USAGE)
            if args.name is None:
                raise RehearseError(
                    "which VM? Give its name, or --on NAMES, or --all.",
                    hint="rehearse deploy web; rehearse deploy --on web,db; rehearse deploy --all",
                    exit_code=ExitCode.USAGE,
                )
            if args.watch and (args.dry_run or args.json):
                raise RehearseError(
                    "--watch deploys every change: not with --dry-run or --json.", exit_code=ExitCode.USAGE
                )
            other: Source | None = None
            if args.configuration is not None or args.flake is not None:
                other = config.resolve_source(args.configuration, args.flake, args.include, settings)
            deploying = _deploy_request(args, settings, args.name, other)
            if args.watch:
                from rehearse.fleets import watch

                return watch.watch(deploying)
            return _report(args, deploy.run_deploy(deploying))
        case "promote":
            from rehearse import config
            from rehearse.pipeline import promote

            settings = config.load_settings()
            target = _address(args.name, args.to, settings, "--to")
            confirm, activation = _confirm_timeout(args, settings), _activation_timeout(args, settings)
            password = _sudo_password(args, target)  # asked once every argument is known good
            promoted = promote.run_promote(
                promote.PromoteRequest(
                    name=args.name,
                    to=target,
                    action=args.action,
                    dry_run=args.dry_run,
                    yes=args.yes,
                    force=args.force,
                    accept_new_host_key=args.accept_new_host_key,
                    sudo=args.sudo or args.ask_sudo_password,
                    sudo_password=password,
                    use_substitutes=args.use_substitutes,
                    build_host=args.build_host,
                    confirm_timeout=confirm,
                    activation_timeout=activation,
                    checks=settings.checks_of(args.name),
                )
            )
            return _report(args, promoted)
        case "generations":
            from rehearse import config
            from rehearse.pipeline import deploy

            deploy.generations(args.name, args.json, _server(args, config.load_settings()))
        case "rollback":
            from rehearse import config
            from rehearse.pipeline import deploy

            settings = config.load_settings()
            report = deploy.rollback(
                deploy.RollbackRequest(
                    args.name,
                    args.to,
                    _confirm_timeout(args, settings),
                    activation_timeout=_activation_timeout(args, settings),
                    server=_server(args, settings),
                    yes=args.yes,
                )
            )
            return _report(args, report)
        case "snapshot":
            from rehearse.machines import snapshot

            if args.delete:
                if args.tag is None:
                    raise RehearseError(
                        "which snapshot? `--delete` needs its tag.",
                        hint=f"`rehearse snapshots {args.name}` lists them",
                        exit_code=ExitCode.USAGE,
                    )
                snapshot.delete(args.name, args.tag)
            else:
                snapshot.take(args.name, args.tag)
        case "snapshots":
            from rehearse.machines import snapshot

            snapshot.listing(args.name, args.json)
        case "restore":
            from rehearse import config
            from rehearse.machines import snapshot

            settings = config.load_settings()
            snapshot.restore(args.name, args.tag, _power_off_timeout(args), settings.ssh_timeout)
        case "ssh":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            options = tuple(w for pair in args.ssh_options for w in pair) + (("-N",) if args.N else ())
            return lifecycle.ssh_command(args.name, cmd, options)
        case "cp":
            if len(args.paths) < 2:
                raise RehearseError(
                    "what to copy where? Give the sources, then the target.",
                    hint="rehearse cp ./file fripon:/root/",
                    exit_code=ExitCode.USAGE,
                )
            return lifecycle.copy(args.paths, args.recursive)
        case "ssh-config":
            lifecycle.ssh_config(args.name)
        case "status":
            lifecycle.status(args.json)
        case "console":
            lifecycle.console(args.name, args.follow)
        case "down" | "destroy":
            timeout = _power_off_timeout(args)
            work = lifecycle.down if args.command == "down" else lifecycle.destroy
            if args.all and args.name:
                raise RehearseError("give a VM's name or --all, not both.", exit_code=ExitCode.USAGE)
            if not args.all and not args.name:
                raise RehearseError(
                    "which VM? Give its name, or --all.", hint="`rehearse status` lists them", exit_code=ExitCode.USAGE
                )
            if len(args.name) == 1:
                work(args.name[0], timeout)
                return 0
            from rehearse import config
            from rehearse.fleets import fleet

            if args.all:
                names = fleet.every_vm_of(config.load_settings().machines)
                if args.command == "destroy" and names and not _destroy_asked(names, args.yes):
                    output.info("nothing destroyed")
                    return ExitCode.DECLINED
            else:  # several: each is known before any is touched
                from rehearse.store.state import VMDir

                names = list(dict.fromkeys(args.name))
                for name in names:
                    VMDir(name).check()
            return fleet.every_vm(args.command, names, lambda name: work(name, timeout))
        case "completion":
            from rehearse.commands import completion

            output.result(completion.script(parser(), args.shell))
        case _:
            raise AssertionError(args.command)
    return 0


def _use_nix_flags(args: argparse.Namespace) -> None:
    """Nix's own flags of a command that builds, for every Nix call it makes."""
    from rehearse.host import nix

    for name, _ in args.option:
        if not name.strip():
            raise RehearseError(
                "--option NAME VALUE: the setting's name is empty.",
                hint="e.g. --option cores 2 (Nix's settings are those of nix.conf)",
                exit_code=ExitCode.USAGE,
            )
    if args.builders is not None and getattr(args, "build_host", None):
        raise RehearseError(
            "--build-host and --builders both say where Nix builds: give one.", exit_code=ExitCode.USAGE
        )
    nix.use_flags(
        nix.NixFlags(
            show_trace=args.show_trace,
            keep_going=args.keep_going,
            builders=args.builders,
            options=tuple((name, value) for name, value in args.option),
            print_build_logs=args.print_build_logs,
        )
    )


def _destroy_asked(names: list[str], yes: bool) -> bool:
    """destroy --all's go: --yes, or a yes on the terminal (none: USAGE)."""
    from rehearse.pipeline import deploy

    listed = ", ".join(names)
    deploy.must_ask(f"`destroy --all` would destroy {listed}", "nothing was destroyed", yes)
    return yes or deploy.ask(f"destroy {listed}: their disks, snapshots and state? [y/N]", False)


def _deploy_request(args: argparse.Namespace, settings: Settings, name: str, source: Source | None) -> DeployRequest:
    """`deploy`'s flags as a request for VM `name` (source None: its recorded configuration)."""
    from rehearse.pipeline import deploy

    return deploy.DeployRequest(
        name=name,
        source=source,
        include=tuple(args.include),
        dry_run=args.dry_run,
        yes=args.yes,
        force_copy=args.copy,
        confirm_timeout=_confirm_timeout(args, settings),
        activation_timeout=_activation_timeout(args, settings),
        checks=settings.checks_of(name),
        verbose=args.verbose,
        ssh_check=args.ssh_check,
        keep_failed=args.keep_failed,
    )


def _fleet_deploy(args: argparse.Namespace, settings: Settings) -> int:
    """deploy --on NAMES / --all: each machine's recorded configuration."""
    from rehearse.fleets import fleet

    if args.watch:
        raise RehearseError("--watch watches one VM's configuration: not with --on or --all.", exit_code=ExitCode.USAGE)
    if args.name is not None or args.configuration is not None or args.flake is not None:
        raise RehearseError(
            "--on and --all deploy each VM's own configuration: give no VM name or configuration with them.",
            hint="rehearse deploy --on web,db (or: rehearse deploy web ./other.nix for one VM)",
            exit_code=ExitCode.USAGE,
        )
    parallel = fleet.DEFAULT_PARALLEL if args.parallel is None else args.parallel
    if parallel < 1:
        raise RehearseError(f"--parallel {parallel}: expected 1 or more machines at once.", exit_code=ExitCode.USAGE)
    names = fleet.select(args.on, args.all, settings.machines, "deploy to")
    template = _deploy_request(args, settings, "", None)  # each machine's name and checks: fleet.deploy's
    return fleet.deploy(names, parallel, template, settings.checks_of, args.json)


def _address(name: str, given: str | None, settings: Settings, flag: str) -> Address:
    """The server a VM's configuration is promoted to: `given`, else the
    VM's entry in rehearse.toml's [promote] table."""
    from rehearse.core.values import Address

    to = given or dict(settings.promote).get(name)
    if not to:
        raise RehearseError(
            f"which server? No {flag} USER@HOST, and rehearse.toml has no [promote] entry for {name}.",
            hint=f'{flag} USER@HOST[:PORT], or in rehearse.toml: [promote] {name} = "root@HOST"',
            exit_code=ExitCode.USAGE,
        )
    return Address.parse(to, flag if given else f"rehearse.toml: promote.{name}")


def _server(args: argparse.Namespace, settings: Settings) -> Server | None:
    """--server [USER@HOST]: the server of `generations` and `rollback`, or None (the VM)."""
    from rehearse.store.state import VMDir
    from rehearse.targets.target import Server

    if args.server is None:
        return None
    address = _address(args.name, args.server or None, settings, "--server")
    return Server(
        address,
        VMDir(args.name),
        accept_new_host_key=args.accept_new_host_key,
        sudo=args.sudo or args.ask_sudo_password,
        sudo_password=_sudo_password(args, address),
    )


def _sudo_password(args: argparse.Namespace, address: Address) -> str | None:
    """--ask-sudo-password's, asked on the terminal; else None."""
    if not args.ask_sudo_password:
        return None
    from rehearse.host import ssh

    return ssh.ask_sudo_password(str(address))


# Every duration flag goes through config.seconds, with rehearse.toml's value
# (already checked the same way) as its default.


def _confirm_timeout(args: argparse.Namespace, settings: Settings) -> float:
    from rehearse import config

    return config.seconds(args.confirm_timeout, settings.confirm_timeout, "--confirm-timeout", config.CONFIRM)


def _activation_timeout(args: argparse.Namespace, settings: Settings) -> float:
    from rehearse import config

    return config.seconds(
        args.activation_timeout, settings.activation_timeout, "--activation-timeout", config.ACTIVATION
    )


def _power_off_timeout(args: argparse.Namespace) -> float:
    from rehearse import config

    return config.seconds(args.timeout, config.POWER_OFF_TIMEOUT, "--timeout", config.POWER_OFF)


def _report(args: argparse.Namespace, report: Report) -> int:
    """Print a deploy/rollback/promote outcome with --json; its exit code."""
    if args.json:
        output.result(json.dumps(report.to_json(), indent=2))
    return int(report.exit_code or 0)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line as values; an unknown word is a usage error of its
    subcommand, with its usage line and the closest flag it knows."""
    p = parser()
    args, unknown = p.parse_known_args(argv)
    if unknown:
        [sub] = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        command: argparse.ArgumentParser = sub.choices[args.command]
        flags = [o for a in command._actions for o in a.option_strings]
        first = next((w for w in unknown if w.startswith("-")), None)
        meant = closest(first.split("=", 1)[0], flags) if first is not None else None
        command.error(f"unrecognized arguments: {' '.join(unknown)}" + (f"; did you mean `{meant}`?" if meant else ""))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    debug = bool(getattr(args, "debug", False))
    output.configure(debug=debug)
    try:
        code = dispatch(args)
    except RehearseError as e:
        if debug:
            import traceback

            traceback.print_exc()
        if getattr(args, "json", False) and args.command in ("deploy", "rollback", "promote"):
            output.result(json.dumps(e.as_report(), indent=2))
        output.error(e.message, e.hint)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        output.live_end()
        if isinstance(e, Interrupted):
            output.error(f"interrupted: {e.where}", e.hint)
        else:
            output.error("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as e:
        if debug:
            raise
        output.error(
            f"internal error: {type(e).__name__}: {e}",
            hint="run the command again with --debug for the traceback, and report it",
        )
        sys.exit(ExitCode.FAILED)
    sys.exit(code)
