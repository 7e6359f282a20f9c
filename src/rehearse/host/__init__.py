"""The host's outside worlds, one module each: processes (the one place they start), ssh, Nix, QEMU
(qemu: the runner, QMP, forwards), the fleet's LAN (lan), the scripts that run in a guest or on a
server (scripts, guest/*.sh), the Nix rehearse adds (nix/*.nix), Nix's progress (progress,
progress_view), the server's own sshd (server_ssh), what two systems differ in (plan), and the one
boundary where what a guest or a server answers is read (answers)."""
