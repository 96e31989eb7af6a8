import csv
import io
import json

import pytest
import torch
from safetensors.torch import save_file

from labkit.cli.dispatch import main

PROJ = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
VAE = "first_stage_model.encoder.conv_in.weight"


@pytest.fixture
def files(tmp_path):
    a = {PROJ: torch.tensor([[1.0, 2.0], [3.0, 4.0]]), VAE: torch.tensor([0.0, float("nan")])}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({k: v * 2 for k, v in a.items()}, str(tmp_path / "b.safetensors"))
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_json_is_one_object_per_path_with_its_rows(capsys, files):
    code, out, _ = run(capsys, "stats", files[0], files[1], "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["path"] for r in records] == [str(f) for f in files]
    first = records[0]
    assert (first["n_tensors"], first["n_params"], first["tensors_with_nan_or_inf"]) == (2, 6, 1)
    rows = {r["name"]: r for r in first["tensors"]}
    assert rows[PROJ]["mean"] == 2.5 and rows[PROJ]["shape"] == [2, 2]
    assert rows[VAE]["nan_count"] == 1 and rows[VAE]["std"] == 0.0


def test_stats_pattern_and_csv(capsys, files):
    code, out, _ = run(capsys, "stats", files[0], "--csv", "--pattern", "proj_in")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["name"] for r in rows] == [PROJ]
    assert rows[0]["path"] == str(files[0]) and float(rows[0]["l2_norm"]) == pytest.approx(30 ** 0.5)


def test_stats_text_has_a_head_line_and_a_table(capsys, files):
    code, out, _ = run(capsys, "stats", files[0])
    assert code == 0 and "n_tensors: 2" in out and PROJ in out and "IN01" in out


def test_compare_a_with_b(capsys, files):
    code, out, _ = run(capsys, "compare", files[0], files[1], "--json")
    record = json.loads(out)
    assert code == 0 and record["other"] == str(files[1])
    assert (record["different"], record["equal"]) == (1, 1)  # 0 and NaN stay themselves
    rows = {r["name"]: r for r in record["tensors"]}
    assert rows["unet/down_blocks.0.attentions.0.proj_in.weight"]["rel_diff"] == 1.0
    code, out, _ = run(capsys, "compare", files[0], files[0])
    assert code == 0 and "equal: 2" in out


def test_compare_with_a_missing_or_cut_model_is_bad_input(capsys, files, tmp_path):
    code, out, err = run(capsys, "compare", files[0], tmp_path / "nope.ckpt")
    assert code == 2 and out == "" and "nope.ckpt" in err and "Traceback" not in err
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(files[0].read_bytes()[:-4])
    code, out, err = run(capsys, "stats", cut, "--json")
    assert code == 2 and "cut.safetensors" in json.loads(out)["error"]
