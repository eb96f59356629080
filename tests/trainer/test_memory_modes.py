"""Memory modes on the tiny models (CPU): fp8 storage through diffusers' layerwise casting trains a LoRA whose
parameters stay fp32, gradient checkpointing under fp8 gives the same gradients as without, and the shipped
architecture files hold the real models' parameter counts (rebuilt on the meta device here)."""

from __future__ import annotations

import pytest
import torch

from trainer.memory.build import build_component, count_params
from trainer.memory.planner import KNOWN_ARCHS, load_arch
from trainer.memory.real_configs import REAL_ARCHS

# Published sizes (millions of parameters) the configs must reproduce.
PUBLISHED = {("sd15", "denoiser"): 859.5, ("sdxl", "denoiser"): 2567.5, ("flux-dev", "denoiser"): 11901.4,
             ("flux-dev", "text_encoder_2"): 4762.3, ("sd15", "text_encoder"): 123.1,
             ("sdxl", "text_encoder_2"): 694.7}


@pytest.mark.parametrize("name", KNOWN_ARCHS)
def test_arch_files_match_the_configs_built_on_meta(name: str) -> None:
    arch = load_arch(name)
    assert arch["components"].keys() == REAL_ARCHS[name]["components"].keys()
    for cname, spec in arch["components"].items():
        assert spec["config"] == REAL_ARCHS[name]["components"][cname]["config"]
        built = count_params(build_component(spec["class"], spec["config"]))
        assert built == spec["params"], (name, cname)
        if (name, cname) in PUBLISHED:
            assert abs(built / 1e6 - PUBLISHED[(name, cname)]) < 0.1
    assert arch["denoiser"]["params"] == arch["components"]["denoiser"]["params"]
    if arch["family"] == "flux":
        assert arch["denoiser"]["blocks"]["counts"] == {"double": 19, "single": 38}
        assert arch["components"]["denoiser"]["config"]["guidance_embeds"] is (name == "flux-dev")


def _tiny_unet_grads(checkpointing: bool) -> torch.Tensor:
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from trainer.memory.modes import FP8, apply_storage_mode, enable_checkpointing
    from trainer.tiny import sd15_unet_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd15_unet_config()).to(torch.bfloat16)
    unet.requires_grad_(False)
    apply_storage_mode(unet, "fp8", torch.bfloat16)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.base_layer.weight.dtype == FP8
    trainable = [p for p in unet.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(3)
    for p in trainable:
        p.data = torch.empty(p.shape).normal_(0, 0.1, generator=gen)
    if checkpointing:
        enable_checkpointing(unet)
    unet.train()
    x = torch.randn(1, 4, 16, 16, generator=gen).bfloat16()
    text = torch.randn(1, 77, 32, generator=gen).bfloat16()
    unet(x, torch.tensor([10]), encoder_hidden_states=text).sample.float().pow(2).mean().backward()
    assert all(p.dtype == torch.float32 for p in trainable)
    return torch.cat([p.grad.flatten() for p in trainable])


def test_fp8_storage_with_checkpointing_gives_the_same_gradients() -> None:
    plain, checkpointed = _tiny_unet_grads(False), _tiny_unet_grads(True)
    assert plain.abs().max() > 0
    torch.testing.assert_close(checkpointed, plain)


def test_fp8_keeps_convolutions_16bit_so_their_backward_works() -> None:
    """A convolution's backward reads its weight tensor, which layerwise casting has put back into fp8 by then;
    linear layers are fp8, convolutions stay bf16, and a plain (non-checkpointed) backward runs."""
    from diffusers import UNet2DConditionModel

    from trainer.memory.modes import FP8, apply_storage_mode
    from trainer.tiny import sd15_unet_config

    unet = UNet2DConditionModel(**sd15_unet_config()).to(torch.bfloat16)
    unet.requires_grad_(False)
    apply_storage_mode(unet, "fp8", torch.bfloat16)
    assert unet.conv_in.weight.dtype == unet.down_blocks[0].resnets[0].conv1.weight.dtype == torch.bfloat16
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight.dtype == FP8
    x = torch.randn(1, 4, 16, 16, dtype=torch.bfloat16, requires_grad=True)
    out = unet(x, torch.tensor([10]), encoder_hidden_states=torch.randn(1, 77, 32, dtype=torch.bfloat16)).sample
    out.float().sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0


@pytest.mark.slow  # trains
def test_flux_trains_with_fp8_storage_and_checkpointing(models_dir, tmp_path) -> None:
    """The flux-dev path in the 24 GB mode: frozen transformer stored in fp8, LoRA in fp32, checkpointing on."""
    from trainer.memory.modes import FP8
    from trainer.synthetic import make_dataset
    from trainer.train import train_lora

    from .conftest import tiny_ref
    from .helpers_train import fast_config

    items = make_dataset(tmp_path / "data", count=2, size=64, caption="shapes")
    config = fast_config("flux", len(items), epochs=1, memory_mode="fp8", gradient_checkpointing=True, grid=False,
                         sample_prompts=[])
    seen = {}

    def spy(event) -> None:
        seen.setdefault(event.phase, event)

    result = train_lora(config, tiny_ref("flux"), items, tmp_path / "out", models_dir=models_dir, on_progress=spy)
    assert result.steps == 2 and result.final_loss is not None and result.final_loss == result.final_loss
    from safetensors.torch import load_file

    lora = load_file(str(result.lora_diffusers))
    assert lora and all(t.abs().sum() > 0 for k, t in lora.items() if "lora_A" in k)
    assert {"loading", "caching", "training"} <= seen.keys()
    # The storage dtype really was fp8 (checked on a fresh family built the same way).
    from trainer.families import Runtime, family_class
    from trainer.loading import load_pipeline
    from trainer.memory.modes import apply_storage_mode, reinit_lora_fp32

    pipe = load_pipeline(tiny_ref("flux"), models_dir, device="cpu", dtype=torch.bfloat16, place=False)
    family = family_class("flux")(pipe, config, Runtime(torch.device("cpu"), torch.bfloat16, True,
                                                        memory_mode="fp8"))
    apply_storage_mode(family.denoiser, "fp8", torch.bfloat16)
    family.add_lora()
    reinit_lora_fp32(family.denoiser, "fp8", config.seed)
    block = family.denoiser.transformer_blocks[0]
    assert block.attn.to_q.base_layer.weight.dtype == FP8
    lora_a = block.attn.to_q.lora_A["default"].weight
    assert lora_a.dtype == torch.float32
    assert not torch.equal(lora_a, lora_a.to(FP8).float())  # a full-precision init, not fp8 values upcast


@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])  # gated-gelu is T5-XXL's (Flux's encoder)
def test_t5_encodes_from_fp8_storage(feed_forward: str) -> None:
    from transformers import T5Config, T5EncoderModel

    from trainer.memory.modes import FP8, apply_text_encoder_mode

    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_ff=48, d_kv=8, num_layers=2, num_heads=4,
                                 feed_forward_proj=feed_forward)).to(torch.bfloat16).eval()
    ids = torch.tensor([[5, 17, 42, 1]])
    with torch.no_grad():
        reference = t5(ids)[0].float()
        apply_text_encoder_mode(t5, "nf4", torch.bfloat16)
        cached = t5(ids)[0]
    block = t5.encoder.block[0]
    assert block.layer[0].SelfAttention.q.weight.dtype == FP8
    assert block.layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16  # T5 casts inputs to wo's dtype
    assert t5.shared.weight.dtype == torch.bfloat16
    assert cached.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(cached.float().flatten(), reference.flatten(), dim=0) > 0.98
