"""Checkpoint mirror: a checkpoint pushed from one machine's output folder is restored into another machine's empty
folder — whole, only for the same run, never over a newer local one — and older remote checkpoints are dropped.
The real resume across machines (a trainer killed mid-epoch) is in test_multi_machine.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import s3_selected
from worker.checkpoint_mirror import LATEST, CheckpointMirror


@pytest.fixture(params=["memory", "shared-folder",
                        *([pytest.param("s3", marks=pytest.mark.s3)] if s3_selected() else [])])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A checkpoint store: fsspec memory, a plain path (an NFS mount, say) or a bucket on the moto server."""
    if request.param == "shared-folder":
        return str(tmp_path / "shared" / "checkpoints"), {}
    if request.param == "s3":
        server = request.getfixturevalue("moto_server")
        return f"s3://{server.new_bucket()}/checkpoints", server.options()
    return f"memory://ckpt-{uuid.uuid4().hex}", {}


def write_checkpoint(out: Path, epoch: int, fingerprint: str = "fp-1") -> Path:
    """What trainer.checkpoint + train_lora leave after epoch ``epoch``: the checkpoint folder, each saved
    epoch's weights and each epoch's samples."""
    for e in range(1, epoch + 1):
        (out / "epochs").mkdir(parents=True, exist_ok=True)
        (out / "epochs" / f"epoch-{e}.safetensors").write_bytes(f"weights {e}".encode())
        (out / "samples" / f"epoch-{e}").mkdir(parents=True, exist_ok=True)
        (out / "samples" / f"epoch-{e}" / "sample-1.png").write_bytes(f"png {e}".encode())
    ckpt = out / "checkpoints" / f"epoch-{epoch}"
    ckpt.mkdir(parents=True)
    for name in ("lora.safetensors", "optimizer.safetensors", "rng.safetensors"):
        (ckpt / name).write_bytes(f"{name} at {epoch}".encode())
    state = {"epoch": epoch, "epoch_weights": {str(e): f"epochs/epoch-{e}.safetensors" for e in range(1, epoch + 1)},
             "samples": {str(e): [f"samples/epoch-{e}/sample-1.png"] for e in range(1, epoch + 1)}}
    (ckpt / "state.json").write_text(json.dumps({"format": 1, "fingerprint": fingerprint, "state": state}))
    return ckpt


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_push_then_restore_on_another_machine(store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    first, second = tmp_path / "machine-a" / "out", tmp_path / "machine-b" / "out"
    mirror = CheckpointMirror(*store, job_id=7)
    mirror.push(first, write_checkpoint(first, 1))
    mirror.push(first, write_checkpoint(first, 2))
    assert mirror.latest()["epoch"] == 2
    remote = mirror.fs.find(mirror.root)
    assert not [k for k in remote if "/checkpoints/epoch-1/" in k], remote  # older checkpoint dropped
    # Machine B: nothing local. It gets the epoch-2 checkpoint and every file that checkpoint refers to.
    other = CheckpointMirror(*store, job_id=7)
    assert other.restore(second, "fp-1", local_epoch=0) == 2
    expected = {k: v for k, v in tree(first).items() if not k.startswith("checkpoints/epoch-1/")}
    assert tree(second) == expected
    # Another job's mirror is separate.
    assert CheckpointMirror(*store, job_id=8).restore(tmp_path / "c", "fp-1", local_epoch=0) is None
    mirror.delete()
    assert mirror.latest() is None and not mirror.fs.exists(mirror.root + "/" + LATEST)


def test_restore_skips_foreign_or_older_checkpoints(store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    mirror = CheckpointMirror(*store, job_id=3)
    a = tmp_path / "a"
    mirror.push(a, write_checkpoint(a, 1, fingerprint="run-x"))
    # A different training (same job id, other config or images): never mixed in.
    assert mirror.restore(tmp_path / "b", "run-y", local_epoch=0) is None
    assert not (tmp_path / "b").exists()
    # This machine already has as new a checkpoint: kept as is.
    assert mirror.restore(tmp_path / "c", "run-x", local_epoch=1) is None
    assert not (tmp_path / "c").exists()


def test_restore_cut_short_leaves_no_checkpoint(store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """A file listed in latest.json that cannot be fetched: no ``epoch-N`` folder appears (the trainer would
    take it for complete); the error reaches the caller (the training child reports it, retryable)."""
    mirror = CheckpointMirror(*store, job_id=4)
    a = tmp_path / "a"
    mirror.push(a, write_checkpoint(a, 1))
    mirror.fs.rm(mirror.root + "/checkpoints/epoch-1/rng.safetensors")
    with pytest.raises(FileNotFoundError):
        mirror.restore(tmp_path / "b", "fp-1", local_epoch=0)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == []


def test_worker_check_reports_the_checkpoint_store(store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """`atelier worker --check` says where a crashed training resumes from, and whether that store works."""
    from cli.worker_cmd import _check_checkpoints
    from storage.settings import load_settings

    local = load_settings(data_dir=tmp_path)
    ok, detail = _check_checkpoints(local)
    assert ok and "work dir only" in detail
    url, options = store
    ok, detail = _check_checkpoints(load_settings(data_dir=tmp_path, checkpoint_url=url, checkpoint_options=options))
    assert ok and detail == url
    if url.startswith("s3://"):  # the blob store's bucket is the default
        derived = load_settings(data_dir=tmp_path, blob_url=url.rsplit("/", 1)[0], blob_options=options)
        assert derived.checkpoint_store == (url, options)
        bad = {**options, "endpoint_url": "http://127.0.0.1:9"}  # nothing listens there
        ok, detail = _check_checkpoints(load_settings(data_dir=tmp_path, checkpoint_url=url, checkpoint_options=bad))
        assert not ok and url in detail
