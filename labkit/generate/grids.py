"""The pictures the lab draws: image grids (PIL and matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABEL_PX = 14  # height of a label band, in pixels


def _check_grid(images: Sequence[Image.Image], rows: int, cols: int) -> None:
    if not images:
        raise ValueError("image_grid needs at least one image")
    if len(images) > rows * cols:
        raise ValueError(f"{len(images)} images do not fit a {rows}x{cols} grid")


def image_grid(images: Sequence[Image.Image], rows: int, cols: int,
               row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None,
               cell_px: int | None = None) -> Image.Image:
    """Images in a rows x cols grid (row-major), each cell the size of the first image (or
    cell_px wide, enlarged without smoothing), with optional labels left of rows and above
    columns."""
    _check_grid(images, rows, cols)
    w, h = images[0].size
    if cell_px:
        w, h = cell_px, round(cell_px * h / w)
    left = max((len(s) for s in row_labels), default=0) * 7 + 6 if row_labels else 0
    top = LABEL_PX + 2 if col_labels else 0
    grid = Image.new("RGB", (left + cols * w, top + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(img.convert("RGB").resize((w, h), Image.NEAREST), (left + c * w, top + r * h))
    for c, label in enumerate(col_labels or []):
        draw.text((left + c * w + 2, 1), str(label), fill="black")
    for r, label in enumerate(row_labels or []):
        draw.text((2, top + r * h + h // 2 - LABEL_PX // 2), str(label), fill="black")
    return grid


def image_grid_figure(images: Sequence[Image.Image], rows: int, cols: int,
                      row_labels: Sequence[str] | None = None,
                      col_labels: Sequence[str] | None = None,
                      cell_inches: float = 1.6) -> Figure:
    """The same grid as a matplotlib Figure (titles over columns, labels beside rows)."""
    import matplotlib.pyplot as plt

    _check_grid(images, rows, cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_inches, rows * cell_inches),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(images):
            ax.imshow(images[i], cmap="gray" if images[i].mode == "L" else None,
                      interpolation="nearest")
        else:
            ax.axis("off")
    for c, label in enumerate(col_labels or []):
        axes[0][c].set_title(str(label), fontsize=9)
    for r, label in enumerate(row_labels or []):
        axes[r][0].set_ylabel(str(label), fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
