"""Everything a member can trigger is bounded: zip imports read no further than the dataset's room, exports are
refused from the image sizes before anything is fetched, heavy tasks run a few at a time per process, and each
member's stored bytes have a quota."""

from __future__ import annotations

import asyncio
import struct
import zipfile

import pytest

from storage.dataset_views import IncomingFile
from storage.errors import InvalidInput
from storage.heavy import running
from storage.services import build_services
from storage.settings import Family, ImageLimits
from tests.conftest import noise_png
from tests.storage import hostile as H


def _corrupt_entry(data: bytes, name: str) -> bytes:
    """Flip the stored CRC of ``name``'s local header: reading it fails as "damaged"."""
    out = bytearray(data)
    at = 0
    while (at := out.find(b"PK\x03\x04", at)) >= 0:
        n = struct.unpack_from("<H", out, at + 26)[0]
        if out[at + 30 : at + 30 + n].decode() == name:
            struct.pack_into("<I", out, at + 14, struct.unpack_from("<I", out, at + 14)[0] ^ 0xFFFF)
            return bytes(out)
        at += 4
    raise AssertionError(name)


async def test_zip_import_reads_no_further_than_the_datasets_room(make_settings, database_url, alice_of) -> None:
    settings = make_settings(database_url=database_url,
                             image_limits=ImageLimits(max_images={f: 3 for f in Family}))
    services = await build_services(settings)
    try:
        alice = await alice_of(services)
        await services.datasets.create(alice, "small")
        data = H.make_zip([(f"{i}.png", noise_png(i)) for i in range(1, 7)], zipfile.ZIP_STORED)
        for late in ("4.png", "5.png", "6.png"):
            data = _corrupt_entry(data, late)
        report = await services.datasets.import_zip(alice, "small", data)
        by_name = {f.filename: f for f in report.files}
        assert [by_name[f"{i}.png"].status for i in (1, 2, 3)] == ["added"] * 3
        # Damaged entries past the room were never read: they are refused as "full", not as "damaged".
        assert {by_name[f"{i}.png"].code for i in (4, 5, 6)} == {"full"}
    finally:
        await services.aclose()


async def test_export_over_the_limit_is_refused_before_any_image_is_fetched(services, alice) -> None:
    await services.datasets.create(alice, "big")
    await services.datasets.add_images(alice, "big", [IncomingFile(f"{i}.png", noise_png(i, 256)) for i in range(4)])
    info = await services.datasets.get(alice, "big")
    for image in info.images:  # were anything fetched, the missing files would fail the export differently
        await services.blobs.delete(image.blob_hash)
    with pytest.raises(InvalidInput, match=r"would be .* over the 100\.0 KB upload limit"):
        async with services.datasets.export_zip(alice, "big", max_bytes=100 * 1024):
            pass
    assert not any(services.settings.temp_dir.glob("*")), "no temporary file was even started"


async def test_heavy_tasks_run_at_most_the_configured_number_at_once(make_settings, database_url,
                                                                     alice_of) -> None:
    settings = make_settings(database_url=database_url, max_concurrent_heavy_tasks=2)
    services = await build_services(settings)
    try:
        alice = await alice_of(services)
        seen: list[int] = []
        for k in range(5):
            await services.datasets.create(alice, f"d{k}")

        async def add(k: int) -> None:
            files = [IncomingFile(f"{k}-{i}.png", noise_png(100 * k + i, 128)) for i in range(3)]
            await services.datasets.add_images(alice, f"d{k}", files,
                                               on_progress=lambda d, t: seen.append(running(2)))

        await asyncio.gather(*(add(k) for k in range(5)))
        assert seen and max(seen) == 2, seen  # five adds at once, never more than two working
    finally:
        await services.aclose()


async def test_member_storage_quota_refuses_what_does_not_fit_and_is_reported(make_settings, database_url,
                                                                              alice_of) -> None:
    one = len((await _normalized(noise_png(1, 128))).data)
    settings = make_settings(database_url=database_url, member_storage_bytes=int(one * 2.5))
    services = await build_services(settings)
    try:
        alice = await alice_of(services)
        await services.datasets.create(alice, "a")
        await services.datasets.create(alice, "b")
        first = await services.datasets.add_images(alice, "a", [IncomingFile("1.png", noise_png(1, 128)),
                                                                 IncomingFile("2.png", noise_png(2, 128))])
        assert [f.status for f in first.files] == ["added", "added"]
        second = await services.datasets.add_images(alice, "b", [IncomingFile("3.png", noise_png(3, 128))])
        (refused,) = second.files
        assert refused.code == "storage_full" and "Your storage is full" in refused.reason
        use = await services.datasets.storage_use(alice)
        assert use.limit == int(one * 2.5) and one * 2 - 1000 < use.used <= use.limit
        await services.datasets.remove_images(alice, "a", [1])  # freeing space makes room again
        again = await services.datasets.add_images(alice, "b", [IncomingFile("3.png", noise_png(3, 128))])
        assert again.files[0].status == "added"
    finally:
        await services.aclose()


async def _normalized(data: bytes):
    from storage.images.ingest import IngestLimits, normalize_image

    return normalize_image(data, IngestLimits(min_side=1))


@pytest.fixture
def alice_of():
    async def make(services):
        return await services.users.ensure("discord:1001", "Alice", guild_id="g1")

    return make
