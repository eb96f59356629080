"""Per-server settings: where generation is allowed and which words prompts may not contain."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from storage.actors import Actor
from storage.db.engine import Database, dialect_insert
from storage.db.models import GuildSettings, utcnow
from storage.errors import Forbidden, InvalidInput

MAX_BANNED_WORDS = 200
MAX_BANNED_WORD_LEN = 60
MAX_CHANNELS = 50


@dataclass(frozen=True)
class GuildConfig:
    guild_id: str
    generation_channels: list[str] = field(default_factory=list)  # empty = every channel
    banned_words: list[str] = field(default_factory=list)


def _fold(text: str) -> str:
    """Compare words the way people read them: compatibility forms, zero-width characters and case ignored."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Cc"))
    return text.casefold()


def _banned_pattern(word: str) -> re.Pattern[str]:
    # Whole words only ("ass" must not block "class"); phrases match with any whitespace between words.
    parts = [re.escape(p) for p in _fold(word).split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)")


class GuildService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, guild_id: str) -> GuildConfig:
        async with self.db.read() as session:
            row = await session.get(GuildSettings, str(guild_id))
        return self._config(str(guild_id), row)

    @staticmethod
    def _config(guild_id: str, row: GuildSettings | None) -> GuildConfig:
        if row is None:
            return GuildConfig(guild_id)
        return GuildConfig(guild_id, list(row.generation_channels), list(row.banned_words))

    async def update(
        self,
        actor: Actor,
        guild_id: str,
        *,
        generation_channels: Sequence[str | int] | None = None,
        banned_words: Sequence[str] | None = None,
        is_guild_admin: bool = False,
    ) -> GuildConfig:
        """Replace the channel allow-list and/or the banned words (None = leave as is).

        Allowed for Atelier admins and for server admins: the front end passes ``is_guild_admin`` from the
        member's real permissions (Manage Server), so the check does not rely on command visibility alone.
        """
        channels = None if generation_channels is None else self._clean_channels(generation_channels)
        words = None if banned_words is None else self._clean_words(banned_words)
        return await self._edit(actor, guild_id, is_guild_admin,
                                lambda _c: channels, lambda _w: words)

    async def add_banned_words(self, actor: Actor, guild_id: str, words: Sequence[str], *,
                               is_guild_admin: bool = False) -> GuildConfig:
        return await self._edit(actor, guild_id, is_guild_admin, lambda _c: None,
                                lambda current: self._clean_words([*current, *words]))

    async def remove_banned_words(self, actor: Actor, guild_id: str, words: Sequence[str], *,
                                  is_guild_admin: bool = False) -> GuildConfig:
        drop = {_fold(" ".join(w.split())) for w in words}
        return await self._edit(actor, guild_id, is_guild_admin, lambda _c: None,
                                lambda current: [w for w in current if _fold(w) not in drop])

    async def add_generation_channels(self, actor: Actor, guild_id: str, channels: Sequence[str | int], *,
                                      is_guild_admin: bool = False) -> GuildConfig:
        """Allow generation in ``channels`` too (the first one switches the server from "everywhere" to
        "only the listed channels")."""
        return await self._edit(actor, guild_id, is_guild_admin,
                                lambda current: self._clean_channels([*current, *channels]), lambda _w: None)

    async def remove_generation_channels(self, actor: Actor, guild_id: str, channels: Sequence[str | int], *,
                                         is_guild_admin: bool = False) -> GuildConfig:
        """Stop allowing generation in ``channels`` (an empty list means every channel again)."""
        drop = {str(c).strip() for c in channels}
        return await self._edit(actor, guild_id, is_guild_admin,
                                lambda current: [c for c in current if c not in drop], lambda _w: None)

    async def _edit(self, actor: Actor, guild_id: str, is_guild_admin: bool,
                    channels_fn: Callable[[list[str]], list[str] | None],
                    words_fn: Callable[[list[str]], list[str] | None]) -> GuildConfig:
        """Read-modify-write under the row lock, so concurrent admins never lose each other's edits."""
        if not (actor.is_admin or is_guild_admin):
            raise Forbidden("Only server admins can change Atelier's server settings.")
        gid = str(guild_id)
        async with self.db.transaction() as session:
            await session.execute(
                dialect_insert(self.db, GuildSettings)
                .values(guild_id=gid, generation_channels=[], banned_words=[], updated_at=utcnow())
                .on_conflict_do_nothing(index_elements=[GuildSettings.guild_id])
            )
            row = await session.get(GuildSettings, gid, with_for_update=True, populate_existing=True)
            assert row is not None
            channels = channels_fn(list(row.generation_channels))
            words = words_fn(list(row.banned_words))
            if channels is not None:
                row.generation_channels = channels
            if words is not None:
                row.banned_words = words
            await session.flush()
            return self._config(gid, row)

    async def check_text(self, guild_id: str | None, text: str) -> None:
        """Raise :class:`InvalidInput` naming the first banned word found in ``text`` (no-op outside servers)."""
        if guild_id is None or not text:
            return
        config = await self.get(guild_id)
        folded = _fold(text)
        for word in config.banned_words:
            if _banned_pattern(word).search(folded):
                raise InvalidInput(f"“{word}” is not allowed on this server.",
                                   "Rephrase your prompt without it.")

    async def check_channel(self, guild_id: str | None, channel_id: str | int | None) -> None:
        """Raise :class:`InvalidInput` when generation is limited to other channels of this server."""
        if guild_id is None:
            return
        config = await self.get(guild_id)
        if config.generation_channels and str(channel_id) not in config.generation_channels:
            where = ", ".join(f"<#{c}>" for c in config.generation_channels[:10])
            raise InvalidInput("Generation is not enabled in this channel.", f"Use {where}.")

    @staticmethod
    def _clean_channels(channels: Sequence[str | int]) -> list[str]:
        out: list[str] = []
        for c in channels:
            s = str(c).strip()
            if not s.isdigit():
                raise InvalidInput(f"{s!r} is not a channel id.", "Pick channels from the list.")
            if s not in out:
                out.append(s)
        if len(out) > MAX_CHANNELS:
            raise InvalidInput(f"At most {MAX_CHANNELS} generation channels.")
        return out

    @staticmethod
    def _clean_words(words: Sequence[str]) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for w in words:
            display = " ".join(unicodedata.normalize("NFKC", w).split())
            key = _fold(display)
            if not key:
                continue
            if len(display) > MAX_BANNED_WORD_LEN:
                raise InvalidInput(f"Banned word “{display[:20]}…” is too long.",
                                   f"Keep each entry under {MAX_BANNED_WORD_LEN} characters.")
            if key not in seen:
                seen.add(key)
                out.append(display)
        if len(out) > MAX_BANNED_WORDS:
            raise InvalidInput(f"At most {MAX_BANNED_WORDS} banned words.")
        return out
