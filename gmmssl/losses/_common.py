"""Helpers shared by the losses: shape and mask checks, similarities, NaN-safe normalization,
masked reductions."""
from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmmssl._validate import check_choice, check_range, is_concrete

SIMILARITIES = ("dot", "cosine")


def normalize(z, eps: float = 1e-12):
    """Rows scaled to unit norm; zero rows stay zero with finite gradients.

    Uses ``z * rsqrt(max(|z|², eps²))`` so neither the value nor the gradient is NaN at 0.
    """
    sq = jnp.sum(z * z, axis=-1, keepdims=True)
    return z * lax.rsqrt(jnp.maximum(sq, eps * eps))


def check_pair(z, z_pos, names=("z", "z_pos"), min_batch: int = 1):
    """Both (B, r) with the same shape (chex raises AssertionError otherwise), and
    B ≥ ``min_batch`` (ValueError: in-batch losses need B ≥ 2, since one pair has no
    negative and its loss is identically 0)."""
    chex.assert_rank([z, z_pos], 2, custom_message=f"{names[0]} and {names[1]} must be (B, r)")
    chex.assert_equal_shape([z, z_pos], custom_message=f"{names[0]} and {names[1]} must have the same (B, r) shape")
    for name, v in zip(names, (z, z_pos)):
        if jnp.dtype(v.dtype).kind not in "biuf":  # complex values are never coerced (nor their imaginary part lost)
            raise ValueError(f"{name} must hold real numbers, got dtype {jnp.dtype(v.dtype).name}")
    if z.shape[0] < min_batch:
        raise ValueError(f"{names[0]} has B = {z.shape[0]} rows; this loss compares rows within the batch and "
                         f"needs B ≥ {min_batch}")


def similarity_inputs(z, z_pos, temperature, similarity: str):
    """Checks τ and the similarity; returns (z, z⁺), rows normalized for "cosine", so that
    s(z_i, z⁺_j) = z_i · z⁺_j."""
    check_choice("similarity", similarity, SIMILARITIES)
    check_range("temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True)
    if similarity == "cosine":
        z, z_pos = normalize(z), normalize(z_pos)
    return z, z_pos


def similarity_logits(z, z_pos, temperature, similarity: str):
    """ℓ_ij = s(z_i, z⁺_j)/τ, (B, B)."""
    z, z_pos = similarity_inputs(z, z_pos, temperature, similarity)
    return (z @ z_pos.T) / traced_in_range(temperature, low_open=0.0)


def traced_in_range(value, *, low_open: float):
    """``value`` when concrete (checked by the caller); traced (inside jit, vmap, grad), NaN
    where it is not finite or not above ``low_open``, so that an out-of-range value gives
    a NaN loss (and gradients), flagged as divergence, never a finite wrong number."""
    if is_concrete(value):
        return value
    value = jnp.asarray(value)
    return jnp.where(jnp.isfinite(value) & (value > low_open), value, jnp.nan)


REDUCTIONS = ("mean", "none")


def check_mask(mask, batch: int, name: str = "mask", min_rows: int = 1):
    """None, or a (B,) boolean array marking the rows that count (padded rows: False).
    Returns it as a jax bool array (or None).

    Refused with a one-line ValueError naming the argument: another shape; another dtype
    (a float 0.5 or an integer 2 is not a yes/no answer: pass ``weights > 0``); and, when
    the mask is concrete (not traced inside jit/vmap/grad), one that keeps fewer than
    ``min_rows`` rows: no row at all (a mean over no rows is undefined), or fewer than
    the batch the loss needs (B ≥ 2 for the losses that compare rows within the batch or
    take batch statistics, as :func:`check_pair` refuses for an unmasked batch). A traced
    mask cannot be checked: the losses then return NaN for the mean over no rows
    (:func:`reduce`).
    """
    if mask is None:
        return None
    if not hasattr(mask, "dtype"):  # a list or tuple
        mask = np.asarray(mask)
    shape = jnp.shape(mask)
    if shape != (batch,):
        raise ValueError(f"{name} must have shape (B,) = ({batch},) to match the embeddings, got {shape}")
    dtype = np.dtype(mask.dtype)
    if dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array (True: the row counts), got dtype {dtype}; "
                         f"for 0/1 values pass {name} > 0")
    if is_concrete(mask):
        kept = int(np.count_nonzero(np.asarray(mask)))
        if kept == 0:
            raise ValueError(f"{name} keeps no row (every entry is False): a loss over no rows is undefined")
        if kept < min_rows:
            raise ValueError(f"{name} keeps {kept} of {batch} rows; this loss compares rows within the batch or "
                             f"takes batch statistics and needs at least {min_rows} (as for an unmasked batch)")
    return jnp.asarray(mask)


def keep_rows(keep, *arrays):
    """The arrays with the rows ``keep`` drops replaced by 0, before any arithmetic: the
    first half of the double ``where``. A NaN or inf in a padded row then reaches neither
    the value nor, through the backward pass (the cotangent of ``where`` on a dropped row
    is exactly 0, never 0 · NaN), any gradient; :func:`reduce` does the second half,
    zeroing the dropped rows' per-example values. ``keep`` None: the arrays unchanged."""
    if keep is None:
        return arrays
    return tuple(jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, jnp.zeros((), a.dtype)) for a in arrays)


def safe_columns(keep):
    """The rows that may serve as negatives / columns: ``keep``, or every row when ``keep``
    keeps none (only possible for a traced mask), so that no row of logits is all −inf and
    the computation stays finite; the mean over no rows is then NaN by :func:`reduce`, and
    every gradient 0."""
    return keep | ~jnp.any(keep)


def reduce(values, mask, reduction: str):
    """Per-example ``values`` (B,) → the loss: "none" gives them (0 on masked rows),
    "mean" their mean over the rows the boolean mask keeps (all rows without a mask).
    A mask that keeps no row (traced: a concrete one is refused by :func:`check_mask`)
    gives NaN for the mean, 0 on every row for "none", and zero gradients."""
    check_choice("reduction", reduction, REDUCTIONS)
    if mask is None:
        return values if reduction == "none" else jnp.mean(values)
    values = jnp.where(mask, values, jnp.zeros((), values.dtype))
    if reduction == "none":
        return values
    n = jnp.sum(mask)
    return jnp.where(n > 0, jnp.sum(values) / jnp.maximum(n, 1).astype(values.dtype), jnp.nan)
