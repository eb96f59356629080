"""Peak GPU memory of the real architectures: the planner's predictions against measurements, side by side.

Builds SD1.5 and SDXL at full size and Flux at full width with reduced depth (2 double + 4 single blocks; the
planner extrapolates per block), with random weights, and measures one LoRA training step and one generation
(denoising) step per memory mode:

* on CUDA (``--device cuda``, the default when a GPU is present): ``torch.cuda.max_memory_allocated``;
* on a CPU: the models run on the **meta** device and the figure is the peak of live tensor bytes
  (``trainer.memory.tracker.PeakTracker``, a TorchDispatchMode) — a stated proxy that counts tensors only (no
  allocator slack or CUDA context; the planner adds a separate reserve for those when checking a budget).

Modes measured: bf16 and fp8 (layerwise casting). int8 / NF4 (bitsandbytes) and block swap run only on CUDA with
weights loaded through ``from_pretrained``; their rows are predictions only. The ``--quick`` resolutions lie between
or beyond the two calibration resolutions (scripts/write_arch_files.py); the full run adds calibration-size rows
and, on meta, the full-depth Flux-dev (the per-block extrapolation itself).

Prints predicted vs measured per family, mode and step (error must be ≤ 20 %) and the predicted full-size peak of
a whole training run at the default mode (``auto`` in a 24 / 12 / 8 GB budget); exits 1 when Flux-dev > 22 GB,
SDXL > 11 GB or SD1.5 > 7 GB, or when a prediction is off by more than 20 %. ``--quick`` measures fewer cases
(a few minutes on 2 CPU cores; well under 1 GB of memory on the meta device).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.memory.measure import Shape, generate_step_peak, reduced, train_step_peak  # noqa: E402
from trainer.memory.planner import GB, TrainShape, denoiser_step_bytes, load_arch, plan_training  # noqa: E402

MAX_ERROR = 0.20
LIMITS = {"flux-dev": (24, 22.0), "sdxl": (12, 11.0), "sd15": (8, 7.0)}  # budget the default plans for, limit
FLUX_DEPTH = (2, 4)
FULL_DEPTH_ON_META = True  # meta tensors take no memory: all 19 + 38 Flux blocks can be measured on a CPU too


def cases(quick: bool) -> list[tuple[str, int, str, str]]:
    """(arch, resolution, kind, mode) — resolutions between/beyond the calibration points."""
    out = [("sd15", 640, "train_ckpt", "bf16"), ("sd15", 640, "train_ckpt", "fp8"), ("sd15", 640, "generate", "bf16"),
           ("sdxl", 896, "train_ckpt", "bf16"), ("sdxl", 896, "train_ckpt", "fp8"), ("sdxl", 896, "generate", "fp8"),
           ("flux-dev", 768, "train_ckpt", "bf16"), ("flux-dev", 768, "train_ckpt", "fp8"),
           ("flux-dev", 768, "generate", "fp8")]
    if not quick:
        out += [("sd15", 512, "train_full", "bf16"), ("sd15", 1024, "train_ckpt", "bf16"),
                ("sd15", 640, "generate", "fp8"), ("sdxl", 1024, "train_full", "bf16"),
                ("sdxl", 896, "generate", "bf16"), ("flux-dev", 1024, "train_ckpt", "fp8"),
                ("flux-dev", 768, "generate", "bf16"), ("flux-dev", 1280, "train_ckpt", "bf16")]
        if FULL_DEPTH_ON_META:
            out += [("flux-dev", 1024, "train_ckpt", "fp8", "full")]  # the extrapolation itself, checked
    return out


def measure(arch_name: str, res: int, kind: str, mode: str, device: str, depth: str = "reduced"
            ) -> tuple[float, float]:
    """(measured, predicted) bytes of one denoiser step."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()  # the previous case's model must not count in this one's baseline
    arch = load_arch(arch_name)
    depth = FLUX_DEPTH if arch["family"] == "flux" and depth == "reduced" else None
    model_arch = reduced(arch_config(arch_name), *depth) if depth else arch_config(arch_name)
    if kind == "generate":
        measured = generate_step_peak(model_arch, mode, Shape(res), device=device)
    else:
        measured = train_step_peak(model_arch, mode, Shape(res), checkpointing=kind == "train_ckpt", device=device)
    predicted = denoiser_step_bytes(arch, kind, mode, res, depth=depth)
    return measured, predicted


def arch_config(name: str) -> dict:
    """The measurable form of an arch file (class + config per component, as trainer.memory.measure wants)."""
    arch = load_arch(name)
    return {"family": arch["family"], "text_tokens": arch["text_tokens"], "vae_downscale": arch["vae_downscale"],
            "components": {k: {"class": v["class"], "config": v["config"]} for k, v in arch["components"].items()}}


def default_peaks() -> dict[str, tuple[str, float]]:
    """Full-size whole-run peak at the mode ``auto`` picks in the budget the default is meant for."""
    from trainer.config import TrainingConfig

    out = {}
    for name, (budget, _) in LIMITS.items():
        family = load_arch(name)["family"]
        config = TrainingConfig.for_request("character", family, 20, "zqxtoken")
        plan = plan_training(name, TrainShape.of(config), budget)
        out[name] = (plan.mode + (", checkpointing" if plan.gradient_checkpointing else ""), plan.peak_gb)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (CI)")
    parser.add_argument("--device", default=None, help="cuda or meta (default: cuda when available)")
    args = parser.parse_args()
    import torch

    warnings.filterwarnings("ignore")
    device = args.device or ("cuda" if torch.cuda.is_available() else "meta")
    how = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak live tensor bytes on the meta device"
    print(f"measured with: {how}; Flux at full width, {FLUX_DEPTH[0]} double + {FLUX_DEPTH[1]} single blocks")
    print(f"{'arch':<9} {'res':>5} {'step':<11} {'mode':<5} {'predicted':>10} {'measured':>10} {'error':>7} "
          f"{'secs':>5}")
    worst = 0.0
    for arch_name, res, kind, mode, *depth in cases(args.quick):
        if depth and device != "meta":
            continue  # a full-size Flux in bf16 on a GPU is the throughput check's job (bench_gpu_train.py)
        started = time.monotonic()
        measured, predicted = measure(arch_name, res, kind, mode, device, *depth)
        error = abs(predicted - measured) / measured
        worst = max(worst, error)
        flag = "" if error <= MAX_ERROR else "  <-- over 20 %"
        name = arch_name + ("*" if depth else "")
        print(f"{name:<9} {res:>5} {kind:<11} {mode:<5} {predicted / GB:>8.2f}GB {measured / GB:>8.2f}GB "
              f"{error:>6.1%} {time.monotonic() - started:>5.0f}{flag}", flush=True)
    flux = load_arch("flux-dev")
    for kind, mode in (("train_ckpt", "int8"), ("train_ckpt", "nf4"), ("generate", "offload")):
        print(f"flux-dev  1024 {kind:<11} {mode:<7} predicted {denoiser_step_bytes(flux, kind, mode, 1024) / GB:.2f} GB "
              f"(bitsandbytes / block swap: measured on CUDA by scripts/gpu_check.sh)")
    print("\nfull-size training run, default mode (auto), whole-run peak (caching / step / sampling):")
    failed = worst > MAX_ERROR
    for name, (mode, peak) in default_peaks().items():
        budget, limit = LIMITS[name]
        over = peak > limit
        failed |= over
        print(f"  {name:<9} {peak:6.2f} GB in {budget} GB ({mode}); limit {limit:g} GB"
              f"{'  <-- over the limit' if over else ''}")
    if not args.quick and device == "meta":
        print("* all 19 double + 38 single blocks: checks the per-block extrapolation")
    print(f"\nworst prediction error {worst:.1%} (limit {MAX_ERROR:.0%}): {'FAIL' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
