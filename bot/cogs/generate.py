"""``/generate`` — images from a prompt with up to four Elements at chosen strengths.

Deferred at once; the request goes through the generation use case (visibility, lineage, strengths, cooldown),
after the server's rules (channels where generation is allowed, banned words). The images are posted in this
channel by the outbox deliverer when the worker is done (bot token, so no 15-minute limit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cog_helpers import choices, origin_of, read_actor, safe_choices, work_slot
from bot.context import actor, defer, reply, services_of
from bot.generation_render import cancel_view, queued_text
from bot.render import escape, plural
from storage.errors import InvalidInput
from trainer.prompting import ASPECTS, MAX_COUNT, MAX_GUIDANCE, MAX_LORAS, MAX_PROMPT, MAX_STEPS, MAX_STRENGTH

if TYPE_CHECKING:
    from bot.app import AtelierBot

Strength = app_commands.Range[float, 0.0, MAX_STRENGTH]
SLOTS = ("element1", "element2", "element3", "element4")


class Generate(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="generate", description=f"Generate images, optionally with up to {MAX_LORAS} Elements")
    @app_commands.describe(
        prompt="What to draw", negative="What to avoid (negative prompt)",
        element1="An Element (yours or shared; Name@group for one image group); its trigger word is added for you", element2="Another Element",
        element3="Another Element", element4="Another Element",
        strength1=f"Strength of element1, 0–{MAX_STRENGTH:g} (default: its recommended strength)", strength2="Strength of element2",
        strength3="Strength of element3", strength4="Strength of element4",
        aspect="Picture shape", seed="Seed for reproducible images (default: random)",
        count=f"How many images (1–{MAX_COUNT})", steps="Sampling steps (default: the model's)",
        guidance="Guidance scale (default: the model's)", base="Base model (default: the Elements' own)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    async def generate(self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, MAX_PROMPT],
                       element1: str | None = None, strength1: Strength | None = None,
                       element2: str | None = None, strength2: Strength | None = None,
                       element3: str | None = None, strength3: Strength | None = None,
                       element4: str | None = None, strength4: Strength | None = None,
                       negative: app_commands.Range[str, 0, MAX_PROMPT] | None = None, aspect: str | None = None,
                       seed: app_commands.Range[int, 0, 2**53 - 1] | None = None,
                       count: app_commands.Range[int, 1, MAX_COUNT] = 1,
                       steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
                       guidance: app_commands.Range[float, 0.0, MAX_GUIDANCE] | None = None,
                       base: str | None = None) -> None:
        await defer(interaction)
        async with work_slot(interaction):
            await self._generate(interaction, prompt, [(element1, strength1), (element2, strength2),
                                                       (element3, strength3), (element4, strength4)],
                                 negative=negative, aspect=aspect, seed=seed, count=count, steps=steps,
                                 guidance=guidance, base=base)

    async def _generate(self, interaction: discord.Interaction, prompt: str,
                        pairs: list[tuple[str | None, float | None]], *, negative: str | None, aspect: str | None,
                        seed: int | None, count: int, steps: int | None, guidance: float | None,
                        base: str | None) -> None:
        services = services_of(interaction)
        for i, (ref, strength) in enumerate(pairs, 1):
            if strength is not None and not ref:
                raise InvalidInput(f"strength{i} is set but element{i} is empty.",
                                   f"Pick an Element for element{i}, or leave strength{i} out.")
        elements = [(ref.strip(), strength) for ref, strength in pairs if ref and ref.strip()]
        me = await actor(interaction)
        job = await services.jobs.request_generation(
            me, prompt=prompt, elements=elements, base_model=base or None, negative_prompt=negative or "",
            seed=seed, count=count, steps=steps, guidance=guidance, aspect=aspect, origin=origin_of(interaction))
        names = ", ".join(f"{escape(e['name'])} × {e['strength']:g}" for e in job.payload.get("elements", []))
        text = queued_text(job, what=f"{plural(count, 'image')} of “{escape(prompt[:150])}”"
                                     + (f" with {names}" if names else "") + " —")
        warnings = job.payload.get("warnings") or []
        if warnings:
            text += "\n⚠️ " + "\n⚠️ ".join(escape(w) for w in warnings)
        await reply(interaction, text, view=cancel_view(job.id, interaction.user.id))

    @generate.autocomplete("element1")
    @generate.autocomplete("element2")
    @generate.autocomplete("element3")
    @generate.autocomplete("element4")
    async def element_choices(self, interaction: discord.Interaction, current: str
                              ) -> list[app_commands.Choice[str]]:
        async def make() -> list[app_commands.Choice[str]]:
            me = await read_actor(interaction)
            ns = interaction.namespace
            focused = next((s for s in SLOTS if getattr(ns, s, None) == current), None)
            taken = {getattr(ns, s, None) for s in SLOTS if s != focused} - {None, ""}
            base = getattr(ns, "base", None) or None
            found = await services_of(interaction).elements.autocomplete(me, current, base_model=base, limit=25,
                                                                     with_groups=True)
            return choices([(label, value) for label, value in found if value not in taken])
        return await safe_choices(make)

    @generate.autocomplete("base")
    async def base_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        needle = current.strip().lower()
        models = self.bot.settings.base_models
        return choices([(f"{name} ({spec.family.value})" + (" — default" if name == self.bot.settings.default_base_model
                                                             else ""), name)
                        for name, spec in sorted(models.items()) if needle in name.lower()])


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Generate(bot))
