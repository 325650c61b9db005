"""Inverter bundles whose parts do not fit, damaged headers, and how a bundle is found.

Every case here once got through: a bundle of parts made for different generators was written,
loaded, and failed mid-enrollment with a shape traceback; -o over an input destroyed it; a set but
wrong ``$GRAMCAST_INVERTER`` silently fell back to another bundle. Tiny untrained networks only.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gramcast.avatar.graminverter import (BUNDLE_NAME, InverterConfig, enroll_graminverter, find_inverter,
                                          load_inverter, save_inverter)
from gramcast.errors import CheckpointError


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A fitting generator / encoder / detail, each as the file its training stage exports, plus
    misfits (each wrong in one way) and a good bundle."""
    from gramcast.model import GRAMModel
    from gramcast.model.checkpoint import cpu_state, model_id
    from gramcast.model.detail import DetailConfig, DetailReconstructor
    from gramcast.model.encoder import EncoderConfig, GRAMEncoder

    torch.manual_seed(0)
    gen = GRAMModel.from_config("tiny").eval()
    gc = gen.config
    d = tmp_path_factory.mktemp("parts")
    gen.save(d / "generator.safetensors")
    gen_id = model_id(cpu_state(gen))
    GRAMEncoder(EncoderConfig.for_model(gc, "tiny")).save(d / "encoder.safetensors", generator_id=gen_id)
    DetailReconstructor(DetailConfig.for_model(gc, "tiny")).save(d / "detail.safetensors")
    misfits = {
        "encoder": {"w_dim": dict(w_dim=gc.w_dim // 2), "input_resolution": dict(input_resolution=2 * gc.resolution)},
        "detail": {"num_manifolds": dict(num_manifolds=gc.num_manifolds + 4),
                   "plane_channels": dict(plane_channels=gc.plane_channels // 2),
                   "image_resolution": dict(image_resolution=2 * gc.resolution)},
    }
    files = {}
    for field, kw in misfits["encoder"].items():
        files["encoder", field] = d / f"encoder_{field}.safetensors"
        GRAMEncoder(EncoderConfig.for_model(gc, "tiny", **kw)).save(files["encoder", field])
    for field, kw in misfits["detail"].items():
        files["detail", field] = d / f"detail_{field}.safetensors"
        DetailReconstructor(DetailConfig.for_model(gc, "tiny", **kw)).save(files["detail", field])
    bundle = d / "good" / BUNDLE_NAME
    bundle.parent.mkdir()
    enc = GRAMEncoder.load(d / "encoder.safetensors", "cpu")
    det = DetailReconstructor.load(d / "detail.safetensors", "cpu")
    save_inverter(bundle, gen, enc, det, {"created": "now"})
    return SimpleNamespace(dir=d, gen=gen, gen_id=gen_id, enc=enc, det=det, misfits=files, bundle=bundle)


def _export(p, tmp_path, capsys, out=None, **paths):
    from gramcast.training.cli import main

    args = {"generator": p.dir / "generator.safetensors", "encoder": p.dir / "encoder.safetensors",
            "detail": p.dir / "detail.safetensors", **paths}
    out = out or tmp_path / "b.safetensors"
    capsys.readouterr()
    code = main(["export-inverter", *[x for k, v in args.items() for x in (f"--{k}", str(v))], "-o", str(out)])
    return code, capsys.readouterr().err.strip(), out


def test_export_refuses_parts_that_do_not_fit_naming_part_and_mismatch(parts, tmp_path, capsys):
    for (part, field), path in parts.misfits.items():
        code, err, out = _export(parts, tmp_path, capsys, **{part: path})
        assert code == 2 and not out.exists(), (part, field)
        assert len(err.splitlines()) == 1 and f"--{part} {path}" in err, err
        assert "Traceback" not in err


def test_load_refuses_a_bundle_whose_parts_do_not_fit(parts, tmp_path):
    from gramcast.model.detail import DetailReconstructor
    from gramcast.model.encoder import GRAMEncoder

    for (part, field), path in parts.misfits.items():
        nets = {"encoder": parts.enc, "detail": parts.det}
        nets[part] = (GRAMEncoder if part == "encoder" else DetailReconstructor).load(path, "cpu")
        bundle = tmp_path / f"{part}_{field}.safetensors"
        save_inverter(bundle, parts.gen, nets["encoder"], nets["detail"])  # the writer is not the gate
        with pytest.raises(CheckpointError) as err:
            load_inverter(bundle, device="cpu")
        assert str(bundle) in str(err.value) and f"its {part} network" in str(err.value), str(err.value)


def test_export_refuses_an_encoder_of_another_generator_when_the_run_record_says_so(parts, tmp_path, capsys):
    import shutil

    from gramcast.model.encoder import GRAMEncoder

    tune = tmp_path / "tune"
    tune.mkdir()
    shutil.copy(parts.dir / "generator.safetensors", tune / "generator_tuned.safetensors")
    other = tmp_path / "encoder.safetensors"
    GRAMEncoder(parts.enc.config).save(other, generator_id="0123456789abcdef")
    # the tune run started from the generator the encoder names: a legitimate tuned generator
    (tune / "config.json").write_text(json.dumps({"stage": "tune", "generator_id": "0123456789abcdef"}))
    code, err, out = _export(parts, tmp_path, capsys, generator=tune / "generator_tuned.safetensors", encoder=other)
    assert code == 0 and out.is_file(), err
    # ... from another one: surely the wrong encoder
    (tune / "config.json").write_text(json.dumps({"stage": "tune", "generator_id": "fedcba9876543210"}))
    code, err, out = _export(parts, tmp_path, capsys, out=tmp_path / "c.safetensors",
                             generator=tune / "generator_tuned.safetensors", encoder=other)
    assert code == 2 and not out.exists() and "0123456789abcdef" in err and "fedcba9876543210" in err, err


def test_export_never_writes_over_an_input(parts, tmp_path, capsys):
    import shutil

    for flag, name in (("generator", "generator.safetensors"), ("encoder", "encoder.safetensors"),
                       ("detail", "detail.safetensors")):
        copy = tmp_path / name
        shutil.copy(parts.dir / name, copy)
        before = copy.read_bytes()
        code, err, _ = _export(parts, tmp_path, capsys, out=tmp_path / "." / name, **{flag: copy})
        assert code == 2 and f"--{flag}" in err and copy.read_bytes() == before, err


def test_export_names_the_checkpoint_for_a_run_state_or_a_run_folder(parts, tmp_path, capsys):
    run = tmp_path / "enc"
    run.mkdir()
    torch.save({"step": 1}, run / "state.pt")
    (run / "encoder.safetensors").write_bytes((parts.dir / "encoder.safetensors").read_bytes())
    for given in (run / "state.pt", run):
        code, err, out = _export(parts, tmp_path, capsys, encoder=given)
        assert code == 2 and not out.exists(), err
        assert f"pass {run / 'encoder.safetensors'}" in err and "truncated" not in err, err


def _rewrite_meta(src: Path, dst: Path, drop: str | None = None, **changes) -> None:
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"].update(changes)
    header["__metadata__"].pop(drop, None)
    text = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def test_damaged_headers_are_checkpoint_errors(parts, tmp_path):
    cases = {"meta_text": ({"meta": "{not json"}, None, "'meta'"),
             "meta_list": ({"meta": "[1, 2]"}, None, "'meta'"),
             "no_id": ({}, "generator_id", "no generator_id")}
    for name, (changes, drop, words) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        _rewrite_meta(parts.bundle, path, drop, **changes)
        with pytest.raises(CheckpointError) as err:
            load_inverter(path, device="cpu")
        assert str(path) in str(err.value) and words in str(err.value), str(err.value)


def test_a_set_inverter_variable_is_used_or_an_error(parts, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "gramcast").mkdir(parents=True)
    (cache / "gramcast" / BUNDLE_NAME).write_bytes(parts.bundle.read_bytes())  # another installed bundle
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for target in (tmp_path / "missing.safetensors", tmp_path / "empty-folder"):
        if target.suffix == "":
            target.mkdir()
        monkeypatch.setenv("GRAMCAST_INVERTER", str(target))
        with pytest.raises(CheckpointError) as err:
            find_inverter()
        assert f"$GRAMCAST_INVERTER={target}" in str(err.value)
    monkeypatch.setenv("GRAMCAST_INVERTER", str(parts.bundle.parent))
    assert find_inverter() == parts.bundle


def test_a_folder_as_weights_means_the_bundle_in_it(parts, tmp_path):
    assert find_inverter(parts.bundle.parent) == parts.bundle
    with pytest.raises(CheckpointError) as err:
        find_inverter(tmp_path)
    assert "is a folder" in str(err.value) and str(tmp_path) in str(err.value)


def test_avatar_records_which_bundle_and_refinement_made_it(parts):
    inv = load_inverter(parts.bundle, device="cpu")
    r = inv.resolution
    aligned = SimpleNamespace(crop=np.full((r, r, 3), 128, np.uint8),
                              pose=SimpleNamespace(yaw=0.0, pitch=0.0, roll=0.0))
    avatar = enroll_graminverter(aligned, None, inv, InverterConfig(geometry_resolution=16, texture_resolution=16,
                                                                    refine_steps=1))
    record = avatar.meta["inverter"]
    assert record["bundle"] == {"generator_id": parts.gen_id, "encoder_id": inv.meta["bundle"]["encoder_id"],
                                "detail_id": inv.meta["bundle"]["detail_id"]}
    assert record["refine_steps"] == 1
    json.dumps(record, allow_nan=False)  # plain JSON, as avatar meta must be


def test_enroll_names_a_missing_bundle_before_it_looks_at_the_photo(tmp_path):
    """A photo without a face and weights that are not there: the weights are what the user must fix first
    (the face search and the matte had run before the bundle was opened)."""
    import gramcast
    from gramcast.errors import FaceNotFoundError, GramcastError

    with pytest.raises(GramcastError) as err:
        gramcast.enroll(np.full((300, 300, 3), 200, np.uint8), method="graminverter",
                        weights=tmp_path / "nope.safetensors", device="cpu")
    assert not isinstance(err.value, FaceNotFoundError) and "nope.safetensors" in str(err.value)


# ------------------------------------------------------------------------------ the encoder's generator, kept
def _header(path: Path) -> dict:
    raw = path.read_bytes()
    return json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]


def _tuned_run(parts, tmp_path, parent: str) -> Path:
    """A tune run's output: the generator (its weights are what it is) and the run record naming the
    generator it was tuned from."""
    import shutil

    tune = tmp_path / f"tune-{parent or 'gan'}"
    tune.mkdir()
    shutil.copy(parts.dir / "generator.safetensors", tune / "generator_tuned.safetensors")
    (tune / "config.json").write_text(json.dumps({"stage": "tune", "generator_id": parent}))
    return tune / "generator_tuned.safetensors"


def test_export_records_which_generator_the_encoder_was_trained_against(parts, tmp_path, capsys):
    """The encoder's file names its generator and the tune run names the tuned generator's parent: both go
    into the bundle's header, so the pair can be judged after export, and descriptions can say it."""
    from gramcast.model.encoder import GRAMEncoder

    enc = tmp_path / "encoder.safetensors"
    GRAMEncoder(parts.enc.config).save(enc, generator_id="0123456789abcdef")
    code, err, out = _export(parts, tmp_path, capsys, generator=_tuned_run(parts, tmp_path, "0123456789abcdef"),
                             encoder=enc)
    assert code == 0, err
    header = _header(out)
    assert header["encoder_trained_for"] == "0123456789abcdef"
    assert header["generator_tuned_from"] == "0123456789abcdef"
    assert load_inverter(out, device="cpu").meta["lineage"] == {"encoder_trained_for": "0123456789abcdef",
                                                               "generator_tuned_from": "0123456789abcdef"}
    # an encoder trained against the (untuned) generator itself: the GAN-run case
    code, err, out = _export(parts, tmp_path, capsys, out=tmp_path / "gan.safetensors")
    assert code == 0 and _header(out)["encoder_trained_for"] == parts.gen_id, err


def test_load_refuses_a_bundle_whose_encoder_was_trained_against_another_generator(parts, tmp_path, capsys):
    """An exported bundle whose recorded lineage no longer fits its generator (the header of a bundle
    assembled from another run's encoder): refused on load, in one line naming both generators and the
    way out, before the weights are read."""
    code, err, good = _export(parts, tmp_path, capsys, generator=_tuned_run(parts, tmp_path, parts.gen_id))
    assert code == 0, err
    cases = {
        # the encoder was made for another generator, of which this one is not a tuned version
        "other_parent": ({"encoder_trained_for": "0123456789abcdef", "generator_tuned_from": "fedcba9876543210"},
                         "fedcba9876543210"),
        # ... and this generator is a GAN run's own, tuned from nothing
        "untuned": ({"encoder_trained_for": "0123456789abcdef", "generator_tuned_from": ""}, "untuned"),
    }
    for name, (changes, says) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        _rewrite_meta(good, path, **changes)
        with pytest.raises(CheckpointError) as err:
            load_inverter(path, device="cpu")
        text = str(err.value)
        assert len(text.splitlines()) == 1 and str(path) in text, text
        assert "0123456789abcdef" in text and parts.gen_id in text and says in text, text
        assert "its encoder network" in text and "do not work together" in text and "export-inverter" in text
    # the encoder's own generator, or a generator tuned from it: fine
    for name, changes in {"own": {"encoder_trained_for": parts.gen_id, "generator_tuned_from": ""},
                          "tuned": {"encoder_trained_for": "0123456789abcdef",
                                    "generator_tuned_from": "0123456789abcdef"}}.items():
        _rewrite_meta(good, tmp_path / f"{name}.safetensors", **changes)
        assert load_inverter(tmp_path / f"{name}.safetensors", device="cpu").meta["bundle"]["generator_id"] == \
            parts.gen_id


def test_bundles_without_the_lineage_still_load(parts, tmp_path):
    """Bundles exported before the lineage was recorded, or from runs that did not record it, cannot be
    judged: they load as before."""
    assert "lineage" not in load_inverter(parts.bundle, device="cpu").meta
    # the encoder's generator recorded, the tuned generator's parent not (export accepted it with a note)
    path = tmp_path / "unverifiable.safetensors"
    _rewrite_meta(parts.bundle, path, encoder_trained_for="0123456789abcdef")
    assert load_inverter(path, device="cpu").meta["lineage"] == {"encoder_trained_for": "0123456789abcdef"}
