"""`python -m labkit merge|bake|extract-lora|resize-lora|merge-lora`: records, --json, exit codes,
refusals naming both files, the alpha convention in --help."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from labkit import zoo
from labkit.cli.dispatch import build_parser, main
from labkit.cli.result import BAD_INPUT, OK
from tests.fixtures.lora_samples import single_thread
from tests.surgery import samples as S

one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)
LORA = str(zoo.path("demo_lora_striped"))


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def abc(tmp_path_factory):
    return [str(p) for p in S.sd1_pair(tmp_path_factory.mktemp("cli_surgery"))]


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_merge_writes_the_formula_and_prints_one_json_record(capsys, abc, tmp_path):
    out = tmp_path / "m.safetensors"
    code, stdout, err = run(capsys, "merge", abc[0], abc[1], "--alpha", "0.25", "-o", out, "--json")
    assert code == OK, err
    (record,) = [json.loads(line) for line in stdout.splitlines()]
    assert record["command"] == "merge" and record["sources"] == abc[:2]
    assert record["output"] == str(out) and record["actions"] == {"merged": 588, "integer": 1}
    ta, tb, tm = (load_file(p) for p in (abc[0], abc[1], str(out)))
    torch.testing.assert_close(tm[S.TEXT_Q], ta[S.TEXT_Q] * 0.75 + tb[S.TEXT_Q] * 0.25)


def test_add_difference_with_block_weights_in_text(capsys, abc, tmp_path):
    out = tmp_path / "d.safetensors"
    code, stdout, _ = run(capsys, "merge", *abc, "--mode", "add_difference", "--alpha", "1",
                          "--blocks", "BASE=0", "-o", out)
    assert code == OK and stdout.startswith(f"merge: wrote {out} from {' + '.join(abc)}")
    assert torch.equal(load_file(str(out))[S.TEXT_Q], load_file(abc[0])[S.TEXT_Q])


def test_different_families_exit_2_naming_both_files(capsys, abc, tmp_path):
    xl = str(zoo.path("demo_sdxl_single"))
    code, stdout, err = run(capsys, "merge", abc[0], xl, "-o", tmp_path / "x.safetensors", "--json")
    assert code == BAD_INPUT and abc[0] in err and xl in err and "Traceback" not in err
    assert json.loads(stdout)["error"]
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["merge", LORA], "merge takes A B [C]; 1 paths"),
    (["bake", LORA], "bake takes CKPT LORA"),
    (["resize-lora", LORA, LORA, "--rank", "2"], "resize-lora takes LORA"),
    (["resize-lora", LORA], "needs a rank"),
    (["merge", LORA, LORA], "lora, not a model"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(capsys, tmp_path, argv, says):
    code, _, err = run(capsys, *argv, "-o", tmp_path / "x.safetensors")
    assert code == BAD_INPUT and says in err and "Traceback" not in err


def test_bake_extract_resize_and_merge_lora_round_trip(capsys, abc, tmp_path):
    baked, extracted = tmp_path / "baked.safetensors", tmp_path / "x.safetensors"
    code, stdout, err = run(capsys, "bake", abc[0], LORA, "--strength", "0.8", "-o", baked, "--json")
    assert code == OK, err
    assert json.loads(stdout)["n_modules"] == 80
    code, stdout, err = run(capsys, "extract-lora", abc[0], baked, "--rank", "8", "-o", extracted,
                            "--json")
    record = json.loads(stdout)
    assert code == OK and record["n_modules"] == 80 and record["energy_kept_min"] > 0.9999
    resized = tmp_path / "r.safetensors"
    code, stdout, _ = run(capsys, "resize-lora", extracted, "--dynamic", "sv_fro", "--ratio",
                          "0.9", "--rank", "4", "-o", resized, "--json")
    record = json.loads(stdout)
    assert code == OK and record["rank_max"] <= 4 and record["energy_kept_min"] >= 0.81 - 1e-6
    merged = tmp_path / "ml.safetensors"
    code, stdout, _ = run(capsys, "merge-lora", LORA, resized, "--weights", "0.5", "0.5",
                          "-o", merged, "--json")
    record = json.loads(stdout)
    assert code == OK and record["exact"] and record["n_modules"] == 80
    code, _, err = run(capsys, "merge-lora", LORA, resized, "-o", merged)
    assert code == BAD_INPUT and "already exists" in err


def test_bake_takes_a_dora_and_writes_the_same_file_as_the_api(capsys, abc, tmp_path):
    from safetensors import safe_open

    from labkit.surgery import bake, recipe_of

    dora = S.with_dora(zoo.path("demo_lora_striped"), abc[0], tmp_path / "dora.safetensors")
    out, api = tmp_path / "baked.safetensors", tmp_path / "api.safetensors"
    code, stdout, err = run(capsys, "bake", abc[0], dora, "-o", out, "--json")
    assert code == OK, err
    record = json.loads(stdout)
    assert record["n_modules"] == 80 and record["output"] == str(out)
    bake(abc[0], dora, out=api, progress=False)
    base, cli, ref = (load_file(str(p)) for p in (abc[0], out, api))
    assert list(cli) == list(ref) and all(torch.equal(cli[k], ref[k]) for k in ref)
    assert sum(not torch.equal(base[k], cli[k]) for k in base) == 80
    with safe_open(str(out), "pt") as f:
        assert "||W + D||" in recipe_of(f.metadata())["parameters"]["formula"]


def test_help_states_the_alpha_convention():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["merge"]
    text = sub.format_help()
    assert "A*(1-X) + B*X" in " ".join(text.split()) and "ComfyUI" in text


def test_no_hash_leaves_the_sha256_out_and_keeps_the_rest_of_the_recipe(capsys, abc, tmp_path):
    from labkit.files.opener import open_model
    from labkit.surgery import recipe_of

    out = tmp_path / "fast.safetensors"
    code, _, err = run(capsys, "merge", abc[0], abc[1], "--no-hash", "-o", out)
    assert code == OK, err
    sources = recipe_of(open_model(out).metadata)["sources"]
    assert [s["sha256"] for s in sources] == [None, None]
    assert [s["bytes"] for s in sources] == [open_model(p).path.stat().st_size for p in abc[:2]]
