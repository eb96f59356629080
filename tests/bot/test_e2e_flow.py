"""End to end, as users would: the real bot against the emulator, real services, an embedded Redis and a real
``atelier worker`` process training and generating on tiny-sd15.

create a dataset → add 10 images → /element train → progress DM edited → finished DM with samples →
/generate with the Element at 0.7 → images posted with buttons → Strength grid → Add to dataset → share publicly →
a second user finds it with /element browse, generates with it (credited) and cannot delete it; a second user
pressing the first user's button gets "not yours"; closed DMs fall back to the channel.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import FAST_TRAIN, WorkerProcess, png, wait_for

pytestmark = pytest.mark.slow  # Discord → queue → worker → Discord with real training

TRAIN_S = 300  # generous: two cores shared with other test processes


@pytest.fixture
def worker(job_settings: Any, tmp_path: Any) -> Any:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        w = WorkerProcess(job_settings, tmp_path / f"worker-{len(started)}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


async def train_via_discord(emu: Any, user: Any, dataset: str, name: str, trigger: str) -> Any:
    confirm = await (await emu.slash(user, "element", "train", options={
        "dataset": dataset, "name": name, "category": "style", "base": "tiny-sd15", "trigger": trigger,
        "epochs": 2})).reply()
    assert "10 images" in confirm.text(), confirm.text()
    await (await emu.click(user, confirm, confirm.buttons[0]["custom_id"])).reply()
    await wait_for(lambda: "Queued" in confirm.content, 10, "the training to be queued")
    return confirm


async def test_discord_end_to_end(bot_harness, job_services, job_settings, worker) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        bot.training_overrides = {k: v for k, v in FAST_TRAIN.items() if k != "epochs"}
        alice, bob, carol = emu.user("alice"), emu.user("bob"), emu.user("carol")
        proc = worker()

        # -- a dataset of 10 images, added through /dataset add attachments ------------------------------------
        await (await emu.slash(alice, "dataset", "create", options={"name": "shapes"})).reply()
        images = {f"image{i + 1}": emu.upload(f"shape-{i}.png", png(i, colour=(12, 70, 78))) for i in range(10)}
        added = await (await emu.slash(alice, "dataset", "add", options={"name": "shapes", **images})).reply()
        assert "10" in added.text(), added.text()

        # -- train; the DM progress message is edited in place; results arrive by DM --------------------------
        await train_via_discord(emu, alice, "shapes", "Inkwash", "zqxink")
        progress = await emu.wait_for_message(emu.dm(alice), lambda m: "Training “Inkwash”" in m.text())
        try:
            done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text(), timeout=TRAIN_S)
        except AssertionError:
            raise AssertionError(proc.output()) from None
        states = [h["embeds"][0]["description"] for h in progress.history] + [progress.embeds[0]["description"]]
        assert any("Queued" in s for s in states) and "Finished" in states[-1], states
        assert len(progress.history) >= 2
        assert {"grid.png", "loss-curve.png", "sample-1.png"} <= set(done.files)

        # -- generate with the Element at 0.7: images posted with buttons --------------------------------------
        mark = emu.mark()
        await (await emu.slash(alice, "generate", prompt="a cat", element1="Inkwash", strength1=0.7,
                               seed=3)).reply()
        post = await emu.wait_for_message("general", lambda m: m.files, after=mark, timeout=120)
        assert "Inkwash** × 0.7" in post.text() and len(post.files) == 1
        cid = {b["label"]: b["custom_id"] for b in post.buttons}
        assert "belongs to someone else" in (await (await emu.click(bob, post, cid["Reroll"])).reply()).content

        # -- strength grid: one composite once all five tiles are generated -----------------------------------
        mark = emu.mark()
        await (await emu.click(alice, post, cid["Strength grid"])).reply()
        grid = await emu.wait_for_message("general", lambda m: "strength-grid.png" in m.files, after=mark,
                                          timeout=120)
        assert "0, 0.25, 0.5, 0.75, 1" in grid.text()

        # -- add the generated image to the dataset (the bootstrap loop) ---------------------------------------
        menu = await (await emu.click(alice, post, cid["Add to dataset"])).reply()
        target = next(c for c in menu.custom_ids if ":addto:" in c)
        result = await (await emu.select(alice, menu, target, ["shapes"])).reply()
        await wait_for(lambda: "now has 11 images" in result.content, 10, "the image to be added")

        # -- share; a second user finds it, generates with it (credited) and cannot delete it --------------
        shared = await (await emu.slash(alice, "element", "share", element="Inkwash", visibility="public")).reply()
        assert "now public" in shared.content
        found = await (await emu.slash(bob, "element", "browse", query="ink")).reply()
        assert "**Inkwash** by alice" in found.text()
        ref = found.text().split("`")[1]  # "#<id>"
        mark = emu.mark()
        await (await emu.slash(bob, "generate", prompt="a dog", element1=ref, at="gallery")).reply()
        theirs = await emu.wait_for_message("gallery", lambda m: m.files, after=mark, timeout=120)
        assert f"<@{bob.id}>" in theirs.content and "“Inkwash” by alice" in theirs.text()
        refused = await (await emu.slash(bob, "element", "delete", element=ref)).reply()
        assert "belongs to alice" in refused.content
        assert (await job_services.elements.get(await job_services.users.ensure(f"discord:{alice.id}"),
                                                "Inkwash")).usage_count == 1

        # -- closed DMs: the result of carol's training is posted where she asked, with a mention ------------
        emu.set_dms_open(carol, False)
        me = await job_services.users.ensure(f"discord:{carol.id}", "carol")
        from storage.dataset_views import IncomingFile

        await job_services.datasets.create(me, "mine")
        await job_services.datasets.add_images(me, "mine", [IncomingFile(f"{i}.png", png(100 + i)) for i in range(10)])
        await train_via_discord(emu, carol, "mine", "Carols", "zqxcarol")
        try:
            fallback = await emu.wait_for_message("general", lambda m: "is ready" in m.text(), timeout=TRAIN_S)
        except AssertionError:
            raise AssertionError(proc.output()) from None
        assert fallback.content.startswith(f"<@{carol.id}> (I couldn't DM you)")
        assert emu.messages(emu.dm(carol)) == []
    assert proc.stop() == 0, proc.output()


async def test_atelier_bot_command(job_settings, tmp_path) -> None:
    """`atelier bot` as a real process against the emulator: commands synced, /generate answered, clean stop;
    and a missing token is a one-line error."""
    import asyncio
    import signal
    import sys

    from tests.discord_emulator import DiscordEmulator
    from tests.worker.conftest import ROOT, settings_env

    env = settings_env(job_settings)
    missing = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", "bot", cwd=ROOT, env=env,
                                                   stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(missing.communicate(), 60)
    assert missing.returncode == 1 and "set ATELIER_DISCORD_TOKEN" in err.decode()
    assert len(err.decode().strip().splitlines()) == 1, err

    async with DiscordEmulator() as emu:
        env.update(ATELIER_DISCORD_TOKEN=emu.token, ATELIER_DISCORD_API_BASE=emu.api_base,
                   ATELIER_DISCORD_GATEWAY_URL=emu.gateway_url, ATELIER_DEV_GUILD=str(emu.guild_id))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", "bot", cwd=ROOT, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output = asyncio.create_task(proc.stdout.read())  # type: ignore[union-attr]
        try:
            await emu.state.changes.wait_for(lambda: emu.state.commands.get(emu.guild_id), 60,
                                             lambda: "the commands to be synced" + emu.state.recent_problems())
            await emu.wait_until_connected(30)
            names = {c["name"] for c in emu.state.commands[emu.guild_id]}
            assert {"element", "generate", "jobs", "dataset"} <= names
            ack = await (await emu.slash(emu.user("alice"), "generate", prompt="a cat")).reply(timeout=30)
            assert "position 1" in ack.content
        finally:
            proc.send_signal(signal.SIGINT)
            rc = await asyncio.wait_for(proc.wait(), 30)
        log = (await output).decode(errors="replace")
        assert rc == 0, log[-3000:]

        # the definitions did not change, so a restart would not sync them; `--sync` forces it
        assert emu.state.command_puts == [emu.guild_id]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", "bot", "--sync", cwd=ROOT,
                                                    env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        output = asyncio.create_task(proc.stdout.read())  # type: ignore[union-attr]
        try:
            await emu.state.changes.wait_for(lambda: len(emu.state.command_puts) == 2, 60,
                                             lambda: "the forced sync" + emu.state.recent_problems())
        finally:
            proc.send_signal(signal.SIGINT)
            rc = await asyncio.wait_for(proc.wait(), 30)
        log = (await output).decode(errors="replace")
        assert rc == 0, log[-3000:]
