"""Writing LoRA files: diffusers format (``save_lora_weights``) and kohya/A1111/ComfyUI format with ``ss_*`` metadata.

Kohya key naming, per family (the inverse of diffusers' ``lora_conversion_utils`` readers):
* SD1.5 — ``lora_unet_<diffusers module path with _>`` and ``lora_te_text_model_…`` (kohya trains SD1.x on the
  diffusers UNet, so these are kohya's own names).
* DoRA (SD only) — peft's ``lora_magnitude_vector`` becomes ``dora_scale`` shaped (out, 1) as LyCORIS/ComfyUI
  read it. diffusers' kohya reader drops ``dora_scale`` (a diffusers limitation, it warns), so with diffusers use
  the diffusers-format file, which round-trips DoRA exactly.
* SDXL — ``lora_te1_…``/``lora_te2_…`` and UNet blocks named the SGM way as kohya's own SDXL tools write them
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``, ``middle_block_1``, ``output_blocks_N_1``; the
  inverse of diffusers' ``_maybe_map_sgm_blocks_to_diffusers``), which A1111, ComfyUI and diffusers all read.
* Flux — BFL/kohya names: ``lora_unet_double_blocks_N_img_attn_qkv`` (to_q|to_k|to_v fused), ``…_img_attn_proj``,
  ``…_img_mlp_0/2``, ``txt_*`` for the text stream, ``lora_unet_single_blocks_N_linear1`` (q|k|v|proj_mlp fused)
  and ``…_linear2``. Fused layers get a concatenated down and a block-diagonal up (rank = parts × r, alpha = parts ×
  alpha, so the scale alpha/rank is unchanged) — the layout diffusers' reader splits back losslessly.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

LORA_SUFFIXES = {".lora_A.weight": "lora_down.weight", ".lora_B.weight": "lora_up.weight",
                 ".lora_magnitude_vector": "dora_scale"}
# diffusers' kohya-Flux reader hard-codes FLUX.1's single-block widths for the fused linear1 split.
FLUX1_LINEAR1_DIMS = [3072, 3072, 3072, 12288]


def _split_key(key: str) -> tuple[str, str]:
    for suffix in LORA_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    raise ValueError(f"not a LoRA tensor name: {key}")


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- diffusers
BAKED_SCALE_KEY = "atelier_baked_scale"


def save_diffusers_lora(pipeline_cls, path: Path, lora: dict[str, dict[str, torch.Tensor]],
                        adapter_configs: dict[str, dict], extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``lora`` (component → peft-format tensors) with the pipeline's own ``save_lora_weights`` (keys
    ``<component>.<module>.lora_A.weight`` + the peft config as ``lora_adapter_metadata``), then add our metadata.

    The alpha/rank scale is baked into ``lora_B`` and the stored config says ``lora_alpha = r``: loaders that
    ignore the metadata (a state dict passed to ``load_lora_weights``, ComfyUI reading diffusers keys) assume
    alpha = rank, so baking makes every loader apply the same strength as training did.
    """
    baked: dict[str, dict[str, torch.Tensor]] = {}
    configs: dict[str, dict] = {}
    scales = set()
    for comp, sd in lora.items():
        cfg = dict(adapter_configs[comp])
        scale = float(cfg["lora_alpha"]) / float(cfg["r"])
        scales.add(scale)
        baked[comp] = {k: (v * scale).to(v.dtype) if k.endswith(".lora_B.weight") else v for k, v in sd.items()}
        configs[comp] = {**cfg, "lora_alpha": cfg["r"], "alpha_pattern": {}}
    if len(scales) > 1:
        raise ValueError("all components must share one alpha/rank scale")
    kwargs = {f"{comp}_lora_layers": sd for comp, sd in baked.items()}
    kwargs.update({f"{comp}_lora_adapter_metadata": cfg for comp, cfg in configs.items()})
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        pipeline_cls.save_lora_weights(tmp, weight_name="lora.safetensors", **kwargs)
        written = Path(tmp) / "lora.safetensors"
        with safe_open(str(written), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        metadata.update(extra_metadata or {})
        metadata[BAKED_SCALE_KEY] = repr(scales.pop() if scales else 1.0)
        return _atomic_save(load_file(str(written)), path, metadata)


def read_diffusers_lora(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Inverse of :func:`save_diffusers_lora`: component → peft-format tensors at training scale (fp32)."""
    with safe_open(str(path), framework="pt") as f:
        scale = float((f.metadata() or {}).get(BAKED_SCALE_KEY, "1.0"))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        comp, rest = key.split(".", 1)
        value = value.float()
        out.setdefault(comp, {})[rest] = value / scale if rest.endswith(".lora_B.weight") else value
    return out


# ---------------------------------------------------------------------------------------------- kohya: SD
def _sd_prefix(family: str, component: str) -> str:
    if component == "unet":
        return "lora_unet"
    if component == "text_encoder":
        return "lora_te1" if family == "sdxl" else "lora_te"
    if component == "text_encoder_2":
        return "lora_te2"
    raise ValueError(f"no kohya name for component {component!r}")


_SGM_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.|^mid_block\.attentions\.0\.")


def sgm_unet_path(module: str, layers_per_block: int) -> str:
    """diffusers UNet module path → the SGM path kohya's SDXL UNet uses (attention blocks; others unchanged).

    SGM numbers the UNet's blocks flat: input block ``1 + b·(L+1) + j`` is down block b's j-th layer (index 0 is
    conv_in), output block ``b·(L+1) + j`` likewise with L+1 layers per up block, and inside a block the resnet
    is ``.0`` and the transformer ``.1``; the middle block is resnet, transformer, resnet (``middle_block.1``)."""
    m = _SGM_BLOCK.match(module)
    if not m:
        return module
    rest = module[m.end():]
    if m.group(1) is None:
        return f"middle_block.1.{rest}"
    block, layer = int(m.group(2)), int(m.group(3))
    if m.group(1) == "down_blocks":
        return f"input_blocks.{1 + block * (layers_per_block + 1) + layer}.1.{rest}"
    return f"output_blocks.{block * (layers_per_block + 1) + layer}.1.{rest}"


def kohya_sd(family: str, lora: dict[str, dict[str, torch.Tensor]], alpha: float,
             unet_config=None) -> dict[str, torch.Tensor]:
    """kohya-named SD1.5/SDXL tensors; SDXL UNet names go SGM when ``unet_config`` (for layers_per_block) is given."""
    out: dict[str, torch.Tensor] = {}
    per_block = getattr(unet_config, "layers_per_block", None) if unet_config is not None else None
    sgm = family == "sdxl" and isinstance(per_block, int)
    for comp, sd in lora.items():
        prefix = _sd_prefix(family, comp)
        for key, value in sd.items():
            module, suffix = _split_key(key)
            if comp.startswith("text_encoder") and not module.startswith(("text_model.", "text_projection")):
                module = "text_model." + module  # transformers 5 dropped the wrapper; kohya names keep it
            if comp == "unet" and sgm:
                module = sgm_unet_path(module, per_block)
            name = f"{prefix}_{module.replace('.', '_')}"
            if suffix == ".lora_magnitude_vector":
                value = value.reshape(-1, 1)  # LyCORIS/ComfyUI output-axis DoRA layout: (out, 1)
            out[f"{name}.{LORA_SUFFIXES[suffix]}"] = value
            if suffix == ".lora_A.weight":
                out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


# ---------------------------------------------------------------------------------------------- kohya: Flux
_DOUBLE = [  # (kohya name, [diffusers modules fused in order])
    ("img_attn_qkv", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    ("img_attn_proj", ["attn.to_out.0"]),
    ("img_mlp_0", ["ff.net.0.proj"]),
    ("img_mlp_2", ["ff.net.2"]),
    ("img_mod_lin", ["norm1.linear"]),
    ("txt_attn_qkv", ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]),
    ("txt_attn_proj", ["attn.to_add_out"]),
    ("txt_mlp_0", ["ff_context.net.0.proj"]),
    ("txt_mlp_2", ["ff_context.net.2"]),
    ("txt_mod_lin", ["norm1_context.linear"]),
]
_SINGLE = [
    ("linear1", ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]),
    ("linear2", ["proj_out"]),
    ("modulation_lin", ["norm.linear"]),
]


def _out_features(model: torch.nn.Module, name: str) -> int:
    module = model.get_submodule(name)
    return getattr(module, "base_layer", module).out_features


def _fuse(parts: list[tuple[torch.Tensor, torch.Tensor] | None], dims: list[int], rank: int, in_features: int):
    """Concatenated down / block-diagonal up for a fused layer; missing parts are zero blocks."""
    downs, up = [], torch.zeros(sum(dims), rank * len(parts))
    row = 0
    for j, (part, dim) in enumerate(zip(parts, dims, strict=True)):
        if part is None:
            downs.append(torch.zeros(rank, in_features))
        else:
            down, part_up = part
            downs.append(down.float())
            up[row:row + dim, j * rank:(j + 1) * rank] = part_up.float()
        row += dim
    return torch.cat(downs, dim=0), up


def kohya_flux(lora: dict[str, dict[str, torch.Tensor]], alpha: float, transformer: torch.nn.Module,
               notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """BFL/kohya-named Flux LoRA. Single-block ``linear1`` is written only for FLUX.1 widths (diffusers' reader
    assumes them); for other geometries (the tiny test model) it is left out and a note is added."""
    if set(lora) - {"transformer"}:
        raise ValueError(f"Flux kohya export supports transformer LoRA only, got {sorted(lora)}")
    sd = lora["transformer"]
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in sd:
        module, suffix = _split_key(key)
        if suffix == ".lora_magnitude_vector":
            raise ValueError("DoRA cannot be written in the Flux kohya format")
        if suffix == ".lora_A.weight":
            pairs[module] = (sd[key], sd[f"{module}.lora_B.weight"])
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    blocks = [("transformer_blocks", "double_blocks", _DOUBLE,
               len(getattr(transformer, "transformer_blocks", []))),
              ("single_transformer_blocks", "single_blocks", _SINGLE,
               len(getattr(transformer, "single_transformer_blocks", [])))]
    for diff_prefix, bfl_prefix, table, count in blocks:
        for i in range(count):
            for bfl_name, modules in table:
                names = [f"{diff_prefix}.{i}.{m}" for m in modules]
                present = [pairs.get(n) for n in names]
                if all(p is None for p in present):
                    continue
                dims = [_out_features(transformer, n) for n in names]
                if bfl_name == "linear1" and dims != FLUX1_LINEAR1_DIMS:
                    if notes is not None and not any("linear1" in n for n in notes):
                        notes.append("kohya Flux file: single-block attention (linear1) left out — this model's "
                                     f"widths {dims} are not FLUX.1's, which kohya readers assume")
                    used.update(names)
                    continue
                key = f"lora_unet_{bfl_prefix}_{i}_{bfl_name}"
                rank = next(p for p in present if p is not None)[0].shape[0]
                in_features = next(p for p in present if p is not None)[0].shape[1]
                if len(modules) == 1:
                    down, up = present[0]
                else:
                    down, up = _fuse(present, dims, rank, in_features)
                out[f"{key}.lora_down.weight"] = down
                out[f"{key}.lora_up.weight"] = up
                out[f"{key}.alpha"] = torch.tensor(float(alpha) * len(modules))
                used.update(names)
    unmapped = sorted(set(pairs) - used)
    if unmapped:
        raise ValueError(f"no kohya Flux name for LoRA modules {unmapped[:4]}")
    return out


# ---------------------------------------------------------------------------------------------- metadata
def kohya_metadata(*, family: str, base_name: str, rank: int, alpha: float, use_dora: bool, output_name: str,
                   tag_frequency: dict[str, int], dataset_hash: str, image_count: int, repeats: int,
                   trigger: str, extra: dict[str, str],
                   groups: list[tuple[str, int, int, dict[str, int]]] | None = None) -> dict[str, str]:
    """``ss_*`` keys as kohya-ss sd-scripts writes them (all values strings; JSON where kohya uses JSON).

    ``groups`` — (name, repeats, image count, tag frequency) per image group of a multi-concept dataset — become
    one kohya ``<repeats>_<name>`` dataset folder each."""
    dataset_dir = f"{repeats}_{trigger or output_name}"  # kohya's "<repeats>_<name>" folder convention
    dirs = {dataset_dir: {"n_repeats": repeats, "img_count": image_count}}
    freqs = {dataset_dir: tag_frequency}
    if groups:
        dirs = {f"{r}_{name}": {"n_repeats": r, "img_count": n} for name, r, n, _ in groups}
        freqs = {f"{r}_{name}": f for name, r, _, f in groups}
    meta = {
        "ss_base_model_version": {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}[family],
        "ss_sd_model_name": base_name,
        "ss_network_module": "networks.lora_flux" if family == "flux" else "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_network_args": json.dumps({"algo": "dora"} if use_dora else {}),
        "ss_output_name": output_name,
        "ss_tag_frequency": json.dumps(freqs),
        "ss_dataset_dirs": json.dumps(dirs),
        "ss_dataset_hash": dataset_hash,
        "ss_num_train_images": str(sum(d["n_repeats"] * d["img_count"] for d in dirs.values())),
        "ss_v2": "False",
        "atelier_trigger_word": trigger,
        "atelier_family": family,
    }
    meta.update(extra)
    return meta


def cast_lora(lora: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype) -> dict[str, dict[str, torch.Tensor]]:
    return {comp: {k: v.to(dtype) for k, v in sd.items()} for comp, sd in lora.items()}


def save_kohya_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                    dtype: torch.dtype = torch.float16) -> Path:
    return _atomic_save({k: v.to(dtype) for k, v in tensors.items()}, path, metadata)
