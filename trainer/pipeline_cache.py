"""Resident pipelines (bounded LRU per base model) and the LoRA adapters cached inside each one.

Loading a base model costs seconds to minutes and loading a LoRA from disk tens of milliseconds, while switching
between adapters already in memory costs a few; so pipelines stay resident, adapters are loaded once per Element
key and then only switched, and both caches evict their least recently used entry when full.
"""

from __future__ import annotations

import gc
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.api import BaseModelRef, LoraRef
from trainer.lora_io import load_lora_into


@dataclass
class AdapterSlot:
    name: str  # peft adapter name (module-name safe)
    path: Path


def adapter_name_for(key: str, serial: int) -> str:
    """A peft-safe adapter name (no dots) that still shows which Element it is when debugging."""
    return f"el{serial}_" + re.sub(r"[^A-Za-z0-9_]", "_", key)[:40]


@dataclass
class ResidentPipeline:
    """One loaded base model, its lazily built img2img twin, and the adapters loaded into it (LRU order)."""

    ref: BaseModelRef
    pipe: Any
    counters: Counter = field(default_factory=Counter)
    mode: str = "bf16"  # memory mode it was loaded in (trainer.memory.modes)
    adapters: OrderedDict[str, AdapterSlot] = field(default_factory=OrderedDict)
    lora_enabled: bool = True
    _active: tuple | None = None  # (names, weights) last given to set_adapters; skip the call when unchanged
    _img2img: Any = None
    _serial: int = 0

    def img2img(self):
        """The image-to-image pipeline sharing this pipeline's modules (``from_pipe``: nothing reloaded)."""
        if self._img2img is None:
            from trainer.loading import pipeline_class

            self._img2img = pipeline_class(self.ref.family, img2img=True).from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def activate(self, loras: Sequence[LoraRef], max_adapters: int) -> None:
        """Make exactly ``loras`` active at their strengths, loading missing ones and evicting old ones (LRU)."""
        if not loras:
            if self.adapters and self.lora_enabled:
                self.pipe.disable_lora()
                self.lora_enabled = False
            return
        wanted = {lora.key for lora in loras}
        for lora in loras:
            slot = self.adapters.get(lora.key)
            if slot is not None and slot.path != Path(lora.path):
                self._delete(lora.key)  # same key, different file: the key no longer names these weights
                slot = None
            if slot is None:
                self._evict_until(max_adapters - 1, keep=wanted)
                self._serial += 1
                slot = AdapterSlot(adapter_name_for(lora.key, self._serial), Path(lora.path))
                self._active = None  # loading makes the new adapter the active one
                load_lora_into(self.pipe, slot.path, slot.name)
                self.adapters[lora.key] = slot
                self.counters["adapter_loads"] += 1
            self.adapters.move_to_end(lora.key)
        if not self.lora_enabled:
            self.pipe.enable_lora()
            self.lora_enabled = True
        active = (tuple(self.adapters[lora.key].name for lora in loras), tuple(float(lo.strength) for lo in loras))
        if active != self._active:
            self.pipe.set_adapters(list(active[0]), adapter_weights=list(active[1]))
            self._active = active
            self.counters["adapter_switches"] += 1

    def _evict_until(self, size: int, keep: set[str]) -> None:
        for key in [k for k in self.adapters if k not in keep]:
            if len(self.adapters) <= size:
                break
            self._delete(key)
            self.counters["adapter_evictions"] += 1

    def _delete(self, key: str) -> None:
        slot = self.adapters.pop(key)
        self._active = None
        self.pipe.delete_adapters(slot.name)

    def release(self) -> None:
        """Drop references so the weights can be freed (the caller then collects garbage / empties the GPU cache)."""
        self._img2img = None
        self.pipe = None
        self.adapters.clear()


class PipelineCache:
    """A bounded LRU of :class:`ResidentPipeline` keyed by base model; evicted pipelines are released."""

    def __init__(self, loader: Callable[[BaseModelRef, str], Any], max_pipelines: int = 2,
                 counters: Counter | None = None) -> None:
        if max_pipelines < 1:
            raise ValueError("max_pipelines must be at least 1")
        self._loader = loader
        self._max = max_pipelines
        self._entries: OrderedDict[BaseModelRef, ResidentPipeline] = OrderedDict()
        self.counters = counters if counters is not None else Counter()

    def __contains__(self, ref: BaseModelRef) -> bool:
        return ref in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[BaseModelRef]:
        """Resident base models, least recently used first."""
        return list(self._entries)

    def get(self, ref: BaseModelRef, mode: str = "bf16") -> ResidentPipeline:
        """The resident pipeline for ``ref`` in memory ``mode``, loading it (and evicting the LRU one first if
        full) when absent. A copy of ``ref`` in another mode is released *before* the new one loads: one base is
        never held twice."""
        entry = self._entries.get(ref)
        if entry is not None and entry.mode == mode:
            self._entries.move_to_end(ref)
            return entry
        if entry is not None:
            self._evict(ref)
        while len(self._entries) >= self._max:
            self._evict_oldest()
        entry = ResidentPipeline(ref=ref, pipe=self._loader(ref, mode), counters=self.counters, mode=mode)
        self.counters["pipeline_loads"] += 1
        self._entries[ref] = entry
        return entry

    def modes(self) -> dict[BaseModelRef, str]:
        return {ref: e.mode for ref, e in self._entries.items()}

    def _evict_oldest(self) -> None:
        self._evict(next(iter(self._entries)))

    def _evict(self, ref: BaseModelRef) -> None:
        entry = self._entries.pop(ref)
        device = getattr(entry.pipe, "device", None)
        entry.release()
        del entry
        self.counters["pipeline_evictions"] += 1
        free_memory(device)

    def clear(self) -> None:
        while self._entries:
            self._evict_oldest()


def free_memory(device=None) -> None:
    gc.collect()
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()
