"""Training subprocess entry: ``python -m worker.train_child <spec.json>`` (protocol in worker.child_protocol).

Runs one ``trainer.train.train_lora`` call. It exits when its parent (the worker) dies — through
``PR_SET_PDEATHSIG`` on Linux and a parent-pid watchdog elsewhere — so a killed worker never leaves an orphan
training on the GPU and writing into the job's folder. An exclusive lock on the output folder makes sure two
children can never train into the same folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from storage.redact import mask_urls
from trainer.api import BaseModelRef, TrainingCancelled, TrainItem
from trainer.config import TrainingConfig, validation_message
from worker.child_protocol import (
    CANCEL_FILE,
    EXIT_CANCELLED,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    PAUSE_FILE,
    PAUSED_FILE,
    ChildSpec,
)


class FileControl:
    """TrainControl backed by files in the control folder (see the protocol)."""

    def __init__(self, control_dir: Path, parent_pid: int) -> None:
        self.dir = control_dir
        self.parent_pid = parent_pid

    def orphaned(self) -> bool:
        return os.getppid() != self.parent_pid

    def cancelled(self) -> bool:
        return (self.dir / CANCEL_FILE).exists() or self.orphaned()

    def pause_point(self) -> None:
        if not (self.dir / PAUSE_FILE).exists():
            return
        ack = self.dir / PAUSED_FILE
        ack.write_text(str(os.getpid()))
        try:
            while (self.dir / PAUSE_FILE).exists() and not self.cancelled():
                time.sleep(0.01)
        finally:
            ack.unlink(missing_ok=True)


class Emitter:
    """Writes protocol lines on the real stdout; library prints were redirected to stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, **data}, default=_jsonable)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(type(obj).__name__)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_INTERNAL)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(EXIT_INTERNAL)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _progress_dict(ev: Any) -> dict[str, Any]:
    d = dataclasses.asdict(ev)
    d["sample_paths"] = [str(p) for p in ev.sample_paths]
    return d


def _result_dict(res: Any) -> dict[str, Any]:
    d = dataclasses.asdict(res)
    d["samples"] = {str(k): [str(p) for p in v] for k, v in res.samples.items()}
    d["epoch_weights"] = {str(k): str(v) for k, v in res.epoch_weights.items()}
    return d


def classify(exc: BaseException) -> tuple[str, str, bool]:
    """(error code, hint for a person, retryable?) for an exception out of the trainer."""
    name = type(exc).__name__
    if name == "TrainingDiverged":
        return "diverged", "Train again with a lower learning rate.", False
    if name == "OptimizerUnavailable":
        return "invalid", "Pick the AdamW optimizer, or ask the admin to install the optimizer's package.", False
    if name == "BaseModelLoadError":
        return "base_model", "Ask the admin to check the base model's files or configuration.", False
    if name == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return "oom", "Lower the resolution, batch size or rank, or enable gradient checkpointing.", False
    if isinstance(exc, ValueError | FileNotFoundError):  # DatasetError, CheckpointMismatch, bad options
        return "invalid", "Check the dataset and the training options, then train again.", False
    return "internal", "", True


def _mirror(spec: ChildSpec) -> Any:
    from worker.checkpoint_mirror import CheckpointMirror

    store = spec.checkpoint_store
    return CheckpointMirror(store["url"], store.get("options") or {}, spec.job_id) if store else None


def _local_epoch(out_dir: Path) -> int:
    """The newest complete local checkpoint's epoch (0: none) — this machine ran the job before."""
    epochs = [int(p.name.removeprefix("epoch-")) for p in (out_dir / "checkpoints").glob("epoch-*")
              if p.name.removeprefix("epoch-").isdigit() and (p / "state.json").is_file()]
    return max(epochs, default=0)


def _push(mirror: Any, out_dir: Path, folder: Path) -> None:
    """Copy a fresh checkpoint off the machine. A failed copy does not stop the training: the remote resume
    point stays at the previous epoch and the next checkpoint tries again."""
    try:
        mirror.push(out_dir, folder)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: could not copy {folder.name} to {mirror.url}: {exc}", file=sys.stderr)


def run(spec: ChildSpec, emit: Emitter) -> int:
    """Train; returns the exit status. Heavy imports happen here, after the protocol is set up."""
    from pydantic import ValidationError

    from trainer.train import run_fingerprint, train_lora

    out_dir = Path(spec.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = open(out_dir / ".train.lock", "a+")  # noqa: SIM115 — held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        emit("error", code="busy", message="another training process still owns this job's folder",
             hint="", retryable=True)
        return EXIT_INTERNAL
    try:
        config = TrainingConfig(**spec.config)
    except ValidationError as exc:
        emit("error", code="invalid", message=f"invalid training settings: {validation_message(exc)}",
             hint="Start the training again with corrected options.", retryable=False)
        return EXIT_INVALID
    items = [TrainItem(Path(i["image_path"]), i.get("caption", ""), i.get("group", "")) for i in spec.items]
    base = BaseModelRef(**spec.base)  # type: ignore[arg-type]
    control = FileControl(Path(spec.control_dir), spec.parent_pid)
    mirror = _mirror(spec)
    if mirror is not None:
        try:
            restored = mirror.restore(out_dir, run_fingerprint(config, base, items), _local_epoch(out_dir))
        except Exception as exc:  # noqa: BLE001 — training from zero would overwrite the remote resume point
            emit("error", code="checkpoint_store", message=mask_urls(f"cannot read the checkpoint store {mirror.url}: {exc}"),
                 hint="Check ATELIER_CHECKPOINT_URL / ATELIER_BLOB_URL and their credentials.", retryable=True)
            return EXIT_INTERNAL
        if restored:
            print(mask_urls(f"restored the epoch-{restored} checkpoint from {mirror.url}"), file=sys.stderr)
    try:
        result = train_lora(config, base, items, out_dir, models_dir=Path(spec.models_dir),
                            on_progress=lambda ev: emit("progress", **_progress_dict(ev)), control=control,
                            element_name=spec.element_name, category=spec.category,
                            on_checkpoint=(lambda folder: _push(mirror, out_dir, folder)) if mirror else None)
    except TrainingCancelled:
        emit("cancelled")
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 — classified for the parent, which decides on a retry
        code, hint, retryable = classify(exc)
        if retryable:
            import traceback

            traceback.print_exc()
        emit("error", code=code, message=str(exc) or type(exc).__name__, hint=hint, retryable=retryable)
        return EXIT_INTERNAL if retryable else EXIT_INVALID
    emit("result", **_result_dict(result))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m worker.train_child <spec.json>", file=sys.stderr)
        return EXIT_INVALID
    spec = ChildSpec.from_dict(json.loads(Path(argv[0]).read_text()))
    _die_with_parent(spec.parent_pid)
    # Keep stdout for the protocol: anything a library prints goes to stderr instead.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return run(spec, Emitter(proto))


if __name__ == "__main__":
    sys.exit(main())
