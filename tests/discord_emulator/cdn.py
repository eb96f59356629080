"""Attachment store and the CDN route that serves it (``Attachment.read()`` is a plain GET on ``url``)."""

from __future__ import annotations

import io
import mimetypes
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .faults import Faults
from .httputil import UploadedFile, invalid_form
from .state import Attachment, State

MAX_FILES_PER_MESSAGE = 10


def make_attachment(state: State, filename: str, data: bytes, content_type: str | None = None,
                    description: str | None = None) -> Attachment:
    """Store bytes as an attachment; images get width/height like Discord reports them."""
    if content_type is None or content_type == "application/octet-stream":
        content_type = mimetypes.guess_type(filename)[0] or content_type
    width = height = None
    if content_type and content_type.startswith("image/"):
        width, height = _image_size(data)
    att_id = state.snowflake()
    # Discord's path has the channel id; the emulator serves by attachment id, so 0 stands for "any channel"
    url = f"{state.base_url}/attachments/0/{att_id}/{quote(filename)}"
    att = Attachment(id=att_id, filename=filename, data=bytes(data), content_type=content_type,
                     width=width, height=height, description=description, url=url)
    state.attachments[att.id] = att
    return att


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # not a decodable image: Discord just omits the size
        return None, None


def attachments_from_body(state: State, payload: dict[str, Any], files: list[UploadedFile],
                          existing: list[Attachment] | None = None) -> list[Attachment] | None:
    """Resolve ``payload["attachments"]`` + uploaded ``files[n]`` into the message's new attachment list.

    Returns None when the payload leaves attachments untouched (an edit without ``attachments`` and files).
    New files are referenced by their upload index, kept ones by their snowflake id.
    """
    if len(files) > MAX_FILES_PER_MESSAGE:
        raise invalid_form(f"at most {MAX_FILES_PER_MESSAGE} files per message, got {len(files)}")
    uploads = {f.index: f for f in files}
    refs = payload.get("attachments")
    if refs is None:
        if not files:
            return None
        refs = [{"id": i} for i in uploads]
    kept = {a.id: a for a in (existing or [])}
    result: list[Attachment] = []
    for ref in refs:
        ref_id = int(ref["id"])
        if ref_id in uploads:
            up = uploads.pop(ref_id)
            result.append(make_attachment(state, ref.get("filename") or up.filename, up.data, up.content_type,
                                          ref.get("description")))
        elif ref_id in kept:
            result.append(kept[ref_id])
        else:
            raise invalid_form(f"attachment id {ref_id} is neither an uploaded file index nor a kept attachment")
    # Files uploaded without a matching attachments entry are still attached (Discord does the same).
    result += [make_attachment(state, up.filename, up.data, up.content_type) for up in uploads.values()]
    return result


def add_cdn_routes(app: web.Application, state: State, faults: Faults) -> None:
    async def serve(request: web.Request) -> web.StreamResponse:
        att = state.attachments.get(int(request.match_info["attachment_id"]))
        if att is None or att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        ctype = att.content_type or "application/octet-stream"
        if faults.cdn_delay_s <= 0:
            return web.Response(body=att.data, content_type=ctype)
        # a slow CDN: the body trickles out in pieces over cdn_delay_s seconds
        resp = web.StreamResponse(headers={"Content-Type": ctype, "Content-Length": str(att.size)})
        await resp.prepare(request)
        pieces = 8
        step = max(1, -(-att.size // pieces))
        for start in range(0, att.size, step):
            await faults.cdn_pause(pieces)
            await resp.write(att.data[start:start + step])
        await resp.write_eof()
        return resp

    app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", serve)
