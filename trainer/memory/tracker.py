"""Peak live tensor bytes of a block of PyTorch code, on any device (the meta device included).

The measuring stick of ``bench/bench_memory.py`` where ``torch.cuda.max_memory_allocated`` is not available: every
tensor storage an operator creates is counted from its creation until its last reference dies (storages keep one
Python object for their whole life, so a ``weakref.finalize`` fires exactly when the memory would be freed).
It counts tensor bytes only — no allocator rounding, fragmentation, CUDA context or kernel workspaces — so it is a
lower-bound proxy of what the CUDA caching allocator reports.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTracker(TorchDispatchMode):
    """``with PeakTracker(preexisting) as t: …`` then ``t.peak`` (bytes). ``preexisting`` tensors (weights,
    optimizer state) count from the start; everything created inside counts while alive."""

    def __init__(self, *preexisting) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()
        for group in preexisting:
            for t in group:
                self._track(t)
        self.baseline = self.live

    def _track(self, t) -> None:
        if not isinstance(t, torch.Tensor):
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse/quantized subclasses without one storage
            return
        key = id(storage)
        if key in self._seen:
            return
        size = storage.nbytes()
        self._seen.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._track(t)
        return out

    def reset_peak(self) -> None:
        self.peak = self.live
