#!/usr/bin/env python3
"""Benchmarks: rehearse against the seed's hand-written deploy script, side by
side on one booted VM, in one run. Prints a table and writes bench/RESULTS.md.

    .venv/bin/python bench/run.py [--runs N] [--big-runs N] [--nixpkgs DIR]

Needs the rig (./run tests or ./run demo sets it up). Not part of the test suite.
--nixpkgs names another flavour of the mini nixpkgs; NixOS 26.11's VMs (the
store over virtiofs) run inside the rig's Debian 13 root, with its Nix 2.26
and QEMU 10, and write bench/RESULTS-26.11.md:

    rig/host/enter python bench/run.py --nixpkgs rig/nixpkgs-26.11

`--only promote` (not in the default set): `rehearse promote` to the rig's
stand-in for a real server (rig/server) against nixos-rebuild switch
--target-host's steps by hand (bench/seed/promote.sh); writes
bench/RESULTS-promote.md:

    .venv/bin/python bench/run.py --only promote [--runs N] [--big-runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "rig" / "nixpkgs"
NAME = "bench"
SEED_PORT = 2221  # the seed script's port, forwarded by rehearse up --forward 2221:22
# What the server's configuration needs on the stand-in (its root file system
# is the one it boots, label nixos); the VM's variant overrides it.
SERVER_MODULE = '{ lib, ... }: {\n  fileSystems."/".device = lib.mkForce "/dev/disk/by-label/nixos";\n}\n'

# The repository's Nix settings (no build users, no sandbox, no binary cache),
# as under ./run.
os.environ.setdefault("NIX_CONF_DIR", str(REPO / "rig" / "nix"))
os.environ.setdefault("NIX_USER_CONF_FILES", "")
# Inside rig/host/enter Nix reads that root's nix.conf, which leaves the
# substituters as a user's machine has them: no cache is reachable here, and
# each build would spend seconds trying one.
os.environ.setdefault("NIX_CONFIG", "substituters =")


def sh(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> str:
    r = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r.stdout


def timed(argv: list[str], **kw: object) -> float:
    t0 = time.monotonic()
    sh(argv, **kw)  # type: ignore[arg-type]
    return time.monotonic() - t0


class Standin:
    """The rig's stand-in for a real server (rig/server): its own disk, Nix
    store and boot menu, reached over SSH with its key and pinned host key."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.host, self.port = "", 0
        self.identity = self.known_hosts = Path()

    def start(self, config: Path) -> float:
        t0 = time.monotonic()
        out = sh([str(REPO / "rig" / "server" / "start"), "--nixpkgs", str(MINI), str(config), str(self.dir)])
        info = json.loads(out.strip().splitlines()[-1])
        self.host, self.port = info["host"], int(info["port"])
        self.identity, self.known_hosts = Path(info["identity"]), Path(info["known_hosts"])
        return time.monotonic() - t0

    def stop(self) -> None:
        sh([str(REPO / "rig" / "server" / "stop"), str(self.dir)], check=False)

    @property
    def sshopts(self) -> str:
        """How both tools reach it (NIX_SSHOPTS; the port apart): its key and
        its pinned host key, never an unknown one accepted."""
        return (
            f"-i {self.identity} -o IdentitiesOnly=yes -o UserKnownHostsFile={self.known_hosts} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes"
        )

    def ssh(self, command: str) -> str:
        return sh(["ssh", "-F", "none", *self.sshopts.split(), "-p", str(self.port), f"root@{self.host}", command])

    def current(self) -> str:
        return self.ssh("readlink /run/current-system; cat /boot/rig/default")

    def store_free_mb(self) -> int:
        return int(self.ssh("df -m --output=avail /nix/store | tail -n 1").strip())

    def store_size_mb(self) -> int:
        return int(self.ssh("df -m --output=size /nix/store | tail -n 1").strip())


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.state = work / "state"
        self.conf = work / "conf"
        self.env = {"REHEARSE_STATE_DIR": str(self.state)}
        self.rehearse = [sys.executable, "-m", "rehearse"]
        self.results: list[tuple[str, list[float], list[float] | None, str]] = []
        self.promote_results: list[tuple[str, list[float], list[float] | None, str]] = []
        self.store_mb = 0  # the stand-in's store disk, and its least free space after a garbage collection
        self.least_free_mb = 0

    # -- set-up -----------------------------------------------------------
    def write_config(self) -> None:
        self.conf.mkdir(parents=True, exist_ok=True)
        src = REPO / "examples" / "fripon"
        shutil.copy(src / "hardware-configuration.nix", self.conf)
        text = (src / "configuration.nix").read_text()
        text = text.replace("services.timesyncd.enable = true;", "services.timesyncd.enable = lib.mkDefault true;")
        text = text.replace(
            "./hardware-configuration.nix",
            "./hardware-configuration.nix\n    ./extra.nix\n    ./access.nix\n    ./server.nix",
        )
        (self.conf / "configuration.nix").write_text(text)
        (self.conf / "access.nix").write_text("{ ... }: { }\n")
        # Empty but for the promote scenario (SERVER_MODULE).
        (self.conf / "server.nix").write_text("{ ... }: { }\n")
        self.set_extra("")
        for script in ("default.nix", "deploy.sh", "promote.sh"):
            shutil.copy(REPO / "bench" / "seed" / script, self.conf)

    def set_extra(self, body: str) -> None:
        (self.conf / "extra.nix").write_text(
            "{ config, lib, pkgs, ... }:\n{\n  virtualisation.vmVariant.virtualisation.memorySize = 4096;\n"
            + body
            + "\n}\n"
        )

    def up(self) -> float:
        return timed(
            [
                *self.rehearse,
                "up",
                str(self.conf / "configuration.nix"),
                "-I",
                f"nixpkgs={MINI}",
                "--name",
                NAME,
                "--forward",
                f"{SEED_PORT}:22",
            ],
            env=self.env,
        )

    def give_the_seed_script_access(self) -> None:
        """The seed's script logs in with a key (instead of a typed password)
        and checks the VM's host key: its system authorizes rehearse's client
        key and uses the host key rehearse gave the VM."""
        vmdir = self.state / NAME
        pub = (vmdir / "id_ed25519.pub").read_text().strip()
        (self.conf / "access.nix").write_text(
            "{ ... }: {\n"
            f'  users.users.root.openssh.authorizedKeys.keys = [ "{pub}" ];\n'
            # The server's sshd shows the host key rehearse gave the VM for
            # its management channel (installed there by rehearse's module).
            "  services.openssh.hostKeys = [\n"
            '    { type = "ed25519"; path = "/var/lib/rehearse/ssh_host_ed25519_key"; }\n'
            "  ];\n"
            '  systemd.services.sshd.after = [ "rehearse-sshd.service" ];\n'
            # The server's sshd-keygen makes a key missing at that path: only
            # after rehearse's sshd has installed its own there.
            '  systemd.services.sshd-keygen.after = [ "rehearse-sshd.service" ];\n'
            "}\n"
        )
        bindir = self.work / "bin"
        bindir.mkdir(exist_ok=True)
        (self.work / "ssh_config").write_text(
            "Host localhost\n"
            f"  IdentityFile {vmdir / 'id_ed25519'}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  UserKnownHostsFile {vmdir / 'known_hosts'}\n  HostKeyAlias rehearse-{NAME}\n"
            "  StrictHostKeyChecking yes\n"
        )
        wrapper = bindir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {self.work / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)
        self.seed_env = {
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "NIX_PATH": f"nixpkgs={MINI}",
        }

    def deploy(self, *extra: str) -> float:
        return timed([*self.rehearse, "deploy", NAME, "--yes", *extra], env=self.env)

    def seed(self) -> float:
        return timed(["./deploy.sh"], cwd=self.conf, env=self.seed_env)

    def current(self) -> str:
        return sh([*self.rehearse, "ssh", NAME, "--", "readlink", "/run/current-system"], env=self.env).strip()

    # -- measurements -----------------------------------------------------
    def record(
        self, what: str, mine: list[float], seed: list[float] | None, note: str = "", *, promote: bool = False
    ) -> None:
        (self.promote_results if promote else self.results).append((what, mine, seed, note))
        m = statistics.median(mine)
        line = f"{what:<44} rehearse {m:7.2f} s"
        if seed:
            s = statistics.median(seed)
            line += f"   {'by hand' if promote else 'seed script'} {s:7.2f} s   ratio {m / s:5.2f}"
        print(line + (f"   {note}" if note else ""), flush=True)

    def noop(self, runs: int) -> None:
        self.deploy()
        mine = [self.deploy() for _ in range(runs)]
        self.seed()
        seed = [self.seed() for _ in range(runs)]
        self.record("no-op deploy", mine, seed)
        self.deploy()

    def series(self, tool: str, bodies: list[str], *extra: str) -> list[float]:
        """Each tool deploys its own series of changes, after one untimed
        deploy that moves the VM from the other tool's system to its own
        (the two build different systems: rehearse's has its VM module)."""
        go = self.seed if tool == "seed" else (lambda: self.deploy(*extra))
        self.set_extra(bodies[0])
        go()
        times = []
        for body in bodies[1:]:
            self.set_extra(body)
            times.append(go())
        return times

    def small_change(self, runs: int) -> None:
        def bodies(tool: str) -> list[str]:
            return [f'  environment.etc."bench".text = "{tool} {i} {time.time()}";' for i in range(runs + 1)]

        mine = self.series("rehearse", bodies("rehearse"))
        seed = self.series("seed", bodies("seed"))
        self.record("small change (one file in environment.etc)", mine, seed)

    def lockout(self, runs: int) -> None:
        """A deploy that closes the server's SSH port in its firewall: rolled
        back by rehearse's check of the server's sshd, through its own
        channel (the guest alone would wait out its 60 s window). The time
        from the switch's end to the rollback's end is the activate step
        minus the switch, read from the guest's log by --json's durations."""
        times, after_switch = [], []
        for i in range(runs):
            self.set_extra(f'  services.openssh.openFirewall = false;  environment.etc."bench".text = "lockout {i}";')
            t0 = time.monotonic()
            r = subprocess.run(
                [*self.rehearse, "deploy", NAME, "--yes", "--json"],
                env={**os.environ, **self.env}, capture_output=True, text=True, check=False,
            )  # fmt: skip
            times.append(time.monotonic() - t0)
            assert r.returncode == 4, r.stderr[-2000:]
            report = json.loads(r.stdout)
            after_switch.append(report["durations"].get("after_switch", float("nan")))
        self.set_extra("")
        self.deploy()
        note = "after the switch: " + ", ".join(f"{x:.2f}" for x in after_switch) + " s"
        self.record("lockout (SSH port closed) rolled back", times, None, note)

    def big_change(self, runs: int) -> None:
        big = big_body
        stamp = int(time.time())
        tags = {kind: [f"{kind}{i}-{stamp}" for i in range(runs + 1)] for kind in ("r", "s", "c")}
        # Build the 200 MB paths first: what is measured is getting them into the VM.
        for tag in [t for ts in tags.values() for t in ts]:
            build_big(tag)
        mine = self.series("rehearse", [big(t) for t in tags["r"]])
        seed = self.series("seed", [big(t) for t in tags["s"]])
        copy = self.series("rehearse", [big(t) for t in tags["c"]], "--copy")
        self.record("200 MB path added (zero-copy)", mine, seed)
        self.record("200 MB path added (rehearse --copy)", copy, seed)

    def up_from_built_runner(self, runs: int) -> None:
        mine = []
        for _ in range(runs):
            sh([*self.rehearse, "down", NAME], env=self.env)
            mine.append(self.up())
        # By hand: the same runner, started with the seed's QEMU_NET_OPTS and polled with ssh.
        state = json.loads((self.state / NAME / "state.json").read_text())
        runner = next((Path(state["runner"]) / "bin").glob("run-*-vm"))
        sh([*self.rehearse, "down", NAME], env=self.env)
        hand = []
        for i in range(runs):
            scratch = self.work / f"byhand{i}"
            scratch.mkdir()
            # The VM's host key, handed over as rehearse does (its shared/ is
            # made anew by each `up`, and the guest empties it).
            (scratch / "shared").mkdir()
            for key in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
                shutil.copy(self.state / NAME / key, scratch / "shared" / key)
            port = free_port()
            env = {
                **os.environ,
                # rehearse's management channel, which its `up` waits for too
                "QEMU_NET_OPTS": f"hostfwd=tcp:127.0.0.1:{port}-:64022",
                "QEMU_OPTS": "-display none",
                "SHARED_DIR": str(scratch / "shared"),
                "TMPDIR": str(scratch),
                "USE_TMPDIR": "1",
                "NIX_DISK_IMAGE": str(scratch / "disk.qcow2"),
            }
            t0 = time.monotonic()
            proc = subprocess.Popen([str(runner)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                hand.append(self._wait_by_hand(port, t0))
            finally:
                proc.terminate()
                proc.wait()
        self.record("up: built runner to SSH-ready", mine, hand, "baseline: runner by hand + ssh polling")
        self.up()

    def _wait_by_hand(self, port: int, t0: float) -> float:
        probe = ["ssh", "-F", str(self.work / "ssh_config"), "-p", str(port), "-o", "ConnectTimeout=5"]
        probe += ["root@localhost", "true"]
        while subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            if time.monotonic() - t0 > 300:
                raise SystemExit("the VM started by hand did not answer SSH within 300 s")
            time.sleep(1)
        return time.monotonic() - t0

    def cli(self, runs: int) -> None:
        status = [timed([*self.rehearse, "status"], env=self.env) for _ in range(runs)]
        self.record("CLI: rehearse status", status, None)
        ssh_true = [timed([*self.rehearse, "ssh", NAME, "--", "true"], env=self.env) for _ in range(runs)]
        fresh = [
            timed(["ssh", "-F", str(self.work / "ssh_config"), "-p", str(SEED_PORT), "root@localhost", "true"])
            for _ in range(runs)
        ]
        self.record("rehearse ssh NAME -- true (vs a new ssh handshake)", ssh_true, fresh)

    # -- promote: to the stand-in for a real server -------------------------
    def promote(self, runs: int, big_runs: int) -> None:
        """`rehearse promote` of a change the VM rehearsed (`rehearse deploy`,
        not timed) against the steps of `nixos-rebuild switch --target-host`
        by hand (bench/seed/promote.sh) with another change of the same kind;
        the two alternate, on one stand-in installed with the same
        configuration."""
        self.promote_started = time.gmtime()
        (self.conf / "server.nix").write_text(SERVER_MODULE)
        # The seed script's access to the VM is not the server's business
        # (and its host key setting is the VM's only).
        (self.conf / "access.nix").write_text("{ ... }: { }\n")
        self.set_extra("")
        self.deploy()
        home = self.work / "home"  # no ~/.ssh/config of this machine's user in the way
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        server = Standin(self.work / "server")
        try:
            print(f"stand-in up: {server.start(self.conf / 'configuration.nix'):.1f} s", flush=True)
            self.promote_env = {**self.env, "HOME": str(home), "NIX_SSHOPTS": server.sshopts}
            self.script_env = {
                "HOME": str(home),
                "NIX_SSHOPTS": f"{server.sshopts} -p {server.port}",
                "NIX_PATH": f"nixpkgs={MINI}",
            }
            self.store_mb = self.least_free_mb = server.store_size_mb()

            def small(tool: str, i: int) -> str:
                return f'  environment.etc."bench".text = "{tool} {i} {time.time()}";'

            # One of each first, not timed: the server leaves the system it was installed with.
            self.promote_rehearsed(server, small("r", -1))
            self.promote_by_hand(server, small("s", -1))
            mine, hand, notes = self.promote_series(server, runs, small)
            self.record("promote: small change (one file in environment.etc)", mine, hand, notes, promote=True)

            stamp = int(time.time())
            for i in range(big_runs):
                build_big(f"pr{i}-{stamp}")
                build_big(f"ps{i}-{stamp}")

            def big(tool: str, i: int) -> str:
                return big_body(f"p{tool}{i}-{stamp}")

            mine, hand, notes = self.promote_series(server, big_runs, big, collect=True)
            self.record("promote: 200 MB path added", mine, hand, notes, promote=True)
        finally:
            server.stop()
        self.write_promote()

    def promote_series(
        self, server: Standin, runs: int, body: Callable[[str, int], str], collect: bool = False
    ) -> tuple[list[float], list[float], str]:
        """Run i: a change `body("r", i)` rehearsed and promoted, and another
        `body("s", i)` by hand; who goes first alternates. With collect, the
        server's store is garbage-collected before each (not timed, both)."""
        mine: list[float] = []
        hand: list[float] = []
        reports: list[dict[str, Any]] = []
        for i in range(runs):
            for tool in ("r", "s") if i % 2 == 0 else ("s", "r"):
                if tool == "r":
                    t, report = self.promote_rehearsed(server, body("r", i), collect)
                    mine.append(t)
                    reports.append(report)
                else:
                    hand.append(self.promote_by_hand(server, body("s", i), collect))
        steps = {k: statistics.median(r["durations"][k] for r in reports) for k in ("build", "push", "activate")}
        paths = statistics.median(r["store"]["missing"] for r in reports)
        size = statistics.median(r["store"]["bytes"] for r in reports)
        copied = f"{paths:g} paths, " + (f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB")
        note = (
            f"rehearse's steps: evaluation and build {steps['build']:.2f} s, copy {steps['push']:.2f} s "
            f"({copied}), activation and confirmation {steps['activate']:.2f} s"
        )
        return mine, hand, note

    def promote_rehearsed(self, server: Standin, body: str, collect: bool = False) -> tuple[float, dict[str, Any]]:
        """Rehearse the change on the VM (not timed), then time its promotion."""
        self.set_extra(body)
        self.deploy()
        self.settle(server, collect)
        argv = [*self.rehearse, "promote", NAME, "--to", f"root@{server.host}:{server.port}", "--yes", "--json"]
        t0 = time.monotonic()
        r = subprocess.run(
            argv, env={**os.environ, **self.promote_env}, capture_output=True, text=True, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        took = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit(f"rehearse promote failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}")
        report: dict[str, Any] = json.loads(r.stdout)
        system = report["new_system"]
        if report.get("result") != "confirmed" or server.current().split() != [system, system]:
            sys.exit(f"rehearse promote did not leave the server on {system} (current, boot entry):\n{r.stdout}")
        return took, report

    def promote_by_hand(self, server: Standin, body: str, collect: bool = False) -> float:
        self.set_extra(body)
        self.settle(server, collect)
        took = timed(["./promote.sh", f"root@{server.host}"], cwd=self.conf, env=self.script_env)
        system = os.readlink(self.conf / "result")
        if server.current().split() != [system, system]:
            sys.exit(f"promote.sh did not leave the server on {system} (current, boot entry)")
        return took

    def settle(self, server: Standin, collect: bool) -> None:
        """Just before each timed run, of both tools: the server's disk is
        written out (the previous run's copy, the garbage collection's
        deletions), as the single emulated vCPU would otherwise do during the
        run. With collect, its store keeps its running system only first: room
        for the next 200 MB (its disk is sized by rig/server/start: 1 GB +
        twice the installed closure)."""
        if collect:
            server.ssh("nix-collect-garbage -d >/dev/null 2>&1")
            free = server.store_free_mb()
            if free < 400:
                sys.exit(
                    f"the stand-in's store has {free} MB free after a garbage collection: too little for a 200 MB "
                    "change (rig/server/start sizes its disk: 1024 MB + twice the installed closure)"
                )
            self.least_free_mb = min(free, self.least_free_mb)
        server.ssh("sync")

    def write(self) -> None:
        lines = [
            "# Benchmark results",
            "",
            *machine_lines(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
            "Medians of the runs listed; ratio = rehearse / seed script (lower is better). Produced by `bench/run.py`.",
            "",
            *table(self.results, "seed script / baseline"),
        ]
        name = "RESULTS.md" if MINI == REPO / "rig" / "nixpkgs" else f"RESULTS-{release()}.md"
        (REPO / "bench" / name).write_text("\n".join(lines) + "\n")

    def write_promote(self) -> None:
        lines = [
            "# Benchmark results: promote",
            "",
            *machine_lines(f"{time.strftime('%Y-%m-%d %H:%M', self.promote_started)} to {time.strftime('%H:%M UTC')}"),
            "Server: the rig's stand-in for a real server (`rig/server`: QEMU under TCG, 1 vCPU, 1024 MB; its own "
            f"Nix store on an ext4 disk of {self.store_mb} MB, {self.least_free_mb} MB free at least after a "
            "garbage collection), installed with the seed's fripon; the VM that rehearses: fripon, as for "
            "RESULTS.md.",
            "",
            "Measured: `rehearse promote NAME --to root@HOST:PORT --yes` of a change the VM has rehearsed "
            "(`rehearse deploy`, not timed), against the steps of `nixos-rebuild switch --target-host` by hand "
            "(`bench/seed/promote.sh`: `nix-build '<nixpkgs/nixos>' -A system`, `nix-copy-closure --to --gzip`, "
            "`ssh … nix-env --profile /nix/var/nix/profiles/system --set`, `ssh … switch-to-configuration "
            "switch`; each ssh a connection of its own, as in the seed's script) with another change of the same "
            "kind. Both reach the server with the same NIX_SSHOPTS (its key, its pinned host key, "
            "StrictHostKeyChecking=yes) and an empty ~/.ssh; both build the server's system from this host's "
            "store (what the change adds is built by each; the 200 MB paths are built before, not timed); both "
            "leave it running the new system with its boot entry (checked after each run). The two alternate "
            "(run 1 rehearse first, run 2 by hand first, …), after one run of each not timed. Before each "
            "200 MB run, of both, the server's store is garbage-collected (`nix-collect-garbage -d` over ssh, "
            "not timed); before each timed run, of both, the server's disk is written out (`sync` over ssh, not "
            "timed), the untimed `rehearse deploy` being done before it.",
            "",
            "Medians of the runs listed; ratio = rehearse / by hand (lower is better). Produced by "
            "`bench/run.py --only promote`.",
            "",
            *table(self.promote_results, "by hand (promote.sh)"),
        ]
        name = "RESULTS-promote.md" if MINI == REPO / "rig" / "nixpkgs" else f"RESULTS-promote-{release()}.md"
        (REPO / "bench" / name).write_text("\n".join(lines) + "\n")


def machine_lines(date: str) -> list[str]:
    return [
        f"Machine: {platform.node()}, {platform.platform()}, {os.cpu_count()} cores, QEMU under TCG "
        f"(KVM unusable here). Date: {date}.",
        f"VMs: the mini nixpkgs `{MINI.relative_to(REPO)}` (NixOS {release()}, the store over {share()}); "
        f"host: {first_line(['nix', '--version'])}, {first_line(['qemu-system-x86_64', '--version'])}.",
    ]


def table(results: list[tuple[str, list[float], list[float] | None, str]], baseline: str) -> list[str]:
    lines = [f"| measurement | rehearse (s) | {baseline} (s) | ratio | runs |", "|---|---:|---:|---:|---|"]
    for what, mine, seed, note in results:
        m = statistics.median(mine)
        s = f"{statistics.median(seed):.2f}" if seed else "–"
        r = f"{m / statistics.median(seed):.2f}" if seed else "–"
        runs = ", ".join(f"{x:.2f}" for x in mine) + (" / " + ", ".join(f"{x:.2f}" for x in seed) if seed else "")
        lines.append(f"| {what}{' — ' + note if note else ''} | {m:.2f} | {s} | {r} | {runs} |")
    return lines


# A new 200 MB store path, incompressible: as a module's line, and built alone.
BIG = '"mkdir -p $out/share; head -c 200M /dev/urandom > $out/share/blob"'


def big_body(tag: str) -> str:
    return f'  environment.systemPackages = [ (pkgs.runCommand "big-{tag}" {{ }} {BIG}) ];'


def build_big(tag: str) -> None:
    expr = f'(import <nixpkgs> {{}}).runCommand "big-{tag}" {{ }} {BIG}'
    sh(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI}", "-E", expr])


def first_line(argv: list[str]) -> str:
    return sh(argv).splitlines()[0].strip()


def flavour(key: str) -> str:
    return json.loads(sh(["nix-instantiate", "--eval", "--json", "-E", f"(import {MINI}/flavour.nix).{key}"]))


def release() -> str:
    return flavour("release")


def share() -> str:
    return flavour("share")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    global MINI
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--big-runs", type=int, default=3)
    p.add_argument("--nixpkgs", type=Path, default=MINI, help="the mini nixpkgs (a flavour: rig/nixpkgs-26.11)")
    every = "noop,small,lockout,big,cli,up"
    p.add_argument("--only", default=every, help=f"comma-separated: {every} (default: these), promote")
    args = p.parse_args()
    MINI = args.nixpkgs.resolve()
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="rehearse-bench-"))
    b = Bench(work)
    b.write_config()
    try:
        print(f"rehearse up (cold): {b.up():.1f} s", flush=True)
        if only - {"promote"}:
            b.give_the_seed_script_access()
            b.deploy()
        if "noop" in only:
            b.noop(args.runs)
        if "small" in only:
            b.small_change(args.runs)
        if "lockout" in only:
            b.lockout(min(args.runs, 3))
        if "big" in only:
            b.big_change(args.big_runs)
        if "cli" in only:
            b.cli(max(args.runs, 10))
        if "up" in only:
            b.up_from_built_runner(min(args.runs, 3))
        if only - {"promote"} == set(every.split(",")):
            b.write()
        # Last: it changes the configuration's access.nix and server.nix.
        if "promote" in only:
            b.promote(args.runs, args.big_runs)
    finally:
        sh([*b.rehearse, "destroy", NAME, "--timeout", "10"], env=b.env, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
