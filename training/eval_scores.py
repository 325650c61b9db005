"""The scores ``gramcast evaluate`` gives an avatar against a photo (pure functions, and the learned ones).

SSIM and PSNR over a mask, the outline's intersection over union, how far a rendered head turns with the
camera (measured by the face tracker), and LPIPS and identity (``LearnedScores``), which need weights from
``gramcast.training.pretrained`` and are None without them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from gramcast.errors import GramcastError

__all__ = ["TURN_YAWS", "ssim", "masked_psnr", "outline_iou", "head_turn", "LearnedScores"]

#: camera yaws at which the face tracker measures how far the avatar's head turned (``yaw_slope``)
TURN_YAWS = (-0.4, 0.0, 0.4)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """SSIM (Wang et al. 2004; 11-tap Gaussian, sigma 1.5) of images ``(3, H, W)`` in [0, 1], averaged
    over ``mask`` ``(H, W)``. The map covers the windows that fit inside the image (5 px border dropped)."""
    a, b = a[None].double(), b[None].double()
    g = _gaussian().to(a)
    win = (g[:, None] * g[None, :])[None, None].expand(3, 1, -1, -1)
    blur = lambda x: F.conv2d(x, win, groups=3)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    m = m.mean(1)[0]
    if mask is not None:
        mask = mask[5:-5, 5:-5]
        return float(m[mask].mean()) if mask.any() else math.nan
    return float(m.mean())


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of two 8-bit-range images ``(H, W, C)`` over ``mask`` ``(H, W)``; nan for an empty mask."""
    err = (a.astype(np.float64) - b.astype(np.float64))[mask]
    return float(10 * math.log10(255.0 ** 2 / max(float((err ** 2).mean()), 1e-12))) if err.size else math.nan


def outline_iou(alpha: np.ndarray, matte: np.ndarray, rows: int, where: np.ndarray | None = None) -> float | None:
    """How well a render's outline matches a photo's: the intersection over union of where the render's
    opacity ``alpha`` and the photo's person ``matte`` (``(H, W)`` in [0, 1], on the same aligned crop) hold
    the majority, over the first ``rows`` rows (and only where ``where`` ``(H, W)`` bool is True: what both the
    photo and the render's frame cover). None where neither covers any of them."""
    a, m = alpha[:rows] > 0.5, matte[:rows] > 0.5
    if where is not None:
        a, m = a & where[:rows], m & where[:rows]
    union = int((a | m).sum())
    return float((a & m).sum() / union) if union else None


def head_turn(seen: dict) -> dict:
    """How far the avatar's head turns with the camera, measured from outside by the face tracker:
    ``seen`` maps camera yaws to the renders' ``AlignedFace`` there. ``yaw_slope``: least-squares slope of
    measured head yaw against camera yaw over ``TURN_YAWS`` (1: a head that turns as far as the camera; a
    photo on a card measures ~0); ``yaw_error``: mean |measured - camera| (radians). None where the tracker
    found the face in fewer than two of the renders."""
    from gramcast.training.evaluation import yaw_agreement

    pairs = [(y, float(seen[y].pose.yaw)) for y in TURN_YAWS if y in seen]
    return yaw_agreement(pairs) if len(pairs) >= 2 else {"yaw_slope": None, "yaw_error": None}


class LearnedScores:
    """LPIPS and identity, when their weights are installed (else None, once explained in ``notes``)."""

    def __init__(self):
        self.lpips = self.arcface = None
        self.notes: list[str] = []
        from gramcast.training.pretrained import LPIPS, ArcFaceEmbedder

        try:
            self.lpips = LPIPS().eval()
        except GramcastError as exc:
            self.notes.append(f"LPIPS skipped: {exc}")
        try:
            self.arcface = ArcFaceEmbedder()
        except GramcastError as exc:
            self.notes.append(f"identity skipped: {exc}")

    def lpips_distance(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """LPIPS of two 8-bit images ``(H, W, 3)``."""
        if self.lpips is None:
            return None
        t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
        with torch.no_grad():
            return float(self.lpips(t(a), t(b)).mean())

    def identity(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """Cosine similarity of two aligned crops (gramcast's 256² template)."""
        if self.arcface is None:
            return None
        ea, eb = self.arcface.embed_crops(np.stack([a, b]))
        return float((ea * eb).sum())
