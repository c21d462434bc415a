"""Sweeps: trained models × steps per second against the grid size G, for the pancakes and
delta training configurations, beside the loops users would otherwise write:

* ``grid``: gmmssl's one vmapped, jitted call over the G models (train phase only), at
  the float32 matmul precision gmmssl uses (:func:`gmmssl.backend.matmul_precision`,
  "highest") and, with ``precisions``, at others side by side (the cost of float32 matmuls
  against a GPU's TF32 default, "default");
* ``handwritten``: the program a JAX user would write in an afternoon, timed side by side
  at the same G and chunks: ``jit(vmap(train))`` of a ``lax.scan`` of ``optax.adam``
  steps on the logits (xA)(x⁺A)ᵀ with ``optax.softmax_cross_entropy_with_integer_labels``,
  its own AeD(δ) sampler, nothing else (no schedule, validation or history); each grid row
  gets ``ratio_to_handwritten`` (its model-steps/s over the hand-written program's);
* ``loop_models``: a Python loop over G single-model jitted runs (each a whole scan);
* ``loop_steps``: a Python loop dispatching one jitted optimizer step at a time;
* ``torch_loop``: the pancakes training as a plain PyTorch loop (when torch is installed).

Compile time is reported apart from steady state; each figure is a median over repeats.
"""
from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gmmssl.backend import contrastive_implementation, cpu_measures, matmul_precision
from gmmssl.benchmarks.common import peak_rss_mb, time_stats
from gmmssl import losses
from gmmssl.losses import SMALL_RANK
from gmmssl.augment import sample_pairs
from gmmssl.gmm import parallel_pancakes, random_gmm
from gmmssl.sweep import CPU_MAX_CHUNK, choose_chunk_size, estimate_cell_bytes
from gmmssl.train import TrainConfig, train

CONFIGS = {
    "pancakes": dict(gmm=lambda: parallel_pancakes(20, 2), cfg=TrainConfig(r=2, batch_size=512, steps=100, log_every=100)),
    "delta": dict(gmm=lambda: random_gmm(jax.random.PRNGKey(0), 16, 3), cfg=TrainConfig(r=2, batch_size=256, steps=100,
                                                                                       log_every=100)),
}


def _grid_fn(gmm, cfg):
    def one(key, delta):
        return train(key, gmm, {"delta": delta}, cfg).params["A"]
    return jax.vmap(one)


def _grid_timed(gmm, cfg, g: int, repeats: int, budget_bytes: int | None, max_cells: int | None = None,
                handwritten: bool = False):
    """The grid method over G models, in chunks sized by the sweep engine's memory estimate
    (so G = 4096 stays within the budget): compile the chunk once, warm up on one chunk,
    then time whole passes over the G models."""
    cell = estimate_cell_bytes(gmm.dim, cfg.r, cfg.batch_size)
    chunk = choose_chunk_size(cell, g, budget_bytes=budget_bytes, max_cells=max_cells)
    num_chunks = -(-g // chunk)
    keys = jax.random.split(jax.random.PRNGKey(0), num_chunks * chunk).reshape(num_chunks, chunk, -1)
    deltas = jnp.linspace(0.1, 1.0, num_chunks * chunk).reshape(num_chunks, chunk)
    t0 = time.perf_counter()
    fn = _handwritten_fn(gmm, cfg) if handwritten else _grid_fn(gmm, cfg)
    compiled = jax.jit(fn).lower(keys[0], deltas[0]).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(keys[0], deltas[0]))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(num_chunks):
            jax.block_until_ready(compiled(keys[i], deltas[i]))
        times.append(time.perf_counter() - t)
    # padding cells (num_chunks * chunk − g) are trained too; count only the g asked for
    return {"compile_s": compile_s, **time_stats(times), "chunk_size": chunk, "num_chunks": num_chunks,
            "cell_bytes_estimate": cell}


def _handwritten_fn(gmm, cfg, learning_rate: float = 0.05):
    """The hand-written baseline: one model's training as a user would write it, vmapped."""
    means, chol, k = gmm.means, gmm.chol, gmm.num_components
    tx = optax.adam(learning_rate)

    def one(key, delta):
        k_init, k_data = jax.random.split(key)
        a = jax.random.normal(k_init, (gmm.dim, cfg.r)) / jnp.sqrt(gmm.dim)

        def step(carry, t):
            a, opt = carry
            k_c, k_u, k_o, k_e, k_p = jax.random.split(jax.random.fold_in(k_data, t), 5)
            c = jax.random.randint(k_c, (cfg.batch_size,), 0, k)
            c_pos = jnp.where(jax.random.uniform(k_u, (cfg.batch_size,)) < delta, c,
                              jax.random.randint(k_o, (cfg.batch_size,), 0, k))
            x = means[c] + jax.random.normal(k_e, (cfg.batch_size, gmm.dim)) @ chol.T
            x_pos = means[c_pos] + jax.random.normal(k_p, (cfg.batch_size, gmm.dim)) @ chol.T

            def loss(a):
                logits = (x @ a) @ (x_pos @ a).T
                return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(cfg.batch_size)).mean()

            value, grad = jax.value_and_grad(loss)(a)
            updates, opt = tx.update(grad, opt, a)
            return (optax.apply_updates(a, updates), opt), value

        (a, _), _ = jax.lax.scan(step, (a, tx.init(a)), jnp.arange(cfg.steps))
        return a

    return jax.vmap(one)


def run(configs=("pancakes", "delta"), sizes=(1, 16, 256, 4096), loop_sizes=(1, 16), repeats: int = 3,
        budget_bytes: int | None = None, max_cells: int | None = None, steps: int | None = None,
        precisions=(None,), implementations=(None,)):
    """Rows of model-steps/s per (config, method, G); large grids are timed once (repeats
    fall to 1 above G = 256, where one pass takes minutes on a CPU). ``steps`` replaces
    the configurations' 100 training steps (the quick smoke test uses fewer). The grid
    method is timed at each of ``precisions`` (None: gmmssl's own,
    :func:`gmmssl.backend.matmul_precision`; else a ``jax.default_matmul_precision`` value),
    each row naming the precision it ran at, and at each of ``implementations`` of the
    contrastive loss (``TrainConfig.implementation``; None: the backend's default), each
    row naming the code path it took."""
    rows = []
    if max_cells is None and cpu_measures():
        max_cells = CPU_MAX_CHUNK  # as the sweep engine does
    for name in configs:
        gmm, cfg = CONFIGS[name]["gmm"](), CONFIGS[name]["cfg"]
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=steps, log_every=steps)
        for g in sizes:
            for precision, impl in itertools.product(precisions, implementations):
                with jax.default_matmul_precision(precision or matmul_precision()):
                    t = _grid_timed(gmm, dataclasses.replace(cfg, implementation=impl), g,
                                    repeats if g <= 256 else 1, budget_bytes, max_cells)
                    used = matmul_precision()
                path = contrastive_implementation(impl, cfg.r, small_rank=SMALL_RANK)
                rows.append({"config": name, "method": "grid", "precision": used, "implementation": path, "G": g,
                             **t, "model_steps_per_s": g * cfg.steps / t["median_s"], "peak_rss_mb": peak_rss_mb()})
            with jax.default_matmul_precision(matmul_precision()):  # the grid's own precision, side by side
                t = _grid_timed(gmm, cfg, g, repeats if g <= 256 else 1, budget_bytes, max_cells, handwritten=True)
            hand = g * cfg.steps / t["median_s"]
            rows.append({"config": name, "method": "handwritten", "precision": matmul_precision(), "G": g, **t,
                         "model_steps_per_s": hand, "peak_rss_mb": peak_rss_mb()})
            for row in rows:
                if row["config"] == name and row["method"] == "grid" and row["G"] == g:
                    row["ratio_to_handwritten"] = row["model_steps_per_s"] / hand
        single = jax.jit(lambda k, d: train(k, gmm, {"delta": d}, cfg).params["A"])
        step = _one_step(gmm, cfg)
        for g in loop_sizes:
            keys = jax.random.split(jax.random.PRNGKey(0), g)
            jax.block_until_ready(single(keys[0], 0.5))  # compile
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                jax.block_until_ready([single(keys[i], 0.5) for i in range(g)])
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            rows.append({"config": name, "method": "loop_models", "G": g, "median_s": med,
                         "model_steps_per_s": g * cfg.steps / med})
            state = step.init(keys[0])
            jax.block_until_ready(step.update(state, 0))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i in range(g):
                    s = step.init(keys[i])
                    for t_ in range(cfg.steps):
                        s = step.update(s, t_)
                    jax.block_until_ready(s)
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            rows.append({"config": name, "method": "loop_steps", "G": g, "median_s": med,
                         "model_steps_per_s": g * cfg.steps / med})
    if "pancakes" in configs and loop_sizes:
        from gmmssl.benchmarks import torch_loop

        if torch_loop.available():
            rows.append(torch_loop.run(models=max(loop_sizes), steps=steps or CONFIGS["pancakes"]["cfg"].steps,
                                       repeats=repeats))
    return {"rows": rows}


class _Step:
    def __init__(self, init, update):
        self.init, self.update = init, update


def _one_step(gmm, cfg):
    tx = optax.adam(0.05)

    def init(key):
        a = jax.random.normal(key, (gmm.dim, cfg.r)) / jnp.sqrt(gmm.dim)
        return (a, tx.init(a), key)

    @jax.jit
    def update(state, t):
        a, opt, key = state
        x, xp, _, _ = sample_pairs(jax.random.fold_in(key, t), gmm, cfg.batch_size, 0.5)
        grad = jax.grad(lambda a: losses.infonce(x @ a, xp @ a))(a)
        upd, opt = tx.update(grad, opt, a)
        return (optax.apply_updates(a, upd), opt, key)

    return _Step(init, update)
