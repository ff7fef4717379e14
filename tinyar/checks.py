"""Checks of the numbers a caller passes in: each returns the value (as a plain int or float)
or raises a one-line error that names the function, the argument, what it needs and what came
(TypeError for the wrong kind of value, ValueError for one out of range).

    check_count         a whole number >= at_least (batch sizes, epochs, steps, samples)
    check_setting       a finite real number in a range (learning rates, momentum, clipping)
    check_n_samples     the n of model.sample(n): a whole number >= 0
    check_temperature   a sampling temperature: a finite number > 0
"""
from __future__ import annotations

import math
import numbers


def check_count(where, name, value, at_least=1):
    """value if it is a whole number >= at_least; else a one-line ValueError (TypeError for a
    non-integer) naming `where`, `name` and the value that came."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be a whole number, got {value!r}")
    if value < at_least:
        raise ValueError(f"{where}: need {name} >= {at_least}, got {name}={value}")
    return int(value)


def check_setting(where, name, value, low, high=math.inf, low_allowed=True):
    """float(value) if it is a finite number with low <= value < high (low < value < high when
    low_allowed is False); else a one-line ValueError (TypeError for a non-number) naming
    `where`, `name`, the range it needs and the value that came."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    value = float(value)
    above_low = value >= low if low_allowed else value > low
    if math.isfinite(value) and above_low and value < high:
        return value
    if math.isfinite(high):
        needed = f"{low:g} {'<=' if low_allowed else '<'} {name} < {high:g}"
    else:
        needed = f"{name} {'>=' if low_allowed else '>'} {low:g}"
    raise ValueError(f"{where}: need {needed} (a finite number), got {name}={value}")


def check_n_samples(n, who):
    """n, the number of samples asked of `who`.sample, as an int >= 0, or a clear error."""
    return check_count(f"{who}.sample", "n", n, at_least=0)


def check_temperature(temperature, who):
    """The sampling temperature T as a float, finite and > 0, or a clear error.

    Samplers draw from softmax(logits / T): T = 1 is the model itself, T < 1 sharper, T > 1
    flatter. T = NaN would make every logit NaN (and every draw the same id), T <= 0 or inf
    has no such meaning.
    """
    return check_setting(who, "temperature", temperature, 0, low_allowed=False)
