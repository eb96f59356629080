"""Encode once, train many times: VAE latents per image and, while the text encoders are frozen, text embeddings
per caption variant. Afterwards the VAE (and frozen text encoders) leave the GPU.

Latents are cached as the VAE posterior's scaled mean and std, and a fresh latent is drawn from them every step
(``mean + std·ε``), which is exactly what running the VAE every step (``latent_dist.sample()``) would produce at a
fraction of the cost. Caption dropout uses one cached empty-caption embedding; shuffled captions get
``variant_count`` cached variants per image (see :func:`trainer.data.variant_count`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trainer.config import TrainingConfig
from trainer.data import Sample, Slot, caption_for, load_pixels, variant_count
from trainer.families.base import Batch, TrainFamily

VAE_BATCH = 4


@dataclass
class LatentCache:
    mean: list[torch.Tensor]  # per sample index, (C, h, w) float32 on the training device
    std: list[torch.Tensor]
    extras: list[dict[str, torch.Tensor]]


@dataclass
class TextCache:
    """Embeddings per caption string (no batch dim). ``None`` as a whole when the text encoder is trained."""

    by_caption: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def get(self, caption: str) -> dict[str, torch.Tensor]:
        return self.by_caption[caption]


def cache_latents(family: TrainFamily, samples: list[Sample],
                  on_progress: Callable[[int, int], None] | None = None) -> LatentCache:
    """VAE-encode every image once (batched per bucket)."""
    n = len(samples)
    mean: list[torch.Tensor | None] = [None] * n
    std: list[torch.Tensor | None] = [None] * n
    extras: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    by_bucket: dict[tuple[int, int], list[Sample]] = {}
    for s in samples:
        by_bucket.setdefault(s.bucket, []).append(s)
    done = 0
    for group in by_bucket.values():
        for i in range(0, len(group), VAE_BATCH):
            chunk = group[i:i + VAE_BATCH]
            pixels = torch.stack([torch.from_numpy(load_pixels(s)) for s in chunk])
            m, sd = family.encode_images(pixels)
            for j, s in enumerate(chunk):
                mean[s.index], std[s.index] = m[j].to(family.runtime.device), sd[j].to(family.runtime.device)
                w, h = s.bucket
                extras[s.index] = {k: v.to(family.runtime.device) for k, v in family.extras_for(
                    (s.original_size[1], s.original_size[0]), s.crop, (h, w)).items()}
            done += len(chunk)
            if on_progress:
                on_progress(done, n)
    return LatentCache(mean, std, extras)  # type: ignore[arg-type]


@torch.no_grad()
def encode_captions(family: TrainFamily, captions: list[str], batch: int = 8) -> dict[str, dict[str, torch.Tensor]]:
    """Unique captions → their embeddings (row slices, no batch dim)."""
    unique = list(dict.fromkeys(captions))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for i in range(0, len(unique), batch):
        chunk = unique[i:i + batch]
        enc = family.encode_text(chunk)
        for j, caption in enumerate(chunk):
            out[caption] = {k: v[j].detach() for k, v in enc.items()}
    return out


def cache_text(family: TrainFamily, samples: list[Sample], config: TrainingConfig) -> TextCache:
    """Every caption variant the run will use, plus the empty caption for dropout."""
    captions = [""]
    for s in samples:
        captions += [caption_for(s, config, v) for v in range(variant_count(config))]
    return TextCache(encode_captions(family, captions))


def offload(family: TrainFamily, *, text_encoders: bool) -> None:
    """Move the VAE (and frozen text encoders) off the accelerator; a no-op on CPU runs."""
    if family.runtime.device.type == "cpu":
        return
    family.vae.to("cpu")
    if text_encoders:
        for te in family.text_encoders().values():
            te.to("cpu")
    torch.cuda.empty_cache()


def make_batch(slots: list[Slot], samples: list[Sample], latents: LatentCache, text: TextCache | None,
               config: TrainingConfig) -> Batch:
    """Stack cached tensors for one batch of slots (all from the same bucket)."""
    captions = ["" if sl.drop_caption else caption_for(samples[sl.sample], config, sl.variant) for sl in slots]
    extras: dict[str, torch.Tensor] = {}
    for key in latents.extras[slots[0].sample]:
        extras[key] = torch.stack([latents.extras[sl.sample][key] for sl in slots])
    embeds = None
    if text is not None:
        rows = [text.get(c) for c in captions]
        embeds = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    return Batch(
        latent_mean=torch.stack([latents.mean[sl.sample] for sl in slots]),
        latent_std=torch.stack([latents.std[sl.sample] for sl in slots]),
        text=embeds, captions=captions, extras=extras,
    )
