"""Eager argument checks shared by the public functions.

Every public entry point of gmmssl checks its arguments *before* anything is
traced or compiled, and raises ``ValueError`` naming the argument and its valid
range. Inside ``jit``/``vmap`` the arguments are tracers whose values are unknown;
the checks then only look at shapes (values are checked where they enter, at the
command line or the sweep engine).
"""
from __future__ import annotations

import numbers

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Checks that ``value`` is an integer in ``[low, high]`` and returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_range(name: str, value, low: float, high: float, *, low_open=False, high_open=False):
    """Checks that every entry of a concrete ``value`` is finite and in the interval.

    Tracers pass unchecked (their values are unknown at trace time).
    """
    if not is_concrete(value):
        return value
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - ragged lists and the like
        arr = np.asarray(None)
    if arr.dtype.kind not in "biuf":  # complex, strings, objects: never coerced
        raise ValueError(f"{name} must be a real number (or real numbers), got {value!r}")
    arr = arr.astype(np.float64)
    lo_b = "(" if low_open else "["
    hi_b = ")" if high_open else "]"
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite and in {lo_b}{low}, {high}{hi_b}, got {value!r}")
    bad = (arr <= low) if low_open else (arr < low)
    bad |= (arr >= high) if high_open else (arr > high)
    if np.any(bad):
        raise ValueError(f"{name} must be in {lo_b}{low}, {high}{hi_b}, got {value!r}")
    return value


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_finite(name: str, value) -> None:
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
