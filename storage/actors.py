"""Who is acting: every use case takes an :class:`Actor` and scopes what it reads and writes to it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """A user as the core sees them. Built by :class:`storage.users.UserService` (never trust a bare id).

    ``guild_id`` is the server the request came from (None for a DM or the CLI): it decides which
    server-visible Elements the actor can see.
    """

    user_id: int
    external_id: str
    is_admin: bool = False
    guild_id: str | None = None
    display_name: str = ""

    def in_guild(self, guild_id: str | None) -> Actor:
        """The same user acting from another server (or from a DM with ``None``)."""
        return Actor(self.user_id, self.external_id, self.is_admin, guild_id, self.display_name)

    @property
    def label(self) -> str:
        """How to credit this user in messages."""
        return self.display_name or self.external_id.split(":", 1)[-1]
