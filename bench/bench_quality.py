"""Element quality, old vs new training defaults, side by side on one tiny model and one synthetic dataset.

old = attention-only LoRA, every image upscaled into the full-resolution bucket, one resolution, a fixed Flux shift;
new = kohya-parity targets (``targets="full"``), buckets that never upscale (small images train in smaller
buckets), Flux at 0.5/0.75/1.0 of the resolution with the pipeline's resolution-dependent shift.

The dataset mixes full-size images with half-size ones (the case upscaling hurts). Both runs train the same steps
with the same seed; then each Element generates the same prompt and seeds at strength 0, 0.5 and 1.0, and the
images are compared with the dataset by the strength sweep's colour/texture distribution distance (0 = same
distributions, 2 = disjoint) and by mean-colour distance (RGB units). Lower is nearer the dataset. Training time
is CPU time of this process on a CPU (wall time on a GPU); the ratio column is new/old.

    python bench/bench_quality.py [--family sd15|sdxl|flux] [--images 8] [--epochs 3] [--repeats 6] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.api import BaseModelRef, GenerationRequest, LoraRef  # noqa: E402
from trainer.config import TrainingConfig  # noqa: E402
from trainer.generate import Generator  # noqa: E402
from trainer.strength_sweep import distribution_distance, image_features, to_tensor  # noqa: E402
from trainer.synthetic import make_dataset  # noqa: E402
from trainer.train import train_lora  # noqa: E402

STRENGTHS = (0.0, 0.5, 1.0)
OLD = {"targets": "attention", "bucket_max_upscale": 8.0, "resolution_scales": [1.0]}


def clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def configs(family: str, args) -> dict[str, TrainingConfig]:
    values = dict(family=family, category="style", trigger="zxq", epochs=args.epochs, repeats=args.repeats,
                  learning_rate=2e-3, rank=8, alpha=8, resolution=args.size, bucket_step=16, seed=0,
                  mixed_precision="bf16" if torch.cuda.is_available() else "no", sample_prompts=[], grid=False,
                  strength_sweep=False, save_precision="fp32", max_sequence_length=32)
    new = TrainingConfig(**values, **({"resolution_scales": [0.5, 0.75, 1.0]} if family == "flux" else {}))
    old = TrainingConfig(**values, **OLD, **({"flux_shift": 3.1582} if family == "flux" else {}))
    runs = {"old": old, "new": new}
    if family == "flux":  # separates the multi-resolution part (tiny bases: 0.5× is only 32 px) from the rest
        runs["new, 1 res"] = TrainingConfig(**values)
    return runs


def dataset(root: Path, args):
    """Full-size images plus half-size ones of the same look (what the old defaults upscaled 2×)."""
    n_small = args.images // 2
    big = make_dataset(root / "big", count=args.images - n_small, size=args.size, seed=3, caption="shapes")
    small = make_dataset(root / "small", count=n_small, size=args.size // 2, seed=4, caption="shapes")
    return big + small


def distances(gen: Generator, base: BaseModelRef, lora_path: Path, target, target_rgb, args) -> list[tuple]:
    out = []
    for s in STRENGTHS:
        lora = LoraRef(key=f"q-{lora_path.parent.name}", path=lora_path, trigger="zxq", strength=s)
        res = gen.generate(base, GenerationRequest(prompt="shapes", loras=[lora], seed=100, steps=args.steps,
                                                   width=args.size, height=args.size, count=args.count))
        feats = image_features(to_tensor(res.images, args.size, gen_device()))
        rgb = np.stack([np.asarray(i.convert("RGB"), dtype=np.float64) for i in res.images]).mean(axis=(0, 1, 2))
        out.append((distribution_distance(feats, target), float(np.linalg.norm(rgb - target_rgb))))
    return out


def gen_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "flux"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--count", type=int, default=4, help="images generated per strength")
    parser.add_argument("--steps", type=int, default=6, help="denoising steps per generated image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 epoch × 4 repeats (a smoke run)")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 4
    torch.set_num_threads(args.threads)
    base = BaseModelRef(f"tiny-{args.family}", args.family, f"builtin:tiny-{args.family}")  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models_dir = args.models_dir or work / "models"
        items = dataset(work / "data", args)
        images = [Image.open(i.image_path).convert("RGB") for i in items]
        target = image_features(to_tensor(images, args.size, gen_device()))
        target_rgb = np.mean([np.asarray(i.resize((args.size, args.size)), dtype=np.float64).mean(axis=(0, 1))
                              for i in images], axis=0)
        results = {}
        for name, config in configs(args.family, args).items():
            started = clock()
            result = train_lora(config, base, items, work / name, models_dir=models_dir)
            seconds = clock() - started
            gen = Generator(models_dir, device=gen_device())
            results[name] = {"seconds": seconds, "steps": result.steps,
                             "kb": result.lora_diffusers.stat().st_size / 1024,
                             "dist": distances(gen, base, result.lora_diffusers, target, target_rgb, args)}
            gen.close()
    names = list(results)
    labels = {"old": "old (attn, upscale)", "new": "new (full, no upscale)", "new, 1 res": "new, one resolution"}
    print(f"family={args.family} device={gen_device().type} images={args.images} ({args.images // 2} at half "
          f"size) {args.size}px epochs={args.epochs} repeats={args.repeats} steps={results['new']['steps']}")
    print(f"{'':28}" + "".join(f"{labels[n]:>24}" for n in names)
          + "".join(f"{n + '/old':>18}" for n in names[1:]))

    def row(label: str, values: list[float], fmt: str = "{:.3f}") -> None:
        ratios = [v / values[0] if values[0] else float("nan") for v in values[1:]]
        print(f"{label:28}" + "".join(f"{fmt.format(v):>24}" for v in values) + "".join(f"{r:18.2f}" for r in ratios))

    row("training time s", [results[n]["seconds"] for n in names], "{:.1f}")
    row("LoRA file KiB", [results[n]["kb"] for n in names], "{:.0f}")
    for i, s in enumerate(STRENGTHS):
        row(f"colour/texture dist @ {s:g}", [results[n]["dist"][i][0] for n in names])
    for i, s in enumerate(STRENGTHS):
        row(f"mean-colour dist @ {s:g}", [results[n]["dist"][i][1] for n in names], "{:.1f}")


if __name__ == "__main__":
    main()
