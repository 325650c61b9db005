"""The manifold predictor: a latent-independent scalar field whose iso-surfaces are the manifolds."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from gramcast import camera


class ManifoldPredictor(nn.Module):
    """s(x) = |x - c| + MLP(x): points ``(..., 3)`` -> scalars ``(...)``.

    GRAM initialises its field so that the iso-surfaces start as concentric spherical shells around a
    point behind the face. Here the shells are built in analytically (the distance-to-centre term) and
    the MLP learns the deviation from them. Its output layer starts near zero (std ``init_std``), so
    the shells are spheres to within ~1e-4 at initialisation while every hidden layer still receives
    a gradient from the first step (an exactly-zero output layer would block them).

    ``levels`` ``(N-1,)``: the scalar levels of the iso-surfaces; the N-th manifold is the analytic
    background plane ``z = background_z`` (not part of the field).
    """

    def __init__(self, levels: Sequence[float], width: int = 64, depth: int = 3, center=(0.0, 0.0, -0.5),
                 input_scale: float = 4.0, init_std: float = 1e-5, background_z: float = camera.BACKGROUND_Z):
        super().__init__()
        layers, cin = [], 3
        for _ in range(depth):
            # Smooth activation: the manifolds (and their normals) should be smooth surfaces.
            layers += [nn.Linear(cin, width), nn.Softplus(beta=10.0)]
            cin = width
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(cin, 1)
        nn.init.normal_(self.out.weight, std=init_std)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("center", torch.tensor(tuple(center), dtype=torch.float32))
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.float32))
        # The head spans about +-0.15 world units: scale inputs to the range nn.Linear's init suits.
        self.input_scale = input_scale
        self.background_z = float(background_z)

    @property
    def num_manifolds(self) -> int:
        """Iso-surfaces plus the background plane."""
        return self.levels.numel() + 1

    def forward(self, points: Tensor) -> Tensor:
        radial = (points - self.center.to(points.dtype)).norm(dim=-1)
        return radial + self.out(self.mlp(points * self.input_scale)).squeeze(-1)
