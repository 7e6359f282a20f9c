"""rehearse: rehearse a NixOS server change in a local QEMU VM.

The package is in layers; a module imports from its own layer and the ones
below it, never from one above (import-linter checks it: pyproject.toml,
tests/unit/test_linters.py):

    commands    cli (parse, dispatch, exit codes), requests (flags → frozen
                requests), completion
    fleets      fleet (several machines, one LAN), watch (deploy on save)
    pipeline    run (the one pipeline over a target: plan → push → activate
                → verify → roll back; its typed Report and --json), deploy
                (a VM's build; generations, rollback), promote (the guard,
                the server's build)
    targets     target (the Target protocol; a running VM, a real server),
                activation (the protocol both share)
    machines    lifecycle (up, ssh, status, console, down, destroy), snapshot
    config      rehearse.toml → typed settings (knows nothing of commands)
    host        process, ssh, nix, qemu, lan, scripts (+ guest/*.sh),
                nix/*.nix, progress, server_ssh, plan, answers (what a guest
                or a server answers, read once)
    store       state (a VM's directory, its typed state, locks), history
    core        errors, output, values

Where new code goes: a new command is parsed in commands/cli.py and gets its
request in commands/requests.py, over a function of the layer that does the
work; a new target implements target.py's `Target` protocol (and runs in
pipeline/run.py's one sequence); a new script that runs in a guest or on a
server is a file in host/guest/, sent by scripts.sh(), and what it prints is
read by a parser in host/answers.py.
"""

__version__ = "0.1.0"
