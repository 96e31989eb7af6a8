import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.cli.dispatch import COMMANDS, main
from tests.fixtures.layout_files import load_layout, write_sparse
from tests.fixtures.sample_models import (
    write_checkpoint,
    write_lfs_pointer,
    write_lora,
    write_unsafe_pickle,
)

INSPECT_KEYS = ["path", "format", "kind", "base", "variant", "base_source", "n_tensors",
                "n_params", "dtypes", "metadata"]
HASH_KEYS = ["path", "sha256", "autov1", "autov2", "autov3", "crc32", "blake3"]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def files(tmp_path):
    return {
        "lora": write_lora(tmp_path / "lora.safetensors"),
        "ckpt": write_checkpoint(tmp_path / "model.ckpt"),
        "evil": write_unsafe_pickle(tmp_path / "evil.ckpt"),
        "lfs": write_lfs_pointer(tmp_path / "pointer.safetensors"),
        "missing": tmp_path / "missing.safetensors",
    }


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out):
    return [json.loads(line) for line in out.splitlines()]


def test_inspect_json_has_the_contract_keys(capsys, files):
    code, out, err = run(capsys, "inspect", files["lora"], "--json")
    assert code == 0 and err == ""
    (record,) = json_lines(out)
    assert list(record) == INSPECT_KEYS
    assert record["format"] == "safetensors" and record["kind"] == "lora"
    assert record["n_tensors"] == 5 and record["n_params"] == 4 * 4 * 320 + 1
    assert record["dtypes"] == {"F32": 5}
    assert record["metadata"]["ss_network_dim"] == 4
    assert record["metadata"]["ss_tag_frequency"]["10_cat"]["cat"] == 12


def test_several_paths_one_line_each_in_order_and_worst_exit_code(capsys, files):
    code, out, err = run(capsys, "inspect", files["lora"], files["missing"], files["ckpt"],
                         "--json")
    records = json_lines(out)
    assert [r["path"] for r in records] == [str(files[k]) for k in ("lora", "missing", "ckpt")]
    assert set(records[1]) == {"path", "error"} and "missing.safetensors" in records[1]["error"]
    assert code == 2
    assert "missing.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unsafe_pickle_exits_1_for_inspect_and_scan(capsys, files):
    code, out, err = run(capsys, "inspect", files["evil"], "--json")
    assert code == 1 and "system" in json_lines(out)[0]["error"]
    code, out, _ = run(capsys, "scan", files["evil"], files["ckpt"], "--json")
    evil, ckpt = json_lines(out)
    assert code == 1
    assert list(evil) == ["path", "verdict", "globals"] and evil["verdict"] == "unsafe"
    refused = [g for g in evil["globals"] if not g["allowed"]]
    assert refused and refused[0]["name"] == "system" and refused[0]["why"]
    assert set(refused[0]) == {"module", "name", "allowed", "why"}
    assert ckpt["verdict"] == "safe" and all(g["allowed"] for g in ckpt["globals"])


def test_scan_of_safetensors_is_safe_and_of_a_pointer_is_bad_input(capsys, files):
    code, out, _ = run(capsys, "scan", files["lora"], "--json")
    assert code == 0 and json_lines(out) == [{"path": str(files["lora"]), "verdict": "safe",
                                              "globals": []}]
    code, out, err = run(capsys, "scan", files["lfs"], "--json")
    assert code == 2 and "git lfs pull" in json_lines(out)[0]["error"]
    assert "LFS" in err


def test_scan_of_a_folder_without_model_files_is_bad_input_not_safe(capsys, tmp_path, files):
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model")
    for folder in (empty, notes):
        code, out, err = run(capsys, "scan", folder, "--json")
        assert code == 2 and "no model file" in json_lines(out)[0]["error"], err
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "readme.txt").write_text("not a model")
    files["lora"].rename(mixed / "lora.safetensors")
    code, out, _ = run(capsys, "scan", mixed, "--json")
    assert code == 0 and json_lines(out)[0]["verdict"] == "safe"


def test_unsafe_beats_ok_and_bad_input_beats_unsafe(capsys, files):
    assert run(capsys, "scan", files["ckpt"], files["evil"])[0] == 1
    assert run(capsys, "scan", files["evil"], files["lfs"], files["ckpt"])[0] == 2


def test_hash_matches_hashlib(capsys, files):
    code, out, _ = run(capsys, "hash", files["lora"], "--json")
    (record,) = json_lines(out)
    sha = hashlib.sha256(files["lora"].read_bytes()).hexdigest().upper()
    assert code == 0 and list(record) == HASH_KEYS
    assert record["sha256"] == sha and record["autov2"] == sha[:10] and record["autov1"] is None


def test_hash_of_a_folder_is_bad_input(capsys, tmp_path):
    code, out, err = run(capsys, "hash", tmp_path)
    assert code == 2 and out == "" and "folder" in err
    assert "for one file. Hash each" in err  # the message and its hint read as two sentences


def test_catalog_prints_one_object_per_model(capsys, files, tmp_path):
    code, out, _ = run(capsys, "catalog", tmp_path, "--json")
    records = {r["path"]: r for r in json_lines(out)}
    assert set(records) == {str(files[k]) for k in ("lora", "ckpt", "evil", "lfs")}
    assert records[str(files["lora"])]["kind"] == "lora"
    assert records[str(files["lora"])]["error"] is None
    assert code == 2  # the LFS pointer is bad input, worse than the unsafe pickle


def test_human_output_is_aligned_key_values_and_tables(capsys, files, tmp_path):
    code, out, _ = run(capsys, "inspect", files["lora"])
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("path:") and "lora.safetensors" in lines[0]
    kind = next(line for line in lines if line.startswith("kind:"))
    assert kind.index("lora") == lines[0].index(str(files["lora"])[0])
    assert any(line.strip().startswith("ss_network_dim:") for line in lines)
    code, out, _ = run(capsys, "scan", files["evil"])
    assert "verdict:" in out and "unsafe" in out and "module" in out and "system" in out
    code, out, _ = run(capsys, "catalog", tmp_path)
    header = out.splitlines()[0].split()
    assert header[:4] == ["path", "format", "kind", "base"] and "lora.safetensors" in out
    lora = next(line for line in out.splitlines() if "lora.safetensors" in line)
    assert "F32: 5" in lora and "cat, dog, tabby" in lora and "{" not in lora


def test_catalog_no_cache_leaves_no_cache_and_jobs_pass_through(capsys, files, tmp_path,
                                                                 monkeypatch):
    import os

    import labkit.inventory.table as table

    seen = []
    real = table.run_local
    monkeypatch.setattr(table, "run_local", lambda items, hashes, jobs, progress: seen.append(
        jobs) or real(items, hashes, jobs, progress))
    code, out, _ = run(capsys, "catalog", tmp_path, "--no-cache", "--jobs", "3", "--json")
    assert code == 2 and len(json_lines(out)) == 4 and seen == [3]
    assert not list(Path(os.environ["LABKIT_CACHE_DIR"]).glob("catalog*"))
    run(capsys, "catalog", tmp_path, "--json")
    assert list(Path(os.environ["LABKIT_CACHE_DIR"]).glob("catalog*"))


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert all(name in out for name in COMMANDS)


def test_an_unexpected_error_is_one_line_never_a_traceback(capsys, files, monkeypatch):
    def broken(path, progress=True):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("labkit.hashes.file_hashes", broken)
    code, out, err = run(capsys, "hash", files["lora"])
    assert code == 2 and "disk on fire" in err and "Traceback" not in err


def test_python_dash_m_exit_codes(files, tmp_path):
    def exit_code(*argv):
        done = subprocess.run([sys.executable, "-m", "labkit", *map(str, argv)],
                              capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stderr
        return done.returncode, done.stderr

    assert exit_code("scan", files["lora"], files["ckpt"])[0] == 0
    assert exit_code("scan", files["evil"])[0] == 1
    code, err = exit_code("inspect", files["missing"])
    assert code == 2 and "missing.safetensors" in err
    assert exit_code("frobnicate", files["lora"])[0] == 2


REAL = {"sd15": ("checkpoint", "sd1", []), "sd15_inpaint": ("checkpoint", "sd1", ["inpainting"]),
        "sdxl_base": ("checkpoint", "sdxl", []), "sdxl_lora_kohya": ("lora", "sdxl", []),
        "flux_dev": ("unet", "flux_dev", [])}


def test_real_layouts_as_sparse_files_inspect_and_catalog(capsys, tmp_path):
    for name in REAL:
        write_sparse(tmp_path / f"{name}.safetensors", load_layout(name))
    code, out, _ = run(capsys, "inspect", *sorted(tmp_path.iterdir()), "--json")
    found = {r["path"].rsplit("/", 1)[1].removesuffix(".safetensors"):
             (r["kind"], r["base"], r["variant"]) for r in json_lines(out)}
    assert code == 0 and found == REAL
    code, out, _ = run(capsys, "catalog", tmp_path, "--json")
    sd15 = next(r for r in json_lines(out) if r["path"].endswith("sd15.safetensors"))
    assert code == 0 and sd15["n_tensors"] == 1131 and sd15["size"] > 1000 * 2**20


def test_catalog_out_writes_every_folder_to_one_table(capsys, files, tmp_path_factory):
    import pandas as pd

    other = tmp_path_factory.mktemp("other")
    write_lora(other / "second.safetensors")
    out = tmp_path_factory.mktemp("out") / "catalog.parquet"
    code, _, err = run(capsys, "catalog", files["lora"].parent, other, "--out", out, "--jobs", "1")
    table = pd.read_parquet(out)
    assert code == 2 and "Traceback" not in err  # the LFS pointer is still bad input
    assert set(table["path"]) == {str(files[k]) for k in ("lora", "ckpt", "evil", "lfs")} | {
        str(other / "second.safetensors")}
    assert table.set_index("path").loc[str(files["lora"]), "kind"] == "lora"
    code, _, err = run(capsys, "catalog", other, "--out", out.with_suffix(".txt"))
    assert code == 2 and ".parquet or .csv" in err


DEMO_SDXL = {"demo_sdxl": ("checkpoint", "demo_sdxl", "layout"),
             "demo_sdxl_single": ("checkpoint", "demo_sdxl", "layout"),
             "demo_lora_striped_xl": ("lora", "demo_sdxl", "dims"),
             "demo_ti_checker_xl": ("textual_inversion", "demo_sdxl", "dims")}


def test_python_dash_m_inspect_tells_the_demo_sdxl_files():
    from labkit import zoo
    paths = [zoo.path(name) for name in DEMO_SDXL]
    done = subprocess.run([sys.executable, "-m", "labkit", "inspect", "--json", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stdout)
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert [(r["kind"], r["base"], r["base_source"]) for r in records] == list(DEMO_SDXL.values())
    lora = records[2]  # its metadata names real SDXL; its widths are the demo's, and win
    assert lora["metadata"]["ss_base_model_version"] == "sdxl_base_v1-0"
