"""Helpers shared by the losses: shape checks, similarities, NaN-safe normalization."""
from __future__ import annotations

import chex
import jax.numpy as jnp
from jax import lax

from gmmssl._validate import check_choice, check_range

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
    return (z @ z_pos.T) / temperature


REDUCTIONS = ("mean", "none")


def check_mask(mask, batch: int, name: str = "mask"):
    """None, or a (B,) array of booleans / 0-1 weights marking the rows that count
    (padded rows: False). Returns it as a float array (or None)."""
    if mask is None:
        return None
    shape = jnp.shape(mask)
    if shape != (batch,):
        raise ValueError(f"{name} must have shape (B,) = ({batch},) to match the embeddings, got {shape}")
    return jnp.asarray(mask, jnp.result_type(float))


def reduce(values, mask, reduction: str):
    """Per-example ``values`` (B,) → the loss: "none" gives them (0 on masked rows),
    "mean" their mean over the rows the mask keeps (all rows without a mask; NaN when
    the mask keeps none)."""
    check_choice("reduction", reduction, REDUCTIONS)
    if mask is None:
        return values if reduction == "none" else jnp.mean(values)
    values = jnp.where(mask > 0, values, 0.0)
    if reduction == "none":
        return values
    return jnp.sum(values * mask) / jnp.sum(mask)
