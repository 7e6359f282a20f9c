"""The one error type of rehearse: a message, and a hint that says what to do."""

from __future__ import annotations


class RehearseError(Exception):
    """An error the user can act on. main() prints it and exits with `exit_code`."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message
