"""What runs in the guest or on the server: the shell scripts of guest/,
each a file of the package (never a string in Python), read once."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def guest(name: str) -> str:
    """The text of guest/NAME (e.g. "activate.sh")."""
    return (resources.files("rehearse.host") / "guest" / name).read_text()


def sh(name: str, *args: str) -> list[str]:
    """The argv that runs guest/NAME with ARGS on the other side: `sh -c
    SCRIPT NAME ARGS…` (the script travels in the command, so the guest or
    server needs nothing of rehearse installed)."""
    return ["sh", "-c", guest(name), name.removesuffix(".sh"), *args]
