"""Dataset use cases against a real database and blob folder."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image

from storage.dataset_views import IncomingFile
from storage.errors import Conflict, InvalidInput, NotFound
from storage.images.ingest import IngestLimits, normalize_image
from storage.settings import load_settings
from tests.conftest import noise_png
from tests.storage.conftest import add_seeds, ready_element


async def test_create_list_get_rename_delete(services, alice) -> None:
    created = await services.datasets.create(alice, "  Cats\u200b ", "my cats")
    assert (created.name, created.description, created.image_count) == ("Cats", "my cats", 0)
    with pytest.raises(Conflict, match="already have a dataset"):
        await services.datasets.create(alice, "CATS")  # unique per owner, case-insensitively
    await services.datasets.create(alice, "dogs")
    assert [d.name for d in await services.datasets.list(alice)] == ["Cats", "dogs"]

    await add_seeds(services, alice, "cats", [1, 2, 3])
    info = await services.datasets.get(alice, "cAtS")
    assert info.image_count == 3 and [i.index for i in info.images] == [1, 2, 3]
    assert {d.name: d.image_count for d in await services.datasets.list(alice)} == {"Cats": 3, "dogs": 0}

    with pytest.raises(Conflict):
        await services.datasets.rename(alice, "cats", "Dogs")
    renamed = await services.datasets.rename(alice, "cats", "Felines")
    assert renamed.name == "Felines" and renamed.image_count == 3
    assert (await services.datasets.rename(alice, "felines", "FELINES")).name == "FELINES"  # case-only rename
    with pytest.raises(NotFound):
        await services.datasets.get(alice, "cats")

    deleted = await services.datasets.delete(alice, "felines")
    assert deleted.image_count == 3
    assert [d.name for d in await services.datasets.list(alice)] == ["dogs"]
    with pytest.raises(NotFound):
        await services.datasets.delete(alice, "felines")


async def test_names_are_validated_and_hostile_text_is_stored_literally(services, alice) -> None:
    for bad in ("", "   ", "\u200b\u200d", "x" * 65):
        with pytest.raises(InvalidInput):
            await services.datasets.create(alice, bad)
    weird = "@everyone'; DROP TABLE datasets;--"
    info = await services.datasets.create(alice, weird, "<@&123> **bold** ||spoiler||")
    assert info.name == weird
    got = await services.datasets.get(alice, weird)
    assert (got.name, got.description) == (weird, "<@&123> **bold** ||spoiler||")
    await services.datasets.add_images(alice, weird, [IncomingFile("@here.png", noise_png(5), "@everyone caption")])
    img = (await services.datasets.get(alice, weird)).images[0]
    assert (img.original_name, img.caption) == ("@here.png", "@everyone caption")


async def test_add_reports_each_file_with_partial_acceptance(services, alice) -> None:
    await services.datasets.create(alice, "mixed")
    files = [
        IncomingFile("good.png", noise_png(1), "a red thing"),
        IncomingFile("notes.png", b"this is just text, renamed"),
        IncomingFile("empty.jpg", b""),
        IncomingFile("../../etc/passwd.png", noise_png(2)),
        IncomingFile("again.png", noise_png(1)),
    ]
    progress: list[tuple[int, int]] = []
    report = await services.datasets.add_images(alice, "mixed", files, on_progress=lambda d, t: progress.append((d, t)))
    assert [f.status for f in report.files] == ["added", "refused", "refused", "added", "refused"]
    assert [f.index for f in report.files if f.added] == [1, 2]
    assert report.files[1].reason and report.files[1].hint
    assert report.files[2].code == "empty"
    assert report.files[3].filename == "passwd.png"  # display name only, never a path
    assert report.files[4].code == "duplicate" and "#1 (good.png)" in report.files[4].reason
    assert report.image_count == 2 and progress[-1] == (5, 5)
    info = await services.datasets.get(alice, "mixed")
    assert [(i.index, i.caption) for i in info.images] == [(1, "a red thing"), (2, "")]
    # Each accepted image is stored as its normalised PNG under its sha256.
    for img in info.images:
        assert await services.blobs.exists(img.blob_hash)


async def test_duplicates_against_the_dataset_are_named(services, alice) -> None:
    await services.datasets.create(alice, "d")
    await add_seeds(services, alice, "d", [1, 2])
    # Same pixels, different encoding (JPEG→no; PNG with other compression): same normalised bytes.
    im = Image.open(io.BytesIO(noise_png(2)))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=9)
    report = await services.datasets.add_images(alice, "d", [IncomingFile("copy.png", buf.getvalue())])
    assert report.files[0].code == "duplicate"
    assert "#2 (img2.png)" in report.files[0].reason
    # A near-duplicate: the same picture slightly brightened.
    bright = Image.eval(im, lambda v: min(255, v + 3))
    buf = io.BytesIO()
    bright.save(buf, "PNG")
    report = await services.datasets.add_images(alice, "d", [IncomingFile("bright.png", buf.getvalue())])
    assert report.files[0].code == "near_duplicate" and "#2 (img2.png)" in report.files[0].reason
    assert (await services.datasets.get(alice, "d")).image_count == 2


async def test_capacity_is_the_largest_family_maximum(make_settings, database_url) -> None:
    from storage.services import build_services

    settings = make_settings(database_url=database_url,
                             image_limits={"min_images": 1, "max_images": {"flux": 4, "sdxl": 3, "sd15": 3}})
    services = await build_services(settings)
    try:
        actor = await services.users.local_actor("cap")
        await services.datasets.create(actor, "small")
        report = await add_seeds(services, actor, "small", [1, 2, 3, 1, 4, 5, 6])
        assert [f.status for f in report.files] == ["added"] * 3 + ["refused", "added", "refused", "refused"]
        assert report.files[3].code == "duplicate" and report.files[5].code == "full"
        assert "full" in report.files[5].reason and report.files[5].hint
        assert services.datasets.counts_vs_limits(await services.datasets.get(actor, "small")) == {
            "flux": (4, 4), "sdxl": (4, 3), "sd15": (4, 3)}
        # A full dataset refuses without decoding anything.
        report = await services.datasets.add_images(actor, "small", [IncomingFile("x.png", b"junk")])
        assert report.files[0].code == "full"
    finally:
        await services.aclose()


async def test_remove_compacts_positions_and_is_all_or_nothing(services, alice) -> None:
    await services.datasets.create(alice, "r")
    await add_seeds(services, alice, "r", [1, 2, 3, 4, 5], captions=True)
    with pytest.raises(InvalidInput, match="#9"):
        await services.datasets.remove_images(alice, "r", [2, 9])
    assert (await services.datasets.get(alice, "r")).image_count == 5  # nothing removed
    removed = await services.datasets.remove_images(alice, "r", [2, 4])
    assert [r.index for r in removed] == [2, 4]
    info = await services.datasets.get(alice, "r")
    assert [(i.index, i.caption) for i in info.images] == [(1, "caption 1"), (2, "caption 3"), (3, "caption 5")]
    # Removed blobs were not referenced anywhere else: their files are gone.
    for r in removed:
        assert not await services.blobs.exists(r.blob_hash)
    # New images continue after the compacted positions.
    report = await add_seeds(services, alice, "r", [6])
    assert report.files[0].index == 4


async def test_set_caption(services, alice) -> None:
    await services.datasets.create(alice, "c")
    await add_seeds(services, alice, "c", [1])
    img = await services.datasets.set_caption(alice, "c", 1, "  a\tcat\n on a mat\u200b ")
    assert img.caption == "a cat on a mat"
    with pytest.raises(InvalidInput, match="#2"):
        await services.datasets.set_caption(alice, "c", 2, "x")


async def test_zip_round_trip_keeps_images_and_captions(services, alice) -> None:
    await services.datasets.create(alice, "src")
    await add_seeds(services, alice, "src", [1, 2, 3], captions=True)
    async with services.datasets.export_zip(alice, "src") as path:
        data = path.read_bytes()
    assert not path.exists(), "the temporary file goes when the block ends"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["0001.png", "0001.txt", "0002.png", "0002.txt", "0003.png", "0003.txt"]
    await services.datasets.create(alice, "copy")
    report = await services.datasets.import_zip(alice, "copy", data)
    assert [f.status for f in report.files] == ["added"] * 3
    src, copy = await services.datasets.get(alice, "src"), await services.datasets.get(alice, "copy")
    assert [(i.blob_hash, i.caption) for i in src.images] == [(i.blob_hash, i.caption) for i in copy.images]
    assert {i.source for i in copy.images} == {"zip"}


async def test_zip_import_lists_refused_entries(services, alice, tmp_path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", noise_png(1))
        zf.writestr("a.txt", "caption for a")
        zf.writestr("../evil.png", noise_png(2))
        zf.writestr("readme.md", "hello")
    path = tmp_path / "in.zip"
    path.write_bytes(buf.getvalue())
    await services.datasets.create(alice, "z")
    report = await services.datasets.import_zip(alice, "z", path)
    added = [f for f in report.files if f.added]
    assert len(added) == 1 and added[0].filename.endswith("a.png")
    assert any("evil" in f.filename for f in report.refused)
    assert (await services.datasets.get(alice, "z")).images[0].caption == "caption for a"
    with pytest.raises(NotFound):
        await services.datasets.import_zip(alice, "missing", path)
    with pytest.raises(InvalidInput):
        await services.datasets.import_zip(alice, "z", b"not a zip at all")


async def test_lint_and_contact_sheet(services, alice) -> None:
    await services.datasets.create(alice, "l")
    await add_seeds(services, alice, "l", [1, 2, 3])
    findings = await services.datasets.lint(alice, "l", category="character", base_model="sdxl")
    assert any(f.severity == "error" and f.code == "too_few_images" for f in findings)
    with pytest.raises(InvalidInput, match="base model"):
        await services.datasets.lint(alice, "l", base_model="nope")
    with pytest.raises(InvalidInput, match="category"):
        await services.datasets.lint(alice, "l", category="nope")
    sheet = await services.datasets.contact_sheet(alice, "l")
    assert Image.open(io.BytesIO(sheet)).format == "PNG"


async def test_delete_keeps_elements_usable_and_shared_blobs(services, alice) -> None:
    await services.datasets.create(alice, "base")
    await services.datasets.create(alice, "other")
    await add_seeds(services, alice, "base", [1, 2, 3], captions=True)
    await add_seeds(services, alice, "other", [3])  # the same picture in another dataset
    element = await ready_element(services, alice, "Ink", "inkwash", dataset="base")
    assert element.dataset_id is not None and element.image_count == 3
    info = await services.datasets.get(alice, "base")

    await services.datasets.delete(alice, "base")
    after = await services.elements.get(alice, "ink")
    assert after.dataset_id is None and after.image_count == 3 and after.ready
    async with services.db.transaction() as session:
        resolved = await services.elements.resolve_for_generation(session, alice, [("ink", None)], "flux-dev")
    assert resolved[0].weights_blob == element.weights_blob
    # The Element's frozen manifest keeps the training images; the shared one stays for "other" too.
    for img in info.images:
        assert await services.blobs.exists(img.blob_hash)
    assert await services.blobs.exists(element.weights_blob)

    # Once nothing refers to them (Element deleted too), the files go.
    await services.elements.delete(alice, "ink")
    assert not await services.blobs.exists(element.weights_blob)
    assert not await services.blobs.exists(info.images[0].blob_hash)
    assert await services.blobs.exists(info.images[2].blob_hash)  # still in "other"
    assert await services.datasets.gc_blobs() == 0


async def test_manifest_and_upload_sessions(services, alice) -> None:
    await services.datasets.create(alice, "m")
    await add_seeds(services, alice, "m", [1, 2], captions=True)
    info = await services.datasets.get(alice, "m")
    async with services.db.read() as session:
        manifest = await services.datasets.manifest(session, info.id)
    assert manifest == [{"blob": i.blob_hash, "caption": i.caption, "position": i.index} for i in info.images]

    assert await services.datasets.upload_session(alice) is None
    await services.datasets.start_upload_session(alice, "m", minutes=5)
    assert (await services.datasets.upload_session(alice)).name == "m"
    await services.datasets.create(alice, "n")
    await services.datasets.start_upload_session(alice, "n")  # replaces the open one
    assert (await services.datasets.upload_session(alice)).name == "n"
    assert await services.datasets.end_upload_session(alice) is True
    assert await services.datasets.upload_session(alice) is None
    assert await services.datasets.end_upload_session(alice) is False


async def test_stored_images_are_normalised(services, alice) -> None:
    await services.datasets.create(alice, "n")
    buf = io.BytesIO()
    Image.open(io.BytesIO(noise_png(7))).convert("RGBA").save(buf, "PNG")
    report = await services.datasets.add_images(alice, "n", [IncomingFile("rgba.png", buf.getvalue())])
    img = (await services.datasets.get(alice, "n")).images[0]
    stored = await services.blobs.get_bytes(img.blob_hash)
    expected = normalize_image(buf.getvalue(), IngestLimits.from_settings(load_settings()))
    assert report.files[0].added and stored == expected.data
    assert Image.open(io.BytesIO(stored)).mode == "RGB"


async def test_autocomplete_lists_only_own_datasets(services, alice, bob) -> None:
    await services.datasets.create(alice, "Portraits")
    await services.datasets.create(alice, "Landscapes")
    await services.datasets.create(bob, "Portrait of Bob")
    await add_seeds(services, alice, "portraits", [1])
    assert await services.datasets.autocomplete(alice, "PORT") == [("Portraits (1 image)", "Portraits")]
    assert [v for _, v in await services.datasets.autocomplete(alice, "")] == ["Landscapes", "Portraits"]
    assert [v for _, v in await services.datasets.autocomplete(bob, "port")] == ["Portrait of Bob"]
