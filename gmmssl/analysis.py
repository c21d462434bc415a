"""Where a projector stands against the Fisher subspace and the exact optimum: the numbers
the conjecture experiment reports, as functions your own sweep can call.

* :func:`certified_optimum_metrics`: minimize the exact InfoNCE objective of one mixture
  (:func:`gmmssl.exact.certify`) and score the optimum: its deficit 1 − capture of the
  Fisher subspace S_F, its largest principal angle to S_F, whether a Fisher direction
  was dropped (the singular value ratio), and the certificate (gradient, curvature).
* :func:`comparison_to_target`: a trained projector's deficit and its largest angle to a
  reference projector (the exact optimum, say).
* :func:`targets_sweep`: a :class:`gmmssl.sweep.Sweep` that trains one projector per
  mixture and scores it against that mixture's reference projector (the finite-batch
  picture: does sampled in-batch training at batch size B end where the exact optimum is?).
* :func:`collapse_kappa`: over many optima, the largest signal strength κ at which an
  optimum still drops a Fisher direction.

The first two are traceable (jit, vmap, ``lax.map``: the sweep engine's evaluation phase);
the last reads concrete values (numpy), as tables do.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from typing import Callable, Mapping

import jax

from gmmssl import exact, fisher, metrics
from gmmssl.gmm import GMM
from gmmssl.sweep import Sweep, estimate_cell_bytes
from gmmssl.train import TrainConfig, check_setup, train

__all__ = ["DROPPED_SV_RATIO", "certified_optimum_metrics", "collapse_kappa", "comparison_to_target",
           "targets_sweep"]

DROPPED_SV_RATIO = 1e-6  # an optimum whose smallest/largest singular value falls below this dropped a direction


def certified_optimum_metrics(key, gmm: GMM, delta, r: int, mode: str = "prior", temperature=1.0, *,
                              fisher_basis=None, centered: bool = True, starts: int = 4,
                              iterations: int = 100) -> dict:
    """The optimum A* (d, r) of the exact InfoNCE objective of ``gmm`` at ``delta``
    (:func:`gmmssl.exact.certify`, same arguments) and what it says about S_F.

    Returns a dict of scalars: "deficit" = 1 − capture(A*, S_F) (0: A* contains S_F);
    "max_angle_deg", the largest principal angle between col(A*) and S_F, in degrees;
    "sv_ratio" = σ_min(m)/σ_1 over A*'s first min(m, r) singular values, m = K − 1 (below
    :data:`DROPPED_SV_RATIO`: a Fisher direction dropped; 0 when A* = 0);
    "span_deficit" = 1 − capture(A*, Σ⁻¹span{μ_k}) and "span_sv_ratio" = σ_min(q, r)/σ_1,
    q = dim Σ⁻¹span{μ_k} (K − 1 centered, K uncentered): for uncentered means at r ≥ K,
    span_deficit 0 says A* spans all of Σ⁻¹span{μ_k}, S_F included (for centered means
    the span is S_F and these equal deficit and sv_ratio); "means_sv_ratio", the smallest
    over the largest singular value of the whitened centered means (the span argument's
    premise that they span m dimensions); "jensen_gap" and "jensen_bound" of
    :func:`gmmssl.exact.jensen_gap` at a random push off the span of size 0.3·‖A*‖ (the
    argument holds at A* when gap ≥ bound) and "jensen_checked" (False, with gap and bound
    0, where A* + push is rank-deficient and the check cannot be computed); "rho_min", the
    smallest canonical correlation of the two views (:func:`gmmssl.fisher.canonical_correlations`);
    "start_spread", the spread of the starts' final losses; and the check's own
    entries ("loss", "grad_norm", "hessian_min_eig", "hessian_max_eig", "perp_min_eig",
    "certified" (second-order stationary, see :func:`gmmssl.exact.certificate`: not a
    proof of a global minimum), "starts_agree", "quad_error"). Also "projector": A* itself.

    ``fisher_basis`` (d, m) defaults to :func:`gmmssl.fisher.fisher_subspace`. Traceable in
    ``gmm``, ``delta`` and ``temperature``; ``r``, ``mode``, ``centered``, ``starts`` and
    ``iterations`` are static.
    """
    k = gmm.num_components
    basis = fisher.fisher_subspace(gmm, num_directions=k - 1) if fisher_basis is None else fisher_basis
    out = exact.certify(key, gmm, delta, r, mode, temperature, centered=centered, starts=starts,
                        iterations=iterations)
    a, sv = out["projector"], out["sv"]
    angles = metrics.principal_angles(a, basis)

    def ratio(n):
        return jnp.where(sv[0] > 1e-12, sv[min(n, r) - 1] / jnp.maximum(sv[0], 1e-300), 0.0)

    chol, u = exact.span_basis(gmm, centered)
    span = jnp.linalg.qr(jax.scipy.linalg.solve_triangular(chol.T, u, lower=False))[0]  # orthonormal, (d, q)
    centered_means = jax.scipy.linalg.solve_triangular(chol, (gmm.means - gmm.weights @ gmm.means).T, lower=True)
    wsv = jnp.linalg.svd(u[:, : k - 1].T @ centered_means, compute_uv=False)
    push = jax.random.normal(jax.random.fold_in(key, 7), a.shape, a.dtype)
    size = 0.3 * jnp.maximum(jnp.linalg.norm(chol.T @ a), 0.1)  # in whitened coordinates
    push = push * size / jnp.maximum(jnp.linalg.norm(chol.T @ push), 1e-300)
    gap, bound = exact.jensen_gap(a, push, gmm, delta, mode, temperature, basis=(chol, u))
    # A + A_⊥ can be rank-deficient (A* = 0 at κ ≤ 0, or fewer than r dimensions off the
    # span): its full-rank quadrature is then NaN. Such an optimum is not checked, and
    # says so, rather than voiding its grid with a NaN.
    checked = jnp.isfinite(gap) & jnp.isfinite(bound)
    gap, bound = jnp.where(checked, gap, 0.0), jnp.where(checked, bound, 0.0)
    names = ("loss", "grad_norm", "hessian_min_eig", "hessian_max_eig", "perp_min_eig", "certified", "starts_agree",
             "quad_error")
    return {"deficit": 1.0 - metrics.fisher_capture(a, basis), "max_angle_deg": jnp.degrees(angles[-1]),
            "sv_ratio": ratio(k - 1), "span_deficit": 1.0 - metrics.fisher_capture(a, span),
            "span_sv_ratio": ratio(span.shape[1]), "means_sv_ratio": wsv[-1] / wsv[0],
            "jensen_gap": gap, "jensen_bound": bound, "jensen_checked": checked, **{n: out[n] for n in names},
            "start_spread": jnp.max(out["start_losses"]) - jnp.min(out["start_losses"]),
            "rho_min": fisher.canonical_correlations(gmm, delta, mode)[k - 2], "projector": a}


def comparison_to_target(a, target, fisher_basis) -> dict:
    """A projector ``a`` (d, r) against a reference ``target`` (d, r') and the Fisher basis
    (d, m): {"deficit": 1 − capture(a, S_F), "angle_to_target_deg": the largest principal
    angle between col(a) and col(target), in degrees}. Traceable."""
    angles = metrics.principal_angles(a, target)
    return {"deficit": 1.0 - metrics.fisher_capture(a, fisher_basis), "angle_to_target_deg": jnp.degrees(angles[-1])}


def collapse_kappa(kappa, sv_ratio, *, tol: float = DROPPED_SV_RATIO) -> float:
    """The largest κ > 0 among optima whose singular value ratio is below ``tol`` (a dropped
    Fisher direction); NaN when none drops one. ``kappa`` and ``sv_ratio``: one value per
    optimum (sequences or arrays of equal length)."""
    kappa, sv_ratio = np.asarray(kappa, np.float64).reshape(-1), np.asarray(sv_ratio, np.float64).reshape(-1)
    if kappa.shape != sv_ratio.shape:
        raise ValueError(f"kappa and sv_ratio must hold one value per optimum, got {kappa.size} and {sv_ratio.size}")
    dropped = kappa[(kappa > 0) & (sv_ratio < tol)]
    return float(dropped.max()) if dropped.size else float("nan")



def targets_sweep(mixture: Callable, targets: Mapping[int, np.ndarray], config: TrainConfig,
                  hparams: Callable[[dict], dict], *, key_offset: int = 0, method: str = "trained") -> Sweep:
    """One cell per seed of ``targets`` ({seed: (d, r') reference projector}): the mixture
    ``mixture(seed)`` -> (gmm, extras) (traceable in the seed; ``extras``, a dict of
    scalars, lands in the row), a projector trained on it under ``config`` with
    ``hparams(extras)`` from ``jax.random.PRNGKey(seed + key_offset)``, then
    :func:`comparison_to_target` against the seed's reference and the mixture's Fisher
    basis. Metrics under ``method``: "deficit", "angle_to_target_deg" and the extras;
    projectors under ``method``. Run it with :func:`gmmssl.sweep.run_grid`.
    """
    seeds = tuple(sorted(int(s) for s in targets))
    if not seeds:
        raise ValueError("targets must hold at least one seed's reference projector")
    gmm0, _ = mixture(seeds[0])
    check_setup(gmm0, config)
    stacked = jnp.stack([jnp.asarray(targets[s]) for s in seeds])
    order = jnp.asarray(seeds)
    m = gmm0.num_components - 1

    def prepare_fn(cell):
        gmm, extras = mixture(cell["seed"])
        return {"gmm": gmm, "extras": extras, "fisher": fisher.fisher_subspace(gmm, num_directions=m),
                "target": stacked[jnp.searchsorted(order, cell["seed"])]}

    def train_fn(cell, data):
        key = jax.random.PRNGKey(cell["seed"] + key_offset)
        return train(key, data["gmm"], hparams(data["extras"]), config, data["fisher"]).params["A"]

    def evaluate_fn(cell, data, a):
        row = {**comparison_to_target(a, data["target"], data["fisher"]), **data["extras"]}
        return {"metrics": {method: row}, "projectors": {method: a}}

    itemsize = jnp.dtype(jnp.result_type(float)).itemsize
    return Sweep(train_fn, evaluate_fn, {"seed": seeds},
                 estimate_cell_bytes(gmm0.dim, config.r, config.batch_size, itemsize=itemsize), prepare_fn)
