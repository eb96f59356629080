"""A server's admin rules (banned words, generation channels) are enforced by the core use cases, so every
front end and every button that queues work obeys them — not only the slash command that happens to check."""

from __future__ import annotations

import pytest

from storage.errors import InvalidInput
from tests.worker.conftest import FAST_TRAIN

GUILD = "4242"


async def test_banned_words_and_channels_apply_to_requests_made_in_that_server(services, actor,
                                                                               make_dataset) -> None:
    await services.guilds.add_banned_words(actor, GUILD, ["gore"], is_guild_admin=True)
    await services.guilds.add_generation_channels(actor, GUILD, ["77"], is_guild_admin=True)
    here = {"guild_id": GUILD, "channel_id": "77"}

    with pytest.raises(InvalidInput, match="“gore” is not allowed"):
        await services.jobs.request_generation(actor, prompt="a GORE scene", base_model="tiny-sd15", origin=here)
    with pytest.raises(InvalidInput, match="not enabled in this channel"):
        await services.jobs.request_generation(actor, prompt="a cat", base_model="tiny-sd15",
                                               origin={"guild_id": GUILD, "channel_id": "78"})
    ok = await services.jobs.request_generation(actor, prompt="a cat", base_model="tiny-sd15", origin=here)
    assert ok.status == "queued"

    await make_dataset(actor, "shapes", count=3)
    with pytest.raises(InvalidInput, match="“gore” is not allowed"):
        await services.jobs.request_training(actor, dataset="shapes", name="Gore style", category="style",
                                             base_model="tiny-sd15", trigger="zqxgore", overrides=FAST_TRAIN,
                                             origin=here)
    # The same words are fine elsewhere (other servers, the CLI): rules belong to the server that set them.
    elsewhere = await services.jobs.request_generation(actor, prompt="a gore scene", base_model="tiny-sd15",
                                                       origin={"guild_id": "1", "channel_id": "2"})
    assert elsewhere.status == "queued"
