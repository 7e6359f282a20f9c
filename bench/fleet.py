#!/usr/bin/env python3
"""Benchmark: bringing up a fleet of two VMs (web and db, two configurations
of rehearse.toml's [machines], each with 1 GiB) together with one
`rehearse up` (builds and boots in parallel) against one after the other
(`rehearse up web`, then `rehearse up db`). Each run starts from no VM (the
disks are made anew); the builds are in the store after an untimed first
run, so the figures are boot times. The two ways alternate. Prints a table
and writes bench/RESULTS-fleet.md.

    .venv/bin/python bench/fleet.py [--runs N]

Needs the rig (./run tests or ./run demo sets it up). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MINI, REPO, machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rehearse-bench-fleet-"))
    for name in ("web", "db"):
        machine(work / name, name, memory=1024)
    (work / "rehearse.toml").write_text(
        f'nixpkgs = "{MINI}"\n'
        '[machines.web]\nconfiguration = "web/configuration.nix"\n'
        '[machines.db]\nconfiguration = "db/configuration.nix"\n'
    )
    env = {**os.environ, "REHEARSE_STATE_DIR": str(work / "state"), "PYTHONPATH": str(REPO / "src")}

    def rehearse(*words: str) -> float:
        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "rehearse", *words], check=False, cwd=work, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            sys.exit(f"rehearse {' '.join(words)} failed:\n{result.stderr[-3000:]}")
        return time.monotonic() - t0

    def together() -> float:
        return rehearse("up")

    def one_after_the_other() -> float:
        return rehearse("up", "web") + rehearse("up", "db")

    print("untimed first run (builds)…", flush=True)
    together()
    rehearse("destroy", "--all", "--timeout", "10")
    times: dict[str, list[float]] = {"together": [], "one after the other": []}
    for i in range(args.runs):
        for label, way in (("together", together), ("one after the other", one_after_the_other)):
            seconds = way()
            times[label].append(seconds)
            print(f"run {i + 1}: {label}: {seconds:.1f} s", flush=True)
            rehearse("destroy", "--all", "--timeout", "10")
    shutil.rmtree(work, ignore_errors=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["together"] / median["one after the other"]
    cpu = os.cpu_count()
    lines = [
        "# Fleet: two VMs up together vs one after the other",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({cpu} cores, QEMU under TCG), by `bench/fleet.py --runs {args.runs}`. Two VMs of 1 GiB (web, db) "
        "from two configurations in rehearse.toml's [machines]; each run starts with no VM (new disks), "
        "the builds already in the store. Time: until `rehearse up` returns (every VM answers SSH).",
        "",
        "| way | runs (s) | median (s) |",
        "|---|---|---|",
        *(f"| {k} | {', '.join(f'{s:.1f}' for s in v)} | {median[k]:.1f} |" for k, v in times.items()),
        "",
        f"Ratio together / one after the other: **{ratio:.2f}**.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "RESULTS-fleet.md").write_text(text)


if __name__ == "__main__":
    main()
