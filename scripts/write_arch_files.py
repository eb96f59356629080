"""Write ``trainer/memory/archs/<base>.json``: the real base models' configs, their parameter counts and bytes per
memory mode (built on the meta device), and activation figures calibrated by measuring one training step, one
generation step and one VAE decode at a reference resolution (trainer.memory.measure). Run after changing
``trainer/memory/real_configs.py``; ``bench/bench_memory.py`` checks the planner against fresh measurements."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402

from trainer.families.flux import FLUX_TARGETS  # noqa: E402
from trainer.memory.build import build_component, count_params  # noqa: E402
from trainer.memory.measure import (  # noqa: E402
    SD_TARGETS, Shape, build_denoiser, generate_step_peak, reduced, train_step_peak, vae_decode_peak)
from trainer.memory.real_configs import REAL_ARCHS  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "trainer" / "memory" / "archs"
CALIBRATION_RES = {"sd15": 512, "sdxl": 1024, "flux": 512}
GB = 1e9


def nbytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + \
        sum(b.numel() * b.element_size() for b in module.buffers())


def linear_params(module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def lora_per_rank(model, family: str) -> int:
    model.add_adapter(LoraConfig(r=1, lora_alpha=1, target_modules=FLUX_TARGETS if family == "flux" else SD_TARGETS))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weights(arch: dict) -> dict:
    """Parameters, bytes per mode, LoRA parameters per rank and the largest offload group of the denoiser."""
    model = build_denoiser(arch, "bf16", "meta")
    info = {"params": count_params(model), "linear_params": linear_params(model),
            "bytes_bf16": nbytes(model), "bytes_fp8": nbytes(build_denoiser(arch, "fp8", "meta"))}
    blocks = [m for m in model.children() if isinstance(m, torch.nn.ModuleList | torch.nn.Sequential)]
    groups = [nbytes(b) for lst in blocks for b in lst]
    info["largest_block_bytes_bf16"] = max(groups)
    info["outside_blocks_bytes_bf16"] = info["bytes_bf16"] - sum(groups)
    info["lora_params_per_rank"] = lora_per_rank(model, arch["family"])
    return info


def state_bytes(info: dict, mode: str, rank: int = 16) -> int:
    return info[f"bytes_{mode}"] + 16 * rank * info["lora_params_per_rank"]  # fp32 LoRA + grad + 2 Adam moments


def calibrate_sd(arch: dict, info: dict) -> dict:
    res = CALIBRATION_RES[arch["family"]]
    px = (res // arch["vae_downscale"]) ** 2
    out: dict = {"resolution": res}
    for mode in ("bf16", "fp8"):
        for ckpt in (True, False):
            peak = train_step_peak(arch, mode, Shape(res), checkpointing=ckpt)
            out[f"train_{mode}_{'ckpt' if ckpt else 'full'}_per_px"] = (peak - state_bytes(info, mode)) / px
        gen = generate_step_peak(arch, mode, Shape(res))
        out[f"generate_{mode}_per_px"] = (gen - info[f"bytes_{mode}"]) / (2 * px)  # CFG doubles the batch
    return out


def calibrate_flux(arch: dict) -> dict:
    """Per-token activation bytes: a base term plus one per double and per single block, fitted on three
    reduced-depth transformers (1+1, 2+1, 1+2 blocks) at full width."""
    res = CALIBRATION_RES["flux"]
    tokens = (res // arch["vae_downscale"] // 2) ** 2 + arch["text_tokens"]
    points = [(1, 1), (2, 1), (1, 2)]
    out: dict = {"resolution": res}
    for mode in ("bf16", "fp8"):
        for kind in ("train_ckpt", "train_full", "generate"):
            acts = []
            for d, s in points:
                small = reduced(arch, d, s)
                info = weights(small)
                if kind == "generate":
                    peak = generate_step_peak(small, mode, Shape(res))
                    acts.append((peak - info[f"bytes_{mode}"]) / tokens)
                else:
                    peak = train_step_peak(small, mode, Shape(res), checkpointing=kind == "train_ckpt")
                    acts.append((peak - state_bytes(info, mode)) / tokens)
            per_double, per_single = acts[1] - acts[0], acts[2] - acts[0]
            out[f"{kind}_{mode}_per_token"] = {"base": acts[0] - per_double - per_single,
                                               "double": per_double, "single": per_single}
    return out


def block_weights(arch: dict) -> dict:
    """Bytes and LoRA parameters of one double and one single Flux block (for reduced-depth planning)."""
    a, b, c = (weights(reduced(arch, d, s)) for d, s in [(1, 1), (2, 1), (1, 2)])
    keys = ["params", "linear_params", "bytes_bf16", "bytes_fp8", "lora_params_per_rank"]
    return {"double": {k: b[k] - a[k] for k in keys}, "single": {k: c[k] - a[k] for k in keys}}


def vae_figures(arch: dict) -> dict:
    spec = arch["components"]["vae"]
    vae = build_component(spec["class"], spec["config"], dtype=torch.bfloat16)
    res = 512
    peak = vae_decode_peak(arch, Shape(res))
    return {"decode_per_px": (peak - nbytes(vae)) / res ** 2, "tile_px": spec["config"]["sample_size"] ** 2}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    only = sys.argv[1:]
    for name, arch in REAL_ARCHS.items():
        if only and name not in only:
            continue
        doc = {"name": name, "family": arch["family"], "text_tokens": arch["text_tokens"],
               "vae_downscale": arch["vae_downscale"], "components": {}}
        for cname, spec in arch["components"].items():
            module = build_component(spec["class"], spec["config"])
            doc["components"][cname] = {"class": spec["class"], "config": spec["config"],
                                        "params": count_params(module)}
        doc["denoiser"] = weights(arch)
        if arch["family"] == "flux":
            cfg = arch["components"]["denoiser"]["config"]
            doc["denoiser"]["blocks"] = {"double": cfg["num_layers"], "single": cfg["num_single_layers"],
                                         **block_weights(arch)}
            doc["activations"] = calibrate_flux(arch)
        else:
            doc["activations"] = calibrate_sd(arch, doc["denoiser"])
        doc["vae"] = vae_figures(arch)
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{name}: denoiser {doc['denoiser']['params'] / 1e9:.3f} B params, "
              f"{doc['denoiser']['bytes_bf16'] / GB:.2f} GB bf16")


if __name__ == "__main__":
    main()
