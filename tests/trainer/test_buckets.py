"""Buckets that never enlarge an image past ``bucket_max_upscale``, multi-resolution training (Flux by default)
and the resolution-dependent Flux shift, which must equal the one FluxPipeline applies at inference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from trainer.api import TrainItem
from trainer.config import TrainingConfig
from trainer.data import build_samples, epoch_batches, total_steps, training_resolutions, upscale_needed


def _items(tmp_path, sizes):
    items = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (i * 40, 90, 120)).save(path)
        items.append(TrainItem(path, "a, b"))
    return items


def test_small_images_train_in_their_own_smaller_bucket(tmp_path):
    config = TrainingConfig.for_request("character", "sd15", 3, "zx", resolution=64, bucket_step=16)
    samples = build_samples(_items(tmp_path, [(64, 64), (32, 32), (48, 40)]), config)
    assert [s.bucket for s in samples] == [(64, 64), (32, 32), (48, 32)]
    assert all(upscale_needed(s.original_size, s.bucket) <= 1.0 for s in samples), "never enlarged"
    # Allowing 2× enlargement puts the 32 px image back into the full-size bucket (the old behaviour).
    lenient = config.model_copy(update={"bucket_max_upscale": 2.0})
    assert [s.bucket for s in build_samples(_items(tmp_path, [(32, 32)]), lenient)] == [(64, 64)]


def test_flux_trains_at_three_resolutions_without_extra_steps(tmp_path):
    config = TrainingConfig.for_request("character", "flux", 3, "zx", resolution=1024, repeats=3, epochs=2)
    assert training_resolutions(config) == [512, 768, 1024]
    assert TrainingConfig.for_request("character", "sdxl", 3, "zx").resolution_scales == [1.0], "SDXL: opt-in"
    samples = build_samples(_items(tmp_path, [(1024, 1024), (800, 800), (600, 400)]), config)
    per_image = {}
    for s in samples:
        per_image.setdefault(s.image, []).append(s.bucket)
    assert per_image[0] == [(512, 512), (768, 768), (1024, 1024)]
    assert per_image[1] == [(512, 512), (768, 768)], "an 800 px image is never enlarged to 1024"
    assert len(per_image[2]) == 1 and upscale_needed((600, 400), per_image[2][0]) <= 1.0
    for epoch in (1, 2):
        slots = [sl for b in epoch_batches(samples, config, epoch) for sl in b]
        used = [samples[sl.sample] for sl in slots]
        assert sorted(s.image for s in used) == [0, 0, 0, 1, 1, 1, 2, 2, 2], "repeats per image, not per size"
        assert {s.bucket for s in used if s.image == 0} == set(per_image[0]), "each resolution in turn"
    assert total_steps(samples, config) == 2 * 9


@pytest.mark.parametrize("side", [256, 512, 768, 1024])
def test_flux_shift_matches_the_pipeline_at_every_resolution(side):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from trainer.families.flux import FluxFamily

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                            max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    config = TrainingConfig.for_request("character", "flux", 1, "zx")
    family = FluxFamily(SimpleNamespace(scheduler=sched), config, None)
    latent = side // 8
    shift = family.shift_for(latent, latent)
    if side == 1024:
        assert shift == pytest.approx(3.1582, abs=1e-3), "kohya's fixed value is the 1024² case"
    # What the pipeline does at inference for this image size: μ from the packed sequence length, then the
    # scheduler's exponential time shift of its sigmas.
    sigmas = np.linspace(1.0, 1 / 20, 20)
    sched.set_timesteps(sigmas=sigmas, mu=calculate_shift((latent // 2) ** 2))
    ours = shift * sigmas / (1 + (shift - 1) * sigmas)
    np.testing.assert_allclose(sched.sigmas[:-1].numpy(), ours, rtol=1e-5)
    fixed = FluxFamily(SimpleNamespace(scheduler=sched), config.model_copy(update={"flux_shift": 2.0}), None)
    assert fixed.shift_for(latent, latent) == 2.0 and not math.isclose(shift, 2.0)
