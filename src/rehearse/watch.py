"""`deploy NAME --watch`: deploy on every save.

What is watched: the configuration's directory tree (a flake's, for a local
flake), and every other file the last build evaluated (an import from
../common, a file of another path input), except Nix's store and the
search path's trees (nixpkgs). File events come from the kernel (inotify,
through watchfiles), not from polling; a burst of saves is one change
(debounced), and editors' swap and backup files are no change.

Each change is one deploy (the full pipeline, without questions) and one
line: the time, what changed, the result and how long it took. A change
that does not build prints Nix's error and leaves the VM as it was;
watching goes on. Ctrl-C between deploys stops at once; during one, the
deploy finishes (confirmed, or rolled back by the VM) first: the children
run in process groups of their own, so the terminal's Ctrl-C reaches
rehearse alone.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from rehearse import nix, output, process
from rehearse.errors import ExitCode, RehearseError
from rehearse.plan import store_name

DEBOUNCE_MS = 300  # saves closer together than this are one change


def search_roots(include: Iterable[str]) -> list[Path]:
    """The trees of the search path (-I, NIX_PATH): nixpkgs is no file of the configuration."""
    entries = [*include, *os.environ.get("NIX_PATH", "").split(":")]
    roots = []
    for entry in entries:
        path = entry.split("=", 1)[1] if "=" in entry else entry
        if path.startswith("/"):
            roots.append(Path(os.path.realpath(path)))
    return roots


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


@dataclasses.dataclass
class Watched:
    """What a change can be made in."""

    trees: list[Path]  # watched whole
    files: set[Path]  # watched one by one (through their directories)

    def directories(self) -> list[Path]:
        dirs = {*self.trees, *(f.parent for f in self.files if not _under(f, self.trees))}
        return sorted(d for d in dirs if d.is_dir())

    def concerns(self, path: Path) -> bool:
        return _under(path, self.trees) or path in self.files


def watched(source: nix.Source, evaluated: Iterable[str]) -> Watched:
    """The configuration's tree, and the files evaluated outside it (not in
    the store, the search path or rehearse's own Nix files)."""
    if source.flake is not None:
        trees = [Path(source.flake)] if source.flake.startswith("/") else []
    else:
        assert source.configuration is not None
        trees = [source.configuration.parent]
    skip = [Path("/nix/store"), Path(os.path.realpath(Path(__file__).parent / "nix")), *search_roots(source.include)]
    files = set()
    for name in evaluated:
        path = Path(os.path.realpath(name))
        if path.is_absolute() and not _under(path, skip) and not _under(path, trees):
            files.add(path)
    return Watched(trees, files)


def _relevant(path: Path) -> bool:
    """Not an editor's swap, backup or lock file, nor a VCS's."""
    name = path.name
    return not (
        name.endswith(("~", ".swp", ".swx", ".swo", ".tmp"))
        or name.startswith((".#", "#"))
        or name == "4913"  # vim's probe for a writable directory
        or any(part in (".git", ".hg", ".jj", "result") for part in path.parts)
    )


class Interrupts:
    """Ctrl-C: at once between deploys; after the deploy during one."""

    def __init__(self) -> None:
        self.busy = False
        self.pending = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.busy:
            raise KeyboardInterrupt
        if not self.pending:
            output.line("Ctrl-C: the deploy in progress finishes (or is rolled back) first, then watching stops")
        self.pending = True


def watch(template: Any) -> int:
    """Deploy `template` (a DeployRequest) on every change, until Ctrl-C."""
    import watchfiles

    from rehearse import deploy
    from rehearse.config import merge_include
    from rehearse.state import VMDir
    from rehearse.target import VM

    vmdir = VMDir(template.name)
    state = VM.running(vmdir).state  # a VM that does not run is an error before anything is watched
    source = template.source
    if source is None:
        recorded = nix.Source.from_json(state.source).of_vm(template.name)
        source = dataclasses.replace(recorded, include=merge_include(recorded.include, list(template.include)))

    interrupts = Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts)
    process.shielded = True
    try:
        evaluated: set[str] = set()
        # The first deploy applies what was saved before watching began, and
        # tells which files the configuration is made of.
        _deploy(deploy, template, source, evaluated, "start", interrupts)
        shown: list[Path] = []
        while not interrupts.pending:
            scope = watched(source, evaluated)
            if scope.directories() != shown:
                shown = scope.directories()
                where = ", ".join(str(d) for d in shown)
                output.line(output.style(f"watching {where} (Ctrl-C stops)", "dim"))
            changed = _next_change(watchfiles, scope, interrupts)
            if changed is None:
                break
            evaluated = set()
            _deploy(deploy, template, source, evaluated, changed, interrupts)
    except KeyboardInterrupt:
        pass
    finally:
        process.shielded = False
        signal.signal(signal.SIGINT, previous)
    output.line("stopped watching")
    return ExitCode.INTERRUPTED


def _next_change(watchfiles: Any, scope: Watched, interrupts: Interrupts) -> str | None:
    """Wait for a change of a watched file; what changed, shown short (None: Ctrl-C)."""
    for batch in watchfiles.watch(
        *scope.directories(), debounce=DEBOUNCE_MS, step=50, raise_interrupt=False, rust_timeout=500
    ):
        paths = sorted({Path(p) for _, p in batch if _relevant(Path(p)) and scope.concerns(Path(p))})
        if paths:
            names = [_short(p, scope) for p in paths]
            return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        if interrupts.pending:
            return None
    return None  # Ctrl-C


def _short(path: Path, scope: Watched) -> str:
    for tree in scope.trees:
        if tree in path.parents:
            return str(path.relative_to(tree))
    return str(path)


def _deploy(deploy: Any, template: Any, source: nix.Source, evaluated: set[str], what: str, i: Interrupts) -> None:
    """One deploy, and its line."""
    t0 = time.monotonic()
    stamp = time.strftime("%H:%M:%S")
    req = dataclasses.replace(template, source=source, yes=True, evaluated=evaluated)
    i.busy = True
    try:
        with output.quiet():
            report = deploy.run_deploy(req)
    except RehearseError as e:
        seconds = time.monotonic() - t0
        if e.exit_code == ExitCode.CONFIG:
            verdict = output.style("does not build; the VM is unchanged", "red", "bold")
        elif e.exit_code == ExitCode.ROLLED_BACK:
            verdict = output.style("rolled back", "red", "bold")
        else:
            verdict = output.style("failed", "red", "bold")
        output.line(f"{stamp}  {what}: {verdict} ({seconds:.1f} s)")
        output.line("  " + e.message.replace("\n", "\n  "))
        return
    finally:
        i.busy = False
    seconds = time.monotonic() - t0
    if report.get("result") == "unchanged":
        verdict = "no change to the system"
    else:
        verdict = output.style(f"deployed {store_name(str(report.get('new_system', '')))}", "green", "bold")
    output.line(f"{stamp}  {what}: {verdict} ({seconds:.1f} s)")
