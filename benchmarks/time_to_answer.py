"""Time to answer: wall time for the ``delta`` experiment's default grid to reach its
verdict, trained with sampled InfoNCE at a large batch (B = 4096 in-batch negatives)
against ``infonce_population`` (analytic negatives, no B×B matrix), and when each first
reaches the same Fisher capture.

Both runs go through :func:`gmmssl.experiment.run_experiment` exactly as ``gmmssl run
delta --set loss=... --set batch_size=...`` would (baselines, evaluation, figures and
verdict included), so the wall time is what a user waits for. "Equal capture": the
target is the lower of the two runs' final mean Fisher capture over the cells with
δ ≥ 0.25 (the cells the verdict's capture claim is about); from each run's training
history (logged every ``log_every`` steps) we take the first step at which that mean
reaches the target, and scale the run's training time by the fraction of steps. That
scaling is an estimate (it charges evaluation and compilation in proportion); the full
wall times are reported beside it.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

LOSSES = ("infonce", "infonce_population")


def capture_curve(run, min_delta: float = 0.25):
    """(steps, mean capture) of the SSL projector over the cells with δ ≥ ``min_delta``."""
    part = run.parts[0]
    sel = part.grid["delta"] >= min_delta
    hist = np.asarray(part.outputs["history"]["fisher_capture"])[sel]
    steps = np.arange(1, hist.shape[1] + 1) * part.config["log_every"]
    return steps, hist.mean(axis=0)


def run(out_dir="results/bench/time_to_answer", batch_size: int = 4096, overrides: dict | None = None,
        progress=None) -> dict:
    """Runs the delta experiment once per loss; returns rows and the speed-up."""
    import gmmssl.experiments as experiments
    from gmmssl.experiment import run_experiment

    rows, curves = [], {}
    for loss in LOSSES:
        t0 = time.perf_counter()
        # overwrite: a timing must recompute every cell, never reuse a previous run's chunks
        result = run_experiment(experiments.get("delta"), Path(out_dir) / loss,
                                {**(overrides or {}), "loss": loss, "batch_size": batch_size}, progress=progress,
                                overwrite=True)
        wall = time.perf_counter() - t0
        steps, curve = capture_curve(result)
        curves[loss] = (steps, curve)
        rows.append({"loss": loss, "batch_size": batch_size, "wall_s": wall, "grid_s": result.seconds,
                     "num_cells": sum(len(p.grid["delta"]) for p in result.parts),
                     "claims_passed": sum(c.passed for c in result.claims), "num_claims": len(result.claims),
                     "verdict": all(c.passed for c in result.claims), "final_capture": float(curve[-1])})
    target = min(r["final_capture"] for r in rows)
    for r in rows:
        steps, curve = curves[r["loss"]]
        first = int(steps[int(np.argmax(curve >= target - 1e-12))])
        r.update(target_capture=target, steps_to_target=first,
                 time_to_target_s=r["grid_s"] * first / int(steps[-1]))
    by = {r["loss"]: r for r in rows}
    return {"rows": rows,
            "speedup_wall": by["infonce"]["wall_s"] / by["infonce_population"]["wall_s"],
            "speedup_to_target": by["infonce"]["time_to_target_s"] / by["infonce_population"]["time_to_target_s"]}
