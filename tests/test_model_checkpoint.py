"""GRAM checkpoints: exact round trip, atomic save, and a clear CheckpointError for every bad file."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from gramcast.errors import CheckpointError, OutputPathError
from gramcast.model import GRAMConfig, GRAMModel
from gramcast.model.checkpoint import FORMAT_VERSION, KIND, model_id


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GRAMModel.from_config(GRAMConfig.preset("tiny")).eval()


@pytest.fixture()
def saved(tiny, tmp_path):
    path = tmp_path / "g.safetensors"
    tiny.save(path)
    return path


def header(config):
    return {"format": KIND, "format_version": str(FORMAT_VERSION), "config": json.dumps(config.to_dict())}


def test_save_load_renders_identically(tiny, saved):
    loaded = GRAMModel.load(saved, device="cpu")
    assert loaded.config == tiny.config and not loaded.training
    ws = tiny.sample_ws(2, seed=9)
    with torch.no_grad():
        assert torch.equal(tiny.render(ws, (0.1, 0.0)).rgb, loaded.render(ws, (0.1, 0.0)).rgb)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert not [p for p in saved.parent.iterdir() if p.name.endswith(".tmp")]


def test_non_default_config_round_trips(tmp_path):
    cfg = GRAMConfig.preset("tiny")
    cfg.num_manifolds, cfg.plane_resolution, cfg.sphere_center = 6, 16, (0.0, 0.01, -0.4)
    model = GRAMModel(cfg)
    model.save(tmp_path / "m.safetensors")
    assert GRAMModel.load(tmp_path / "m.safetensors", "cpu").config == cfg


def test_truncated_junk_and_missing_files(saved, tmp_path):
    data = saved.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        GRAMModel.load(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        GRAMModel.load(junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        GRAMModel.load(tmp_path / "missing.safetensors")


def test_foreign_and_wrong_version_files(tiny, saved, tmp_path):
    state = load_file(str(saved))
    save_file(state, str(tmp_path / "foreign.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="not a gramcast GRAM generator"):
        GRAMModel.load(tmp_path / "foreign.safetensors")
    save_file(state, str(tmp_path / "bare.safetensors"))          # no metadata at all
    with pytest.raises(CheckpointError, match="not a gramcast GRAM generator"):
        GRAMModel.load(tmp_path / "bare.safetensors")
    meta = header(tiny.config) | {"format_version": str(FORMAT_VERSION + 1)}
    save_file(state, str(tmp_path / "future.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="upgrade gramcast"):
        GRAMModel.load(tmp_path / "future.safetensors")
    meta["format_version"] = "0"
    save_file(state, str(tmp_path / "old.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="re-export"):
        GRAMModel.load(tmp_path / "old.safetensors")


def test_config_and_tensors_must_match(tiny, saved, tmp_path):
    state = load_file(str(saved))
    bad_cfg = header(tiny.config) | {"config": json.dumps({"resolutoin": 64})}
    save_file(state, str(tmp_path / "cfg.safetensors"), metadata=bad_cfg)
    with pytest.raises(CheckpointError, match="bad model configuration"):
        GRAMModel.load(tmp_path / "cfg.safetensors")
    short = dict(state)
    gone = sorted(short)[0]
    short.pop(gone)
    save_file(short, str(tmp_path / "short.safetensors"), metadata=header(tiny.config))
    with pytest.raises(CheckpointError, match=f"missing \\['{gone}'\\]"):
        GRAMModel.load(tmp_path / "short.safetensors")
    other = GRAMConfig.preset("tiny")
    other.plane_channels = 4                 # header says 4 channels, tensors have 8
    save_file(state, str(tmp_path / "shape.safetensors"), metadata=header(other))
    with pytest.raises(CheckpointError, match="wrong shape"):
        GRAMModel.load(tmp_path / "shape.safetensors")
    nan = dict(state)
    nan["decoder.net.0.weight"] = torch.full_like(nan["decoder.net.0.weight"], float("nan"))
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=header(tiny.config))
    with pytest.raises(CheckpointError, match="non-finite"):
        GRAMModel.load(tmp_path / "nan.safetensors")


def test_flipped_bits_in_the_weights_are_caught(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x10                         # a byte inside the last tensor's data
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash"):
        GRAMModel.load(bad)


def test_model_id_names_the_weights(tiny, saved):
    state = load_file(str(saved))
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        assert f.metadata()["model_id"] == model_id(state) == model_id(tiny.state_dict())
    state["decoder.net.0.bias"] = state["decoder.net.0.bias"] + 1
    assert model_id(state) != model_id(tiny.state_dict())


def test_interrupted_save_leaves_the_old_file(tiny, saved, monkeypatch):
    before = saved.read_bytes()
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny.save(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]
    with pytest.raises(OSError):
        tiny.save(saved.parent / "new.safetensors")       # no partial new file either
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]
    with pytest.raises(OutputPathError, match="does not exist"):
        tiny.save(saved.parent / "no-such-folder" / "g.safetensors")
