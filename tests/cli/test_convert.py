"""`python -m labkit convert` on the demo files: each route, exit codes, refusals, --json."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from labkit import zoo
from labkit.cli.dispatch import main
from labkit.convert import forms as convert
from labkit.files.opener import open_model
from labkit.identify.rules import PREDICTION_TYPE_KEY
from tests.convert.test_forms import assert_same_components, tree_hash
from tests.fixtures.hostile_corpus import entries as hostile_entries
from tests.fixtures.tiny_sd2 import save_tiny_sd2

RECORD_KEYS = ["path", "output", "conversion", "n_tensors", "bytes"]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


def run(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def demo(name):
    return zoo.path(name)


@pytest.fixture(scope="module")
def f32_single(tmp_path_factory):
    """The demo SD1 as one float32 .safetensors (the demo's own single file is float16)."""
    path = convert.folder_to_single_file(demo("demo_sd1"),
                                         tmp_path_factory.mktemp("f32") / "f32.safetensors")
    assert floats(path) == {"F32"}
    return path


def floats(path):
    """The floating dtypes among a model's tensors."""
    return set(open_model(path).tensors["dtype"]) - {"I32", "I64"}


# (source, destination name, options, conversion used, a check of what was written)
ROUTES = [
    ("demo_sd1_ckpt", "a.safetensors", [], "ckpt_to_safetensors",
     lambda out: "model_ema.decay" in load_file(out)
     and open_model(out).metadata["global_step"] == "3000"),
    ("demo_sd1_ckpt", "e.safetensors", ["--strip-ema", "ema", "--fp16"], "strip_ema",
     lambda out: not any(k.startswith("model_ema.") for k in load_file(out))
     and floats(out) == {"F16"}),
    ("demo_sd1_ckpt", "m.ckpt", ["--strip-ema", "model"], "strip_ema",
     lambda out: open_model(out).format == "pickle"
     and not any(k.startswith("model_ema.") for k in open_model(out).table)),
    ("f32_single", "h.safetensors", ["--fp16"], "to_fp16", lambda out: floats(out) == {"F16"}),
    ("demo_sd1", "one.ckpt", [], "folder_to_single_file",
     lambda out: open_model(out).format == "pickle" and open_model(out).base == "demo_sd1"),
    ("demo_sdxl", "xl.safetensors", ["--fp16"], "folder_to_single_file",
     lambda out: open_model(out).base == "demo_sdxl" and floats(out) == {"F16"}),
    ("demo_sd1_single", "folder", [], "single_file_to_folder",
     lambda out: open_model(out).format == "diffusers" and open_model(out).base == "demo_sd1"),
    ("demo_sd1_ckpt", "folder", [], "single_file_to_folder",
     lambda out: (out / "model_index.json").is_file() and open_model(out).base == "demo_sd1"),
    ("demo_sdxl_single", "folder", ["--config", demo("demo_sdxl")], "single_file_to_folder",
     lambda out: open_model(out).base == "demo_sdxl" and (out / "text_encoder_2").is_dir()),
]


@pytest.mark.parametrize(("source", "dest", "options", "conversion", "check"), ROUTES,
                         ids=[f"{r[0]}->{r[1]}:{r[3]}" for r in ROUTES])
def test_each_route_writes_its_form_and_leaves_the_source_alone(capsys, tmp_path, f32_single,
                                                                 source, dest, options,
                                                                 conversion, check):
    src, out = f32_single if source == "f32_single" else demo(source), tmp_path / dest
    before = tree_hash(src)
    code, stdout, err = run(capsys, src, "--out", out, *options, "--json")
    assert code == 0, err
    assert err == ""  # no library progress bars or warnings on the command's stderr
    (record,) = [json.loads(line) for line in stdout.splitlines()]
    assert list(record) == RECORD_KEYS
    assert record["path"] == str(src) and record["output"] == str(out)
    assert record["conversion"] == conversion
    assert record["n_tensors"] == len(open_model(out).table) > 100
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    assert record["bytes"] == sum(p.stat().st_size for p in files)
    assert check(out)
    assert tree_hash(src) == before
    assert [p.name for p in tmp_path.iterdir()] == [dest]  # no temporary left behind


def test_human_line_says_what_was_written_from_what(capsys, tmp_path):
    src, out = demo("demo_sd1_ckpt"), tmp_path / "a.safetensors"
    code, stdout, err = run(capsys, src, "--out", out)
    n = len(open_model(out).table)
    assert code == 0 and err == ""
    assert stdout == f"wrote {out} ({n} tensors, {out.stat().st_size / 1e6:.1f} MB) from {src}\n"


def test_converted_tensors_equal_the_source(capsys, tmp_path):
    src = demo("demo_sd1_ckpt")
    assert run(capsys, src, "--out", tmp_path / "a.safetensors")[0] == 0
    written, model = load_file(tmp_path / "a.safetensors"), open_model(src)
    assert written.keys() == model.table.keys()
    for name in list(model.table)[::50]:
        assert torch.equal(written[name], model.tensor(name)), name


@pytest.mark.parametrize("hostile", ["zip_data_pkl.ckpt", "ext_pickle.safetensors"])
@pytest.mark.parametrize("dest", ["out.safetensors", "folder"])
def test_an_unsafe_pickle_exits_1_with_the_scan_message(capsys, tmp_path, hostile, dest):
    canary = tmp_path / "canary"
    evil = next(e for e in hostile_entries(str(canary)) if e.name == hostile)
    src = tmp_path / hostile
    src.write_bytes(evil.data)
    code, stdout, err = run(capsys, src, "--out", tmp_path / dest, "--json")
    (record,) = [json.loads(line) for line in stdout.splitlines()]
    assert code == 1 and set(record) == {"path", "error"}
    assert "not safe to load" in record["error"] and "os.system" in record["error"]
    assert record["error"] in err and "Traceback" not in err
    assert not canary.exists() and not (tmp_path / dest).exists()


def test_an_existing_destination_is_refused_without_overwrite(capsys, tmp_path, f32_single):
    src, out = f32_single, tmp_path / "h.safetensors"
    out.write_bytes(b"keep me")
    code, stdout, err = run(capsys, src, "--out", out, "--fp16")
    assert code == 2 and stdout == ""
    assert "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert run(capsys, src, "--out", out, "--fp16", "--overwrite")[0] == 0
    assert floats(out) == {"F16"}


# (source, destination name, options, texts the refusal must say)
NONSENSE = [
    ("demo_sd1_single", "x.ckpt", [],
     ["is a .safetensors file", "names a pickle checkpoint", "does not convert",
      "Keep the .safetensors"]),
    ("demo_sd1", "copy", [], ["is a diffusers folder", "names a diffusers folder",
                              "does not convert", ".safetensors or .ckpt name"]),
    ("demo_sd1_single", "same.safetensors", [], ["nothing to convert", "--fp16 or --strip-ema"]),
    ("demo_sd1_ckpt", "same.ckpt", [], ["is a pickle checkpoint", "nothing to convert"]),
    ("demo_sd1", "s.safetensors", ["--strip-ema", "ema"],
     ["--strip-ema applies only from a single file", "holds no model_ema."]),
    ("demo_sd1_single", "folder", ["--fp16"],
     ["--fp16 applies only when writing a single file", "then convert that file to a folder"]),
    ("demo_sd1_ckpt", "a.safetensors", ["--config", demo("demo_sd1")],
     ["--config applies only when writing a folder", "Leave --config out"]),
    ("demo_sd1_single", "x.txt", [], ["suffix '.txt'", "End --out in .safetensors"]),
    ("demo_lora_striped", "folder", [], ["has no config the lab knows", "lora", "--config FOLDER"]),
    ("demo_sd1_vae", "v.safetensors", ["--fp16", "--strip-ema", "ema"], ["no EMA weights"]),
]


@pytest.mark.parametrize(("source", "dest", "options", "says"), NONSENSE,
                         ids=[f"{n[0]}->{n[1]}{''.join(map(str, n[2]))}" for n in NONSENSE])
def test_a_combination_that_makes_no_sense_exits_2_saying_why(capsys, tmp_path, source, dest,
                                                              options, says):
    code, stdout, err = run(capsys, demo(source), "--out", tmp_path / dest, *options)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(text in err for text in says), err
    assert list(tmp_path.iterdir()) == []


def test_missing_source_and_several_sources_are_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "nothing.ckpt", "--out", tmp_path / "a.safetensors")
    assert code == 2 and "nothing.ckpt: no such file or folder" in err
    code, stdout, err = run(capsys, demo("demo_sd1_ckpt"), demo("demo_sd1_single"),
                            "--out", tmp_path / "a.safetensors", "--json")
    records = [json.loads(line) for line in stdout.splitlines()]
    assert code == 2 and [set(r) for r in records] == [{"path", "error"}] * 2
    assert "once per source" in err and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def sd2_folders(tmp_path_factory):
    """Tiny SD 2.x folders (the real blocks, a few channels wide) by prediction type."""
    root = tmp_path_factory.mktemp("sd2")
    return {p: save_tiny_sd2(root / p, p) for p in ("v_prediction", "epsilon")}


@pytest.mark.parametrize(("prediction", "recorded", "dest"),
                         [("v_prediction", "v", "sd2.safetensors"), ("epsilon", "epsilon", "sd2.ckpt")])
def test_sd2_folder_to_single_file_and_back(capsys, tmp_path, sd2_folders, prediction, recorded,
                                            dest):
    folder, single, back = sd2_folders[prediction], tmp_path / dest, tmp_path / "back"
    before = tree_hash(folder)
    code, stdout, err = run(capsys, folder, "--out", single, "--json")
    assert code == 0 and err == ""
    assert json.loads(stdout)["conversion"] == "folder_to_single_file"
    written = open_model(single)
    assert written.metadata[PREDICTION_TYPE_KEY] == recorded
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in written.table
    code, stdout, err = run(capsys, single, "--out", back, "--config", folder, "--json")
    assert code == 0 and err == ""
    assert json.loads(stdout)["conversion"] == "single_file_to_folder"
    assert_same_components(folder, back)
    assert tree_hash(folder) == before


def test_sd2_file_with_a_config_of_the_other_prediction_exits_2(capsys, tmp_path, sd2_folders):
    single = tmp_path / "v.safetensors"
    assert run(capsys, sd2_folders["v_prediction"], "--out", single)[0] == 0
    code, stdout, err = run(capsys, single, "--out", tmp_path / "back", "--config",
                            sd2_folders["epsilon"])
    assert code == 2 and stdout == ""
    assert "records prediction type 'v_prediction'" in err and "'epsilon'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]
