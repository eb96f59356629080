"""Zip import/export: kohya pairing, zip slip, zip bombs, encryption, lies in headers, not-a-zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from storage.errors import InvalidInput
from storage.images.archive import ArchiveRejected, ZipLimits, read_zip
from storage.images.archive_writer import build_zip
from storage.images.ingest import IngestLimits, normalize_image
from storage.settings import load_settings
from tests.storage import hostile as H

KW = dict(max_entries=50, max_total_uncompressed=100 * 2**20, max_entry_bytes=8 * 2**20)


@pytest.fixture(scope="module")
def img() -> bytes:
    return H.photo_png(320, 320, seed=11)


def test_kohya_pairs_captions_nested_and_ignores_clutter(img: bytes):
    data = H.make_zip([
        ("set/10.png", img), ("set/10.txt", "tag ten,\n  second line "),
        ("set/2.png", img), ("set/2.TXT", "\ufefftag two"),
        ("cat.jpg", img), ("cat.caption", "a cat"),
        ("nocap.webp", img),
        ("__MACOSX/set/._2.png", b"junk"), (".DS_Store", b"junk"), ("set/.hidden.png", img),
        ("Thumbs.db", b"junk"), ("folder/", b""),
        ("orphan.txt", "no image for me"),
        ("notes.md", b"# readme"),
    ])
    out = read_zip(data, **KW)
    assert [(e.name, e.caption) for e in out.entries] == [
        ("cat.jpg", "a cat"), ("nocap.webp", ""), ("notes.md", ""),
        ("set/2.png", "tag two"), ("set/10.png", "tag ten, second line"),
    ]
    assert all(e.data == img for e in out.entries if e.name != "notes.md")
    assert out.refused == [("orphan.txt", "caption file with no image of the same name next to it")]


def test_symlinks_refused_and_utf16_captions_read(img: bytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("a.png", img)
        zf.writestr("a.txt", "ünïcode caption".encode("utf-16"))
    out = read_zip(buf.getvalue(), **KW)
    assert [(e.name, e.caption) for e in out.entries] == [("a.png", "ünïcode caption")]
    assert out.refused == [("link.png", "a symbolic link, not a file; zip the files themselves")]


def test_zip_slip_entries_refused_with_reason(img: bytes):
    out = read_zip(H.zip_slip(img), **KW)
    assert [e.name for e in out.entries] == ["good.png"]
    refused = dict(out.refused)
    assert set(refused) == set(H.SLIP_NAMES)
    assert "`..`" in refused["../evil.png"] and "`..`" in refused["ok/../../evil.png"]
    assert "absolute" in refused["/etc/cron.d/evil.png"]
    assert "drive letter" in refused["C:/Windows/evil.png"]
    assert "backslash" in refused["a\\..\\..\\evil.png"]


@pytest.fixture(scope="module")
def bomb(img: bytes) -> bytes:
    data = H.zip_bomb(64, image=img)
    assert len(data) < 1_000_000  # 64 MiB of zeros in well under 1 MB
    return data


def test_zip_bomb_stopped_by_entry_cap(bomb: bytes):
    out = read_zip(bomb, **KW)  # 8 MB entry cap is hit before the 200:1 ratio cap (~13 MB here)
    assert [e.name for e in out.entries] == ["real.png"]
    assert out.refused == [("bomb.png", "file larger than 8 MB when unpacked; resize it before zipping")]


def test_zip_bomb_stopped_by_ratio_cap(bomb: bytes):
    out = read_zip(bomb, **{**KW, "max_entry_bytes": 128 * 2**20, "max_total_uncompressed": 2**30})
    assert [e.name for e in out.entries] == ["real.png"]
    (name, reason), = out.refused
    assert name == "bomb.png" and "zip bomb" in reason


def test_per_entry_byte_cap_without_ratio(img: bytes):
    big = H.photo_jpeg(1200, 1200, seed=1)
    out = read_zip(H.make_zip([("big.png", big), ("small.png", img)], zipfile.ZIP_STORED),
                   **{**KW, "max_entry_bytes": len(big) - 1})
    assert [e.name for e in out.entries] == ["small.png"]
    assert out.refused[0][0] == "big.png" and "larger than" in out.refused[0][1]


def test_total_uncompressed_cap(img: bytes):
    entries = [(f"{i}.png", img) for i in range(5)]
    out = read_zip(H.make_zip(entries), **{**KW, "max_total_uncompressed": len(img) * 3 + 10})
    assert [e.name for e in out.entries] == ["0.png", "1.png", "2.png"]
    assert [n for n, _ in out.refused] == ["3.png", "4.png"]
    assert all("in total" in r for _, r in out.refused)


def test_too_many_entries_rejected_before_reading(img: bytes):
    data = H.make_zip([(f"{i}.png", b"x") for i in range(30)])
    with pytest.raises(ArchiveRejected, match="too many files"):
        read_zip(data, **{**KW, "max_entries": 10})
    with pytest.raises(ArchiveRejected, match=r"too many files \(12; the limit is 10\)"):
        read_zip(H.make_zip([(f"{i}.png", b"x") for i in range(12)]), **{**KW, "max_entries": 10})


def test_entry_count_is_checked_while_reading_when_the_end_record_lies(monkeypatch: pytest.MonkeyPatch):
    data = bytearray(H.make_zip([(f"{i}.png", b"x") for i in range(5000)]))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (7).to_bytes(2, "little") * 2  # "7 entries" on this disk and in total
    parsed = []
    real = zipfile.ZipFile
    monkeypatch.setattr("storage.images.archive.zipfile.ZipFile", lambda *a, **k: parsed.append(1) or real(*a, **k))
    with pytest.raises(ArchiveRejected, match=r"too many files \(165; the limit is 50\)"):
        read_zip(bytes(data), **KW)
    assert parsed == [], "refused before zipfile parsed thousands of directory records"


def test_encrypted_entry_refused(img: bytes):
    out = read_zip(H.zip_with_encrypted_entry(img), **KW)
    assert [e.name for e in out.entries] == ["plain.png"]
    assert out.refused[0][0] == "locked.png" and "encrypted" in out.refused[0][1]


def test_lying_header_sizes_are_not_trusted(img: bytes):
    out = read_zip(H.zip_lying_sizes(img), **KW)
    assert out.entries == []
    assert out.refused[0][0] == "liar.png" and "damaged" in out.refused[0][1]


@pytest.mark.parametrize("data", [b"", b"not a zip at all", H.photo_png(64, 64), b"PK\x05\x06" + b"\0" * 10])
def test_not_a_zip(data: bytes):
    with pytest.raises(ArchiveRejected) as info:
        read_zip(data, **KW)
    assert isinstance(info.value, InvalidInput) and info.value.hint


def test_archive_byte_cap(img: bytes):
    data = H.make_zip([("a.png", img)])
    with pytest.raises(ArchiveRejected, match="too large"):
        read_zip(data, **KW, max_archive_bytes=len(data) - 1)


def test_reads_from_path_and_settings(tmp_path: Path, img: bytes):
    p = tmp_path / "set.zip"
    p.write_bytes(H.make_zip([("a.png", img), ("a.txt", "hello")]))
    limits = ZipLimits.from_settings(load_settings(max_zip_entries=3, max_upload_bytes=2**20))
    assert (limits.max_entries, limits.max_entry_bytes) == (3, 2**20)
    out = limits.read(p)
    assert [(e.name, e.caption) for e in out.entries] == [("a.png", "hello")]


async def test_read_async(img: bytes):
    out = await ZipLimits().read_async(H.make_zip([("a.png", img)]))
    assert len(out.entries) == 1


def test_entries_flow_into_ingest(img: bytes):
    out = read_zip(H.make_zip([("ok.png", img), ("fake.png", H.text_renamed_png())]), **KW)
    results = {e.name: e for e in out.entries}
    assert normalize_image(results["ok.png"].data, IngestLimits()).width == 320
    with pytest.raises(InvalidInput, match="text file"):
        normalize_image(results["fake.png"].data, IngestLimits())


def test_build_zip_roundtrip_and_deterministic(img: bytes):
    items = [("0001.png", img, "first caption"), ("0002.png", img, ""), ("0003.png", b"abc", "third")]
    data = build_zip(items)
    assert data == build_zip(items)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == ["0001.png", "0001.txt", "0002.png", "0003.png", "0003.txt"]
    out = read_zip(data, **KW)
    assert [(e.name, e.data, e.caption) for e in out.entries] == [(n, d, c) for n, d, c in items]


@pytest.mark.parametrize("name", ["../x.png", "/abs.png", "C:/x.png", "a\\b.png", "", ".hidden.png", "dir/"])
def test_build_zip_refuses_unsafe_names(name: str):
    with pytest.raises(ValueError):
        build_zip([(name, b"x", "")])


def test_build_zip_refuses_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        build_zip([("a.png", b"x", "c"), ("a.png", b"y", "")])
