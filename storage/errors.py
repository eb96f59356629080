"""Domain errors. Each carries a message a person understands and a hint saying what to do next.

Front ends (CLI, Discord) map these to a one-line error / an ephemeral reply; anything else is a bug.
"""

from __future__ import annotations


class AtelierError(Exception):
    """Base for user-facing errors."""

    code = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip() if self.hint else self.message


class NotFound(AtelierError):
    """Missing, or not visible to the caller (never reveal which)."""

    code = "not_found"


class Ambiguous(AtelierError):
    """A typed name matches several things the caller can see; the message lists them (with ids)."""

    code = "ambiguous"


class InvalidInput(AtelierError):
    code = "invalid"


class Conflict(AtelierError):
    """Name/trigger already taken, state does not allow the action, …"""

    code = "conflict"


class Forbidden(AtelierError):
    """The caller can see the resource (e.g. a shared Element) but may not change it."""

    code = "forbidden"


class QuotaExceeded(AtelierError):
    code = "quota"


class FamilyMismatch(InvalidInput):
    """An Element used with a base model of another family/lineage."""

    code = "family_mismatch"
