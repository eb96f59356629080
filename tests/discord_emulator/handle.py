"""What a test holds after a user action: the interaction, and condition waits on what the bot did with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .state import CallbackResponse, Interaction, Message, State


class InteractionHandle:
    """One interaction the emulator dispatched. All waits are condition waits with a timeout."""

    def __init__(self, state: State, interaction: Interaction, default_timeout: float) -> None:
        self._state = state
        self.interaction = interaction
        self.default_timeout = default_timeout

    @property
    def id(self) -> int:
        return self.interaction.id

    @property
    def token(self) -> str:
        return self.interaction.token

    def __repr__(self) -> str:
        return f"<InteractionHandle type={self.interaction.type} user={self.interaction.user.username}>"

    def _describe(self, what: str) -> Callable[[], str]:
        def describe() -> str:
            inter = self.interaction
            got = f"callback type {inter.response.type}" if inter.response else "no callback yet"
            return f"{what} of interaction {inter.id} ({got}){self._state.recent_problems()}"
        return describe

    async def response(self, timeout: float | None = None) -> CallbackResponse:  # noqa: ASYNC109 - timeout is part of the test API
        """The initial callback (type 4 message, 5 defer, 6/7 update, 8 choices, 9 modal)."""
        return await self._state.changes.wait_for(lambda: self.interaction.response,
                                                  timeout or self.default_timeout, self._describe("the response"))

    async def reply(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109 - timeout is part of the test API
        """The first message the user actually sees as the result: the type-4 message, the updated message of
        a type-7 update, or, after a defer, the first follow-up / @original edit (current state, not a copy)."""
        def visible() -> Message | None:
            mid = self.interaction.first_visible_id
            return self._state.messages.get(mid) if mid is not None else None
        return await self._state.changes.wait_for(visible, timeout or self.default_timeout,
                                                  self._describe("a visible reply"))

    async def followups(self, count: int = 1, timeout: float | None = None) -> list[Message]:  # noqa: ASYNC109 - timeout is part of the test API
        """Wait until at least ``count`` follow-ups were sent; all of them, oldest first.

        The first follow-up after a deferred response *is* the original message (Discord fills the
        "thinking…" placeholder with it), so it is listed here too.
        """
        def enough() -> list[Message] | None:
            msgs = [self._state.messages[i] for i in self.interaction.followup_ids]
            return msgs if len(msgs) >= count else None
        if count <= 0:
            return [self._state.messages[i] for i in self.interaction.followup_ids]
        return await self._state.changes.wait_for(enough, timeout or self.default_timeout,
                                                  self._describe(f"{count} follow-up(s)"))

    def original(self) -> Message | None:
        """The @original message in its latest state (None before a message-bearing response)."""
        oid = self.interaction.original_id
        return self._state.messages.get(oid) if oid is not None else None

    async def wait_original(self, predicate: Callable[[Message], Any], timeout: float | None = None) -> Message:  # noqa: ASYNC109 - timeout is part of the test API
        def check() -> Message | None:
            msg = self.original()
            return msg if msg is not None and predicate(msg) else None
        return await self._state.changes.wait_for(check, timeout or self.default_timeout,
                                                  self._describe("the original message to match"))

    async def choices(self, timeout: float | None = None) -> list[dict[str, Any]]:  # noqa: ASYNC109 - timeout is part of the test API
        resp = await self.response(timeout)
        if resp.type != 8:
            raise AssertionError(f"expected autocomplete choices (callback 8), got callback {resp.type}")
        return resp.choices

    def expire(self) -> None:
        """Simulate the 15-minute token lifetime: webhook calls now get 401 / 50027 Invalid Webhook Token."""
        self.interaction.expired = True
