import shutil
import subprocess
import sys

from labkit import zoo
from labkit.generate import setup_check


def test_doctor_reports_each_library_and_the_device():
    checks = setup_check.doctor()
    assert {"python", "torch", "diffusers", "device", "demo files"} <= set(checks["check"])
    torch_row = checks.set_index("check").loc["torch"]
    assert torch_row["ok"] and torch_row["value"][0].isdigit()


def test_doctor_flags_missing_demo_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "nowhere"))
    row = setup_check.doctor().set_index("check").loc["demo files"]
    assert not row["ok"]
    assert "LABKIT_DATA" in row["note"] and "zoo.json" in row["note"]


def test_doctor_names_the_demo_files_missing_from_the_data_folder(tmp_path, monkeypatch):
    shutil.copy(zoo.data_dir() / "zoo.json", tmp_path / "zoo.json")  # the manifest, no files
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    row = setup_check.doctor().set_index("check").loc["demo files"]
    assert not row["ok"]
    assert row["value"].startswith("0 of ") and str(tmp_path) in row["value"]
    assert "demo_sd1_single" in row["note"]


def test_import_labkit_does_not_import_torch():
    code = "import sys, labkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_notebook_00_shows_every_note_whole():
    import json
    from pathlib import Path

    import pandas as pd

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "00_welcome.ipynb"
    cell = next("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
                if "lk.doctor()" in "".join(c["source"]) and c["cell_type"] == "code")
    names: dict = {}
    with pd.option_context("display.max_colwidth", 50):
        exec(cell, names)  # noqa: S102 - the notebook's own cell
        shown = names["checks"]._repr_html_()
    for note in names["checks"]["note"]:
        assert note in shown  # the device note is ~100 characters: not "fp3..."
