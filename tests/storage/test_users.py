"""Users and actors: one namespace, race-safe first contact, admins from settings."""

from __future__ import annotations

import pytest

from storage.errors import InvalidInput, NotFound
from storage.users import UserService


async def test_ensure_creates_once_and_updates_display_name(services) -> None:
    a = await services.users.ensure("discord:42", "First", guild_id="g9")
    b = await services.users.ensure("discord:42", "Second")
    c = await services.users.ensure("discord:42")  # no name given: keeps the last one
    assert a.user_id == b.user_id == c.user_id
    assert (a.guild_id, b.guild_id, c.display_name) == ("g9", None, "Second")
    assert (await services.users.get("discord:42")).display_name == "Second"
    with pytest.raises(NotFound):
        await services.users.get("discord:43")


async def test_ids_and_names_are_validated(services) -> None:
    for bad in ("42", "discord:", "slack:1", "local:../etc", "discord:" + "1" * 60):
        with pytest.raises(InvalidInput):
            await services.users.ensure(bad)
    with pytest.raises(InvalidInput):
        await services.users.local_actor("two words")
    local = await services.users.local_actor()
    assert (local.external_id, local.label) == ("local:local", "local")
    hostile = await services.users.ensure("discord:7", "@everyone\u202e\u200b <b>")
    assert hostile.display_name == "@everyone <b>"


async def test_admins_come_from_settings(services) -> None:
    settings = services.settings.model_copy(update={"admin_user_ids": ["100", "local:root"]})
    users = UserService(services.db, settings)
    assert (await users.ensure("discord:100")).is_admin
    assert (await users.local_actor("root")).is_admin
    assert not (await users.ensure("discord:101")).is_admin
    assert not (await users.local_actor("100")).is_admin  # bare ids only match Discord users
