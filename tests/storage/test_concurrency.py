"""Many use cases at once against one database: no "database is locked", no lost or doubled rows."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import func, select

from storage.dataset_views import IncomingFile
from storage.db.models import DatasetImage, User
from storage.errors import Conflict
from tests.conftest import noise_png


@pytest.mark.slow
async def test_200_concurrent_adds_across_10_datasets_and_5_users(services) -> None:
    users = [await services.users.ensure(f"discord:{5000 + i}", f"user{i}") for i in range(5)]
    targets = [(u, f"set {j}") for u in users for j in range(2)]  # 10 datasets
    for actor, name in targets:
        await services.datasets.create(actor, name)
    # 200 calls, 20 per dataset, each adding one distinct small image.
    calls = [(targets[k % 10], k) for k in range(200)]
    reports = await asyncio.gather(*(
        services.datasets.add_images(actor, name, [IncomingFile(f"{k}.png", noise_png(k, 32))])
        for (actor, name), k in calls
    ))
    assert all(r.files[0].added for r in reports), [r.files[0] for r in reports if not r.files[0].added][:3]
    for actor, name in targets:
        info = await services.datasets.get(actor, name)
        assert info.image_count == 20
        assert sorted(i.index for i in info.images) == list(range(1, 21))  # positions unique and dense
    async with services.db.read() as session:
        assert (await session.execute(select(func.count(DatasetImage.id)))).scalar_one() == 200


async def test_the_same_image_added_concurrently_lands_once(services, alice) -> None:
    await services.datasets.create(alice, "race")
    data = noise_png(1)
    reports = await asyncio.gather(*(
        services.datasets.add_images(alice, "race", [IncomingFile(f"copy{i}.png", data)]) for i in range(12)))
    outcomes = Counter(r.files[0].status for r in reports)
    assert outcomes == {"added": 1, "refused": 11}
    assert all("Duplicate of #1" in r.files[0].reason for r in reports if not r.files[0].added)
    info = await services.datasets.get(alice, "race")
    assert info.image_count == 1
    assert await services.blobs.exists(info.images[0].blob_hash)


async def test_concurrent_creates_with_one_name_make_one_dataset(services, alice) -> None:
    results = await asyncio.gather(*(services.datasets.create(alice, n) for n in ["Dup", "dup", "DUP", "dUp"] * 3),
                                   return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))
    assert [d.name for d in await services.datasets.list(alice)] in (["Dup"], ["dup"], ["DUP"], ["dUp"])


async def test_concurrent_first_contact_creates_one_user(services) -> None:
    actors = await asyncio.gather(*(services.users.ensure("discord:31337", "Neo") for _ in range(20)))
    assert len({a.user_id for a in actors}) == 1
    async with services.db.read() as session:
        assert (await session.execute(
            select(func.count(User.id)).where(User.external_id == "discord:31337"))).scalar_one() == 1


async def test_concurrent_deletes_and_adds_leave_no_orphans(services, alice) -> None:
    # Removing images and adding the same pictures elsewhere at the same time: every referenced blob exists.
    await services.datasets.create(alice, "a")
    await services.datasets.create(alice, "b")
    files = [IncomingFile(f"{i}.png", noise_png(i, 32)) for i in range(8)]
    await services.datasets.add_images(alice, "a", files)
    await asyncio.gather(
        services.datasets.remove_images(alice, "a", list(range(1, 9))),
        *(services.datasets.add_images(alice, "b", [f]) for f in files),
    )
    info = await services.datasets.get(alice, "b")
    assert info.image_count == 8
    for img in info.images:
        assert await services.blobs.exists(img.blob_hash)
