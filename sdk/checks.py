"""What the argument checks count as a whole number and as a finite number (Python's or numpy's; never a
bool, which is an int to Python but no count or size to a caller)."""
from __future__ import annotations

import math
import numbers

__all__ = ["is_whole", "is_finite"]


def is_whole(value) -> bool:
    """An integer (``int``, numpy's integers), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite(value) -> bool:
    """A finite real number (``int``, ``float``, numpy's), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
