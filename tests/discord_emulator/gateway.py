"""Gateway websocket: HELLO, heartbeat ACKs, IDENTIFY → READY + GUILD_CREATE, RESUME → RESUMED, dispatches.

Faults: op 7 (:meth:`Gateway.request_reconnect`), op 9 (:meth:`Gateway.invalidate`), a dropped TCP connection
(:meth:`Gateway.drop`) and a reconnect held at the door (:meth:`Gateway.hold`: new sockets wait before HELLO, so a
test can act while the bot is between connections; events meanwhile are buffered and replayed on RESUME).

Frames are plain text JSON; discord.py only decompresses binary frames, so ``compress=…`` is ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .payloads import guild_create_payload, user_payload
from .state import State

log = logging.getLogger(__name__)

# Intent bits
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    buffer: list[tuple[int, str]] = field(default_factory=list)  # (seq, frame) kept for RESUME replay


@dataclass
class GatewayStats:
    connections: int = 0
    identifies: int = 0
    resumes: int = 0
    heartbeats: int = 0
    invalidations: int = 0  # op 9 sent
    drops: int = 0  # sockets cut without a close frame
    closes: list[int] = field(default_factory=list)  # close codes the emulator sent


class Gateway:
    def __init__(self, state: State, *, allow_privileged_intents: bool = False,
                 heartbeat_interval_ms: int = 41_250) -> None:
        self.state = state
        self.allow_privileged_intents = allow_privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.stats = GatewayStats()
        self.url = ""  # ws://127.0.0.1:<port>/gateway, set once the server listens
        self._sockets: set[web.WebSocketResponse] = set()
        self._transports: dict[web.WebSocketResponse, object] = {}
        self._open_door = asyncio.Event()
        self._open_door.set()
        self.waiting_at_door = 0  # connections held by hold()

    @property
    def connected(self) -> bool:
        return self.current is not None and self.current.ws is not None and not self.current.ws.closed

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        if not self._open_door.is_set():
            self.waiting_at_door += 1
            self.state.changes.notify()
            try:
                await self._open_door.wait()
            finally:
                self.waiting_at_door -= 1
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        self._transports[ws] = request.transport
        self.stats.connections += 1
        session: Session | None = None
        try:
            await self._send(ws, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                op, data = frame.get("op"), frame.get("d")
                if op == 1:
                    self.stats.heartbeats += 1
                    await self._send(ws, {"op": 11})
                elif op == 2:
                    session = await self._identify(ws, data)
                elif op == 6:
                    session = await self._resume(ws, data)
                # op 3 (presence), 4 (voice), 8 (member chunks) are accepted and ignored
                if ws.closed:
                    break
        except Exception as exc:  # a crash here would hang the bot; make it visible instead
            log.exception("gateway handler failed")
            self.state.internal_errors.append(f"gateway: {exc!r}")
        finally:
            self._sockets.discard(ws)
            self._transports.pop(ws, None)
            if session is not None and session.ws is ws:
                session.ws = None
            self.state.changes.notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        if data.get("token") != self.state.token:
            await self._close(ws, 4004, "Authentication failed.")
            return None
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS and not self.allow_privileged_intents:
            await self._close(ws, 4014, "Disallowed intent(s).")
            return None
        session = Session(id=secrets.token_hex(16), intents=intents, ws=ws)
        self.sessions[session.id] = session
        self.current = session
        self.stats.identifies += 1
        ready = {
            "v": 10, "user": user_payload(self.state.bot_user), "guilds": [{"id": str(self.state.guild_id),
                                                                              "unavailable": True}],
            "session_id": session.id, "resume_gateway_url": self.url, "session_type": "normal",
            "application": {"id": str(self.state.application_id), "flags": 0},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": [], "user_settings": {}, "_trace": ["atelier-emulator"],
        }
        await self.dispatch("READY", ready, session=session)
        await self.dispatch("GUILD_CREATE", guild_create_payload(self.state, with_members=bool(intents & GUILD_MEMBERS)),
                            session=session)
        self.state.changes.notify()
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self.state.token:
            await self._send(ws, {"op": 9, "d": False})  # invalid session, not resumable: client re-identifies
            return None
        session.ws = ws
        self.current = session
        last = int(data.get("seq") or 0)
        for seq, frame in session.buffer:
            if seq > last:
                await ws.send_str(frame)
        self.stats.resumes += 1
        await self.dispatch("RESUMED", {"_trace": ["atelier-emulator"]}, session=session)
        self.state.changes.notify()
        return session

    async def dispatch(self, event: str, data: dict[str, Any], *, session: Session | None = None) -> None:
        """Send op 0 ``event`` to one session (default: the current one); buffered while it reconnects."""
        session = session or self.current
        if session is None:
            raise RuntimeError(f"cannot dispatch {event}: the bot never identified on the gateway")
        session.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": session.seq, "d": data})
        session.buffer.append((session.seq, frame))
        del session.buffer[:-1000]
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_str(frame)

    def wants(self, intent: int) -> bool:
        return self.current is not None and bool(self.current.intents & intent)

    async def request_reconnect(self) -> None:
        """Send op 7: the client drops the socket and RESUMEs."""
        if not self.connected:
            raise RuntimeError("the bot is not connected to the gateway")
        assert self.current is not None and self.current.ws is not None
        await self._send(self.current.ws, {"op": 7, "d": None})

    async def invalidate(self, *, resumable: bool = False) -> None:
        """Send op 9. ``resumable=False`` forgets the session (what it missed is lost, as on Discord)."""
        if not self.connected:
            raise RuntimeError("the bot is not connected to the gateway")
        assert self.current is not None and self.current.ws is not None
        session, ws = self.current, self.current.ws
        if not resumable:
            self.sessions.pop(session.id, None)
        self.stats.invalidations += 1
        await self._send(ws, {"op": 9, "d": resumable})

    def drop(self) -> None:
        """Cut the current socket's TCP connection: no close frame, the client sees an abnormal close."""
        if not self.connected:
            raise RuntimeError("the bot is not connected to the gateway")
        assert self.current is not None and self.current.ws is not None
        transport = self._transports.get(self.current.ws)
        if transport is None:
            raise RuntimeError("no transport for the current socket")
        self.stats.drops += 1
        transport.abort()  # type: ignore[attr-defined]

    def hold(self) -> None:
        """New gateway connections wait (before HELLO) until :meth:`release`."""
        self._open_door.clear()

    def release(self) -> None:
        self._open_door.set()

    async def close_all(self) -> None:
        self.release()
        for ws in list(self._sockets):
            await ws.close(code=1001)

    async def _close(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        self.stats.closes.append(code)
        self.state.reject(f"gateway close {code} {reason}")
        await ws.close(code=code, message=reason.encode())

    @staticmethod
    async def _send(ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(payload))
