"""One large grid through the sweep engine, chunked automatically: wall time, throughput,
chunk size and peak resident memory. Run in its own process so the peak is its own:

    python -m gmmssl.benchmarks.large_grid --cells 4096 --d 64 --r 8 --batch 256 --steps 200
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from gmmssl.benchmarks.common import environment, peak_rss_mb
from gmmssl.evaluate import make_compare_cell
from gmmssl.gmm import parallel_pancakes
from gmmssl.sweep import Sweep, choose_chunk_size, default_budget_bytes, estimate_cell_bytes, run_grid
from gmmssl.train import TrainConfig


def run(cells: int, d: int, r: int, batch: int, steps: int, budget_mb: float | None = None, progress=print) -> dict:
    gmm = parallel_pancakes(d, 2)
    cfg = TrainConfig(r=r, batch_size=batch, steps=steps, log_every=min(50, steps))
    prepare_fn, train_fn, evaluate_fn = make_compare_cell(lambda cell: gmm, cfg, num_baseline=500, num_eval=500)
    seeds = max(1, cells // 16)
    axes = {"delta": tuple(np.linspace(0.0, 1.0, 16)), "seed": tuple(range(seeds))}
    cell_bytes = estimate_cell_bytes(d, r, batch)
    budget = default_budget_bytes() if budget_mb is None else int(budget_mb * 2**20)
    spec = Sweep(train_fn, evaluate_fn, axes, cell_bytes, prepare_fn)
    t = time.perf_counter()
    _, out = run_grid(spec, budget_bytes=budget, progress=progress)
    wall = time.perf_counter() - t
    n = 16 * seeds
    return {"cells": n, "d": d, "r": r, "batch": batch, "steps": steps, "wall_s": wall,
            "cells_per_s": n / wall, "model_steps_per_s": n * steps / wall,
            "chunk_size": choose_chunk_size(cell_bytes, n, len(jax.devices()), budget),
            "estimated_cell_mb": cell_bytes / 2**20, "budget_mb": budget / 2**20,
            "peak_rss_mb": peak_rss_mb(), "finite": bool(np.isfinite(out["metrics"]["infonce"]["fisher_capture"]).all()),
            "environment": environment()}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=4096)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--budget-mb", type=float, default=None)
    a = p.parse_args()
    print(json.dumps(run(a.cells, a.d, a.r, a.batch, a.steps, a.budget_mb), indent=2))
