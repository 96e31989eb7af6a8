import pytest
from PIL import Image

from labkit.generate.grids import image_grid, image_grid_figure


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
