"""TrainingConfig: presets, overrides, clear validation errors, step/time estimates; data bucketing and captions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image
from pydantic import ValidationError

from trainer.api import TrainItem
from trainer.config import TrainingConfig, estimate_seconds, validation_message
from trainer.data import (
    build_samples,
    caption_for,
    epoch_batches,
    make_buckets,
    nearest_bucket,
    steps_per_epoch,
    variant_count,
)
from trainer.presets import CATEGORIES, FAMILIES, preset_for


def test_config_module_does_not_import_torch():
    code = ("import sys; import trainer.config, trainer.presets; "
            "c = trainer.config.TrainingConfig.for_request('style', 'flux', 20, 'zx'); "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("category", CATEGORIES)
def test_every_preset_builds_a_valid_config(family, category):
    config = TrainingConfig.for_request(category, family, 20, "zx")
    preset = preset_for(family, category)
    assert (config.family, config.category, config.trigger) == (family, category, "zx")
    assert config.learning_rate == preset.learning_rate and config.rank == preset.rank
    # Repeats fill images × repeats × epochs up to the preset's sample target.
    assert abs(20 * config.repeats * config.epochs - preset.target_samples) <= 20 * config.epochs / 2 + 1
    assert config.train_text_encoder == (family == "sd15")  # SDXL: UNet-only, both encoders' outputs cached
    assert not (family == "flux" and config.shuffle_captions), "T5 reads natural language: never shuffle"
    assert config.sample_prompts and all("{trigger}" in p for p in config.sample_prompts)
    assert all("zx" in p for p in config.resolved_sample_prompts())
    assert config.lr_warmup_steps == round(preset.warmup_ratio * config.total_steps(20))


def test_repeats_follow_image_count_and_explicit_override_wins():
    few = TrainingConfig.for_request("character", "sdxl", 5, "zx")
    many = TrainingConfig.for_request("character", "sdxl", 40, "zx")
    assert few.repeats > many.repeats >= 1
    assert TrainingConfig.for_request("character", "sdxl", 5, "zx", repeats=3).repeats == 3
    config = TrainingConfig.for_request("character", "sd15", 10, "zx", epochs=4, repeats=5, batch_size=2)
    assert config.steps_per_epoch(10) == 25 and config.total_steps(10) == 100
    assert TrainingConfig.for_request("character", "sd15", 3, "zx", batch_size=2, repeats=1).steps_per_epoch(3) == 2


def test_overrides_and_derived_values():
    config = TrainingConfig.for_request(
        "style", "sd15", 12, "zx", learning_rate=3e-4, text_encoder_lr=5e-5, rank=8, alpha=4, use_dora=True,
        optimizer="adamw", lr_scheduler="cosine", lr_warmup_steps=10, min_snr_gamma=None, noise_offset=0.1,
        resolution=768, caption_dropout=0.1, keep_tokens=2, seed=9, mixed_precision="fp16",
        gradient_checkpointing=True, sample_every_n_epochs=2, save_every_n_epochs=3, epochs=10,
        sample_prompts=["{trigger} cat", "  "])
    assert config.effective_text_encoder_lr == 5e-5 and config.lr_warmup_steps == 10
    assert config.sample_prompts == ["{trigger} cat"]
    assert config.saved_epochs() == [3, 6, 9, 10] and config.sample_epochs() == [2, 4, 6, 8, 10]
    prodigy = TrainingConfig.for_request("object", "flux", 10, "zx", optimizer="prodigy")
    assert prodigy.learning_rate == 1.0, "Prodigy's lr is a multiplier; 1.0 is its documented default"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"rank": 0}, "rank"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"resolution": 500}, "resolution"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"lr_scheduler": "linear"}, "lr_scheduler"),
    ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"caption_dropout": 1.5}, "caption_dropout"),
    ({"epochs": 0}, "epochs"),
    ({"colour": "red"}, "colour"),
    ({"train_text_encoder": True}, "train_text_encoder"),
    ({"use_dora": True}, "use_dora"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ValueError) as info:
        TrainingConfig.for_request("character", "flux", 10, "zx", **overrides)
    text = validation_message(info.value) if isinstance(info.value, ValidationError) else str(info.value)
    assert text.startswith(field) or f"{field}:" in text, text


def test_bad_category_family_and_image_count():
    with pytest.raises(ValueError, match="category: unknown category 'portrait'"):
        TrainingConfig.for_request("portrait", "flux", 10, "zx")
    with pytest.raises(ValueError, match="family: unknown base family 'sd3'"):
        TrainingConfig.for_request("style", "sd3", 10, "zx")
    with pytest.raises(ValueError, match="image_count"):
        TrainingConfig.for_request("style", "flux", 0, "zx")


def test_resolution_error_suggests_a_value():
    with pytest.raises(ValidationError) as info:
        TrainingConfig.for_request("style", "sd15", 10, "zx", resolution=500)
    assert "multiple of 16" in validation_message(info.value) and "try 496" in validation_message(info.value)


def test_time_estimate_scales_sensibly():
    small = TrainingConfig.for_request("character", "flux", 10, "zx", repeats=5)
    big = TrainingConfig.for_request("character", "flux", 40, "zx", repeats=5)
    assert 0 < estimate_seconds("flux", small, 10) < estimate_seconds("flux", big, 40)
    assert estimate_seconds("flux", small, 10, device="cpu") > 10 * estimate_seconds("flux", small, 10)
    sd = TrainingConfig.for_request("character", "sd15", 10, "zx", repeats=5)
    assert estimate_seconds("sd15", sd, 10) < estimate_seconds("flux", small, 10)


def test_optional_optimizer_missing_is_a_clear_error():
    import importlib.util

    from trainer.optim import OptimizerUnavailable, check_optimizer_available

    config = TrainingConfig.for_request("style", "sdxl", 10, "zx", optimizer="adamw8bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(OptimizerUnavailable, match="bitsandbytes.*optimizer='adamw'"):
            check_optimizer_available(config)
    else:
        check_optimizer_available(config)


# ---------------------------------------------------------------------------------------------- data
def test_buckets_cover_aspect_ratios_within_budget():
    buckets = make_buckets(1024, 64, 2.0)
    assert (1024, 1024) in buckets and (768, 1344) in buckets and (1344, 768) in buckets
    assert all(w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(max(w / h, h / w) <= 2.0 for w, h in buckets)
    assert nearest_bucket((1920, 1080), buckets) == (1344, 768)
    assert nearest_bucket((500, 500), buckets) == (1024, 1024)


def _items(tmp_path, sizes, caption="a, b, c, d"):
    items = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (i * 40, 90, 120)).save(path)
        items.append(TrainItem(path, caption))
    return items


def test_samples_get_buckets_and_batches_never_mix_them(tmp_path):
    config = TrainingConfig.for_request("character", "sd15", 5, "zx", resolution=64, bucket_step=16,
                                        repeats=2, batch_size=2, epochs=2)
    samples = build_samples(_items(tmp_path, [(64, 64), (64, 64), (128, 64), (130, 64), (64, 128)]), config)
    assert [s.bucket for s in samples] == [(64, 64), (64, 64), (80, 48), (80, 48), (48, 80)]
    assert samples[2].crop == (0, 8) and samples[3].original_size == (130, 64)
    batches = epoch_batches(samples, config, 1)
    assert all(len({samples[s.sample].bucket for s in b}) == 1 for b in batches)
    assert sorted(s.sample for b in batches for s in b) == sorted([0, 1, 2, 3, 4] * 2)
    assert len(batches) == steps_per_epoch(samples, config) == 2 + 2 + 1
    assert epoch_batches(samples, config, 1) == batches, "deterministic for a seed and epoch"
    assert epoch_batches(samples, config, 2) != batches


def test_captions_trigger_shuffle_keep_tokens_and_dropout(tmp_path):
    config = TrainingConfig.for_request("character", "sd15", 1, "zx", resolution=64, shuffle_captions=True,
                                        keep_tokens=1, caption_dropout=0.5, repeats=20, epochs=2)
    sample = build_samples(_items(tmp_path, [(64, 64)]), config)[0]
    variants = {caption_for(sample, config, v) for v in range(variant_count(config))}
    assert variant_count(config) == 40, "a trained text encoder gets a fresh shuffle every time"
    assert all(v.startswith("zx, ") and sorted(v.split(", ")[1:]) == ["a", "b", "c", "d"] for v in variants)
    assert len(variants) > 5
    frozen = config.model_copy(update={"train_text_encoder": False})
    assert variant_count(frozen) == frozen.shuffle_variants == 8, "cached embeddings: a bounded set of variants"
    slots = [s for b in epoch_batches([sample], config, 1) for s in b]
    dropped = sum(s.drop_caption for s in slots)
    assert 3 <= dropped <= 17
    plain = config.model_copy(update={"shuffle_captions": False})
    assert caption_for(sample, plain, 3) == "zx, a, b, c, d"
    already = build_samples(_items(tmp_path, [(64, 64)], caption="photo of ZX"), plain)[0]
    assert caption_for(already, plain, 0) == "photo of ZX", "the trigger is not added twice"


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"nope")
    config = TrainingConfig.for_request("style", "sd15", 1, "zx", resolution=64)
    with pytest.raises(ValueError, match="broken.png"):
        build_samples([TrainItem(bad, "")], config)
