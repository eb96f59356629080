"""Discord front-end latency through the real discord.py client and the local emulator; prints figures and ratios.

    python bench/bench_discord.py [--rounds 200]

Measured side by side in one run, interleaved so background load hits every case alike (user action sent →
the bot's visible reply stored by the emulator):
  * /help        : direct ephemeral reply (embed built from the command tree)
  * /ping        : defer, then follow-up (two HTTP calls)
  * routed button: "Check again" on a /ping message, a @component route run by its discord.py DynamicItem (custom_id)
  * View button  : the same edit from a classic per-message discord.ui.View callback (discord.py's view store)
Ratios: routed / View button (a DynamicItem route should cost nothing extra; target ≤ 1.2) and /ping / /help.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import discord  # noqa: E402

from storage.settings import load_settings  # noqa: E402
from tests.bot.harness import bot_harness  # noqa: E402
from tests.discord_emulator import DiscordEmulator, Message  # noqa: E402


class _ViewButton(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Check again", custom_id="bench:view:refresh")
    async def refresh(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"refreshed {time.perf_counter_ns()}", view=self)


async def _timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return (time.perf_counter() - start) * 1000


def _row(name: str, samples: list[float]) -> str:
    qs = statistics.quantiles(samples, n=20)
    return f"{name:<14} p50 {statistics.median(samples):7.2f} ms   p95 {qs[18]:7.2f} ms   n={len(samples)}"


async def main(rounds: int) -> None:
    with_dir = load_settings(data_dir=Path("/tmp/atelier-bench-discord"))
    async with bot_harness(None, with_dir) as (emu, bot):
        alice = emu.user("alice")
        routed_msg = await (await emu.slash(alice, "ping")).reply()
        routed_id = routed_msg.custom_ids[0]
        channel = bot.get_channel(emu.channel("general").id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("view", view=_ViewButton())
        view_msg: Message = emu.state.messages[sent.id]

        async def click(msg: Message, cid: str) -> None:
            handle = await emu.click(alice, msg, cid)
            edits = len(msg.history)
            await emu.state.changes.wait_for(lambda: len(msg.history) > edits or None, 5, lambda: "an edit")
            assert (await handle.response()).type == 7

        cases: dict[str, Callable[[], Awaitable[object]]] = {
            "/help": lambda: _reply(emu, alice, "help"),
            "/ping": lambda: _reply(emu, alice, "ping"),
            "routed button": lambda: click(routed_msg, routed_id),
            "View button": lambda: click(view_msg, "bench:view:refresh"),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(10):  # warm-up
            for action in cases.values():
                await action()
        for _ in range(rounds):
            for name, action in cases.items():
                samples[name].append(await _timed(action))
    for name, values in samples.items():
        print(_row(name, values))
    med = {name: statistics.median(v) for name, v in samples.items()}
    print(f"routed / View button : {med['routed button'] / med['View button']:.2f}x  (target ≤ 1.2)")
    print(f"/ping / /help        : {med['/ping'] / med['/help']:.2f}x  (defer + follow-up vs one reply)")


async def _reply(emu: DiscordEmulator, user: object, name: str) -> None:
    await (await emu.slash(user, name)).reply()  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args().rounds))
