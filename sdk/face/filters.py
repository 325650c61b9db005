"""One-Euro filter (Casiez, Roussel & Vogel, CHI 2012): little jitter at rest, little lag when moving.

The cutoff frequency rises with the signal's speed: ``cutoff = min_cutoff + beta * |speed|``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OneEuroConfig", "OneEuroFilter", "REPEATS_KEPT"]

#: How many samples in a row at the last sample's timestamp keep its output (a duplicate frame); from the next
#: on, the clock is taken to have stopped and each sample is output as it is (there is no time to smooth over).
REPEATS_KEPT = 1


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
    """Filters a vector signal; each component has its own adaptive cutoff. A timestamp earlier than the last
    (a source restarted, a file looping) restarts the filter from that sample: the state belongs to another
    clock, and waiting for the new clock to pass the old one would freeze the output."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None
        self._repeats = 0                    # samples in a row at the timestamp ``_t``

    def _restart(self, x: np.ndarray, t: float, repeats: int = 0) -> np.ndarray:
        self._x, self._dx, self._t, self._repeats = x.copy(), np.zeros_like(x), t, repeats
        return x.copy()

    def __call__(self, x, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t < self._t:
            return self._restart(x, t)         # the first sample, or a clock that went back
        if t == self._t:
            self._repeats += 1
            if self._repeats <= REPEATS_KEPT:
                return self._x.copy()          # a duplicate frame: keep its output
            return self._restart(x, t, self._repeats)   # a clock that stopped: no time to smooth over
        dt = t - self._t
        c = self.config
        dx = (x - self._x) / dt
        a_d = _alpha(c.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = _alpha(c.min_cutoff + c.beta * np.abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t, self._repeats = t, 0
        return self._x.copy()
