"""The InfoNCE kernels before and after issue 12, side by side: the custom-VJP kernels
(reverse mode only; copied here from the commit before) against today's custom-JVP
kernels (both modes), forward+backward vmapped over models, median of 15 after compile.

``python -m gmmssl.benchmarks.jvp_vs_vjp`` (figures in benchmarks/README.md).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn import logsumexp

from gmmssl.losses import SMALL_RANK, infonce
from gmmssl.losses._infonce import _outer_logits  # the same logits as today's kernel

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




def infonce_vjp(z, z_pos, temperature=1.0):
    """The previous ``infonce`` (dot similarity, one direction)."""
    if z.shape[1] <= SMALL_RANK:
        return low_rank_cross_entropy(z / temperature, z_pos)
    return diagonal_cross_entropy(z @ z_pos.T / temperature)


def bench(loss, b, r, models, reps=15):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    z, zp = jax.random.normal(k1, (models, b, r)), jax.random.normal(k2, (models, b, r))
    f = jax.jit(jax.vmap(jax.value_and_grad(lambda a, c: loss(a, c, temperature=0.5), argnums=(0, 1))))
    jax.block_until_ready(f(z, zp))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(z, zp))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    for b, r, models in [(512, 2, 64), (512, 4, 64), (4096, 2, 1), (256, 16, 64)]:
        for rnd in range(2):
            old, new = bench(infonce_vjp, b, r, models), bench(infonce, b, r, models)
            print(f"B={b} r={r} models={models} round {rnd}: custom VJP {old * 1e3:.1f} ms, "
                  f"custom JVP {new * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
