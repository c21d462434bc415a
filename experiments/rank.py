"""rank: the embedding dimension r from 1 to K + 2 on a K = 4 random mixture (m = 3).

Predictions, stated before running: for r < m InfoNCE keeps r of the m Fisher
directions, not a blend that leaves S_F: col(A) lies inside S_F, so the largest principal
angle between col(A) and S_F is at most 10° in every seed (capture is then r/m; capture
alone could not fail from above, since a rank-r projector never captures more than r/m).
For r ≥ m it captures all of S_F: the largest of the m principal angles is at most 10°
in every seed. For r > m the extra r − m columns collapse *in the embedding*: the
effective rank of z = xA (singular values of z, i.e. eigenvalues of AᵀΣ_T A; A's own
singular values would hide this on anisotropic data) is at most m + 0.5 in every seed.
"""
from __future__ import annotations

from gmmssl.experiments._compare import by_method_x, comparison, population
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
# --set scale=paper: the paper gives no grid sizes, so larger ones (more seeds, finer grids, longer training)
PRESETS = {"paper": {"delta": (0.5, 1.0), "seeds": 10, "steps": 1000}}


def claims(run):
    rows = run.rows
    loss = run.config["loss"]
    by = by_method_x(rows, "r")
    m = run.config["num_components"] - 1
    rs = sorted({r for _, r in by})
    out = []
    for r in rs:
        s = by[(loss, r)]
        inside = "col(A) inside S_F" if r < m else "S_F inside col(A)"
        pooled = population(rows, loss, "r", (r,), config=run.config)
        out.append(results.claim(f"r={r}, m={m}: {inside}: largest principal angle (degrees), worst seed",
                                 s["max_angle_deg_max"], "<=", 10.0,
                                 quantity=f"largest over runs of {loss}'s largest principal angle (°) between "
                                 "col(A) and S_F",
                                 population=pooled, method=loss))
        if r > m:
            out.append(results.claim(f"r={r} > m={m}: the extra directions collapse: effective rank of the "
                                     f"embedding xA, worst seed", s["effective_rank_max"], "<=", m + 0.5,
                                     quantity=f"largest over runs of the effective rank of {loss}'s embedding xA",
                                     population=pooled, method=loss))
    return out


EXPERIMENT = comparison("rank", "The embedding dimension r from 1 to K + 2: which part of S_F is kept.",
                        DEFAULTS, claims, x="r", presets=PRESETS)
