"""The worker's cache of Element weight files for the engine stays bounded, least recently used going first."""

from __future__ import annotations

import os
from pathlib import Path

from worker.generate_job import _prune


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    files = []
    for i in range(5):
        f = tmp_path / f"{i}.safetensors"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
        files.append(f)
    os.utime(files[0], (2000, 2000))  # used again just now
    (tmp_path / "notes.txt").write_text("not a weight file")
    _prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.safetensors", "4.safetensors", "notes.txt"]
