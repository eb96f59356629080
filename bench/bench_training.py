"""Training-loop benchmark, side by side in one process on the same tiny model and dataset.

(a) epoch time of Atelier's loop (latents + text embeddings cached) vs a naive loop that loads the image, runs the
    VAE and the text encoder(s) on every step — how diffusers' example scripts train (dataloader workers = 0).
    Target: ratio ≤ 0.5.
(b) one loop step (batch assembly from the caches, loss, backward, clipping, optimizer + scheduler, progress
    event, pause/cancel checks) vs a bare denoiser forward + backward + optimizer step on a pre-built batch.
    Target: ratio ≤ 1.15.

Runs are interleaved (A, B, A, B, …) and the best round of each side is reported (as ``timeit`` does). On a CPU
the clock is the process's CPU time (one intra-op thread), which other processes on a shared machine barely
disturb; on a GPU it is wall time with ``torch.cuda.synchronize``. ``--source-size`` sets the pixel size of the dataset
images (real uploads are larger than the training resolution; the naive loop decodes and resizes them every step).

    python bench/bench_training.py [--families sd15,sdxl,flux] [--images 8] [--size 64] [--source-size 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.api import BaseModelRef, NullControl  # noqa: E402
from trainer.caching import cache_latents, cache_text, make_batch  # noqa: E402
from trainer.checkpoint import TrainState  # noqa: E402
from trainer.config import TrainingConfig  # noqa: E402
from trainer.data import build_samples, caption_for, epoch_batches, load_pixels, steps_per_epoch  # noqa: E402
from trainer.families import Batch, family_class  # noqa: E402
from trainer.loading import load_pipeline  # noqa: E402
from trainer.loop import LoopParts, TrainingLoop  # noqa: E402
from trainer.optim import build_optimizer, build_scheduler  # noqa: E402
from trainer.synthetic import make_dataset  # noqa: E402
from trainer.train import resolve_runtime  # noqa: E402


def setup(family_name: str, images: int, size: int, source_size: int, work: Path, models_dir: Path):
    items = make_dataset(work / f"data-{family_name}-{source_size}", count=images, size=source_size,
                         caption="shapes, teal background")
    config = TrainingConfig.for_request(
        "character", family_name, images, "ohwx", resolution=size, bucket_step=16, epochs=100, repeats=1,
        batch_size=1, train_text_encoder=False, shuffle_captions=False, caption_dropout=0.0, sample_prompts=[],
        grid=False, gradient_checkpointing=False, learning_rate=1e-4, lr_warmup_steps=0)
    runtime = resolve_runtime(config)
    pipe = load_pipeline(BaseModelRef(f"tiny-{family_name}", family_name, f"builtin:tiny-{family_name}"),  # type: ignore[arg-type]
                         models_dir, device=runtime.device, dtype=runtime.weight_dtype)
    family = family_class(family_name)(pipe, config, runtime)
    family.add_lora()
    samples = build_samples(items, config)
    optimizer = build_optimizer(family.param_groups(), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch(samples, config) * config.epochs)
    return config, family, samples, optimizer, scheduler


def naive_epoch(config, family, samples, optimizer, scheduler, gen, epoch: int) -> None:
    """Per step: read + resize the image, VAE-encode, text-encode, then the same loss/optimizer step."""
    family.train_mode(True)
    for slots in epoch_batches(samples, config, epoch):
        pixels = torch.stack([torch.from_numpy(load_pixels(samples[s.sample])) for s in slots])
        mean, std = family.encode_images(pixels)
        extras = {}
        for s in slots:
            smp = samples[s.sample]
            for k, v in family.extras_for((smp.original_size[1], smp.original_size[0]), smp.crop,
                                          (smp.bucket[1], smp.bucket[0])).items():
                extras.setdefault(k, []).append(v)
        captions = [caption_for(samples[s.sample], config, s.variant) for s in slots]
        with torch.no_grad():
            text = family.encode_text(captions)
        batch = Batch(mean, std, None, captions, {k: torch.stack(v) for k, v in extras.items()})
        loss = family.loss(batch, text, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def bench_family(name: str, args, work: Path, models_dir: Path) -> dict[str, float]:
    config, family, samples, optimizer, scheduler = setup(name, args.images, args.size, args.source_size or args.size,
                                                          work, models_dir)
    gen = torch.Generator("cpu").manual_seed(0)
    t = clock()
    latents = cache_latents(family, samples)
    text = cache_text(family, samples, config)
    caching = clock() - t

    state = TrainState()
    parts = LoopParts(family, config, samples, latents, text, optimizer, scheduler, None, gen)
    loop = TrainingLoop(parts, state, total_steps=10**6, emit=lambda e: None, control=NullControl(),
                        elapsed=lambda: 0.0)
    # A pre-built batch for the bare step: no batch assembly, no bookkeeping, just model work.
    bare_batch = make_batch(epoch_batches(samples, config, 1)[0], samples, latents, text, config)

    def bare_steps(n: int) -> None:
        family.train_mode(True)
        for _ in range(n):
            loss = family.loss(bare_batch, bare_batch.text, gen)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    steps = steps_per_epoch(samples, config)
    naive_epoch(config, family, samples, optimizer, scheduler, gen, 1)  # warm-up both paths
    loop.run_epoch(1)
    cached_t, naive_t, loop_step_t, bare_step_t = [], [], [], []
    for r in range(args.rounds):
        t = clock()
        loop.run_epoch(2 + r)
        cached_t.append(clock() - t)
        t = clock()
        naive_epoch(config, family, samples, optimizer, scheduler, gen, 2 + r)
        naive_t.append(clock() - t)
        t = clock()
        bare_steps(steps)
        bare_step_t.append((clock() - t) / steps)
        loop_step_t.append(cached_t[-1] / steps)
    cached, naive = min(cached_t), min(naive_t)
    loop_step, bare_step = min(loop_step_t), min(bare_step_t)
    return {"caching_s": caching, "cached_epoch_s": cached, "naive_epoch_s": naive, "ratio_a": cached / naive,
            "loop_step_ms": loop_step * 1e3, "bare_step_ms": bare_step * 1e3, "ratio_b": loop_step / bare_step,
            "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="sd15,sdxl,flux")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--source-size", type=int, default=0, help="dataset image size (default: --size)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on 2 cores)")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={device} threads={torch.get_num_threads()} images={args.images} train={args.size}px "
          f"source={args.source_size or args.size}px rounds={args.rounds} (text encoder frozen, batch 1, best round)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models_dir = args.models_dir or work / "models"
        header = (f"{'family':7} {'cache s':>8} {'epoch s':>8} {'naive s':>8} {'(a) ratio':>9}   "
                  f"{'step ms':>8} {'bare ms':>8} {'(b) ratio':>9}")
        print(header)
        for name in args.families.split(","):
            r = bench_family(name.strip(), args, work, models_dir)
            print(f"{name:7} {r['caching_s']:8.3f} {r['cached_epoch_s']:8.3f} {r['naive_epoch_s']:8.3f} "
                  f"{r['ratio_a']:9.2f}   {r['loop_step_ms']:8.1f} {r['bare_step_ms']:8.1f} {r['ratio_b']:9.3f}")
    print("targets: (a) ≤ 0.50, (b) ≤ 1.15")


if __name__ == "__main__":
    main()
