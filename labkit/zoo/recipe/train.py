"""Training loops of the demo world: one resumable loop, the VAE loss and the denoiser loss."""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from labkit.zoo.recipe.dataset import Sample, mixed_samples, to_tensor_batch


def step_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The generator for one training step: the same data whether or not a run was resumed."""
    return np.random.default_rng([seed, zlib.crc32(stage.encode()), step])


def pool_rng(seed: int, name: str) -> np.random.Generator:
    """The generator that draws one stage's pool of training images."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), 1])


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Save tensors to safetensors atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), meta)
    os.replace(tmp, path)


class Ema:
    """An exponential moving average of named parameters, as SD keeps of its UNet."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter], step: int) -> None:
        """Blend the current parameters in, with the usual warm-up of the decay."""
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in params.items():
            self.shadow[k].mul_(d).add_(p.detach(), alpha=1 - d)


@dataclass(frozen=True, kw_only=True)
class Lengths:
    """Sizes and lengths both worlds' recipes share: the base UNet, the adapters, the TI."""

    base_pool: int
    base_steps: int
    base_batch: int
    base_lr: float
    adapter_pool: int
    adapter_steps: int
    adapter_batch: int
    adapter_lr: float
    ti_steps: int
    ti_lr: float
    ckpt_every: int = 250
    eval_steps: int = 20
    seed: int = 1234

    def stage(self, workdir: Path, name: str, steps: int, lr: float, progress: bool,
              **kw) -> Stage:
        """One training stage of this recipe (its seed and checkpoint interval)."""
        return Stage(name=name, steps=steps, lr=lr, workdir=workdir, seed=self.seed,
                     ckpt_every=self.ckpt_every, progress=progress, **kw)


@dataclass
class Stage:
    """One resumable training run: name, length, learning rate and where checkpoints go."""

    name: str
    steps: int
    lr: float
    workdir: Path
    seed: int = 0
    ckpt_every: int = 250
    warmup: int = 50
    ema_decay: float | None = None
    grad_mask: Callable[[], None] | None = None
    progress: bool = True
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ckpt(self) -> Path:
        return self.workdir / f"{self.name}.train.safetensors"


def _lr(stage: Stage, step: int) -> float:
    warm = min(1.0, (step + 1) / stage.warmup)
    cosine = 0.5 * (1 + np.cos(np.pi * step / stage.steps))
    return stage.lr * warm * (0.1 + 0.9 * cosine)


def _opt_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_opt(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def run_stage(stage: Stage, params: dict[str, torch.nn.Parameter],
              loss_fn: Callable[[np.random.Generator], torch.Tensor]) -> Ema | None:
    """Train `params` on `loss_fn` for `stage.steps` steps, resuming from the stage checkpoint."""
    opt = torch.optim.AdamW(list(params.values()), lr=stage.lr, weight_decay=0.0)
    ema = Ema(params, stage.ema_decay) if stage.ema_decay else None
    start = 0
    if stage.ckpt.exists():
        saved = load_file(str(stage.ckpt))
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[f"param.{k}"])
                if ema:
                    ema.shadow[k].copy_(saved[f"ema.{k}"])
        _load_opt(opt, saved)
        start = int(saved["step"])
        stage.losses = saved["losses"].tolist()
        stage.seconds = float(saved["seconds"])
    bar = tqdm(range(start, stage.steps), desc=stage.name, disable=not stage.progress,
               initial=start, total=stage.steps)
    t0 = time.perf_counter() - stage.seconds
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(stage, step)
        loss = loss_fn(step_rng(stage.seed, stage.name, step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if stage.grad_mask:
            stage.grad_mask()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        if ema:
            ema.update(params, step)
        stage.losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(stage.losses[-50:]):.4f}")
        last = step + 1 == stage.steps
        if (step + 1) % stage.ckpt_every == 0 or last:
            stage.seconds = time.perf_counter() - t0
            tensors = {f"param.{k}": p for k, p in params.items()}
            if ema:
                tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
            tensors.update(_opt_tensors(opt))
            tensors["step"] = torch.tensor(step + 1)
            tensors["losses"] = torch.tensor(stage.losses)
            tensors["seconds"] = torch.tensor(stage.seconds)
            save_tensors(stage.ckpt, tensors, {"stage": stage.name})
    return ema


def summary(stage: Stage) -> dict[str, float]:
    """Figures for the model card: steps, minutes, the mean loss of the first and last 5%."""
    n = max(1, len(stage.losses) // 20)
    return {"steps": stage.steps, "minutes": round(stage.seconds / 60, 2),
            "loss_start": round(float(np.mean(stage.losses[:n])), 5),
            "loss_end": round(float(np.mean(stage.losses[-n:])), 5)}


def vae_loss(vae, batch: int, weights: dict[str, float]) -> Callable[[np.random.Generator], torch.Tensor]:
    """The VAE objective on freshly drawn images: L1 + MSE reconstruction and a small KL term."""

    def loss(rng: np.random.Generator) -> torch.Tensor:
        x = to_tensor_batch([s.render() for s in mixed_samples(rng, batch, weights)])
        post = vae.encode(x).latent_dist
        torch.manual_seed(int(rng.integers(2**31)))
        y = vae.decode(post.sample()).sample
        kl = post.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
        return F.l1_loss(y, x) + F.mse_loss(y, x) + 1e-4 * kl

    return loss


@dataclass
class LatentPool:
    """Images encoded once by the trained VAE: posterior mean/std and each image's caption."""

    mean: torch.Tensor
    std: torch.Tensor
    captions: list[str]

    def subset(self, keep: list[int]) -> LatentPool:
        """The pool restricted to some samples."""
        idx = torch.tensor(keep, dtype=torch.long)
        return LatentPool(self.mean[idx], self.std[idx], [self.captions[i] for i in keep])

    def save(self, path: Path) -> None:
        """Write the pool to a safetensors cache file."""
        save_tensors(path, {"mean": self.mean, "std": self.std},
                     {"captions": json.dumps(self.captions)})

    @classmethod
    def load(cls, path: Path) -> LatentPool:
        """Read a pool cache written by `save`."""
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            caps = json.loads(f.metadata()["captions"])
            return cls(f.get_tensor("mean"), f.get_tensor("std"), caps)


@torch.no_grad()
def encode_pool(vae, samples: list[Sample], captions: list[str], progress: bool = True,
                batch: int = 128) -> LatentPool:
    """Render and encode samples with the VAE (unscaled latents)."""
    means, stds = [], []
    for i in tqdm(range(0, len(samples), batch), desc="encode", disable=not progress):
        x = to_tensor_batch([s.render() for s in samples[i : i + batch]])
        post = vae.encode(x).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return LatentPool(torch.cat(means), torch.cat(stds), captions)


def cached_pool(path: Path, vae, samples: list[Sample], progress: bool = True,
                trigger: str | None = None) -> LatentPool:
    """The encoded samples of one stage (captions ending in `trigger` if given), cached at `path`."""
    if path.exists():
        return LatentPool.load(path)
    captions = [s.caption(trigger if s.style != "plain" else None) for s in samples]
    p = encode_pool(vae, samples, captions, progress)
    p.save(path)
    return p


def denoiser_loss(unet, scheduler, pool: LatentPool, scale: float, batch: int,
                  condition: Callable[[list[str]], dict[str, torch.Tensor]],
                  uncond_prob: float = 0.1) -> Callable[[np.random.Generator], torch.Tensor]:
    """SD's objective: predict the noise added at a random timestep, captions dropped 10%."""

    def loss(rng: np.random.Generator) -> torch.Tensor:
        idx = torch.from_numpy(rng.integers(0, len(pool.captions), batch))
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        z = pool.mean[idx] + pool.std[idx] * torch.randn(pool.mean[idx].shape, generator=gen)
        z = z * scale
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        drop = rng.random(batch) < uncond_prob
        caps = ["" if d else pool.captions[int(i)] for i, d in zip(idx, drop, strict=True)]
        pred = unet(scheduler.add_noise(z, noise, t), t, **condition(caps)).sample
        return F.mse_loss(pred, noise)

    return loss
