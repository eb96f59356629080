"""Real Discord's failure modes, switched on per test: 429s (injected, or from per-route buckets with the real
headers), 5xx answers and slow CDN downloads. Gateway faults (dropped socket, op 7, op 9, a held reconnect) live
on :class:`~tests.discord_emulator.gateway.Gateway`.

Routes are written ``"[METHOD ]/path"`` relative to ``/api/v10``; ``*`` matches one path segment, a trailing
``/**`` any rest, and ``"*"`` alone every API route, e.g. ``"PATCH /channels/*/messages/*"``.

What the client sees is what Discord sends (facts from discord.py 2.7's ``HTTPClient.request``):
* a 429 carries ``Via``, ``Retry-After`` and JSON ``{message, retry_after, global}``; per-route ones also carry
  the bucket headers (``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket/Scope``); the client sleeps
  ``retry_after`` (every request waits on a global one) and retries, up to 5 tries;
* 500/502/504 are retried after 1 s, 3 s, …; any other 5xx raises ``DiscordServerError`` at once.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field

from aiohttp import web

from .httputil import json_response

API = "/api/v10"
_MAJOR = re.compile(r"^/(channels|guilds|webhooks|interactions)/([^/]+)")


def _route_regex(route: str) -> tuple[str | None, re.Pattern[str]]:
    method, _, path = route.strip().rpartition(" ")
    if path == "*":
        return (method.upper() or None), re.compile(r"^/.*$")
    parts = []
    for seg in path.strip("/").split("/"):
        parts.append(".*" if seg == "**" else "[^/]+" if seg == "*" else re.escape(seg))
    return (method.upper() or None), re.compile("^/" + "/".join(parts) + "$")


@dataclass
class Rule:
    """One configured fault; ``served`` counts the requests it answered."""

    route: str
    kind: str  # "429" | "5xx"
    times: int  # answers left to give (injected faults)
    retry_after: float = 0.0
    is_global: bool = False
    status: int = 429
    served: int = 0
    method: str | None = field(init=False, default=None)
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.method, self.pattern = _route_regex(self.route)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.pattern.match(path))


@dataclass
class Bucket:
    """A Discord-style rate limit: ``limit`` requests per ``per_s`` seconds per major parameter (channel,
    webhook…); answers carry the bucket headers, the request over the limit gets a 429."""

    route: str
    limit: int
    per_s: float
    name: str
    served: int = 0  # 429s answered
    windows: dict[str, tuple[float, int]] = field(default_factory=dict)  # major → (window start, used)
    method: str | None = field(init=False, default=None)
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.method, self.pattern = _route_regex(self.route)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.pattern.match(path))

    def take(self, major: str) -> tuple[bool, dict[str, str]]:
        """(allowed, headers) for one request now."""
        now = time.monotonic()
        start, used = self.windows.get(major, (now, 0))
        if now - start >= self.per_s:
            start, used = now, 0
        allowed = used < self.limit
        if allowed:
            used += 1
        self.windows[major] = (start, used)
        reset_after = max(0.0, start + self.per_s - now)
        headers = {
            "X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.limit - used),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}", "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.name,
        }
        return allowed, headers


def rate_limited(retry_after: float, *, is_global: bool, headers: dict[str, str] | None = None) -> web.Response:
    resp = json_response({"message": "You are being rate limited.", "retry_after": retry_after,
                          "global": is_global}, 429)
    resp.headers["Via"] = "1.1 google"  # discord.py treats a 429 without Via as a Cloudflare ban
    resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    resp.headers["X-RateLimit-Scope"] = "global" if is_global else "user"
    if is_global:
        resp.headers["X-RateLimit-Global"] = "true"
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


class Faults:
    """The failure modes of one emulator (``emu.faults``); everything is off until a test asks for it."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.buckets: list[Bucket] = []
        self.cdn_delay_s = 0.0
        self.served: list[str] = []  # "429 PATCH /channels/…" for every fault answered, in order

    # -- configuration -------------------------------------------------------------------------------------------

    def rate_limit(self, route: str = "*", *, times: int = 1, retry_after: float = 0.2,
                   is_global: bool = False) -> Rule:
        """The next ``times`` matching requests get a 429 (``is_global``: the global limit, which makes the
        client hold every request for ``retry_after``)."""
        rule = Rule(route, "429", times, retry_after=retry_after, is_global=is_global)
        self.rules.append(rule)
        return rule

    def bucket(self, route: str, *, limit: int, per_s: float) -> Bucket:
        """A real per-route bucket: ``limit`` requests per ``per_s`` s per channel/webhook, with headers."""
        b = Bucket(route, limit, per_s, name=f"bucket{len(self.buckets) + 1:02d}")
        self.buckets.append(b)
        return b

    def server_error(self, route: str = "*", *, times: int = 1, status: int = 502) -> Rule:
        """The next ``times`` matching requests get ``status`` (not processed, like a failing edge)."""
        if not 500 <= status <= 599:
            raise ValueError("server_error wants a 5xx status")
        rule = Rule(route, "5xx", times, status=status)
        self.rules.append(rule)
        return rule

    def slow_cdn(self, delay_s: float) -> None:
        """Attachment downloads take ``delay_s`` seconds (spread over the body) from now on."""
        self.cdn_delay_s = delay_s

    def clear(self) -> None:
        self.rules.clear()
        self.buckets.clear()
        self.cdn_delay_s = 0.0

    def count(self, status: int | None = None) -> int:
        return sum(1 for line in self.served if status is None or line.startswith(f"{status} "))

    # -- applied by the server's middleware ------------------------------------------------------------------------

    def answer(self, method: str, full_path: str) -> tuple[web.Response | None, dict[str, str]]:
        """(a fault response or None, bucket headers to add to the normal response)."""
        if not full_path.startswith(API + "/"):
            return None, {}
        path = full_path[len(API):]
        for rule in self.rules:
            if rule.times > 0 and rule.matches(method, path):
                rule.times -= 1
                rule.served += 1
                self.served.append(f"{rule.status} {method} {path}")
                if rule.kind == "429":
                    return rate_limited(rule.retry_after, is_global=rule.is_global), {}
                return json_response({"message": "Server Error", "code": 0}, rule.status), {}
        headers: dict[str, str] = {}
        for b in self.buckets:
            if b.matches(method, path):
                m = _MAJOR.match(path)
                allowed, headers = b.take(m.group(0) if m else "")
                if not allowed:
                    b.served += 1
                    self.served.append(f"429 {method} {path}")
                    retry = float(headers["X-RateLimit-Reset-After"])
                    return rate_limited(retry, is_global=False, headers=headers), {}
                break
        return None, headers

    async def cdn_pause(self, chunks: int) -> None:
        if self.cdn_delay_s > 0:
            await asyncio.sleep(self.cdn_delay_s / max(1, chunks))
