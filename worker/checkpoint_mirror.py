"""Training checkpoints mirrored to an fsspec URL (by default the blob store's bucket, see
``Settings.checkpoint_store``), so a worker on another machine — with no disk shared with the one that crashed —
resumes the training from its last completed epoch.

Under ``<url>/jobs/<job id>/`` the mirror keeps the files of the trainer's output folder that a resume needs, at
the same relative paths: ``checkpoints/epoch-N/*`` (LoRA, optimizer, RNG, state), ``epochs/epoch-K.safetensors``
(each saved epoch, for the final grid) and ``samples/epoch-K/*`` (each epoch's samples, for the result), plus
``latest.json`` naming the checkpoint's epoch, its run fingerprint and its files. ``latest.json`` is written last,
so a reader never follows it to half a checkpoint; an object store writes each object whole.

Plain fsspec, no torch: the worker uses it to delete a finished job's mirror, the training child to push and
restore.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import fsspec

log = logging.getLogger(__name__)
LATEST = "latest.json"


def open_store(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """(fsspec filesystem, root path) for a checkpoint store URL."""
    # Another machine's worker writes here too: never trust a cached listing. A local path (a shared mount)
    # needs its folders created; object stores have none.
    local = "://" not in url or url.startswith("file://")
    return fsspec.core.url_to_fs(url, **{"use_listings_cache": False, **({"auto_mkdir": True} if local else {}),
                                         **options})


class CheckpointMirror:
    """The remote copy of one job's resume point."""

    def __init__(self, url: str, options: dict[str, Any], job_id: int) -> None:
        self.url = url
        self.fs, root = open_store(url, options)
        self.root = f"{root.rstrip('/')}/jobs/{int(job_id)}"

    @classmethod
    def for_job(cls, store: tuple[str, dict[str, Any]] | None, job_id: int) -> CheckpointMirror | None:
        """The mirror for ``job_id`` in ``store`` (``Settings.checkpoint_store``); None when not configured."""
        return cls(store[0], store[1], job_id) if store else None

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    # ---- push (after each checkpoint) -------------------------------------------------------------------------

    def push(self, out_dir: Path, checkpoint: Path) -> None:
        """Upload checkpoint folder ``checkpoint`` (``out_dir/checkpoints/epoch-N``) and the files its state
        refers to, then point ``latest.json`` at it and drop older remote checkpoints."""
        meta = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        epoch = int(meta["state"]["epoch"])
        ckpt_files = [str(p.relative_to(out_dir)) for p in sorted(checkpoint.iterdir()) if p.is_file()]
        referenced = [*meta["state"]["epoch_weights"].items(),
                      *((e, rel) for e, rels in meta["state"]["samples"].items() for rel in rels)]
        for rel in ckpt_files:
            self.fs.put_file(str(out_dir / rel), self._key(rel))
        for e, rel in referenced:
            # Files of earlier epochs are already there from earlier pushes (or the restore this run began with);
            # this epoch's may be left from an attempt that died mid-push, so those are always written.
            if int(e) == epoch or not self.fs.exists(self._key(rel)):
                self.fs.put_file(str(out_dir / rel), self._key(rel))
        files = ckpt_files + [rel for _, rel in referenced]
        self.fs.pipe_file(self._key(LATEST), json.dumps(
            {"epoch": epoch, "fingerprint": meta["fingerprint"], "checkpoint": checkpoint.name, "files": files}
        ).encode())
        self._drop_older(checkpoint.name)

    def _drop_older(self, keep: str) -> None:
        base = self._key("checkpoints")
        try:
            entries = self.fs.ls(base, detail=False, refresh=True)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.rstrip("/").rsplit("/", 1)[-1] != keep:
                self.fs.rm(entry, recursive=True)

    # ---- restore (before training) ----------------------------------------------------------------------------

    def latest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self._key(LATEST)))
        except FileNotFoundError:
            return None

    def restore(self, out_dir: Path, fingerprint: str, local_epoch: int) -> int | None:
        """Download the remote checkpoint into ``out_dir`` when it is of this run (same ``fingerprint``) and
        newer than ``local_epoch`` (the newest local checkpoint, 0 for none). Returns the epoch restored."""
        latest = self.latest()
        if latest is None or int(latest["epoch"]) <= local_epoch:
            return None
        if latest["fingerprint"] != fingerprint:
            log.warning("%s holds a checkpoint of another training; starting without it", self._key(LATEST))
            return None
        prefix = f"checkpoints/{latest['checkpoint']}/"
        ckpt_root = out_dir / "checkpoints"
        ckpt_root.mkdir(parents=True, exist_ok=True)
        # The checkpoint folder is assembled beside its final name and renamed into place, so a restore cut short
        # leaves no folder the trainer would take for complete (it removes ".epoch-*" leftovers itself).
        staging = ckpt_root / f".epoch-{latest['epoch']}.restore-{uuid.uuid4().hex[:8]}"
        try:
            for rel in latest["files"]:
                dest = staging / rel.removeprefix(prefix) if rel.startswith(prefix) else out_dir / rel
                _download(self.fs, self._key(rel), dest)
            final = ckpt_root / latest["checkpoint"]
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return int(latest["epoch"])

    # ---- delete (the job is over) ------------------------------------------------------------------------------

    def delete(self) -> None:
        try:
            self.fs.rm(self.root, recursive=True)
        except FileNotFoundError:
            pass


def _download(fs: Any, key: str, dest: Path) -> None:
    """Copy one object to ``dest`` through a temp file beside it (never a half-written file under its name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        fs.get_file(key, str(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
