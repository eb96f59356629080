"""Per-family training behaviour (SD1.5, SDXL, Flux) behind one interface, :class:`TrainFamily`."""

from __future__ import annotations

from trainer.families.base import Batch, Runtime, TrainFamily


def family_class(name: str) -> type[TrainFamily]:
    """The :class:`TrainFamily` subclass for ``name`` ("sd15", "sdxl", "flux")."""
    if name == "sd15":
        from trainer.families.sd15 import SD15Family

        return SD15Family
    if name == "sdxl":
        from trainer.families.sdxl import SDXLFamily

        return SDXLFamily
    if name == "flux":
        from trainer.families.flux import FluxFamily

        return FluxFamily
    raise ValueError(f"unknown base family {name!r}; expected one of sd15, sdxl, flux")


__all__ = ["Batch", "Runtime", "TrainFamily", "family_class"]
