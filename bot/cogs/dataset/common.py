"""What the dataset commands share: the cog's base (services, downloader), name autocomplete, index parsing,
and the add path every way of adding images goes through (download → images and .zips → one report)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import render
from bot.attachments import AttachmentDownloader, AttachmentLike, Downloaded, SizeCaps
from bot.context import services_of
from storage.actors import Actor
from storage.dataset_views import AddReport, FileResult
from storage.errors import InvalidInput, NotFound
from storage.images.archive import ArchiveRejected
from storage.images.sniff import accepted_formats

if TYPE_CHECKING:
    from bot.app import AtelierBot

MAX_INDICES = 500
_RANGE = re.compile(r"^#?(\d+)-#?(\d+)$")
_SINGLE = re.compile(r"^#?(\d+)$")


class DatasetCogBase:
    """Attributes the dataset mixins rely on (set by :class:`bot.cogs.dataset.Dataset`)."""

    bot: AtelierBot
    downloader: AttachmentDownloader

    @property
    def services(self) -> Any:
        return services_of(self.bot)

    def caps(self, interaction: discord.Interaction | None = None) -> SizeCaps:
        limit = interaction.filesize_limit if interaction is not None else None
        return SizeCaps.for_upload(self.bot.settings, limit)

    async def add_attachments(self, me: Actor, name: str, attachments: Sequence[AttachmentLike],
                              caps: SizeCaps) -> AddReport:
        return await add_attachments(self.services, self.downloader, me, name, attachments, caps)


async def add_attachments(services: Any, downloader: AttachmentDownloader, me: Actor, name: str,
                          attachments: Sequence[AttachmentLike], caps: SizeCaps) -> AddReport:
    """Download ``attachments`` and add them to ``name``: images in one batch, each .zip (by content) as an
    import with its .txt captions. Every file gets a line in the report; zip entries are named "a.zip › b.png"."""
    info = await services.datasets.get(me, name)  # "not found" before downloading anything
    got = await downloader.fetch(attachments, caps)
    try:
        return await _add_downloaded(services, me, info, got)
    finally:
        got.close()  # archives are temporary files


async def _add_downloaded(services: Any, me: Actor, info: Any, got: Downloaded) -> AddReport:
    files: list[FileResult] = []
    count, dataset = info.image_count, info.name
    if got.images:
        report = await services.datasets.add_images(me, dataset, got.images, source="upload")
        files += report.files
        count, dataset = report.image_count, report.dataset
    for archive in got.archives:
        try:
            report = await services.datasets.import_zip(me, dataset, archive.file)
        except ArchiveRejected as exc:
            files.append(FileResult(archive.filename, "refused", reason=exc.message, hint=exc.hint, code="archive"))
            continue
        if not report.files:
            files.append(FileResult(archive.filename, "refused", reason=f"{archive.filename} has no images in it.",
                                    hint=f"Put {accepted_formats()} files in the .zip, with captions as same-named "
                                         ".txt files.", code="archive"))
        files += [replace(f, filename=f"{archive.filename} › {f.filename}") for f in report.files]
        count, dataset = report.image_count, report.dataset
    files += got.refused
    return AddReport(dataset, files, count)


# -- autocomplete ----------------------------------------------------------------------------------------------

async def dataset_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The caller's own datasets matching what they typed (read-only: typing never creates a user row)."""
    services = getattr(interaction.client, "services", None)
    if services is None:
        return []
    try:
        me = await services.users.get(f"discord:{interaction.user.id}")
    except NotFound:
        return []
    return [app_commands.Choice(name=label, value=value)
            for label, value in await services.datasets.autocomplete(me, current)]


# -- parsing ---------------------------------------------------------------------------------------------------

def parse_indices(text: str) -> list[int]:
    """``"3, 5-7"`` → ``[3, 5, 6, 7]`` (sorted, unique). Raises :class:`InvalidInput` saying what was wrong."""
    hint = "Use image numbers from /dataset show, e.g. `3`, `2, 5` or `4-9`."
    out: set[int] = set()
    joined = re.sub(r"\s*(?:-|–|\.\.)\s*", "-", text.strip())  # "5 - 7" → "5-7"
    tokens = [t for t in re.split(r"[,;\s]+", joined) if t]
    if not tokens:
        raise InvalidInput("No image numbers given.", hint)
    for token in tokens:
        if m := _SINGLE.match(token):
            lo = hi = int(m.group(1))
        elif m := _RANGE.match(token):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise InvalidInput(f"“{render.truncate(token, 20)}” goes backwards.", f"Write it as {hi}-{lo}.")
        else:
            raise InvalidInput(f"“{render.truncate(token, 20)}” is not an image number or range.", hint)
        if lo < 1:
            raise InvalidInput("Image numbers start at 1.", hint)
        if hi - lo + 1 + len(out) > MAX_INDICES:
            raise InvalidInput(f"That is more than {MAX_INDICES} images.", "Remove fewer images at a time.")
        out.update(range(lo, hi + 1))
    return sorted(out)
