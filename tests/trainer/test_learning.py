"""A trained Element really moves generations toward its dataset, more so at higher strength.

tiny-sd15 trained on one distinctive colour scheme, then the same prompt and seeds generated at strengths
0 → 0.5 → 1.0. Measured two ways, each must fall monotonically with a margin:
- latent space: distance between per-channel mean/std of the generated latents and of the dataset's encoded latents;
- pixels: distance between the mean RGB colour of the generated images and of the dataset.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.api import GenerationRequest, LoraRef
from trainer.config import TrainingConfig
from trainer.generate import Generator
from trainer.train import train_lora

from .conftest import tiny_ref

pytestmark = pytest.mark.slow  # trains an Element long enough to measure that it learned

STRENGTHS = (0.0, 0.5, 1.0)
SEED, COUNT, STEPS = 100, 4, 6


def learning_config(**overrides) -> TrainingConfig:
    """A short, seeded tiny-sd15 run (≈240 steps at 64 px) that is enough to learn a colour scheme."""
    values = dict(family="sd15", category="style", trigger="zxq", epochs=4, repeats=6, batch_size=1,
                  learning_rate=2e-3, rank=8, alpha=8, resolution=64, bucketing=False, mixed_precision="no",
                  device="cpu", seed=0, sample_prompts=[], grid=False, save_every_n_epochs=4,
                  lr_scheduler="constant", save_precision="fp32")
    return TrainingConfig(**{**values, **overrides})


def channel_stats(latents: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and std over images and positions: an 8-vector for 4-channel latents."""
    flat = latents.float().transpose(0, 1).reshape(latents.shape[1], -1)
    return torch.cat([flat.mean(1), flat.std(1)])


def mean_rgb(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(img.convert("RGB"), dtype=np.float64) for img in images]).mean(axis=(0, 1, 2))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("learning")
    from trainer.synthetic import make_dataset

    items = make_dataset(root / "data", count=10, scheme="orange-on-teal", size=64, seed=3, caption="shapes")
    result = train_lora(learning_config(), tiny_ref("sd15"), items, root / "run", models_dir=models_dir)
    return items, result


def test_element_moves_generations_toward_dataset(trained, models_dir):
    items, result = trained
    base = tiny_ref("sd15")
    gen = Generator(models_dir, device="cpu")
    pipe = gen.pipeline(base).pipe
    with torch.no_grad():
        data = torch.stack([torch.from_numpy(np.asarray(Image.open(i.image_path).convert("RGB"), dtype=np.float32))
                            for i in items]).permute(0, 3, 1, 2) / 127.5 - 1
        data_latents = pipe.vae.encode(data).latent_dist.mean * pipe.vae.config.scaling_factor
    data_stats, data_rgb = channel_stats(data_latents), mean_rgb([Image.open(i.image_path) for i in items])

    latent_dist, pixel_dist = [], []
    for strength in STRENGTHS:
        lora = LoraRef(key="learned", path=result.lora_diffusers, trigger="zxq", strength=strength)
        res = gen.generate(base, GenerationRequest(prompt="shapes", loras=[lora], seed=SEED, steps=STEPS,
                                                   width=64, height=64, count=COUNT))
        # Same prompt, seeds and active adapter straight from the resident pipeline, stopping before the VAE.
        latents = pipe(prompt=res.prompt, num_inference_steps=STEPS, guidance_scale=1.0, width=64, height=64,
                       num_images_per_prompt=COUNT, output_type="latent",
                       generator=[torch.Generator().manual_seed(s) for s in res.seeds]).images
        latent_dist.append(float((channel_stats(latents) - data_stats).norm()))
        pixel_dist.append(float(np.linalg.norm(mean_rgb(res.images) - data_rgb)))
    gen.close()

    report = f"latent stats distance {latent_dist}, mean-colour distance {pixel_dist}"
    assert latent_dist[0] - latent_dist[1] > 0.1 * latent_dist[0], report
    assert latent_dist[1] - latent_dist[2] > 0.05 * latent_dist[0], report
    assert pixel_dist[0] - pixel_dist[1] > 0.1 * pixel_dist[0], report
    assert pixel_dist[1] - pixel_dist[2] > 0.05 * pixel_dist[0], report
    assert pixel_dist[2] < 0.6 * pixel_dist[0], report


def test_strength_sweep_recommends_a_range_around_what_works(trained):
    """The sweep after training scored strengths 0…1.2 against the dataset and stored a range whose midpoint is the
    default strength; inside the range generations are nearer the dataset than the base alone."""
    import json

    _, result = trained
    element = json.loads(result.element_json.read_text())
    sweep = element["strength_sweep"]
    assert sweep["strengths"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    lo, hi = result.strength_range
    assert element["strength_range"] == [lo, hi] and 0.2 <= lo <= hi <= 1.2, sweep
    assert result.recommended_strength == element["recommended_strength"] == pytest.approx((lo + hi) / 2, abs=0.05)
    inside = [i for i, s in enumerate(sweep["strengths"]) if lo <= s <= hi]
    assert all(sweep["image_distance"][i] < sweep["image_distance"][0] for i in inside), sweep
    assert all(sweep["denoise_loss"][i] < sweep["denoise_loss"][0] for i in inside), sweep
