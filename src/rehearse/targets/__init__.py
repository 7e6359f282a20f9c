"""What a deploy goes to: a running VM or a real server (target), and the activation protocol both
share (activation: start, follow, verify, confirm, settle, checks)."""
