"""dimension: the comparison against the ambient dimension d from 8 to 512 (random
anisotropic mixtures, K = 3, δ = 0.5 and 1).

Predictions, stated before running: InfoNCE's mean capture stays ≥ 0.95 at every d at
δ = 1 (the Fisher subspace is found whatever the ambient dimension), while PCA's mean
capture stays below InfoNCE's at every d.
"""
from __future__ import annotations

from gmmssl.experiments._compare import by_method_x, comparison, groups
from gmmssl import results

DEFAULTS = {
    "mixture": "random",
    "d": (8, 32, 128, 512),
    "num_components": 3,
    "r": 2,
    "delta": (0.5, 1.0),
    "seeds": 3,
    "steps": 600,
    "batch_size": 256,
    "num_baseline": 4000,
}
# --set scale=paper: the paper gives no grid sizes, so larger ones (more seeds, finer grids, longer training)
PRESETS = {"paper": {"d": (8, 16, 32, 64, 128, 256, 512), "delta": (0.25, 0.5, 0.75, 1.0), "seeds": 8, "steps": 1000}}


def claims(run):
    out = []
    for title, rows, parts in groups(run, "d"):
        loss = parts[0].config["loss"]
        for delta in sorted({r["delta"] for r in rows}):
            by = by_method_x([r for r in rows if r["delta"] == delta], "d")
            ds = sorted({d for _, d in by})
            if delta == 1.0:
                out.append(results.claim(f"{loss} at δ=1: mean capture, worst d",
                                         min(by[(loss, d)]["fisher_capture_mean"] for d in ds), ">=", 0.95))
            out.append(results.claim(f"{loss} minus PCA at δ={delta:g}: mean capture, worst d",
                                     min(by[(loss, d)]["fisher_capture_mean"] - by[("pca", d)]["fisher_capture_mean"]
                                         for d in ds), ">=", 0.0))
    return out


EXPERIMENT = comparison("dimension", "The comparison against the dimension d from 8 to 512.", DEFAULTS, claims, x="d",
                        presets=PRESETS)
