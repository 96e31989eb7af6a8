"""Every LoRA writer's key style, rewritten to one canonical spelling before anything reads it.

The field has written the same LoRA many ways: diffusers' attention processors (<= 0.20,
`attn1.processor.to_q_lora.down.weight`), its LoRACompatibleLinear era (0.21-0.25,
`attn1.to_q.lora.down.weight`, text encoders `q_proj.lora_linear_layer.down.weight`), PEFT
(`to_q.lora_A.weight`, in `save_pretrained` folders under `base_model.model.` or no prefix,
sometimes `lora_A.default.weight`), kohya (`lora_unet_..._to_q.lora_down.weight`), ai-toolkit and
ComfyUI (`diffusion_model.` prefixes), LyCORIS' own wrapper (`lycoris_` + kohya-style names) and
XLabs' Flux processors (`processor.qkv_lora1.down`).
The canonical spelling is kohya's or PEFT's suffix (`.lora_down.weight`, `.lora_A.weight`) after a
component prefix (`unet.`, `text_encoder.`, `transformer.`; BFL Flux names bare). Like diffusers'
`lora_conversion_utils`, but one table, and it keeps track of which writer each key came from.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import islice
from typing import NamedTuple

from labkit.tensors import TensorInfo

_DU = r"(down|up)\.weight$"
# Old diffusers attention-processor leaves -> the module they patch.
PROCESSOR_UNET_LEAVES = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
PROCESSOR_TE_LEAVES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
# XLabs x-flux processors -> the BFL Flux module they patch (single blocks: qkv is the
# attention part of linear1's output).
_XLABS_LEAVES = {"qkv_lora1": "img_attn.qkv", "proj_lora1": "img_attn.proj",
                 "qkv_lora2": "txt_attn.qkv", "proj_lora2": "txt_attn.proj",
                 "qkv_lora": "linear1", "proj_lora": "linear2"}


class Rewrite(NamedTuple):
    """One writer's spelling: a regex on the key and what it becomes."""

    writer: str
    pattern: re.Pattern[str]
    replacement: str


def _rows(writer: str, rows: Iterable[tuple[str, str]]) -> list[Rewrite]:
    return [Rewrite(writer, re.compile(p), r) for p, r in rows]


# Module-and-suffix spellings, first match wins (at most one applies to a key).
SUFFIX_STYLES: tuple[Rewrite, ...] = (
    *_rows("diffusers attention processor (<= 0.20)",
           [(rf"\.self_attn\.{leaf}_lora\.{_DU}", rf".self_attn.{mod}.lora_\1.weight")
            for leaf, mod in PROCESSOR_TE_LEAVES.items()]
           + [(rf"\.processor\.{leaf}_lora\.{_DU}", rf".{mod}.lora_\1.weight")
              for leaf, mod in PROCESSOR_UNET_LEAVES.items()]),
    *_rows("XLabs Flux processor", [(rf"\.processor\.{leaf}\.{_DU}", rf".{mod}.lora_\1.weight")
                                    for leaf, mod in _XLABS_LEAVES.items()]),
    *_rows("diffusers LoRACompatibleLinear (0.21-0.25)",
           [(rf"\.lora\.{_DU}", r".lora_\1.weight"),
            (rf"\.lora_linear_layer\.{_DU}", r".lora_\1.weight")]),
    *_rows("PEFT with an adapter name", [(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight"),
                                         (r"\.lora_magnitude_vector\.[^.]+\.weight$",
                                          ".lora_magnitude_vector")]),
)

# Component prefixes, first match wins.
PREFIX_STYLES: tuple[Rewrite, ...] = (
    *_rows("diffusers doubled unet. prefix", [(r"^unet\.unet\.", "unet.")]),
    *_rows("PEFT save_pretrained (base_model.model.)", [(r"^base_model\.model\.", "")]),
    *_rows("LyCORIS / SimpleTuner lycoris_ prefix",
           [(r"^lycoris_((single_)?transformer_blocks_)", r"lora_transformer_\1"),
            (r"^lycoris_", "lora_unet_")]),
    *_rows("ai-toolkit / ComfyUI diffusion_model. prefix",
           [(r"^diffusion_model\.((single_)?transformer_blocks\.)", r"transformer.\1"),
            (r"^(model\.)?diffusion_model\.", "")]),
)
# Keys with no component prefix (PEFT saves, save_attn_procs): the component from the first name.
BARE_COMPONENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), c) for p, c in (
        (r"^(down_blocks|mid_block|up_blocks|conv_in|conv_out|time_embedding)\.", "unet."),
        (r"^text_model\.", "text_encoder."),
        (r"^(single_)?transformer_blocks\.", "transformer."),
    ))
# A bare text-encoder module this wide is SDXL's second encoder (its first is 768 wide).
BARE_TE2_WIDTH = 1280
BARE_TE2 = "text_encoder_2."
CANONICAL = "canonical"  # the writer of keys no rewrite touched
# Every adapter key of every style has one of these in it; a checkpoint's keys almost never do,
# so a table where fewer than half do is no adapter, told without running the rewrites.
ADAPTER_HINTS = ("lora", "hada_", "lokr_", "dora_scale")  # anywhere in the key
ADAPTER_ENDINGS = (".alpha", ".diff", ".diff_b")  # at its end
ADAPTER_HINT = re.compile("|".join(map(re.escape, ADAPTER_HINTS)) + "|(?:"
                          + "|".join(map(re.escape, ADAPTER_ENDINGS)) + ")$")
# The same hints searched in keys joined by newlines: one C search per hint instead of a regex
# per key (a key that itself holds a newline can only add a false "maybe", never hide a hint).
_HINTS_IN_LINES = ADAPTER_HINTS + tuple(ending + "\n" for ending in ADAPTER_ENDINGS)


class Canonical(NamedTuple):
    """A key in the canonical spelling, and the writers' styles that led there."""

    key: str
    styles: tuple[str, ...]


def _any_of(rewrites: Iterable[Rewrite]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{row.pattern.pattern})" for row in rewrites))


_ANY = {SUFFIX_STYLES: _any_of(SUFFIX_STYLES), PREFIX_STYLES: _any_of(PREFIX_STYLES)}


def _first(rewrites: tuple[Rewrite, ...], key: str) -> tuple[str, str | None]:
    if not _ANY[rewrites].search(key):  # one scan for most keys, which no writer's style touches
        return key, None
    for row in rewrites:
        new, n = row.pattern.subn(row.replacement, key, count=1)
        if n:
            return new, row.writer
    return key, None


def looks_like_adapter(keys: Iterable[str]) -> bool:
    """Whether at least half the keys carry an adapter part's name (a cheap test before the rewrites)."""
    keys = list(keys)
    need = -(-len(keys) // 2)
    # No hint in the first len - need + 1 keys leaves too few keys to carry one: told at half.
    lines = "\n".join(islice(keys, len(keys) - need + 1)) + "\n"
    if not any(hint in lines for hint in _HINTS_IN_LINES):
        return False
    return 2 * sum(1 for k in keys if ADAPTER_HINT.search(k)) >= len(keys)


@lru_cache(maxsize=1 << 16)
def canonical_key(key: str, in_width: int | None = None) -> Canonical:
    """The key in the canonical spelling (`in_width`: the module's input width, which tells a bare
    SDXL text-encoder key's encoder), with the styles that rewrote it."""
    key, prefix_style = _first(PREFIX_STYLES, key)
    key, suffix_style = _first(SUFFIX_STYLES, key)
    bare = next((c for p, c in BARE_COMPONENTS if p.match(key)), None)
    if bare is not None:
        bare = BARE_TE2 if bare == "text_encoder." and in_width == BARE_TE2_WIDTH else bare
        key, prefix_style = bare + key, prefix_style or f"no component prefix ({bare} assumed)"
    return Canonical(key, tuple(s for s in (prefix_style, suffix_style) if s))


def _in_width(info: TensorInfo | None) -> int | None:
    return info.shape[1] if info is not None and len(info.shape) >= 2 else None


def _down_twin(key: str, table: Mapping[str, TensorInfo]) -> TensorInfo | None:
    """The down / A tensor of the module an up / B key belongs to (it holds the input width)."""
    for up, down in (("lora_B", "lora_A"), ("up.weight", "down.weight"), ("lora_up", "lora_down")):
        if up in key:
            return table.get(key.replace(up, down))
    return table.get(key)


def canonical_table(table: Mapping[str, TensorInfo]) -> dict[str, tuple[str, Canonical]]:
    """{canonical key: (original key, how it was rewritten)} for a whole tensor table."""
    out: dict[str, tuple[str, Canonical]] = {}
    for key, info in table.items():
        found = canonical_key(key, _in_width(_down_twin(key, table) or info))
        out.setdefault(found.key, (key, found))
    return out


def writer_styles(table: Mapping[str, TensorInfo]) -> Counter[str]:
    """How many keys each writer's style rewrote (keys no rule touched count as canonical)."""
    counts: Counter[str] = Counter()
    for _, found in canonical_table(table).values():
        counts.update(found.styles or (CANONICAL,))
    return counts
