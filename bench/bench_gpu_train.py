"""LoRA training throughput and peak memory on random-weight, real-size denoisers (CUDA only): SDXL at 1024 px in
bf16 and Flux-dev at 1024 px in the 24 GB mode (fp8 storage, gradient checkpointing). Part of
``scripts/gpu_check.sh``; prints steps/s and ``torch.cuda.max_memory_allocated`` next to the planner's figure."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_memory import arch_config  # noqa: E402
from trainer.memory.measure import Shape, train_step_peak  # noqa: E402
from trainer.memory.planner import GB, denoiser_step_bytes, load_arch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    import torch

    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (this check needs one)")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / GB:.0f} GB")
    for name, mode in (("sdxl", "bf16"), ("flux-dev", "fp8")):
        rates: list[float] = []
        torch.cuda.empty_cache()
        peak = train_step_peak(arch_config(name), mode, Shape(1024), device="cuda", steps=args.steps, timings=rates)
        predicted = denoiser_step_bytes(load_arch(name), "train_ckpt", mode, 1024)
        print(f"{name:<9} 1024 px {mode:<5} {args.steps} LoRA steps: {rates[0]:.2f} steps/s, peak {peak / GB:.2f} GB "
              f"(planner {predicted / GB:.2f} GB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
