"""Tri-plane sampling, detail-map sampling and the radiance decoder m: features at x -> (colour, opacity),
view-independent."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor, extent: float) -> torch.Tensor:
    """Mean of the features bilinearly sampled from the xy, xz and yz planes (EG3D's aggregation).

    planes: (B, 3, C, R, R) in the order xy, xz, yz; plane k's grid x axis is the first named world
    axis, its y axis the second. points: (B, M, 3) in world units; the planes cover the scene box
    [-extent, extent]^3, so coordinates are divided by ``extent`` to reach grid_sample's [-1, 1]
    (align_corners=False: the box edges are the outer texel edges). Returns (B, M, C). Points outside
    the box get zero features (and then the decoder's constant output).
    """
    b, _, c, r, _ = planes.shape
    p = points / extent
    coords = torch.stack([p[..., [0, 1]], p[..., [0, 2]], p[..., [1, 2]]], dim=1)  # (B, 3, M, 2)
    feats = F.grid_sample(planes.reshape(b * 3, c, r, r), coords.reshape(b * 3, 1, -1, 2),
                          mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*3, C, 1, M)
    return feats.reshape(b, 3, c, -1).mean(1).permute(0, 2, 1)


def sample_detail_maps(detail: torch.Tensor, points: torch.Tensor, extent: float) -> torch.Tensor:
    """Bilinear lookups of per-manifold detail maps (paper Sec. 3.3, f_hr) at each manifold's points.

    detail: ``(B, L, C, S, S)``, one feature map per manifold over the orthographic (x, y) square
    ``[-extent, extent]²`` of the avatar cache (row 0 is y = +extent, column 0 x = -extent; grid nodes
    at the square's edges, i.e. ``align_corners=True``, as every cached grid). points: ``(B, L, K, >=2)``
    world coordinates, ``points[:, l]`` on manifold l (only x and y are read: a manifold is a height
    field over the square, so (x, y) names its point). Returns ``(B, L, K, C)``. Outside the square the
    features fade to zero within one texel (zero padding): no detail where the maps say nothing.
    """
    b, nl, c, s, _ = detail.shape
    k = points.shape[2]
    xy = points[..., :2]
    grid = torch.stack([xy[..., 0] / extent, -xy[..., 1] / extent], -1).reshape(b * nl, k, 1, 2)
    # sampled in the points' precision: bf16 coordinates would be off by up to a texel
    feats = F.grid_sample(detail.reshape(b * nl, c, s, s).to(grid.dtype), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=True)                    # (B*L, C, K, 1)
    return feats.reshape(b, nl, c, k).transpose(-1, -2)


class RadianceDecoder(nn.Module):
    """m: features (..., C) -> rgb (..., 3) in [-1, 1] and alpha (...) in [0, 1]; view-independent.

    A small softplus MLP as in EG3D; sigmoids bound the outputs (rgb is rescaled to [-1, 1]).
    """

    def __init__(self, in_channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                                 nn.Softplus(), nn.Linear(hidden, 4))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(feats)
        rgb = torch.sigmoid(out[..., :3]) * 2.0 - 1.0
        alpha = torch.sigmoid(out[..., 3])
        return rgb, alpha
