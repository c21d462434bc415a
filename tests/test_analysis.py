"""gmmssl.analysis: the conjecture experiment's analysis as library functions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl import analysis, exact, fisher, metrics
from gmmssl.gmm import random_gmm
from gmmssl.sweep import run_grid
from gmmssl.train import TrainConfig


def test_collapse_kappa_is_the_largest_kappa_with_a_dropped_direction():
    kappa = [0.01, 0.02, 0.3, -0.1, 0.5]
    ratio = [1e-9, 1e-7, 0.5, 1e-12, 1e-3]
    assert analysis.collapse_kappa(kappa, ratio) == 0.02  # κ ≤ 0 and ratios above 1e-6 do not count
    assert np.isnan(analysis.collapse_kappa([0.1, 0.2], [0.5, 0.4]))
    assert analysis.collapse_kappa(kappa, ratio, tol=1e-2) == 0.5
    with pytest.raises(ValueError, match="one value per optimum"):
        analysis.collapse_kappa([0.1, 0.2], [0.5])


def test_comparison_to_target_measures_the_deficit_and_the_largest_angle():
    basis = jnp.eye(4)[:, :1]
    tilted = jnp.array([[1.0], [1.0], [0.0], [0.0]])  # 45° from e1
    same = analysis.comparison_to_target(basis * 3.0, basis, basis)
    assert abs(same["deficit"]) < 1e-6 and abs(same["angle_to_target_deg"]) < 1e-2
    half = analysis.comparison_to_target(tilted, basis, basis)
    np.testing.assert_allclose(half["angle_to_target_deg"], 45.0, atol=1e-3)
    np.testing.assert_allclose(half["deficit"], 1.0 - metrics.fisher_capture(tilted, basis), atol=1e-6)


@pytest.fixture(scope="module")
def small():
    with jax.enable_x64(True):
        gmm = random_gmm(jax.random.PRNGKey(3), 4, 3, separation=1.5, condition_number=5.0, centered=True,
                         dtype=jnp.float64)
        yield gmm


def test_certified_optimum_metrics_scores_exacts_own_optimum(small):
    with jax.enable_x64(True):
        key, delta = jax.random.PRNGKey(0), 0.6
        got = jax.jit(lambda g: analysis.certified_optimum_metrics(key, g, delta, 2, starts=2, iterations=30))(small)
        want = jax.jit(lambda g: exact.certify(key, g, delta, 2, starts=2, iterations=30))(small)
        basis = fisher.fisher_subspace(small, num_directions=2)
        np.testing.assert_allclose(got["projector"], want["projector"], atol=1e-12)
        np.testing.assert_allclose(got["deficit"], 1.0 - metrics.fisher_capture(want["projector"], basis), atol=1e-12)
        for name in ("loss", "grad_norm", "certified", "starts_agree"):
            np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_allclose(got["rho_min"], fisher.canonical_correlations(small, delta, "prior")[1])
        assert bool(got["certified"]) and got["deficit"] < 1e-8 and got["sv_ratio"] > 1e-3


def test_targets_sweep_trains_each_seed_and_scores_it_against_its_target():
    def mixture(seed):
        gmm = random_gmm(jax.random.fold_in(jax.random.PRNGKey(5), seed), 6, 2, separation=2.0)
        return gmm, {"delta": jnp.asarray(1.0)}

    targets = {s: np.asarray(fisher.fisher_subspace(mixture(s)[0], num_directions=1)) for s in (4, 1)}
    cfg = TrainConfig(r=1, batch_size=128, steps=200, log_every=100)
    spec = analysis.targets_sweep(mixture, targets, cfg, lambda extras: {"delta": extras["delta"]}, method="mine")
    grid, out = run_grid(spec)
    assert list(grid["seed"]) == [1, 4]  # sorted
    rows = out["metrics"]["mine"]
    # the target is S_F itself: the angle to it and the deficit say the same thing
    np.testing.assert_allclose(np.cos(np.radians(rows["angle_to_target_deg"])) ** 2, 1.0 - rows["deficit"], atol=1e-4)
    assert np.all(rows["deficit"] < 0.05) and np.all(rows["delta"] == 1.0)
    assert out["projectors"]["mine"].shape == (2, 6, 1)
    with pytest.raises(ValueError, match="at least one seed"):
        analysis.targets_sweep(mixture, {}, cfg, lambda e: {})


def _row(centered, extra, **kw):
    base = {"method": "exact", "centered": centered, "extra_rank": extra, "kappa": 0.5, "certified": True,
            "starts_agree": True, "deficit": 0.0, "span_deficit": 0.0, "sv_ratio": 0.5, "span_sv_ratio": 0.5,
            "means_sv_ratio": 0.5, "jensen_gap": 2.0, "jensen_bound": 1.0, "quad_error": 1e-12, "loss": -1.0,
            "seed": 0, "d": 8, "num_components": 3, "mode": "prior", "max_angle_deg": 0.0}
    return {**base, **kw}


def _verdict(rows):
    from gmmssl.experiment import Run
    from gmmssl.experiments import conjecture_certified as cc
    from gmmssl.experiments._conjecture import DEFAULTS

    config = {**DEFAULTS, "num_components": 3, "d": 8, "mode": "prior", "extra_rank": 0}
    return {c.quantity + " | " + c.population.split(":")[0]: c for c in cc.claims(Run(config, [], rows))}


def test_conjecture_claims_split_by_rank_and_each_can_fail_in_the_direction_it_names():
    """Issue 28: centered means are scored on dropped directions, uncentered r = m on the
    predicted tilt (deficit > 0), uncentered r ≥ K against Σ⁻¹span{μ_k}; each fails when
    its rows say the opposite, and none pools two ranks."""
    good = [_row(True, 0), _row(True, 1), _row(False, 0, deficit=0.02, span_deficit=0.34),
            _row(False, 1, span_deficit=1e-15)]
    claims = _verdict(good)
    assert all(c.passed for c in claims.values()), [(k, c.measured) for k, c in claims.items()]
    keys = {k for k in claims if k.startswith("share with")}
    assert {k.split(" | ")[1] for k in keys} >= {
        "centered means, r = m, κ > 0.05", "centered means, r = m + 1, κ > 0.05",
        "uncentered means, r = m, κ > 0.05", "uncentered means, r = m + 1, κ > 0.05"}
    for c in claims.values():
        assert c.quantity and c.population and (c.margin >= 0) == c.passed

    def fails(rows, quantity, population):
        got = _verdict(rows)[f"{quantity} | {population}"]
        assert not got.passed and got.margin < 0, (quantity, population, got)

    fails([_row(True, 0, sv_ratio=1e-9)] + good[1:], "share with no Fisher direction dropped",
          "centered means, r = m, κ > 0.05")
    # no tilt at r = m would contradict the first-order argument
    fails(good[:2] + [_row(False, 0, deficit=0.0)] + good[3:], "share with deficit > 1e-8",
          "uncentered means, r = m, κ > 0.05")
    # at r ≥ K the optimum must span Σ⁻¹span{μ_k}; containing S_F alone (deficit 0) is not enough
    fails(good[:3] + [_row(False, 1, deficit=0.0, span_deficit=0.2)], "share with span deficit < 1e-8",
          "uncentered means, r = m + 1, κ > 0.05")
    fails([_row(True, 0, jensen_gap=0.5)] + good[1:], "share with Jensen gap ≥ bound",
          "4 optima with κ > 0, A* ≠ 0")
    fails([_row(True, 0, means_sv_ratio=1e-9)] + good[1:], "share with means of full rank m", "all 4 mixtures")
    fails([_row(True, 0, certified=False)] + good[1:], "share second-order stationary", "all 4 mixtures")


def test_jensen_gap_is_the_loss_rise_across_the_span_and_never_below_its_bound(small):
    """The span argument's inequality, L(A + A_⊥) − L(A) ≥ ½tr(P(M₂ + S))/τ², at random
    points of the span (not only optima) and random pushes; gap and bound recomputed here."""
    with jax.enable_x64(True):
        g = small
        basis = exact.span_basis(g, centered=True)
        chol, u = basis
        for seed in range(4):
            k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
            b = 0.5 * jax.random.normal(k1, (u.shape[1], 2), jnp.float64)
            a = exact.span_projector(b, basis)
            push = 0.3 * jax.random.normal(k2, a.shape, jnp.float64)
            gap, bound = exact.jensen_gap(a, push, g, 0.6, basis=basis)
            white = chol.T @ push
            perp = white - u @ (u.T @ white)
            a_perp = jnp.linalg.solve(chol.T, perp)
            want_gap = exact.exact_infonce(a + a_perp, g, 0.6) - exact.exact_infonce(a, g, 0.6)
            m = np.asarray(g.means @ a)
            second = m.T @ (np.asarray(g.weights)[:, None] * m) + np.asarray(a.T @ g.cov @ a)
            want_bound = 0.5 * np.trace(np.asarray(perp.T @ perp) @ second)
            np.testing.assert_allclose(gap, want_gap, rtol=1e-4, atol=1e-5)  # two quadratures of L(A)
            np.testing.assert_allclose(bound, want_bound, rtol=1e-10)
            assert float(bound) > 0 and float(gap) >= float(bound), (seed, float(gap), float(bound))


def test_an_optimum_whose_jensen_check_cannot_be_computed_is_marked_not_nan():
    """d = K with uncentered means leaves no direction off the span, and at κ ≤ 0 the
    optimum is A* = 0: A* plus the push is singular. The metrics stay finite (a NaN would
    withhold the verdict of the whole grid) and say the check was not made."""
    with jax.enable_x64(True):
        g = random_gmm(jax.random.PRNGKey(4), 3, 3, separation=1.5, condition_number=3.0, centered=False,
                       dtype=jnp.float64)
        got = jax.jit(lambda g: analysis.certified_optimum_metrics(
            jax.random.PRNGKey(0), g, 0.1, 2, "other", centered=False, starts=2, iterations=30))(g)
        got.pop("projector")
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in got.values()), {k: v for k, v in got.items()}
        assert not bool(got["jensen_checked"]) and float(got["jensen_gap"]) == 0.0 == float(got["jensen_bound"])
    # on the earlier test's mixture (room off the span) the check is made
    with jax.enable_x64(True):
        g = random_gmm(jax.random.PRNGKey(3), 4, 3, separation=1.5, condition_number=5.0, centered=True,
                       dtype=jnp.float64)
        ok = jax.jit(lambda g: analysis.certified_optimum_metrics(jax.random.PRNGKey(0), g, 0.6, 2, starts=2,
                                                                  iterations=30))(g)
        assert bool(ok["jensen_checked"]) and float(ok["jensen_gap"]) >= float(ok["jensen_bound"]) > 0
