"""The bot under real Discord's failure modes (emulated): 429s with Retry-After and bucket headers, 5xx, a dropped
gateway socket, op 7 reconnect, op 9 invalid session. Nothing is lost and nothing is sent twice."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import finish_generation, finish_training, wait_for
from tests.bot.test_deliverer import alice_with_dataset, all_delivered, request, trained_halfway
from tests.discord_emulator import DiscordEmulator

pytestmark = pytest.mark.slow  # each case starts a bot and replays Discord faults (429s, reconnects, 503s)


async def test_emulator_answers_429_and_5xx_like_discord() -> None:
    async with DiscordEmulator() as emu, aiohttp.ClientSession(
            base_url=emu.state.base_url, headers={"Authorization": f"Bot {emu.token}"}) as http:
        emu.faults.rate_limit("GET /users/@me", times=1, retry_after=0.4, is_global=True)
        emu.faults.server_error("GET /users/@me", times=1, status=503)
        bucket = emu.faults.bucket("GET /channels/*", limit=2, per_s=30)
        async with http.get("/api/v10/users/@me") as resp:
            assert resp.status == 429 and resp.headers["Content-Type"] == "application/json"
            assert resp.headers["Via"] and resp.headers["Retry-After"] == "1"
            assert resp.headers["X-RateLimit-Global"] == "true"
            assert await resp.json() == {"message": "You are being rate limited.", "retry_after": 0.4, "global": True}
        async with http.get("/api/v10/users/@me") as resp:
            assert resp.status == 503
        async with http.get("/api/v10/users/@me") as resp:
            assert resp.status == 200 and "X-RateLimit-Bucket" not in resp.headers  # faults used up
        channel = emu.channel("general").id
        remaining = []
        for _ in range(3):
            async with http.get(f"/api/v10/channels/{channel}") as resp:
                remaining.append((resp.status, resp.headers.get("X-RateLimit-Remaining")))
                assert resp.headers["X-RateLimit-Bucket"] == bucket.name
                assert 0 < float(resp.headers["X-RateLimit-Reset-After"]) <= 30
        assert remaining == [(200, "1"), (200, "0"), (429, "0")]
        assert emu.faults.count(429) == 2 and emu.faults.count(503) == 1


async def test_training_progress_ends_final_with_no_duplicate_dms_under_429s(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, me = await alice_with_dataset(emu, job_services, seed_dataset)
        # every edit of the progress DM is limited like Discord's per-channel bucket, the first sends and
        # edits are answered 429 (one of them the global limit), and one send meets a 502 first
        emu.faults.bucket("PATCH /channels/*/messages/*", limit=1, per_s=0.3)
        posts = emu.faults.rate_limit("POST /channels/*/messages", times=2, retry_after=0.2)
        edits = emu.faults.rate_limit("PATCH /channels/*/messages/*", times=2, retry_after=0.15)
        everything = emu.faults.rate_limit("*", times=1, retry_after=0.1, is_global=True)
        job = await request(job_services, me, emu.channel("general").id)
        progress = await trained_halfway(emu, job_services, alice, job.id)
        emu.faults.server_error("POST /channels/*/messages", times=1, status=502)
        await finish_training(job_services, job.id)
        done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text(), timeout=15)
        await wait_for(lambda: all_delivered(job_services), 15, "every notification delivered")
        await emu.wait_for_message(emu.dm(alice), lambda m: m.id == progress.id and "Finished" in m.text())

        assert (posts.served, edits.served, everything.served) == (2, 2, 1), emu.faults.served
        assert emu.faults.count(502) == 1
        dms = emu.messages(emu.dm(alice))
        assert [m.id for m in dms] == [progress.id, done.id], [m.text() for m in dms]  # no duplicates
        assert "100%" in progress.text() and not progress.components  # the final state, buttons gone
        assert sorted(done.files) == ["grid.png", "loss-curve.png", "sample-1.png"]

        # a generation result posted in the channel under the global limit and a per-route 429
        general = emu.channel("general")
        gen = await job_services.jobs.request_generation(
            me, prompt="zqxink, a lighthouse", elements=[("Inkwash", None)], base_model="tiny-sd15",
            origin={"guild_id": str(emu.guild_id), "channel_id": str(general.id)})
        emu.faults.rate_limit("*", times=1, retry_after=0.1, is_global=True)
        emu.faults.rate_limit(f"POST /channels/{general.id}/messages", times=2, retry_after=0.2)
        await finish_generation(job_services, gen.id)
        posted = await emu.wait_for_message(general, lambda m: "here you go" in m.content, timeout=15)
        await wait_for(lambda: all_delivered(job_services), 15, "every notification delivered")
        assert [m.id for m in emu.messages(general)] == [posted.id] and posted.files


RECONNECTS = {
    "dropped socket": lambda emu: _drop(emu),
    "op 7 reconnect": lambda emu: emu.gateway.request_reconnect(),
    "op 9 invalid session": lambda emu: emu.gateway.invalidate(resumable=False),
    "op 9 resumable": lambda emu: emu.gateway.invalidate(resumable=True),
}


async def _drop(emu: DiscordEmulator) -> None:
    emu.gateway.drop()


async def _reconnected(emu: DiscordEmulator, how: str, before: tuple[int, int]) -> None:
    stats = emu.gateway.stats

    def done() -> bool:
        grew = stats.identifies > before[0] if how == "op 9 invalid session" else stats.resumes > before[1]
        return grew and emu.gateway.connected
    await emu.state.changes.wait_for(done, 10, lambda: f"the bot to come back after {how}")


async def _held_reconnect(emu: DiscordEmulator, how: str) -> tuple[int, int]:
    """Start ``how`` with the gateway's door held: returns once the bot waits to reconnect."""
    before = (emu.gateway.stats.identifies, emu.gateway.stats.resumes)
    emu.gateway.hold()
    await RECONNECTS[how](emu)
    await emu.state.changes.wait_for(lambda: emu.gateway.waiting_at_door and not emu.gateway.connected, 10,
                                     lambda: "the bot to try to reconnect")
    return before


@pytest.mark.parametrize("how", list(RECONNECTS))
async def test_a_completion_during_a_gateway_reconnect_is_delivered_once(
        how: str, bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, me = await alice_with_dataset(emu, job_services, seed_dataset)
        job = await request(job_services, me, emu.channel("general").id)
        progress = await trained_halfway(emu, job_services, alice, job.id)

        before = await _held_reconnect(emu, how)
        await finish_training(job_services, job.id)  # completes while the bot has no gateway connection
        done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text(), timeout=10)
        await wait_for(lambda: all_delivered(job_services), 10, "every notification delivered")
        assert not emu.gateway.connected  # it really was delivered during the reconnect
        emu.gateway.release()
        await _reconnected(emu, how, before)
        await bot.delivery.refresher.refresh_once()  # a pass after the reconnect must not send anything again

        dms = emu.messages(emu.dm(alice))
        assert [m.id for m in dms] == [progress.id, done.id], [m.text() for m in dms]
        assert "Finished" in progress.text()


@pytest.mark.parametrize("how", ["dropped socket", "op 7 reconnect", "op 9 resumable"])
async def test_an_interaction_that_arrives_during_a_resume_is_answered(how: str, emu_bot: Any) -> None:
    emu, _bot = emu_bot
    alice = emu.user("alice")
    before = await _held_reconnect(emu, how)
    handle = await emu.slash(alice, "ping")  # buffered by the session: replayed when the bot RESUMEs
    assert handle.interaction.response is None
    emu.gateway.release()
    await _reconnected(emu, how, before)
    answer = await handle.reply()
    assert "Pong!" in answer.content
    assert (await handle.response()).type == 5  # deferred within Discord's 3 s, counted from the dispatch
    assert emu.gateway.stats.identifies == 1  # resumed, not a new session


async def test_a_503_on_the_result_dm_is_retried_later_and_sent_once(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, me = await alice_with_dataset(emu, job_services, seed_dataset)
        job = await request(job_services, me, emu.channel("general").id)
        progress = await trained_halfway(emu, job_services, alice, job.id)
        # discord.py does not retry a 503: the deliverer fails, the outbox keeps the notification and retries it
        emu.faults.server_error("POST /channels/*/messages", times=1, status=503)
        await finish_training(job_services, job.id)
        done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text(), timeout=20)
        await wait_for(lambda: all_delivered(job_services), 20, "every notification delivered")
        assert emu.faults.count(503) == 1
        assert [m.id for m in emu.messages(emu.dm(alice))] == [progress.id, done.id]


async def test_a_slow_cdn_download_is_acknowledged_at_once_and_added(bot_harness, make_settings,
                                                                    database_url) -> None:
    from tests.bot.dataset_world import dataset_world
    from tests.bot.images import png

    async with dataset_world(bot_harness, make_settings, database_url) as world:
        emu, alice = world.emu, world.emu.user("alice")
        await world.ds_reply(alice, "create", name="cats")
        emu.faults.slow_cdn(4.0)  # longer than Discord's 3 s to answer
        handle = await world.ds(alice, "add", name="cats", image1=emu.upload("slow.png", png(7)))
        assert (await handle.response()).type == 5  # deferred before downloading
        report = await handle.reply(timeout=20)
        assert report.embeds[0]["title"] == "📥 cats: 1 added"
        assert await world.count(alice, "cats") == 1
