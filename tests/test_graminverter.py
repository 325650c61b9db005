"""The graminverter enrollment method end to end: bundle export -> enroll a real portrait -> render.

The networks are tiny and untrained (made here), so these tests check plumbing and geometry, not
likeness: the bundle round trip and every kind of bad bundle, the matte's silhouette bound on a
known case, the CLI's success and its clear failure without weights.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.avatar import Avatar
from gramcast.avatar.graminverter import (BUNDLE_KIND, _matte_alpha, load_inverter, save_inverter)
from gramcast.errors import CheckpointError, GramcastError

SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"


@pytest.fixture(scope="module")
def networks():
    from gramcast.model import GRAMModel
    from gramcast.model.detail import DetailConfig, DetailReconstructor
    from gramcast.model.encoder import EncoderConfig, GRAMEncoder

    torch.manual_seed(0)
    gen = GRAMModel.from_config("tiny").eval()
    w_avg = gen.mapping(torch.randn(256, gen.config.z_dim), update_w_avg=False).mean(0)
    enc = GRAMEncoder(EncoderConfig.for_model(gen.config, "tiny"), w_avg=w_avg).eval()
    det = DetailReconstructor(DetailConfig.for_model(gen.config, "tiny")).eval()
    with torch.no_grad():  # a reconstructor that adds something, so the detail path is exercised
        for p in det.parameters():
            if p.abs().sum() == 0 and p.ndim > 1:
                p.normal_(0, 0.02)
    return gen, enc, det


@pytest.fixture(scope="module")
def bundle(networks, tmp_path_factory):
    """Written through the CLI, from the three separate checkpoints the training stages export."""
    from gramcast.training.cli import main

    gen, enc, det = networks
    d = tmp_path_factory.mktemp("runs")
    gen.save(d / "generator_tuned.safetensors")
    enc.save(d / "encoder.safetensors")
    det.save(d / "detail.safetensors")
    out = d / "graminverter.safetensors"
    assert main(["export-inverter", "--generator", str(d / "generator_tuned.safetensors"),
                 "--encoder", str(d / "encoder.safetensors"), "--detail", str(d / "detail.safetensors"),
                 "-o", str(out)]) == 0
    return out


def test_bundle_round_trip_keeps_every_weight(networks, bundle):
    inv = load_inverter(bundle, device="cpu")
    for original, loaded in zip(networks, (inv.generator, inv.encoder, inv.detail)):
        a, b = original.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k].cpu(), b[k]), k
    assert "created" in inv.meta


def _rewrite_header(src: Path, dst: Path, **changes) -> None:
    """Copy a safetensors file with some header metadata replaced (the format's 8-byte length + JSON)."""
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def test_bad_bundles_are_refused_with_what_to_do(networks, bundle, tmp_path):
    cases = {}
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    cases[cut] = "truncated"
    foreign = tmp_path / "generator.safetensors"
    networks[0].save(foreign)
    cases[foreign] = "not a GRAMInverter bundle"
    future = tmp_path / "future.safetensors"
    _rewrite_header(bundle, future, format_version="99")
    cases[future] = "upgrade gramcast"
    tampered = tmp_path / "tampered.safetensors"
    raw = bytearray(bundle.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x7f"  # a weight's bytes changed behind the header's back
    tampered.write_bytes(bytes(raw))
    cases[tampered] = "content hash"
    cases[tmp_path / "missing.safetensors"] = "no such inverter bundle"
    for path, words in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_inverter(path, device="cpu")
        assert words in str(err.value), (path.name, str(err.value))
    with pytest.raises(CheckpointError):
        _rewrite_header(bundle, tmp_path / "k.safetensors", format=BUNDLE_KIND + "-x")
        load_inverter(tmp_path / "k.safetensors", device="cpu")


def test_matte_bounds_texels_by_the_input_silhouette():
    """Flat layers at z = 0 seen frontally: pixel column u = s/2 + f·x, so a matte of the image's
    left half keeps exactly the texels with x < 0 (known answer from the pinhole model)."""
    from gramcast.avatar.bake import grid_xy

    t, s = 32, 256
    avatar = Avatar(torch.zeros(2, 16, 16), torch.ones(2, 4, t, t), extent=0.1)
    matte = np.zeros((s, s), np.float32)
    matte[:, : s // 2] = 1.0
    keep = _matte_alpha(avatar, matte, (0.0, 0.0), 0.5)
    x = grid_xy(t, 0.1)[..., 0]
    expected = (x < 0).float()
    assert torch.equal(keep[0, 0], expected) and torch.equal(keep[1, 0], expected)


def test_enroll_a_real_portrait_and_render_novel_views(bundle):
    import gramcast
    from gramcast.avatar import Renderer

    avatar = gramcast.enroll(SAMPLE, method="graminverter", weights=bundle, device="cpu")
    assert avatar.meta["method"] == "graminverter"
    assert avatar.textures[-1, 3].abs().max() == 0  # the background manifold is dropped
    assert avatar.textures[:, 3].sum() > 0          # and the person is not
    yaw, pitch = avatar.meta["input_pose"]["yaw"], avatar.meta["input_pose"]["pitch"]
    assert abs(yaw) < 0.5 and abs(pitch) < 0.5
    # the inversion fits the aligned crop at the input pose: its render there is the crop, pixel for pixel
    assert avatar.meta["crop_from_render"] == {"size": 512, "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}
    renderer = Renderer(avatar, device="cpu")
    for pose in ((0.0, 0.0), (-0.4, 0.0), (0.4, 0.1)):
        rgb, alpha = renderer.render_rgba(pose, 64)
        assert rgb.shape == (64, 64, 3) and alpha.shape == (64, 64)
        assert np.isfinite(alpha).all() and alpha.max() > 0


def test_cli_enrolls_with_weights_and_fails_clearly_without(bundle, tmp_path, monkeypatch, capsys):
    from gramcast.cli import main

    out = tmp_path / "me.gca"
    assert main(["enroll", str(SAMPLE), "-o", str(out), "--method", "graminverter", "--weights", str(bundle),
                 "--device", "cpu", "--refine-steps", "2"]) == 0
    assert main(["enroll", str(SAMPLE), "-o", str(tmp_path / "m.gca"), "--refine-steps", "2"]) != 0  # mesh: no
    assert Avatar.load(out).meta["method"] == "graminverter"
    monkeypatch.delenv("GRAMCAST_INVERTER", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    capsys.readouterr()
    missing = tmp_path / "nothing.gca"
    code = main(["enroll", str(SAMPLE), "-o", str(missing), "--method", "graminverter"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and not missing.exists()
    assert "needs trained weights" in err and "gramcast-train" in err and len(err.splitlines()) == 1


def test_save_inverter_refuses_unwritable_places(networks, tmp_path):
    with pytest.raises(GramcastError):
        save_inverter(tmp_path / "no" / "such" / "dir" / "b.safetensors", *networks)


def test_server_enrolls_selfies_with_the_learned_method_or_refuses_to_start(bundle, tmp_path, monkeypatch, capsys):
    from gramcast.cli import main
    from gramcast.server.cli import selfie_enroller

    avatar = selfie_enroller("graminverter", bundle)(SAMPLE.read_bytes())  # what a selfie over signaling gets
    assert avatar.meta["method"] == "graminverter"
    monkeypatch.delenv("GRAMCAST_INVERTER", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    gca = tmp_path / "a.gca"
    avatar.save(gca)
    capsys.readouterr()
    code = main(["serve", "--avatar", str(gca), "--port", "0", "--enroll-method", "graminverter"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "needs trained weights" in err and len(err.splitlines()) == 1


def test_optional_refinement_lowers_the_input_view_error(bundle):
    from gramcast.avatar.graminverter import _to_model_input
    from gramcast.face import detect_and_align
    from gramcast.images import load_image

    inv = load_inverter(bundle, device="cpu")
    aligned = detect_and_align(load_image(SAMPLE), size=256)
    image = _to_model_input(aligned.crop, inv.resolution)
    pose = torch.tensor([[aligned.pose.yaw, aligned.pose.pitch]])
    params = {k: v.clone() for k, v in inv.generator.state_dict().items()}
    with torch.no_grad():
        ws = inv.encoder(image)
        before = (inv.generator.render(ws, pose).rgb - image).pow(2).mean()
    refined = inv.refine(ws, image, pose, None, steps=8, lr=0.05)
    with torch.no_grad():
        after = (inv.generator.render(refined, pose).rgb - image).pow(2).mean()
    assert after < 0.95 * before, (float(before), float(after))
    assert all(torch.equal(v, inv.generator.state_dict()[k]) for k, v in params.items())  # generator untouched
    assert all(p.requires_grad for p in inv.generator.parameters())                    # and left as found


def test_evaluate_compares_both_methods_and_applies_the_shipping_rule(bundle, tmp_path):
    """``gramcast evaluate --methods mesh,graminverter`` on real photos: both methods' rows, and the
    shipping rule's verdict in the JSON and the table. An untrained inverter draws nobody's face, so it
    must not ship."""
    import shutil

    from gramcast.cli import main

    faces = Path(__file__).resolve().parent / "data" / "faces"
    data = tmp_path / "portraits"
    (data / "person001").mkdir(parents=True)
    shutil.copy(faces / "london_neutral_001_03.jpg", data / "person001" / "a.jpg")
    shutil.copy(faces / "london_smiling_001_08.jpg", data / "person001" / "b.jpg")
    out = tmp_path / "out"
    assert main(["evaluate", str(data), "--methods", "mesh,graminverter", "--weights", str(bundle),
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"mesh", "graminverter"}
    verdict = results["verdict"]
    assert verdict["candidate"] == "graminverter" and verdict["ships"] is False
    assert [c["check"] for c in verdict["checks"]] == ["id_xpose", "id_nv", "psnr_mv", "yaw_slope"]
    assert "Shipping rule, graminverter against mesh: does not ship" in (out / "results.md").read_text()
