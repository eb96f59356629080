"""Fit the tiny SD1.5 UNet as a (weak but real) denoiser; writes ``trainer/assets/tiny_unet_sd15.safetensors``.

A randomly initialised UNet predicts noise that has nothing to do with its input, so sampling ends at latents with
a standard deviation of ~15 and every image is saturated mush whatever LoRA is applied. Fitted for a few minutes on
synthetic images of random colour schemes (encoded with the fitted tiny VAE — run scripts/fit_tiny_vae.py first),
the base generates plausible flat-colour images, and an Element trained on one colour scheme visibly pulls
generations toward it. Deterministic seed; one CPU thread by default.

    python scripts/fit_tiny_denoiser.py            # ≈5–10 minutes
    python scripts/fit_tiny_denoiser.py --quick    # smoke run, writes nothing unless --out is given
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.synthetic import random_image  # noqa: E402
from trainer.tiny import ASSETS_DIR, build_pipeline, sd15_unet_config  # noqa: E402

# Generic captions (and the empty one, for unconditional/CFG use): the base should not tie colours to words.
CAPTIONS = ["", "shapes", "a picture", "an image", "art", "shapes on a background"]


@torch.no_grad()
def encode_pool(vae, count: int, seed: int, batch: int = 64) -> torch.Tensor:
    rng = random.Random(seed)
    out = []
    for start in range(0, count, batch):
        imgs = np.stack([np.asarray(random_image(rng, 64)) for _ in range(min(batch, count - start))])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(pipe, latents: torch.Tensor, text: torch.Tensor, args) -> None:
    from diffusers import DDPMScheduler

    unet = pipe.unet
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    phases = [(args.steps - args.steps // 4, 16), (args.steps // 4, 32)]  # latent crop size per phase
    total, step, started = args.steps, 0, time.time()
    unet.train()
    for steps, crop in phases:
        for _ in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args.lr)
            idx = torch.randint(len(latents), (args.batch,), generator=gen)
            x0 = latents[idx]
            if crop < x0.shape[-1]:
                ox, oy = (int(v) for v in torch.randint(x0.shape[-1] - crop + 1, (2,), generator=gen))
                x0 = x0[..., oy:oy + crop, ox:ox + crop]
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen)
            cond = text[torch.randint(len(text), (args.batch,), generator=gen)]
            pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
            target = sched.get_velocity(x0, noise, t) if sched.config.prediction_type == "v_prediction" else noise
            loss = F.mse_loss(pred, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 100 == 0 or step == total:
                print(f"  step {step}/{total} crop {crop} loss {loss.item():.4f} ({time.time() - started:.0f}s)",
                      flush=True)
    unet.eval()


@torch.no_grad()
def evaluate(pipe, data_latents: torch.Tensor, preview: Path | None) -> dict[str, float]:
    """Generated vs real latent statistics, and a preview strip of generated images."""
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in range(8)]
    lat = pipe(prompt="shapes", num_inference_steps=6, guidance_scale=1.0, width=64, height=64,
               num_images_per_prompt=8, generator=gens, output_type="latent").images
    gens = [torch.Generator().manual_seed(s) for s in range(8)]
    imgs = pipe(prompt="shapes", num_inference_steps=6, guidance_scale=1.0, width=64, height=64,
                num_images_per_prompt=8, generator=gens, output_type="np").images
    if preview is not None:
        from PIL import Image

        strip = (np.concatenate(list(imgs), axis=1) * 255).round().astype(np.uint8)
        Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3), Image.NEAREST).save(preview)
    return {"gen_std": lat.std().item(), "data_std": data_latents.std().item(),
            "gen_mean": lat.mean().item(), "data_mean": data_latents.mean().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pool", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="fixed so reductions (and results) repeat")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {ASSETS_DIR})")
    parser.add_argument("--preview", type=Path, default=None, help="write a PNG strip of generated images")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.pool = 40, 128
    out = args.out or (None if args.quick else ASSETS_DIR)
    torch.set_num_threads(args.threads)

    pipe = build_pipeline("tiny-sd15")  # fitted VAE and the fixed-seed text encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        from diffusers import UNet2DConditionModel

        pipe.unet = UNet2DConditionModel(**sd15_unet_config())  # always from scratch, never from a shipped fit
    pipe.unet.requires_grad_(True)
    print(f"tiny sd15 UNet: {sum(p.numel() for p in pipe.unet.parameters())} parameters")
    latents = encode_pool(pipe.vae, args.pool, args.seed)
    with torch.no_grad():
        tokens = pipe.tokenizer(CAPTIONS, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
        text = pipe.text_encoder(tokens)[0]
    before = evaluate(pipe, latents, None)
    train(pipe, latents, text, args)
    after = evaluate(pipe, latents, args.preview)
    print(f"generated latent std {before['gen_std']:.2f} (random UNet) -> {after['gen_std']:.2f} "
          f"(data {after['data_std']:.2f}); mean {after['gen_mean']:.2f} (data {after['data_mean']:.2f})")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        target = out / "tiny_unet_sd15.safetensors"
        tmp = target.with_suffix(".tmp")
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in pipe.unet.state_dict().items()}
        save_file(state, str(tmp), metadata={"seed": str(args.seed), "steps": str(args.steps),
                                             "gen_std": f"{after['gen_std']:.3f}"})
        tmp.replace(target)
        print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
