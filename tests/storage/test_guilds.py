"""Per-server settings: admin-only edits, banned words, generation channels."""

from __future__ import annotations

import asyncio

import pytest

from storage.errors import Forbidden, InvalidInput


async def test_only_admins_edit_and_defaults_allow_everything(services, alice) -> None:
    g = services.guilds
    assert (await g.get("g1")).banned_words == []
    await g.check_text("g1", "anything goes")
    await g.check_channel("g1", 123)
    with pytest.raises(Forbidden):
        await g.update(alice, "g1", banned_words=["x"])
    config = await g.update(alice, "g1", banned_words=["Gore", "gore ", "blood bath"], generation_channels=[5, "6", 5],
                            is_guild_admin=True)
    assert config.banned_words == ["Gore", "blood bath"] and config.generation_channels == ["5", "6"]
    with pytest.raises(InvalidInput):
        await g.update(alice, "g1", generation_channels=["#general"], is_guild_admin=True)


async def test_banned_words_match_whole_words_despite_tricks(services, alice) -> None:
    g = services.guilds
    await g.update(alice, "g1", banned_words=["gore", "blood bath"], is_guild_admin=True)
    for text in ("lots of GORE here", "ｇｏｒｅ", "go\u200bre", "a blood   bath", "(gore)"):
        with pytest.raises(InvalidInput, match="not allowed") as err:
            await g.check_text("g1", text)
        assert "gore" in err.value.message or "blood bath" in err.value.message
    for text in ("gorgeous gorey? no: gorilla", "bloodbath-free", "a blood test"):
        await g.check_text("g1", text)
    await g.check_text("g2", "gore")  # other servers are unaffected
    await g.check_text(None, "gore")  # DMs have no server rules


async def test_channels_and_add_remove_words(services, alice) -> None:
    g = services.guilds
    await g.update(alice, "g1", generation_channels=["10", "11"], is_guild_admin=True)
    await g.check_channel("g1", 10)
    with pytest.raises(InvalidInput) as err:
        await g.check_channel("g1", "12")
    assert "<#10>" in err.value.hint
    await g.check_channel(None, 12)
    await asyncio.gather(*(g.add_banned_words(alice, "g1", [f"w{i}"], is_guild_admin=True) for i in range(10)))
    assert sorted((await g.get("g1")).banned_words) == sorted(f"w{i}" for i in range(10))  # no lost update
    config = await g.remove_banned_words(alice, "g1", ["W3", "nothere"], is_guild_admin=True)
    assert "w3" not in config.banned_words and len(config.banned_words) == 9


async def test_add_and_remove_single_channels_concurrently(services, alice) -> None:
    g = services.guilds
    await asyncio.gather(*(g.add_generation_channels(alice, "g1", [100 + i], is_guild_admin=True) for i in range(8)))
    assert sorted((await g.get("g1")).generation_channels) == [str(100 + i) for i in range(8)]
    config = await g.remove_generation_channels(alice, "g1", ["100", 101], is_guild_admin=True)
    assert "100" not in config.generation_channels and len(config.generation_channels) == 6
    with pytest.raises(Forbidden):
        await g.add_generation_channels(alice, "g1", [5])


async def test_sharing_with_a_server_checks_that_servers_banned_words(services, alice) -> None:
    from tests.storage.conftest import ready_element

    await ready_element(services, alice, "Gore fest", "zqxgore")
    await services.guilds.add_banned_words(alice, "g2", ["gore"], is_guild_admin=True)
    with pytest.raises(InvalidInput, match="“gore” is not allowed on that server") as err:
        await services.elements.share(alice, "Gore fest", "server", guild_id="g2")
    assert "Rename it" in err.value.hint
    assert (await services.elements.get(alice, "Gore fest")).visibility == "private"
    shared = await services.elements.share(alice, "Gore fest", "server", guild_id="g1")  # g1 bans nothing
    assert shared.guild_id == "g1"
