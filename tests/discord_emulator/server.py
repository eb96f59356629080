"""The emulator process: one aiohttp app on 127.0.0.1 (random port) serving REST, gateway and CDN."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

from aiohttp import web

from .cdn import add_cdn_routes
from .driver import Driver
from .faults import Faults
from .gateway import Gateway
from .httputil import DiscordError, json_response
from .rest import RestApi
from .state import State
from .webhooks import WebhookApi

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAUTHENTICATED = ("/api/v10/interactions/", "/api/v10/webhooks/")  # interaction tokens authenticate these


class DiscordEmulator(Driver):
    """A small Discord for tests. ``async with DiscordEmulator() as emu:`` then point a bot at
    ``emu.api_base`` / ``emu.gateway_url`` with ``emu.token``."""

    def __init__(self, *, token: str = "emulator-bot-token", users: Iterable[str] = ("alice", "bob", "carol"),
                 channels: Iterable[str] = ("general", "gallery"), callback_deadline_s: float = 3.0,
                 allow_privileged_intents: bool = False, default_timeout: float = 5.0,
                 max_body_bytes: int = 512 * 1024 * 1024) -> None:
        self.state = State(token=token, users=users, channels=channels)
        self.gateway = Gateway(self.state, allow_privileged_intents=allow_privileged_intents)
        self.faults = Faults()  # 429s, 5xx, slow CDN: off until a test switches them on
        self.default_timeout = default_timeout
        self._rest = RestApi(self.state, self.gateway)
        self._webhooks = WebhookApi(self.state, self.gateway, callback_deadline_s=callback_deadline_s)
        self._max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> DiscordEmulator:
        app = web.Application(client_max_size=self._max_body_bytes, middlewares=[self._middleware])
        self._rest.add_routes(app)
        self._webhooks.add_routes(app)
        add_cdn_routes(app, self.state, self.faults)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self.state.base_url = f"http://127.0.0.1:{self.port}"
        self.gateway.url = f"ws://127.0.0.1:{self.port}/gateway"
        return self

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- addresses and handy facts ---------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def api_base(self) -> str:
        return f"{self.state.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    @property
    def guild_id(self) -> int:
        return self.state.guild_id

    @property
    def application_id(self) -> int:
        return self.state.application_id

    @property
    def bot_user(self):  # noqa: ANN201 - a state.User
        return self.state.bot_user

    async def wait_until_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - timeout is part of the test API
        await self.state.changes.wait_for(lambda: self.gateway.connected, timeout or self.default_timeout,
                                          lambda: "the bot to connect to the gateway" + self.state.recent_problems())

    async def reconnect(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - timeout is part of the test API
        """Ask the bot to reconnect (op 7) and wait until it has RESUMEd its session."""
        resumes = self.gateway.stats.resumes
        await self.gateway.request_reconnect()
        await self.state.changes.wait_for(lambda: self.gateway.stats.resumes > resumes and self.gateway.connected,
                                          timeout or self.default_timeout, lambda: "the bot to RESUME")

    async def drop_socket(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - timeout is part of the test API
        """Cut the gateway TCP connection without a close frame (a network drop); wait until the bot RESUMEs."""
        resumes = self.gateway.stats.resumes
        self.gateway.drop()
        await self.state.changes.wait_for(lambda: self.gateway.stats.resumes > resumes and self.gateway.connected,
                                          timeout or self.default_timeout, lambda: "the bot to RESUME after a drop")

    async def invalidate_session(self, *, resumable: bool = False, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send op 9. Not resumable: the session and the events it missed are gone and the bot IDENTIFYs anew
        (waited for); resumable: the bot RESUMEs."""
        identifies, resumes = self.gateway.stats.identifies, self.gateway.stats.resumes
        await self.gateway.invalidate(resumable=resumable)
        await self.state.changes.wait_for(
            lambda: self.gateway.connected and (self.gateway.stats.resumes > resumes if resumable
                                                else self.gateway.stats.identifies > identifies),
            timeout or self.default_timeout, lambda: "the bot to reconnect after op 9")

    # -- HTTP plumbing ---------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        try:
            if path.startswith("/api/") and not path.startswith(UNAUTHENTICATED):
                if request.headers.get("Authorization") != f"Bot {self.state.token}":
                    raise DiscordError(401, 0, "401: Unauthorized")
            fault, bucket_headers = self.faults.answer(request.method, path)
            if fault is not None:
                self.state.changes.notify()
                return fault
            response = await handler(request)
            response.headers.update(bucket_headers)
            return response
        except DiscordError as err:
            self.state.reject(f"{request.method} {path} → {err.status} {err.code} {err.message}"
                              + (f" {err.errors}" if err.errors else ""))
            return err.response()
        except web.HTTPException:
            raise
        except Exception as exc:  # an emulator bug: never 5xx (the client would retry for ~25 s)
            log.exception("emulator route failed: %s %s", request.method, path)
            self.state.internal_errors.append(f"{request.method} {path}: {exc!r}")
            return json_response({"message": f"emulator error: {exc!r}", "code": 0}, 400)

    async def _unknown_route(self, request: web.Request) -> web.Response:
        raise DiscordError(404, 0, f"404: Not Found (the emulator has no route for {request.method} {request.path})")
