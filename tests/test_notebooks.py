"""Every notebook in notebooks/ runs top to bottom; a failed cell fails with its source and error."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no numbered notebooks"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:
        failing = next((i for i, c in enumerate(nb.cells)
                        if c.cell_type == "code" and any(o.get("output_type") == "error"
                                                         for o in c.get("outputs", []))), None)
        source = nb.cells[failing].source if failing is not None else "?"
        pytest.fail(f"{path.name}: cell {failing} failed:\n{source}\n\n{e}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.get("output_type") == "error"]
    assert not errors
