"""Fit the tiny VAEs to reconstruct simple images and write ``trainer/assets/tiny_vae_<kind>.safetensors``.

A random VAE turns every latent into mush, which hides what an Element learned; a small fitted one makes the
effect visible in pixels. Synthetic data only (flat colours, gradients, shapes in random colour schemes, 64 px),
fixed seeds, CPU-friendly: the "sd" VAE (shared by tiny SD1.5 and SDXL) is trained mostly on 32 px crops (the VAE
is fully convolutional) and finished at 64 px; the "flux" VAE (no quant convs) starts from the sd weights.
The sd VAE's latent channels are then normalised (zero mean, unit std) by folding an exact affine map into its
1x1 quant convs; the flux VAE gets a global shift/scaling factor, which is what Flux pipelines apply.

    python scripts/fit_tiny_vae.py            # both kinds, one thread, ≈7–14 minutes

Shipped result (seed 0, defaults): held-out L1 0.052 (sd) / 0.047 (flux) on [-1, 1], PSNR ≈26.5 / 27.0 dB;
a random VAE of the same size scores ≈0.58.
    python scripts/fit_tiny_vae.py --quick    # a smoke run, writes nothing unless --out is given
    python scripts/fit_tiny_vae.py --renormalise   # only redo the sd channel normalisation
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
from diffusers import AutoencoderKL
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.synthetic import random_image  # noqa: E402
from trainer.tiny import ASSETS_DIR, build_vae, vae_config  # noqa: E402


def make_pool(count: int, size: int, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    arr = np.stack([np.asarray(random_image(rng, size)) for _ in range(count)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 127.5 - 1.0


def sample_batch(pool: torch.Tensor, batch: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(pool), (batch,), generator=gen)
    x = pool[idx]
    size = x.shape[-1]
    if crop < size:
        ox, oy = (int(v) for v in torch.randint(size - crop + 1, (2,), generator=gen))
        x = x[..., oy:oy + crop, ox:ox + crop]
    if bool(torch.rand((), generator=gen) < 0.5):
        x = x.flip(-1)
    return to_unit(x)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(vae: AutoencoderKL, pool: torch.Tensor, phases: list[tuple[int, int]], *, batch: int, lr: float,
          kl_weight: float, seed: int) -> None:
    """``phases``: (steps, crop size) in order; one cosine schedule across all of them."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    total = sum(s for s, _ in phases)
    step, started = 0, time.time()
    vae.train()
    for steps, crop in phases:
        for _ in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, lr, warmup=min(100, total // 10))
            x = sample_batch(pool, batch, crop, gen)
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            rec = vae.decode(z).sample
            l1 = (rec - x).abs().mean()
            loss = l1 + (rec - x).pow(2).mean() + kl_weight * post.kl().mean() / z[0].numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 100 == 0 or step == total:
                print(f"  step {step}/{total} crop {crop} l1 {l1.item():.4f} ({time.time() - started:.0f}s)",
                      flush=True)
    vae.eval()


@torch.no_grad()
def evaluate(vae: AutoencoderKL, held_out: torch.Tensor) -> dict[str, float]:
    """Reconstruction error on held-out 64 px images and latent statistics for the scaling/shift factors."""
    x = to_unit(held_out)
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.mean).sample.clamp(-1, 1)
    mse = (rec - x).pow(2).mean().item()
    return {
        "l1": (rec - x).abs().mean().item(),
        "psnr": 10 * math.log10(4.0 / max(mse, 1e-12)),
        "latent_mean": post.mean.mean().item(),
        "latent_std": post.mean.std().item(),
    }


@torch.no_grad()
def normalise_channels(vae: AutoencoderKL, pool: torch.Tensor) -> None:
    """Make each latent channel zero-mean, unit-std over ``pool`` by folding the affine map into the 1x1 quant
    convs (exact: reconstructions do not change). SD pipelines only apply a global scaling factor, and a
    per-channel offset is what a denoiser trained with a standard noise schedule learns worst."""
    moments = torch.cat([vae.encode(to_unit(pool[i:i + 256])).latent_dist.mean for i in range(0, len(pool), 256)])
    m, s = moments.mean(dim=(0, 2, 3)), moments.std(dim=(0, 2, 3))
    c = len(m)
    q, pq = vae.quant_conv, vae.post_quant_conv  # q: 2c -> 2c (means, then logvars); pq: c -> c
    q.weight[:c] /= s.view(c, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - m) / s
    q.bias[c:] -= 2 * torch.log(s)  # var scales by 1/s^2
    w = pq.weight[:, :, 0, 0].clone()
    pq.bias += w @ m
    pq.weight *= s.view(1, c, 1, 1)
    vae.register_to_config(scaling_factor=1.0)


def fit(kind: str, pool: torch.Tensor, args, init: dict | None) -> AutoencoderKL:
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**vae_config(kind))
    if init is not None:  # start from the other kind's fit where shapes match (all but the quant convs)
        own = vae.state_dict()
        vae.load_state_dict({k: v for k, v in init.items() if k in own and own[k].shape == v.shape}, strict=False)
    steps = args.flux_steps if init is not None else args.steps
    phases = [(steps - steps // 6, args.crop), (steps // 6, 64)]
    print(f"fitting {kind} VAE: {sum(p.numel() for p in vae.parameters())} parameters, phases {phases}")
    train(vae, pool, phases, batch=args.batch, lr=args.lr, kl_weight=args.kl_weight, seed=args.seed)
    return vae


def write(kind: str, vae: AutoencoderKL, held_out: torch.Tensor, out: Path | None, args) -> None:
    s = evaluate(vae, held_out)
    if kind == "sd":  # channels already normalised; pipelines apply the scaling factor only
        scaling, shift = 1.0, 0.0
    else:  # Flux pipelines apply (z - shift) * scale: centre and scale globally
        scaling, shift = 1.0 / s["latent_std"], s["latent_mean"]
    meta = {"scaling_factor": f"{scaling:.6f}", "shift_factor": f"{shift:.6f}", "l1": f"{s['l1']:.5f}",
            "psnr": f"{s['psnr']:.2f}", "seed": str(args.seed),
            "steps": str(args.flux_steps if kind == "flux" else args.steps)}
    print(f"{kind}: held-out L1 {s['l1']:.4f} (on [-1, 1]), PSNR {s['psnr']:.2f} dB, "
          f"latent mean {s['latent_mean']:.3f} std {s['latent_std']:.3f}")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"tiny_vae_{kind}.safetensors"
    tmp = target.with_suffix(".tmp")
    save_file({k: v.detach().contiguous() for k, v in vae.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(target)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1800, help="steps for the sd VAE")
    parser.add_argument("--flux-steps", type=int, default=600, help="steps for the flux VAE (warm-started)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-4)
    parser.add_argument("--pool", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="fixed so reductions (and results) repeat")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {ASSETS_DIR})")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--renormalise", action="store_true",
                        help="only re-apply the sd VAE's channel normalisation to the shipped weights")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.flux_steps, args.pool = 60, 30, 256
    out = args.out or (None if args.quick else ASSETS_DIR)
    torch.set_num_threads(args.threads)

    pool = make_pool(args.pool, 64, args.seed)
    held_out = make_pool(256, 64, args.seed + 1)
    if args.renormalise:
        sd = build_vae("sd").eval()
        normalise_channels(sd, pool)
        write("sd", sd, held_out, out, args)
        return 0
    sd = fit("sd", pool, args, None)
    flux = fit("flux", pool, args, {k: v.detach() for k, v in sd.state_dict().items()})
    normalise_channels(sd, pool)
    write("sd", sd, held_out, out, args)
    write("flux", flux, held_out, out, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
