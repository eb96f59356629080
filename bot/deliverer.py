"""The Discord implementation of :class:`storage.queue.outbox.Deliverer`: job notifications sent with the bot token.

Never an interaction token (they expire after 15 minutes; training takes hours):

* training — one DM per job that is edited in place (queued → running with a bar, epoch, loss, ETA and the latest
  sample → finished/failed/cancelled), then a new DM with the results (samples, loss curve, epoch × strength grid,
  Generate now / Share / Export) or the failure (reason, fix, Retry). DMs closed → the outcome is posted in the
  channel the training was requested from, with a mention.
* generation — the images are posted in the channel the request came from (buttons Reroll … Delete), with a
  mention of the requester; a strength grid is posted once, as one composite, when its last tile is done.

Idempotent: the message ids are recorded on the job (:class:`bot.delivery_state.DeliveryLog`), progress edits
render the job's *current* state (repeating one is harmless, an old one never moves the bar backwards), and a
message already recorded for a notification is not sent again. Per-job locks keep the live-progress refresher
(:mod:`bot.progress_refresher`) and the deliverer from interleaving edits of one message.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from typing import Any

import discord

from bot import element_render as er
from bot import generation_render as gr
from bot.delivery_state import DeliveryLog, MessageRef
from bot.errors import DM_CLOSED
from bot.render import escape
from storage.job_views import JobInfo, NotificationView

log = logging.getLogger("atelier.bot.deliver")
MAX_FILES_BYTES = 8 * 1024 * 1024  # stay under Discord's smallest per-message upload limit for bots
UNKNOWN_MESSAGE, UNKNOWN_CHANNEL = 10008, 10003
Build = Callable[[], dict[str, Any]]
PROGRESS_KINDS = ("training_queued", "training_started", "training_progress", "training_retrying")


def discord_user_id(external_id: str) -> int | None:
    namespace, _, bare = external_id.partition(":")
    return int(bare) if namespace == "discord" and bare.isdigit() else None


def mention_only(user_id: int) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False, users=[discord.Object(user_id)])


class DiscordDeliverer:
    """``bot``: the logged-in client; ``services``: the storage services (with ``jobs``).
    ``fallback`` receives notifications of non-Discord users (e.g. the console deliverer in ``atelier run``)."""

    def __init__(self, bot: discord.Client, services: Any, *, fallback: Any | None = None) -> None:
        self.bot = bot
        self.services = services
        self.fallback = fallback
        self.log = DeliveryLog(services.db)
        self._locks: dict[int, asyncio.Lock] = {}
        self._shown_sample: dict[int, tuple[str, str]] = {}  # job id → (sample blob, its attachment URL)

    def lock(self, job_id: int | None) -> asyncio.Lock:
        key = job_id or 0
        if key not in self._locks:
            self._locks[key] = asyncio.Lock()
        return self._locks[key]

    @property
    def generations(self) -> Any:
        return self.services.generations

    # -- entry point -----------------------------------------------------------------------------------------

    async def deliver(self, n: NotificationView) -> None:
        uid = discord_user_id(n.user_external_id)
        if uid is None:
            if self.fallback is not None:
                await self.fallback.deliver(n)
            return
        async with self.lock(n.job_id):
            if n.kind in PROGRESS_KINDS:
                await self.update_progress(n.job_id, uid)
            elif n.kind == "training_finished":
                await self._training_finished(n, uid)
            elif n.kind == "training_failed":
                await self._training_ended(n, uid, "failed")
            elif n.kind == "training_cancelled":
                await self._training_ended(n, uid, "cancelled")
            elif n.kind in ("generation_finished", "generation_failed", "generation_cancelled"):
                await self._generation_ended(n, uid)
            else:
                log.debug("notification %s of kind %s needs no Discord message", n.id, n.kind)
        if n.kind in ("training_finished", "training_failed", "training_cancelled"):
            self._locks.pop(n.job_id or 0, None)
            self._shown_sample.pop(n.job_id or 0, None)

    # -- sending primitives ----------------------------------------------------------------------------------

    async def _dm(self, uid: int, **kwargs: Any) -> discord.Message | None:
        """DM ``uid``; None when they do not accept DMs."""
        channel = await self.bot.create_dm(discord.Object(uid))  # cached by discord.py after the first call
        try:
            return await channel.send(allowed_mentions=discord.AllowedMentions.none(), **kwargs)
        except discord.Forbidden as exc:
            if exc.code == DM_CLOSED:
                return None
            raise

    async def _post(self, channel_id: int, uid: int, **kwargs: Any) -> discord.Message | None:
        """Post in a server channel mentioning ``uid``; None when the channel is gone or closed to the bot."""
        channel = self.bot.get_partial_messageable(int(channel_id))
        try:
            return await channel.send(allowed_mentions=mention_only(uid), **kwargs)
        except (discord.Forbidden, discord.NotFound) as exc:
            log.info("cannot post in channel %s: %s", channel_id, exc)
            return None

    async def _personal(self, n: NotificationView, uid: int, text: str, build: Build) -> discord.Message | None:
        """A personal message: DM first, else the origin channel with a mention. Sent once per notification.
        ``build()`` makes the message's other arguments (fresh files for each attempt: a send closes them)."""
        key = f"n{n.id}"
        rec = await self.log.get(n.job_id)
        if key in rec.sent:
            return None
        msg = None if rec.dm_closed else await self._dm(uid, content=text, **build())
        if msg is None:
            if not rec.dm_closed:
                await self.log.set_dm_closed(n.job_id)
            channel = n.origin.get("channel_id")
            if channel and not n.origin.get("dm"):
                msg = await self._post(int(channel), uid, content=f"<@{uid}> (I couldn't DM you) {text}",
                                       **build())
        if msg is None:
            log.warning("notification %s (%s): user %s has DMs closed and there is no channel to post in",
                        n.id, n.kind, uid)
            return None
        await self.log.record_sent(n.job_id, key, (msg.channel.id, msg.id))
        return msg

    async def _edit(self, ref: MessageRef, **kwargs: Any) -> discord.Message | None:
        """Edit a message the bot sent earlier; None when it no longer exists."""
        channel = self.bot.get_partial_messageable(ref[0])
        try:
            return await channel.get_partial_message(ref[1]).edit(**kwargs)
        except discord.NotFound:
            return None
        except discord.Forbidden as exc:
            log.info("cannot edit message %s: %s", ref[1], exc)
            return None

    async def _blob(self, h: str | None) -> bytes | None:
        if not h:
            return None
        try:
            return await self.services.blobs.get_bytes(h)
        except Exception as exc:  # noqa: BLE001 — a missing picture must not block the message
            log.warning("blob %s unavailable: %s", h, exc)
            return None

    # -- training --------------------------------------------------------------------------------------------

    async def update_progress(self, job_id: int | None, uid: int, *, final: bool = False) -> None:
        """Create or edit the job's progress DM to show its current state (call under ``lock(job_id)``)."""
        job = await self.log.job(job_id)
        rec = await self.log.get(job_id)
        if job is None or rec.final or (rec.progress is None and (rec.dm_closed or job.finished)):
            return
        if rec.progress is not None:
            msg = await self._edit(rec.progress, **await self._progress_message(job))
            if msg is not None:
                self._remember_sample(job, msg)
                if final:
                    await self.log.mark_final(job_id)
                return
            self._shown_sample.pop(job.id, None)  # the old message is gone: post a new one below
        kwargs = await self._progress_message(job)
        msg = await self._dm(uid, **{k: v for k, v in kwargs.items() if k != "attachments"},
                             files=kwargs.get("attachments", []))
        if msg is None:
            await self.log.set_dm_closed(job_id)
            return
        self._remember_sample(job, msg)
        await self.log.set_progress(job_id, (msg.channel.id, msg.id), final=final)

    async def _progress_message(self, job: JobInfo) -> dict[str, Any]:
        sample = (job.progress.get("samples") or [None])[0]
        shown = self._shown_sample.get(job.id)
        payload = {**job.payload, "job_id": job.id, "attempt": job.attempt, "max_attempts": job.max_attempts,
                   "slot_refunded": job.result.get("slot_refunded", True)}
        note = None
        if job.status == "failed":
            note = str(job.error or "")
        elif job.progress.get("phase") == "retrying" and job.status == "queued":
            note = f"🔁 Something went wrong; retrying (attempt {job.attempt + 1}/{job.max_attempts})."
        status = "running" if job.status == "queued" and job.attempt > 0 else job.status
        embed = er.progress_embed(payload, status=status, progress=job.progress, position=job.queue_position,
                                  note=note, job_id=job.id)
        kwargs: dict[str, Any] = {"content": None, "embed": embed}
        if sample and shown and shown[0] == sample:
            embed.set_image(url=shown[1])  # unchanged: keep pointing at the attachment already there
        elif sample and (data := await self._blob(sample)) is not None:
            embed.set_image(url="attachment://latest-sample.png")
            kwargs["attachments"] = [discord.File(io.BytesIO(data), "latest-sample.png")]
        return kwargs

    def _remember_sample(self, job: JobInfo, msg: discord.Message) -> None:
        sample = (job.progress.get("samples") or [None])[0]
        url = next((a.url for a in msg.attachments if a.filename == "latest-sample.png"), None)
        if sample and url:
            self._shown_sample[job.id] = (sample, url)

    async def _training_finished(self, n: NotificationView, uid: int) -> None:
        await self.update_progress(n.job_id, uid, final=True)
        p = n.payload
        blobs: list[tuple[str, bytes]] = []
        total = 0
        wanted = [("grid.png", p.get("grid")), ("loss-curve.png", p.get("loss_curve"))]
        wanted += [(f"sample-{i}.png", h) for i, h in enumerate(p.get("samples") or [], 1)][:8]
        for name, h in wanted:
            data = await self._blob(h)
            if data is not None and total + len(data) <= MAX_FILES_BYTES:
                blobs.append((name, data))
                total += len(data)
        present = {name for name, _ in blobs}
        embeds = er.finished_embeds(p, has_grid="grid.png" in present, has_loss="loss-curve.png" in present)
        view = er.finished_view(int(p["element_id"]), uid, n.origin.get("guild_id"))
        await self._personal(n, uid, f"✅ Your Element “{p.get('element_name')}” is ready.", lambda: dict(
            embeds=embeds, view=view, files=[discord.File(io.BytesIO(d), name) for name, d in blobs]))

    async def _training_ended(self, n: NotificationView, uid: int, how: str) -> None:
        await self.update_progress(n.job_id, uid, final=True)
        rec = await self.log.get(n.job_id)
        name = n.payload.get("element_name")
        if how == "failed":
            await self._personal(n, uid, f"Training “{name}” failed.", lambda: dict(
                embed=er.failed_embed(n.payload), view=er.retry_view(int(n.job_id or 0), uid)))
        elif rec.progress is None:  # nobody saw it start (DMs closed, or cancelled while queued before the DM)
            slot = ("your slot was refunded" if n.payload.get("slot_refunded", True)
                    else "it had started, so it used a training slot")
            await self._personal(n, uid, f"⏹️ Training “{name}” was cancelled; {slot}.", dict)

    # -- generation ------------------------------------------------------------------------------------------

    async def _generation_ended(self, n: NotificationView, uid: int) -> None:
        if n.origin.get("grid"):
            await self._grid_tile_ended(n, uid)
        elif n.kind == "generation_finished":
            await self._post_generation(n, uid)
        elif n.kind == "generation_failed":
            p = n.payload
            embed = er.failed_embed({**p, "element_name": None})
            embed.title = "❌ Generation failed"
            embed.remove_field(len(embed.fields) - 1)  # generations use no training slot
            prompt = escape(str(p.get("prompt") or ""))[:200]
            await self._personal(n, uid, f"Your generation “{prompt}” failed.", lambda: dict(
                embed=embed, view=er.retry_view(int(n.job_id or 0), uid)))

    async def _post_generation(self, n: NotificationView, uid: int) -> None:
        key = f"n{n.id}"
        if key in (await self.log.get(n.job_id)).sent:
            return
        gen = await self.generations.for_job(int(n.job_id or 0))
        if gen is None:
            return  # deleted before it could be shown
        images = [d for d in [await self._blob(h) for h in gen.images] if d is not None]
        content = f"<@{uid}> here you go:"
        kwargs = dict(embed=gr.result_embed(gen), files=gr.image_files(gen.id, images),
                      view=gr.result_view(gen, uid))
        channel = n.origin.get("channel_id")
        msg = None
        if channel and not n.origin.get("dm"):
            msg = await self._post(int(channel), uid, content=content, **kwargs)
            if msg is None:  # the channel is gone or closed to the bot: fresh files for the DM attempt
                kwargs["files"] = gr.image_files(gen.id, images)
        if msg is None:
            msg = await self._dm(uid, content="Here are your images:", **kwargs)
        if msg is None:
            log.warning("generation %s: no channel and DMs closed for user %s", gen.id, uid)
            return
        await self.log.record_sent(n.job_id, key, (msg.channel.id, msg.id))

    async def _grid_tile_ended(self, n: NotificationView, uid: int) -> None:
        """Post the composite once: from the tile that finished last, when every tile has finished."""
        grid = n.origin["grid"]
        members = await self.generations.grid_members(n.user_id, str(grid.get("group")))
        if len(members) < int(grid.get("of", 0)) or not all(m.finished_at for m in members):
            return
        last = max(members, key=lambda m: (m.finished_at, m.job_id))
        key = f"grid:{grid.get('group')}"
        if last.job_id != n.job_id or key in (await self.log.get(n.job_id)).sent:
            return
        tiles = [(f"{m.strength:g}", await self._blob(m.images[0]) if m.images else None) for m in members]
        png = await asyncio.to_thread(gr.compose_strength_grid, tiles)
        parent = int(grid.get("parent") or 0)
        embed = gr.grid_embed(parent, str(n.payload.get("prompt") or ""), n.payload.get("elements") or [],
                              members)
        kwargs = dict(content=f"<@{uid}> your strength grid:", embed=embed)
        msg = None
        if (channel := n.origin.get("channel_id")) and not n.origin.get("dm"):
            msg = await self._post(int(channel), uid, file=discord.File(io.BytesIO(png), "strength-grid.png"),
                                   **kwargs)
        if msg is None:
            msg = await self._dm(uid, file=discord.File(io.BytesIO(png), "strength-grid.png"), **kwargs)
        if msg is not None:
            await self.log.record_sent(n.job_id, key, (msg.channel.id, msg.id))
