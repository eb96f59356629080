"""What an Element's export carries for someone other than its owner: the weights and settings, never the text of
the owner's captions (kohya's ``ss_tag_frequency`` lists every caption tag with its count; a caption may hold
anything — a real name, an address).

Works on the stored bytes without torch: a ``.safetensors`` file is an 8-byte little-endian header length, a JSON
header (tensor offsets + ``__metadata__``), then the raw tensor data, so rewriting the metadata leaves the data
untouched.
"""

from __future__ import annotations

import json
import struct

# Metadata / JSON keys whose values are (or are built from) caption text.
CAPTION_KEYS = frozenset({"ss_tag_frequency", "tag_frequency", "captions", "caption", "manifest"})

# What /element share tells the owner others may download (one sentence, shared by every front end).
SHARED_DOWNLOAD_NOTE = ("Others who can see it can download its weights (.safetensors) and settings (element.json), "
                        "without your captions or images.")


def strip_safetensors_captions(data: bytes) -> bytes:
    """``data`` with caption-bearing ``__metadata__`` entries removed (tensors byte-for-byte the same)."""
    if len(data) < 8:
        raise ValueError("not a safetensors file (too short)")
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > len(data) - 8:
        raise ValueError("not a safetensors file (header length past the end)")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__")
    if isinstance(meta, dict):
        header["__metadata__"] = {k: v for k, v in meta.items() if k not in CAPTION_KEYS}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)  # keep the tensor data 8-byte aligned, as safetensors writers do
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def strip_json_captions(data: bytes) -> bytes:
    """An element.json with every caption-bearing key removed, at any depth."""

    def clean(value: object) -> object:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in CAPTION_KEYS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(json.loads(data)), indent=2, ensure_ascii=False).encode()
