"""What one member can make the bot spend: stored bytes per uploaded byte, and peak memory of each heavy task.

    python bench/bench_abuse.py [--images 6] [--megapixels 10]

At the default limits (ATELIER_MAX_STORED_IMAGE_SIDE=2048, zip/upload caps as shipped), on generated
photographic JPEGs (gradients, soft blobs, sensor noise) of ``--megapixels`` each:
  * stored ÷ uploaded bytes of /dataset add, next to what a full-size lossless PNG of the same pixels would cost
    (how ingest stored images before);
  * peak RSS of add, export, contact sheet and zip import, each in a fresh process (so one task's peak is not
    hidden by another's), next to that process's RSS before the task started, against the 300 MB bound;
  * peak RSS of importing a hostile zip (entries of 25 MB that each pass the compression-ratio check), next to
    reading all its entries into memory first, as imports did before.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOUND_MB = 300


def peak_mb() -> float:
    """This process's peak RSS so far. VmHWM, not getrusage's ru_maxrss, which Linux carries over from the
    parent across fork + exec (the parent that generated the photos would set every child's figure)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_NOISE: dict[tuple[int, int], object] = {}


def make_photo(megapixels: float, seed: int) -> bytes:
    """A photographic-ish JPEG (quality 90) at 3:2: smooth gradients plus sensor-like noise (one noise field,
    shifted per image and channel — generating fresh noise would take most of the bench's time)."""
    import numpy as np
    from PIL import Image

    w = int((megapixels * 1e6 * 1.5) ** 0.5)
    h = int(w / 1.5)
    rng = np.random.default_rng(seed)
    if (h, w) not in _NOISE:
        _NOISE[(h, w)] = np.random.default_rng(0).normal(0, 6, (h, w)).astype(np.float32)
    noise = _NOISE[(h, w)]
    y, x = np.ogrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0, 2).tolist() + [rng.uniform(0, 6.28)]
        chan = 127 + 90 * np.sin(x * fx * 6.28 / w + ph).astype(np.float32) * np.cos(y * fy * 6.28 / h)
        chan += np.roll(noise, int(rng.integers(1, w)), axis=1)
        img[..., c] = np.clip(chan, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def lossless_full_size(data: bytes) -> int:
    """Bytes of the same pixels as a full-size PNG (zlib level 1, as ingest stored images before)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG", compress_level=1)
    return len(buf.getvalue())


# ---- child: one task in a fresh process ------------------------------------------------------------------------

async def child(task: str, work: Path) -> dict[str, float]:
    from storage.dataset_views import IncomingFile
    from storage.services import build_services
    from storage.settings import load_settings

    services = await build_services(load_settings(data_dir=work / "data"))
    try:
        me = await services.users.local_actor("bench")
        photos = sorted((work / "photos").glob("*.jpg"))
        out: dict[str, float] = {}
        if task == "add":
            await services.datasets.create(me, "set")
            files = [IncomingFile(p.name, p.read_bytes()) for p in photos]
            before, t0 = peak_mb(), time.perf_counter()
            report = await services.datasets.add_images(me, "set", files)
            added = [f for f in report.files if f.added]
            info = await services.datasets.get(me, "set")
            out["stored"] = sum(i.byte_size for i in info.images or [])
            out["uploaded"] = sum(len(f.data) for f in files)
            out["added"] = len(added)
            del files
        elif task == "export":
            before, t0 = peak_mb(), time.perf_counter()
            async with services.datasets.export_zip(me, "set") as path:
                out["zip_mb"] = path.stat().st_size / 2**20
        elif task == "sheet":
            before, t0 = peak_mb(), time.perf_counter()
            out["sheet_kb"] = len(await services.datasets.contact_sheet(me, "set")) / 1024
        elif task in ("zip", "hostile"):
            name = f"from-{task}"
            await services.datasets.create(me, name)
            before, t0 = peak_mb(), time.perf_counter()
            report = await services.datasets.import_zip(me, name, work / f"{task}.zip")
            out["added"] = sum(1 for f in report.files if f.added)
            out["refused"] = sum(1 for f in report.files if not f.added)
        elif task == "hostile-whole":  # for comparison: every entry read into memory first (how imports worked)
            from storage.images.archive import ZipLimits

            before, t0 = peak_mb(), time.perf_counter()
            contents = await ZipLimits.from_settings(services.settings).read_async(work / "hostile.zip")
            out["entries"] = len(contents.entries)
        else:
            raise SystemExit(f"unknown task {task}")
        out.update(seconds=time.perf_counter() - t0, before_mb=before, peak_mb=peak_mb())
        return out
    finally:
        await services.aclose()


def run_child(task: str, work: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env = {k: v for k, v in env.items() if not k.startswith("ATELIER_")}  # the shipped defaults
    proc = subprocess.run([sys.executable, __file__, "--child", task, str(work)], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"{task} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hostile_zip(path: Path, entries: int = 16, entry_mb: int = 25) -> int:
    """Entries that unpack to ``entry_mb`` each at a compression ratio just under the 200:1 check."""
    import random

    rng = random.Random(7)
    # Mostly zeros with enough random bytes sprinkled in to deflate at ~150:1.
    block = bytearray(entry_mb * 2**20)
    for i in range(0, len(block), 100):
        block[i] = rng.randrange(256)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for k in range(entries):
            block[0] = k  # distinct entries
            zf.writestr(f"{k:03d}.png", bytes(block))
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--megapixels", type=float, default=10.0)
    ap.add_argument("--child", nargs=2, metavar=("TASK", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child[0], Path(args.child[1])))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        work = Path(tmp)
        (work / "photos").mkdir()
        t0 = time.perf_counter()
        photos = [make_photo(args.megapixels, seed=i) for i in range(args.images)]
        for i, data in enumerate(photos):
            (work / "photos" / f"{i:03d}.jpg").write_bytes(data)
        with zipfile.ZipFile(work / "zip.zip", "w", zipfile.ZIP_STORED) as zf:
            for i, data in enumerate(photos):
                zf.writestr(f"{i:03d}.jpg", data)
                zf.writestr(f"{i:03d}.txt", f"photo {i}")
        hostile_bytes = hostile_zip(work / "hostile.zip")
        old_bytes = sum(lossless_full_size(d) for d in photos)
        uploaded = sum(len(d) for d in photos)
        print(f"{args.images} JPEGs of {args.megapixels:g} MP ({uploaded / 2**20:.1f} MB uploaded), "
              f"prepared in {time.perf_counter() - t0:.1f} s\n")

        results = {task: run_child(task, work)
                   for task in ("add", "export", "sheet", "zip", "hostile", "hostile-whole")}
        add = results["add"]
        print(f"stored ÷ uploaded: {add['stored'] / add['uploaded']:.2f}x (≤ 2x required) — a full-size lossless "
              f"PNG of the same pixels: {old_bytes / uploaded:.2f}x  ({add['added']:.0f} images added)")
        print(f"\npeak RSS of one task in a fresh process (bound {BOUND_MB} MB):")
        labels = {"add": f"add {args.images} photos", "export": "export .zip", "sheet": "contact sheet",
                  "zip": f"zip import ({args.images} photos + captions)",
                  "hostile": f"hostile zip ({hostile_bytes / 2**20:.0f} MB, 16 × 25 MB entries)",
                  "hostile-whole": "  the same, all entries read first (before)"}
        for task, r in results.items():
            verdict = "" if task == "hostile-whole" else "ok" if r["peak_mb"] < BOUND_MB else "OVER"
            print(f"  {labels[task]:<44} peak {r['peak_mb']:6.0f} MB  (before the task {r['before_mb']:4.0f} MB, "
                  f"+{r['peak_mb'] - r['before_mb']:4.0f} MB)  {r['seconds']:5.1f} s  {verdict}")


if __name__ == "__main__":
    main()
