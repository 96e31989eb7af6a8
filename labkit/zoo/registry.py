"""data/zoo.json: one entry per demo file (name, path, format, kind, base, sha256, how made),
and `data_dir()`, the one place the lab looks for its data folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from labkit.errors import LabkitError

# The setting that names the data folder (the one holding zoo.json, tokenizer/ and layouts/),
# and the folder used without it: a source checkout's data/ (also an editable install's).
DATA_ENV = "LABKIT_DATA"
CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "data"

# name -> (format, kind, how it was made); paths come from the build.
ENTRIES: dict[str, tuple[str, str, str]] = {
    "demo_sd1": ("diffusers", "checkpoint",
                 "StableDiffusionPipeline.save_pretrained: EMA UNet, fp32 files plus an fp16 "
                 "variant, text encoder sharded with model.safetensors.index.json"),
    "demo_sd1_single": ("safetensors", "checkpoint",
                        "labkit.convert.forms.folder_to_single_file then strip_ema(keep='ema', fp16)"),
    "demo_sd1_ckpt": ("pickle", "checkpoint",
                      "labkit.convert.forms.folder_to_single_file(include_ema=...) written as a Lightning-"
                      "style .ckpt (fp16): state_dict with model_ema., global_step, callbacks"),
    "demo_sd1_vae": ("safetensors", "vae",
                     "first_stage_model. tensors of the single file, prefix removed (vae-ft-mse form)"),
    "demo_sd1_outlined_unet": ("safetensors", "unet",
                               "labkit.zoo.finetune: every UNet weight of demo_sd1 trained further "
                               "on outlined drawings with plain captions; the UNet alone in SD's "
                               "original keys (fp16), the text encoder and VAE being the base's"),
    "demo_lora_striped": ("safetensors", "lora", "peft LoRA on the UNet's transformer blocks and "
                          "the text encoder's attention, kohya names and sd-scripts metadata"),
    "demo_lora_striped_peft": ("safetensors", "lora",
                               "the same LoRA via StableDiffusionPipeline.save_lora_weights"),
    "demo_loha_outlined": ("safetensors", "loha", "peft LoHa on UNet transformer blocks, LyCORIS "
                           "names (hada_w1_a ...)"),
    "demo_lokr_twotone": ("safetensors", "lokr", "peft LoKr on UNet transformer blocks, LyCORIS "
                          "names (lokr_w1, lokr_w2)"),
    "demo_ti_checker_a1111": ("pickle", "textual_inversion",
                              "textual inversion of <checker>, AUTOMATIC1111 .pt form"),
    "demo_ti_checker_kohya": ("safetensors", "textual_inversion",
                              "the same vector as emb_params (kohya form)"),
    "demo_ti_checker_diffusers": ("safetensors", "textual_inversion",
                                  "the same vector as {'<checker>': tensor} (diffusers form)"),
    "demo_sdxl": ("diffusers", "checkpoint",
                  "StableDiffusionXLPipeline.save_pretrained in fp16 (text encoder configs float32, so all "
                  "parts load in fp32 together): EMA UNet with text_time "
                  "conditioning, CLIPTextModel + CLIPTextModelWithProjection, tokenizer_2 pads "
                  "with '!'"),
    "demo_sdxl_single": ("safetensors", "checkpoint",
                         "labkit.convert.forms.folder_to_single_file (fp16): SDXL's original layout, "
                         "conditioner.embedders.0/1, model.diffusion_model., first_stage_model."),
    "demo_lora_striped_xl": ("safetensors", "lora",
                             "peft LoRA on the UNet's transformer blocks and both text encoders' "
                             "attention, kohya names (lora_te1_/lora_te2_, original block names), "
                             "ss_base_model_version sdxl_base_v1-0"),
    "demo_ti_checker_xl": ("safetensors", "textual_inversion",
                           "textual inversion of <checker> on both encoders, SDXL form "
                           "{clip_l, clip_g}"),
}
# The family of each file: the SDXL-style world's names say so.
XL_NAMES = frozenset({"demo_sdxl", "demo_sdxl_single", "demo_lora_striped_xl",
                      "demo_ti_checker_xl"})


def data_dir() -> Path:
    """The lab's data folder: $LABKIT_DATA when set (a workshop kit's start and install scripts
    set it to the kit's data/), else the source checkout's data/.
    Raises LabkitError when LABKIT_DATA names no folder holding zoo.json, or when it is unset
    and this labkit is not a source checkout (an installed wheel carries no data/)."""
    setting = os.environ.get(DATA_ENV, "").strip()
    if setting:
        folder = Path(setting).expanduser().absolute()
        if not (folder / "zoo.json").is_file():
            raise LabkitError(f"{DATA_ENV} names no data folder: there is no zoo.json in it.", folder,
                              f"Set {DATA_ENV} to the folder holding zoo.json (a workshop kit's "
                              "data/ folder, or data/ in a clone of the lab), or unset it in a "
                              "source checkout.")
        return folder
    if (CHECKOUT_DATA / "zoo.json").is_file():
        return CHECKOUT_DATA
    raise LabkitError(f"the lab's data folder was not found, and {DATA_ENV} is not set.",
                      CHECKOUT_DATA,
                      f"Set {DATA_ENV} to the folder holding zoo.json: a workshop kit's data/ "
                      "folder (the kit's start and install scripts set it), or data/ in a clone "
                      "of the lab.")


def base_of(name: str) -> str:
    """The demo base a manifest name belongs to."""
    return "demo_sdxl" if name in XL_NAMES else "demo_sd1"


def sha256_of(path: Path) -> str:
    """SHA256 of a file; of a folder, SHA256 over its sorted 'relative path  sha256' lines."""
    if path.is_dir():
        lines = "".join(f"{p.relative_to(path).as_posix()}  {sha256_of(p)}\n"
                        for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.sha256(lines.encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(out: Path, paths: dict[str, Path]) -> Path:
    """Write out/zoo.json for the built files (atomically), keeping the entries of files built
    by the other world's recipe; entries in ENTRIES order."""
    dst = out / "zoo.json"
    kept = {}
    if dst.exists():
        kept = {e["name"]: e for e in json.loads(dst.read_text())["files"]
                if e["name"] not in paths and e["name"] in ENTRIES}
    for name, p in paths.items():
        fmt, kind, how = ENTRIES[name]
        kept[name] = {"name": name, "path": p.relative_to(out).as_posix(), "format": fmt,
                      "kind": kind, "base": base_of(name), "sha256": sha256_of(p), "made_by": how}
    entries = [kept[name] for name in ENTRIES if name in kept]
    tmp = dst.with_name(dst.name + ".partial")
    tmp.write_text(json.dumps({"version": 1, "files": entries}, indent=2) + "\n")
    os.replace(tmp, dst)
    return dst
