"""One function per Nix operation rehearse performs.

Nix is called with the user's own settings (NIX_PATH, nix.conf, NIX_CONFIG)
untouched; rehearse only adds `-I` entries the user asked for, and to
nix-build the log format it reads progress from.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rehearse.core.errors import ExitCode, RehearseError, one_line
from rehearse.host import process
from rehearse.store.state import RecordedSource

FLAKE_FEATURES = ["--option", "extra-experimental-features", "nix-command flakes"]
# Nix's events as `@nix {json}` lines on stderr (progress.py reads them); -v
# adds "evaluating file" messages, shown while a long evaluation runs.
JSON_LOG = ["--log-format", "internal-json", "-v"]


@dataclass(frozen=True)
class NixFlags:
    """Nix's own flags, as the user gave them to a command that builds (up,
    deploy, promote), handed to every Nix call that evaluates or builds, as
    nixos-rebuild-ng passes its common and build flags to nix-build.

    `-L` is not handed on: nix-build (2.8) refuses it, and the JSON log
    rehearse reads already carries every build log line; rehearse prints
    them as they come instead (progress_view), as `nix build -L` does."""

    show_trace: bool = False
    keep_going: bool = False
    builders: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # --option NAME VALUE, in order
    print_build_logs: bool = False

    def words(self) -> list[str]:
        words = ["--show-trace"] if self.show_trace else []
        words += ["--keep-going"] if self.keep_going else []
        words += ["--builders", self.builders] if self.builders is not None else []
        for name, value in self.options:
            words += ["--option", name, value]
        return words


# The flags of this run of rehearse: one command, one set (set by the
# command line before anything builds; fleets' threads share them).
_flags = NixFlags()


def use_flags(flags: NixFlags) -> None:
    global _flags
    _flags = flags


def flags() -> NixFlags:
    return _flags


@dataclass(frozen=True)
class Source:
    """Where a VM's configuration comes from: a configuration.nix or a flake."""

    configuration: Path | None = None
    flake: str | None = None
    attr: str | None = None
    include: tuple[str, ...] = field(default_factory=tuple)  # -I entries (nixpkgs=PATH …)

    def record(self) -> RecordedSource:
        """As a VM's state records it."""
        configuration = str(self.configuration) if self.configuration else None
        return RecordedSource(configuration, self.flake, self.attr, self.include)

    @classmethod
    def of_record(cls, data: RecordedSource | None) -> Source:
        """A VM's recorded source (None: none recorded, which of_vm refuses)."""
        data = data or RecordedSource()
        configuration = Path(data.configuration) if data.configuration else None
        return cls(configuration=configuration, flake=data.flake, attr=data.attr, include=data.include)

    def of_vm(self, name: str) -> Source:
        """This source, recorded for VM `name`, when it names a configuration
        to build; else a usage error (a state with no source was damaged or
        made by hand: Nix would be asked to build "None")."""
        if self.configuration is None and not (self.flake and self.attr):
            raise RehearseError(
                f"VM {name!r} has no recorded configuration (its state.json names none): "
                "rehearse does not know what to build.",
                hint=f"`rehearse deploy {name} ./configuration.nix` (a running VM) or "
                f"`rehearse up ./configuration.nix --name {name}` gives it one; or `rehearse destroy {name}`",
                exit_code=ExitCode.USAGE,
            )
        return self

    def describe(self) -> str:
        """The source as messages show it: on one line, whatever its path holds."""
        if self.flake is not None:
            return one_line(f"{self.flake}#{self.attr}")
        return one_line(str(self.configuration))


@dataclass(frozen=True)
class VMInfo:
    name: str
    host_name: str
    modern: bool
    forward_ports: list[dict[str, Any]]
    overrides: list[str]  # the server's settings the VM overrides (nix/vm-module.nix)
    domain: str | None = None
    memory_size: int | None = None  # MiB, virtualisation.memorySize
    lan_candidates: list[dict[str, str]] = field(default_factory=list)  # {name, address}: interfaces with an address


def _eval_file() -> str:
    return str(resources.files("rehearse.host") / "nix" / "eval.nix")


def _args(source: Source, settings: Path | None) -> list[str]:
    words = _flags.words()
    for inc in source.include:
        words += ["-I", inc]
    if source.flake is not None:
        words += FLAKE_FEATURES
        words += ["--argstr", "flake", source.flake, "--argstr", "attr", source.attr or ""]
    else:
        words += ["--argstr", "configuration", str(source.configuration)]
    if settings is not None:
        words += ["--argstr", "settings", str(settings)]
    return words


def ensure_flake_lock(source: Source) -> None:
    """Write the lock file of a local flake that has none, as `nix build`
    would (builtins.getFlake cannot write it)."""
    if source.flake is None or not source.flake.startswith("/"):
        return
    if (Path(source.flake) / "flake.lock").exists():
        return
    result = process.run(["nix", *FLAKE_FEATURES, "flake", "lock", *_flags.words(), source.flake], check=False)
    if result.returncode != 0:
        raise RehearseError(
            f"could not lock the flake {source.flake}:\n{_trim(result.stderr)}", exit_code=ExitCode.CONFIG
        )


def vm_info(source: Source) -> VMInfo:
    """Evaluate what rehearse needs to know before building (name, forwards)."""
    ensure_flake_lock(source)
    result = process.run(
        ["nix-instantiate", "--eval", "--strict", "--json", _eval_file(), "-A", "info", *_args(source, None)],
        check=False,
    )
    if result.returncode != 0:
        raise evaluation_error(result.stderr, source)
    data = json.loads(result.stdout)
    return VMInfo(
        data["name"],
        data["hostName"],
        data["modern"],
        data["forwardPorts"],
        data.get("overrides", []),
        domain=data.get("domain"),
        memory_size=data.get("memorySize"),
        lan_candidates=data.get("lanCandidates", []),
    )


@dataclass(frozen=True)
class ServerEval:
    """The server's own system, evaluated apart from the VM's."""

    failed_assertions: list[str]
    # Its derivation: names this revision of the configuration (files,
    # inputs, nixpkgs) for promote's rehearsal guard. None: it does not
    # evaluate (a failed assertion, an older nixpkgs).
    drv_path: str | None

    def warning(self) -> str | None:
        """What `up` and `deploy` warn of when the server's own system would
        not build (the VM's does); None when it would."""
        if not self.failed_assertions:
            return None
        return (
            "the server itself could not build this configuration (the VM can: its variant differs); "
            "Failed assertions:\n" + "".join(f"- {m}\n" for m in self.failed_assertions).rstrip()
        )


def server_eval(source: Source, *, instantiate: bool = False) -> ServerEval:
    """The failed assertions of the server's own system (not the VM's: its
    variant may satisfy what the server does not, e.g. a root file system),
    and its derivation (`instantiate`: written to the store, for build_server
    to build it without evaluating again). An evaluation that fails
    otherwise is not reported here: the build says."""
    result = process.run(
        [
            "nix-instantiate",
            "--eval",
            *(["--read-write-mode"] if instantiate else []),
            "--strict",
            "--json",
            _eval_file(),
            "-A",
            "server",
            *_args(source, None),
        ],
        check=False,
    )
    if result.returncode != 0:
        return ServerEval([], None)
    data = json.loads(result.stdout)
    return ServerEval([str(m) for m in data.get("failedAssertions", [])], data.get("drvPath"))


def build_server(source: Source, out_link: Path, build_host: str | None = None, drv_path: str | None = None) -> Path:
    """Build the server's own system (the configuration itself, not its VM
    variant), for `promote`; out_link is its GC root. With `drv_path` (from
    server_eval, instantiated) its derivation is built as it is, without a
    second evaluation. With `build_host`, Nix builds it there (its own
    remote builds: ssh-ng, no local build jobs)."""
    remote = ["--builders", f"ssh-ng://{build_host}", "--max-jobs", "0"] if build_host else []
    if drv_path is not None and Path(drv_path).exists():
        argv = ["nix-store", *JSON_LOG, *_flags.words(), "--realise", drv_path, "--add-root", str(out_link), *remote]
        _run_build(argv, source)  # prints the root, not the path
        return Path(os.readlink(out_link))
    ensure_flake_lock(source)
    [system] = build(source, None, ["serverToplevel"], out_link, extra=remote)
    return system


def build(
    source: Source,
    settings: Path | None,
    attrs: list[str],
    out_link: Path,
    extra: list[str] | None = None,
    files: set[str] | None = None,
) -> list[Path]:
    """Build attributes (`vm`, `toplevel`) of the VM's configuration in one
    evaluation (`serverToplevel`: the server's own system, with no settings:
    rehearse's module is only the VM's); out_link (and out_link-2 …) are GC roots. Nix's progress is
    shown as it comes (progress_view), read from its JSON log format."""
    selectors = [w for a in attrs for w in ("-A", a)]
    argv = ["nix-build", *JSON_LOG, _eval_file(), *selectors, "--out-link", str(out_link)]
    stdout = _run_build([*argv, *(extra or []), *_args(source, settings)], source, files)
    paths = [Path(line) for line in stdout.split()]
    if len(paths) != len(attrs):
        raise RehearseError(f"nix-build printed {stdout!r} for {attrs}")
    return paths


def _run_build(argv: list[str], source: Source, files: set[str] | None = None) -> str:
    """Run a build with Nix's progress shown as it comes (progress_view),
    read from its JSON log format; its stdout. `files` gets the files Nix
    evaluated (also when it fails: what a fix will be made in)."""
    from rehearse.host.progress_view import Renderer  # lazy: commands that build nothing start faster

    progress = Renderer(build_logs=_flags.print_build_logs)
    try:
        result = process.run(argv, check=False, on_stderr=progress)
    finally:
        progress.close()
        if files is not None:
            files.update(progress.tracker.files)
    if result.returncode != 0:
        # Nix's messages as it prints them without JSON, for the patterns
        # evaluation_error knows (stderr itself is all `@nix` lines).
        raise evaluation_error(progress.tracker.plain_text(), source)
    progress.summary()
    return result.stdout


# A store path as Nix makes them: /nix/store/, 32 characters of Nix's base32
# (no e, o, u, t), a dash, a name of [A-Za-z0-9+-._?=] not starting with a
# dot (nix src/libstore/path.cc checkName), at most 211 characters.
STORE_PATH = re.compile(r"/nix/store/[0-9a-df-np-sv-z]{32}-(?!\.)[A-Za-z0-9+._?=-]{1,211}")


def _paths(paths: list[str]) -> list[str]:
    """`paths`, each a store path, for an argv after "--": what came from a
    guest or a server was checked on the way in (answers.py); this is the
    last guard before Nix sees a word that could pass for an option."""
    for p in paths:
        if STORE_PATH.fullmatch(p) is None:
            raise RehearseError(f"not a store path: {p!r}; nothing was given to Nix")
    return ["--", *paths]


def closure(path: Path) -> list[str]:
    """The store paths `path` depends on, itself included."""
    return process.run(["nix-store", "--query", "--requisites", *_paths([str(path)])]).stdout.split()


def sizes(paths: list[str]) -> dict[str, int]:
    """NAR size of each path."""
    if not paths:
        return {}
    out = process.run(["nix-store", "--query", "--size", *_paths(paths)]).stdout.split()
    return {p: int(n) for p, n in zip(paths, out, strict=True)}


def dump_db(paths: list[str]) -> str:
    """Registration data of `paths` (nix-store --load-db reads it)."""
    return process.run(["nix-store", "--dump-db", *_paths(paths)]).stdout


def copy_closure(
    to: str,
    paths: list[str],
    ssh_options: list[str],
    *,
    gzip: bool = False,
    use_substitutes: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> process.Completed:
    """nix-copy-closure --to TO PATHS: copies what the other side's store
    lacks of their closure, over ssh with `ssh_options` (in NIX_SSHOPTS, as
    nix-copy-closure reads them); compressed with `gzip`; the other side's
    own substituters first with `use_substitutes`. `on_line` gets its stderr
    lines as they come. The caller reads the exit code."""
    argv = ["nix-copy-closure", "--to", to]
    argv += ["--gzip"] if gzip else []
    argv += ["--use-substitutes"] if use_substitutes else []
    env = {"NIX_SSHOPTS": " ".join(shlex.quote(o) for o in ssh_options)}
    return process.run([*argv, *_paths(paths)], env=env, check=False, on_stderr=on_line)


def add_root(path: Path, root: Path) -> None:
    """Keep `path` from garbage collection with an indirect root at `root`."""
    process.run(["nix-store", "--realise", str(path), "--add-root", str(root)])


# The two forms of nixpkgs' conflict message (lib/modules.nix):
#   current: The option `X' has conflicting definition values:
#            - In `FILE': VALUE …
#   older:   The option `X' has conflicting definitions, in `A' and `B'.
_CONFLICT_NEW = re.compile(r"The option `(?P<opt>[^']+)' has conflicting definition values:")
_CONFLICT_OLD = re.compile(
    r"The option `(?P<opt>[^']+)' has conflicting definitions, in `(?P<a>[^']+)' and `(?P<b>[^']+)'"
)
_DEF_LINE = re.compile(r"^\s*- In `(?P<file>[^']+)'")


@dataclass(frozen=True)
class Conflict:
    option: str
    files: tuple[str, ...]


def find_conflict(stderr: str) -> Conflict | None:
    """The conflicting option of a Nix error message, in either format."""
    m = _CONFLICT_NEW.search(stderr)
    if m:
        rest = stderr[m.end() :].splitlines()
        files = tuple(d.group("file") for line in rest if (d := _DEF_LINE.match(line)))
        return Conflict(m.group("opt"), files)
    m = _CONFLICT_OLD.search(stderr)
    if m:
        return Conflict(m.group("opt"), (m.group("a"), m.group("b")))
    return None


def conflict_hint(conflict: Conflict) -> str:
    vm_side = any("virtualisation" in f or "qemu-vm" in f for f in conflict.files)
    option = conflict.option
    if option.startswith("virtualisation.vmVariant."):
        option = option[len("virtualisation.vmVariant.") :]
    lead = (
        f"`{option}' is set by your configuration and by NixOS's VM module (qemu-vm.nix) at the same priority."
        if vm_side
        else f"`{option}' is defined twice at the same priority."
    )
    return (
        f"{lead} Either make the server's value a default, which the VM may override:\n"
        f"    {option} = lib.mkDefault <value>;\n"
        f"  or keep the server's line and settle the VM's value under virtualisation.vmVariant:\n"
        f"    virtualisation.vmVariant.{option} = lib.mkForce <value>;"
    )


def evaluation_error(stderr: str, source: Source) -> RehearseError:
    """Nix's own message (file and line included), with a hint when we know one."""
    text = _trim(stderr)
    failed = re.search(r"Failed assertions:\n((?:\s*- .*(?:\n|$))+)", stderr)
    if failed:
        return RehearseError(
            f"the configuration's assertions failed (NixOS refuses to build it):\n{failed.group(1).rstrip()}",
            hint="fix the configuration as the messages say; the VM was not touched",
            exit_code=ExitCode.CONFIG,
        )
    conflict = find_conflict(stderr)
    if conflict is not None:
        return RehearseError(
            f"the configuration does not evaluate as a VM:\n{text}",
            hint=conflict_hint(conflict),
            exit_code=ExitCode.CONFIG,
        )
    if re.search(r"file '?nixpkgs[^' ]*'? was not found in the Nix search path", stderr):
        return RehearseError(
            f"Nix could not find <nixpkgs> to build {source.describe()}.",
            hint='pass -I nixpkgs=PATH, set NIX_PATH, or set nixpkgs = "PATH" in rehearse.toml',
            exit_code=ExitCode.USAGE,
        )
    return RehearseError(f"Nix failed on {source.describe()}:\n{text}", exit_code=ExitCode.CONFIG)


def _trim(stderr: str) -> str:
    """Nix's message without the build-log noise before it."""
    lines = stderr.rstrip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            return "\n".join(lines[i:])
    return "\n".join(lines[-30:])
