"""The top layer: the parser and dispatch (cli), flags turned into frozen requests (requests), and shell
completion (completion)."""
