"""What rehearse keeps on disk, below everything that runs a process: a VM's directory, its typed state,
its lock and its sockets' place (state), the history of deploys, rehearsals and promotions (history)."""
