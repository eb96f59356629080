"""Progress shaping and throttling: every event goes to live followers, the job row at most about once a second."""

from __future__ import annotations

import time
from typing import Any

_KEEP = ("phase", "step", "total_steps", "epoch", "total_epochs", "loss", "lr", "eta_seconds", "elapsed_seconds")


def shape(event: dict[str, Any]) -> dict[str, Any]:
    """The progress dict stored on the job row and published to followers (adds ``fraction``)."""
    p = {k: event.get(k) for k in _KEEP if event.get(k) is not None}
    total = event.get("total_steps") or 0
    step = event.get("step") or 0
    p["fraction"] = round(min(1.0, step / total), 4) if total else 0.0
    return p


class Throttle:
    """Says when a progress write is due: at most every ``interval`` seconds, but always on a phase or epoch
    change (those are what people notice) and on the last step."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last_at = 0.0
        self.last_key: tuple[Any, Any] | None = None

    def due(self, p: dict[str, Any]) -> bool:
        now = time.monotonic()
        key = (p.get("phase"), p.get("epoch"))
        last_step = p.get("total_steps") and p.get("step") == p.get("total_steps")
        if key != self.last_key or last_step or now - self.last_at >= self.interval:
            self.last_at = now
            self.last_key = key
            return True
        return False


def epoch_finished(previous: dict[str, Any] | None, current: dict[str, Any]) -> int | None:
    """The epoch that just completed, when ``current`` moved past it (used for milestone notifications)."""
    if previous is None:
        return None
    prev_epoch, cur_epoch = previous.get("epoch"), current.get("epoch")
    if isinstance(prev_epoch, int) and isinstance(cur_epoch, int) and cur_epoch > prev_epoch:
        return prev_epoch
    return None
