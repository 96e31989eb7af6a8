import pytest
from PIL import Image

from labkit.generate.grids import (
    PAD,
    ROW_LABEL_PX,
    image_grid,
    image_grid_figure,
    label_font,
    wrap_label,
)


def _tiles(n):
    return [Image.new("RGB", (16, 12), (40 * i, 0, 0)) for i in range(n)]


def test_grid_places_images_row_major():
    grid = image_grid(_tiles(5), rows=2, cols=3)
    assert grid.size == (48, 24)
    assert grid.getpixel((16 + 1, 1)) == (40, 0, 0)   # second image, first row
    assert grid.getpixel((1, 12 + 1)) == (120, 0, 0)  # fourth image, second row
    assert grid.getpixel((40, 20)) == (255, 255, 255)  # the empty sixth cell


def test_labels_add_bands_left_and_top():
    grid = image_grid(_tiles(4), rows=2, cols=2, row_labels=["a", "b"], col_labels=["x", "y"])
    assert grid.width > 32 and grid.height > 24


def test_too_many_images_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        image_grid(_tiles(5), rows=2, cols=2)


def test_figure_has_one_axis_per_cell_and_titles():
    fig = image_grid_figure(_tiles(3), rows=1, cols=3, col_labels=["p", "q", "r"])
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["p", "q", "r"]


def test_cells_can_be_enlarged():
    grid = image_grid(_tiles(2), rows=1, cols=2, cell_px=32)
    assert grid.size == (64, 24)
    assert grid.getpixel((32 + 31, 23)) == (40, 0, 0)


def _ink_columns(image, box):
    """The x of every dark pixel inside box (left, top, right, bottom)."""
    crop = image.crop(box).convert("L")
    return sorted({x + box[0] for x in range(crop.width) for y in range(crop.height)
                   if crop.getpixel((x, y)) < 128})


def test_a_long_column_label_wraps_inside_its_column():
    label = "demo_lokr_twotone 0.75 and then some more words"
    grid = image_grid(_tiles(3), rows=1, cols=3, col_labels=["", label, ""], cell_px=128)
    top = grid.height - round(128 * 12 / 16)
    xs = _ink_columns(grid, (0, 0, grid.width, top))
    assert xs and xs[0] >= 128 and xs[-1] < 2 * 128  # all of it over the second column
    assert top > 2 * label_font(96).size  # on several lines, not cut to one


def test_a_long_row_label_wraps_whole_words_and_keeps_its_end():
    label = "a red circle on a white background, striped #1"
    font = label_font(128)
    lines = wrap_label(label, font, ROW_LABEL_PX, max_lines=6)
    assert " ".join(lines) == label  # nothing cut: the seed and trigger word stay
    assert all(font.getlength(line) <= ROW_LABEL_PX for line in lines) and len(lines) > 1
    grid = image_grid(_tiles(1), rows=1, cols=1, row_labels=[label], cell_px=128)
    assert grid.width - 128 <= ROW_LABEL_PX + 2 * PAD


def test_too_long_a_label_ends_in_an_ellipsis():
    font = label_font(64)
    lines = wrap_label("word " * 50, font, 60, max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 60 for line in lines)
    assert wrap_label("x" * 40, font, 30, max_lines=9)[0] != "x" * 40  # a long word is split


def test_the_font_grows_with_the_cell():
    assert label_font(64).size < label_font(128).size <= label_font(512).size
    assert label_font(16).size >= 11  # never tiny
