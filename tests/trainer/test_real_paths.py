"""Paths the real base models take that the tiny defaults alone would not exercise: Flux-dev's guidance embedding,
ε-prediction SD1.5, VAE scaling/shift factors other than 1/0, Schnell's generation defaults, VAE tiling for the
hi-res pass and the SD1.5 safety checker."""

from __future__ import annotations

import pytest
import torch

from trainer.api import BaseModelRef, GenerationRequest
from trainer.families import Runtime, family_class
from trainer.loading import load_pipeline
from trainer.prompting import DEFAULTS, MAX_SEQUENCE_LENGTH, size_class

from .conftest import tiny_ref
from .helpers_train import fast_config

CPU = Runtime(torch.device("cpu"), torch.float32, False)


def test_tiny_flux_has_flux_devs_guidance_embedding_and_training_feeds_it(models_dir) -> None:
    pipe = load_pipeline(tiny_ref("flux"), models_dir, device="cpu", dtype=torch.float32)
    transformer = pipe.transformer
    assert transformer.config.guidance_embeds
    family = family_class("flux")(pipe, fast_config("flux", 2, flux_guidance=1.0), CPU)
    seen = []
    hook = transformer.time_text_embed.guidance_embedder.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        from trainer.families.base import Batch

        text = family.encode_text(["a cat"])
        batch = Batch(latent_mean=torch.zeros(1, 4, 8, 8), latent_std=torch.ones(1, 4, 8, 8), text=text,
                      captions=["a cat"])
        loss = family.loss(batch, text, torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert torch.isfinite(loss) and seen, "the guidance embedder must run in training"


def test_epsilon_prediction_sd15_targets_the_noise(models_dir) -> None:
    """Real SD1.5 is ε-prediction (the tiny one is v-prediction): the loss target must be the noise."""
    from diffusers import EulerDiscreteScheduler

    from trainer.families.base import Batch

    pipe = load_pipeline(tiny_ref("sd15"), models_dir, device="cpu", dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon",
                                                        rescale_betas_zero_snr=False)
    family = family_class("sd15")(pipe, fast_config("sd15", 2, min_snr_gamma=5.0, noise_offset=0.0), CPU)
    assert family.prediction_type == "epsilon"
    text = family.encode_text(["a cat"])
    batch = Batch(latent_mean=torch.zeros(1, 4, 8, 8), latent_std=torch.zeros(1, 4, 8, 8), text=text,
                  captions=["a cat"])
    captured = {}

    def capture(module, args, kwargs, output):
        captured["pred"] = output[0]
        return (torch.zeros_like(output[0]),)  # predicted noise 0 → loss = mean(weight · noise²)

    handle = family.denoiser.register_forward_hook(capture, with_kwargs=True)
    try:
        loss = family.loss(batch, text, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn((1, 4, 8, 8), generator=gen)  # the same draw order as the loss: latents' ε, then noise
    noise = torch.randn((1, 4, 8, 8), generator=gen)
    t = (torch.rand((1,), generator=gen) * 1000).long()
    from diffusers.training_utils import compute_snr

    snr = compute_snr(family.noise_scheduler, t)
    weight = torch.clamp(snr, max=5.0) / snr
    torch.testing.assert_close(loss, (weight * noise.pow(2).mean()).squeeze(), rtol=1e-4, atol=1e-6)


def test_vae_scale_and_shift_round_trip_like_the_pipeline(models_dir) -> None:
    """Flux's VAE has scaling 0.3611 and shift 0.1159: caching must encode as (z − shift)·scale, the inverse of
    what FluxPipeline does before decoding (z / scale + shift)."""
    pipe = load_pipeline(tiny_ref("flux"), models_dir, device="cpu", dtype=torch.float32)
    pipe.vae.register_to_config(scaling_factor=0.3611, shift_factor=0.1159)
    family = family_class("flux")(pipe, fast_config("flux", 2), CPU)
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    mean, std = family.encode_images(pixels)
    raw = pipe.vae.encode(pixels).latent_dist
    torch.testing.assert_close(mean / 0.3611 + 0.1159, raw.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(std, raw.std * 0.3611, rtol=1e-4, atol=1e-6)


def test_schnell_gets_its_own_generation_defaults() -> None:
    cls = size_class("flux", "black-forest-labs/FLUX.1-schnell")
    assert cls == "flux-schnell" and size_class("flux", "/models/custom", arch="flux-schnell") == cls
    assert DEFAULTS[cls] == (4, 0.0) and MAX_SEQUENCE_LENGTH[cls] == 256
    assert size_class("flux", "black-forest-labs/FLUX.1-dev") == "flux" and DEFAULTS["flux"] == (28, 3.5)


@pytest.mark.slow  # runs the pipeline twice
def test_hires_pass_tiles_the_vae(models_dir) -> None:
    from trainer.generate import Generator

    gen = Generator(models_dir, device="cpu")
    try:
        base = BaseModelRef(name="tiny-sd15", family="sd15", source="builtin:tiny-sd15")
        result = gen.generate(base, GenerationRequest(prompt="a cat", width=64, height=64, steps=2, seed=1,
                                                      hires=True))
        assert (result.width, result.height) == (128, 128)
        assert gen.pipeline(base).pipe.vae.use_tiling
    finally:
        gen.close()


def test_sd15_safety_checker_is_not_loaded(models_dir, tiny_model_path) -> None:
    """A checkpoint that ships a safety checker loads without it (no silent black images, no 1.2 GB model)."""
    import json

    folder = tiny_model_path("sd15")
    index = json.loads((folder / "model_index.json").read_text())
    assert index.get("safety_checker") in (None, [None, None])
    pipe = load_pipeline(tiny_ref("sd15"), models_dir, device="cpu", dtype=torch.float32)
    assert pipe.safety_checker is None and not pipe.config.requires_safety_checker
