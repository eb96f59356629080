"""Export formats: Flux's fused kohya layout round-trips through diffusers' reader at FLUX.1 widths; DoRA LoRAs
export in both formats; diffusers files carry the training scale for every loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trainer.export import (
    BAKED_SCALE_KEY,
    FLUX1_LINEAR1_DIMS,
    kohya_flux,
    kohya_sd,
    read_diffusers_lora,
    save_diffusers_lora,
)
from trainer.families.flux import FLUX_TARGETS
from trainer.loading import load_pipeline
from trainer.lora_io import load_lora_into
from trainer.train import train_lora

from .conftest import tiny_ref
from .helpers_train import fast_config, generate, single_thread  # noqa: F401


def _flux1_transformer():
    """The real FLUX.1 block geometry (3072 wide, 12288 MLP) on the meta device: structure without memory."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(num_layers=2, num_single_layers=2)


def _random_lora(model, targets, rank, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            sd[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen)
            sd[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen)
    return sd


@pytest.mark.slow
def test_flux_kohya_round_trips_through_diffusers_reader_at_flux1_widths():
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    model = _flux1_transformer()
    rank, alpha = 4, 2.0
    lora = _random_lora(model, FLUX_TARGETS, rank)
    notes: list[str] = []
    kohya = kohya_flux({"transformer": lora}, alpha, model, notes)
    assert notes == []
    assert kohya["lora_unet_single_blocks_1_linear1.lora_down.weight"].shape == (4 * rank, 3072)
    assert kohya["lora_unet_single_blocks_1_linear1.lora_up.weight"].shape == (sum(FLUX1_LINEAR1_DIMS), 4 * rank)
    assert kohya["lora_unet_double_blocks_0_img_attn_qkv.alpha"].item() == 3 * alpha

    back = _convert_kohya_flux_lora_to_diffusers({k: v.clone() for k, v in kohya.items()})
    modules = {k[: -len(".lora_A.weight")] for k in lora if k.endswith(".lora_A.weight")}
    assert {k.removeprefix("transformer.")[: -len(".lora_A.weight")] for k in back if ".lora_A." in k} == modules
    for m in modules:  # compare B·A·x on probe vectors: the full 3072×12288 products are needlessly slow
        probe = torch.randn(lora[f"{m}.lora_A.weight"].shape[1], 3, generator=torch.Generator().manual_seed(1))
        want = lora[f"{m}.lora_B.weight"] @ (lora[f"{m}.lora_A.weight"] @ probe) * (alpha / rank)
        got = back[f"transformer.{m}.lora_B.weight"] @ (back[f"transformer.{m}.lora_A.weight"] @ probe)
        assert back[f"transformer.{m}.lora_A.weight"].shape[0] == rank, "block-diagonal split keeps the rank"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_flux_kohya_refuses_unmappable_modules():
    model = _flux1_transformer()
    lora = _random_lora(model, ["x_embedder"], 2)
    with pytest.raises(ValueError, match="no kohya Flux name"):
        kohya_flux({"transformer": lora}, 2.0, model)


def test_sd_kohya_names_text_encoder_modules_the_kohya_way():
    lora = {"text_encoder_2": {"encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 8),
                               "encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.ones(8, 2)}}
    out = kohya_sd("sdxl", lora, 1.0)
    assert set(out) == {f"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.{s}"
                        for s in ("lora_down.weight", "lora_up.weight", "alpha")}


def test_diffusers_file_bakes_scale_and_reads_back(tmp_path):
    from diffusers import StableDiffusionPipeline

    a, b = torch.randn(4, 32), torch.randn(64, 4)
    lora = {"unet": {"down.to_q.lora_A.weight": a, "down.to_q.lora_B.weight": b}}
    path = save_diffusers_lora(StableDiffusionPipeline, tmp_path / "x.safetensors", lora,
                               {"unet": {"r": 4, "lora_alpha": 2, "target_modules": ["to_q"]}}, {"k": "v"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        stored_b = f.get_tensor("unet.down.to_q.lora_B.weight")
    assert meta["k"] == "v" and float(meta[BAKED_SCALE_KEY]) == 0.5 and '"unet.lora_alpha": 4' in meta[
        "lora_adapter_metadata"]
    torch.testing.assert_close(stored_b, b * 0.5)
    back = read_diffusers_lora(path)
    torch.testing.assert_close(back["unet"]["down.to_q.lora_B.weight"], b)
    torch.testing.assert_close(back["unet"]["down.to_q.lora_A.weight"], a)


@pytest.mark.slow
def test_dora_exports_in_both_formats(models_dir, tmp_path, make_dataset, single_thread):  # noqa: F811
    from trainer.checkpoint import latest_checkpoint
    from trainer.train import run_fingerprint

    items = make_dataset(count=2, size=64)
    config = fast_config("sd15", len(items), epochs=1, use_dora=True, grid=False, sample_prompts=[])
    result = train_lora(config, tiny_ref("sd15"), items, tmp_path / "out", models_dir=models_dir)
    magnitudes = {k[: -len(".lora_magnitude_vector")]: v for k, v in latest_checkpoint(
        result.out_dir, run_fingerprint(config, tiny_ref("sd15"), items)).lora["unet"].items()
        if k.endswith(".lora_magnitude_vector")}
    assert magnitudes, "DoRA trains a magnitude per UNet target"
    with safe_open(str(result.lora_kohya), framework="pt") as f:
        scales = {k: f.get_tensor(k) for k in f.keys() if k.endswith(".dora_scale")}
    assert len(scales) == len(magnitudes) and all(v.shape[1] == 1 for v in scales.values())
    assert not any(k.startswith("lora_te_") for k in scales), "text-encoder adapters stay plain LoRA"

    base = load_pipeline(tiny_ref("sd15"), models_dir, device="cpu")
    before = generate(base)
    for path in (result.lora_diffusers, result.lora_kohya):
        pipe = load_pipeline(tiny_ref("sd15"), models_dir, device="cpu")
        assert load_lora_into(pipe, path, "dora") > 0
        assert np.abs(generate(pipe) - before).mean() > 1e-4
        if path == result.lora_diffusers:  # exact round trip of the trained magnitudes
            for name, magnitude in magnitudes.items():
                loaded = pipe.unet.get_submodule(name).lora_magnitude_vector["dora"].weight
                torch.testing.assert_close(loaded.detach().float(), magnitude.float(), rtol=1e-5, atol=1e-6)


def test_sgm_names_invert_diffusers_reader():
    """Every SDXL attention-block path maps to the SGM name that diffusers' own SGM reader maps back."""
    from types import SimpleNamespace

    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    from trainer.export import sgm_unet_path

    paths = [f"down_blocks.{b}.attentions.{j}.transformer_blocks.0.attn1.to_q" for b in (1, 2) for j in (0, 1)]
    paths += [f"up_blocks.{b}.attentions.{j}.proj_in" for b in (0, 1) for j in (0, 1, 2)]
    paths += ["mid_block.attentions.0.transformer_blocks.1.ff.net.2"]
    sgm = {"lora_unet_" + sgm_unet_path(p, 2).replace(".", "_") + ".lora_down.weight": p for p in paths}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in sgm
    assert "lora_unet_output_blocks_0_1_proj_in.lora_down.weight" in sgm
    assert "lora_unet_middle_block_1_transformer_blocks_1_ff_net_2.lora_down.weight" in sgm
    back = _maybe_map_sgm_blocks_to_diffusers({k: torch.zeros(1) for k in sgm}, SimpleNamespace(layers_per_block=2))
    # The reader renumbers the blocks and keeps the SGM word, which _convert_unet_lora_key then renames.
    renamed = {k.replace("input_blocks", "down_blocks").replace("output_blocks", "up_blocks")
               .replace("middle_block", "mid_block") for k in back}
    assert renamed == {"lora_unet_" + p.replace(".", "_") + ".lora_down.weight" for p in paths}
