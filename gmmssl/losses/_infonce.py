r"""InfoNCE, the contrastive loss with in-batch negatives."""
from __future__ import annotations

import jax.numpy as jnp
from jax.nn import logsumexp

from gmmssl.losses._common import check_pair, similarity_logits


def infonce(z, z_pos, *, temperature=1.0, similarity: str = "dot", symmetric: bool = False):
    r"""InfoNCE with in-batch negatives.

    .. math::
       \ell_{ij} = s(z_i, z^+_j)/\tau, \qquad
       L = \frac1B\sum_i \Big[\log\sum_j e^{\ell_{ij}} - \ell_{ii}\Big],

    the softmax cross-entropy of the logits with labels arange(B). The negatives of
    row i are the positives z⁺_j of the other rows (j ≠ i); the positive z⁺_i is in
    the denominator too. ``symmetric=True`` averages this with the column direction
    :math:`\frac1B\sum_j[\log\sum_i e^{\ell_{ij}} - \ell_{jj}]`.

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
    check_pair(z, z_pos)
    logits = similarity_logits(z, z_pos, temperature, similarity)
    positives = jnp.diagonal(logits)
    loss = jnp.mean(logsumexp(logits, axis=1) - positives)
    if symmetric:
        loss = 0.5 * (loss + jnp.mean(logsumexp(logits, axis=0) - positives))
    return loss
