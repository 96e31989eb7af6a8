"""Adapters of the demo world, trained for real with peft: a LoRA, a LoHa, a LoKr and a textual inversion."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from labkit.zoo.recipe.dataset import STYLES, mixed_samples
from labkit.zoo.recipe.train import (
    LatentPool,
    Stage,
    cached_pool,
    denoiser_loss,
    pool_rng,
    run_stage,
)

# kohya's LoRA adapts every linear (and 1x1 conv) layer of the UNet's transformer blocks.
UNET_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
UNET_TRANSFORMER = [*UNET_ATTENTION, "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
TE_ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]
PLAIN_SHARE = 0.3  # adapters also see plain captions, so strength 0 and untriggered prompts stay put

TI_TOKEN = "<checker>"
TI_STYLE = "checker"
TI_INIT_WORD = "pattern"


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter: its peft method, the fill style it learns, the modules it adapts, its rank."""

    name: str
    method: str  # "lora", "loha" or "lokr"
    style: str
    unet_targets: tuple[str, ...]
    te_targets: tuple[str, ...] = ()
    rank: int = 8
    alpha: int = 8
    doses: tuple[float, ...] = ()

    @property
    def trigger(self) -> str:
        """The word that ends the captions of this adapter's style."""
        return str(STYLES[self.style])


ADAPTERS = (
    AdapterSpec("lora", "lora", "striped", tuple(UNET_TRANSFORMER), tuple(TE_ATTENTION), alpha=4,
                doses=(0.25, 0.5, 0.75, 1.0)),
    AdapterSpec("loha", "loha", "outlined", tuple(UNET_TRANSFORMER)),
    AdapterSpec("lokr", "lokr", "twotone", tuple(UNET_TRANSFORMER)),
)


def peft_config(spec: AdapterSpec, targets: tuple[str, ...]):
    """The peft config of an adapter spec for one model's target modules."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    if spec.method == "lora":
        return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(targets),
                          init_lora_weights=True)
    if spec.method == "loha":
        return LoHaConfig(r=spec.rank, alpha=spec.alpha, target_modules=list(targets))
    # factor 2: Kronecker factors of 2x2 and (n/2)x(n/2), the larger one full or low-rank by size
    return LoKrConfig(r=spec.rank, alpha=spec.alpha, target_modules=list(targets),
                      decompose_factor=2)


def _inject(model, spec: AdapterSpec, targets: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    from peft import inject_adapter_in_model

    inject_adapter_in_model(peft_config(spec, targets), model, adapter_name=spec.name)
    params = {n: p for n, p in model.named_parameters() if f".{spec.name}" in n}
    for p in params.values():
        p.requires_grad_(True)
    return params


@dataclass
class TrainedAdapter:
    """An adapter's peft state dicts (keys as peft names them), its training stage and captions,
    and the UNet with the adapter injected (for measuring it)."""

    spec: AdapterSpec
    unet: dict[str, torch.Tensor]
    text_encoders: tuple[dict[str, torch.Tensor], ...]
    stage: Stage
    captions: list[str]
    batch: int
    model: torch.nn.Module


def _set_scale(models: list[torch.nn.Module], name: str, scale: float) -> None:
    from peft.tuners.lora import LoraLayer

    for model in models:
        for m in model.modules():
            if isinstance(m, LoraLayer):
                m.set_scale(name, scale)


def _dosed_loss(spec: AdapterSpec, models: list[torch.nn.Module], pool: LatentPool,
                doses: list[float], make_loss: Callable[[LatentPool], Callable]) -> Callable:
    """Each step draws a strength, sets the LoRA to it and trains on patterns of that contrast."""
    losses = [make_loss(pool.subset([i for i, d in enumerate(doses) if d == dose]))
              for dose in spec.doses]

    def loss(rng: np.random.Generator) -> torch.Tensor:
        k = int(rng.integers(len(spec.doses)))
        _set_scale(models, spec.name, spec.doses[k])
        return losses[k](rng)

    return loss


def train_adapter(world, spec: AdapterSpec, stage: Stage, n_pool: int, batch: int) -> TrainedAdapter:
    """Train one adapter on its style (plus plain captions) on copies of the world's models
    (either world: SD1-style with one text encoder, SDXL-style with two).
    With `spec.doses`, each sample's pattern contrast is one of the doses and each step trains
    at that strength, so the strength dial maps onto the pattern's contrast."""
    from peft import get_peft_model_state_dict

    unet, encoders = copy.deepcopy(world.unet), copy.deepcopy(world.encoders)
    params = {f"unet.{k}": v for k, v in _inject(unet, spec, spec.unet_targets).items()}
    for i, te in enumerate(encoders if spec.te_targets else []):
        params.update({f"te{i}.{k}": v for k, v in _inject(te, spec, spec.te_targets).items()})
    rng = pool_rng(stage.seed, spec.name)
    samples = mixed_samples(rng, n_pool, {spec.style: 1 - PLAIN_SHARE, "plain": PLAIN_SHARE})
    doses = [float(rng.choice(spec.doses)) if spec.doses else 1.0 for _ in samples]
    samples = [replace(s, contrast=d) for s, d in zip(samples, doses, strict=True)]
    data = cached_pool(stage.workdir / f"pool_{spec.name}.safetensors", world.vae, samples,
                       stage.progress)

    def make_loss(pool: LatentPool) -> Callable:
        return denoiser_loss(unet, world.scheduler, pool, world.vae.config.scaling_factor, batch,
                             world.conditioner(encoders, cache=False))

    unet.train()
    run_stage(stage, params, _dosed_loss(spec, [unet, *encoders], data, doses, make_loss)
              if spec.doses else make_loss(data))
    _set_scale([unet, *encoders], spec.name, 1.0)
    unet_sd = get_peft_model_state_dict(unet, adapter_name=spec.name)
    te_sds = tuple(get_peft_model_state_dict(te, adapter_name=spec.name)
                   for te in (encoders if spec.te_targets else []))
    return TrainedAdapter(spec, unet_sd, te_sds, stage, data.captions, batch, unet.eval())


@dataclass
class TrainedEmbedding:
    """A textual inversion: the token, its learned vectors [n, D] per text encoder, its stage."""

    token: str
    vectors: tuple[torch.Tensor, ...]
    stage: Stage


def add_token(tokenizer, text_encoder, token: str, init_word: str) -> int:
    """Add `token` to the tokenizer and a row for it (a copy of `init_word`'s) to the encoder."""
    tokenizer.add_tokens([token])
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_id = tokenizer.convert_tokens_to_ids(token)
    init_id = tokenizer(init_word, add_special_tokens=False).input_ids[0]
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[new_id] = table[init_id]
    return new_id


def train_embedding(world, stage: Stage, n_pool: int, batch: int) -> TrainedEmbedding:
    """Textual inversion: train only the new token's embedding row (one per text encoder) on
    checkerboard images."""
    tokenizers, encoders = copy.deepcopy(world.tokenizers), copy.deepcopy(world.encoders)
    rows = [add_token(tok, te, TI_TOKEN, TI_INIT_WORD)
            for tok, te in zip(tokenizers, encoders, strict=True)]
    tables = [te.get_input_embeddings().weight for te in encoders]
    for table in tables:
        table.requires_grad_(True)

    def only_new_rows() -> None:
        for table, row in zip(tables, rows, strict=True):
            keep = table.grad[row].clone()
            table.grad.zero_()
            table.grad[row] = keep

    stage.grad_mask = only_new_rows
    samples = mixed_samples(pool_rng(stage.seed, "ti"), n_pool, {TI_STYLE: 1.0})
    data = cached_pool(Path(stage.workdir) / "pool_ti.safetensors", world.vae, samples,
                       stage.progress, trigger=TI_TOKEN)
    unet = world.unet.requires_grad_(False)
    names = ["token_embedding"] if len(tables) == 1 else [f"token_embedding_{i}" for i in range(len(tables))]
    run_stage(stage, dict(zip(names, tables, strict=True)),
              denoiser_loss(unet, world.scheduler, data, world.vae.config.scaling_factor, batch,
                            world.conditioner(encoders, tokenizers, cache=False), uncond_prob=0.0))
    vectors = []
    for table, row in zip(tables, rows, strict=True):
        table.requires_grad_(False)
        vectors.append(table[row].detach().clone()[None])
    return TrainedEmbedding(TI_TOKEN, tuple(vectors), stage)
