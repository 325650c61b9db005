"""The manifold predictor: a latent-independent scalar field whose iso-surfaces are the manifolds."""
from __future__ import annotations

import torch
from torch import nn


class ManifoldPredictor(nn.Module):
    """s(x) = |x - c| + MLP(x): points (..., 3) -> scalars (...).

    The MLP's last layer starts at zero, so the manifolds start as concentric spherical shells
    around ``center`` (as GRAM initialises them) and training bends them towards the face.
    """

    def __init__(self, width: int = 64, depth: int = 3, center=(0.0, 0.0, -0.5), input_scale: float = 4.0):
        super().__init__()
        layers, cin = [], 3
        for _ in range(depth):
            layers += [nn.Linear(cin, width), nn.Softplus(beta=10.0)]
            cin = width
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(cin, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        # The head spans about +-0.15: scale inputs to a range the MLP's initialisation suits.
        self.input_scale = input_scale

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        radial = (points - self.center.to(points.dtype)).norm(dim=-1)
        return radial + self.out(self.mlp(points * self.input_scale)).squeeze(-1)
