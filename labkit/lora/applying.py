"""Put a LoRA-like file on a pipeline at a strength (and block weights), and take it off again.

LoRA and LoCon go through diffusers and peft: the file's modules, matched by the lab's own
name table (labkit.lora.keys), are handed to `load_lora_into_unet` / `load_lora_into_text_encoder`
in PEFT naming with their exact ranks and alphas, and strengths go through `set_adapters`.
LoHa, LoKr, full diffs and kohya's conv cores, which diffusers does not load, become a branch
beside the patched layer: a forward hook adds `strength * (delta applied to the input)`. Neither
path touches a base weight, so removing gives back the base exactly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labkit.errors import IncompatibleModelError, LabkitError
from labkit.identify.fit import check_family, pipeline_family
from labkit.identify.rules import BASE_NAMES
from labkit.lora import anatomy as M
from labkit.lora import keys as K
from labkit.lora.reading import Adapter, delta_shape, fits, open_adapter
from labkit.quiet import quiet_libraries

KIND_NAMES = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr", "full": "full-diff adapter",
              "dora": "DoRA"}
# Bases the lab cannot run here (no Flux or SD3 pipeline) -> the diffusers pipeline that loads them.
UNRUNNABLE = {"flux": "FluxPipeline", "flux_dev": "FluxPipeline", "flux_schnell": "FluxPipeline",
              "sd3": "StableDiffusion3Pipeline"}
REGISTRY = "_labkit_loras"  # attribute on the pipeline: adapter name -> Handle
BlockWeights = Mapping[str, float] | Sequence[float] | None
_names = count(1)


def scale_per_sample(output: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """output * scale[i] for sample i, with `scale` tiled over the batch: a text encoder sees the
    n prompts, the UNet under classifier-free guidance sees [uncond x n, cond x n]."""
    n = scale.numel()
    if output.shape[0] % n:
        raise RuntimeError(f"batch of {output.shape[0]} is not a multiple of {n} strengths")
    tiled = scale.to(output.device, output.dtype).repeat(output.shape[0] // n)
    return output * tiled.view(-1, *([1] * (output.ndim - 1)))


class Patch:
    """One patched layer of an applied adapter: its block and how strong it is now."""

    block: str

    def set(self, value: float | torch.Tensor) -> None:
        """A float for every sample, or one strength per sample of the batch."""
        raise NotImplementedError

    def remove(self) -> None:
        """Take the patch off (only the lab's hooks; peft layers go with delete_adapters)."""


class PeftPatch(Patch):
    """A peft LoRA layer: a float goes to its scaling, a per-sample vector to a hook on lora_B."""

    def __init__(self, layer: Any, name: str, block: str):
        self.layer, self.name, self.block = layer, name, block
        self._hook: Any = None

    def set(self, value: float | torch.Tensor) -> None:
        """Set the strength of this layer's branch."""
        self.remove()
        if isinstance(value, torch.Tensor):
            self.layer.set_scale(self.name, 1.0)
            self._hook = self.layer.lora_B[self.name].register_forward_hook(
                lambda _m, _args, out: scale_per_sample(out, value))
        else:
            self.layer.set_scale(self.name, float(value))

    def remove(self) -> None:
        """Drop the per-sample hook, if any."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class DeltaPatch(Patch):
    """A branch beside a layer: out + strength * op(x, delta), op the layer's own linear or conv."""

    def __init__(self, layer: torch.nn.Module, delta: torch.Tensor, bias: torch.Tensor | None,
                 block: str):
        self.layer, self.block = layer, block
        self.delta = delta.reshape(layer.weight.shape).to(layer.weight.dtype)
        self.bias = None if bias is None else bias.to(layer.weight.dtype)
        self.value: float | torch.Tensor = 1.0
        self._hook = layer.register_forward_hook(self._forward)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        if isinstance(m, torch.nn.Conv2d):
            return F.conv2d(x, self.delta, self.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(x, self.delta, self.bias)

    def _forward(self, _m: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        branch = self._branch(args[0])
        if isinstance(self.value, torch.Tensor):
            return out + scale_per_sample(branch, self.value)
        return out + self.value * branch

    def set(self, value: float | torch.Tensor) -> None:
        """Set the strength of the branch."""
        self.value = value

    def remove(self) -> None:
        """Unhook the branch."""
        self._hook.remove()


@dataclass
class Handle:
    """An adapter applied to a pipeline: what `remove` and `set_strength` need."""

    name: str
    path: Path
    kind: str
    strength: float
    block_weights: dict[str, float] | None
    patches: list[Patch] = field(default_factory=list)
    uses_peft: bool = False


def block_names(pipe: Any) -> list[str]:
    """The blocks block weights name, in the LoRA Block Weight order: BASE, then the blocks
    with attention (17 for SD1, 12 for SDXL)."""
    return K.weight_blocks(K.pipeline_targets(pipe))


def resolve_block_weights(pipe: Any, weights: BlockWeights) -> dict[str, float] | None:
    """Block weights as {block: weight}; a list follows `block_names(pipe)`. Raises LabkitError."""
    if weights is None:
        return None
    names = block_names(pipe)
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(K.pipeline_targets(pipe).blocks))
        if unknown:
            raise LabkitError(f"unknown block labels {unknown} in the block weights.",
                              hint=f"This pipeline's blocks are {names} (and IN00, ... for LoCon).")
        return {str(k): float(v) for k, v in weights.items()}
    if len(weights) != len(names):
        raise LabkitError(f"{len(weights)} block weights given; this {pipeline_family(pipe)} "
                          f"pipeline takes {len(names)}: {', '.join(names)}.")
    return dict(zip(names, map(float, weights), strict=True))


def _registry(pipe: Any) -> dict[str, Handle]:
    if not hasattr(pipe, REGISTRY):
        setattr(pipe, REGISTRY, {})
    return getattr(pipe, REGISTRY)


def _component(pipe: Any, target: K.Target) -> torch.nn.Module:
    return getattr(pipe, target.component)


def check_runnable(adapter: Adapter, family: str) -> None:
    """Raise IncompatibleModelError when the adapter is for a family the lab cannot run (Flux, SD3)."""
    if adapter.base not in UNRUNNABLE:
        return
    raise IncompatibleModelError(
        f"this {KIND_NAMES.get(adapter.kind, adapter.kind)} is for {BASE_NAMES[adapter.base]} "
        f"(base {adapter.base}), a transformer model the lab cannot run: it applies adapters to "
        f"SD1, SD2 and SDXL-style pipelines only, and this pipeline is {family}.", adapter.path,
        hint=f"Read it without a pipeline (labkit.lora.read(path)) to study its modules; to use "
             f"it, load it with diffusers' {UNRUNNABLE[adapter.base]}.load_lora_weights on a "
             f"machine that runs {BASE_NAMES[adapter.base]}.")


def _check_fits(adapter: Adapter, pipe: Any, family: str) -> None:
    """Raise IncompatibleModelError when names or shapes do not fit the pipeline."""
    from labkit.lora.reading import require_matched

    require_matched(adapter, family)
    for module, target in adapter.matched:
        shape = delta_shape(module, adapter.table)
        if not fits(shape, target.shape):
            raise IncompatibleModelError(
                f"{module.prefix} changes a weight of shape {list(shape)}, but the pipeline's "
                f"{target.component}.{target.module} is {list(target.shape)}: the file is for base "
                f"{adapter.base}, the pipeline is {family}.", adapter.path,
                hint="Use a LoRA trained on this model's family.")


def _via_peft(module: K.FileModule) -> bool:
    return module.kind == "lora" and "mid" not in module.keys


def _peft_config(rows: list[tuple[str, int, float]]) -> dict[str, Any]:
    """LoraConfig kwargs for (module, rank, alpha) rows: the common rank and alpha, exceptions
    as exact-name patterns."""
    r = Counter(rank for _, rank, _ in rows).most_common(1)[0][0]
    alpha = Counter(a for _, _, a in rows).most_common(1)[0][0]
    return {"r": r, "lora_alpha": alpha, "target_modules": [m for m, _, _ in rows],
            "rank_pattern": {re.escape(m): k for m, k, _ in rows if k != r},
            "alpha_pattern": {re.escape(m): a for m, _, a in rows if a != alpha}}


def _load_peft(pipe: Any, adapter: Adapter, name: str) -> None:
    """Load the plain LoRA modules through diffusers, in PEFT naming with exact ranks/alphas."""
    from peft import LoraConfig

    state: dict[str, torch.Tensor] = {}
    rows: dict[str, list[tuple[str, int, float]]] = {}
    for module, target in adapter.matched:
        if not _via_peft(module):
            continue
        t = adapter.tensors(module)
        key = f"{target.component}.{target.module}"
        state[f"{key}.lora_A.weight"] = t["down"]
        state[f"{key}.lora_B.weight"] = t["up"]
        rank = int(t["down"].shape[0])
        rows.setdefault(target.component, []).append(
            (target.module, rank, float(t["alpha"]) if "alpha" in t else float(rank)))
    for component, component_rows in rows.items():
        config = _peft_config(component_rows)
        part = {k: v for k, v in state.items() if k.startswith(f"{component}.")}
        if component == "unet":
            metadata = {f"unet.{k}": v for k, v in config.items()}
            type(pipe).load_lora_into_unet(part, None, pipe.unet, adapter_name=name,
                                           metadata=metadata, _pipeline=pipe)
        else:  # transformers' own loader: diffusers' guesses the key style and can miss
            with quiet_libraries():
                getattr(pipe, component).load_adapter(
                    adapter_name=name, peft_config=LoraConfig(**config),
                    adapter_state_dict={k[len(component) + 1:]: v for k, v in part.items()})


def _peft_patches(pipe: Any, adapter: Adapter, name: str) -> list[Patch]:
    patches: list[Patch] = []
    for module, target in adapter.matched:
        if _via_peft(module):
            layer = _component(pipe, target).get_submodule(target.module)
            patches.append(PeftPatch(layer, name, target.block))
    return patches


def _delta_patches(pipe: Any, adapter: Adapter) -> list[Patch]:
    patches: list[Patch] = []
    for module, target in adapter.matched:
        if _via_peft(module):
            continue
        layer = _component(pipe, target).get_submodule(target.module)
        layer = getattr(layer, "base_layer", layer)  # beside any peft wrapper, which may go first
        t = adapter.tensors(module)
        delta = M.delta(module.kind, t).to(layer.weight.device)
        bias = t["diff_b"].float().to(layer.weight.device) if "diff_b" in t else None
        patches.append(DeltaPatch(layer, delta, bias, target.block))
    return patches


def _refresh_peft(pipe: Any) -> None:
    """Activate every lab LoRA on the pipeline at its strength, then its block weights."""
    handles = [h for h in _registry(pipe).values() if h.uses_peft]
    if handles:
        pipe.set_adapters([h.name for h in handles], [h.strength for h in handles])
    for h in handles:
        if h.block_weights is not None:
            for p in h.patches:
                p.set(h.strength * h.block_weights.get(p.block, 1.0))


def set_strength(pipe: Any, handle: Handle, strength: float | torch.Tensor) -> None:
    """Change an applied adapter's strength: a float, or one per sample of the next batch."""
    weights = handle.block_weights or {}
    if isinstance(strength, torch.Tensor):
        for p in handle.patches:
            p.set(strength * weights.get(p.block, 1.0))
        return
    handle.strength = float(strength)
    for p in handle.patches:
        if isinstance(p, DeltaPatch):
            p.set(handle.strength * weights.get(p.block, 1.0))
        else:
            p.remove()  # the per-sample hook; the scale comes from set_adapters below
    _refresh_peft(pipe)


def apply(pipe: Any, path: str | Path, strength: float = 1.0, block_weights: BlockWeights = None,
          adapter_name: str | None = None) -> Handle:
    """Put a LoRA / LoCon / LoHa / LoKr / full-diff file on `pipe` at `strength`, optionally
    weighted per SD block (a {block: weight} dict, or a list in `block_names(pipe)` order).

    Raises NotAModelError (not a LoRA-like file, e.g. a textual inversion), CorruptFileError
    (truncated or damaged), IncompatibleModelError (for another family than the pipeline's, or
    for Flux or SD3, which the lab cannot run).
    """
    family = pipeline_family(pipe)
    adapter = open_adapter(path, pipe)
    check_runnable(adapter, family)
    if adapter.kind == "dora":
        raise IncompatibleModelError(
            "is a DoRA: the lab reads its anatomy (labkit.lora.reading) but does not apply DoRA.",
            adapter.path, hint="Apply a LoRA, LoCon, LoHa or LoKr file.")
    check_family(pipe, adapter.base, adapter.path, KIND_NAMES[adapter.kind], "adapter")
    _check_fits(adapter, pipe, family)
    name = adapter_name or f"labkit_{Path(path).stem}_{next(_names)}"
    if name in _registry(pipe):
        raise LabkitError(f"an adapter named {name!r} is already on this pipeline.",
                          hint="Remove it first, or pass another adapter_name.")
    handle = Handle(name, adapter.path, adapter.kind, float(strength),
                    resolve_block_weights(pipe, block_weights))
    if any(_via_peft(m) for m, _ in adapter.matched):
        try:
            _load_peft(pipe, adapter, name)
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise IncompatibleModelError(f"diffusers could not load it ({type(e).__name__}: {e}).",
                                         adapter.path) from e
        handle.uses_peft = True
        handle.patches += _peft_patches(pipe, adapter, name)
    handle.patches += _delta_patches(pipe, adapter)
    _registry(pipe)[name] = handle
    set_strength(pipe, handle, strength)
    return handle


def remove(pipe: Any, handle: Handle) -> None:
    """Take an applied adapter off; with none left the pipeline is its base again, exactly."""
    for p in handle.patches:
        p.remove()
    if _registry(pipe).pop(handle.name, None) is None:
        return
    if handle.uses_peft:
        pipe.delete_adapters(handle.name)
        if not any(pipe.get_list_adapters().values()):
            pipe.unload_lora_weights()
        _refresh_peft(pipe)


def applied(pipe: Any) -> list[Handle]:
    """The adapters the lab has put on a pipeline, in order."""
    return list(_registry(pipe).values())
