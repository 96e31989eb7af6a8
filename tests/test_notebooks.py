"""Every notebook in notebooks/ runs top to bottom; a failed cell fails with its source and error.

Exercises ship unanswered (`name = None  # your answer...`), and the cell after checks the
answer. The test runs each notebook as shipped (its check must say "Not answered yet"), then, in
the same kernel, fills in a wrong answer and the right one (EXERCISES), running the check cell
again after each: it must say "Not quite", then that the answer is right.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))
UNANSWERED = "Not answered yet"
WRONG = "Not quite"


@dataclass(frozen=True)
class Exercise:
    """A notebook's exercise: the name the learner sets, code that sets it right and code that
    sets it wrong (run in the notebook's kernel), and what the check prints for a right answer."""

    name: str
    right: str
    wrong: str
    says_right: str = "Right"


EXERCISES = {
    "00_welcome": Exercise("passed", 'passed = int(checks["ok"].sum())', "passed = -1"),
    "01_model_files": Exercise(
        "n_lora_tensors",
        'with open(lora, "rb") as f:\n'
        '    header = json.loads(f.read(int.from_bytes(f.read(8), "little")))\n'
        'n_lora_tensors = len(header) - ("__metadata__" in header)',
        "n_lora_tensors = len(header)"),  # counts __metadata__ too: one too many
    "02_what_is_this_file": Exercise(
        "lokr_autov2",
        "table = lk.catalog(lk.zoo.data_dir(), hashes=True)\n"
        'lokr_autov2 = table.loc[(table["kind"] == "lokr") & (table["base"] == "demo_sd1"),'
        ' "autov2"].item().lower()',  # Civitai shows it in capitals; either case is right
        'lokr_autov2 = "0000000000"'),
    "03_generate": Exercise(
        "difference",
        "weak, strong = (lk.generate.generate(pipe, prompt, seed=0, steps=20, guidance=g,"
        " progress=False)[0] for g in (1.0, 7.5))\n"
        "difference = float(np.abs(np.asarray(weak, float) - np.asarray(strong, float)).mean())",
        "difference = -1.0"),
    "04_lora": Exercise("my_strength", "my_strength = 1.2", "my_strength = 0.6"),
    "05_embeddings": Exercise(
        "nearest_id", 'nearest_id = int(lk.embeddings.nearest_tokens(ti_vector, te, tok, k=1)["id"][0])',
        "nearest_id = -1"),
    "06_tensor_statistics": Exercise(
        "answer",
        "answer = lk.stats.difference_by_block(lk.stats.ema_difference(ckpt, progress=False))"
        '.set_index("block")["rel_diff"].idxmax()',
        'answer = "NOPE"', says_right="Correct"),
    "07_model_families": Exercise(
        "refiner_numbers",
        'refiner_numbers = lk.families.conditioning_widths(lk.families.key_table("sdxl_refiner"))'
        '["micro"] // 256',
        "refiner_numbers = 0"),
}


# What diffusers, transformers and Python's warnings module print: a learner sees a pink box.
LIBRARY_WARNING = re.compile(r"\[(transformers|diffusers)\]|\w+Warning:|^WARNING", re.M)


def save_figures(nb, prefix: Path) -> list[Path]:
    """Every PNG a notebook's cells show, saved as PREFIX_cellN[_k].png for a person to look at."""
    saved = []
    for i, cell in enumerate(nb.cells):
        pngs = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        for k, data in enumerate(pngs):
            dst = prefix.with_name(f"{prefix.name}_cell{i}{f'_{k}' if k else ''}.png")
            dst.write_bytes(base64.b64decode(data))
            saved.append(dst)
    return saved


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no numbered notebooks"


def answer_cells(nb, name: str) -> tuple[int, int]:
    """Indexes of the exercise's answer cell (`name = None`) and of its check, the next code cell."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    pattern = re.compile(rf"^{re.escape(name)} = None\b", re.MULTILINE)
    answer = next((i for i in code if pattern.search(nb.cells[i].source)), None)
    assert answer is not None, f"no cell sets `{name} = None`: the exercise must ship unanswered"
    check = next((i for i in code if i > answer), None)
    assert check is not None, f"no check cell after the answer cell of `{name}`"
    return answer, check


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_exercise_ships_answered(path: Path):
    """Every "your answer" line leaves the answer to the learner: `name = None`."""
    nb = nbformat.read(path, as_version=4)
    lines = [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
             if "# your answer" in line]
    answered = [line for line in lines if not re.match(r"^\w+ = None\s+#", line)]
    assert not answered, f"{path.name}: an exercise ships with its answer: {answered}"
    if lines:
        assert path.stem in EXERCISES, f"{path.name} has an exercise: give it an entry in EXERCISES"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, output_dir: Path):
    nb = nbformat.read(path, as_version=4)
    exercise = EXERCISES.get(path.stem)
    if exercise is not None:
        answer, check = answer_cells(nb, exercise.name)
        # a wrong answer, the check again, the right answer, the check again
        for source in (exercise.wrong, nb.cells[check].source, exercise.right,
                       nb.cells[check].source):
            nb.cells.append(nbformat.v4.new_code_cell(source))
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
    save_figures(nb, output_dir / f"notebook_{path.stem}")
    warned = [(i, o["text"][:200]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.get("name") == "stderr" and LIBRARY_WARNING.search(o["text"])]
    assert not warned, f"{path.name}: library warnings in the output: {warned}"
    if exercise is not None:
        shipped, wrong, right = (printed(nb.cells[i]) for i in (check, -3, -1))
        assert UNANSWERED in shipped, f"the check as shipped says {shipped!r}"
        assert WRONG in wrong, f"the check of a wrong answer says {wrong!r}"
        assert exercise.says_right in right and WRONG not in right, \
            f"the check of the right answer says {right!r}"
