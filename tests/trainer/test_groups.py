"""Multi-concept datasets in the trainer: each image group gets its own trigger after the Element's and its own
repeats (balanced steps), and after training each group's trigger pulls generations toward its own group."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from trainer.api import GenerationRequest, LoraRef
from trainer.config import GroupSpec, TrainingConfig
from trainer.data import build_samples, caption_for, epoch_batches
from trainer.generate import Generator
from trainer.synthetic import make_dataset
from trainer.train import train_lora

from .conftest import tiny_ref
from .helpers_train import single_thread  # noqa: F401


def mean_rgb(images) -> np.ndarray:
    return np.stack([np.asarray(img.convert("RGB"), dtype=np.float64) for img in images]).mean(axis=(0, 1, 2))


def test_group_trigger_follows_element_trigger_and_repeats_balance(tmp_path):
    a = [replace(i, group="teal") for i in make_dataset(tmp_path / "a", count=2, scheme="orange-on-teal")]
    b = [replace(i, group="lime") for i in make_dataset(tmp_path / "b", count=4, scheme="magenta-on-lime")]
    config = TrainingConfig.for_request(
        "character", "sd15", 6, "zxq", resolution=64, epochs=10,
        groups=[{"name": "teal", "trigger": "zqa", "images": 2}, {"name": "lime", "trigger": "zqb", "images": 4}])
    assert config.repeats_for("teal") == 2 * config.repeats_for("lime"), "equal share of steps per group"
    samples = build_samples(a + b, config)
    assert caption_for(samples[0], config.model_copy(update={"shuffle_captions": False}), 0) == "zxq, zqa, shapes"
    shuffled = {caption_for(samples[-1], config, v) for v in range(5)}
    assert all(c.startswith("zxq, zqb") for c in shuffled), "the group trigger is never shuffled away"
    slots = [sl for bt in epoch_batches(samples, config, 1) for sl in bt]
    per_group = {g: sum(1 for sl in slots if samples[sl.sample].group == g) for g in ("teal", "lime")}
    assert per_group["teal"] == per_group["lime"] == config.steps_per_epoch(6) // 2
    with pytest.raises(ValueError, match="group names must be unique"):
        TrainingConfig.for_request("character", "sd15", 2, "zxq", groups=[GroupSpec(name="x"), GroupSpec(name="X")])


@pytest.mark.slow
def test_each_group_trigger_pulls_toward_its_own_group(tmp_path, models_dir, single_thread):  # noqa: F811
    teal = [replace(i, group="teal") for i in make_dataset(tmp_path / "a", count=5, scheme="orange-on-teal",
                                                            seed=3)]
    lime = [replace(i, group="lime") for i in make_dataset(tmp_path / "b", count=5, scheme="magenta-on-lime",
                                                            seed=4)]
    config = TrainingConfig(
        family="sd15", category="character", trigger="zxq", epochs=4, repeats=6, learning_rate=2e-3, rank=8,
        alpha=8, resolution=64, bucketing=False, mixed_precision="no", device="cpu", seed=0, sample_prompts=[],
        grid=False, save_every_n_epochs=4, save_precision="fp32",
        groups=[GroupSpec(name="teal", trigger="teal", repeats=6, images=5),
                GroupSpec(name="lime", trigger="magenta", repeats=6, images=5)])
    result = train_lora(config, tiny_ref("sd15"), teal + lime, tmp_path / "run", models_dir=models_dir)
    with safe_open(str(result.lora_kohya), framework="pt") as f:  # one kohya "<repeats>_<name>" folder per group
        meta = f.metadata()
    assert json.loads(meta["ss_dataset_dirs"]) == {"6_teal": {"n_repeats": 6, "img_count": 5},
                                                   "6_lime": {"n_repeats": 6, "img_count": 5}}
    assert json.loads(meta["ss_tag_frequency"])["6_lime"] == {"zxq": 5, "magenta": 5, "shapes": 5}
    target = {"teal": mean_rgb([Image.open(i.image_path) for i in teal]),
              "lime": mean_rgb([Image.open(i.image_path) for i in lime])}
    gen = Generator(models_dir, device="cpu")
    made = {}
    for group, word in (("teal", "teal"), ("lime", "magenta")):
        lora = LoraRef(key="groups", path=result.lora_diffusers, trigger=f"zxq, {word}", strength=1.0)
        res = gen.generate(tiny_ref("sd15"), GenerationRequest(prompt="shapes", loras=[lora], seed=100, steps=6,
                                                               width=64, height=64, count=4))
        assert res.prompt.startswith(f"zxq, {word}")
        made[group] = mean_rgb(res.images)
    gen.close()
    dist = {(g, t): float(np.linalg.norm(made[g] - target[t])) for g in made for t in target}
    assert dist[("teal", "teal")] < dist[("teal", "lime")], dist
    assert dist[("lime", "lime")] < dist[("lime", "teal")], dist
    # ...and each trigger lands nearer its own group than the other trigger does.
    assert dist[("teal", "teal")] < dist[("lime", "teal")] and dist[("lime", "lime")] < dist[("teal", "lime")], dist
