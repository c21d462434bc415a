r"""The loss zoo: the self-supervised objectives of the libraries people train with
(solo-learn, lightly), as exact drop-in equivalents on (B, r) embeddings.

Each takes two (B, r) arrays, returns the batch mean (``reduction="mean"``, default) or
(B,) per-example values (``"none"``), and takes a (B,) boolean ``mask`` for padded rows,
like the other losses of :mod:`gmmssl.losses` (masked rows selected out before any
arithmetic, so nothing of theirs reaches a value or gradient; a concrete mask keeping
too few rows refused, a traced one keeping none giving NaN). Defaults are the original
papers'. Losses built on batch statistics (Barlow Twins' cross-correlation, VICReg's variance and covariance
terms) have no per-example decomposition of those terms: every kept row carries the
batch term, so the mean of the per-example values is the loss.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gmmssl._validate import check_choice, check_range
from gmmssl.losses._common import (REDUCTIONS, check_mask, check_pair, keep_rows, normalize, reduce, safe_columns,
                                   traced_in_range)
from gmmssl.backend import contrastive_implementation
from gmmssl.losses._infonce import _pallas_loss, row_logsumexp


def _start(z, z_pos, mask, reduction, min_batch=2, names=("z", "z_pos")):
    """Checks; returns (keep, z, z_pos) with the masked rows of z and z_pos replaced by 0
    before any arithmetic, so that nothing of theirs (NaN, inf) reaches a value or a
    gradient (:func:`~gmmssl.losses._common.keep_rows`)."""
    check_pair(z, z_pos, names=names, min_batch=min_batch)
    check_choice("reduction", reduction, REDUCTIONS)
    keep = check_mask(mask, z.shape[0], min_rows=min_batch)
    return (keep, *keep_rows(keep, z, z_pos))


def _two_view(z, z_pos, temperature, keep, drop_positive: bool, reduction: str, implementation):
    """The loss over the 2B embeddings [z; z⁺] (cosine similarity / τ): each anchor's
    positive is its other view; per pair (B,): the mean of its two anchors; reduced."""
    check_range("temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True)
    b = z.shape[0]
    u = normalize(jnp.concatenate([z, z_pos]))
    n = 2 * b
    path = contrastive_implementation(implementation, z.shape[1], low_rank=False)
    if path == "pallas":
        a = u / traced_in_range(temperature, low_open=0.0)
        positive = jnp.sum(a * jnp.concatenate([u[b:], u[:b]]), axis=1)
        cols = jnp.ones((b,), bool) if keep is None else safe_columns(keep)
        cols = jnp.concatenate([cols, cols]).astype(u.dtype)
        return _pallas_loss(a, u, cols, positive, keep, reduction, False, exclude_self=True,
                            pair_half=b if drop_positive else None, pair_mean=True)
    s = u @ u.T / traced_in_range(temperature, low_open=0.0)
    idx = jnp.arange(n)
    pos = (idx + b) % n
    out = idx[:, None] == idx[None, :]  # an anchor is never its own negative
    if drop_positive:
        out = out | (idx[None, :] == pos[:, None])
    if keep is not None:
        cols = safe_columns(keep)
        out = out | ~jnp.concatenate([cols, cols])[None, :]
    per_anchor = row_logsumexp(jnp.where(out, -jnp.inf, s)) - s[idx, pos]
    return reduce(0.5 * (per_anchor[:b] + per_anchor[b:]), keep, reduction)


def ntxent(z, z_pos, *, temperature=0.5, mask=None, reduction: str = "mean", implementation: str | None = None):
    r"""SimCLR's NT-Xent (Chen et al. 2020) on the 2B embeddings u = [z; z⁺].

    .. math::
       s_{ab} = \cos(u_a, u_b)/\tau,\qquad
       L_a = -s_{a,p(a)} + \log\sum_{b\ne a} e^{s_{ab}},\qquad L = \frac{1}{2B}\sum_a L_a

    with p(a) the other view of anchor a: its positive; the other 2B − 2 embeddings are
    its negatives, and the positive stays in the denominator. Per-example values (B,):
    the mean of each pair's two anchors. With a mask, B is the number of pairs kept and
    a, b run over their 2B embeddings. Equals ``optax.losses.ntxent`` on
    ``concatenate([z, z_pos])`` with labels ``[0..B-1, 0..B-1]`` (tested).

    Args:
      z, z_pos: (B, r) embeddings of the two views (B ≥ 2).
      temperature: τ > 0 (may be traced). The default, 0.5, is gmmssl's; SimCLR's reference
        code defaults to 0.1 (its ``temperature`` flag, google-research/simclr run.py).
      mask: None or (B,) booleans (dtype bool): padded pairs (False) are neither anchors
        nor negatives, selected out before any arithmetic: a NaN or inf in them reaches
        neither the value nor a gradient (theirs is exactly 0). A concrete mask keeping
        fewer than 2 rows is refused (ValueError); a traced one keeping no row gives NaN,
        with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none".
      implementation: None (the backend's measured best: "xla"), "xla" or "pallas" (fused
        tiles, the 2B×2B logits never in memory; :func:`gmmssl.losses.infonce`).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(ntxent(jnp.eye(2), jnp.eye(2))), 4)
      0.2395
    """
    keep, z, z_pos = _start(z, z_pos, mask, reduction)
    return _two_view(z, z_pos, temperature, keep, False, reduction, implementation)


def dcl(z, z_pos, *, temperature=0.1, mask=None, reduction: str = "mean", implementation: str | None = None):
    r"""Decoupled contrastive learning (Yeh et al. 2022): NT-Xent with the positive
    removed from the denominator.

    .. math::
       L_a = -s_{a,p(a)} + \log\sum_{b\notin\{a, p(a)\}} e^{s_{ab}},\qquad
       L = \frac{1}{2B}\sum_a L_a

    over the 2B anchors of [z; z⁺] (both directions averaged), cosine similarity / τ,
    the 2B − 2 negatives only.

    Args:
      z, z_pos: (B, r) embeddings of the two views (B ≥ 2).
      temperature: τ > 0 (DCL: 0.1).
      mask, reduction, implementation: as in :func:`ntxent` (a traced mask keeping a single
        row gives NaN: its anchors have no negative).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(dcl(jnp.eye(2), jnp.eye(2), temperature=1.0)), 4)
      -0.3069
    """
    keep, z, z_pos = _start(z, z_pos, mask, reduction)
    return _two_view(z, z_pos, temperature, keep, True, reduction, implementation)


def _weights(keep, b, dtype):
    """Row weights (1 kept, 0 masked) and their sum n."""
    w = jnp.ones((b,), dtype) if keep is None else keep.astype(dtype)
    return w, jnp.sum(w)


def barlow_twins(z, z_pos, *, lambda_=5e-3, eps=1e-5, mask=None, reduction: str = "mean"):
    r"""Barlow Twins (Zbontar et al. 2021).

    .. math::
       \tilde z = \frac{z - \bar z}{\sqrt{\mathrm{var}(z) + \epsilon}},\qquad
       C = \tilde z^\top \tilde z^+ / B,\qquad
       L = \sum_i (1 - C_{ii})^2 + \lambda\sum_{i\ne j} C_{ij}^2

    each view standardized along the batch (biased variance, ε inside the square root).
    A batch statistic: ``reduction="none"`` gives L on every kept row.

    Args:
      z, z_pos: (B, r) embeddings of the two views (B ≥ 2).
      lambda_: λ ≥ 0, weight of the off-diagonal terms (paper: 5e-3).
      eps: ε > 0 (1e-5).
      mask: None or (B,) booleans (dtype bool): the statistics use the kept rows only;
        masked rows are selected out before any arithmetic, so a NaN or inf in them
        reaches neither the value nor a gradient (theirs is exactly 0). A concrete mask
        keeping fewer than 2 rows is refused (ValueError); a traced one keeping no row
        gives NaN, with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none".

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 2.0], [-1.0, -2.0], [1.0, -2.0], [-1.0, 2.0]])
      >>> round(float(barlow_twins(z, z)), 4)
      0.0
    """
    keep, z, z_pos = _start(z, z_pos, mask, reduction)
    check_range("lambda_", lambda_, 0.0, float("inf"), high_open=True)
    check_range("eps", eps, 0.0, float("inf"), low_open=True, high_open=True)
    w, n = _weights(keep, z.shape[0], z.dtype)
    n = jnp.maximum(n, 1.0)  # no row kept (a traced mask): statistics stay finite, the mean is NaN in reduce

    def standardize(v):
        mean = jnp.sum(w[:, None] * v, axis=0) / n
        var = jnp.sum(w[:, None] * (v - mean) ** 2, axis=0) / n
        return (v - mean) / jnp.sqrt(var + eps)

    c = (w[:, None] * standardize(z)).T @ standardize(z_pos) / n
    diag = jnp.diagonal(c)
    value = jnp.sum((1.0 - diag) ** 2) + lambda_ * (jnp.sum(c**2) - jnp.sum(diag**2))
    return reduce(jnp.broadcast_to(value, z.shape[:1]), keep, reduction)


def vicreg(z, z_pos, *, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4, mask=None,
           reduction: str = "mean"):
    r"""VICReg (Bardes et al. 2022), as its reference implementation.

    .. math::
       L = \lambda\,\frac{1}{Br}\sum_n\|z_n - z^+_n\|^2
         + \mu\,\tfrac12\big(v(z) + v(z^+)\big) + \nu\,\big(c(z) + c(z^+)\big),

    :math:`v(z) = \frac1r\sum_j \max(0, 1 - \sqrt{\mathrm{Var}(z_{\cdot j}) + \epsilon})`
    (unbiased variance), :math:`c(z) = \frac1r\sum_{i\ne j}\mathrm{Cov}(z)_{ij}^2`
    (unbiased covariance). Per-example values: λ·mean_j (z_nj − z⁺_nj)² plus the batch
    terms on every kept row.

    Args:
      z, z_pos: (B, r) embeddings of the two views (B ≥ 2).
      sim_coeff, std_coeff, cov_coeff: λ, μ, ν ≥ 0 (paper: 25, 25, 1).
      eps: ε > 0 (1e-4).
      mask: None or (B,) booleans (dtype bool): the statistics use the kept rows only;
        masked rows are selected out before any arithmetic, so a NaN or inf in them
        reaches neither the value nor a gradient (theirs is exactly 0). A concrete mask
        keeping fewer than 2 rows is refused (ValueError); a traced one keeping no row
        gives NaN, with zero gradients, and one keeping a single row NaN (the unbiased
        statistics divide by n − 1) (:mod:`gmmssl.losses`).
      reduction: "mean" or "none".

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
      >>> round(float(vicreg(z, z)), 4)
      0.0
    """
    keep, z, z_pos = _start(z, z_pos, mask, reduction)
    for name, v in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
        check_range(name, v, 0.0, float("inf"), high_open=True)
    check_range("eps", eps, 0.0, float("inf"), low_open=True, high_open=True)
    w, n = _weights(keep, z.shape[0], z.dtype)
    r = z.shape[1]
    # no row kept (a traced mask): statistics stay finite, the mean is NaN in reduce; one row: NaN (n − 1 = 0)
    mean_div, cov_div = jnp.maximum(n, 1.0), jnp.where(n > 0, n - 1.0, 1.0)

    def var_cov(v):
        centered = (v - jnp.sum(w[:, None] * v, axis=0) / mean_div) * jnp.sqrt(w)[:, None]
        cov = centered.T @ centered / cov_div
        std = jnp.sqrt(jnp.diagonal(cov) + eps)
        off = jnp.sum(cov**2) - jnp.sum(jnp.diagonal(cov) ** 2)
        return jnp.mean(jax.nn.relu(1.0 - std)), off / r

    v1, c1 = var_cov(z)
    v2, c2 = var_cov(z_pos)
    per = sim_coeff * jnp.mean((z - z_pos) ** 2, axis=1)
    return reduce(per + std_coeff * 0.5 * (v1 + v2) + cov_coeff * (c1 + c2), keep, reduction)


def negative_cosine(p, z, *, mask=None, reduction: str = "mean"):
    r"""SimSiam's and BYOL's negative cosine similarity, as written in those papers:
    :math:`L = -\frac1B\sum_n \cos(p_n, z_n)`.

    The caller applies the predictor (p = h(f(x))) and the stop-gradient on the target z
    (``jax.lax.stop_gradient``), and symmetrizes over the two views if wanted. Zero rows
    give cosine 0 (NaN-safe).

    Args:
      p: (B, r) predictions; z: (B, r) targets.
      mask: None or (B,) booleans (dtype bool): padded rows (False) are left out of the
        mean, selected out before any arithmetic (a NaN or inf in them reaches neither the
        value nor a gradient). A concrete mask keeping no row is refused (ValueError); a
        traced one gives NaN, with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none".

    Example:
      >>> import jax.numpy as jnp
      >>> float(negative_cosine(jnp.eye(2), 3.0 * jnp.eye(2)))
      -1.0
    """
    keep, p, z = _start(p, z, mask, reduction, min_batch=1, names=("p", "z"))
    return reduce(-jnp.sum(normalize(p) * normalize(z), axis=1), keep, reduction)


def byol(p, z_target, *, mask=None, reduction: str = "mean"):
    r"""BYOL's regression loss (Grill et al. 2020): the normalized mean squared error
    :math:`\|\bar p_n - \bar z_n\|^2 = 2 - 2\cos(p_n, z_n)` between the online network's
    prediction p and the target network's projection z (the caller applies the
    stop-gradient; the trainer's "byol" objective keeps the target as an exponential
    moving average of the online projector and symmetrizes over the views).

    Args:
      p: (B, r) predictions; z_target: (B, r) targets.
      mask, reduction: as in :func:`negative_cosine`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(byol(jnp.eye(2), -jnp.eye(2)))
      4.0
    """
    keep, p, z_target = _start(p, z_target, mask, reduction, min_batch=1, names=("p", "z_target"))
    return reduce(2.0 - 2.0 * jnp.sum(normalize(p) * normalize(z_target), axis=1), keep, reduction)


def siglip(z, z_pos, *, log_temperature=math.log(10.0), bias=-10.0, mask=None, reduction: str = "mean"):
    r"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023).

    .. math::
       \ell_{ij} = e^{t}\cos(z_i, z^+_j) + b,\qquad
       L_i = -\sum_j \log\sigma\big(y_{ij}\,\ell_{ij}\big),\qquad L = \frac1B\sum_i L_i

    with :math:`y_{ij} = 1` for i = j and −1 otherwise: every pair is its own binary
    problem, no softmax over the batch (with a mask, B is the number of rows kept and i, j
    run over them). t (the log temperature) and b are learnable
    (the trainer's "siglip" objective trains them), initialized at t = log 10, b = −10.

    Args:
      z, z_pos: (B, r) embeddings of matched pairs (B ≥ 2).
      log_temperature: t (may be traced or a parameter).
      bias: b.
      mask: None or (B,) booleans (dtype bool): padded rows are neither anchors nor
        negatives, selected out before any arithmetic: a NaN or inf in them reaches neither
        the value nor a gradient (theirs is exactly 0). A concrete mask keeping fewer than
        2 rows is refused (ValueError); a traced one keeping no row gives NaN, with zero
        gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none".

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(siglip(jnp.eye(2), jnp.eye(2))), 4)  # log 2 + log(1 + e^-10)
      0.6932
    """
    keep, z, z_pos = _start(z, z_pos, mask, reduction)
    check_range("log_temperature", log_temperature, -math.inf, math.inf)  # concrete: finite and real
    check_range("bias", bias, -math.inf, math.inf)
    logits = jnp.exp(log_temperature) * (normalize(z) @ normalize(z_pos).T) + bias
    labels = 2.0 * jnp.eye(z.shape[0], dtype=logits.dtype) - 1.0
    terms = -jax.nn.log_sigmoid(labels * logits)
    if keep is not None:
        terms = jnp.where(keep[None, :], terms, 0.0)
    return reduce(jnp.sum(terms, axis=1), keep, reduction)


# ------------------------------------------------------------------ population versions
#
# Spectral contrastive, Barlow Twins and VICReg depend on the data only through the
# embeddings' first two moments, which a Gaussian mixture gives in closed form. With
# S = AᵀΣ_T A (the embedding's covariance), X = Aᵀ Cov(x, x⁺) A (the views'
# cross-covariance; κ·AᵀS_B A under AeD(δ)) and m = Aᵀμ̄ (the common mean of both views),
# these are the B → ∞ values of the sampled losses: noise-free references (tested against
# large sampled batches).


def _check_moments(cov, cross_cov):
    if jnp.ndim(cov) != 2 or jnp.shape(cov) != jnp.shape(cross_cov) or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov and cross_cov must both be (r, r), got {jnp.shape(cov)} and {jnp.shape(cross_cov)}")
    for name, v in (("cov", cov), ("cross_cov", cross_cov)):
        if jnp.result_type(v).kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got dtype {jnp.result_type(v).name}")


def spectral_contrastive_population(cov, cross_cov, mean):
    r"""The spectral contrastive loss as B → ∞:
    :math:`-2\,\mathrm{tr}(X + mm^\top) + \mathrm{tr}\big((S + mm^\top)^2\big)` (negatives
    independent of the anchor, so :math:`E[(z\cdot z'^+)^2] = \mathrm{tr}(M^2)` with the
    second moment M = S + mmᵀ).

    Args:
      cov: (r, r) S; cross_cov: (r, r) X; mean: (r,) m.
    """
    _check_moments(cov, cross_cov)
    outer = jnp.outer(mean, mean)
    second = cov + outer
    return -2.0 * jnp.trace(cross_cov + outer) + jnp.sum(second * second.T)


def barlow_twins_population(cov, cross_cov, *, lambda_=5e-3, eps=1e-5):
    r"""Barlow Twins as B → ∞: C = D^{-1/2} X D^{-1/2} with D = diag(S) + ε (both views
    have covariance S), then :math:`\sum_i(1 - C_{ii})^2 + \lambda\sum_{i\ne j}C_{ij}^2`."""
    _check_moments(cov, cross_cov)
    inv_std = 1.0 / jnp.sqrt(jnp.diagonal(cov) + eps)
    c = cross_cov * inv_std[:, None] * inv_std[None, :]
    diag = jnp.diagonal(c)
    return jnp.sum((1.0 - diag) ** 2) + lambda_ * (jnp.sum(c**2) - jnp.sum(diag**2))


def vicreg_population(cov, cross_cov, *, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
    r"""VICReg as B → ∞: invariance :math:`\mathrm{tr}(2S - X - X^\top)/r` (equal view
    means), variance :math:`\frac1r\sum_j\max(0, 1 - \sqrt{S_{jj} + \epsilon})` for each view,
    covariance :math:`\frac1r\sum_{i\ne j}S_{ij}^2` for each view."""
    _check_moments(cov, cross_cov)
    r = cov.shape[0]
    inv = jnp.trace(2.0 * cov - cross_cov - cross_cov.T) / r
    var = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(jnp.diagonal(cov) + eps)))
    off = (jnp.sum(cov**2) - jnp.sum(jnp.diagonal(cov) ** 2)) / r
    return sim_coeff * inv + std_coeff * var + cov_coeff * 2.0 * off
