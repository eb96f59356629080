"""LoRA targets at kohya parity: ``targets="full"`` adds proj_in/proj_out and the feed-forward on SD1.5/SDXL, the
single blocks' output projection on Flux (and the CLIP MLP when a text encoder trains); every new module is in the
diffusers and the kohya export, under the names kohya/ComfyUI/A1111 use, and both files load into a fresh pipeline
with exactly the trained deltas."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trainer.checkpoint import latest_checkpoint
from trainer.export import kohya_sd
from trainer.families.base import TEXT_ENCODER_TARGETS
from trainer.loading import load_pipeline
from trainer.lora_io import load_lora_into
from trainer.train import run_fingerprint, train_lora

from .conftest import tiny_ref
from .helpers_train import expected_deltas, fast_config, lora_deltas, single_thread  # noqa: F401

# kohya module-name fragments that only the "full" target set produces, per family.
FULL_ONLY = {
    "sd15": ["_proj_in", "_proj_out", "_ff_net_0_proj", "_ff_net_2"],
    "sdxl": ["_proj_in", "_proj_out", "_ff_net_0_proj", "_ff_net_2"],
    "flux": ["_linear2", "_img_mlp_0", "_txt_mlp_2"],
}


def _train(family, targets, root, models_dir):
    from trainer.synthetic import make_dataset

    items = make_dataset(root / "data", count=2, size=64, caption="shapes")
    # Text encoders stay frozen here so the run does not depend on the text-encoder adapter path.
    config = fast_config(family, len(items), epochs=1, grid=False, sample_prompts=[], train_text_encoder=False,
                         targets=targets)
    result = train_lora(config, tiny_ref(family), items, root / "out", models_dir=models_dir)
    return config, items, result


def _kohya_modules(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return {k.split(".")[0] for k in f.keys()}


@pytest.mark.slow  # trains each family
@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_full_targets_reach_both_exports_and_load(family, models_dir, tmp_path, single_thread):  # noqa: F811
    config, items, result = _train(family, "full", tmp_path, models_dir)
    modules = _kohya_modules(result.lora_kohya)
    for fragment in FULL_ONLY[family]:
        assert any(m.endswith(fragment) for m in modules), f"{fragment} missing from the kohya file"
    if family == "sdxl":  # kohya's own SDXL block names (SGM), as its tools write them
        unet = {m for m in modules if m.startswith("lora_unet_")}
        assert unet and all(m.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_1_",
                                          "lora_unet_output_blocks_")) for m in unet)
    if family == "flux":
        n_single = len(load_pipeline(tiny_ref("flux"), models_dir, device="cpu").transformer
                       .single_transformer_blocks)
        assert {f"lora_unet_single_blocks_{i}_linear2" for i in range(n_single)} <= modules
        assert "lora_unet_final_layer_linear" not in modules  # the transformer's own proj_out is not a target

    ckpt = latest_checkpoint(result.out_dir, run_fingerprint(config, tiny_ref(family), items))
    want = expected_deltas(ckpt.lora, config.alpha, config.rank)
    assert any(".ff.net.2" in n for n in want) and any("proj_out" in n for n in want)
    for path in (result.lora_diffusers, result.lora_kohya):
        pipe = load_pipeline(tiny_ref(family), models_dir, device="cpu")
        assert load_lora_into(pipe, path, "element") > 0
        got = lora_deltas(pipe, "element")
        if family == "flux" and path == result.lora_kohya:
            # linear1 (fused q|k|v|mlp) is written only at FLUX.1 widths, which the tiny model does not have.
            want_here = {n: d for n, d in want.items()
                         if "single_transformer_blocks" not in n or n.endswith(".proj_out")}
        else:
            want_here = want
        assert set(got) == set(want_here), path.name
        for name, delta in want_here.items():
            np.testing.assert_allclose(got[name], delta, rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # trains
def test_attention_targets_leave_proj_and_feed_forward_out(models_dir, tmp_path, single_thread):  # noqa: F811
    _, _, result = _train("sd15", "attention", tmp_path, models_dir)
    modules = _kohya_modules(result.lora_kohya)
    assert modules and all(re.search(r"_attn[12]_to_(q|k|v|out_0)$", m) for m in modules)
    assert not any(m.endswith(f) for m in modules for f in FULL_ONLY["sd15"])


def test_clip_mlp_targets_get_kohya_names_and_load(tiny_model_path):
    """A CLIP LoRA on the "full" targets (attention + MLP fc1/fc2) exports as ``lora_te_…_mlp_fc1`` and diffusers'
    kohya reader puts every tensor back on the right module of a fresh pipeline."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    from trainer.loading import pipeline_class

    folder = tiny_model_path("sd15")
    te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    model = get_peft_model(te, LoraConfig(r=4, lora_alpha=4, target_modules=TEXT_ENCODER_TARGETS["full"],
                                          init_lora_weights="gaussian"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    sd = {k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(model).items()}
    kohya = kohya_sd("sd15", {"text_encoder": sd}, alpha=4.0)
    names = {k.split(".")[0] for k in kohya}
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1" in names
    assert "lora_te_text_model_encoder_layers_0_mlp_fc2" in names
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names

    pipe = pipeline_class("sd15").from_pretrained(folder)
    pipe.load_lora_weights({k: v.clone() for k, v in kohya.items()}, adapter_name="element")
    got = lora_deltas(pipe, "element")
    fc = {n for n in got if n.startswith("text_encoder.") and ".mlp.fc" in n}
    assert len(fc) == 2 * te.config.num_hidden_layers
    want = expected_deltas({"text_encoder": {k.removeprefix("text_model."): v for k, v in sd.items()}}, 4.0, 4)
    for name, delta in got.items():
        key = name.replace("text_encoder.text_model.", "text_encoder.")
        np.testing.assert_allclose(delta, want.get(name, want.get(key)), rtol=1e-4, atol=1e-7)
