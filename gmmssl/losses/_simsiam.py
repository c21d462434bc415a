r"""Non-contrastive and spectral losses: SimSiam and the spectral contrastive loss."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from gmmssl._validate import check_choice, check_range
from gmmssl.losses._common import check_pair, normalize

DISTANCES = ("l2", "cosine")


def _distance(p, t, distance):
    if distance == "l2":
        return jnp.sum((p - t) ** 2, axis=1)
    return -jnp.sum(normalize(p) * normalize(t), axis=1)


def covariance_penalty(z):
    r""":math:`\|\widehat{\mathrm{Cov}}(z) - I_r\|_F^2` with the centered batch covariance
    :math:`\frac1B (z-\bar z)^\top(z-\bar z)` (divisor B, so B = 1 gives Cov = 0)."""
    zc = z - z.mean(0)
    cov = zc.T @ zc / z.shape[0]
    return jnp.sum((cov - jnp.eye(z.shape[1], dtype=z.dtype)) ** 2)


def simsiam(z, z_pos, *, predictor=None, xi=0.0, distance: str = "l2", stop_gradient: bool = True):
    r"""SimSiam with an optional linear predictor and a covariance regularizer.

    .. math::
       p = zP,\ p^+ = z^+P,\qquad
       L = \tfrac12\,\mathrm{mean}_i D(p_i, \mathrm{sg}(z^+_i)) + \tfrac12\,\mathrm{mean}_i D(p^+_i, \mathrm{sg}(z_i))
           + \xi\,\|\widehat{\mathrm{Cov}}(z) - I_r\|_F^2

    with :math:`D_{l2}(p,t) = \|p-t\|^2`, :math:`D_{cos}(p,t) = -\cos(p,t)`, P = I when
    ``predictor`` is None, sg the stop-gradient (the targets get no gradient).

    Note on the SPEC's prediction (no predictor, l2): the *value* of the loss in the
    population is :math:`2\mathrm{tr}(A^\top(\Sigma_T-C^+)A) + \xi\|A^\top\Sigma_TA-I\|^2`,
    but the stop-gradient halves the alignment term's *gradient*, so gradient descent on
    this loss minimizes :math:`\mathrm{tr}(A^\top(\Sigma_T-C^+)A) + \xi\|\cdot\|^2`: a direction of
    canonical correlation ρ survives iff ξ > (1−ρ)/2, with squared norm 1 − (1−ρ)/(2ξ).
    ``stop_gradient=False`` descends the full objective (survival iff ξ > 1−ρ, squared
    norm 1 − (1−ρ)/ξ). Both are measured in the tests.

    Args:
      z, z_pos: (B, r) embeddings of the two views.
      predictor: None or (r, r) matrix P.
      xi: ξ >= 0, weight of the covariance regularizer (may be traced).
      distance: "l2" or "cosine".
      stop_gradient: apply sg to the targets (SimSiam); False for the plain objective.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
      >>> float(simsiam(z, z, xi=0.0))
      0.0
    """
    check_pair(z, z_pos, min_batch=2)  # the covariance regularizer needs two rows
    check_choice("distance", distance, DISTANCES)
    check_range("xi", xi, 0.0, float("inf"), high_open=True)
    if predictor is not None:
        chex.assert_shape(predictor, (z.shape[1], z.shape[1]), custom_message="predictor must be (r, r)")
        p, p_pos = z @ predictor, z_pos @ predictor
    else:
        p, p_pos = z, z_pos
    sg = jax.lax.stop_gradient if stop_gradient else (lambda a: a)
    align = 0.5 * jnp.mean(_distance(p, sg(z_pos), distance)) + 0.5 * jnp.mean(_distance(p_pos, sg(z), distance))
    return align + xi * covariance_penalty(z)


def spectral_contrastive(z, z_pos):
    r"""Spectral contrastive loss (HaoChen et al. 2021).

    .. math::
       L = -\frac2B\sum_i z_i\cdot z^+_i + \frac{1}{B(B-1)}\sum_{i\ne j}(z_i\cdot z^+_j)^2

    (the second term is 0 when B = 1).

    Args:
      z, z_pos: (B, r) embeddings of the two views.

    Example:
      >>> import jax.numpy as jnp
      >>> float(spectral_contrastive(jnp.eye(2), jnp.eye(2)))
      -2.0
    """
    check_pair(z, z_pos, min_batch=2)
    b = z.shape[0]
    g = z @ z_pos.T
    pos = jnp.mean(jnp.diagonal(g))
    off = (jnp.sum(g**2) - jnp.sum(jnp.diagonal(g) ** 2)) / max(b * (b - 1), 1)
    return -2.0 * pos + off
