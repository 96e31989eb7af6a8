"""Measures of generated demo images: the shape's hue, colour accuracy and each style's energy."""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np

from labkit.zoo.recipe.dataset import COLOURS, PATTERN_PERIOD, SIZE

NAMED_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360
              for name, rgb in COLOURS.items()}


def _hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mx, mn = img.max(-1), img.min(-1)
    d = mx - mn
    s = np.where(mx > 0, d / np.maximum(mx, 1e-6), 0)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    safe = np.maximum(d, 1e-6)
    h = np.select([mx == r, mx == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4)
    return h * 60, s, mx


def shape_pixels(img: np.ndarray) -> np.ndarray:
    """Mask of the coloured pixels (the backgrounds and pattern tones are all achromatic)."""
    _, s, v = _hsv(img)
    return (s > 0.4) & (v > 0.25)


def dominant_hue(img: np.ndarray) -> float | None:
    """The mode of the hue histogram (degrees) over the coloured pixels; None if there are few."""
    h, _, _ = _hsv(img)
    m = shape_pixels(img)
    if m.sum() < 10:
        return None
    hist, edges = np.histogram(h[m], bins=36, range=(0, 360))
    i = int(hist.argmax())
    return float((edges[i] + edges[i + 1]) / 2)


def hue_distance(a: float, b: float) -> float:
    """Angular distance of two hues in degrees."""
    d = abs(a - b) % 360
    return min(d, 360 - d)


def nearest_colour(hue: float | None) -> str | None:
    """The named colour whose hue is nearest."""
    if hue is None:
        return None
    return min(NAMED_HUES, key=lambda n: hue_distance(hue, NAMED_HUES[n]))


def colour_accuracy(images: list[np.ndarray], colours: list[str]) -> float:
    """Fraction of images whose dominant hue is nearest to the colour named in their prompt."""
    hits = [nearest_colour(dominant_hue(im)) == c for im, c in zip(images, colours, strict=True)]
    return float(np.mean(hits))


def _spectrum_share(img: np.ndarray, bins: list[tuple[int, int]]) -> float:
    gray = img.mean(-1)
    power = np.abs(np.fft.fft2(gray - gray.mean())) ** 2
    return float(sum(power[y % SIZE, x % SIZE] for y, x in bins) / max(power.sum(), 1e-12))


K = SIZE // PATTERN_PERIOD


def stripe_energy(img: np.ndarray) -> float:
    """Share of the image's variance at the horizontal-stripe frequency (period 16 px)."""
    return _spectrum_share(img, [(K, 0), (-K, 0)])


def checker_energy(img: np.ndarray) -> float:
    """Share of the image's variance at the checkerboard frequencies (8 px squares)."""
    return _spectrum_share(img, [(K, K), (K, -K), (-K, K), (-K, -K)])


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(ys) < 10:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def foreground(img: np.ndarray) -> np.ndarray:
    """Mask of pixels unlike the background (estimated as the median of the border pixels)."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return np.abs(img - np.median(border, axis=0)).max(-1) > 0.25


def hollowness(img: np.ndarray) -> float:
    """Background share of the middle of the shape's box (outlines are hollow, fills are not)."""
    m = foreground(img)
    box = _box(m)
    if box is None:
        return 0.0
    y0, y1, x0, x1 = box
    cy, cx, hy, hx = (y0 + y1) // 2, (x0 + x1) // 2, max(1, (y1 - y0) // 6), max(1, (x1 - x0) // 6)
    return float(1 - m[cy - hy : cy + hy, cx - hx : cx + hx].mean())


def split_energy(img: np.ndarray) -> float:
    """How much more coloured the left half of the shape's box is than the right (two-tone)."""
    m, c = foreground(img), shape_pixels(img)
    box = _box(m)
    if box is None:
        return 0.0
    y0, y1, x0, x1 = box
    mid = (x0 + x1) // 2
    left, right = c[y0:y1, x0:mid].mean(), c[y0:y1, mid:x1].mean()
    return float((left - right) / max(left + right, 1e-6))


STYLE_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "striped": stripe_energy,
    "checker": checker_energy,
    "outlined": hollowness,
    "twotone": split_energy,
}


def style_score(images: list[np.ndarray], style: str) -> float:
    """Mean of a style's measure over images."""
    return float(np.mean([STYLE_METRICS[style](im) for im in images]))
