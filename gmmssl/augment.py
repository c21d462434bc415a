r"""Training pairs (x, x⁺) whose second view comes from x's own component only with
probability δ: the paper's augmentation-enabled distribution AeD(δ), noisy augmentations.

For one pair: :math:`c \sim \pi`, :math:`u \sim U(0,1)`;
:math:`c^+ = c` if :math:`u < \delta`, otherwise :math:`c^+ = c'` where

* mode ``"prior"`` (default): :math:`c' \sim \pi`, independent of c;
* mode ``"other"``: c' uniform over the K−1 components other than c.

Then :math:`x = \mu_c + L\varepsilon`, :math:`x^+ = \mu_{c^+} + L\varepsilon^+`.
δ = 1 is the clean case, δ = 0 carries no information about c.

Common random numbers: for one key the draws (c, u, c', ε, ε⁺) do not depend on δ,
so cells of a δ-grid sharing a key differ only through δ.

Facts (tested): mode "prior" has :math:`P(c^+=c) = \delta + (1-\delta)\sum_k\pi_k^2`
and cross-covariance :math:`E[(x-\bar\mu)(x^+-\bar\mu)^\top] = \delta S_B`; mode
"other" (uniform π) has :math:`(\delta - (1-\delta)/(K-1)) S_B`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from gmmssl._validate import check_choice, check_int, check_range
from gmmssl.gmm import GMM

__all__ = ["MODES", "sample_pairs"]

MODES = ("prior", "other")


def sample_pairs(key, gmm: GMM, n: int, delta, mode: str = "prior"):
    """Draws n pairs from AeD(δ).

    Args:
      key: PRNG key; the same key gives the same underlying draws for every δ.
      gmm: the mixture.
      n: number of pairs (static).
      delta: probability in [0, 1] that x⁺ comes from x's own component
        (may be a traced scalar: a concrete value out of range raises ValueError, a
        traced one makes x and x⁺ NaN rather than act as the nearest valid δ).
      mode: "prior" or "other" (static).

    Returns:
      x: (n, d), x_pos: (n, d), c: (n,) int32, c_pos: (n,) int32.

    Example:
      >>> import jax
      >>> from gmmssl.gmm import parallel_pancakes
      >>> x, xp, c, cp = sample_pairs(jax.random.PRNGKey(0), parallel_pancakes(4), 8, 0.5)
      >>> x.shape, c.shape
      ((8, 4), (8,))
    """
    n = check_int("n", n, low=1)
    check_choice("mode", mode, MODES)
    check_range("delta", delta, 0.0, 1.0)
    k = gmm.num_components
    k_c, k_u, k_other, k_eps, k_eps_pos = jax.random.split(key, 5)
    logits = jnp.log(gmm.weights)
    c = jax.random.categorical(k_c, logits, shape=(n,))
    u = jax.random.uniform(k_u, (n,), dtype=gmm.means.dtype)
    if mode == "prior":
        other = jax.random.categorical(k_other, logits, shape=(n,))
    else:
        shift = jax.random.randint(k_other, (n,), 1, k)
        other = (c + shift) % k
    c_pos = jnp.where(u < delta, c, other)
    eps = jax.random.normal(k_eps, (n, gmm.dim), dtype=gmm.means.dtype)
    eps_pos = jax.random.normal(k_eps_pos, (n, gmm.dim), dtype=gmm.means.dtype)
    x = gmm.means[c] + gmm.noise(c, eps)
    x_pos = gmm.means[c_pos] + gmm.noise(c_pos, eps_pos)
    valid = (delta >= 0.0) & (delta <= 1.0)  # False for NaN too
    x, x_pos = jnp.where(valid, x, jnp.nan), jnp.where(valid, x_pos, jnp.nan)
    return x, x_pos, c.astype(jnp.int32), c_pos.astype(jnp.int32)
