"""SDXL: two CLIP encoders (penultimate hidden states concatenated + pooled from the second) and size/crop
``add_time_ids``; otherwise the SD1.5 noise scheme and UNet targets."""

from __future__ import annotations

import torch

from trainer.families.base import Batch
from trainer.families.sd15 import SD15Family


class SDXLFamily(SD15Family):
    name = "sdxl"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    default_sample_guidance = 5.0

    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        hidden_states, pooled = [], None
        pairs = [(self.pipe.tokenizer, self.pipe.text_encoder), (self.pipe.tokenizer_2, self.pipe.text_encoder_2)]
        with self.autocast():
            for tokenizer, te in pairs:
                out = te(self._tokens(tokenizer, captions), output_hidden_states=True)
                hidden_states.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer
                pooled = out[0]  # the second encoder's projected pooled output wins, as in the pipeline
        return {"prompt_embeds": torch.cat(hidden_states, dim=-1), "pooled": pooled}

    def extras_for(self, original_size, crop, target_size) -> dict[str, torch.Tensor]:
        # The micro-conditioning SDXL was trained with: (orig h, orig w, crop top, crop left, target h, target w).
        return {"time_ids": torch.tensor([*original_size, *crop, *target_size], dtype=torch.float32)}

    def unet_kwargs(self, batch: Batch, text: dict[str, torch.Tensor]) -> dict:
        time_ids = batch.extras["time_ids"].to(self.runtime.device, self.runtime.weight_dtype)
        return {"encoder_hidden_states": text["prompt_embeds"],
                "added_cond_kwargs": {"text_embeds": text["pooled"], "time_ids": time_ids}}

    def pipeline_kwargs(self, text, negative) -> dict:
        if self.pipe.config.get("force_zeros_for_empty_prompt", False):
            negative = {k: torch.zeros_like(v) for k, v in negative.items()}
        return {"prompt_embeds": text["prompt_embeds"], "pooled_prompt_embeds": text["pooled"],
                "negative_prompt_embeds": negative["prompt_embeds"],
                "negative_pooled_prompt_embeds": negative["pooled"]}
