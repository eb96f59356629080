"""Each family trains end to end on its tiny base; both export formats load into a fresh pipeline and change it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from trainer.checkpoint import latest_checkpoint
from trainer.loading import load_pipeline
from trainer.lora_io import load_lora_into
from trainer.train import run_fingerprint, train_lora

from .conftest import tiny_ref
from .helpers_train import expected_deltas, fast_config, generate, lora_deltas, single_thread  # noqa: F401

pytestmark = pytest.mark.slow  # trains every family end to end

FAMILIES = ["sd15", "sdxl", "flux"]


@pytest.fixture(scope="module")
def trained(models_dir, tmp_path_factory, single_thread):  # noqa: F811
    """family → (config, items, result, progress events); each family trained once for the module."""
    from trainer.synthetic import make_dataset

    runs = {}

    def run(family):
        if family not in runs:
            root = tmp_path_factory.mktemp(f"train-{family}")
            items = make_dataset(root / "data", count=4, size=64, caption="shapes, teal background")
            config = fast_config(family, len(items))
            events = []
            result = train_lora(config, tiny_ref(family), items, root / "out", models_dir=models_dir,
                                on_progress=events.append, element_name="Teal Shapes", category="style")
            runs[family] = (config, items, result, events)
        return runs[family]

    return run


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_and_writes_every_output(family, trained):
    config, items, result, events = trained(family)
    steps = [e for e in events if e.phase == "training"]
    assert [e.step for e in steps] == list(range(1, result.steps + 1))
    assert result.steps == config.total_steps(len(items)) == 8
    assert all(math.isfinite(e.loss) and e.lr > 0 and e.eta_seconds >= 0 for e in steps)
    assert steps[-1].eta_seconds == 0 and steps[-1].epoch == 2
    assert [e.phase for e in events][:2] == ["loading", "caching"] and events[-1].phase == "done"
    assert any(e.phase == "sampling" and e.sample_paths for e in events)

    assert sorted(result.epoch_weights) == [1, 2] and all(p.exists() for p in result.epoch_weights.values())
    assert sorted(result.samples) == [2]
    sample = Image.open(result.samples[2][0])
    assert sample.size == (64, 64)
    grid = Image.open(result.grid_png)
    assert grid.width > 2 * 128 and grid.height > 2 * 128  # 2 epochs × 2 strengths, labelled
    assert Image.open(result.loss_curve_png).size == (720, 360)

    element = json.loads(result.element_json.read_text())
    assert element["name"] == "Teal Shapes" and element["trigger"] == "ohwx" and element["family"] == family
    assert element["category"] == "style" and element["base_model"]["source"] == f"builtin:tiny-{family}"
    assert element["sample_prompts"] == ["ohwx shapes"]
    swept = element["strength_range"]  # the post-training sweep's range; its midpoint is the default strength
    assert element["recommended_strength"] == (round(round(sum(swept) / 2 / 0.05) * 0.05, 2) if swept else 1.0)
    assert element["strength_sweep"]["strengths"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    assert element["config"]["rank"] == config.rank and element["training"]["steps"] == 8
    if not torch.cuda.is_available():
        assert any("fp32" in n for n in element["notes"])  # bf16 requested, CPU fell back with a note
    assert result.lora_diffusers.name == "Teal_Shapes.safetensors"


@pytest.mark.parametrize("family", FAMILIES)
def test_exports_load_into_a_fresh_pipeline_and_change_it(family, trained, models_dir):
    config, items, result, _ = trained(family)
    base = load_pipeline(tiny_ref(family), models_dir, device="cpu")
    before = generate(base)

    images, deltas = {}, {}
    for fmt, path in (("diffusers", result.lora_diffusers), ("kohya", result.lora_kohya)):
        pipe = load_pipeline(tiny_ref(family), models_dir, device="cpu")
        assert load_lora_into(pipe, path, "element") > 0
        images[fmt] = generate(pipe)
        deltas[fmt] = lora_deltas(pipe, "element")
        assert np.abs(images[fmt] - before).mean() > 1e-4, f"{fmt} LoRA did not change the output"

    # The diffusers file carries exactly what was trained (alpha/rank scale included)...
    ckpt = latest_checkpoint(result.out_dir, run_fingerprint(config, tiny_ref(family), items))
    want = expected_deltas(ckpt.lora, config.alpha, config.rank)
    assert set(deltas["diffusers"]) == set(want)
    for name, delta in want.items():
        np.testing.assert_allclose(deltas["diffusers"][name], delta, rtol=1e-4, atol=1e-7)
    # ...and the kohya file the same (Flux: minus single-block linear1, not FLUX.1 widths in the tiny model).
    for name, delta in deltas["kohya"].items():
        np.testing.assert_allclose(delta, want[name], rtol=1e-4, atol=1e-7)
    if family == "flux":
        assert all("single_transformer_blocks" not in n or "proj_out" in n for n in deltas["kohya"])
    else:
        assert set(deltas["kohya"]) == set(want)
        np.testing.assert_allclose(images["kohya"], images["diffusers"], atol=1e-5)


def test_kohya_names_and_metadata(trained):
    expected_prefixes = {"sd15": {"lora_unet_", "lora_te_"}, "sdxl": {"lora_unet_", "lora_te1_", "lora_te2_"},
                         "flux": {"lora_unet_double_blocks_", "lora_unet_single_blocks_"}}
    for family in FAMILIES:
        config, items, result, _ = trained(family)
        with safe_open(str(result.lora_kohya), framework="pt") as f:
            keys, meta = list(f.keys()), f.metadata()
        modules = {k.split(".")[0] for k in keys}
        assert {m for m in modules if any(m.startswith(p) for p in expected_prefixes[family])} == modules
        assert all(f"{m}.{s}" in keys for m in modules for s in ("lora_down.weight", "lora_up.weight", "alpha"))
        assert meta["ss_network_dim"] == str(config.rank) and meta["ss_network_alpha"] == str(config.alpha)
        assert meta["ss_base_model_version"] == {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}[family]
        assert meta["ss_sd_model_name"] == f"tiny-{family}" and meta["ss_output_name"] == "Teal_Shapes"
        assert meta["atelier_trigger_word"] == "ohwx" and meta["atelier_family"] == family
        freq = json.loads(meta["ss_tag_frequency"])
        assert list(freq.values())[0] == {"ohwx": 4, "shapes": 4, "teal background": 4}
        assert json.loads(meta["ss_dataset_dirs"])["1_ohwx"] == {"n_repeats": 1, "img_count": 4}
        assert len(meta["ss_dataset_hash"]) == 64
    sd15_keys = {k.split(".")[0] for k in safe_open(str(trained("sd15")[2].lora_kohya), "pt").keys()}
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in sd15_keys
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0" in sd15_keys
    flux_keys = {k.split(".")[0] for k in safe_open(str(trained("flux")[2].lora_kohya), "pt").keys()}
    assert {"lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_txt_attn_qkv",
            "lora_unet_double_blocks_0_img_mlp_0", "lora_unet_double_blocks_0_txt_mlp_2",
            "lora_unet_single_blocks_0_linear2"} <= flux_keys  # targets="full": single-block output too


def test_same_seed_same_losses(models_dir, tmp_path, make_dataset, single_thread):  # noqa: F811
    items = make_dataset(count=3, size=64)
    config = fast_config("flux", len(items), epochs=1, grid=False, sample_prompts=[])
    runs = []
    for i in range(2):
        events = []
        train_lora(config, tiny_ref("flux"), items, tmp_path / f"run{i}", models_dir=models_dir,
                   on_progress=events.append)
        runs.append([e.loss for e in events if e.phase == "training"])
    assert runs[0] == runs[1] and len(runs[0]) == 3
    other = []
    train_lora(config.model_copy(update={"seed": 7}), tiny_ref("flux"), items, tmp_path / "run-seed7",
               models_dir=models_dir, on_progress=lambda e: other.append(e.loss) if e.phase == "training" else None)
    assert other != runs[0]


def test_wrong_family_and_empty_dataset_are_clear_errors(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=2, size=64)
    with pytest.raises(ValueError, match="family: the config is for 'sd15' but base model 'tiny-flux'"):
        train_lora(fast_config("sd15", 2), tiny_ref("flux"), items, tmp_path / "a", models_dir=models_dir)
    with pytest.raises(ValueError, match="no training images"):
        train_lora(fast_config("sd15", 2), tiny_ref("sd15"), [], tmp_path / "b", models_dir=models_dir)
    (items[0].image_path).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=items[0].image_path.name):
        train_lora(fast_config("sd15", 2), tiny_ref("sd15"), items, tmp_path / "c", models_dir=models_dir)
