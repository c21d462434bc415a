"""rank: the embedding dimension r from 1 to K + 2 on a K = 4 random mixture (m = 3).

Predictions, stated before running: for r < m InfoNCE captures about r/m of S_F (mean
capture within 0.15 of r/m: it keeps r of the m Fisher directions, not a blend that
misses them all); for r ≥ m it captures all of it (mean ≥ 0.95). The extra r − m columns
are reported through the effective rank (do they collapse, or carry noise directions?).
"""
from __future__ import annotations

from experiments._compare import by_method_x, comparison
from gmmssl import results

DEFAULTS = {
    "mixture": "random",
    "d": 16,
    "num_components": 4,
    "r": (1, 2, 3, 4, 5, 6),
    "separation": 1.5,
    "delta": (1.0,),
    "seeds": 4,
    "steps": 600,
}


def claims(run):
    rows = run.rows
    loss = run.config["loss"]
    by = by_method_x(rows, "r")
    m = run.config["num_components"] - 1
    rs = sorted({r for _, r in by})
    out = []
    for r in rs:
        s = by[(loss, r)]
        if r < m:
            out.append(results.claim(f"r={r} < m={m}: abs(mean capture − r/m)", abs(s["fisher_capture_mean"] - r / m),
                                     "<=", 0.15))
        else:
            out.append(results.claim(f"r={r} ≥ m={m}: mean capture", s["fisher_capture_mean"], ">=", 0.95))
    return out


EXPERIMENT = comparison("rank", "The embedding dimension r from 1 to K + 2: which part of S_F is kept.",
                        DEFAULTS, claims, x="r")
