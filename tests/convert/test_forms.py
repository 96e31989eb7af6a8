"""labkit.convert.forms on tiny SD1 and SDXL pipelines: round trips, fp16, EMA, refusals, atomicity."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from labkit.convert import forms as convert
from labkit.errors import CorruptFileError, IncompatibleModelError, LabkitError, NotAModelError
from tests.fixtures.tiny_models import save_tiny

WEIGHTS = {"unet": "diffusion_pytorch_model.safetensors",
           "vae": "diffusion_pytorch_model.safetensors",
           "text_encoder": "model.safetensors", "text_encoder_2": "model.safetensors"}


def tree_hash(path: Path) -> str:
    """SHA256 over every file's relative name and bytes (a file or a whole folder)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_same_components(a: Path, b: Path) -> None:
    """Every weight tensor of every component of two folders is equal (same keys)."""
    for comp, name in WEIGHTS.items():
        if not (a / comp).exists():
            assert not (b / comp).exists()
            continue
        x, y = load_file(a / comp / name), load_file(b / comp / name)
        assert x.keys() == y.keys(), comp
        for k in x:
            assert torch.equal(x[k], y[k]), (comp, k)


def leftovers(folder: Path) -> list[str]:
    """Temporary names the converter left behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fam: save_tiny(root / fam, fam) for fam in ("sd1", "sdxl")}


@pytest.fixture(scope="module")
def sd1_file(tiny, tmp_path_factory):
    return convert.folder_to_single_file(tiny["sd1"], tmp_path_factory.mktemp("f") / "m.safetensors")


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_folder_single_file_folder_round_trip_is_exact(tiny, tmp_path, family):
    src = tiny[family]
    before = tree_hash(src)
    single = convert.folder_to_single_file(src, tmp_path / "model.safetensors")
    single_hash = tree_hash(single)
    back = convert.single_file_to_folder(single, tmp_path / "back", config_folder=src)
    assert_same_components(src, back)
    assert (back / "model_index.json").is_file() and (back / "tokenizer").is_dir()
    assert tree_hash(src) == before and tree_hash(single) == single_hash
    assert leftovers(tmp_path) == []


def test_fp16_single_file_gives_an_fp16_folder(tiny, tmp_path):
    half = convert.folder_to_single_file(tiny["sd1"], tmp_path / "h.safetensors",
                                         dtype=torch.float16)
    back = convert.single_file_to_folder(half, tmp_path / "back", config_folder=tiny["sd1"])
    for comp in ("unet", "vae", "text_encoder"):
        a, b = load_file(tiny["sd1"] / comp / WEIGHTS[comp]), load_file(back / comp / WEIGHTS[comp])
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k].half(), b[k]) for k in a), comp


def test_sd1_single_file_uses_the_original_layout(sd1_file):
    with safe_open(str(sd1_file), "pt") as f:
        keys = set(f.keys())
        q = f.get_slice("first_stage_model.encoder.mid.attn_1.q.weight").get_shape()
        ids = f.get_tensor("cond_stage_model.transformer.text_model.embeddings.position_ids")
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert len(q) == 4 and q[2:] == [1, 1]
    assert ids.dtype == torch.int64 and ids.tolist() == [list(range(77))]


def test_sdxl_single_file_fuses_openclip_attention(tiny, tmp_path):
    single = convert.folder_to_single_file(tiny["sdxl"], tmp_path / "xl.safetensors")
    sd = load_file(single)
    te2 = load_file(tiny["sdxl"] / "text_encoder_2" / "model.safetensors")
    fused = sd["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"]
    layer = "text_model.encoder.layers.1.self_attn."
    assert torch.equal(fused, torch.cat([te2[layer + f"{x}_proj.weight"] for x in "qkv"]))
    assert torch.equal(sd["conditioner.embedders.1.model.text_projection"],
                       te2["text_projection.weight"].T)
    assert "model.diffusion_model.label_emb.0.0.weight" in sd
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in sd


def test_folder_to_ckpt_writes_a_zip_checkpoint(tiny, tmp_path):
    dst = convert.folder_to_single_file(tiny["sd1"], tmp_path / "m.ckpt")
    with zipfile.ZipFile(dst) as z:
        assert any(n.endswith("data.pkl") for n in z.namelist())


def test_folder_to_single_file_casts_to_fp16(tiny, tmp_path):
    sd = load_file(convert.folder_to_single_file(tiny["sd1"], tmp_path / "h.safetensors",
                                                 dtype=torch.float16))
    kinds = {k: v.dtype for k, v in sd.items()}
    assert kinds.pop("cond_stage_model.transformer.text_model.embeddings.position_ids") == torch.int64
    assert set(kinds.values()) == {torch.float16}


def test_to_fp16_is_within_fp16_rounding(sd1_file, tmp_path):
    before = tree_hash(sd1_file)
    half = load_file(convert.to_fp16(sd1_file, tmp_path / "half.safetensors"))
    full = load_file(sd1_file)
    assert half.keys() == full.keys()
    for k, v in full.items():
        if v.is_floating_point():
            assert half[k].dtype == torch.float16
            torch.testing.assert_close(half[k].float(), v, rtol=2**-10, atol=2**-14)
        else:
            assert torch.equal(half[k], v)
    assert tree_hash(sd1_file) == before


def test_strip_ema_keeps_ema_or_model_weights(tiny, tmp_path):
    ema_folder = save_tiny(tmp_path / "ema", "sd1", seed=1)
    both = convert.folder_to_single_file(tiny["sd1"], tmp_path / "both.safetensors",
                                         include_ema=ema_folder)
    full = load_file(both)
    assert "model_ema.diffusion_modelinput_blocks00weight" in full
    assert "model_ema.decay" in full and "model_ema.num_updates" in full
    ema_only = load_file(convert.strip_ema(both, tmp_path / "ema.safetensors"))
    model_only = load_file(convert.strip_ema(both, tmp_path / "model.safetensors", keep="model"))
    ema_ref = load_file(convert.folder_to_single_file(ema_folder, tmp_path / "ref.safetensors"))
    assert not any(k.startswith("model_ema.") for k in (*ema_only, *model_only))
    assert ema_only.keys() == model_only.keys() == ema_ref.keys()
    for k, v in ema_only.items():
        other = ema_ref[k] if k.startswith("model.") else full[k]
        assert torch.equal(v, other), k
        assert torch.equal(model_only[k], full[k]), k
    with pytest.raises(IncompatibleModelError, match="no EMA"):
        convert.strip_ema(tmp_path / "ema.safetensors", tmp_path / "again.safetensors")


def test_strip_ema_refuses_ema_tensors_without_twin(tmp_path):
    src = tmp_path / "odd.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.ones(2),
               "model_ema.diffusion_modelout2weight": torch.ones(2)}, str(src))
    with pytest.raises(IncompatibleModelError, match="no model twin"):
        convert.strip_ema(src, tmp_path / "o.safetensors")
    out = load_file(convert.strip_ema(src, tmp_path / "o.safetensors", keep="model"))
    assert list(out) == ["model.diffusion_model.out.0.weight"]


def test_existing_destination_is_refused_unless_overwrite(sd1_file, tmp_path):
    dst = tmp_path / "taken.safetensors"
    dst.write_bytes(b"keep me")
    with pytest.raises(LabkitError, match="already exists"):
        convert.to_fp16(sd1_file, dst)
    assert dst.read_bytes() == b"keep me"
    convert.to_fp16(sd1_file, dst, overwrite=True)
    assert "model.diffusion_model.out.2.weight" in load_file(dst)


def test_destination_that_is_or_holds_a_source_is_refused_even_with_overwrite(sd1_file, tiny, tmp_path):
    before = tree_hash(sd1_file)
    folder_before = tree_hash(tiny["sd1"])
    with pytest.raises(LabkitError, match="never overwrites its sources"):
        convert.to_fp16(sd1_file, sd1_file, overwrite=True)
    with pytest.raises(LabkitError, match="never overwrites its sources"):
        convert.folder_to_single_file(tiny["sd1"], tiny["sd1"] / "x.safetensors")
    for dst in (sd1_file.parent, tiny["sd1"]):  # would hold the source or be the config folder
        with pytest.raises(LabkitError, match="never overwrites its sources"):
            convert.single_file_to_folder(sd1_file, dst, config_folder=tiny["sd1"],
                                          overwrite=True)
    assert tree_hash(sd1_file) == before and tree_hash(tiny["sd1"]) == folder_before


def test_destination_of_the_other_kind_is_refused(sd1_file, tmp_path):
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(LabkitError, match="is a folder"):
        convert.to_fp16(sd1_file, tmp_path / "d.safetensors", overwrite=True)
    assert (tmp_path / "d.safetensors").is_dir()


def test_missing_source_is_refused(tmp_path):
    with pytest.raises(NotAModelError, match="does not exist"):
        convert.to_fp16(tmp_path / "nope.safetensors", tmp_path / "out.safetensors")
    with pytest.raises(NotAModelError, match="does not exist"):
        convert.folder_to_single_file(tmp_path / "nope", tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_wrong_kinds_are_refused(tiny, tmp_path):
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(8, 4)},
              str(lora))
    with pytest.raises(IncompatibleModelError, match="not a diffusers folder"):
        convert.folder_to_single_file(lora, tmp_path / "out.safetensors")
    with pytest.raises(IncompatibleModelError, match="could not be loaded"):
        convert.single_file_to_folder(lora, tmp_path / "out", config_folder=tiny["sd1"])
    with pytest.raises(IncompatibleModelError, match="is a folder"):
        convert.to_fp16(tiny["sd1"], tmp_path / "out.safetensors")
    with pytest.raises(IncompatibleModelError, match="no model_index.json"):
        convert.folder_to_single_file(tiny["sd1"] / "unet", tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors"]


def test_broken_sources_give_lab_errors_and_write_nothing(sd1_file, tmp_path):
    lfs = tmp_path / "lfs.safetensors"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(NotAModelError, match="Git LFS"):
        convert.to_fp16(lfs, tmp_path / "out.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(sd1_file.read_bytes()[:-100])
    with pytest.raises(CorruptFileError):
        convert.to_fp16(cut, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.safetensors", "lfs.safetensors"]


# Imports once, then forks one converter per line of stdin (the test kills the child), so
# each kill point costs a fork, not a fresh interpreter. The parent never runs torch ops.
KILL_SCRIPT = """
import os, sys
from labkit.convert import forms as convert
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        convert.to_fp16(sys.argv[1], line.strip(), overwrite=True)
        os._exit(0)
    print(pid, flush=True)
    sys.stdin.readline()  # reap only when told: until then the pid cannot be reused
    print(os.waitpid(pid, 0)[1], flush=True)
"""


def test_killed_conversion_leaves_source_intact_and_destination_absent_or_complete(tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    gen = torch.Generator().manual_seed(0)
    src = tmp_path / "big.safetensors"
    save_file({f"model.diffusion_model.w{i}": torch.randn(1024, 1024, generator=gen)
               for i in range(12)}, str(src))  # 48 MiB
    source_hash = tree_hash(src)
    expected = {k: v.half() for k, v in load_file(src).items()}
    old = {"old": torch.zeros(3)}
    repo = Path(__file__).resolve().parents[2]
    zygote = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src)], cwd=repo,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(line: str) -> str:
        zygote.stdin.write(line + "\n")
        zygote.stdin.flush()
        return zygote.stdout.readline().strip()

    try:
        # One full run gives the span in which to pick kill points.
        send(str(tmp_path / "full.safetensors"))
        t0 = time.monotonic()
        assert send("reap") == "0"
        span = time.monotonic() - t0
        rng = random.Random(1234)
        for run in range(6):
            dst = tmp_path / f"out{run}.safetensors"
            replacing = run % 2 == 1
            if replacing:
                save_file(old, str(dst))
            pid = int(send(str(dst)))
            time.sleep(rng.uniform(0, span))
            os.kill(pid, signal.SIGKILL)  # our own child, still unreaped even if it finished
            send("reap")
            assert tree_hash(src) == source_hash
            if dst.exists():
                got = load_file(dst)
                if replacing and got.keys() == old.keys():
                    continue
                assert got.keys() == expected.keys()
                assert all(torch.equal(got[k], v) for k, v in expected.items())
            else:
                assert not replacing, "an existing destination vanished"
            # Temporary files a kill leaves behind are hidden, never under a model's name.
            visible = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
            assert visible <= {src.name, "full.safetensors"} | {f"out{i}.safetensors"
                                                                 for i in range(run + 1)}
    finally:
        zygote.stdin.close()
        zygote.wait()


def test_ckpt_to_safetensors_keeps_tensors_and_scalar_metadata(tmp_path):
    src = tmp_path / "train.ckpt"
    weights = {"model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3),
               "model.diffusion_model.out.2.bias": torch.randn(4),
               "cond_stage_model.transformer.text_model.embeddings.position_ids":
                   torch.arange(77)[None]}
    torch.save({"state_dict": {**weights, "not_a_tensor": 3}, "global_step": 42, "epoch": 1}, src)
    before = tree_hash(src)
    dst = convert.ckpt_to_safetensors(src, tmp_path / "train.safetensors")
    got = load_file(dst)
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert got.keys() == weights.keys()
    assert all(torch.equal(got[k], v) for k, v in weights.items())
    assert meta["global_step"] == "42" and meta["epoch"] == "1"
    assert tree_hash(src) == before and leftovers(tmp_path) == []
    with pytest.raises(IncompatibleModelError, match="not a pickle checkpoint"):
        convert.ckpt_to_safetensors(dst, tmp_path / "again.safetensors")


def test_ckpt_from_a_folder_converts_back_exactly(tiny, tmp_path):
    ckpt = convert.folder_to_single_file(tiny["sd1"], tmp_path / "m.ckpt", include_ema=True)
    single = load_file(convert.folder_to_single_file(tiny["sd1"], tmp_path / "m.safetensors"))
    stripped = load_file(convert.ckpt_to_safetensors(ckpt, tmp_path / "s.safetensors",
                                                     strip_ema=True))
    assert stripped.keys() == single.keys()
    assert all(torch.equal(stripped[k], v) for k, v in single.items())
    before = tree_hash(ckpt)
    back = convert.single_file_to_folder(ckpt, tmp_path / "back", config_folder=tiny["sd1"])
    assert_same_components(tiny["sd1"], back)
    assert tree_hash(ckpt) == before and leftovers(tmp_path) == []


def test_unsafe_pickle_is_refused_and_nothing_written(tiny, tmp_path):
    from labkit.errors import UnsafeFileError

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")  # never run: the scan refuses it
    with pytest.raises(UnsafeFileError):
        convert.ckpt_to_safetensors(evil, tmp_path / "out.safetensors")
    with pytest.raises(UnsafeFileError):
        convert.single_file_to_folder(evil, tmp_path / "out", config_folder=tiny["sd1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ckpt"]


def test_unwritable_destination_gives_a_lab_error(sd1_file, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LabkitError, match="could not be written"):
        convert.to_fp16(sd1_file, tmp_path / "file" / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
