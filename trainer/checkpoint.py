"""Epoch-end checkpoints: ``out_dir/checkpoints/epoch-N/`` holding LoRA, optimizer, RNG (safetensors) and
counters/schedule/history (JSON). Never pickle.

Written into a temporary sibling and renamed into place, so a folder named ``epoch-N`` is always complete; older
checkpoints are removed only after the new one exists. A run refuses to resume from a checkpoint whose
fingerprint (config + base + dataset) differs, rather than silently mixing two trainings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
# "epoch-N" after N complete epochs; "epoch-N-step-S" mid-epoch, S = global step (save_every_n_steps).
_DIR = re.compile(r"^epoch-(\d+)(?:-step-(\d+))?$")


def _order(m: re.Match) -> tuple[int, int]:
    return int(m.group(1)), int(m.group(2) or 0)


class CheckpointMismatch(ValueError):
    """The output folder holds a checkpoint of a different run."""


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs."""

    epoch: int = 0  # complete epochs
    global_step: int = 0
    epoch_step: int = 0  # batches of epoch ``epoch + 1`` already trained (a mid-epoch checkpoint)
    elapsed_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    samples: dict[int, list[str]] = field(default_factory=dict)  # epoch → paths relative to out_dir
    epoch_weights: dict[int, str] = field(default_factory=dict)  # epoch → path relative to out_dir


@dataclass
class Checkpoint:
    path: Path
    state: TrainState
    lora: dict[str, dict[str, torch.Tensor]]
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    rng: dict[str, torch.Tensor]
    ema: dict | None = None  # diffusers EMAModel state (shadow params as tensors)


def checkpoints_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, pstate in sd["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())


def _json_default(value):
    if isinstance(value, tuple | set):
        return list(value)
    if torch.is_tensor(value):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def save_checkpoint(out_dir: Path, *, fingerprint: str, state: TrainState,
                    lora: dict[str, dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
                    scheduler, scaler, rng: dict[str, torch.Tensor], ema=None) -> Path:
    """Write checkpoint ``epoch-<state.epoch>`` (mid-epoch: ``…-step-<global step>``) atomically and drop older
    ones."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{state.epoch}" + (f"-step-{state.global_step}" if state.epoch_step else "")
    tmp = root / f".epoch-{state.epoch}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({f"{comp}.{k}": v.contiguous() for comp, sd in lora.items() for k, v in sd.items()},
                  str(tmp / "lora.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        ema_meta = None
        if ema is not None:
            ema_state = dict(ema.state_dict())
            shadow = ema_state.pop("shadow_params")
            save_file({f"{i}": t.detach().to("cpu").contiguous() for i, t in enumerate(shadow)},
                      str(tmp / "ema.safetensors"))
            ema_meta = ema_state
        sched = scheduler.state_dict()  # lr_lambdas are plain closures → stored as None, rebuilt from config
        _write_json(tmp / "state.json", {
            "format": FORMAT_VERSION, "fingerprint": fingerprint, "components": sorted(lora),
            "state": {**state.__dict__, "samples": {str(k): v for k, v in state.samples.items()},
                      "epoch_weights": {str(k): v for k, v in state.epoch_weights.items()}},
            "optimizer": opt_meta, "scheduler": sched,
            "scaler": scaler.state_dict() if scaler is not None else None, "ema": ema_meta,
        })
        final = root / name
        if final.exists():  # left over from an earlier attempt at this epoch: move aside, then replace
            stale = root / f".stale-{uuid.uuid4().hex[:8]}"
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mine = _order(_DIR.match(name))
    for other in root.iterdir():
        m = _DIR.match(other.name)
        if (m and _order(m) < mine) or other.name.startswith((".stale-", ".epoch-")):
            shutil.rmtree(other, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path, fingerprint: str) -> Checkpoint | None:
    """The newest complete checkpoint under ``out_dir`` (None when there is none)."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return None
    found = sorted(((_order(m), p) for p in root.iterdir() if (m := _DIR.match(p.name))
                    and (p / "state.json").is_file()), reverse=True)
    if not found:
        return None
    path = found[0][1]
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointMismatch(f"checkpoint {path} has format {meta.get('format')}, expected {FORMAT_VERSION}; "
                                 "use a fresh output folder")
    if meta["fingerprint"] != fingerprint:
        raise CheckpointMismatch(
            f"{out_dir} holds a checkpoint of a different training (config, base model or images changed); "
            "use a fresh output folder or delete its checkpoints/ to start over")
    raw = meta["state"]
    state = TrainState(
        epoch=raw["epoch"], global_step=raw["global_step"], epoch_step=raw.get("epoch_step", 0),
        elapsed_seconds=raw["elapsed_seconds"],
        losses=list(raw["losses"]),
        samples={int(k): list(v) for k, v in raw["samples"].items()},
        epoch_weights={int(k): v for k, v in raw["epoch_weights"].items()},
    )
    lora: dict[str, dict[str, torch.Tensor]] = {c: {} for c in meta["components"]}
    for key, value in load_file(str(path / "lora.safetensors")).items():
        comp, rest = key.split(".", 1)
        lora[comp][rest] = value
    optimizer = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
    ema = None
    if meta.get("ema") is not None:
        shadow = load_file(str(path / "ema.safetensors"))
        ema = {**meta["ema"], "shadow_params": [shadow[str(i)] for i in range(len(shadow))]}
    return Checkpoint(path=path, state=state, lora=lora, optimizer=optimizer, scheduler=meta["scheduler"],
                      scaler=meta["scaler"], rng=load_file(str(path / "rng.safetensors")), ema=ema)


def rng_state(noise_gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The generator the loop draws from, plus torch's global CPU/CUDA states (dropout etc.)."""
    state = {"noise": noise_gen.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda_{i}"] = s
    return state


def restore_rng(noise_gen: torch.Generator, rng: dict[str, torch.Tensor]) -> None:
    noise_gen.set_state(rng["noise"])
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted((k for k in rng if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
