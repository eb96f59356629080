"""Cleaning of user-typed text: names, trigger words, captions, file names shown back to people.

Text stays literal: ``@everyone``, markdown or SQL in a name is just text (queries are parameterised, and front
ends render names with mentions disabled). What we remove is what makes text deceptive or unusable: invisible
and control characters, bidi overrides, lookalike compatibility forms (NFKC), runs of whitespace, zalgo stacks.
"""

from __future__ import annotations

import re
import unicodedata

from storage.errors import InvalidInput

MAX_CAPTION_CHARS = 2000  # ~500 T5 tokens: Flux reads up to 512; longer captions are noise
MAX_NAME = 64  # dataset and Element names
MAX_DATASET_DESCRIPTION = 1000
MAX_ELEMENT_DESCRIPTION = 500  # shown on shared Elements' cards
TRIGGER_MIN, TRIGGER_MAX = 3, 32
_MAX_MARKS = 2  # combining marks kept per base character (stops "zalgo" text from eating the layout)
_REMOVE_CATEGORIES = {"Cc", "Cf", "Cs", "Co"}  # control, format (zero-width, bidi), surrogates, private use
_SPACE_RE = re.compile(r"[^\S\n]+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def clean_text(s: str, *, max_len: int, multiline: bool = False) -> str:
    """NFKC-normalise, drop invisible/control characters, collapse whitespace, trim, cap at ``max_len`` chars.

    With ``multiline`` newlines survive (at most one blank line in a row); otherwise every line break is a space.
    """
    s = unicodedata.normalize("NFKC", s or "")
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    out: list[str] = []
    marks = 0
    for ch in s:
        if ch == "\n":
            out.append("\n" if multiline else " ")
            marks = 0
            continue
        if ch == "\t" or ch.isspace():
            out.append(" ")
            marks = 0
            continue
        cat = unicodedata.category(ch)
        if cat in _REMOVE_CATEGORIES:
            continue
        if cat.startswith("M"):
            marks += 1
            if marks > _MAX_MARKS:
                continue
        else:
            marks = 0
        out.append(ch)
    text = _SPACE_RE.sub(" ", "".join(out))
    if multiline:
        text = "\n".join(line.strip() for line in text.split("\n"))
        text = _BLANK_LINES_RE.sub("\n\n", text)
    text = text.strip()
    if len(text) > max_len:
        text = text[:max_len].rstrip()
    return text


def clean_caption(s: str) -> str:
    """A training caption: one line (kohya .txt files are read as one prompt), capped."""
    return clean_text(s, max_len=MAX_CAPTION_CHARS)


def text_key(s: str) -> str:
    """Case-insensitive comparison key (casefold can denormalise, so normalise again)."""
    return unicodedata.normalize("NFKC", s.casefold())


def normalize_name(s: str, *, what: str = "name", max_len: int = MAX_NAME) -> tuple[str, str]:
    """``(display, key)`` for a dataset/Element name; ``key`` is what uniqueness is checked on."""
    display = clean_text(s, max_len=10 * max_len)
    if not display:
        raise InvalidInput(f"The {what} is empty.", f"Give it a {what} with at least one visible character.")
    key = text_key(display)
    if len(display) > max_len or len(key) > max_len:
        raise InvalidInput(
            f"The {what} is too long ({len(display)} characters; the limit is {max_len}).",
            f"Use a shorter {what}.",
        )
    return display, key


def normalize_trigger(s: str) -> tuple[str, str]:
    """``(display, key)`` for a trigger word: one token-like word of letters/digits, 3–32 characters."""
    raw = clean_text(s, max_len=200)
    if not raw:
        raise InvalidInput("The trigger word is empty.", "Pick a rare made-up word such as `ohwxstyle`.")
    suggestion = "".join(ch for ch in raw if _is_word_char(ch))
    hint = (f"Use `{suggestion}` instead of `{raw}`."
            if TRIGGER_MIN <= len(suggestion) <= TRIGGER_MAX and any(c.isalpha() for c in suggestion)
            else "Pick a rare made-up word such as `ohwxstyle`.")
    if " " in raw or "_" in raw:
        which = "spaces" if " " in raw else "underscores"
        raise InvalidInput(
            f"Trigger words can't contain {which}: the text encoder splits the word apart, so the "
            "Element learns several weak words instead of one strong trigger.", hint,
        )
    if not all(_is_word_char(ch) for ch in raw):
        bad = "".join(sorted({ch for ch in raw if not _is_word_char(ch)}))
        raise InvalidInput(f"Trigger words may only use letters and digits (not `{bad}`).", hint)
    if not any(ch.isalpha() for ch in raw):
        raise InvalidInput("A trigger word needs at least one letter.",
                           "Pick a rare made-up word such as `ohwxstyle`.")
    if not TRIGGER_MIN <= len(raw) <= TRIGGER_MAX:
        raise InvalidInput(
            f"Trigger words must be {TRIGGER_MIN}–{TRIGGER_MAX} characters long (this one has {len(raw)}).",
            "Pick a rare made-up word such as `ohwxstyle`.",
        )
    return raw, text_key(raw)


def _is_word_char(ch: str) -> bool:
    """Letters and digits of any script (combining marks included, so Devanagari or Thai words work)."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def display_filename(name: str, *, max_len: int = 255) -> str:
    """A file name fit to show back to people and store in ``original_name``: last path component only
    (``../../etc/passwd`` → ``passwd``), cleaned, capped. Never use it as a path."""
    base = re.split(r"[\\/]", name or "")[-1]
    return clean_text(base, max_len=max_len) or "unnamed"
