"""What latent + text-embedding caching can save at real model scale: the cost of one LoRA training step's
denoiser forward + backward vs the VAE encode and text encode a naive loop adds to every step.

The tiny models of ``bench_training.py`` have a tiny VAE and text encoder next to their denoiser, so there caching
saves little for SD-family models; this builds the real SD1.5 (and, with enough memory, SDXL) architectures from
their configs (random weights: the cost of a forward/backward does not depend on the values), measures each part
side by side, and prints the best ratio a cached loop can reach against a naive one:

    cached / naive = step / (step + vae_encode + text_encode)       (data loading left out: it only lowers it)

    python bench/bench_cost_share.py [--families sd15,sdxl] [--rounds 2] [--batch 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
              projection_dim=1280, hidden_act="gelu")
SD15_UNET = dict(cross_attention_dim=768)  # diffusers' defaults are the SD1.5 UNet otherwise
SDXL_UNET = dict(block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
FAMILIES = {"sd15": (512, SD15_UNET, [CLIP_L]), "sdxl": (1024, SDXL_UNET, [CLIP_L, CLIP_G])}


def clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def best(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def step_time(name: str, rounds: int, batch: int, device: torch.device, dtype: torch.dtype) -> float:
    """Denoiser forward + backward with LoRA on the attention projections (the base frozen)."""
    px, unet_cfg, _ = FAMILIES[name]
    unet = UNet2DConditionModel(**unet_cfg).to(device, dtype).requires_grad_(False)
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    lat = torch.randn(batch, 4, px // 8, px // 8, device=device, dtype=dtype)
    ctx = torch.randn(batch, 77, unet_cfg["cross_attention_dim"], device=device, dtype=dtype)
    added = ({"text_embeds": torch.randn(batch, 1280, device=device, dtype=dtype),
              "time_ids": torch.randn(batch, 6, device=device, dtype=dtype)} if name == "sdxl" else None)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        out = unet(lat, t, ctx, added_cond_kwargs=added).sample
        out.float().pow(2).mean().backward()
        unet.zero_grad(set_to_none=True)

    return best(step, rounds)


@torch.no_grad()
def vae_time(name: str, rounds: int, batch: int, device: torch.device, dtype: torch.dtype) -> float:
    px = FAMILIES[name][0]
    vae = AutoencoderKL(**VAE).to(device, dtype).eval()
    img = torch.randn(batch, 3, px, px, device=device, dtype=dtype)
    return best(lambda: vae.encode(img).latent_dist.mean, rounds)


@torch.no_grad()
def text_time(name: str, rounds: int, batch: int, device: torch.device, dtype: torch.dtype) -> float:
    total = 0.0
    ids = torch.randint(0, 49407, (batch, 77), device=device)
    for cfg in FAMILIES[name][2]:
        cls = CLIPTextModelWithProjection if cfg is CLIP_G else CLIPTextModel
        te = cls(CLIPTextConfig(**cfg)).to(device, dtype).eval()
        total += best(lambda te=te: te(ids, output_hidden_states=True), rounds)
    return total


def measure(name: str, rounds: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Each part built, timed and freed in turn (one full model in memory at a time)."""
    step_s, vae_s, text_s = (fn(name, rounds, batch, device, dtype) for fn in (step_time, vae_time, text_time))
    return {"step": step_s, "vae": vae_s, "text": text_s, "ratio": step_s / (step_s + vae_s + text_s)}


def main() -> None:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the fp32-modules notice is noise here
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="sd15")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} batch={args.batch} "
          f"(real architectures, random weights, best of {args.rounds})")
    print(f"{'family':7} {'px':>5} {'step s':>8} {'vae s':>8} {'text s':>8} {'best cached/naive':>18}")
    for name in args.families.split(","):
        r = measure(name.strip(), args.rounds, args.batch, device, dtype)
        px = FAMILIES[name.strip()][0]
        print(f"{name:7} {px:5d} {r['step']:8.3f} {r['vae']:8.3f} {r['text']:8.3f} {r['ratio']:18.2f}")


if __name__ == "__main__":
    main()
