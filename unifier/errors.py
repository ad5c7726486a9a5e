"""User-facing errors: one exception type the CLI turns into a message and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (recipe, data, arguments): never shown as a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class BackendUnavailable(UserError):
    """The chosen backend cannot run this spec here (missing package, unsupported feature)."""


class TrainingFailed(Exception):
    """A backend ran but failed; exit code 1 (not a user mistake)."""
