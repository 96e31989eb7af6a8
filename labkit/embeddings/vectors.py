"""Token vectors, prompt vectors and textual inversion, as data.

A prompt becomes token ids (the tokenizer), each id picks a row of the text encoder's token
table (its input vector, the "embedding"), and the encoder turns the 77 rows into 77 output
vectors: those are what the UNet's cross-attention sees. Reading and loading textual inversion
files lives in labkit.embeddings.textual_inversion; its public names are offered here too.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from labkit.embeddings.textual_inversion import (
    TextualInversion,
    load_textual_inversion,
    loaded_tokens,
    read_textual_inversion,
    unload_textual_inversion,
)
from labkit.errors import LabkitError
from labkit.quiet import quiet_libraries

__all__ = [
    "PromptVectors", "TextualInversion", "cosine_matrix", "load_textual_inversion",
    "loaded_tokens", "map_2d", "nearest_tokens", "neighbour_map", "prompt_similarity",
    "prompt_vectors", "read_textual_inversion", "token_table", "token_vector",
    "unload_textual_inversion", "vocabulary_norms", "with_and_without",
]

WINDOW = 77  # CLIP's context: BOS, 75 tokens, EOS (padded to 77)
MAP_METHODS = ("pca",)

# text_encoder -> (stamp of its token table, the table's rows scaled to length 1)
_NORMALISED: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.Tensor]] = \
    weakref.WeakKeyDictionary()


def _table(text_encoder: Any) -> torch.Tensor:
    return text_encoder.get_input_embeddings().weight.detach()


def _kinds(ids: list[int], mask: list[int], tokenizer: Any) -> list[str]:
    """BOS / word / EOS / padding / TI (a textual inversion's added token) for each position."""
    added = {i for i, t in tokenizer.added_tokens_decoder.items() if not t.special}
    kinds = []
    for pos, (i, m) in enumerate(zip(ids, mask, strict=True)):
        if not m:
            kinds.append("padding")
        elif pos == 0 and i == tokenizer.bos_token_id:
            kinds.append("BOS")
        elif i == tokenizer.eos_token_id and (pos + 1 == len(ids) or not mask[pos + 1]):
            kinds.append("EOS")
        else:
            kinds.append("TI" if i in added else "word")
    return kinds


def _texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    # no clean-up: it is meant for WordPiece and strips spaces in BPE (transformers warns so)
    return [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]


def token_table(tokenizer: Any, text_encoder: Any, text: str) -> pd.DataFrame:
    """How a prompt is tokenised: one row per position of the 77-token window (position, id,
    token, text, kind BOS/word/TI/EOS/padding, norm of its input vector, in_window), then one
    row per token cut off by the window (kind "truncated")."""
    window = tokenizer(text, padding="max_length", max_length=WINDOW, truncation=True)
    ids, mask = list(window.input_ids), list(window.attention_mask)
    with quiet_libraries():  # the whole prompt, past the window on purpose: no length warning
        words = tokenizer(text, add_special_tokens=False).input_ids
    cut = words[WINDOW - 2:]
    kinds = _kinds(ids, mask, tokenizer) + ["truncated"] * len(cut)
    all_ids = ids + cut
    table = _table(text_encoder)
    norms = table[torch.tensor(all_ids, device=table.device)].float().norm(dim=-1).cpu()
    return pd.DataFrame({
        "position": range(len(all_ids)),
        "id": all_ids,
        "token": tokenizer.convert_ids_to_tokens(all_ids),
        "text": _texts(tokenizer, all_ids),
        "kind": kinds,
        "norm": norms.numpy().round(4),
        "in_window": [p < WINDOW for p in range(len(all_ids))],
    })


def token_vector(token: str | int, text_encoder: Any, tokenizer: Any) -> torch.Tensor:
    """A token's input vector: by id, by vocabulary entry ("cat</w>", "<checker>") or by a word
    that is a single token ("cat"). Raises LabkitError for a word of several tokens."""
    if isinstance(token, str):
        ids = tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1 and token in tokenizer.get_vocab():
            ids = [tokenizer.convert_tokens_to_ids(token)]
        if len(ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise LabkitError(f"{token!r} is {len(ids)} tokens ({' '.join(pieces)}), not one.",
                              hint="Give a single token (a word from nearest_tokens, an id, or a "
                                   "vector).")
        token = ids[0]
    table = _table(text_encoder)
    if not 0 <= int(token) < table.shape[0]:
        raise LabkitError(f"token id {token} is outside the table of {table.shape[0]} rows.")
    return table[int(token)].float()


def _normalised(text_encoder: Any) -> torch.Tensor:
    """The token table in float32 with rows of length 1, kept until the table changes."""
    table = _table(text_encoder)
    stamp = (table.data_ptr(), table._version, tuple(table.shape), table.dtype)
    cached = _NORMALISED.get(text_encoder)
    if cached is None or cached[0] != stamp:
        t = table.float()
        cached = (stamp, t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        _NORMALISED[text_encoder] = cached
    return cached[1]


def _query(query: torch.Tensor | str | int, text_encoder: Any, tokenizer: Any,
           width: int) -> torch.Tensor:
    if not isinstance(query, torch.Tensor):
        return token_vector(query, text_encoder, tokenizer)
    vec = query.detach().float().reshape(-1) if query.dim() == 2 and query.shape[0] == 1 \
        else query.detach().float()
    if vec.dim() != 1 or vec.shape[0] != width:
        raise LabkitError(f"a vector of shape {tuple(query.shape)} cannot be compared with this "
                          f"text encoder's {width}-wide tokens.",
                          hint="Give one vector of the encoder's width (one row of a TI).")
    return vec


def nearest_tokens(query: torch.Tensor | str | int, text_encoder: Any, tokenizer: Any,
                   k: int = 10) -> pd.DataFrame:
    """The k vocabulary tokens whose input vectors point most nearly the same way as `query`
    (a vector, a token or an id): rank, id, token, text, cosine, norm. One matrix product over
    the whole table (textual inversion rows left out). Raises LabkitError for a bad query."""
    unit = _normalised(text_encoder)[: tokenizer.vocab_size]
    vec = _query(query, text_encoder, tokenizer, unit.shape[1]).to(unit.device)
    cos = unit @ (vec / vec.norm().clamp_min(1e-12))
    top = torch.topk(cos, min(int(k), cos.shape[0]))
    ids = top.indices.tolist()
    norms = _table(text_encoder)[top.indices].float().norm(dim=-1)
    return pd.DataFrame({
        "rank": range(1, len(ids) + 1), "id": ids,
        "token": tokenizer.convert_ids_to_tokens(ids),
        "text": _texts(tokenizer, ids),
        "cosine": top.values.cpu().numpy().round(4),
        "norm": norms.cpu().numpy().round(4),
    })


def vocabulary_norms(text_encoder: Any, tokenizer: Any) -> torch.Tensor:
    """The length of every vocabulary token's input vector (textual inversion rows left out)."""
    return _table(text_encoder)[: tokenizer.vocab_size].float().norm(dim=-1).cpu()


@dataclass
class PromptVectors:
    """What the UNet's cross-attention sees for a prompt: `hidden` [77, width] (for SDXL both
    encoders' outputs side by side), split per encoder in `per_encoder`; `pooled` is SDXL's
    pooled vector (None for SD1/SD2); `tokens` is the first tokenizer's token_table."""

    prompt: str
    tokens: pd.DataFrame
    hidden: torch.Tensor
    per_encoder: dict[str, torch.Tensor]
    pooled: torch.Tensor | None

    @property
    def eos_position(self) -> int:
        """Where the EOS token sits: CLIP's own summary of the prompt is its output there."""
        return int(self.tokens.index[self.tokens["kind"] == "EOS"][0])

    @property
    def summary(self) -> torch.Tensor:
        """One vector for the prompt: the output at the EOS position."""
        return self.hidden[self.eos_position]

    def norms(self) -> pd.DataFrame:
        """The token table with the length of each position's output vector, per encoder."""
        frame = self.tokens[self.tokens["in_window"]].copy()
        for enc, h in self.per_encoder.items():
            frame[f"{enc}_output_norm"] = h.norm(dim=-1).numpy().round(4)
        return frame


def prompt_vectors(pipe: Any, prompt: str) -> PromptVectors:
    """The text encoder(s)' output for a prompt, exactly as the pipeline gives it to the UNet
    (through its own encode_prompt: textual inversion words, SDXL's penultimate layer and pooled
    vector included)."""
    from labkit.embeddings.textual_inversion import ENCODERS

    with torch.no_grad():
        out = pipe.encode_prompt(prompt=prompt, device=pipe._execution_device,
                                 num_images_per_prompt=1, do_classifier_free_guidance=False)
    hidden = out[0][0].detach().float().cpu()
    pooled = out[2][0].detach().float().cpu() if len(out) > 2 and out[2] is not None else None
    encoders = [enc for _, enc in ENCODERS if getattr(pipe, enc, None) is not None]
    widths = [getattr(pipe, enc).config.hidden_size for enc in encoders]
    parts = dict(zip(encoders, hidden.split(widths, dim=-1), strict=True))
    text = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    return PromptVectors(prompt, token_table(pipe.tokenizer, pipe.text_encoder, text), hidden,
                         parts, pooled)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def prompt_similarity(pipe: Any, a: str, b: str) -> pd.DataFrame:
    """Two prompts position by position, up to the later EOS: their tokens and the cosine of the
    output vectors the UNet sees (overall and per encoder)."""
    va, vb = prompt_vectors(pipe, a), prompt_vectors(pipe, b)
    end = max(va.eos_position, vb.eos_position) + 1
    frame = pd.DataFrame({"position": range(end), "token_a": va.tokens["token"][:end].tolist(),
                          "token_b": vb.tokens["token"][:end].tolist(),
                          "cosine": _cosine(va.hidden[:end], vb.hidden[:end]).numpy().round(4)})
    if len(va.per_encoder) > 1:
        for enc in va.per_encoder:
            frame[f"cosine_{enc}"] = _cosine(va.per_encoder[enc][:end],
                                             vb.per_encoder[enc][:end]).numpy().round(4)
    return frame


def _stack(vectors: torch.Tensor | Sequence[torch.Tensor], labels: Sequence[str]) -> torch.Tensor:
    x = vectors if isinstance(vectors, torch.Tensor) else torch.stack([v.reshape(-1)
                                                                       for v in vectors])
    x = x.detach().float().cpu()
    if x.dim() != 2 or x.shape[0] != len(labels):
        raise LabkitError(f"{x.shape[0] if x.dim() else 0} vectors for {len(labels)} labels.",
                          hint="Give one label per vector.")
    return x


def cosine_matrix(vectors: torch.Tensor | Sequence[torch.Tensor],
                  labels: Sequence[str]) -> pd.DataFrame:
    """Cosine similarity of every pair of vectors, as a square labelled DataFrame."""
    x = _stack(vectors, labels)
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return pd.DataFrame((unit @ unit.T).numpy().round(4), index=list(labels),
                        columns=list(labels))


def map_2d(vectors: torch.Tensor | Sequence[torch.Tensor], labels: Sequence[str],
           method: str = "pca") -> pd.DataFrame:
    """The vectors projected onto their two main directions (PCA by SVD): label, x, y, norm.
    `frame.attrs["explained"]` holds each axis's share of the variance."""
    if method not in MAP_METHODS:
        raise LabkitError(f"unknown map method {method!r}.", hint=f"Use one of {MAP_METHODS}.")
    x = _stack(vectors, labels)
    if x.shape[0] < 2:
        raise LabkitError("a map needs at least two vectors.", hint="Add some words to compare.")
    centred = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2] if vh.shape[0] >= 2 else torch.cat([vh, torch.zeros_like(vh)])
    xy = centred @ axes.T
    frame = pd.DataFrame({"label": list(labels), "x": xy[:, 0].numpy(), "y": xy[:, 1].numpy(),
                          "norm": x.norm(dim=-1).numpy()})
    var = s**2
    frame.attrs["explained"] = (var[:2] / var.sum().clamp_min(1e-12)).tolist()
    return frame


def neighbour_map(named: dict[str, torch.Tensor], text_encoder: Any, tokenizer: Any,
                  k: int = 5) -> pd.DataFrame:
    """map_2d of the named vectors together with each one's k nearest vocabulary tokens
    (each token once): where a word or a textual inversion sits among its neighbours."""
    vectors = {label: v.detach().float().reshape(-1).cpu() for label, v in named.items()}
    table = _table(text_encoder)
    for v in list(vectors.values()):
        near = nearest_tokens(v, text_encoder, tokenizer, k)
        for i, token, text in near[["id", "token", "text"]].itertuples(index=False):
            label = text.strip() if text.strip().isprintable() and text.strip() else token
            vectors.setdefault(label, table[i].float().cpu())
    return map_2d(list(vectors.values()), list(vectors))


def with_and_without(pipe: Any, ti: str | TextualInversion, prompt: str, seed: int = 0,
                     **generate_kwargs: Any) -> dict[str, Any]:
    """Two images from the same seed: the prompt with the embedding's word, and the same prompt
    with that word taken out. The embedding is loaded for the first and taken out after, unless
    it was loaded already. Raises LabkitError when the prompt does not use the word."""
    from labkit.generate.sampling import generate

    emb = ti if isinstance(ti, TextualInversion) else read_textual_inversion(ti)
    if emb.token not in prompt:
        raise LabkitError(f"the prompt does not use the embedding's word {emb.token}.",
                          hint=f"Write {emb.token} in the prompt, e.g. 'a red circle, "
                               f"{emb.token}'.")
    without = re.sub(r"\s+", " ", prompt.replace(emb.token, " ")).strip(" ,")
    images = {"without": generate(pipe, without, seed=seed, **generate_kwargs)[0]}
    already = emb.token in loaded_tokens(pipe)
    if not already:
        load_textual_inversion(pipe, emb)
    try:
        images["with"] = generate(pipe, prompt, seed=seed, **generate_kwargs)[0]
    finally:
        if not already:
            unload_textual_inversion(pipe, emb.token)
    return images
