r"""InfoNCE with in-batch negatives, CLIP, and InfoNCE with analytic (population) negatives."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.nn import logsumexp

from gmmssl._validate import check_range
from gmmssl.losses._common import check_pair, similarity_inputs, similarity_logits


@jax.custom_vjp
def diagonal_cross_entropy(logits):
    r"""mean_i [logsumexp_j ℓ_ij − ℓ_ii] for square (B, B) logits: softmax cross-entropy
    with labels arange(B).

    A custom VJP keeps the softmax from the forward pass, so the backward pass is
    (softmax − I)/B with no second pass of exponentials over the B×B logits (measured:
    InfoNCE forward+backward at B = 4096, r = 128, d = 512 went from 0.144 s to 0.120 s on
    2 CPU cores; see benchmarks/README.md). Reverse mode only (no ``jax.jvp``).
    """
    return jnp.mean(logsumexp(logits, axis=1) - jnp.diagonal(logits))


def _xent_fwd(logits):
    m = jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
    e = jnp.exp(logits - m)
    s = jnp.sum(e, axis=1, keepdims=True)
    loss = jnp.mean(m[:, 0] + jnp.log(s[:, 0]) - jnp.diagonal(logits))
    return loss, e / s


def _xent_bwd(probs, g):
    b = probs.shape[0]
    return ((probs - jnp.eye(b, dtype=probs.dtype)) * (g / b),)


diagonal_cross_entropy.defvjp(_xent_fwd, _xent_bwd)

# Embedding widths up to this use the fused low-rank kernel below.
SMALL_RANK = 4


def _outer_logits(a, b):
    """ℓ_ij = Σ_k a_ik b_jk as a sum of r outer products: elementwise, so XLA fuses it into
    the reductions that consume it instead of running a (B, r) × (r, B) matmul."""
    out = a[:, 0, None] * b[None, :, 0]
    for k in range(1, a.shape[1]):
        out = out + a[:, k, None] * b[None, :, k]
    return out


@jax.custom_vjp
def low_rank_cross_entropy(a, b):
    r"""``diagonal_cross_entropy(a @ b.T)`` for small r = a.shape[1], without the matmul.

    mean_i [logsumexp_j a_i·b_j − a_i·b_i] for a, b (B, r). The forward pass keeps only
    the row log-sum-exps; the backward pass recomputes P = softmax(ℓ) row by row inside
    the reductions P b and Pᵀ a, so no B×B array is stored between the passes. Measured
    on the pancakes step (64 models, B = 512, r = 2; benchmarks/README.md): the loss's
    forward+backward 58 ms → 48 ms and 69 ms → 52 ms in two side-by-side runs.
    """
    return _low_rank_fwd(a, b)[0]


def _low_rank_fwd(a, b):
    logits = _outer_logits(a, b)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=1))
    lse = m + jnp.log(jnp.sum(jnp.exp(logits - m[:, None]), axis=1))
    return jnp.mean(lse - jnp.sum(a * b, axis=1)), (a, b, lse)


def _low_rank_bwd(res, g):
    a, b, lse = res
    n = a.shape[0]
    p = jnp.exp(_outer_logits(a, b) - lse[:, None])
    pb = jnp.sum(p[:, :, None] * b[None, :, :], axis=1)  # (B, r): Σ_j P_ij b_j
    pt = jnp.exp(_outer_logits(b, a) - lse[None, :])  # P transposed
    pa = jnp.sum(pt[:, :, None] * a[None, :, :], axis=1)  # Σ_i P_ij a_i
    return (pb - b) * (g / n), (pa - a) * (g / n)


low_rank_cross_entropy.defvjp(_low_rank_fwd, _low_rank_bwd)


def infonce(z, z_pos, *, temperature=1.0, similarity: str = "dot", symmetric: bool = False):
    r"""InfoNCE with in-batch negatives.

    .. math::
       \ell_{ij} = s(z_i, z^+_j)/\tau, \qquad
       L = \frac1B\sum_i \Big[\log\sum_j e^{\ell_{ij}} - \ell_{ii}\Big],

    the softmax cross-entropy of the logits with labels arange(B). The negatives of
    row i are the positives z⁺_j of the other rows (j ≠ i); the positive z⁺_i is in
    the denominator too. ``symmetric=True`` averages this with the column direction
    :math:`\frac1B\sum_j[\log\sum_i e^{\ell_{ij}} - \ell_{jj}]`.

    Relation to ``optax.losses.ntxent`` (SimCLR's NT-Xent) on
    ``concatenate([z, z_pos])`` with labels ``[0..B-1, 0..B-1]``: NT-Xent's anchor z_i
    also counts the same-view rows z_j (j ≠ i) as negatives, 2B − 2 in all, where this
    loss counts only the other view's B − 1. So with ``similarity="cosine",
    symmetric=True`` this loss is NT-Xent without same-view negatives, and is never
    larger than it (tested).

    Args:
      z: (B, r) embeddings of the samples.
      z_pos: (B, r) embeddings of their augmentations.
      temperature: τ > 0 (may be traced).
      similarity: "dot" (the linear theory's choice) or "cosine" (rows normalized
        NaN-safely: zero rows give zero similarity).
      symmetric: average both directions.

    Returns:
      scalar mean loss.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.eye(3)
      >>> round(float(infonce(z, z, temperature=0.1)), 4)
      0.0001
    """
    check_pair(z, z_pos, min_batch=2)
    if z.shape[1] <= SMALL_RANK:  # the fused kernel; the same value and gradient (tested)
        z, z_pos = similarity_inputs(z, z_pos, temperature, similarity)
        a = z / temperature
        loss = low_rank_cross_entropy(a, z_pos)
        if symmetric:
            loss = 0.5 * (loss + low_rank_cross_entropy(z_pos, a))
        return loss
    logits = similarity_logits(z, z_pos, temperature, similarity)
    loss = diagonal_cross_entropy(logits)
    if symmetric:
        loss = 0.5 * (loss + diagonal_cross_entropy(logits.T))
    return loss


def clip(z_a, z_b, *, temperature=1.0, similarity: str = "dot"):
    r"""CLIP: symmetric InfoNCE between two modalities' embeddings of matched pairs.

    .. math::
       \ell_{ij} = s(z^a_i, z^b_j)/\tau,\quad
       L = \tfrac12\Big(\frac1B\sum_i[\log\sum_j e^{\ell_{ij}} - \ell_{ii}]
           + \frac1B\sum_j[\log\sum_i e^{\ell_{ij}} - \ell_{jj}]\Big)

    Each modality has its own projector (z_a = x_a A_a, z_b = x_b A_b), so both must
    embed into the same r.

    Args:
      z_a: (B, r) first modality; z_b: (B, r) second modality, row i paired with z_a's row i.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(clip(jnp.eye(2), jnp.eye(2), temperature=0.5)), 4)
      0.1269
    """
    check_pair(z_a, z_b, names=("z_a", "z_b"), min_batch=2)
    return infonce(z_a, z_b, temperature=temperature, similarity=similarity, symmetric=True)


def infonce_population(z, z_pos, neg_means, neg_cov, neg_log_weights, *, temperature=1.0):
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
    t = temperature
    quad = 0.5 * jnp.einsum("br,rs,bs->b", z, neg_cov, z) / t**2  # (B,)
    lin = z @ neg_means.T / t  # (B, K)
    log_mgf = logsumexp(lin + neg_log_weights[None, :], axis=1) + quad
    return jnp.mean(log_mgf - jnp.sum(z * z_pos, axis=1) / t)
