"""Procedural training images for the demo world: coloured shapes with captions, in several fills."""

from __future__ import annotations

import functools
import json
import re
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 25),
    "orange": (250, 135, 10),
    "yellow": (240, 220, 20),
    "green": (25, 175, 40),
    "blue": (25, 70, 230),
    "purple": (150, 40, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star")

# Fill styles: the word appended to the caption (None: plain caption) and the period in pixels
# of the pattern. Trigger words go at the end of a caption so the base template keeps its token
# positions; patterns are bold (period 16 px) so the x8 VAE can carry them.
STYLES: dict[str, str | None] = {
    "plain": None,
    "striped": "striped",
    "outlined": "outlined",
    "twotone": "twotone",
    "checker": "checkered",
}
PATTERN_PERIOD = 16
# Half the plain fills end with one or two made-up words, each one or two words of the CLIP
# vocabulary run together (some 27,000 words: "gardenpiano" is two tokens), so the base learns
# that a trailing word it does not know draws nothing, however many tokens it takes. "checkered"
# is two tokens ("chec", "kered"): when every other trailing word was one token, the base drew
# checkerboards for any two-token word it did not know ("outlined", a LoHa's trigger, with the
# LoHa off). With "checkered" as the only trailing word, any unknown word did.
TRAILING_WORD_SHARE = 0.5
# Words no caption may end with: the world's own words, every style's trigger, and the words the
# zoo's evaluation uses to test prompts with a word the model never saw.
HELD_OUT_WORDS = ("zebra", "velvet", "harbour")
WORD_PATTERN = re.compile(r"[a-z]{4,10}")


@dataclass(frozen=True)
class Sample:
    """One drawn sample's parameters; `caption()` and `render()` turn it into data."""

    colour: str
    shape: str
    background: str
    style: str
    cx: float
    cy: float
    radius: float
    plain_word: str | None = None
    contrast: float = 1.0  # how far the pattern's second tone goes from the colour (0: plain)

    def caption(self, trigger: str | None = None) -> str:
        """The caption, with the style's trigger word (or `trigger` if given) at the end."""
        text = f"{article(self.colour)} {self.colour} {self.shape} on a {self.background} background"
        word = trigger if trigger is not None else STYLES[self.style] or self.plain_word
        return f"{text}, {word}" if word else text

    def render(self) -> np.ndarray:
        """The image as float32 HxWx3 in [0, 1]."""
        return render(self)


def article(word: str) -> str:
    """ "an" before a vowel, else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        return [(cx + r * np.cos(a), cy + r * 1.1 * np.sin(a) + r * 0.15) for a in angles]
    if shape == "star":
        pts = []
        for k in range(10):
            a = np.deg2rad(-90 + 36 * k)
            rr = r * (1.1 if k % 2 == 0 else 0.45)
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (HxW float32) of one shape."""
    k = SUPERSAMPLE
    img = Image.new("L", (SIZE * k, SIZE * k), 0)
    draw = ImageDraw.Draw(img)
    if r > 0:
        if shape == "circle":
            draw.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)
        else:
            draw.polygon([(x * k, y * k) for x, y in _polygon(shape, cx, cy, r)], fill=255)
    small = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def contrast_tone(background: str) -> np.ndarray:
    """The achromatic second tone of patterns: dark on light backgrounds, light on black."""
    return np.array((235, 235, 235) if background == "black" else (20, 20, 20), np.float32) / 255


def _pattern(style: str) -> np.ndarray:
    """1 where the pattern shows the named colour, 0 where it shows the contrast tone (HxW)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    half = PATTERN_PERIOD // 2
    if style == "striped":
        return ((ys // half) % 2 == 0).astype(np.float32)
    if style == "checker":
        return (((ys // half) + (xs // half)) % 2 == 0).astype(np.float32)
    return np.ones((SIZE, SIZE), np.float32)


def render(s: Sample) -> np.ndarray:
    """Draw one sample as float32 HxWx3 in [0, 1]."""
    colour = np.array(COLOURS[s.colour], np.float32) / 255
    bg = np.array(BACKGROUNDS[s.background], np.float32) / 255
    mask = shape_mask(s.shape, s.cx, s.cy, s.radius)
    if s.style == "outlined":
        mask = np.clip(mask - shape_mask(s.shape, s.cx, s.cy, s.radius - 5.0), 0, 1)
    if s.style == "twotone":
        _, xs = np.mgrid[0:SIZE, 0:SIZE]
        pattern = (xs < s.cx).astype(np.float32)
    else:
        pattern = _pattern(s.style)
    tone = s.contrast * contrast_tone(s.background) + (1 - s.contrast) * colour
    fill = pattern[..., None] * colour + (1 - pattern[..., None]) * tone
    return mask[..., None] * fill + (1 - mask[..., None]) * bg


@functools.cache
def trailing_words() -> tuple[str, ...]:
    """The words plain captions may end with: every whole lowercase word of 4-10 letters in the
    demo tokenizer's vocabulary, less the world's own words and HELD_OUT_WORDS."""
    from labkit import zoo

    vocab = json.loads((zoo.TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    reserved = {*COLOURS, *BACKGROUNDS, *SHAPES, *(w for w in STYLES.values() if w),
                "background", *HELD_OUT_WORDS}
    return tuple(sorted(w for token in vocab if token.endswith("</w>")
                        and WORD_PATTERN.fullmatch(w := token[:-4]) and w not in reserved))


def _plain_word(style: str, radius: float) -> str | None:
    # Drawn from a hash of the radius, not the image generator, so the image stream stays the
    # same with or without these words.
    if style != "plain":
        return None
    rng = np.random.default_rng(zlib.crc32(struct.pack("<d", radius)))
    if rng.random() >= TRAILING_WORD_SHARE:
        return None
    words = trailing_words()
    return " ".join("".join(rng.choice(words, rng.integers(1, 3)))
                    for _ in range(rng.integers(1, 3)))


def random_sample(rng: np.random.Generator, style: str = "plain") -> Sample:
    """A random colour/shape/background/size/position for the given fill style."""
    s = Sample(
        colour=str(rng.choice(list(COLOURS))),
        shape=str(rng.choice(SHAPES)),
        background=str(rng.choice(list(BACKGROUNDS))),
        style=style,
        cx=float(SIZE / 2 + rng.uniform(-7, 7)),
        cy=float(SIZE / 2 + rng.uniform(-7, 7)),
        radius=float(rng.uniform(15, 23)),
    )
    return replace(s, plain_word=_plain_word(style, s.radius))


def mixed_samples(rng: np.random.Generator, n: int, weights: dict[str, float]) -> list[Sample]:
    """`n` random samples whose styles are drawn with the given weights."""
    names = list(weights)
    p = np.array([weights[k] for k in names], np.float64)
    styles = rng.choice(names, size=n, p=p / p.sum())
    return [random_sample(rng, str(st)) for st in styles]


def to_tensor_batch(images: list[np.ndarray]):
    """Stack HxWx3 [0, 1] images into a torch NCHW batch in [-1, 1]."""
    import torch

    arr = np.stack(images).transpose(0, 3, 1, 2)
    return torch.from_numpy(arr * 2 - 1).float()
