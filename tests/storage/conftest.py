"""Storage test helpers: actors, datasets with real images, READY Elements with real blobs."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from storage.actors import Actor
from storage.dataset_views import AddReport, IncomingFile
from storage.db.models import Visibility
from storage.element_views import ElementInfo
from storage.services import Services
from tests.conftest import noise_png


@pytest.fixture
async def alice(services: Services) -> Actor:
    return await services.users.ensure("discord:1001", "Alice", guild_id="g1")


@pytest.fixture
async def bob(services: Services) -> Actor:
    return await services.users.ensure("discord:1002", "Bob", guild_id="g1")


async def add_seeds(services: Services, actor: Actor, dataset: str, seeds: Sequence[int], *,
                    captions: bool = False) -> AddReport:
    files = [IncomingFile(f"img{s}.png", noise_png(s), f"caption {s}" if captions else None) for s in seeds]
    return await services.datasets.add_images(actor, dataset, files)


def _random_safetensors() -> bytes:
    """A real (tiny) .safetensors file of random weights, as kohya exports are."""
    import numpy as np
    from safetensors.numpy import save

    weights = np.frombuffer(os.urandom(128), dtype=np.float16).reshape(8, 8)
    return save({"lora_unet_x.lora_down.weight": weights}, metadata={"ss_network_dim": "8"})


async def ready_element(services: Services, actor: Actor, name: str, trigger: str, *,
                        base_model: str = "flux-dev", dataset: str | None = None,
                        visibility: Visibility = Visibility.PRIVATE, guild_id: str | None = None,
                        strength: float = 0.8) -> ElementInfo:
    """Reserve + finish an Element the way the job side does, with real (random) weight blobs."""
    async with services.db.transaction() as session:
        dataset_id, manifest = None, []
        if dataset is not None:
            ds = await services.datasets.load_owned(session, actor, dataset)
            dataset_id, manifest = ds.id, await services.datasets.manifest(session, ds.id)
        element = await services.elements.reserve(
            session, actor, name=name, trigger=trigger, category="style", base_model=base_model,
            dataset_id=dataset_id, manifest=manifest, config={"rank": 16}, description=f"{name} test",
        )
        element_id = element.id
    weights = await services.blobs.put_bytes(os.urandom(256))
    kohya = await services.blobs.put_bytes(_random_safetensors())
    meta = await services.blobs.put_bytes(b'{"name": "%s"}' % name.encode())
    grid = await services.blobs.put_bytes(os.urandom(64))
    async with services.db.transaction() as session:
        await services.elements.finish(session, element_id, weights_blob=weights, kohya_blob=kohya,
                                       metadata_blob=meta, artifacts={"grid": grid, "samples": {"1": [grid]}},
                                       recommended_strength=strength)
    if visibility != Visibility.PRIVATE:
        await services.elements.share(actor, f"#{element_id}", visibility, guild_id)
    return await services.elements.get(actor, f"#{element_id}")
