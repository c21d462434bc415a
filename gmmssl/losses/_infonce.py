r"""InfoNCE with in-batch negatives, CLIP, and InfoNCE with analytic (population) negatives."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.nn import logsumexp

from gmmssl._validate import check_choice, check_range
from gmmssl.backend import contrastive_implementation
from gmmssl.losses import _pallas
from gmmssl.losses._common import (REDUCTIONS, check_mask, check_pair, keep_rows, reduce, safe_columns,
                                   similarity_inputs, similarity_logits, traced_in_range)


@jax.custom_jvp
def row_logsumexp(logits):
    r"""Row-wise log-sum-exp of (B, N) logits, (B,): :math:`\log\sum_j e^{\ell_{ij}}`
    (entries of −inf are left out).

    A custom JVP: the tangent is :math:`\sum_j P_{ij}\,\dot\ell_{ij}` with the softmax P
    of the forward pass, so reverse mode (its transpose, :math:`(P \odot g)`) needs no second
    pass of exponentials over the B×B logits, and forward mode (``jax.jvp``, ``jax.jacfwd``,
    ``jax.hessian``) works as well.
    """
    m = jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
    return m[:, 0] + jnp.log(jnp.sum(jnp.exp(logits - m), axis=1))


@row_logsumexp.defjvp
def _row_logsumexp_jvp(primals, tangents):
    (logits,), (dl,) = primals, tangents
    m = jnp.max(logits, axis=1, keepdims=True)
    e = jnp.exp(logits - m)
    s = jnp.sum(e, axis=1, keepdims=True)
    return m[:, 0] + jnp.log(s[:, 0]), jnp.sum((e / s) * dl, axis=1)


# Embedding widths up to this use the fused low-rank kernel below.
SMALL_RANK = 4


def _outer_logits(a, b):
    """ℓ_ij = Σ_k a_ik b_jk as a sum of r outer products: elementwise, so XLA fuses it into
    the reductions that consume it instead of running a (B, r) × (r, B) matmul."""
    out = a[:, 0, None] * b[None, :, 0]
    for k in range(1, a.shape[1]):
        out = out + a[:, k, None] * b[None, :, k]
    return out


def _masked_outer(a, b, keep):
    return jnp.where(keep[None, :] > 0, _outer_logits(a, b), -jnp.inf)


@jax.custom_jvp
def low_rank_logsumexp(a, b, keep):
    r"""``row_logsumexp(a @ b.T)`` over the columns j with keep_j > 0, for small
    r = a.shape[1], without the matmul: (B,) from a, b (B, r) and keep (B,).

    The logits are r outer products formed inside the reductions that consume them, and
    no B×B array is kept between passes: the tangent
    :math:`\dot a_i\cdot(Pb)_i + a_i\cdot(P\dot b)_i` (P = softmax(ℓ)) uses the (B, r)
    product Pb of the forward pass and recomputes P inside the reduction :math:`P\dot b`
    (``jax.checkpoint``), as does its transpose :math:`P^\top(g \odot a)` in reverse
    mode. Measured side by side with the custom-VJP kernel it replaces (forward mode
    needs a JVP), see benchmarks/README.md.
    """
    logits = _masked_outer(a, b, keep)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=1))
    return m + jnp.log(jnp.sum(jnp.exp(logits - m[:, None]), axis=1))


@jax.checkpoint
def _softmax_times(a, b, keep, lse, v):
    """Σ_j P_ij v_j (B, r) with P = softmax of the masked outer logits, recomputed."""
    p = jnp.exp(_masked_outer(a, b, keep) - lse[:, None])
    return jnp.sum(p[:, :, None] * v[None, :, :], axis=1)


@jax.checkpoint
def _softmax_times_transposed(a, b, keep, lse, v):
    """:func:`_softmax_times` computed from Pᵀ (rows j): the same values, but its
    transpose, Pᵀ applied to a cotangent (reverse mode's hot path), reduces along the
    contiguous axis (measured: B = 4096, r = 2, 1.7× faster than reducing along the other)."""
    pt = jnp.exp(jnp.where(keep[:, None] > 0, _outer_logits(b, a), -jnp.inf) - lse[None, :])
    return jnp.sum(pt[:, :, None] * v[:, None, :], axis=0)


@low_rank_logsumexp.defjvp
def _low_rank_jvp(primals, tangents):
    a, b, keep = primals
    da, db, _ = tangents
    lse = low_rank_logsumexp(a, b, keep)
    pb = _softmax_times(a, b, keep, lse, b)  # (B, r): Σ_j P_ij b_j, its own pass (no B×B kept)
    return lse, jnp.sum(da * pb, axis=1) + jnp.sum(a * _softmax_times_transposed(a, b, keep, lse, db), axis=1)


def infonce(z, z_pos, *, temperature=1.0, similarity: str = "dot", symmetric: bool = False, mask=None,
            reduction: str = "mean", implementation: str | None = None):
    r"""InfoNCE with in-batch negatives.

    .. math::
       \ell_{ij} = s(z_i, z^+_j)/\tau, \qquad
       L_i = \log\sum_j e^{\ell_{ij}} - \ell_{ii}, \qquad L = \frac1B\sum_i L_i,

    the softmax cross-entropy of the logits with labels arange(B). The negatives of
    row i are the positives z⁺_j of the other rows (j ≠ i); the positive z⁺_i is in
    the denominator too. ``symmetric=True`` averages this with the column direction,
    :math:`L_i = \tfrac12[(\log\sum_j e^{\ell_{ij}} - \ell_{ii}) + (\log\sum_j e^{\ell_{ji}} - \ell_{ii})]`.
    With a mask, B is the number of rows kept and i, j run over them.

    Relation to ``optax.losses.ntxent`` (SimCLR's NT-Xent) on
    ``concatenate([z, z_pos])`` with labels ``[0..B-1, 0..B-1]``: NT-Xent's anchor z_i
    also counts the same-view rows z_j (j ≠ i) as negatives, 2B − 2 in all, where this
    loss counts only the other view's B − 1. So with ``similarity="cosine",
    symmetric=True`` this loss is NT-Xent without same-view negatives, and is never
    larger than it (tested).

    Three code paths, the same value, gradient and JVP to float32 rounding (tested),
    chosen by ``implementation`` (:func:`gmmssl.backend.contrastive_implementation`):
    "low_rank" (:func:`low_rank_logsumexp`: the logits as r outer products inside the
    reductions, no B×B matmul; the default on the CPU for r ≤ :data:`SMALL_RANK`),
    "xla" (the (B, B) logits matrix and :func:`row_logsumexp`; the default otherwise),
    "pallas" (fused tiles with an online log-sum-exp, the logits never in memory, in
    value, gradient and JVP with ``reduction="mean"``; :mod:`gmmssl.losses._pallas`).
    All have custom JVPs, so forward mode (``jax.jvp``, ``jax.jacfwd``) and reverse mode
    work.

    Args:
      z: (B, r) embeddings of the samples.
      z_pos: (B, r) embeddings of their augmentations.
      temperature: τ > 0 (may be traced).
      similarity: "dot" (the linear theory's choice) or "cosine" (rows normalized
        NaN-safely: zero rows give zero similarity).
      symmetric: average both directions.
      mask: None or (B,) booleans (dtype bool): rows with False (padding) are neither
        anchors nor negatives, selected out before any arithmetic: a NaN or inf in them
        reaches neither the value nor a gradient (theirs is exactly 0). A concrete mask
        keeping fewer than 2 rows is refused (ValueError); a traced one keeping no row
        gives NaN, with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" (the scalar mean over the rows kept) or "none" (the (B,)
        per-example values L_i, 0 on masked rows).
      implementation: None (the backend's measured best), "xla", "low_rank" or "pallas".

    Returns:
      scalar loss, or (B,) with ``reduction="none"``.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.eye(3)
      >>> round(float(infonce(z, z, temperature=0.1)), 4)
      0.0001
      >>> infonce(z, z, reduction="none").shape
      (3,)
    """
    check_pair(z, z_pos, min_batch=2)
    check_choice("reduction", reduction, REDUCTIONS)
    keep = check_mask(mask, z.shape[0], min_rows=2)
    if keep is None:
        cols = None
    else:  # masked rows are 0 before any arithmetic: nothing of theirs reaches a value or gradient
        z, z_pos = keep_rows(keep, z, z_pos)
        cols = safe_columns(keep)
    path = contrastive_implementation(implementation, z.shape[1], small_rank=SMALL_RANK)
    if path != "xla":  # the fused paths: the same value and gradient
        z, z_pos = similarity_inputs(z, z_pos, temperature, similarity)
        a = z / traced_in_range(temperature, low_open=0.0)
        diag = jnp.sum(a * z_pos, axis=1)
        weights = jnp.ones(z.shape[:1], z.dtype) if cols is None else cols.astype(z.dtype)
        if path == "pallas":
            return _pallas_loss(a, z_pos, weights, diag, keep, reduction, symmetric)
        values = low_rank_logsumexp(a, z_pos, weights) - diag
        if symmetric:
            values = 0.5 * (values + low_rank_logsumexp(z_pos, a, weights) - diag)
        return reduce(values, keep, reduction)
    logits = similarity_logits(z, z_pos, temperature, similarity)
    diag = jnp.diagonal(logits)
    values = row_logsumexp(logits if cols is None else jnp.where(cols[None, :], logits, -jnp.inf)) - diag
    if symmetric:
        values = 0.5 * (values + row_logsumexp(logits.T if cols is None else
                                               jnp.where(cols[None, :], logits.T, -jnp.inf)) - diag)
    return reduce(values, keep, reduction)


def _pallas_loss(a, b, cols, positive, keep, reduction, symmetric, *, exclude_self=False, pair_half=None,
                 pair_mean=False):
    """The in-batch loss from the fused kernels: lse_i (over b's rows, both directions when
    ``symmetric``) minus the positive logit, reduced. With ``pair_mean`` the anchors are
    the 2B rows of [z; z⁺] and a pair's value is the mean of its two anchors' (NT-Xent,
    DCL). "mean" is one weighted sum (:func:`gmmssl.losses._pallas.lse_sum`: no B×B array
    in its value, gradient or JVP); "none" the rows themselves (:func:`lse_rows`)."""
    directions = [(a, b), (b, a)] if symmetric else [(a, b)]
    if reduction == "none":
        values = sum(_pallas.lse_rows(x, y, cols, exclude_self, pair_half) - positive for x, y in directions)
        values = values / len(directions)
        if pair_mean:
            half = values.shape[0] // 2
            values = 0.5 * (values[:half] + values[half:])
        return reduce(values, keep, reduction)
    rows = cols.shape[0] // (2 if pair_mean else 1)
    kept = jnp.ones((rows,), a.dtype) if keep is None else keep.astype(a.dtype)
    n = jnp.sum(kept)
    w = kept / jnp.maximum(n, 1.0)
    if pair_mean:
        w = 0.5 * jnp.concatenate([w, w])
    total = sum(_pallas.lse_sum(x, y, cols, w, exclude_self, pair_half) for x, y in directions) / len(directions)
    loss = total - jnp.sum(w * positive)
    return jnp.where(n > 0, loss, jnp.nan)


def clip(z_a, z_b, *, temperature=1.0, similarity: str = "dot", mask=None, reduction: str = "mean",
         implementation: str | None = None):
    r"""CLIP: symmetric InfoNCE between two modalities' embeddings of matched pairs.

    .. math::
       \ell_{ij} = s(z^a_i, z^b_j)/\tau,\quad
       L = \tfrac12\Big(\frac1B\sum_i[\log\sum_j e^{\ell_{ij}} - \ell_{ii}]
           + \frac1B\sum_j[\log\sum_i e^{\ell_{ij}} - \ell_{jj}]\Big)

    Each modality has its own projector (z_a = x_a A_a, z_b = x_b A_b), so both must
    embed into the same r.

    Args:
      z_a: (B, r) first modality; z_b: (B, r) second modality, row i paired with z_a's row i.
      mask, reduction: as in :func:`infonce` (a boolean mask; padded pairs are selected
        out before any arithmetic; a concrete mask keeping fewer than 2 rows is refused, a
        traced one keeping no row gives NaN with zero gradients).
      implementation: as in :func:`infonce`.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(clip(jnp.eye(2), jnp.eye(2), temperature=0.5)), 4)
      0.1269
    """
    check_pair(z_a, z_b, names=("z_a", "z_b"), min_batch=2)
    return infonce(z_a, z_b, temperature=temperature, similarity=similarity, symmetric=True, mask=mask,
                   reduction=reduction, implementation=implementation)


def infonce_population(z, z_pos, neg_means, neg_cov, neg_log_weights, *, temperature=1.0, mask=None,
                       reduction: str = "mean"):
    r"""InfoNCE with infinitely many negatives drawn from a Gaussian mixture, in closed form.

    For embeddings z' = x'A of negatives x' from the mixture, the embedded negatives are
    a mixture with means m_j = μ_j A (K, r) and covariance S = AᵀΣA (r, r), and the
    moment generating function gives

    .. math::
       \log E_{x'} e^{z\cdot z'/\tau} = \log\sum_j \pi_j
           \exp\big(z\cdot m_j/\tau + \tfrac12 z S z^\top/\tau^2\big),

    so the loss is :math:`\frac1B\sum_i[-z_i\cdot z^+_i/\tau + \log E_{x'}e^{z_i\cdot z'/\tau}]`,
    dot similarity only. Cost O(B(Kr + r²)) on top of m and S (O(Kdr + dr²)); there is
    no B×B matrix and no negative-sampling noise. As B grows, sampled
    ``infonce(z, z_pos) − log B`` tends to this value (tested).

    Args:
      z, z_pos: (B, r) embeddings of the pairs.
      neg_means: (K, r) embedded component means μ_j A.
      neg_cov: (r, r) embedded shared covariance AᵀΣA.
      neg_log_weights: (K,) log mixture weights log π_j.
      temperature: τ > 0.
      mask: None or (B,) booleans (dtype bool): rows with False (padding) are left out of
        the mean, selected out before any arithmetic (a NaN or inf in them reaches neither
        the value nor a gradient). A concrete mask keeping no row is refused (ValueError);
        a traced one gives NaN, with zero gradients (:mod:`gmmssl.losses`).
      reduction: "mean" or "none" (the (B,) per-example values, 0 on masked rows).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.zeros((2, 1))
      >>> float(infonce_population(z, z, jnp.zeros((2, 1)), jnp.eye(1), jnp.log(jnp.array([0.5, 0.5]))))
      0.0
    """
    check_pair(z, z_pos)
    chex.assert_rank([neg_means, neg_cov, neg_log_weights], [2, 2, 1])
    chex.assert_equal_shape_suffix([z, neg_means], 1, custom_message="neg_means must be (K, r)")
    chex.assert_shape(neg_cov, (z.shape[1], z.shape[1]), custom_message="neg_cov must be (r, r)")
    chex.assert_shape(neg_log_weights, (neg_means.shape[0],), custom_message="neg_log_weights must be (K,)")
    check_range("temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True)
    keep = check_mask(mask, z.shape[0])
    z, z_pos = keep_rows(keep, z, z_pos)
    t = temperature
    quad = 0.5 * jnp.einsum("br,rs,bs->b", z, neg_cov, z) / t**2  # (B,)
    lin = z @ neg_means.T / t  # (B, K)
    log_mgf = logsumexp(lin + neg_log_weights[None, :], axis=1) + quad
    return reduce(log_mgf - jnp.sum(z * z_pos, axis=1) / t, keep, reduction)
