"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

The same kind of random transform is applied to real and generated images before D sees them, in
both the D and the G step, so D cannot memorise the training crops while G still gets gradients
through the transform. Each policy draws its parameters per image from the step's generator, so a
resumed run augments exactly as an uninterrupted one.

Policies (comma-separated in ``GANConfig.augment``):

- ``color``: brightness shift in [-0.5, 0.5), saturation scale in [0, 2), contrast scale in [0.5, 1.5)
  (images in [-1, 1]).
- ``translation``: an integer shift of up to 1/8 of the side in x and y, zeros where nothing comes in.
- ``cutout``: one square of half the side, at a random centre, set to zero.
"""
from __future__ import annotations

import torch

from gramcast.device import host_to_device

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    """``"color,translation"`` -> ``["color", "translation"]``; unknown names are refused."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def _uniform(n: int, g: torch.Generator, device) -> torch.Tensor:
    return host_to_device(torch.rand(n, 1, 1, 1, generator=g), device)


def color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``(B, C, H, W)`` -> the same with random brightness, saturation and contrast per image."""
    n = x.shape[0]
    x = x + (_uniform(n, g, x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(n, g, x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, g, x.device) + 0.5) + mean


def shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Moves image i of ``x`` ``(B, C, H, W)`` by the integers ``dx[i]`` right and ``dy[i]`` down ``(B,)``;
    pixels that come in from outside are zero. Gradients flow to the pixels that stay."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1) - dy.view(b, 1, 1)   # source row per output row
    xs = torch.arange(w, device=x.device).view(1, 1, w) - dx.view(b, 1, 1)
    inside = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1).to(x.dtype)   # (B, 1, H, W)
    flat = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return x.flatten(2).gather(2, flat).view_as(x) * inside


def translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = host_to_device(torch.randint(-sy, sy + 1, (b,), generator=g), x.device)
    dx = host_to_device(torch.randint(-sx, sx + 1, (b,), generator=g), x.device)
    return shift(x, dx, dy)


def cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # The square's top-left corner; it may hang over the border, as in DiffAugment.
    top = host_to_device(torch.randint(0, h + (1 - ch % 2), (b,), generator=g), x.device) - ch // 2
    left = host_to_device(torch.randint(0, w + (1 - cw % 2), (b,), generator=g), x.device) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= top.view(b, 1, 1)) & (ys < (top + ch).view(b, 1, 1))
              & (xs >= left.view(b, 1, 1)) & (xs < (left + cw).view(b, 1, 1)))
    return x * (~inside).unsqueeze(1).to(x.dtype)


_APPLY = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: list[str], g: torch.Generator) -> torch.Tensor:
    """Applies the policies in order to a batch ``(B, C, H, W)``; no policy returns ``x`` itself."""
    for name in policy:
        x = _APPLY[name](x, g)
    return x


__all__ = ["POLICIES", "parse_policy", "diff_augment", "color", "translation", "cutout", "shift"]
