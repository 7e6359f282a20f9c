"""rehearse: rehearse a NixOS server change in a local QEMU VM."""

__version__ = "0.1.0"
