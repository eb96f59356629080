"""A small Discord emulator for driving the real, unmodified discord.py client in tests.

See ``DiscordEmulator`` (server + driver API) and ``InteractionHandle`` (what a user action returns).
"""

from .handle import InteractionHandle
from .options import UsageError
from .server import DiscordEmulator
from .state import Attachment, CallbackResponse, Channel, EmulatorTimeout, Message, User

__all__ = [
    "Attachment", "CallbackResponse", "Channel", "DiscordEmulator", "EmulatorTimeout", "InteractionHandle",
    "Message", "UsageError", "User",
]
