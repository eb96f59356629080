"""Private captions stay private: another member's export of a shared Element carries no caption text (no
``ss_tag_frequency`` in the weights, no captions in element.json); the owner's keeps them; sharing says so."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import load, save

from storage.db.models import Visibility
from storage.export_privacy import SHARED_DOWNLOAD_NOTE
from tests.storage.conftest import ready_element

SECRET = "221B Baker Street"


async def _with_real_files(services, element) -> None:
    """Give a READY Element kohya weights and an element.json as training writes them, captions included."""
    from storage.db.models import Element

    tensors = {"lora_unet_down.lora_down.weight": np.arange(12, dtype=np.float16).reshape(3, 4),
               "lora_unet_down.alpha": np.array(8.0, dtype=np.float16)}
    kohya = save(tensors, metadata={"ss_tag_frequency": json.dumps({"1_zqx": {f"zqx, {SECRET}": 1, "cat": 3}}),
                                    "ss_network_dim": "16", "atelier_trigger_word": "zqx"})
    meta = json.dumps({"name": element.name, "trigger": "zqx", "config": {"rank": 16},
                       "training": {"captions": [f"zqx, {SECRET}"], "image_count": 1}}).encode()
    async with services.db.transaction() as session:
        row = await session.get(Element, element.id)
        row.kohya_blob = await services.blobs.put_bytes(kohya)
        row.metadata_blob = await services.blobs.put_bytes(meta)


async def test_others_export_carries_no_caption_text_the_owners_does(services, alice, bob) -> None:
    element = await ready_element(services, alice, "Home", "zqxhome", visibility=Visibility.PUBLIC)
    await _with_real_files(services, element)

    own = await services.elements.export(alice, f"#{element.id}")
    assert SECRET.encode() in own.kohya and SECRET.encode() in own.element_json

    theirs = await services.elements.export(bob, f"#{element.id}")
    assert SECRET.encode() not in theirs.kohya and SECRET.encode() not in theirs.element_json
    assert b"ss_tag_frequency" not in theirs.kohya and b"captions" not in theirs.element_json
    # Still a valid LoRA with the same tensors and the rest of its metadata.
    assert {k: v.tolist() for k, v in load(theirs.kohya).items()} == \
        {k: v.tolist() for k, v in load(own.kohya).items()}
    header_len = int.from_bytes(theirs.kohya[:8], "little")
    meta = json.loads(theirs.kohya[8 : 8 + header_len])["__metadata__"]
    assert meta == {"ss_network_dim": "16", "atelier_trigger_word": "zqx"} and header_len % 8 == 0
    assert json.loads(theirs.element_json)["training"] == {"image_count": 1}


def test_sharing_tells_the_owner_what_others_can_download() -> None:
    from types import SimpleNamespace

    from bot.element_render import share_text

    for vis in ("public", "server"):
        text = share_text(SimpleNamespace(name="Home", visibility=vis))
        assert SHARED_DOWNLOAD_NOTE in text and "without your captions" in text
    assert SHARED_DOWNLOAD_NOTE not in share_text(SimpleNamespace(name="Home", visibility="private"))
