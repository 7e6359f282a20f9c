"""What bench/fleet.py and bench/snapshot.py share: the rig's Nix settings
and a server configuration (the seed's fripon) under another host name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "rig" / "nixpkgs"

# The repository's Nix settings (no build users, no sandbox, no binary cache), as under ./run.
os.environ.setdefault("NIX_CONF_DIR", str(REPO / "rig" / "nix"))
os.environ.setdefault("NIX_USER_CONF_FILES", "")
os.environ.setdefault("NIX_CONFIG", "substituters =")


def machine(directory: Path, name: str, memory: int | None = None) -> Path:
    """The seed's fripon named `name` (with `memory` MiB in its VM) in
    `directory`; its configuration.nix."""
    directory.mkdir(parents=True)
    src = REPO / "examples" / "fripon"
    shutil.copy(src / "hardware-configuration.nix", directory)
    text = (src / "configuration.nix").read_text()
    text = text.replace("services.timesyncd.enable = true;", "services.timesyncd.enable = lib.mkDefault true;")
    text = text.replace("./hardware-configuration.nix", "./hardware-configuration.nix\n    ./extra.nix")
    (directory / "configuration.nix").write_text(text)
    vm = f"  virtualisation.vmVariant.virtualisation.memorySize = {memory};\n" if memory else ""
    (directory / "extra.nix").write_text(
        f'{{ lib, ... }}:\n{{\n  networking.hostName = lib.mkForce "{name}";\n{vm}}}\n'
    )
    return directory / "configuration.nix"
