"""Users: one namespace for every front end (``discord:<snowflake>``, ``local:<name>``)."""

from __future__ import annotations

import re

from sqlalchemy import select

from storage.actors import Actor
from storage.db.engine import Database, dialect_insert
from storage.db.models import User
from storage.errors import InvalidInput, NotFound
from storage.names import clean_text
from storage.settings import Settings

_EXTERNAL_ID = re.compile(r"^(discord|local):[A-Za-z0-9._-]{1,50}$")
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,50}$")


def _clean_display(name: str) -> str:

    return clean_text(name, max_len=100)


class UserService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def is_configured_admin(self, external_id: str) -> bool:
        """Admins come from ``ATELIER_ADMIN_USER_IDS``; a bare Discord id there matches ``discord:<id>``."""
        ids = set(self.settings.admin_user_ids)
        namespace, _, bare = external_id.partition(":")
        return external_id in ids or (namespace == "discord" and bare in ids)

    async def ensure(self, external_id: str, display_name: str = "", *, guild_id: str | None = None) -> Actor:
        """Create the user on first sight (race-safe upsert) and return them as an :class:`Actor`."""
        if not _EXTERNAL_ID.match(external_id):
            raise InvalidInput(f"{external_id!r} is not a valid user id.",
                               "Use discord:<snowflake> or local:<name> (letters, digits, . _ -).")
        display = _clean_display(display_name)
        # Most calls find the user unchanged: answer from a read, so SQLite's single write lock is not taken
        # on every interaction.
        async with self.db.read() as session:
            user = (await session.execute(select(User).where(User.external_id == external_id))).scalar_one_or_none()
        if user is not None and (not display or display == user.display_name):
            return self._actor(user, guild_id)
        stmt = dialect_insert(self.db, User).values(external_id=external_id, display_name=display,
                                                     is_admin=False)
        if display:
            stmt = stmt.on_conflict_do_update(index_elements=[User.external_id],
                                              set_={"display_name": display})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=[User.external_id])
        async with self.db.transaction() as session:
            await session.execute(stmt)
            user = (await session.execute(select(User).where(User.external_id == external_id))).scalar_one()
        return self._actor(user, guild_id)

    async def local_actor(self, name: str = "local") -> Actor:
        """The acting user of the CLI: ``local:<name>``."""
        if not _LOCAL_NAME.match(name):
            raise InvalidInput(f"{name!r} is not a valid local user name.",
                               "Use 1–50 letters, digits, dots, dashes or underscores.")
        return await self.ensure(f"local:{name}", name)

    async def get(self, external_id: str, *, guild_id: str | None = None) -> Actor:
        """An existing user (NotFound if they never used Atelier)."""
        async with self.db.read() as session:
            user = (await session.execute(select(User).where(User.external_id == external_id))).scalar_one_or_none()
        if user is None:
            raise NotFound(f"No user {external_id!r}.")
        return self._actor(user, guild_id)

    def _actor(self, user: User, guild_id: str | None) -> Actor:
        return Actor(user_id=user.id, external_id=user.external_id,
                     is_admin=bool(user.is_admin) or self.is_configured_admin(user.external_id),
                     guild_id=guild_id, display_name=user.display_name)
