import subprocess
import sys

from labkit.generate import setup_check


def test_doctor_reports_each_library_and_the_device():
    checks = setup_check.doctor()
    assert {"python", "torch", "diffusers", "device", "demo files"} <= set(checks["check"])
    torch_row = checks.set_index("check").loc["torch"]
    assert torch_row["ok"] and torch_row["value"][0].isdigit()


def test_doctor_flags_missing_demo_files(tmp_path, monkeypatch):
    monkeypatch.setattr(setup_check, "DATA_DIR", tmp_path / "nowhere")
    row = setup_check.doctor().set_index("check").loc["demo files"]
    assert not row["ok"]
    assert "missing" in row["note"]


def test_import_labkit_does_not_import_torch():
    code = "import sys, labkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
