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
