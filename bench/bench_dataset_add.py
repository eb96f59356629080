"""/dataset add through the real discord.py client, the local emulator and real storage; prints figures + ratios.

    python bench/bench_dataset_add.py [--burst 100] [--images 50] [--side 1024]

1. Acknowledgement latency (INTERACTION_CREATE dispatched → callback received by the emulator) for ``--burst``
   concurrent ``/dataset add`` commands (10 users, 1 small image each), next to the same number of concurrent
   ``/dataset list`` (answered after two DB reads) and ``/help`` (no I/O at all: the floor of the emulator and
   the client in one process). Target (issue 5): p99 ≤ 150 ms.
2. The longest event-loop stall while ``--images`` photo-like JPEGs (``--side`` px) are added by concurrent
   ``/dataset add`` commands of 10 attachments each (download → ingest off-loop → one transaction → report).
   Target: ≤ 50 ms. A 2 ms ticker on the same loop records every gap beyond its period.
3. The same images added straight through ``storage`` (no Discord, no downloads) as the reference: the ratios
   show what the bot's path adds on top of ingest itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.dataset_views import IncomingFile  # noqa: E402
from storage.services import build_services  # noqa: E402
from storage.settings import load_settings  # noqa: E402
from tests.bot.dataset_world import COGS  # noqa: E402
from tests.bot.harness import bot_harness  # noqa: E402
from tests.conftest import noise_png  # noqa: E402
from tests.discord_emulator import DiscordEmulator  # noqa: E402
from tests.storage.hostile import photo_jpeg  # noqa: E402

USERS = [f"user{i}" for i in range(10)]


class StallMeter:
    """Largest lateness of a periodic ticker on the running loop (what a blocked loop looks like)."""

    def __init__(self, period_s: float = 0.002) -> None:
        self.period_s = period_s
        self.worst_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period_s)
            late = (time.perf_counter() - start - self.period_s) * 1000
            self.worst_ms = max(self.worst_ms, late)

    def __enter__(self) -> StallMeter:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _row(name: str, samples: list[float]) -> str:
    qs = statistics.quantiles(samples, n=100)
    return (f"{name:<16} p50 {statistics.median(samples):7.1f} ms   p99 {qs[98]:7.1f} ms   "
            f"max {max(samples):7.1f} ms   n={len(samples)}")


async def main(burst: int, images: int, side: int) -> None:
    emu = DiscordEmulator(users=USERS, default_timeout=120.0, callback_deadline_s=3.0)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), min_image_side=32, near_duplicate_distance=0)
        services = await build_services(settings)
        try:
            async with bot_harness(services, settings, cogs=COGS, emulator=emu) as (emu, _bot):
                users = [emu.user(u) for u in USERS]
                for u in users:
                    await (await emu.slash(u, "dataset", "create", options={"name": "bench"})).reply()

                # 1. acknowledgement latency under a burst
                atts = [emu.upload(f"b{i}.png", noise_png(1000 + i)) for i in range(burst)]
                handles = await asyncio.gather(*(emu.slash(users[i % len(users)], "dataset", "add",
                                                           options={"name": "bench", "image1": atts[i]})
                                                 for i in range(burst)))
                add_ack = [(await h.response()).after_s * 1000 for h in handles]
                await asyncio.gather(*(h.reply() for h in handles))
                lists = await asyncio.gather(*(emu.slash(users[i % len(users)], "dataset", "list")
                                               for i in range(burst)))
                list_ack = [(await h.response()).after_s * 1000 for h in lists]
                await asyncio.gather(*(h.reply() for h in lists))
                helps = await asyncio.gather(*(emu.slash(users[i % len(users)], "help") for i in range(burst)))
                help_ack = [(await h.response()).after_s * 1000 for h in helps]

                # 2. event-loop stall while images are added
                files = [emu.upload(f"p{i}.jpg", photo_jpeg(side, side, seed=i)) for i in range(images)]
                await (await emu.slash(users[0], "dataset", "create", options={"name": "photos"})).reply()
                batches = [files[i:i + 10] for i in range(0, images, 10)]
                start = time.perf_counter()
                with StallMeter() as meter:
                    adds = await asyncio.gather(*(emu.slash(users[0], "dataset", "add", options={
                        "name": "photos", **{f"image{j + 1}": a for j, a in enumerate(batch)}}) for batch in batches))
                    reports = await asyncio.gather(*(h.reply(timeout=300) for h in adds))
                wall = time.perf_counter() - start
                added = sum(int(r.embeds[0]["title"].split(": ")[1].split(" added")[0]) for r in reports)

                # 3. the same images straight into storage (no Discord): what ingest alone does to the loop
                me = await services.users.ensure(f"discord:{users[1].id}")
                await services.datasets.create(me, "direct")
                datas = [IncomingFile(a.filename, a.data) for a in files]
                start = time.perf_counter()
                with StallMeter() as direct_meter:
                    await asyncio.gather(*(services.datasets.add_images(me, "direct", datas[i:i + 10])
                                           for i in range(0, images, 10)))
                direct_wall = time.perf_counter() - start
        finally:
            await services.aclose()

    print(f"1. acknowledgement latency, {burst} concurrent commands (dispatch → callback)")
    print("   " + _row("/dataset add", add_ack))
    print("   " + _row("/dataset list", list_ack))
    print("   " + _row("/help", help_ack))
    p99 = {name: statistics.quantiles(xs, n=100)[98] for name, xs in
           (("add", add_ack), ("list", list_ack), ("help", help_ack))}
    print(f"   p99 ratios: add/help {p99['add'] / p99['help']:.2f}, add/list {p99['add'] / p99['list']:.2f}"
          f"   (target p99 ≤ 150 ms: {'met' if p99['add'] <= 150 else 'NOT met'})")
    print(f"2. {images} JPEGs of {side}×{side} via {len(batches)} concurrent /dataset add: {added} added in {wall:.2f} s "
          f"({wall / max(added, 1) * 1000:.0f} ms/image)")
    print(f"   longest event-loop stall: {meter.worst_ms:.1f} ms (target ≤ 50 ms: "
          f"{'met' if meter.worst_ms <= 50 else 'NOT met'})")
    print(f"3. the same {images} straight into storage.add_images: {direct_wall:.2f} s, longest stall "
          f"{direct_meter.worst_ms:.1f} ms")
    print(f"   ratios Discord path / storage alone: wall {wall / direct_wall:.2f}, "
          f"stall {meter.worst_ms / max(direct_meter.worst_ms, 0.1):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    asyncio.run(main(args.burst, args.images, args.side))
