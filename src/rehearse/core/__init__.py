"""The bottom layer: the one error type and the exit codes (errors), everything rehearse prints (output),
and plain values every layer shares (values: a server's address). Imports nothing of rehearse's."""
