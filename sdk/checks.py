"""What the argument checks count as a whole number and as a finite number (Python's or numpy's; never a
bool, which is an int to Python but no count or size to a caller), and the check of a config dataclass's
fields against rules made of them."""
from __future__ import annotations

import math
import numbers
from dataclasses import fields

import numpy as np

from gramcast.errors import InvalidArgumentError

__all__ = ["is_whole", "is_finite", "is_real", "is_bool", "whole_in", "real_in", "check_options"]


def is_whole(value) -> bool:
    """An integer (``int``, numpy's integers), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite(value) -> bool:
    """A finite real number (``int``, ``float``, numpy's), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_real(value) -> bool:
    """A real number (``int``, ``float``, numpy's; infinity too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_bool(value) -> bool:
    """True or False (Python's or numpy's): not a 'no' or a 0, which a truth test would take."""
    return isinstance(value, (bool, np.bool_))


def whole_in(low: int, high: int):
    """A test: a whole number from ``low`` to ``high``."""
    return lambda v: is_whole(v) and low <= v <= high


def real_in(low: float, high: float):
    """A test: a finite number from ``low`` to ``high``."""
    return lambda v: is_finite(v) and low <= v <= high


def check_options(config, rules: dict, what: str) -> None:
    """Refuse the first field of the dataclass ``config`` that fails its rule, with an ``InvalidArgumentError``
    naming it and what it takes, and store numpy numbers as Python's (what the config reaches: OpenCV's sizes,
    the avatar's JSON meta). ``rules``: field name -> (test, what it takes, its kind: int, float or bool, or
    None to keep the value as it is); ``what``: whose options they are, for the message."""
    for field in fields(config):
        test, takes, kind = rules[field.name]
        value = getattr(config, field.name)
        if not test(value):
            raise InvalidArgumentError(f"{what} option {field.name} takes {takes}; got {value!r} (the default is "
                                       f"{field.default!r})")
        if kind is not None and value is not None:
            object.__setattr__(config, field.name, kind(value))
