"""Multi-concept datasets against a real database: named image groups with their own trigger and repeats, kohya
``N_name/`` zip folders, the groups in the frozen manifest and in the training confirmation (the training
request and ``Name@group`` generation: tests/worker/test_group_requests.py)."""

from __future__ import annotations

import io
import zipfile

import pytest

from storage.errors import InvalidInput, NotFound
from storage.training_preview import preview_training
from tests.conftest import noise_png
from tests.storage.conftest import add_seeds


async def test_set_move_and_remove_groups(services, alice) -> None:
    await services.datasets.create(alice, "chars")
    await add_seeds(services, alice, "chars", [1, 2, 3, 4, 5])
    red = await services.datasets.set_group(alice, "chars", "Outfit red", [1, 2], trigger="red dress")
    assert (red.name, red.trigger, red.repeats, red.image_count) == ("Outfit-red", "red dress", None, 2)
    blue = await services.datasets.set_group(alice, "chars", "blue", [2, 3, 4], trigger="blue coat", repeats=7)
    assert (blue.image_count, blue.repeats) == (3, 7)
    info = await services.datasets.get(alice, "chars")
    assert [i.group for i in info.images] == ["Outfit-red", "blue", "blue", "blue", ""], "#2 moved to blue"
    assert {g.name: g.image_count for g in info.groups} == {"blue": 3, "Outfit-red": 1}
    again = await services.datasets.set_group(alice, "chars", "BLUE", [], auto_repeats=True)
    assert (again.name, again.trigger, again.repeats) == ("blue", "blue coat", None), "case-insensitive; balanced"
    async with services.db.read() as session:
        ds = await services.datasets.load_owned(session, alice, "chars")
        manifest = await services.datasets.manifest(session, ds.id)
    assert [m.get("group", "") for m in manifest] == ["Outfit-red", "blue", "blue", "blue", ""]

    with pytest.raises(InvalidInput, match="no image #9"):
        await services.datasets.set_group(alice, "chars", "blue", [5, 9])
    assert (await services.datasets.get(alice, "chars")).images[4].group == "", "all or nothing"
    for bad in ("", "a/b", "x" * 41):
        with pytest.raises(InvalidInput):
            await services.datasets.set_group(alice, "chars", bad, [1])
    with pytest.raises(InvalidInput, match="between 1 and"):
        await services.datasets.set_group(alice, "chars", "blue", [], repeats=0)
    removed = await services.datasets.remove_group(alice, "chars", "blue")
    assert removed.image_count == 3
    info = await services.datasets.get(alice, "chars")
    assert [g.name for g in info.groups] == ["Outfit-red"] and [i.group for i in info.images].count("") == 4
    with pytest.raises(NotFound):
        await services.datasets.remove_group(alice, "chars", "blue")


async def test_zip_import_reads_kohya_repeat_folders(services, alice) -> None:
    await services.datasets.create(alice, "kohya")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train/10_zqx red/a.png", noise_png(1))
        zf.writestr("train/10_zqx red/a.txt", "standing")
        zf.writestr("train/10_zqx red/b.png", noise_png(2))
        zf.writestr("train/4_zqx blue/c.png", noise_png(3))
        zf.writestr("loose.png", noise_png(4))
    report = await services.datasets.import_zip(alice, "kohya", buf.getvalue())
    assert len(report.added) == 4
    info = await services.datasets.get(alice, "kohya")
    groups = {g.name: (g.trigger, g.repeats, g.image_count) for g in info.groups}
    assert groups == {"zqx-red": ("zqx red", 10, 2), "zqx-blue": ("zqx blue", 4, 1)}
    assert sorted(i.group for i in info.images) == ["", "zqx-blue", "zqx-red", "zqx-red"]
    assert next(i for i in info.images if i.caption == "standing").group == "zqx-red"


async def test_confirmation_lists_groups_with_balanced_steps(services, alice) -> None:
    await services.datasets.create(alice, "duo")
    await add_seeds(services, alice, "duo", list(range(1, 13)))
    await services.datasets.set_group(alice, "duo", "red", [1, 2, 3, 4], trigger="red dress")
    await services.datasets.set_group(alice, "duo", "blue", list(range(5, 13)), trigger="blue coat")
    preview = await preview_training(services, alice, dataset="duo", name="Duo", category="character",
                                     base_model="tiny-sd15", trigger="zqxduo", overrides={"epochs": 5})
    steps = {g.name: (g.images, g.repeats, g.steps) for g in preview.groups}
    assert steps["red"][0] == 4 and steps["blue"][0] == 8
    assert steps["red"][2] == steps["blue"][2], "balanced: each group gets the same number of steps"
    assert sum(s for _, _, s in steps.values()) == preview.total_steps
