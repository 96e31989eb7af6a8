"""The pictures the lab draws: image grids (PIL and matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FONT_PX = (11, 18)  # labels: the font's smallest and largest size, in pixels
PAD = 4  # space around a label, in pixels
ROW_LABEL_PX = 180  # a row label's band is at most this wide (or the cell's width, if wider)
MAX_COL_LINES = 3  # a column label wraps onto at most this many lines


def _check_grid(images: Sequence[Image.Image], rows: int, cols: int) -> None:
    if not images:
        raise ValueError("image_grid needs at least one image")
    if len(images) > rows * cols:
        raise ValueError(f"{len(images)} images do not fit a {rows}x{cols} grid")


def label_font(cell_height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The labels' font for cells `cell_height` pixels tall: a ninth of the cell, within FONT_PX."""
    return ImageFont.load_default(size=min(max(cell_height // 9, FONT_PX[0]), FONT_PX[1]))


def wrap_label(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int,
               max_lines: int) -> list[str]:
    """`text` wrapped at spaces (a word too long for a line is split) into lines at most `width`
    pixels wide; past `max_lines` the last line ends in "…"."""
    def fits(line: str) -> bool:
        return font.getlength(line) <= width

    lines: list[str] = []
    for word in str(text).split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and fits(joined):
            lines[-1] = joined
            continue
        while not fits(word) and len(word) > 1:
            cut = max(n for n in range(1, len(word)) if fits(word[:n]) or n == 1)
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + "…"):
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last.rstrip() + "…"]
    return lines or [""]


def image_grid(images: Sequence[Image.Image], rows: int, cols: int,
               row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None,
               cell_px: int | None = None) -> Image.Image:
    """Images in a rows x cols grid (row-major), each cell the size of the first image (or
    cell_px wide, enlarged without smoothing), with optional labels left of rows and above
    columns: wrapped to fit their band, in a font sized to the cell."""
    _check_grid(images, rows, cols)
    w, h = images[0].size
    if cell_px:
        w, h = cell_px, round(cell_px * h / w)
    font = label_font(h)
    line_px = round(font.size * 1.25) if hasattr(font, "size") else 12
    row_lines = [wrap_label(s, font, max(w, ROW_LABEL_PX), max(1, (h - PAD) // line_px))
                 for s in row_labels or []]
    col_lines = [wrap_label(s, font, w - 3 * PAD, MAX_COL_LINES) for s in col_labels or []]
    widest = max((font.getlength(line) for lines in row_lines for line in lines), default=0)
    left = round(widest) + 2 * PAD if row_labels else 0
    top = max(map(len, col_lines)) * line_px + PAD if col_labels else 0
    grid = Image.new("RGB", (left + cols * w, top + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(img.convert("RGB").resize((w, h), Image.NEAREST), (left + c * w, top + r * h))
    for c, lines in enumerate(col_lines):
        draw.multiline_text((left + c * w + PAD // 2, PAD // 2), "\n".join(lines), fill="black",
                            font=font, spacing=line_px - font.size)
    for r, lines in enumerate(row_lines):
        y = top + r * h + (h - len(lines) * line_px) // 2
        draw.multiline_text((PAD, y), "\n".join(lines), fill="black", font=font,
                            spacing=line_px - font.size)
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
