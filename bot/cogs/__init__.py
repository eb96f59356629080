"""Cogs, one per noun. ``COGS`` is the list ``AtelierBot.setup_hook`` loads (module paths, in order)."""

COGS: tuple[str, ...] = (
    "bot.cogs.meta",
    "bot.cogs.dataset",
    "bot.cogs.admin",
    "bot.cogs.element",
    "bot.cogs.element_buttons",
    "bot.cogs.train",
    "bot.cogs.generate",
    "bot.cogs.generate_buttons",
    "bot.cogs.jobs",
)
