"""Front-end state stored with an expiry: held once, expired reads as expired, purged later."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from storage.db.models import BotState, UploadSession, utcnow
from tests.storage.conftest import add_seeds


async def test_put_get_take_expire_and_purge(services) -> None:
    store = services.bot_state
    await store.put("train_confirm", "abc", {"preview": {"name": "Ink"}}, ttl_s=600, owner="discord:1")
    held = await store.get("train_confirm", "abc")
    assert held is not None and held.payload == {"preview": {"name": "Ink"}} and not held.expired
    assert held.owner == "discord:1"
    await store.put("train_confirm", "abc", {"preview": {"name": "Ink 2"}}, ttl_s=600)  # replaced, not duplicated
    taken = await asyncio.gather(store.take("train_confirm", "abc"), store.take("train_confirm", "abc"))
    assert sorted(t is None for t in taken) == [False, True]  # a double click gets it once
    assert next(t for t in taken if t).payload == {"preview": {"name": "Ink 2"}}

    await store.put("attachment_pick", "1:2", {"refs": []}, ttl_s=60)
    await store.put("command_sync", "global", {"digest": "d"})  # no expiry
    async with services.db.transaction() as session:
        await session.execute(update(BotState).where(BotState.kind == "attachment_pick")
                              .values(expires_at=utcnow() - timedelta(hours=2)))
    old = await store.get("attachment_pick", "1:2")
    assert old is not None and old.expired
    assert await store.purge(older_than_s=3 * 3600) == 0  # kept a while so a late press hears "expired"
    assert await store.purge(older_than_s=3600) == 1
    assert await store.get("attachment_pick", "1:2") is None
    assert (await store.get("command_sync", "global")).payload == {"digest": "d"}


async def test_timed_out_upload_sessions_are_taken_once(services, alice, bob) -> None:
    await services.datasets.create(alice, "cats")
    await add_seeds(services, alice, "cats", [1, 2])
    await services.datasets.create(bob, "dogs")
    await services.datasets.start_upload_session(alice, "cats", minutes=5)
    await services.datasets.start_upload_session(bob, "dogs", minutes=5)
    assert await services.datasets.take_timed_out_upload_sessions() == []
    async with services.db.transaction() as session:
        await session.execute(update(UploadSession).where(UploadSession.user_id == alice.user_id)
                              .values(expires_at=utcnow() - timedelta(seconds=1)))
    (up,) = await services.datasets.take_timed_out_upload_sessions()
    assert (up.owner_external_id, up.dataset, up.image_count) == (alice.external_id, "cats", 2)
    assert await services.datasets.take_timed_out_upload_sessions() == []
    assert await services.datasets.upload_session(alice) is None
    assert (await services.datasets.upload_session(bob)).name == "dogs"  # still open
