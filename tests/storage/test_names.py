"""Names, trigger words, captions and displayed file names."""

from __future__ import annotations

import pytest

from storage.errors import InvalidInput
from storage.names import (
    MAX_CAPTION_CHARS,
    clean_caption,
    clean_text,
    display_filename,
    normalize_name,
    normalize_trigger,
    text_key,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  hello   world \t\n", "hello world"),
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKC folds lookalike compatibility forms
        ("zero\u200bwidth\u200d joiner\ufeff", "zerowidth joiner"),
        ("bidi \u202eevil\u202c text", "bidi evil text"),
        ("ctrl\x00\x07\x1bchars", "ctrlchars"),
        ("line\u2028sep\u2029para", "line sep para"),
        ("nbsp\u00a0and\u3000ideographic", "nbsp and ideographic"),
        ("@everyone DROP TABLE users; --", "@everyone DROP TABLE users; --"),  # just text
        ("Z\u0301\u0302\u0303\u0304\u0305algo", "\u0179\u0302\u0303algo"),  # NFKC composes Ź; 2 marks kept
        ("", ""),
        ("   ", ""),
    ],
)
def test_clean_text(raw: str, expected: str):
    assert clean_text(raw, max_len=100) == expected


def test_clean_text_caps_and_multiline():
    assert clean_text("abcdef ghi", max_len=7) == "abcdef"  # capped, then trailing space trimmed
    assert clean_text("a\r\n\r\n\r\n\r\nb  \n c", max_len=50, multiline=True) == "a\n\nb\nc"
    assert clean_text("a\nb", max_len=50) == "a b"


def test_clean_caption_single_line_and_capped():
    assert clean_caption("tag1,\n tag2\r\ntag3") == "tag1, tag2 tag3"
    assert len(clean_caption("x" * (MAX_CAPTION_CHARS + 500))) == MAX_CAPTION_CHARS


def test_normalize_name():
    assert normalize_name("  My   Cool\u200b Dataset ") == ("My Cool Dataset", "my cool dataset")
    assert normalize_name("Straße")[1] == normalize_name("STRASSE")[1]  # casefold, not lower
    assert normalize_name("ＣＡＴ")[1] == normalize_name("cat")[1]
    assert normalize_name("@everyone") == ("@everyone", "@everyone")


def test_normalize_name_errors():
    with pytest.raises(InvalidInput, match="element name is empty") as info:
        normalize_name("\u200b \n", what="element name")
    assert info.value.hint
    with pytest.raises(InvalidInput, match=r"too long \(65 characters; the limit is 64\)"):
        normalize_name("x" * 65)
    with pytest.raises(InvalidInput, match="too long"):
        normalize_name("ß" * 40, max_len=64)  # fits as typed, but its key (ss…) would not
    assert normalize_name("x" * 64)[0] == "x" * 64


def test_normalize_trigger_ok():
    assert normalize_trigger("  OhwxStyle ") == ("OhwxStyle", "ohwxstyle")
    assert normalize_trigger("zx9cat") == ("zx9cat", "zx9cat")
    assert normalize_trigger("ｏｈｗｘ")[0] == "ohwx"
    assert normalize_trigger("ねこスタイル")[0] == "ねこスタイル"  # Unicode letters are fine
    assert normalize_trigger("नमस्ते")[0] == "नमस्ते"  # combining vowel signs are part of words


@pytest.mark.parametrize(
    ("raw", "message", "hint"),
    [
        ("ohwx style", "can't contain spaces", "Use `ohwxstyle` instead of `ohwx style`."),
        ("ohwx_style", "can't contain underscores", "Use `ohwxstyle` instead of `ohwx_style`."),
        ("ohwx-style!", "letters and digits", "Use `ohwxstyle`"),
        ("ab", "3–32 characters", "ohwxstyle"),
        ("a" * 33, "3–32 characters", "ohwxstyle"),
        ("12345", "at least one letter", "ohwxstyle"),
        ("", "empty", "ohwxstyle"),
        ("<@123>", "letters and digits", "ohwxstyle"),  # digits only: no suggestion to copy
    ],
)
def test_normalize_trigger_errors_explain_and_suggest(raw: str, message: str, hint: str):
    with pytest.raises(InvalidInput) as info:
        normalize_trigger(raw)
    assert message in info.value.message
    assert hint in info.value.hint


def test_text_key():
    assert text_key("MASSE") == text_key("Maße")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("dir/sub/dog.jpg", "dog.jpg"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("", "unnamed"),
        ("../", "unnamed"),
    ],
)
def test_display_filename(raw: str, expected: str):
    assert display_filename(raw) == expected
