"""Text conditioning for the denoiser: captions -> token ids -> CLIP hidden states, as SD1 does."""

from __future__ import annotations

import torch


class TextConditioner:
    """Turns captions into the UNet's `encoder_hidden_states` (SD1: CLIP's last hidden state)."""

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self._ids: dict[str, torch.Tensor] = {}

    def ids(self, captions: list[str]) -> torch.Tensor:
        """Token ids padded to 77, cached per caption."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._ids]
        if missing:
            enc = self.tokenizer(missing, padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt")
            self._ids.update(zip(missing, enc.input_ids, strict=True))
        return torch.stack([self._ids[c] for c in captions])

    def __call__(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """The UNet keyword arguments for these captions."""
        return {"encoder_hidden_states": self.text_encoder(self.ids(captions))[0]}
