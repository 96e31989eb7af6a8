"""Derive CLIP's vocab.json and merges.txt from open_clip's BPE file (REFERENCE.md section 5).

Run once: `python -m labkit.zoo.recipe.tokenizer PATH/bpe_simple_vocab_16e6.txt.gz OUT_FOLDER`.
The build reads the shipped files in data/tokenizer/ and never needs the .gz again.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from labkit.errors import NotAModelError

N_MERGES = 48894  # CLIP uses the first 49152 - 256 - 2 merge lines of the file
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
VOCAB_SIZE = 49408
TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "do_lower_case": True,
    "clean_up_tokenization_spaces": True,
}
SPECIAL_TOKENS_MAP = {k: TOKENIZER_CONFIG[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def derive(bpe_lines: list[str]) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocab (token -> id) and merge list from the lines of the BPE file."""
    merges = bpe_lines[1 : N_MERGES + 1]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges] + list(SPECIALS)
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_folder(bpe_gz: Path, out: Path) -> None:
    """Write vocab.json, merges.txt and the configs into `out`; raises NotAModelError on a bad file."""
    try:
        with gzip.open(bpe_gz) as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise NotAModelError(f"cannot read the CLIP BPE file ({exc})", bpe_gz,
                             "Give open_clip's bpe_simple_vocab_16e6.txt.gz.") from None
    vocab, merges = derive(lines)
    if len(vocab) != VOCAB_SIZE:
        raise NotAModelError(f"derived {len(vocab)} tokens, expected {VOCAB_SIZE}", bpe_gz,
                             "Give open_clip's bpe_simple_vocab_16e6.txt.gz.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_configs(out)


def write_configs(out: Path, pad_token: str = TOKENIZER_CONFIG["pad_token"]) -> None:
    """tokenizer_config.json and special_tokens_map.json into `out`, padding with `pad_token`
    (SDXL's second tokenizer: "!")."""
    for name, config in (("tokenizer_config.json", TOKENIZER_CONFIG),
                         ("special_tokens_map.json", SPECIAL_TOKENS_MAP)):
        (out / name).write_text(json.dumps({**config, "pad_token": pad_token}, indent=2) + "\n")


def load_tokenizer(folder: Path, pad_token: str = "<|endoftext|>"):
    """The CLIPTokenizer of a tokenizer folder (vocab.json + merges.txt), max length 77; SDXL's
    second tokenizer pads with "!" instead of the end token."""
    from transformers import CLIPTokenizer

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(m.split()) for m in merges if m]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token=pad_token)


if __name__ == "__main__":
    write_tokenizer_folder(Path(sys.argv[1]), Path(sys.argv[2]))
