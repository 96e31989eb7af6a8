"""The tables identify reads: marker keys, adapter suffixes, embedding forms, dims and metadata values.

Modelled on diffusers' CHECKPOINT_KEY_NAMES / infer_diffusers_model_type and REFERENCE.md section 2.
Every table is ordered: the first row that matches wins.
"""

from __future__ import annotations

from typing import NamedTuple

# Keys that say nothing about the architecture: EMA copies and the DDPM schedule buffers.
IGNORED_PREFIXES = ("model_ema.",)
SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar",
})


class ComponentRow(NamedTuple):
    """A key suffix that proves a component; what is before it in the key is the component's prefix."""

    role: str  # denoiser, vae, text_encoder
    arch: str  # unet, mmdit, flux, vae, clip, openclip, t5
    marker: str
    in_key: str = ""  # denoiser: the first layer, whose dim 1 is the input channels
    add_key: str = ""  # SDXL-style text_time add embedding
    guidance_key: str = ""  # Flux dev's guidance embedder


COMPONENTS = (
    ComponentRow("denoiser", "flux", "double_blocks.0.img_attn.norm.key_norm.scale",
                 "img_in.weight", guidance_key="guidance_in.in_layer.weight"),
    ComponentRow("denoiser", "flux", "single_transformer_blocks.0.attn.norm_k.weight",
                 "x_embedder.weight",
                 guidance_key="time_text_embed.guidance_embedder.linear_1.weight"),
    ComponentRow("denoiser", "mmdit", "joint_blocks.0.context_block.adaLN_modulation.1.bias",
                 "x_embedder.proj.weight"),
    ComponentRow("denoiser", "mmdit", "pos_embed.proj.weight", "pos_embed.proj.weight"),
    ComponentRow("denoiser", "unet", "input_blocks.0.0.weight", "input_blocks.0.0.weight",
                 add_key="label_emb.0.0.weight"),
    ComponentRow("denoiser", "unet", "time_embedding.linear_1.weight", "conv_in.weight",
                 add_key="add_embedding.linear_1.weight"),
    ComponentRow("vae", "vae", "decoder.conv_in.weight"),
    ComponentRow("text_encoder", "clip", "embeddings.token_embedding.weight"),
    ComponentRow("text_encoder", "openclip", "token_embedding.weight"),
    ComponentRow("text_encoder", "t5", "encoder.block.0.layer.0.SelfAttention.q.weight"),
)

KIND_OF_ROLE = {"denoiser": "unet", "vae": "vae", "text_encoder": "text_encoder"}
ARCH_NAMES = {
    "unet": "UNet", "mmdit": "MMDiT transformer", "flux": "Flux transformer", "vae": "VAE",
    "clip": "CLIP text encoder", "openclip": "OpenCLIP text encoder", "t5": "T5 text encoder",
}

# The UNet's cross-attention key: its last dim is the context (text embedding) width.
CONTEXT_SUFFIX = "attn2.to_k.weight"
REAL_CONTEXT_DIMS = frozenset({768, 1024, 1280, 2048})
# The lab's demo models are told by their widths like a real family: their adapters carry no
# metadata in the PEFT and A1111 forms, and the demo SDXL's kohya LoRA carries real SDXL's.
# The demo SD1 (labkit/zoo/recipe/models.py) is 32 wide; the demo SDXL (labkit/zoo/xl/models.py) has
# the same 32-wide first encoder, a 48-wide second one, and its UNet reads both side by side.
DEMO_SD1_WIDTH = 32
DEMO_SDXL_WIDTHS = (DEMO_SD1_WIDTH, 48)
DEMO_SDXL_CONTEXT = sum(DEMO_SDXL_WIDTHS)
DEMO_BASES = ("demo_sd1", "demo_sdxl")  # the base names of the lab's demo models
# Prefixes that only SDXL-style checkpoints use for their text encoders.
XL_PREFIXES = ("conditioner.embedders.",)
EDM_KEY = "edm_mean"

# Denoiser base rules: `when` maps a feature to the value it must have.
# Features: arch, has_context, context_dim, context_real, xl, edm, guidance.
DENOISER_BASES: tuple[tuple[str, dict[str, object], str], ...] = (
    ("flux_dev", {"arch": "flux", "guidance": True},
     "guidance embedder present -> Flux dev"),
    ("flux_schnell", {"arch": "flux", "guidance": False},
     "no guidance embedder -> Flux schnell"),
    ("sd3", {"arch": "mmdit"}, "MMDiT joint blocks -> SD3 / SD3.5"),
    ("playground", {"arch": "unet", "edm": True},
     "edm_mean buffer -> Playground v2.5 (SDXL family, EDM schedule)"),
    ("sd2", {"arch": "unet", "context_dim": 1024}, "context 1024 (OpenCLIP-H) -> SD2"),
    ("sdxl", {"arch": "unet", "context_dim": 2048}, "context 2048 (CLIP-L + bigG) -> SDXL base"),
    ("sdxl_refiner", {"arch": "unet", "context_dim": 1280},
     "context 1280 (bigG only) -> SDXL refiner"),
    ("sd1", {"arch": "unet", "context_dim": 768}, "context 768 (CLIP-L) -> SD1"),
    ("demo_sdxl", {"arch": "unet", "has_context": True, "context_real": False, "xl": True},
     "SDXL-structured with context {context_dim}, no real SDXL width -> the lab's demo SDXL"),
    ("demo_sd1", {"arch": "unet", "has_context": True, "context_real": False, "xl": False},
     "SD1-structured with context {context_dim}, no real SD width -> the lab's demo SD1"),
)

# (denoiser arch, input channels) -> variant.
IN_CHANNEL_VARIANTS = {
    ("unet", 9): "inpainting",
    ("unet", 8): "instruct_pix2pix",
    ("flux", 384): "fill",
    ("flux", 128): "depth",
}
# Bare keys some trainers add to say the model predicts v (ComfyUI reads "v_pred").
FLAG_KEYS = {"v_pred": "v_prediction"}
# diffusers assumes v-prediction for SD2 files unless global_step is 875000 (512-base):
# the keys of 512-base and 768-v are the same, so this is only a hint.
V_PREDICTION_HINT = {"sd2": ("global_step", "875000")}

# Text-encoder sets (arch, width) -> base, for files without a denoiser.
TEXT_ENCODER_BASES: dict[tuple[tuple[str, int], ...], tuple[str, str]] = {
    (("clip", 768),): ("sd1", "CLIP-L 768 -> SD1 (also SDXL's first, SD3's and Flux's clip_l)"),
    (("openclip", 1024),): ("sd2", "OpenCLIP-H 1024 -> SD2"),
    (("openclip", 1280),): ("sdxl", "OpenCLIP-bigG 1280 -> SDXL (its second encoder; the "
                                    "refiner's only one)"),
    (("clip", 768), ("openclip", 1280)): ("sdxl", "CLIP-L 768 + bigG 1280 -> SDXL"),
    (("clip", 768), ("clip", 1280)): ("sdxl", "CLIP-L 768 + bigG 1280 -> SDXL"),
    (("clip", 768), ("clip", 1280), ("t5", 4096)): ("sd3", "CLIP-L + CLIP-G + T5-XXL -> SD3"),
    (("clip", DEMO_SD1_WIDTH),): ("demo_sd1", f"CLIP {DEMO_SD1_WIDTH} -> the lab's demo SD1 "
                                              "(also the demo SDXL's first encoder)"),
    (("clip", DEMO_SDXL_WIDTHS[0]), ("clip", DEMO_SDXL_WIDTHS[1])):
        ("demo_sdxl", "CLIP {} + {} -> the lab's demo SDXL".format(*DEMO_SDXL_WIDTHS)),
    (("clip", DEMO_SDXL_WIDTHS[0]), ("openclip", DEMO_SDXL_WIDTHS[1])):
        ("demo_sdxl", "CLIP {} + OpenCLIP {} -> the lab's demo SDXL".format(*DEMO_SDXL_WIDTHS)),
}
VAE_LATENTS = {
    4: "4 latent channels: the SD1/SD2/SDXL VAE layout (all three share it, the base is not told)",
    16: "16 latent channels: the SD3/Flux VAE layout (both share it, the base is not told)",
}

# ---- small VAEs: told by content, exactly their keys and shapes ("C" = the latent channels) ----
# TAESD (madebyollin/taesd taesd.py) is an nn.Sequential: (in, out, bias) a 3x3 conv, "B" a
# Block(64, 64) (conv.0/.2/.4, with bias, no skip), None a layer without weights (Clamp, ReLU,
# Upsample). Its .pth files hold bare indices, encoder and decoder apart; diffusers'
# AutoencoderTiny holds both as encoder.layers.N / decoder.layers.N (the decoder's Clamp dropped).
_TAESD_DOWN = (64, 64, False)
TAESD_ENCODER = ((3, 64, True), "B", _TAESD_DOWN, "B", "B", "B", _TAESD_DOWN, "B", "B", "B",
                 _TAESD_DOWN, "B", "B", "B", (64, "C", True))
TAESD_DECODER = (None, ("C", 64, True), None, "B", "B", "B", None, _TAESD_DOWN, "B", "B", "B",
                 None, _TAESD_DOWN, "B", "B", "B", None, _TAESD_DOWN, "B", (64, 3, True))
# A1111 modules/sd_vae_approx.py VAEApprox: (out, in, kernel) of conv1..conv8, each with a bias.
VAE_APPROX = ((8, "C", 7), (16, 8, 5), (32, 16, 3), (64, 32, 3), (32, 64, 3), (16, 32, 3),
              (8, 16, 3), (3, 8, 3))
Shapes = dict[str, tuple[int | str, ...]]


def _taesd_shapes(layers: tuple[object, ...], prefix: str = "", first: int = 0) -> Shapes:
    """{key: shape} of a TAESD nn.Sequential whose indices count from `first`."""
    shapes: Shapes = {}
    for i, spec in enumerate(layers, first):
        convs = ([] if spec is None else [(f"{i}.conv.{j}", 64, 64, True) for j in (0, 2, 4)]
                 if spec == "B" else [(f"{i}", *spec)])
        for name, cin, cout, bias in convs:
            shapes[f"{prefix}{name}.weight"] = (cout, cin, 3, 3)
            if bias:
                shapes[f"{prefix}{name}.bias"] = (cout,)
    return shapes


# Ordered (variant, form, shapes): the first whose keys and shapes the table has exactly wins.
SMALL_VAES: tuple[tuple[str, str, Shapes], ...] = (
    ("tiny", "TAESD encoder (.pth, bare indices)", _taesd_shapes(TAESD_ENCODER)),
    ("tiny", "TAESD decoder (.pth, bare indices)", _taesd_shapes(TAESD_DECODER)),
    ("tiny", "TAESD in diffusers AutoencoderTiny form (encoder.layers / decoder.layers)",
     {**_taesd_shapes(TAESD_ENCODER, "encoder.layers."),
      **_taesd_shapes(TAESD_DECODER, "decoder.layers.", -1)}),
    ("approx", "A1111 VAE-approx (conv1..conv8)",
     {key: shape for n, (cout, cin, k) in enumerate(VAE_APPROX, 1)
      for key, shape in ((f"conv{n}.weight", (cout, cin, k, k)), (f"conv{n}.bias", (cout,)))}),
)
# Within a latent width every shape is the same: taesd = taesdxl, taesd3 = taef1, and A1111's
# model.pt (SD1/SD2) = vaeapprox-sdxl.pt.
SMALL_VAE_LATENTS = {
    4: "4 latent channels: SD1/SD2/SDXL (taesd and taesdxl, model.pt and vaeapprox-sdxl.pt "
       "have the same shapes; the base is not told)",
    16: "16 latent channels: SD3/Flux (both latents are 16 wide, taesd3 and taef1 have the same "
        "shapes; the base is not told)",
}


def small_vae(shapes: dict[str, tuple[int, ...]]) -> tuple[str, str, int] | None:
    """(variant, form, latent channels) of the first SMALL_VAES row whose keys and shapes the
    table has exactly, one latent channel count standing for "C" throughout; else None."""
    for variant, form, want in SMALL_VAES:
        if shapes.keys() != want.keys():
            continue
        latent = {shapes[k][i] for k, s in want.items() if len(shapes[k]) == len(s)
                  for i, d in enumerate(s) if d == "C"}
        c = min(latent, default=0)
        if all(shapes[k] == tuple(c if d == "C" else d for d in s) for k, s in want.items()):
            return variant, form, c
    return None

# ---- adapters ----
# Ordered: the first kind with any key wins (a DoRA file also has lora_down/up keys).
ADAPTER_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dora", (".dora_scale", ".lora_magnitude_vector", ".lora_magnitude_vector.weight")),
    ("loha", (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b")),
    ("lokr", (".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b")),
    ("lycoris_full", (".diff", ".diff_b")),
    ("lora", (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight")),
)
ADAPTER_EXTRA_SUFFIXES = (".alpha", ".lora_mid.weight", ".hada_t1", ".hada_t2", ".lokr_t2")
PEFT_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector",
                 ".lora_magnitude_vector.weight")
ALPHA_SUFFIX = ".alpha"

# Module name prefix -> part of the base model it adapts.
ADAPTER_PARTS = (
    ("lora_te1_", "te1"), ("lora_te2_", "te2"), ("lora_te3_", "te3"), ("lora_te_", "te"),
    ("lora_unet_double_blocks_", "transformer"), ("lora_unet_single_blocks_", "transformer"),
    ("lora_unet_joint_blocks_", "transformer"),
    ("lora_unet_", "unet"), ("lora_transformer_", "transformer"),
    ("text_encoder_2.", "te2"), ("text_encoder.", "te"), ("unet.", "unet"),
    ("transformer.", "transformer"), ("double_blocks.", "transformer"),
    ("single_blocks.", "transformer"), ("joint_blocks.", "transformer"),
)

# Suffixes whose tensor's dim 1 is the module's input width, per adapter kind.
IN_DIM_SUFFIXES = {
    "lora": (".lora_down.weight", ".lora_A.weight"),
    "dora": (".lora_down.weight", ".lora_A.weight"),
    "loha": (".hada_w1_b",),
    "lycoris_full": (".diff",),
}
# LoKr: W = kron(w1, w2), so the input width is the product of both factors' dim 1.
LOKR_FACTORS = ((".lokr_w1", ".lokr_w1_b"), (".lokr_w2", ".lokr_w2_b"))

# Module names whose input width tells the base: UNet cross-attention keys, text encoder queries.
CONTEXT_PROBES = ("attn2_to_k", "attn2.to_k")
TE_PROBES = ("self_attn_q_proj", "self_attn.q_proj")
CONTEXT_BASES = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner",
                 DEMO_SD1_WIDTH: "demo_sd1", DEMO_SDXL_CONTEXT: "demo_sdxl"}
PART_WIDTH_BASES = {("te", 768): "sd1", ("te", 1024): "sd2", ("te1", 768): "sdxl",
                    ("te2", 1280): "sdxl", ("te", DEMO_SD1_WIDTH): "demo_sd1",
                    ("te1", DEMO_SDXL_WIDTHS[0]): "demo_sdxl",
                    ("te2", DEMO_SDXL_WIDTHS[1]): "demo_sdxl"}
# Bases whose widths are all another base's: the widths cannot tell them apart, metadata can.
SAME_WIDTHS = {"playground": "sdxl", "flux_dev": "flux", "flux_schnell": "flux"}
# The base names in evidence and error messages.
BASE_NAMES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sdxl_refiner": "the SDXL refiner",
              "playground": "Playground v2.5", "sd3": "SD3",
              "flux": "Flux.1", "flux_dev": "Flux.1 dev", "flux_schnell": "Flux.1 schnell",
              "demo_sd1": "the lab's demo SD1",
              "demo_sdxl": "the lab's demo SDXL"}
# Transformer families (Flux, SD3): module names that tell the family alone (canonical keys,
# kohya's underscores or dots), and the modules whose input width is the hidden width.
TRANSFORMER_NAMES: tuple[tuple[str, str, str], ...] = (
    (r"(^|[._])(double_blocks|single_blocks|single_transformer_blocks)[._]\d", "flux",
     "Flux double/single blocks: a Flux LoRA (dev and schnell share every module)"),
    (r"(^|[._])joint_blocks[._]\d", "sd3", "SD3 joint blocks (MMDiT)"),
)
TRANSFORMER_PROBES = (r"^transformer\.(single_)?transformer_blocks\.\d+\.attn\.to_q$",
                      r"[._]img_attn[._]qkv$", r"(^|[._])single_blocks[._]\d+[._]linear1$",
                      r"[._]x_block[._]attn[._]qkv$")
# Hidden width = 64 x the blocks of an SD3 (medium 24, 3.5 large 38); Flux.1 is 3072 wide.
TRANSFORMER_WIDTH_BASES = {3072: "flux", 1536: "sd3", 2432: "sd3"}

# ---- textual inversion ----
TI_A1111_PREFIX = "string_to_param."
TI_EMB_PARAMS = "emb_params"
TI_TOKEN_PREFIX = "string_to_token."  # the original ldm code pickles the token id as a tensor
TI_SDXL_KEYS = ("clip_l", "clip_g")
TI_MAX_VECTORS = 75  # a prompt holds 75 tokens; more rows is not an embedding
TI_WIDTH_BASES = {(768,): "sd1", (1024,): "sd2", (768, 1280): "sdxl",
                  (DEMO_SD1_WIDTH,): "demo_sd1", DEMO_SDXL_WIDTHS: "demo_sdxl"}

# ---- metadata ----
# ss_base_model_version values (kohya sd-scripts; the lab's demo builder writes labkit_demo_*).
SS_BASE_VERSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sd_v1": ("sd1", ()),
    "sd_v1_v": ("sd1", ("v_prediction",)),
    "sd_v2": ("sd2", ()),
    "sd_v2_v": ("sd2", ("v_prediction",)),
    "sdxl_base_v1-0": ("sdxl", ()),
    "sd3": ("sd3", ()),
    "flux1": ("flux", ()),
    "labkit_demo_sd1": ("demo_sd1", ()),
    "labkit_demo_sdxl": ("demo_sdxl", ()),
}
# modelspec.architecture is "<arch>/<adapter>"; the arch part is matched by prefix, in order.
MODELSPEC_ARCHS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("stable-diffusion-v1", "sd1", ()),
    ("stable-diffusion-v2-768-v", "sd2", ("v_prediction",)),
    ("stable-diffusion-v2", "sd2", ()),
    ("stable-diffusion-xl-v1-refiner", "sdxl_refiner", ()),
    ("stable-diffusion-xl", "sdxl", ()),
    ("stable-diffusion-3", "sd3", ()),
    ("flux-1-dev", "flux_dev", ()),
    ("flux-1-schnell", "flux_schnell", ()),
    ("playground-v2.5", "playground", ()),
    ("labkit-demo-sd1", "demo_sd1", ()),
    ("labkit-demo-sdxl", "demo_sdxl", ()),
)
PREDICTION_TYPE_KEY = "modelspec.prediction_type"
V_PREDICTION_VALUES = frozenset({"v", "v_prediction"})
