"""One-Euro filter (Casiez, Roussel & Vogel, CHI 2012): little jitter at rest, little lag when moving.

The cutoff frequency rises with the signal's speed: ``cutoff = min_cutoff + beta * |speed|``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OneEuroConfig", "OneEuroFilter"]


@dataclass(frozen=True)
class OneEuroConfig:
    """min_cutoff (Hz): smoothing at rest (lower = smoother). beta: how fast the cutoff follows speed
    (higher = less lag on fast turns). d_cutoff (Hz): smoothing of the speed estimate."""

    min_cutoff: float = 1.0
    beta: float = 0.3
    d_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters a vector signal; each component has its own adaptive cutoff."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            if self._x is not None and self._t is not None and t <= self._t:
                return self._x.copy()          # repeated or out-of-order timestamp: keep the output
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        c = self.config
        dx = (x - self._x) / dt
        a_d = _alpha(c.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = _alpha(c.min_cutoff + c.beta * np.abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()
