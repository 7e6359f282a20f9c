"""Command-line flags → frozen requests: `up`'s, for one VM or a fleet.
(rehearse.toml itself is config.py's, which knows nothing of commands.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from rehearse import config
from rehearse.core.errors import ExitCode, RehearseError, did_you_mean
from rehearse.fleets import fleet
from rehearse.host import qemu
from rehearse.machines import lifecycle
from rehearse.store.state import VMDir, all_vms, check_name


def looks_like_path(target: str) -> bool:
    return "/" in target or target.endswith(".nix") or target in (".", "..")


def up_request(args: argparse.Namespace, settings: config.Settings) -> lifecycle.UpRequest | fleet.UpRequest:
    """`up CONFIGURATION`, `up --flake REF#NAME`, or `up NAME` (a VM that
    exists: started again with what it last ran). A bare word names a VM
    when one exists by that name; ./NAME always means a path.

    A fleet: several configurations or flakes, machines of rehearse.toml's
    [machines] (by name), or none of them when rehearse.toml has machines
    (all of them)."""
    # Checked first, and when given at all: `--name ''` is an invalid name,
    # not "no name" (which would fall back to the host name).
    if args.name is not None:
        check_name(args.name)
    targets = [config.nonempty(t, "the configuration or VM name") or "" for t in args.target]
    flakes = [config.nonempty(f, "--flake") or "" for f in args.flake]
    forwards = tuple(config.unique_forwards([*settings.forward, *(config.parse_forward(f) for f in args.forward)]))
    timeout = config.seconds(args.timeout, settings.ssh_timeout, "--timeout", config.SSH_WAIT)
    isolate = bool(args.isolate) or settings.restrict_network
    named = [t for t in targets if not looks_like_path(t) and settings.machine(t) is not None]
    fleet = len(targets) + len(flakes) > 1 or bool(named)
    if not targets and not flakes and settings.machines:
        fleet, named = True, [m.name for m in settings.machines]
        targets = named
    if fleet:
        return _fleet_request(args, settings, targets, flakes, forwards, timeout, isolate)
    target = targets[0] if targets else None
    flake = flakes[0] if flakes else None
    if target is not None and not flake and not looks_like_path(target):
        if VMDir.named(target) is not None:
            if args.name is not None and args.name != target:
                raise RehearseError(
                    f"{target!r} is a VM; --name {args.name!r} would name another one.", exit_code=ExitCode.USAGE
                )
            return lifecycle.UpRequest(
                source=None,
                name=check_name(target),
                forwards=forwards,
                gui=args.gui,
                ssh_timeout=timeout,
                rebuild=args.rebuild,
                include=tuple(args.include),
                isolate=isolate,
            )
        if config.stat_or_none(Path(target)) is None:
            raise RehearseError(
                f"no VM named {target!r}, and no file {target!r}" + did_you_mean(target, (d.name for d in all_vms())),
                hint="`rehearse status` lists the VMs; give a configuration as a path (./configuration.nix)",
                exit_code=ExitCode.USAGE,
            )
    return lifecycle.UpRequest(
        source=config.resolve_source(target, flake, args.include, settings),
        name=args.name,
        forwards=forwards,
        gui=args.gui,
        ssh_timeout=timeout,
        rebuild=args.rebuild,
        isolate=isolate,
    )


def _fleet_request(
    args: argparse.Namespace,
    settings: config.Settings,
    targets: list[str],
    flakes: list[str],
    forwards: tuple[qemu.Forward, ...],
    timeout: float,
    isolate: bool,
) -> fleet.UpRequest:
    """The machines of a fleet's `up`: rehearse.toml's by name, others by path or flake."""
    if args.name is not None:
        raise RehearseError(
            "--name names one VM; a fleet's machines are named by their host names, or by rehearse.toml's "
            "[machines.NAME].",
            exit_code=ExitCode.USAGE,
        )
    for target in targets:  # every word first: a typo is named before any file is read
        if (
            not looks_like_path(target)
            and settings.machine(target) is None
            and config.stat_or_none(Path(target)) is None
        ):
            known = ", ".join(m.name for m in settings.machines)
            raise RehearseError(
                f"no machine named {target!r} in rehearse.toml, and no file {target!r}.",
                hint=f"machines: {known}" if known else "give a configuration as a path (./configuration.nix)",
                exit_code=ExitCode.USAGE,
            )
    machines: list[fleet.Machine] = []
    for target in targets:
        m = settings.machine(target) if not looks_like_path(target) else None
        if m is not None:
            source = config.resolve_source(
                str(m.configuration) if m.configuration else None, m.flake, args.include, settings
            )
            machines.append(fleet.Machine(source, m.name, m.forward, m.lan_interface))
        else:
            machines.append(fleet.Machine(config.resolve_source(target, None, args.include, settings)))
    machines += [fleet.Machine(config.resolve_source(None, f, args.include, settings)) for f in flakes]
    return fleet.UpRequest(
        tuple(machines),
        forwards,
        gui=args.gui,
        ssh_timeout=timeout,
        rebuild=args.rebuild,
        isolate=isolate,
    )
