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
    SD_TARGETS,
    Shape,
    build_denoiser,
    generate_step_peak,
    reduced,
    train_step_peak,
    vae_decode_peak,
)
from trainer.memory.real_configs import REAL_ARCHS  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "trainer" / "memory" / "archs"
CALIBRATION_RES = {"sd15": (512, 768), "sdxl": (768, 1024), "flux": (512, 1024)}
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


def _line(x0: float, y0: float, x1: float, y1: float) -> dict:
    """``y = fixed + per_unit · x`` through two measurements."""
    slope = (y1 - y0) / (x1 - x0)
    return {"fixed": y0 - slope * x0, "per_unit": slope}


KINDS = [("train_ckpt", "bf16"), ("train_full", "bf16"), ("generate", "bf16"), ("train_ckpt", "fp8"),
         ("generate", "fp8")]  # fp8 without checkpointing keeps upcast copies for backward: never planned


def _activation(arch: dict, kind: str, mode: str, res: int) -> float:
    """Measured peak minus what the planner counts separately (weights, LoRA state)."""
    info = weights(arch)
    if kind == "generate":
        return generate_step_peak(arch, mode, Shape(res)) - info[f"bytes_{mode}"]
    return train_step_peak(arch, mode, Shape(res), checkpointing=kind == "train_ckpt") - state_bytes(info, mode)


def calibrate_sd(arch: dict) -> dict:
    """Activation bytes as a line in latent pixels (×2 for the guidance batch of a generation step), from two
    resolutions."""
    lo, hi = CALIBRATION_RES[arch["family"]]
    out: dict = {"resolutions": [lo, hi]}
    for kind, mode in KINDS:
        units = [(r // arch["vae_downscale"]) ** 2 * (2 if kind == "generate" else 1) for r in (lo, hi)]
        acts = [_activation(arch, kind, mode, r) for r in (lo, hi)]
        out[f"{kind}_{mode}"] = _line(units[0], acts[0], units[1], acts[1])
    return out


def calibrate_flux(arch: dict) -> dict:
    """Per block kind (the rest, one double block, one single block) a line in tokens (image + text), fitted on
    three reduced-depth transformers (1+1, 2+1, 1+2 blocks) at full width and two resolutions."""
    lo, hi = CALIBRATION_RES["flux"]
    points = [(1, 1), (2, 1), (1, 2)]
    out: dict = {"resolutions": [lo, hi]}
    for kind, mode in KINDS:
        per_res = {}
        for res in (lo, hi):
            acts = [_activation(reduced(arch, d, s), kind, mode, res) for d, s in points]
            per_res[res] = {"double": acts[1] - acts[0], "single": acts[2] - acts[0]}
            per_res[res]["base"] = acts[0] - per_res[res]["double"] - per_res[res]["single"]
        tokens = [(r // arch["vae_downscale"] // 2) ** 2 + arch["text_tokens"] for r in (lo, hi)]
        out[f"{kind}_{mode}"] = {part: _line(tokens[0], per_res[lo][part], tokens[1], per_res[hi][part])
                                 for part in ("base", "double", "single")}
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
            doc["denoiser"]["blocks"] = {"counts": {"double": cfg["num_layers"], "single": cfg["num_single_layers"]},
                                         **block_weights(arch)}
            doc["activations"] = calibrate_flux(arch)
        else:
            doc["activations"] = calibrate_sd(arch)
        doc["vae"] = vae_figures(arch)
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{name}: denoiser {doc['denoiser']['params'] / 1e9:.3f} B params, "
              f"{doc['denoiser']['bytes_bf16'] / GB:.2f} GB bf16")


if __name__ == "__main__":
    main()
