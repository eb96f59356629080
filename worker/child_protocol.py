"""The contract between the worker and its training subprocess (``python -m worker.train_child spec.json``).

Parent → child: a JSON spec file, plus files in ``control_dir``:
  ``cancel``  — exists: stop at the next step boundary (the trainer raises TrainingCancelled);
  ``pause``   — exists: block at the next step boundary until it is removed (fair-share with generation);
The child writes ``paused`` in ``control_dir`` while it is blocked there. The parent may also hold the child
with SIGSTOP/SIGCONT (the default fair-share mode, see worker.fairshare); the child needs no code for that.

Child → parent: one JSON object per line on stdout (everything else the libraries print goes to stderr):
  ``{"event": "progress", step, total_steps, epoch, total_epochs, loss, lr, eta_seconds, elapsed_seconds,
     phase, sample_paths}``
  ``{"event": "result", ...TrainResult fields, paths as strings}``
  ``{"event": "cancelled"}``
  ``{"event": "error", "code", "message", "hint", "retryable"}``
Exit status: 0 result, 3 cancelled, 2 a person's error (bad data/config: no retry), 1 internal error (retried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID = 2
EXIT_CANCELLED = 3

CANCEL_FILE = "cancel"
PAUSE_FILE = "pause"
PAUSED_FILE = "paused"


@dataclass
class ChildSpec:
    job_id: int
    attempt: int
    base: dict[str, str]  # BaseModelRef fields
    config: dict[str, Any]  # TrainingConfig.model_dump(mode="json")
    items: list[dict[str, str]]  # [{"image_path", "caption"}]
    out_dir: str
    models_dir: str
    control_dir: str
    parent_pid: int
    element_name: str = ""
    category: str = ""
    # {"url", "options"}: where checkpoints are mirrored (worker.checkpoint_mirror); None keeps them local.
    checkpoint_store: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChildSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)
