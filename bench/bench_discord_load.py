"""Discord front end under load: interaction acknowledgement latency and event-loop stalls; prints figures.

    python bench/bench_discord_load.py [--concurrency 100] [--images 50] [--size 768] [--quick]

The real bot (all cogs, real services on SQLite, the job queue on an embedded Redis, no worker) runs in this
process; the emulator runs in a child process (its own interpreter and GIL, driven over a pipe), so none of its
work counts as the bot's. Measured:

* acknowledgement latency, end to end and bot only side by side in one table — end to end is the emulator's
  clock from dispatching INTERACTION_CREATE to receiving the bot's callback (``CallbackResponse.after_s``); bot
  only is the bot's clock from the gateway event parsed to ``defer`` sent (target p99 ≤ 150 ms), plus → ``defer``
  confirmed; for N concurrent ``/generate``, N concurrent ``/dataset add`` (one image each), and N mixed, next to
  N concurrent ``/ping`` (defer + follow-up, no storage: the floor set by the emulator, the transport and
  discord.py);
* the longest event-loop stall of the bot while ``--images`` images arrive through ``/dataset add`` (10 per
  command, all commands at once): a probe task sleeps 2 ms in a loop and records how late it wakes (target
  ≤ 50 ms); the idle floor and the stalls during the bursts are printed alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- the emulator side (child process) -------------------------------------------------------------------------

def photo_like(seed: int, size: int) -> bytes:
    """A JPEG with smooth gradients plus noise (decodes and hashes like a photo, not like flat art)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x * 255, y * 255, (1 - x) * 200], axis=-1)
    arr = np.clip(base + rng.normal(0, 25, base.shape) + rng.integers(0, 60, 3), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


async def emulator_main(n: int) -> None:
    from tests.discord_emulator import DiscordEmulator

    emu = DiscordEmulator(users=[f"user{i}" for i in range(n)], callback_deadline_s=30, default_timeout=120)
    async with emu:
        users = [emu.user(f"user{i}") for i in range(n)]
        small = [emu.upload(f"s{i}.jpg", photo_like(i, 256)) for i in range(n)]
        say({"api_base": emu.api_base, "gateway_url": emu.gateway_url, "token": emu.token,
             "guild_id": emu.guild_id, "user_ids": [u.id for u in users]})
        while line := await asyncio.to_thread(sys.stdin.readline):
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "ready":
                await emu.state.changes.wait_for(lambda: emu.state.commands.get(emu.guild_id), 60,
                                                 lambda: "commands to be synced")
                say({"ok": True})
            elif op == "burst":
                starts = []
                for i, u in enumerate(users[:cmd["n"]]):
                    kind = cmd["kind"] if cmd["kind"] != "mixed" else ("generate" if i % 2 else "add")
                    if kind == "ping":
                        starts.append(emu.slash(u, "ping"))
                    elif kind == "generate":
                        starts.append(emu.slash(u, "generate", prompt=f"a lighthouse number {i}"))
                    else:
                        att = small[(i + cmd.get("shift", 0)) % n]
                        starts.append(emu.slash(u, "dataset", "add", options={"name": "bench", "image1": att}))
                handles = await asyncio.gather(*starts)
                responses = await asyncio.gather(*(h.response() for h in handles))
                await asyncio.gather(*(h.reply() for h in handles))  # let the bot finish before the next case
                say({"after_s": [r.after_s for r in responses]})
            elif op == "images":
                big = [emu.upload(f"b{i}.jpg", photo_like(1000 + i, cmd["size"])) for i in range(cmd["count"])]
                batches = [big[i:i + 10] for i in range(0, len(big), 10)]
                say({"ok": True})  # uploads are ready: the parent starts its probe now
                await asyncio.to_thread(sys.stdin.readline)
                handles = await asyncio.gather(*(
                    emu.slash(users[i], "dataset", "add",
                              options={"name": "bench", **{f"image{j + 1}": a for j, a in enumerate(batch)}})
                    for i, batch in enumerate(batches)))
                await asyncio.gather(*(h.reply() for h in handles))
                say({"ok": True, "problems": emu.state.recent_problems()})
            elif op == "stop":
                return


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---- the bot side (this process) -------------------------------------------------------------------------------

class GcPauses:
    """Records how long each garbage collection of the bot process takes (they stop the event loop too)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))

    def take(self) -> str:
        pauses, self.pauses = self.pauses, []
        if not pauses:
            return "no GC"
        gen, worst = max(pauses, key=lambda p: p[1])
        return f"{len(pauses)} GCs, longest {worst * 1000:.1f} ms (gen {gen})"


class StallProbe:
    """Sleeps ``tick`` seconds in a loop on the bot's event loop and records how late each wake-up is."""

    def __init__(self, tick: float = 0.002) -> None:
        self.tick = tick
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self.gc = ""  # what garbage collection did meanwhile

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.lags.append(time.perf_counter() - start - self.tick)

    def __enter__(self) -> StallProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def worst_ms(self) -> float:
        return max(self.lags, default=0.0) * 1000

    @property
    def p99_ms(self) -> float:
        lags = sorted(self.lags) or [0.0]
        return lags[int(0.99 * (len(lags) - 1))] * 1000


class AckClock:
    """Bot-side clock: gateway event parsed → ``defer()`` called → Discord (the emulator) confirmed it.

    Wraps discord.py's ``InteractionResponse.defer`` for the run (every measured command defers first)."""

    def __init__(self) -> None:
        import discord

        self.marks: dict[int, dict[str, float]] = {}
        self._orig_parse = discord.state.ConnectionState.parse_interaction_create
        self._orig_defer = discord.InteractionResponse.defer
        clock = self

        def parse(state: Any, data: dict[str, Any]) -> Any:
            clock.marks.setdefault(int(data["id"]), {})["event"] = time.perf_counter()
            return clock._orig_parse(state, data)

        async def defer(response: Any, **kwargs: Any) -> Any:
            m = clock.marks.setdefault(response._parent.id, {})
            m["defer"] = time.perf_counter()
            try:
                return await clock._orig_defer(response, **kwargs)
            finally:
                m["confirmed"] = time.perf_counter()

        discord.state.ConnectionState.parse_interaction_create = parse  # type: ignore[method-assign]
        discord.InteractionResponse.defer = defer  # type: ignore[method-assign]

    def take(self) -> tuple[list[float], list[float]]:
        """(event → defer sent, event → defer confirmed) in seconds, for the marks so far; then reset."""
        done = [m for m in self.marks.values() if {"event", "defer", "confirmed"} <= m.keys()]
        self.marks = {}
        return [m["defer"] - m["event"] for m in done], [m["confirmed"] - m["event"] for m in done]


class Emulator:
    """The child process, driven by JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        if cmd:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            await self.proc.stdin.drain()
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process stopped")
        return json.loads(line)


def pct(samples_s: list[float], q: int) -> float:
    ms = sorted(s * 1000 for s in samples_s) or [0.0]
    return ms[min(len(ms) - 1, round(q / 100 * (len(ms) - 1)))]


async def main(n: int, images: int, size: int) -> None:
    from pydantic import SecretStr

    from bot.app import AtelierBot
    from storage.queue.embedded_redis import redis_for
    from storage.services import build_services
    from storage.settings import load_settings

    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--emulator", "--concurrency", str(n), cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24)
    emu = Emulator(proc)
    facts = await emu.ask()
    data_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-load-"))
    settings = load_settings(
        data_dir=data_dir, generation_cooldown_seconds=0, default_base_model="tiny-sd15", min_image_side=32,
        discord_token=SecretStr(facts["token"]), discord_api_base=facts["api_base"],
        discord_gateway_url=facts["gateway_url"], dev_guild=facts["guild_id"])
    services = await build_services(settings)
    try:
        async with redis_for(None, data_dir) as url:
            await services.attach_jobs(url)
            for i, uid in enumerate(facts["user_ids"]):  # setup, not measured: each user owns a dataset
                me = await services.users.ensure(f"discord:{uid}", f"user{i}")
                await services.datasets.create(me, "bench")
            clock = AckClock()  # before the bot exists: discord.py binds its gateway parsers at construction
            bot = AtelierBot(services=services, settings=settings, guild_ready_timeout=0.05)
            runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
            try:
                await asyncio.wait_for(bot.wait_until_ready(), 60)
                await emu.ask(op="ready")
                await run_cases(emu, clock, services, facts["user_ids"], n, images, size)
            finally:
                await bot.close()
                await asyncio.gather(runner, return_exceptions=True)
    finally:
        if proc.returncode is None:
            proc.stdin.write(b'{"op": "stop"}\n')  # type: ignore[union-attr]
            await asyncio.wait_for(proc.wait(), 30)
        await services.aclose()


async def total_images(services: Any, user_ids: list[int]) -> int:
    total = 0
    for uid in user_ids:
        me = await services.users.get(f"discord:{uid}")
        total += sum(d.image_count for d in await services.datasets.list(me))
    return total


async def run_cases(emu: Emulator, clock: AckClock, services: Any, user_ids: list[int], n: int, images: int, size: int) -> None:
    await emu.ask(op="burst", kind="mixed", n=4)  # warm-up: first-use imports and caches
    clock.take()
    with StallProbe() as idle:
        await asyncio.sleep(1.0)
    results: dict[str, tuple[list[float], StallProbe]] = {}
    bot_side: dict[str, tuple[list[float], list[float]]] = {}
    cpu_ms: dict[str, float] = {}  # the bot process's CPU time per command (all threads), whole burst
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    for name, kind, shift in ((f"{n} × /ping (baseline)", "ping", 0), (f"{n} × /generate", "generate", 0), (f"{n} × /dataset add (1 image)", "add", 1),
                              (f"{n} mixed (half each)", "mixed", 2), (f"{n} × /ping (baseline again)", "ping", 0)):
        cpu = time.process_time()
        gc_pauses.take()
        with StallProbe() as probe:
            answer = await emu.ask(op="burst", kind=kind, n=n, shift=shift)
        probe.gc = gc_pauses.take()
        cpu_ms[name] = (time.process_time() - cpu) * 1000 / n
        results[name] = (answer["after_s"], probe)
        bot_side[name] = clock.take()
    before = await total_images(services, user_ids)
    await emu.ask(op="images", count=images, size=size)  # the child prepares the uploads first
    started = time.perf_counter()
    with StallProbe() as during:
        done = await emu.ask(op="go")
    took = time.perf_counter() - started
    added = await total_images(services, user_ids) - before

    load = os.getloadavg()[0]
    print(f"Machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end of the bursts (a load far above the CPU "
          "count means other processes took CPU time from the bot and the emulator during the run)")
    print(f"Acknowledgement latency, {n} concurrent commands. End to end = the emulator's clock, dispatch of "
          "INTERACTION_CREATE → the bot's callback received (emulator process + transport + bot); bot only = the "
          "bot's clock, gateway event parsed → defer sent (its own work), and → defer confirmed by the emulator.")
    print(f"{'case':<28} | {'end to end p50/p99':>20} | {'bot only p50/p99':>18} | {'bot → confirmed p50/p99':>24} "
          f"| bot share of e2e p99 | bot CPU/command | bot p99 ≤ 150 ms")
    for name, (samples, _) in results.items():
        sent, confirmed = bot_side[name]
        e2e50, e2e99 = pct(samples, 50), pct(samples, 99)
        bot50, bot99 = pct(sent, 50), pct(sent, 99)
        ok = "ok" if bot99 <= 150 else "ABOVE TARGET"
        print(f"{name:<28} | {e2e50:8.1f} /{e2e99:7.1f} ms | {bot50:6.1f} /{bot99:7.1f} ms | "
              f"{pct(confirmed, 50):9.1f} /{pct(confirmed, 99):8.1f} ms | {bot99 / max(e2e99, 1e-6):19.0%} | "
              f"{cpu_ms[name]:10.1f} ms | {ok}")
    floor = min(pct(results[f"{n} × /ping (baseline)"][0], 99), pct(results[f"{n} × /ping (baseline again)"][0], 99))
    print("End-to-end p99 vs the /ping baseline (defer + follow-up, no storage; the emulator + transport floor): "
          + ", ".join(f"{name.split(' (')[0]} {pct(samples, 99) / floor:.2f}x" for name, (samples, _) in results.items()
                      if "baseline" not in name))
    stalls = " · ".join(f"{name}: {probe.worst_ms:.1f} ms ({probe.gc})" for name, (_, probe) in results.items())
    print(f"Longest event-loop stall: idle {idle.worst_ms:.1f} ms · {stalls}")
    verdict = "ok" if during.worst_ms <= 50 else "ABOVE TARGET"
    print(f"While adding {images} images of {size}px ({-(-images // 10)} × /dataset add at once): longest stall "
          f"{during.worst_ms:.1f} ms, p99 {during.p99_ms:.1f} ms ({verdict}: ≤ 50 ms); {added} images added in "
          f"{took:.1f} s; stall / idle floor {during.worst_ms / max(idle.worst_ms, 0.1):.1f}x")
    if done.get("problems"):
        print("emulator saw:", done["problems"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--quick", action="store_true", help="20 concurrent commands, 10 images of 256 px")
    parser.add_argument("--emulator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.images, args.size = 20, 10, 256
    if args.emulator:
        asyncio.run(emulator_main(args.concurrency))
    else:
        asyncio.run(main(args.concurrency, args.images, args.size))
