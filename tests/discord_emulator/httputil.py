"""HTTP helpers shared by the REST and webhook routes: exact JSON responses, Discord errors, request bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py only parses bodies whose Content-Type is *exactly* application/json (no charset suffix).
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def no_content() -> web.Response:
    return web.Response(status=204)


class DiscordError(Exception):
    """Raised by route handlers; turned into Discord's JSON error body by the middleware."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return json_response(body, self.status)


def not_found(code: int = 0, message: str = "404: Not Found") -> DiscordError:
    return DiscordError(404, code, message)


def invalid_form(reason: str) -> DiscordError:
    # Discord answers 400/50035 with a nested "errors" tree; a flat reason is enough for tests to read.
    return DiscordError(400, 50035, "Invalid Form Body", {"_errors": [{"code": "BASE_TYPE_INVALID", "message": reason}]})


@dataclass
class UploadedFile:
    field: str  # files[n]
    filename: str
    data: bytes
    content_type: str | None

    @property
    def index(self) -> int:
        return int(self.field[len("files["):-1])


@dataclass
class Body:
    json: dict[str, Any] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)


async def read_body(request: web.Request) -> Body:
    """JSON body, or multipart with ``payload_json`` + ``files[n]`` parts (how discord.py uploads files)."""
    if request.content_type.startswith("multipart/"):
        body = Body()
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                body.json = json.loads(await part.text())
            elif part.name and part.name.startswith("files["):
                ctype = part.headers.get("Content-Type")
                body.files.append(UploadedFile(part.name, part.filename or "file", bytes(await part.read()), ctype))
            else:
                raise invalid_form(f"unexpected multipart field {part.name!r}")
        return body
    if not request.can_read_body:
        return Body()
    try:
        data = await request.json()
    except json.JSONDecodeError as exc:
        raise DiscordError(400, 50109, f"The request body contains invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid_form("expected a JSON object")
    return Body(json=data)
