"""The strength sweep after training: which strength range works for this Element.

A fixed prompt set is rendered at strengths 0 (the base alone) and 0.2 … 1.2 with fixed seeds, and every strength is
scored two ways against the dataset, with nothing to download and everything on the training device:

* **image distance** — how far the generated images' colour and texture distributions are from the dataset's: a
  joint RGB histogram (8³ bins) and a histogram of luminance-gradient magnitudes, averaged over the images; the
  distance is the mean of the two histograms' L1 distances (0 = same distribution, 2 = disjoint);
* **denoising loss** — the denoiser's own training loss on the dataset images with the adapter at that strength,
  on fixed noise and timesteps (the same draws for every strength). Small datasets have no held-out split, so this
  reads the training images: it tells how far the strength reproduces what was learnt, and rises again when the
  adapter overshoots.

Each is taken relative to strength 0, summed, and the recommended range is the run of strengths around the best one
that keeps at least half of the best improvement; its midpoint (to 0.05) becomes the default strength.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

SWEEP_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
KEEP_FRACTION = 0.5  # a strength is in the range while it keeps this share of the best improvement
MIN_IMPROVEMENT = 0.02  # below this the Element barely changes anything: no range is claimed
COLOUR_BINS, TEXTURE_BINS = 8, 16


@dataclass
class SweepResult:
    strengths: list[float]  # 0 first, then the swept strengths
    image_distance: list[float]
    denoise_loss: list[float]
    score: list[float]  # relative to strength 0 (2.0 = no change); lower is better
    range: tuple[float, float] | None
    default_strength: float | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"strengths": self.strengths, "image_distance": self.image_distance,
                "denoise_loss": self.denoise_loss, "score": self.score,
                "range": list(self.range) if self.range else None, "default_strength": self.default_strength}


def to_tensor(images: list[Image.Image], size: int, device) -> torch.Tensor:
    """PIL images → (N, 3, size, size) float in [0, 1] on ``device``."""
    arrs = [np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
            for img in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).to(device) / 255.0


def image_features(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean colour histogram (COLOUR_BINS³) and mean gradient-magnitude histogram of (N, 3, H, W) images in [0, 1]."""
    n = pixels.shape[0]
    q = (pixels.clamp(0, 1) * (COLOUR_BINS - 1e-4)).long()
    idx = (q[:, 0] * COLOUR_BINS + q[:, 1]) * COLOUR_BINS + q[:, 2]
    colour = torch.zeros(n, COLOUR_BINS ** 3, device=pixels.device)
    colour.scatter_add_(1, idx.reshape(n, -1), torch.ones_like(idx.reshape(n, -1), dtype=torch.float32))
    luma = 0.299 * pixels[:, 0] + 0.587 * pixels[:, 1] + 0.114 * pixels[:, 2]
    gx, gy = luma[:, :, 1:] - luma[:, :, :-1], luma[:, 1:, :] - luma[:, :-1, :]
    mag = torch.sqrt(gx[:, :-1, :] ** 2 + gy[:, :, :-1] ** 2).clamp(0, 0.999)  # edges above 1.0 share a bin
    tq = (mag * TEXTURE_BINS).long().reshape(n, -1)
    texture = torch.zeros(n, TEXTURE_BINS, device=pixels.device)
    texture.scatter_add_(1, tq, torch.ones_like(tq, dtype=torch.float32))
    colour = colour / colour.sum(1, keepdim=True)
    texture = texture / texture.sum(1, keepdim=True)
    return colour.mean(0), texture.mean(0)


def distribution_distance(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean of the colour and texture histograms' L1 distances (0 … 2)."""
    return float(((a[0] - b[0]).abs().sum() + (a[1] - b[1]).abs().sum()) / 2)


def recommend(strengths: list[float], score: list[float]) -> tuple[tuple[float, float] | None, float | None]:
    """(range, default strength) from scores relative to strength 0 (``strengths[0]`` is 0; lower is better)."""
    improvement = [score[0] - s for s in score]
    best = max(range(1, len(score)), key=lambda i: improvement[i])
    if improvement[best] < MIN_IMPROVEMENT:
        return None, None
    keep = KEEP_FRACTION * improvement[best]
    lo = hi = best
    while lo - 1 >= 1 and improvement[lo - 1] >= keep:
        lo -= 1
    while hi + 1 < len(score) and improvement[hi + 1] >= keep:
        hi += 1
    rng = (strengths[lo], strengths[hi])
    return rng, round(round((rng[0] + rng[1]) / 2 / 0.05) * 0.05, 2)


def run_sweep(render: Callable[[float, int], list[Image.Image]], denoise_loss: Callable[[float], float],
              dataset_images: list[Image.Image], *, size: int, device, prompts: int,
              strengths: tuple[float, ...] = SWEEP_STRENGTHS) -> SweepResult:
    """Score ``render(strength, prompt_index)`` images and ``denoise_loss(strength)`` at 0 and each strength."""
    target = image_features(to_tensor(dataset_images, size, device))
    all_strengths = [0.0, *strengths]
    dist, loss = [], []
    for s in all_strengths:
        images = [img for k in range(prompts) for img in render(s, k)]
        dist.append(distribution_distance(image_features(to_tensor(images, size, device)), target))
        loss.append(float(denoise_loss(s)))
    d0, l0 = max(dist[0], 1e-8), max(loss[0], 1e-8)
    score = [d / d0 + v / l0 for d, v in zip(dist, loss, strict=True)]
    rng, default = recommend(all_strengths, score)
    notes = [] if rng else ["strength sweep: the Element changes generations too little to recommend a range"]
    return SweepResult(all_strengths, dist, loss, score, rng, default, notes)
