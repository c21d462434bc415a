"""Loss kernels: forward and forward+backward of every loss against batch B, embedding r
and input d, on each code path of the in-batch contrastive losses ("xla", "low_rank",
"pallas"), with the FLOP count of the unavoidable work and the fraction it achieves of
three rates measured in the same run: a 2048² float32 matmul's (a reference, not a
peak: on a GPU a low-rank kernel reached 1.03 of it), the memory bandwidth of a
device-to-device copy, and the throughput of exponentials (a fused chain of exp, in
registers). ``fraction_of_bound`` is the time those rates allow (the largest of: the
FLOPs at the matmul rate, the B² exponentials at the exp rate, the inputs read once at
the bandwidth) over the time measured.

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
    "infonce": lambda z, zp, aux, impl=None: losses.infonce(z, zp, implementation=impl),
    "infonce_cosine_sym": lambda z, zp, aux, impl=None: losses.infonce(z, zp, similarity="cosine", symmetric=True,
                                                                       implementation=impl),
    "clip": lambda z, zp, aux, impl=None: losses.clip(z, zp, implementation=impl),
    "ntxent": lambda z, zp, aux, impl=None: losses.ntxent(z, zp, implementation=impl),
    "simsiam": lambda z, zp, aux: losses.simsiam(z, zp, xi=0.5),
    "spectral": lambda z, zp, aux: losses.spectral_contrastive(z, zp),
    "infonce_population": lambda z, zp, aux: losses.infonce_population(z, zp, *aux),
}
SAMPLED = {"infonce", "infonce_cosine_sym", "clip", "ntxent", "spectral"}
IN_BATCH = {"infonce": ("xla", "low_rank", "pallas"), "infonce_cosine_sym": ("xla", "low_rank", "pallas"),
            "clip": ("xla", "low_rank", "pallas"), "ntxent": ("xla", "pallas")}  # their code paths


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


def bounds(repeats: int = 5, n: int = 1 << 26) -> dict:
    """The memory bandwidth (bytes/s of a device-to-device copy of n float32, 256 MiB by
    default, read and written) and the exponential throughput (exps/s of a fused chain of
    32 exp per element, which reads and writes each element once) of the default device."""
    x = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)
    copy = timed(lambda x: x + 0.0, x, repeats=repeats)

    def chain(x):
        for _ in range(32):
            x = jnp.exp(-jnp.abs(x))
        return x

    exps = timed(chain, x, repeats=repeats)
    return {"bandwidth_bytes_per_s": 2 * 4 * n / copy["median_s"], "exps_per_s": 32 * n / exps["median_s"],
            "copy": copy, "exp_chain": exps}


def _bound_s(name: str, mode: str, b: int, d: int, r: int, peak: dict, limits: dict) -> float:
    """The time the measured rates allow for the unavoidable work (see the module docstring)."""
    times = 3 if mode != "forward" else 1
    exps = (b * b if name in SAMPLED and name != "ntxent" else 4 * b * b if name == "ntxent" else 0) * times
    return max(flops(name, b, d, r) * times / peak["flops_per_s"], exps / limits["exps_per_s"],
               4 * (2 * b * d + d * r) / limits["bandwidth_bytes_per_s"])


def run(batches=(256, 1024, 4096, 8192), ranks=(2, 16, 128), dims=(32, 512), names=None, repeats: int = 5,
        implementations=None, bound_size: int = 1 << 26):
    """Rows per (loss, code path, B, r, d, mode). ``implementations``: the code paths timed
    for the in-batch losses (default: every one; "pallas" is interpreted off GPU and TPU,
    so it is left out there unless asked for)."""
    peak = matmul_peak(repeats=repeats)
    limits = bounds(repeats=repeats, n=bound_size)
    if implementations is None:
        implementations = ("xla", "low_rank") + (("pallas",) if jax.default_backend() in ("gpu", "tpu") else ())
    rows = []
    for name, b, r, d in itertools.product(names or LOSSES, batches, ranks, dims):
        if r > d:
            continue
        keys = jax.random.split(jax.random.PRNGKey(1), 4)
        x = jax.random.normal(keys[0], (b, d))
        xp = jax.random.normal(keys[1], (b, d))
        a = jax.random.normal(keys[2], (d, r)) / jnp.sqrt(d)
        aux = (jax.random.normal(keys[3], (4, r)), jnp.eye(r), jnp.log(jnp.full((4,), 0.25)))
        for impl in [i for i in IN_BATCH.get(name, (None,)) if i is None or i in implementations]:
            def forward(a, x, xp, loss=LOSSES[name], impl=impl):
                return loss(x @ a, xp @ a, aux) if impl is None else loss(x @ a, xp @ a, aux, impl)

            for mode, fn in (("forward", forward), ("forward+backward", jax.value_and_grad(forward))):
                t = timed(fn, a, x, xp, repeats=repeats)
                work = flops(name, b, d, r) * (1 if mode == "forward" else 3)
                rows.append({"loss": name, "implementation": impl or "-", "mode": mode, "B": b, "r": r, "d": d, **t,
                             "flops": work, "flops_per_s": work / t["median_s"],
                             "fraction_of_matmul": work / t["median_s"] / peak["flops_per_s"],
                             "fraction_of_bound": _bound_s(name, mode, b, d, r, peak, limits) / t["median_s"]})
    return {"matmul_reference": peak, "bounds": limits, "rows": rows}


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
