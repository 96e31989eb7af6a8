"""SDXL's text conditioning: two encoders' penultimate states side by side, the pooled prompt and
the size/crop micro-conditions, with dropped captions zeroed (as SDXL's trainer does)."""

from __future__ import annotations

import torch

from labkit.zoo.recipe.dataset import SIZE

# original size (h, w), crop top-left (y, x), target size (h, w): the demo images are uncropped
TIME_IDS = (SIZE, SIZE, 0, 0, SIZE, SIZE)


class XLConditioner:
    """Captions -> the SDXL UNet's `encoder_hidden_states` and `added_cond_kwargs`.
    Frozen encoders are run once per caption (cached); trained ones (LoRA, TI) every call."""

    def __init__(self, tokenizers: list, encoders: list, cache: bool = True):
        self.tokenizers = tokenizers
        self.encoders = encoders
        self.cache = cache
        self._rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate hidden states of both encoders concatenated [B, 77, D1+D2], pooled [B, P])."""
        states, pooled = [], None
        for tok, te in zip(self.tokenizers, self.encoders, strict=True):
            ids = tok(captions, padding="max_length", truncation=True,
                      max_length=tok.model_max_length, return_tensors="pt").input_ids
            out = te(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected pooled output (text_embeds)
        return torch.cat(states, -1), pooled

    def _encode_cached(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [c for c in dict.fromkeys(captions) if c not in self._rows]
        if missing:
            with torch.no_grad():
                hidden, pooled = self.encode(missing)
            self._rows.update(zip(missing, zip(hidden, pooled, strict=True), strict=True))
        rows = [self._rows[c] for c in captions]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def __call__(self, captions: list[str]) -> dict:
        """The UNet keyword arguments for these captions ("" means dropped: zeros)."""
        hidden, pooled = self._encode_cached(captions) if self.cache else self.encode(captions)
        keep = torch.tensor([c != "" for c in captions], dtype=hidden.dtype)
        time_ids = torch.tensor([TIME_IDS] * len(captions), dtype=hidden.dtype)
        return {"encoder_hidden_states": hidden * keep[:, None, None],
                "added_cond_kwargs": {"text_embeds": pooled * keep[:, None], "time_ids": time_ids}}
