"""The strength sweep's scoring rules: the colour/texture distribution distance and how a range is recommended."""

from __future__ import annotations

import torch
from PIL import Image

from trainer.strength_sweep import distribution_distance, image_features, recommend, run_sweep, to_tensor
from trainer.synthetic import SCHEMES, draw_shapes


def _images(scheme: str, n: int = 4, seed: int = 0):
    import random

    rng = random.Random(seed)
    bg, fg = SCHEMES[scheme]
    return [draw_shapes(rng, 64, bg, fg) for _ in range(n)]


def test_distance_is_small_within_a_style_and_large_across():
    teal, teal2, lime = _images("orange-on-teal"), _images("orange-on-teal", seed=9), _images("magenta-on-lime")
    f = {k: image_features(to_tensor(v, 64, "cpu")) for k, v in (("teal", teal), ("teal2", teal2), ("lime", lime))}
    assert distribution_distance(f["teal"], f["teal"]) == 0
    same, other = distribution_distance(f["teal"], f["teal2"]), distribution_distance(f["teal"], f["lime"])
    assert same < 0.5 * other and 0 < other <= 2
    flat = Image.new("RGB", (64, 64), SCHEMES["orange-on-teal"][0])  # same colours, no edges: texture differs
    assert distribution_distance(image_features(to_tensor([flat], 64, "cpu")), f["teal"]) > same


def test_recommend_takes_the_run_around_the_best_strength():
    strengths = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    # Improves up to 0.8, overshoots after 1.0.
    score = [2.0, 1.9, 1.5, 1.2, 1.0, 1.3, 1.8]
    rng, default = recommend(strengths, score)
    assert rng == (0.4, 1.0) and default == 0.7
    assert recommend(strengths, [2.0, 1.995, 1.99, 1.99, 1.99, 1.99, 1.995]) == (None, None), "no real change"
    assert recommend(strengths, [2.0, 1.0, 1.6, 1.9, 2.0, 2.1, 2.2]) == ((0.2, 0.2), 0.2)


def test_run_sweep_scores_every_strength_against_the_dataset():
    dataset = _images("orange-on-teal")
    lime = _images("magenta-on-lime")

    def render(strength, k):  # more strength → more of the images take the dataset's look
        n = round(len(dataset) * min(1.0, strength))
        return dataset[:n] + lime[n:]

    result = run_sweep(render, lambda s: 1.0 - 0.5 * min(s, 0.9) + max(0.0, s - 1.0), dataset, size=64,
                       device=torch.device("cpu"), prompts=2)
    assert result.strengths[0] == 0.0 and len(result.score) == 7
    assert result.image_distance[0] > result.image_distance[4]
    lo, hi = result.range
    assert 0.4 <= lo <= 1.0 <= hi <= 1.2, result
    assert result.default_strength == round(round((lo + hi) / 2 / 0.05) * 0.05, 2)
