"""The emulator's own contract at the HTTP/websocket level (what discord.py relies on, and Discord's refusals)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.discord_emulator import DiscordEmulator
from tests.discord_emulator.state import Interaction


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(callback_deadline_s=3.0) as emulator:
        yield emulator


@pytest.fixture
async def http(emu: DiscordEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=emu.state.base_url,
                                     headers={"Authorization": f"Bot {emu.token}"}) as session:
        yield session


def _pending_interaction(emu: DiscordEmulator) -> Interaction:
    state = emu.state
    inter = Interaction(id=state.snowflake(), token=state.new_token(), type=2, user=emu.user("alice"),
                        channel=emu.channel("general"), payload={})
    state.interactions[inter.id] = inter
    return inter


async def test_unknown_route_is_a_json_404_and_no_rate_limit_headers(emu: DiscordEmulator, http) -> None:
    async with http.get("/api/v10/guilds/1/audit-logs") as resp:
        assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["code"] == 0
    async with http.get("/api/v10/users/@me") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        assert not [h for h in resp.headers if h.lower().startswith("x-ratelimit")]
        assert (await resp.json())["id"] == str(emu.application_id)


async def test_wrong_token_gets_401(emu: DiscordEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{emu.api_base}/users/@me", headers={"Authorization": "Bot nope"}) as resp:
            assert resp.status == 401 and (await resp.json())["message"] == "401: Unauthorized"


async def test_message_limits_and_closed_dms(emu: DiscordEmulator, http) -> None:
    channel = emu.channel("general").id
    async with http.post(f"/api/v10/channels/{channel}/messages", json={}) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 50006
    async with http.post(f"/api/v10/channels/{channel}/messages", json={"content": "x" * 2001}) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 50035
    embed = {"title": "t", "fields": [{"name": "n", "value": "v" * 1025}]}
    async with http.post(f"/api/v10/channels/{channel}/messages", json={"embeds": [embed]}) as resp:
        assert resp.status == 400
    bob = emu.user("bob")
    emu.set_dms_open(bob, False)
    async with http.post("/api/v10/users/@me/channels", json={"recipient_id": str(bob.id)}) as resp:
        dm = await resp.json()
        assert resp.status == 200 and dm["type"] == 1
    async with http.post(f"/api/v10/channels/{dm['id']}/messages", json={"content": "hi"}) as resp:
        assert resp.status == 403 and await resp.json() == {"message": "Cannot send messages to this user",
                                                            "code": 50007}


async def test_callback_rules(emu: DiscordEmulator) -> None:
    inter = _pending_interaction(emu)
    url = f"{emu.api_base}/interactions/{inter.id}/{inter.token}/callback?with_response=1"
    async with aiohttp.ClientSession() as session:  # interaction routes carry no Authorization header
        async with session.post(f"{emu.api_base}/webhooks/{emu.application_id}/{inter.token}?wait=1",
                                json={"content": "too early"}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 10015
        async with session.post(url, json={"type": 5, "data": {"flags": 64}}) as resp:
            body = await resp.json()
            assert body["interaction"]["response_message_loading"] is True
            assert body["interaction"]["response_message_ephemeral"] is True
            assert body["resource"]["message"]["flags"] == 64 | 128
        async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060
        inter.expired = True
        async with session.post(f"{emu.api_base}/webhooks/{emu.application_id}/{inter.token}?wait=1",
                                json={"content": "late"}) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 50027

        slow = _pending_interaction(emu)
        slow.created -= 3.5  # as if the bot took 3.5 s to answer
        async with session.post(f"{emu.api_base}/interactions/{slow.id}/{slow.token}/callback",
                                json={"type": 4, "data": {"content": "hi"}}) as resp:
            assert resp.status == 404 and "defer first" in (await resp.json())["message"]


@pytest.mark.parametrize(("identify", "code"), [
    ({"token": "wrong", "intents": 1}, 4004),
    ({"intents": 1 << 15}, 4014),  # message content is privileged
])
async def test_gateway_refuses_bad_identify(emu: DiscordEmulator, identify: dict, code: int) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(emu.gateway_url + "?v=10") as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": 1, "d": None})
        assert (await ws.receive_json()) == {"op": 11}
        await ws.send_json({"op": 2, "d": {"token": emu.token, "properties": {}, **identify}})
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == code
