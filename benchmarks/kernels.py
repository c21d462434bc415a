"""Loss kernels: forward and forward+backward of every loss against batch B, embedding r
and input d, with the FLOP count of the unavoidable work and the achieved fraction of the
machine's matmul peak, measured in the same run.

Unavoidable work (FLOPs, forward): the two embeddings x A and x⁺A (2·2·B·d·r) and, for
the sampled losses, the B×B logits (2·B²·r) and their softmax (≈ 3·B² exponentials,
sums and divisions, counted as 3·B² FLOPs). The population loss has no B×B term:
(2·B·K·r + 2·B·r² per batch). Forward+backward is counted as 3× forward (the usual
two matmuls of the backward pass per forward matmul).
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from gmmssl.benchmarks.common import timed
from gmmssl import losses

LOSSES = {
    "infonce": lambda z, zp, aux: losses.infonce(z, zp),
    "infonce_cosine_sym": lambda z, zp, aux: losses.infonce(z, zp, similarity="cosine", symmetric=True),
    "clip": lambda z, zp, aux: losses.clip(z, zp),
    "simsiam": lambda z, zp, aux: losses.simsiam(z, zp, xi=0.5),
    "spectral": lambda z, zp, aux: losses.spectral_contrastive(z, zp),
    "infonce_population": lambda z, zp, aux: losses.infonce_population(z, zp, *aux),
}
SAMPLED = {"infonce", "infonce_cosine_sym", "clip", "spectral"}


def flops(loss: str, b: int, d: int, r: int, k: int = 4) -> float:
    embed = 2 * 2 * b * d * r
    if loss in SAMPLED:
        return embed + 2 * b * b * r + 3 * b * b
    if loss == "infonce_population":
        return embed + 2 * b * k * r + 2 * b * r * r
    return embed + 2 * b * r * r  # simsiam: the r×r covariance


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    t = timed(lambda x, y: x @ y, a, a, repeats=repeats)
    return {"n": n, "flops_per_s": 2 * n**3 / t["median_s"], **t}


def run(batches=(256, 1024, 4096, 8192), ranks=(2, 16, 128), dims=(32, 512), names=None, repeats: int = 5):
    peak = matmul_peak(repeats=repeats)
    rows = []
    for name, b, r, d in itertools.product(names or LOSSES, batches, ranks, dims):
        if r > d:
            continue
        keys = jax.random.split(jax.random.PRNGKey(1), 4)
        x = jax.random.normal(keys[0], (b, d))
        xp = jax.random.normal(keys[1], (b, d))
        a = jax.random.normal(keys[2], (d, r)) / jnp.sqrt(d)
        aux = (jax.random.normal(keys[3], (4, r)), jnp.eye(r), jnp.log(jnp.full((4,), 0.25)))
        loss = LOSSES[name]

        def forward(a, x, xp):
            return loss(x @ a, xp @ a, aux)

        for mode, fn in (("forward", forward), ("forward+backward", jax.value_and_grad(forward))):
            t = timed(fn, a, x, xp, repeats=repeats)
            work = flops(name, b, d, r) * (1 if mode == "forward" else 3)
            rows.append({"loss": name, "mode": mode, "B": b, "r": r, "d": d, **t, "flops": work,
                         "flops_per_s": work / t["median_s"], "fraction_of_peak": work / t["median_s"] / peak["flops_per_s"]})
    return {"matmul_peak": peak, "rows": rows}


def step_times(names=None, *, d: int = 12, num_components: int = 3, r: int = 2, batch_size: int = 256,
               steps: int = 200, repeats: int = 5) -> list[dict]:
    """Time per training step of every trainable loss (the zoo's table): one model, a
    whole ``train`` of ``steps`` steps compiled ahead of time, median over ``repeats``
    runs divided by the steps (sampling, loss, gradient and optimizer update included)."""
    from gmmssl.gmm import random_gmm
    from gmmssl.train import OBJECTIVES, TrainConfig, train

    gmm = random_gmm(jax.random.PRNGKey(0), d, num_components)
    rows = []
    for name in names or [n for n, o in OBJECTIVES.items() if o.data is None or type(gmm) in o.data]:
        cfg = TrainConfig(loss=name, r=r, batch_size=batch_size, steps=steps, log_every=steps)
        t = timed(lambda k, cfg=cfg: train(k, gmm, {"delta": 1.0}, cfg).params, jax.random.PRNGKey(1),
                  repeats=repeats)
        rows.append({"loss": name, "ms_per_step": 1e3 * t["median_s"] / steps, "compile_s": t["compile_s"],
                     "B": batch_size, "d": d, "r": r})
    return rows
