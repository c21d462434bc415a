r"""Non-contrastive and spectral losses: SimSiam and the spectral contrastive loss."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from gmmssl._validate import check_choice, check_range
from gmmssl.losses._common import REDUCTIONS, check_mask, check_pair, keep_rows, normalize, reduce

DISTANCES = ("l2", "cosine")


def _distance(p, t, distance):
    if distance == "l2":
        return jnp.sum((p - t) ** 2, axis=1)
    return -jnp.sum(normalize(p) * normalize(t), axis=1)


def covariance_penalty(z, mask=None):
    r""":math:`\|\widehat{\mathrm{Cov}}(z) - I_r\|_F^2` with the centered batch covariance
    :math:`\frac1n (z-\bar z)^\top(z-\bar z)` over the n rows the (B,) boolean ``mask``
    keeps (all B rows without one; divisor n, so n = 1 gives Cov = 0).

    Masked rows are selected out before any arithmetic: a NaN or inf in them reaches
    neither the value nor a gradient (theirs is exactly 0). A mask that keeps no row is
    refused (ValueError) when concrete; traced (inside jit/vmap), the value is NaN and
    the gradient 0."""
    keep = check_mask(mask, z.shape[0])
    if keep is None:
        return _covariance_penalty(z, None)
    (z,) = keep_rows(keep, z)
    n = jnp.sum(keep)
    return jnp.where(n > 0, _covariance_penalty(z, keep), jnp.nan)


def _covariance_penalty(z, keep):
    """The penalty on z whose rows ``keep`` drops are already 0 (finite for any keep)."""
    if keep is None:
        zc = z - z.mean(0)
        cov = zc.T @ zc / z.shape[0]
    else:
        w = keep.astype(z.dtype) / jnp.maximum(jnp.sum(keep), 1).astype(z.dtype)
        zc = (z - jnp.sum(w[:, None] * z, axis=0)) * jnp.sqrt(w)[:, None]
        cov = zc.T @ zc
    return jnp.sum((cov - jnp.eye(z.shape[1], dtype=z.dtype)) ** 2)


def simsiam(z, z_pos, *, predictor=None, xi=0.0, distance: str = "l2", stop_gradient: bool = True, mask=None,
            reduction: str = "mean"):
    r"""SimSiam with an optional predictor and a covariance regularizer.

    .. math::
       p = h(z),\ p^+ = h(z^+),\qquad
       L_i = \tfrac12 D(p_i, \mathrm{sg}(z^+_i)) + \tfrac12 D(p^+_i, \mathrm{sg}(z_i))
           + \xi\,\|\widehat{\mathrm{Cov}}(z) - I_r\|_F^2,\qquad L = \frac1B\sum_i L_i

    with :math:`D_{l2}(p,t) = \|p-t\|^2`, :math:`D_{cos}(p,t) = -\cos(p,t)`, the
    predictor h the identity when ``predictor`` is None, zP for an (r, r) matrix P, or any
    callable (B, r) → (B, r) (an nnx module, an MLP), sg the stop-gradient (the targets get
    no gradient). The covariance term is a batch statistic: every L_i carries it, so the
    mean of the per-example values is the loss. With a mask, B is the number of rows kept
    and the mean and the covariance run over them.

    Note on the SPEC's prediction (no predictor, l2): the *value* of the loss in the
    population is :math:`2\mathrm{tr}(A^\top(\Sigma_T-C^+)A) + \xi\|A^\top\Sigma_TA-I\|^2`,
    but the stop-gradient halves the alignment term's *gradient*, so gradient descent on
    this loss minimizes :math:`\mathrm{tr}(A^\top(\Sigma_T-C^+)A) + \xi\|\cdot\|^2`: a direction of
    canonical correlation ρ survives iff ξ > (1−ρ)/2, with squared norm 1 − (1−ρ)/(2ξ).
    ``stop_gradient=False`` descends the full objective (survival iff ξ > 1−ρ, squared
    norm 1 − (1−ρ)/ξ). Both are measured in the tests.

    Args:
      z, z_pos: (B, r) embeddings of the two views.
      predictor: None, an (r, r) matrix P, or a callable (B, r) → (B, r).
      xi: ξ >= 0, weight of the covariance regularizer (may be traced).
      distance: "l2" or "cosine".
      stop_gradient: apply sg to the targets (SimSiam); False for the plain objective.
      mask: None or (B,) booleans (dtype bool): rows with False (padding) are left out of
        the mean and of the covariance, selected out before any arithmetic (and before the
        predictor): a NaN or inf in them reaches neither the value nor a gradient (theirs
        is exactly 0). A concrete mask keeping fewer than 2 rows is refused (ValueError);
        a traced one keeping no row gives NaN, with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none" (the (B,) per-example values L_i, 0 on masked rows).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
      >>> float(simsiam(z, z, xi=0.0))
      0.0
      >>> float(simsiam(z, z, predictor=lambda u: 2.0 * u))  # (2 - 1)² per view
      1.0
    """
    check_pair(z, z_pos, min_batch=2)  # the covariance regularizer needs two rows
    check_choice("distance", distance, DISTANCES)
    check_choice("reduction", reduction, REDUCTIONS)
    check_range("xi", xi, 0.0, float("inf"), high_open=True)
    keep = check_mask(mask, z.shape[0], min_rows=2)
    z, z_pos = keep_rows(keep, z, z_pos)  # masked rows are 0 before any arithmetic (the predictor's too)
    if predictor is None:
        p, p_pos = z, z_pos
    elif callable(predictor):
        p, p_pos = predictor(z), predictor(z_pos)
        if jnp.shape(p) != z.shape or jnp.shape(p_pos) != z.shape:
            raise ValueError(f"predictor must map (B, r) = {z.shape} to the same shape, got {jnp.shape(p)}")
    else:
        chex.assert_shape(predictor, (z.shape[1], z.shape[1]), custom_message="predictor must be (r, r)")
        p, p_pos = z @ predictor, z_pos @ predictor
    if jnp.result_type(p).kind not in "biuf":
        raise ValueError(f"predictor must give real numbers, got dtype {jnp.result_type(p).name}")
    sg = jax.lax.stop_gradient if stop_gradient else (lambda a: a)
    align = 0.5 * _distance(p, sg(z_pos), distance) + 0.5 * _distance(p_pos, sg(z), distance)
    return reduce(align + xi * _covariance_penalty(z, keep), keep, reduction)


def spectral_contrastive(z, z_pos, *, mask=None, reduction: str = "mean"):
    r"""Spectral contrastive loss (HaoChen et al. 2021).

    .. math::
       L_i = -2\,z_i\cdot z^+_i + \frac{1}{B-1}\sum_{j\ne i}(z_i\cdot z^+_j)^2,\qquad
       L = \frac1B\sum_i L_i = -\frac2B\sum_i z_i\cdot z^+_i + \frac{1}{B(B-1)}\sum_{i\ne j}(z_i\cdot z^+_j)^2

    With a mask, B is the number n of rows kept and j runs over them.

    Args:
      z, z_pos: (B, r) embeddings of the two views.
      mask: None or (B,) booleans (dtype bool): rows with False (padding) are neither
        anchors nor negatives, selected out before any arithmetic: a NaN or inf in them
        reaches neither the value nor a gradient (theirs is exactly 0). A concrete mask
        keeping fewer than 2 rows is refused (ValueError); a traced one keeping no row
        gives NaN, with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none" (the (B,) per-example values L_i, 0 on masked rows).

    Example:
      >>> import jax.numpy as jnp
      >>> float(spectral_contrastive(jnp.eye(2), jnp.eye(2)))
      -2.0
    """
    check_pair(z, z_pos, min_batch=2)
    check_choice("reduction", reduction, REDUCTIONS)
    keep = check_mask(mask, z.shape[0], min_rows=2)
    z, z_pos = keep_rows(keep, z, z_pos)  # masked rows are 0 before any arithmetic
    g = z @ z_pos.T
    diag = jnp.diagonal(g)
    if keep is None:
        off = (jnp.sum(g**2, axis=1) - diag**2) / (z.shape[0] - 1)
    else:
        n = jnp.sum(keep)
        off = (jnp.sum(jnp.where(keep[None, :], g**2, 0.0), axis=1) - diag**2) / jnp.maximum(n - 1, 1)
    return reduce(-2.0 * diag + off, keep, reduction)
