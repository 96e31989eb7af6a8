"""Textual inversion containers side by side: tiny example files of every form the field
writes, and a table of what the lab tells of each file (form, kind, base, widths).

The examples hold random vectors in the real key names and widths of each writer
(/work/shared/FORMATS.md sections 8 and 9); nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save_file

from labkit.identify.embedding_forms import T5_KEY


class Example(NamedTuple):
    """One example file: its name, who writes files like it, and its tensors' widths."""

    file: str
    writer: str
    widths: dict[str, int]
    metadata: dict[str, str] | None = None


CLIP_L, CLIP_G, T5_XXL = 768, 1280, 4096  # the text encoders' widths
# The placeholder of the .pt forms, and the CLIP token id the ldm code gave it.
PLACEHOLDER, PLACEHOLDER_ID = "*", 265
EXAMPLES = {
    "ldm": Example("ldm_embedding.pt", "rinongal textual_inversion (ldm EmbeddingManager.save)",
                   {PLACEHOLDER: CLIP_L}),
    "a1111": Example("a1111_embedding.pt", "AUTOMATIC1111 Embedding.save", {PLACEHOLDER: CLIP_L}),
    "kohya": Example("kohya_embedding.safetensors", "kohya train_textual_inversion.py",
                     {"emb_params": CLIP_L}, {"ss_base_model_version": "sd_v1"}),
    "diffusers": Example("learned_embeds.safetensors", "diffusers textual_inversion.py",
                         {"<my-token>": CLIP_L}),
    "sdxl": Example("sdxl_emb.safetensors", "kohya sdxl_train_textual_inversion.py",
                    {"clip_l": CLIP_L, "clip_g": CLIP_G}),
    "flux": Example("flux_emb.safetensors", "diffusers train_dreambooth_lora_flux_advanced.py",
                    {"clip_l": CLIP_L, T5_KEY: T5_XXL}),
    "sd3": Example("sd3_emb.safetensors", "SD3's three encoders (no trainer found)",
                   {"clip_l": CLIP_L, "clip_g": CLIP_G, T5_KEY: T5_XXL}),
    "t5": Example("t5_emb.safetensors", "a T5-XXL part alone", {T5_KEY: T5_XXL}),
}
# What A1111 saves beside the vectors (its step is a Python int).
A1111_FIELDS = {"name": "my-embedding", "step": 1500, "sd_checkpoint": None,
                "sd_checkpoint_name": "v1-5-pruned-emaonly"}


def _pickled(form: str, vectors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The dict an ldm or A1111 .pt holds: token ids and the vectors, A1111's fields too."""
    if form == "ldm":  # a ParameterDict, and the token id as a 0-d tensor
        return {"string_to_token": {PLACEHOLDER: torch.tensor(PLACEHOLDER_ID)},
                "string_to_param": torch.nn.ParameterDict(
                    {k: torch.nn.Parameter(v) for k, v in vectors.items()})}
    return {"string_to_token": {PLACEHOLDER: PLACEHOLDER_ID}, "string_to_param": vectors,
            **A1111_FIELDS}


def write_examples(folder: str | Path, n_vectors: int = 2, seed: int = 0) -> dict[str, Path]:
    """Write one small example file per TI form (EXAMPLES) into `folder`; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = {}
    for form, ex in EXAMPLES.items():
        vectors = {k: torch.randn(n_vectors, w, generator=g) * 0.4 for k, w in ex.widths.items()}
        paths[form] = folder / ex.file
        if ex.file.endswith(".pt"):
            torch.save(_pickled(form, vectors), paths[form])
        else:
            save_file(vectors, paths[form], ex.metadata)
    return paths


def forms_table(paths: Mapping[str, str | Path]) -> Any:
    """A pandas DataFrame, one row per file: form, kind, base, widths, the part each file key
    feeds ("?" where the file does not tell), whether the lab loads it.

    Raises what labkit.open_model raises (a missing file, not a model, corrupt, unsafe).
    """
    import pandas as pd

    from labkit.embeddings.textual_inversion import read_textual_inversion
    from labkit.files.opener import open_model

    rows = []
    for label, path in paths.items():
        ident = open_model(path).identity
        row: dict[str, Any] = {"file": Path(path).name, "form": None, "kind": ident.kind,
                               "base": ident.base}
        if ident.kind == "textual_inversion":
            ti = read_textual_inversion(path)
            row |= {"form": ti.form, "widths": " + ".join(map(str, ti.widths.values())),
                    "parts": ", ".join(f"{key} -> {part if part != key else '?'}"
                                       for part, key in ti.parts.items()),
                    "vectors": ti.n_vectors, "lab loads it": ti.loadable}
        rows.append({"example": label, **row})
    return pd.DataFrame(rows).set_index("example")
