"""`deploy NAME --watch`: deploy on every save.

What is watched: the configuration's directory tree (a flake's, for a local
flake), and every other file the last build evaluated (an import from
../common, a file of another path input), except Nix's store and the
search path's trees (nixpkgs). File events come from the kernel (inotify,
through watchfiles), not from polling; a burst of saves is one change
(debounced), and editors' swap and backup files are no change.

Each change is one deploy (the full pipeline, without questions) and one
line: the time, what changed, the result and how long it took. Events are
gathered in the background all along, also while a deploy runs: a save
made during a deploy is deployed after it, and any number of them make one
more deploy, not one each. Rehearse's own files (its state directory, its
sockets' directory) are no change, even when the configuration's tree holds
them (a configuration in ~): the console log would otherwise be a deploy a
line. A change that does not build prints Nix's error and leaves the VM as
it was; watching goes on. Ctrl-C between deploys stops at once; during one, the
deploy finishes (confirmed, or rolled back by the VM) first: the children
run in process groups of their own, so the terminal's Ctrl-C reaches
rehearse alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType

from rehearse.config import merge_include
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import nix, process
from rehearse.host.plan import store_name
from rehearse.pipeline import deploy
from rehearse.store.state import VMDir, state_root
from rehearse.targets.target import VM

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


def owned() -> list[Path]:
    """Rehearse's own trees, where it writes while a deploy runs (a VM's
    console log, state, known_hosts; its SSH sockets): never a change, as
    given and resolved."""
    # state.socket_path's directory, for socket paths too long in the root
    roots = [state_root(), Path(f"/tmp/rehearse-{os.getuid()}")]
    return sorted({*roots, *(Path(os.path.realpath(r)) for r in roots)})


@dataclasses.dataclass
class Watched:
    """What a change can be made in."""

    trees: list[Path]  # watched whole
    files: set[Path]  # watched one by one (through their directories)
    ignored: list[Path] = dataclasses.field(default_factory=list)  # rehearse's own, even inside a tree

    def directories(self) -> list[Path]:
        dirs = {*self.trees, *(f.parent for f in self.files if not _under(f, self.trees))}
        return sorted(d for d in dirs if d.is_dir())

    def concerns(self, path: Path) -> bool:
        return not _under(path, self.ignored) and (_under(path, self.trees) or path in self.files)


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
    return Watched(trees, files, owned())


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


# Where file events come from: (directories, stop) -> batches of paths,
# until stop is set; an empty batch says "watching, nothing new" (the
# watch is in place). watchfiles in rehearse, a fake in the tests.
EventSource = Callable[[list[Path], threading.Event], Iterator[Iterable[str]]]


def kernel_events(directories: list[Path], stop: threading.Event) -> Iterator[Iterable[str]]:
    """The directories' file events from inotify (watchfiles), debounced."""
    import watchfiles

    # Its logger's "KeyboardInterrupt caught, stopping watch" is a library's
    # word, not rehearse's: the watch says itself how it ends.
    logging.getLogger("watchfiles").addHandler(logging.NullHandler())
    logging.getLogger("watchfiles").propagate = False
    for batch in watchfiles.watch(
        *directories,
        debounce=DEBOUNCE_MS,
        step=50,
        stop_event=stop,
        rust_timeout=200,
        yield_on_timeout=True,
        raise_interrupt=False,
    ):
        yield [p for _, p in batch]


class Changes:
    """The watched directories' file events, gathered in the background all
    along: a save made while a deploy runs waits here until it ends."""

    def __init__(self, source: EventSource) -> None:
        self._source = source
        self._paths: queue.Queue[Path | BaseException] = queue.Queue()
        self._directories: list[Path] | None = None
        self._stop: threading.Event | None = None

    def follow(self, directories: list[Path]) -> None:
        """Watch `directories` from now on. The new watch is in place before
        the old one stops, so no save falls between them."""
        if directories == self._directories:
            return
        stop, ready = threading.Event(), threading.Event()
        threading.Thread(target=self._pump, args=(directories, stop, ready), daemon=True).start()
        ready.wait(timeout=10)
        self.close()
        self._directories, self._stop = directories, stop

    def _pump(self, directories: list[Path], stop: threading.Event, ready: threading.Event) -> None:
        try:
            for batch in self._source(directories, stop):
                ready.set()
                for p in batch:
                    self._paths.put(Path(p))
        except Exception as e:  # said by `next`, in the main thread
            self._paths.put(e)
        finally:
            ready.set()

    def next(self, scope: Watched, interrupts: Interrupts) -> str | None:
        """Wait for a change of a watched file: every one seen so far, shown
        short, as one change (None: Ctrl-C). Returns at once if a change
        came during the last deploy."""
        paths: set[Path] = set()
        while not interrupts.pending:
            try:
                # Short waits: Ctrl-C ends the wait, and a batch seen whole.
                item = self._paths.get(timeout=0.1)
            except queue.Empty:
                if paths:
                    return _describe(sorted(paths), scope)
                continue
            if isinstance(item, BaseException):
                raise RehearseError(f"watching stopped: {item}") from item
            if _relevant(item) and scope.concerns(item):
                paths.add(item)
        return None

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._directories, self._stop = None, None


def watch(template: deploy.DeployRequest) -> int:
    """Deploy `template` on every change, until Ctrl-C."""
    vmdir = VMDir(template.name)
    state = VM.running(vmdir).state  # a VM that does not run is an error before anything is watched
    source = template.source
    if source is None:
        recorded = nix.Source.of_record(state.source).of_vm(template.name)
        source = dataclasses.replace(recorded, include=merge_include(recorded.include, list(template.include)))

    interrupts = Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts)
    process.shielded = True
    changes = Changes(kernel_events)
    try:
        loop(
            changes,
            lambda evaluated: watched(source, evaluated),
            lambda what, evaluated: _deploy(template, source, evaluated, what, interrupts),
            interrupts,
        )
    except KeyboardInterrupt:
        pass
    finally:
        changes.close()
        process.shielded = False
        signal.signal(signal.SIGINT, previous)
    output.line("stopped watching")
    return ExitCode.INTERRUPTED


def loop(
    changes: Changes,
    scope_of: Callable[[set[str]], Watched],
    deploy_once: Callable[[str, set[str]], None],
    interrupts: Interrupts,
) -> None:
    """The first deploy, then one per change, until Ctrl-C. `deploy_once`
    fills the set it is given with the files the build evaluated."""
    evaluated: set[str] = set()
    # The tree is watched before the first deploy, which applies what was
    # saved before watching began, and tells which files the configuration
    # is made of: a save during it is the next change.
    changes.follow(scope_of(evaluated).directories())
    deploy_once("start", evaluated)
    shown: list[Path] = []
    while not interrupts.pending:
        scope = scope_of(evaluated)
        changes.follow(scope.directories())
        if scope.directories() != shown:
            shown = scope.directories()
            where = ", ".join(str(d) for d in shown)
            output.line(output.style(f"watching {where} (Ctrl-C stops)", "dim"))
        changed = changes.next(scope, interrupts)
        if changed is None:
            break
        evaluated = set()
        deploy_once(changed, evaluated)


def _describe(paths: list[Path], scope: Watched) -> str:
    names = [_short(p, scope) for p in paths]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _short(path: Path, scope: Watched) -> str:
    for tree in scope.trees:
        if tree in path.parents:
            return str(path.relative_to(tree))
    return str(path)


def _deploy(template: deploy.DeployRequest, source: nix.Source, evaluated: set[str], what: str, i: Interrupts) -> None:
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
    if report.result == "unchanged":
        verdict = "no change to the system"
    else:
        verdict = output.style(f"deployed {store_name(str(report.new_system or ''))}", "green", "bold")
    output.line(f"{stamp}  {what}: {verdict} ({seconds:.1f} s)")
