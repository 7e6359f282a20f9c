"""A VM as a machine: up, ssh, status, console, down, destroy (lifecycle) and its snapshots (snapshot)."""
