"""What rehearse keeps of what it did: per VM, its deploys (deploys.json),
its rehearsals (rehearsals.json: what promote's guard looks up) and its
promotions per server (promotions-TARGET.json). A record, never needed to
deploy: a damaged file is set aside and counts as empty."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rehearse.core import output
from rehearse.store.state import write_durably


def record(history: Path, entry: dict[str, Any]) -> None:
    entries = load(history, keep_broken=True)
    entries.append(entry)
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
    record(file, {"time": time.time(), "server_drv": server_drv, "vm_system": system, "how": how, "checks": checks})


def find_rehearsal(file: Path, server_drv: str | None) -> dict[str, Any] | None:
    """The latest rehearsal of this revision of the server's system."""
    if server_drv is None:
        return None
    matches = [r for r in load(file) if r.get("server_drv") == server_drv]
    return matches[-1] if matches else None
