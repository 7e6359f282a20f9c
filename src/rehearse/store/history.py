"""What rehearse keeps of what it did: per VM, its deploys (deploys.json),
its rehearsals (rehearsals.json: what promote's guard looks up) and its
promotions per server (promotions-TARGET.json). A record, never needed to
deploy: a damaged file is set aside and counts as empty."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rehearse.core import output
from rehearse.store.state import write_durably


@dataclass(frozen=True)
class Switched:
    """The fields an activation's entry starts with."""

    time: float
    system: str | None
    previous: str | None


@dataclass(frozen=True)
class Deployed(Switched):
    """A deploy's activation (deploys.json); the fields in the file's order."""

    source: str
    result: str  # the guest's ("confirmed", "rolled-back REASON RC" …)
    generation: int | None
    switch_rc: int | None
    failed_units: list[str]
    durations: dict[str, float]
    pushed: dict[str, int]
    changes: str | None = None  # what changed, in a few words (pipeline.deploy.changes)


@dataclass(frozen=True)
class RolledBack(Switched):
    """A rollback's activation (deploys.json, promotions-TARGET.json)."""

    result: str
    action: str  # switch-to-configuration's
    source: str  # "rollback to generation N"
    durations: dict[str, float]


@dataclass(frozen=True)
class Promoted:
    """A promote's activation (promotions-TARGET.json)."""

    time: float
    target: str
    system: str | None
    previous: str | None
    result: str
    action: str
    source: str
    forced: bool  # no rehearsal found, --force
    rehearsal: dict[str, Any] | None  # the rehearsals.json entry its guard found
    durations: dict[str, float]
    changes: str | None = None  # what changed, in a few words (pipeline.deploy.changes)


@dataclass(frozen=True)
class Rehearsed:
    """The VM ran and confirmed a revision (rehearsals.json)."""

    time: float
    server_drv: str
    vm_system: str
    how: str  # "deploy" or "up"
    checks: list[str]


Entry = Deployed | RolledBack | Promoted | Rehearsed


def record(history: Path, entry: Entry | dict[str, Any]) -> None:
    """Add `entry` (typed, or a JSON object as the file holds it)."""
    entries = load(history, keep_broken=True)
    entries.append(entry if isinstance(entry, dict) else asdict(entry))
    write_durably(history, json.dumps(entries, indent=1) + "\n")


def load(history: Path, *, keep_broken: bool = False) -> list[dict[str, Any]]:
    """The entries; a damaged file (keep_broken: renamed to NAME.broken-TIME,
    so a new entry does not overwrite it) counts as empty."""
    try:
        data = json.loads(history.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        data = e
    if isinstance(data, list) and all(isinstance(h, dict) for h in data):
        return data
    output.warn(f"{history} is damaged ({data if isinstance(data, Exception) else 'not a list of entries'})")
    if keep_broken:
        aside = history.with_name(f"{history.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        history.rename(aside)
        output.warn(f"kept it as {aside}; the history starts again")
    return []


# --- rehearsals ---------------------------------------------------------------


def record_rehearsal(file: Path, server_drv: str | None, system: str, how: str, checks: list[str]) -> None:
    """The VM ran and confirmed this revision (`how`: "deploy" or "up"),
    keyed by the derivation of the server's own system."""
    if server_drv is None:
        return
    record(file, Rehearsed(time.time(), server_drv, system, how, checks))


def find_rehearsal(file: Path, server_drv: str | None) -> dict[str, Any] | None:
    """The latest rehearsal of this revision of the server's system."""
    if server_drv is None:
        return None
    matches = [r for r in load(file) if r.get("server_drv") == server_drv]
    return matches[-1] if matches else None
