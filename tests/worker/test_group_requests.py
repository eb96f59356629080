"""Multi-concept datasets through the job use cases (real database and Redis): the dataset's groups become the
training config's groups, and ``Name@group`` in a generation inserts that group's trigger; strengths outside the
Element's swept range warn."""

from __future__ import annotations

import pytest

from storage.db.models import Element
from storage.errors import InvalidInput
from tests.storage.conftest import ready_element


async def test_groups_reach_training_and_generation(services, actor, make_dataset) -> None:
    await make_dataset(actor, "duo", count=12)
    await services.datasets.set_group(actor, "duo", "red", [1, 2, 3, 4], trigger="red dress")
    await services.datasets.set_group(actor, "duo", "blue", list(range(5, 13)), trigger="blue coat")
    job = await services.jobs.request_training(actor, dataset="duo", name="Duo", category="character",
                                               base_model="tiny-sd15", trigger="zqxduo", overrides={"epochs": 5})
    assert {g["name"]: g["trigger"] for g in job.payload["config"]["groups"]} == {"red": "red dress",
                                                                                 "blue": "blue coat"}
    assert sorted(m.get("group", "") for m in job.payload["manifest"]) == ["blue"] * 8 + ["red"] * 4

    element = await ready_element(services, actor, "Pair", "zqxpair", base_model="tiny-sd15")
    async with services.db.transaction() as session:  # what training stores: the config with its groups
        row = await session.get(Element, element.id)
        row.training_config = dict(job.payload["config"])
        row.strength_min, row.strength_max = 0.4, 0.9
    choices = await services.elements.autocomplete(actor, "pai", with_groups=True)
    assert [v for _, v in choices] == ["Pair", "Pair@red", "Pair@blue"]
    assert [v for _, v in await services.elements.autocomplete(actor, "pair@bl", with_groups=True)] == ["Pair@blue"]
    assert [v for _, v in await services.elements.autocomplete(actor, "pai")] == ["Pair"]
    gen = await services.jobs.request_generation(actor, prompt="walking", elements=[("Pair@blue", None)])
    [used] = gen.payload["elements"]
    assert used["trigger"] == "zqxpair, blue coat" and used["group"] == "blue"
    assert gen.payload["warnings"] == []
    high = await services.jobs.request_generation(actor, prompt="walking", elements=[("Pair@RED", 1.0)])
    assert high.payload["elements"][0]["trigger"] == "zqxpair, red dress"
    assert any("outside its recommended range 0.4–0.9" in w for w in high.payload["warnings"])
    with pytest.raises(InvalidInput, match="no image group “green”.*@red"):
        await services.jobs.request_generation(actor, prompt="walking", elements=[("Pair@green", None)])
