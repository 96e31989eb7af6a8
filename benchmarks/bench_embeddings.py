"""Nearest tokens over SD1.5's real-size token table (49408 x 768, random weights, the real CLIP
tokenizer): labkit.embeddings.vectors.nearest_tokens (one matrix product on the cached normalised table)
vs the embedding-inspector way (a Python loop computing one cosine per token), and vs the bare
matrix product it is built on.

Usage: python benchmarks/bench_embeddings.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from loadavg import load_line

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labkit.embeddings.vectors import nearest_tokens  # noqa: E402
from labkit.zoo import TOKENIZER  # noqa: E402

REPEATS = 5
VOCAB, WIDTH, K = 49408, 768, 10


def encoder() -> torch.nn.Module:
    """A CLIP text encoder with SD1.5's token table size (one thin layer: only the table counts)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=64,
                                        num_attention_heads=12, num_hidden_layers=1)).eval()


def inspector_loop(table: torch.Tensor, query: torch.Tensor) -> list[int]:
    """embedding-inspector's way: one cosine per vocabulary token in Python, then a sort."""
    scores = []
    for i in range(table.shape[0]):
        scores.append((float(torch.nn.functional.cosine_similarity(table[i], query, dim=0)), i))
    scores.sort(reverse=True)
    return [i for _, i in scores[:K]]


def median_seconds(fn: Callable[[], object], times: list[float]) -> None:
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)


def compare(name: str, lab: Callable[[], object], anchor: Callable[[], object],
            target: str) -> None:
    """Alternate lab and anchor REPEATS times (after one warm-up each); print the median ratio."""
    lab(), anchor()
    lab_t: list[float] = []
    anchor_t: list[float] = []
    for _ in range(REPEATS):
        median_seconds(lab, lab_t)
        median_seconds(anchor, anchor_t)
    lab_s, anchor_s = statistics.median(lab_t), statistics.median(anchor_t)
    print(f"{name}: {lab_s / anchor_s:.4f}x ({lab_s * 1000:.2f} ms vs {anchor_s * 1000:.2f} ms, "
          f"median of {REPEATS}) target {target}")


def main() -> int:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    te = encoder()
    table = te.get_input_embeddings().weight.detach()
    query = table[2368].clone()  # "cat</w>"
    lab = nearest_tokens(query, te, tokenizer, k=K)["id"].tolist()
    assert lab == inspector_loop(table, query), "the two ways disagree"
    compare("nearest_tokens vs python loop (embedding-inspector)",
            lambda: nearest_tokens(query, te, tokenizer, k=K),
            lambda: inspector_loop(table, query), "<= 0.1")
    unit = table / table.norm(dim=-1, keepdim=True)
    compare("nearest_tokens vs one matrix product + topk",
            lambda: nearest_tokens(query, te, tokenizer, k=K),
            lambda: torch.topk(unit @ (query / query.norm()), K), "<= 1.5")
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
