#!/usr/bin/env python3
"""Benchmark: how long `rehearse snapshot` of a running VM takes when its
disk holds little (a fresh VM) and when it holds 1.2 GB more (written in the
guest from /dev/urandom, on its 2 GiB disk). The two alternate; each
snapshot is deleted before the next. Prints a table and writes
bench/RESULTS-snapshot.md.

    .venv/bin/python bench/snapshot.py [--runs N]

Needs the rig (./run tests or ./run demo sets it up). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
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
    work = Path(tempfile.mkdtemp(prefix="rehearse-bench-snapshot-"))
    env = {**os.environ, "REHEARSE_STATE_DIR": str(work / "state"), "PYTHONPATH": str(REPO / "src")}

    def rehearse(*words: str) -> tuple[float, str]:
        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "rehearse", *words], check=False, cwd=work, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            sys.exit(f"rehearse {' '.join(words)} failed:\n{result.stderr[-3000:]}")
        return time.monotonic() - t0, result.stdout

    def disk_mb(name: str) -> float:
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(work / "state" / name / "disk.qcow2")],
            check=True,
            capture_output=True,
            text=True,
        )
        return float(json.loads(info.stdout)["actual-size"]) / 1024**2

    small, big = "small", "big"
    for name in (small, big):
        rehearse("up", str(machine(work / name, name)), "-I", f"nixpkgs={MINI}")
    rehearse("ssh", big, "--", "dd if=/dev/urandom of=/root/fill bs=1M count=1200 status=none && sync")
    sizes = {name: disk_mb(name) for name in (small, big)}
    times: dict[str, list[float]] = {small: [], big: []}
    for i in range(args.runs):
        for name in (small, big):
            seconds, _ = rehearse("snapshot", name, f"run{i}")
            times[name].append(seconds)
            print(f"run {i + 1}: {name} ({sizes[name]:.0f} MiB written on its disk): {seconds:.2f} s", flush=True)
            rehearse("snapshot", name, f"run{i}", "--delete")
    for name in (small, big):
        rehearse("destroy", name, "--timeout", "10")
    shutil.rmtree(work, ignore_errors=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# Snapshot of a running VM: a small disk vs a full one",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} cores, QEMU under TCG), by `bench/snapshot.py --runs {args.runs}`. Two running VMs "
        "with 2 GiB disks; `big` had 1200 MB of random data written to its disk in the guest. Time: the whole "
        "`rehearse snapshot NAME TAG` command (sync in the guest, pause, QMP internal snapshot, resume, "
        "rehearse's files), alternating between the two VMs; each snapshot deleted before the next.",
        "",
        "| VM | written on its disk (MiB) | runs (s) | median (s) |",
        "|---|---|---|---|",
        *(f"| {k} | {sizes[k]:.0f} | {', '.join(f'{s:.2f}' for s in v)} | {median[k]:.2f} |" for k, v in times.items()),
        "",
        f"Ratio big / small: **{median[big] / median[small]:.2f}**.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "RESULTS-snapshot.md").write_text(text)


if __name__ == "__main__":
    main()
