"""Dataset lint: each finding fires on the data that deserves it, with indices and a hint, and not otherwise."""

from __future__ import annotations

import random

import pytest

from storage.images.lint import Finding, ImageFacts, lint_dataset
from storage.settings import ImageLimits

LIMITS = ImageLimits()


def distinct_phash(i: int) -> str:
    """Hashes pairwise ≥ 20 bits apart (random 64-bit values are ~32 apart; fixed seed keeps it stable)."""
    return f"{random.Random(i * 7919).getrandbits(64):016x}"


def facts(n: int, *, w: int = 1024, h: int = 1024, caption: str = "a caption {i}") -> list[ImageFacts]:
    return [ImageFacts(i, w, h, distinct_phash(i), caption.format(i=i)) for i in range(1, n + 1)]


def lint(images: list[ImageFacts], category: str | None = "style", family: str | None = "flux") -> list[Finding]:
    return lint_dataset(images, category=category, family=family, limits=LIMITS, near_duplicate_distance=4)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def by_code(findings: list[Finding], code: str) -> Finding:
    (found,) = [f for f in findings if f.code == code]
    assert found.message and found.hint
    return found


def test_clean_dataset_has_no_findings():
    assert lint(facts(20)) == []


def test_too_few_and_empty():
    f = by_code(lint(facts(7)), "too_few_images")
    assert f.severity == "error" and "7 images" in f.message and "Add 3" in f.hint
    assert by_code(lint([]), "too_few_images").severity == "error"


@pytest.mark.parametrize(("family", "limit"), [("flux", 50), ("sdxl", 40), ("sd15", 40), (None, 50)])
def test_too_many_for_family(family: str | None, limit: int):
    assert "too_many_images" not in codes(lint(facts(limit), category=None, family=family))
    f = by_code(lint(facts(limit + 3), category=None, family=family), "too_many_images")
    assert f.severity == "error" and "limit for" in f.message and str(limit) in f.message
    assert "Remove 3" in f.hint


@pytest.mark.parametrize(
    ("category", "ok", "low", "high"),
    [("character", 20, 12, 28), ("style", 20, 12, 35), ("object", 15, None, 25), ("concept", 20, None, 35)],
)
def test_category_ranges_are_warnings(category: str, ok: int, low: int | None, high: int):
    assert "count_outside_recommended" not in codes(lint(facts(ok), category=category))
    if low is not None:
        f = by_code(lint(facts(low), category=category), "count_outside_recommended")
        assert f.severity == "warning" and category in f.message and "Add" in f.hint
    f = by_code(lint(facts(high), category=category), "count_outside_recommended")
    assert f.severity == "warning" and "removing" in f.hint


def test_near_duplicate_groups():
    images = facts(20)
    base = int(images[2].phash, 16)
    images[6] = ImageFacts(7, 1024, 1024, f"{base ^ 0b1011:016x}", "x")  # 3 bits from #3
    images[11] = ImageFacts(12, 1024, 1024, f"{base ^ 0b11:016x}", "y")  # 2 bits from #3
    images[15] = ImageFacts(16, 1024, 1024, images[14].phash, "z")  # identical to #15
    dups = [f for f in lint(images) if f.code == "near_duplicates"]
    assert sorted(f.indices for f in dups) == [[3, 7, 12], [15, 16]]
    assert all(f.severity == "warning" for f in dups)
    assert "#7, #12" in next(f.hint for f in dups if f.indices == [3, 7, 12])


def test_low_resolution_by_family():
    images = facts(20)
    images[0] = ImageFacts(1, 400, 300, images[0].phash, "c")
    images[1] = ImageFacts(2, 768, 900, images[1].phash, "c")
    found = lint(images, family="flux")
    assert by_code(found, "low_resolution").indices == [1]
    assert by_code(found, "below_training_resolution").indices == [2]
    assert by_code(found, "below_training_resolution").severity == "info"
    sd15 = lint(images, family="sd15")
    assert "low_resolution" not in codes(sd15)  # 300 px ≥ half of 512
    assert by_code(sd15, "below_training_resolution").indices == [1]


def test_extreme_and_mixed_aspect_ratios():
    images = facts(20)
    images[4] = ImageFacts(5, 3000, 1000, images[4].phash, "c")  # 3:1 landscape
    images[9] = ImageFacts(10, 800, 1200, images[9].phash, "c")  # portrait
    images[10] = ImageFacts(11, 1024, 1536, images[10].phash, "c")  # portrait
    for k in range(12, 20):
        images[k] = ImageFacts(k + 1, 1536, 1024, images[k].phash, "c")  # landscape majority
    found = lint(images)
    assert by_code(found, "extreme_aspect_ratio").indices == [5]
    mixed = by_code(found, "mixed_aspect_ratios")
    assert mixed.indices == [10, 11] and "portrait" in mixed.message


def test_caption_findings():
    no_caps = facts(20, caption="")
    assert by_code(lint(no_caps, category="character"), "missing_captions").indices == list(range(1, 21))
    assert by_code(lint(no_caps, category="object"), "missing_captions").severity == "info"
    assert "missing_captions" not in codes(lint(no_caps, category="style"))  # style: all-or-none is fine
    some = facts(20)
    some[3] = ImageFacts(4, 1024, 1024, some[3].phash, "  ")
    assert by_code(lint(some, category="style"), "some_captions_missing").indices == [4]
    same = facts(20, caption="the same words")
    assert by_code(lint(same), "identical_captions").indices == list(range(1, 21))


def test_long_captions_only_for_clip_families():
    images = facts(20)
    images[2] = ImageFacts(3, 1024, 1024, images[2].phash, "tag, " * 80)
    assert by_code(lint(images, family="sdxl"), "long_captions").indices == [3]
    assert "long_captions" not in codes(lint(images, family="flux"))  # T5 reads ~512 tokens


def test_errors_come_first():
    images = facts(5, w=200, h=200)
    found = lint(images, category="character")
    severities = [f.severity for f in found]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert found[0].code == "too_few_images"
