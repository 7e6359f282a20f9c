"""rehearse.toml and command-line flags → frozen values.

rehearse.toml is looked up in the current directory:

    nixpkgs = "../nixpkgs"        # a path (relative to the file), or any form `-I nixpkgs=` takes
    configuration = "./configuration.nix"
    # flake = ".#fripon"
    forward = ["8080:80"]          # HOST:GUEST, on 127.0.0.1
    ssh_timeout = 300
    confirm_timeout = 60           # seconds the VM waits for rehearse to confirm a new system
    checks = [ { cmd = "systemctl is-active nginx" }, { tcp = 8080 }, { http = "http://127.0.0.1:8080/" } ]
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearse.errors import ExitCode, RehearseError
from rehearse.nix import Source
from rehearse.vm import Forward

if TYPE_CHECKING:
    import argparse

    from rehearse.lifecycle import UpRequest

FILE_NAME = "rehearse.toml"


@dataclass(frozen=True)
class Settings:
    nixpkgs: str | None = None
    configuration: Path | None = None
    flake: str | None = None
    forward: tuple[str, ...] = ()
    ssh_timeout: float = 300.0
    confirm_timeout: float = 60.0
    checks: tuple[dict[str, Any], ...] = ()


def load_settings(directory: Path | None = None) -> Settings:
    path = (directory or Path.cwd()) / FILE_NAME
    if not path.exists():
        return Settings()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RehearseError(f"{path}: {e}", hint="fix the TOML syntax", exit_code=ExitCode.USAGE) from None
    known = {"nixpkgs", "configuration", "flake", "forward", "ssh_timeout", "confirm_timeout", "checks"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RehearseError(
            f"{path}: unknown setting(s) {', '.join(unknown)}.",
            hint=f"known settings: {', '.join(sorted(known))}",
            exit_code=ExitCode.USAGE,
        )
    base = path.parent
    nixpkgs = data.get("nixpkgs")
    if isinstance(nixpkgs, str) and not re.match(r"^[a-z+]+:", nixpkgs):
        nixpkgs = str((base / nixpkgs).resolve())
    conf = data.get("configuration")
    return Settings(
        nixpkgs=nixpkgs,
        configuration=(base / conf).resolve() if isinstance(conf, str) else None,
        flake=data.get("flake"),
        forward=tuple(data.get("forward", ())),
        ssh_timeout=float(data.get("ssh_timeout", 300)),
        confirm_timeout=float(data.get("confirm_timeout", 60)),
        checks=tuple(data.get("checks", ())),
    )


def parse_forward(spec: str) -> Forward:
    m = re.fullmatch(r"(?:(tcp|udp)/)?(\d{1,5}):(\d{1,5})", spec)
    if not m or not (0 < int(m.group(2)) < 65536 and 0 < int(m.group(3)) < 65536):
        raise RehearseError(
            f"invalid forward {spec!r}.",
            hint="write HOST_PORT:GUEST_PORT, e.g. --forward 8080:80",
            exit_code=ExitCode.USAGE,
        )
    return Forward(int(m.group(2)), int(m.group(3)), m.group(1) or "tcp")


def resolve_source(configuration: str | None, flake: str | None, includes: list[str], settings: Settings) -> Source:
    """Which configuration to build, from flags first, then rehearse.toml."""
    if configuration and flake:
        raise RehearseError("give a configuration file or --flake, not both.", exit_code=ExitCode.USAGE)
    include = list(includes)
    if settings.nixpkgs and not any(i.startswith("nixpkgs=") for i in include):
        include.append(f"nixpkgs={settings.nixpkgs}")
    flake = flake or (settings.flake if not configuration else None)
    if flake:
        ref, sep, attr = flake.partition("#")
        if not sep or not attr:
            raise RehearseError(
                f"flake reference {flake!r} names no configuration.",
                hint="write --flake PATH#NAME, e.g. --flake .#fripon",
                exit_code=ExitCode.USAGE,
            )
        if not re.match(r"^[a-z+]+:", ref):
            local = Path(ref or ".").resolve()
            if not (local / "flake.nix").exists():
                raise RehearseError(f"no flake.nix in {local}.", exit_code=ExitCode.USAGE)
            ref = str(local)
        return Source(flake=ref, attr=attr, include=tuple(include))
    path = Path(configuration).resolve() if configuration else settings.configuration
    if path is None:
        raise RehearseError(
            "which configuration?",
            hint='rehearse up ./configuration.nix, rehearse up --flake .#NAME, or configuration = "…" in rehearse.toml',
            exit_code=ExitCode.USAGE,
        )
    if not path.exists():
        raise RehearseError(
            f"{path}: no such file.", hint="give the path of the server's configuration.nix", exit_code=ExitCode.USAGE
        )
    if path.is_dir():
        path = path / "configuration.nix" if (path / "configuration.nix").exists() else path / "default.nix"
    return Source(configuration=path, include=tuple(include))


def seconds(value: float | None, default: float, flag: str) -> float:
    """A duration from a flag (None: the default), which must be a positive number."""
    if value is None:
        return default
    if not math.isfinite(value) or value <= 0:
        raise RehearseError(f"{flag} must be a positive number of seconds, not {value}.", exit_code=ExitCode.USAGE)
    return value


def merge_include(recorded: tuple[str, ...], new: list[str]) -> tuple[str, ...]:
    """The search path `recorded`, with each new `-I prefix=…` replacing the
    recorded entry of the same prefix (nixpkgs=… replaces nixpkgs=…)."""
    prefixes = {i.split("=", 1)[0] for i in new if "=" in i}
    kept = [i for i in recorded if "=" not in i or i.split("=", 1)[0] not in prefixes]
    return (*new, *(i for i in kept if i not in new))


def looks_like_path(target: str) -> bool:
    return "/" in target or target.endswith(".nix") or target in (".", "..")


def up_request(args: argparse.Namespace, settings: Settings) -> UpRequest:
    """`up CONFIGURATION`, `up --flake REF#NAME`, or `up NAME` (a VM that
    exists: started again with what it last ran). A bare word names a VM
    when one exists by that name; ./NAME always means a path."""
    from rehearse import lifecycle
    from rehearse.state import VMDir, check_name

    forwards = tuple(parse_forward(f) for f in (*settings.forward, *args.forward))
    timeout = seconds(args.timeout, settings.ssh_timeout, "--timeout")
    target: str | None = args.target
    if target is not None and not args.flake and not looks_like_path(target):
        if VMDir.named(target) is not None:
            if args.name and args.name != target:
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
            )
        if not Path(target).exists():
            raise RehearseError(
                f"no VM named {target!r}, and no file {target!r}.",
                hint="`rehearse status` lists the VMs; give a configuration as a path (./configuration.nix)",
                exit_code=ExitCode.USAGE,
            )
    if args.name is not None:
        check_name(args.name)
    return lifecycle.UpRequest(
        source=resolve_source(target, args.flake, args.include, settings),
        name=args.name,
        forwards=forwards,
        gui=args.gui,
        ssh_timeout=timeout,
        rebuild=args.rebuild,
    )
