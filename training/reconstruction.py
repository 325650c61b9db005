"""The multi-level reconstruction loss of GRAMInverter (paper eq. 6), shared by every inversion stage.

    L_r = w_l2 · ||I - Î||² + w_lpips · LPIPS(I, Î) + w_id · (1 - <f_id(I), f_id(Î)>)

with the paper's weights (supp. A.4) 1e-2, 1 and 4e-2. The perceptual and identity networks are
pretrained weights that are never downloaded at run time (``gramcast.training.pretrained.fetch``
installs them once). Where one is missing, ``ReconstructionLoss.from_cache`` says so once and uses a
documented substitute, so training still runs on a bare machine:

* LPIPS missing -> ``LaplacianPyramidL1`` (L1 over a 4-level Laplacian pyramid: a structure-aware,
  weight-free stand-in; values are not comparable with LPIPS).
* identity network missing -> the identity term is dropped (weight 0).

Images are ``(B, 3, H, W)`` in [-1, 1]. An optional mask ``(B, 1, H, W)`` in [0, 1] restricts the
pixel terms (L2 is the masked mean; LPIPS and the pyramid see both images multiplied by the mask).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["ReconstructionWeights", "ReconstructionLoss", "LaplacianPyramidL1", "masked_mse"]


@dataclass
class ReconstructionWeights:
    l2: float = 1e-2
    lpips: float = 1.0
    identity: float = 4e-2


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error per sample ``(B,)``; with a mask, the mean over the masked pixels."""
    d = (pred - target).pow(2)
    if mask is None:
        return d.flatten(1).mean(1)
    m = mask.expand_as(d)
    return (d * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


class LaplacianPyramidL1(nn.Module):
    """Weight-free perceptual substitute: mean L1 between Laplacian pyramids ``(B,)`` (``levels`` bands
    plus the low-pass residual), each band weighted equally."""

    def __init__(self, levels: int = 4):
        super().__init__()
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
        self.register_buffer("kernel", (k[:, None] * k[None, :])[None, None].repeat(3, 1, 1, 1))
        self.levels = levels

    def _blur_down(self, x: Tensor) -> Tensor:
        x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.kernel.to(x.dtype), groups=3)
        return x[..., ::2, ::2]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        a, b = x, y
        for _ in range(self.levels):
            if min(a.shape[-2:]) < 6:
                break
            da, db = self._blur_down(a), self._blur_down(b)
            up_a = F.interpolate(da, size=a.shape[-2:], mode="bilinear", align_corners=False)
            up_b = F.interpolate(db, size=b.shape[-2:], mode="bilinear", align_corners=False)
            total = total + ((a - up_a) - (b - up_b)).abs().flatten(1).mean(1)
            a, b = da, db
        return total + (a - b).abs().flatten(1).mean(1)


class ReconstructionLoss(nn.Module):
    """L_r between renders and targets: ``forward(pred, target, mask=None) -> (loss (), parts)``.

    ``perceptual``: a module ``(x, y) -> (B,)`` (``LPIPS`` or a substitute); ``identity``: a module
    ``images (B, 3, H, W) in [-1, 1] -> (B, D)`` embeddings, differentiable (e.g. the torch ArcFace),
    or None to drop the term. ``parts`` holds each unweighted term's batch mean as a float, for logs.
    """

    def __init__(self, weights: ReconstructionWeights = ReconstructionWeights(),
                 perceptual: nn.Module | None = None, identity: nn.Module | Callable | None = None):
        super().__init__()
        self.weights = weights
        self.perceptual = perceptual if perceptual is not None else LaplacianPyramidL1()
        self.identity = identity
        for p in self.perceptual.parameters():
            p.requires_grad_(False)
        if isinstance(identity, nn.Module):
            for p in identity.parameters():
                p.requires_grad_(False)

    @classmethod
    def from_cache(cls, weights: ReconstructionWeights = ReconstructionWeights(), device="cpu",
                   lpips_path=None, identity_path=None) -> "ReconstructionLoss":
        """LPIPS and the identity network from the user cache, or their substitutes (logged once)."""
        from gramcast.training.pretrained.fetch import PretrainedWeightsError

        perceptual = identity = None
        try:
            from gramcast.training.pretrained.lpips import LPIPS

            perceptual = LPIPS(lpips_path)
        except PretrainedWeightsError as exc:
            log.warning("perceptual loss: LPIPS unavailable (%s); using the Laplacian-pyramid L1 substitute", exc)
        try:
            from gramcast.training.pretrained.arcface_torch import ArcFaceTorch

            identity = ArcFaceTorch.from_cache(identity_path)
        except (ImportError, PretrainedWeightsError) as exc:
            log.warning("identity loss dropped: no differentiable identity network (%s)", exc)
        return cls(weights, perceptual, identity).to(device)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        w = self.weights
        if mask is not None:
            pred_p, target_p = pred * mask, target * mask
        else:
            pred_p, target_p = pred, target
        l2 = masked_mse(pred, target, mask).mean()
        perc = self.perceptual(pred_p.float(), target_p.float()).mean()
        total = w.l2 * l2 + w.lpips * perc
        parts = {"l2": float(l2.detach()), "perceptual": float(perc.detach())}
        if self.identity is not None and w.identity > 0:
            a = F.normalize(self.identity(pred_p.float()), dim=-1)
            with torch.no_grad():
                b = F.normalize(self.identity(target_p.float()), dim=-1)
            ident = (1.0 - (a * b).sum(-1)).mean()
            total = total + w.identity * ident
            parts["identity"] = float(ident.detach())
        return total, parts
