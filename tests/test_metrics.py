import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmmssl import metrics
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import GMM, parallel_pancakes


def test_principal_angles_known_case():
    a = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    t = 0.3
    b = jnp.array([[1.0], [0.0], [0.0]]) * 2.0
    c = jnp.array([[0.0], [np.cos(t)], [np.sin(t)]])
    np.testing.assert_allclose(metrics.principal_angles(a, b), [0.0], atol=1e-6)
    np.testing.assert_allclose(metrics.principal_angles(a, c), [t], atol=1e-5)


@pytest.mark.parametrize("angle", [1e-5, 1e-3, 0.3, 1.2])
def test_principal_angles_are_accurate_small_and_large(angle):
    """Small angles from their sines: in float32 arccos alone gives 0 below about 3e-4 rad;
    the same angles as scipy's subspace_angles (float64), in either argument order."""
    from scipy.linalg import subspace_angles

    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    a = q[:, :3] * np.array([1.0, 2.0, 0.5])  # any basis of the space: the angles are the same
    b = np.stack([np.cos(angle) * q[:, 0] + np.sin(angle) * q[:, 4], q[:, 1]], axis=1)
    want = np.sort(subspace_angles(a, b))
    assert np.isclose(want[-1], angle, rtol=1e-6)
    for x, y in ((a, b), (b, a)):
        got = metrics.principal_angles(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-7)


def test_fisher_capture_values():
    f = jnp.eye(5)[:, :2]
    assert np.isclose(metrics.fisher_capture(jnp.eye(5)[:, :3] * 7.0, f), 1.0)
    assert np.isclose(metrics.fisher_capture(jnp.eye(5)[:, 2:4], f), 0.0)
    assert np.isclose(metrics.fisher_capture(jnp.eye(5)[:, 1:3], f), 0.5, atol=1e-6)
    # a collapsed column does not count as a captured direction
    collapsed = jnp.eye(5)[:, :2] * jnp.array([1.0, 1e-6])
    assert np.isclose(metrics.fisher_capture(collapsed, f), 0.5, atol=1e-6)


def test_fisher_efficiency_properties():
    g = parallel_pancakes(6, 3)
    f = fisher_subspace(g)
    assert np.isclose(metrics.fisher_efficiency(f, g), 1.0, atol=1e-5)
    # invariant to invertible changes of the embedding
    m = jnp.array([[2.0, 1.0], [0.0, -3.0]])
    assert np.isclose(metrics.fisher_efficiency(f @ m, g), 1.0, atol=1e-5)
    assert np.isclose(metrics.fisher_efficiency(jnp.eye(6)[:, 3:5], g), 0.0, atol=1e-6)
    half = metrics.fisher_efficiency(f[:, :1], g)
    assert 0.0 < half < 1.0


def test_effective_rank():
    assert np.isclose(metrics.effective_rank(jnp.eye(4)[:, :3]), 3.0, rtol=1e-5)
    assert np.isclose(metrics.effective_rank(jnp.eye(4)[:, :3] * jnp.array([1.0, 0.0, 0.0])), 1.0, rtol=1e-5)
    assert 1.0 < metrics.effective_rank(jnp.diag(jnp.array([1.0, 0.1]))) < 2.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=60), st.randoms(use_true_random=False))
def test_ari_matches_sklearn(labels_true, rnd):
    from sklearn.metrics import adjusted_rand_score  # here: scikit-learn takes seconds to import

    labels_pred = [rnd.randrange(4) for _ in labels_true]
    ours = metrics.adjusted_rand_index(jnp.array(labels_true), jnp.array(labels_pred), 4, 4)
    np.testing.assert_allclose(ours, adjusted_rand_score(labels_true, labels_pred), atol=1e-5)


def test_ari_edge_cases():
    from sklearn.metrics import adjusted_rand_score

    same = jnp.array([0, 0, 1, 1])
    assert np.isclose(metrics.adjusted_rand_index(same, 1 - same, 2, 2), 1.0)
    one = jnp.zeros(5, jnp.int32)
    assert np.isclose(metrics.adjusted_rand_index(one, one, 1, 1), adjusted_rand_score(one, one))


@pytest.mark.slow
def test_kmeans_recovers_separated_blobs_and_vmaps():
    g = GMM(jnp.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), jnp.eye(2))
    from gmmssl.gmm import sample
    x, c = sample(jax.random.PRNGKey(0), g, 600)
    # jitted, the points as arguments (eagerly, the k-means++ seeding compiles operation by
    # operation; test_properties.py calls it eagerly)
    ari = jax.jit(lambda k, x, c: metrics.kmeans_ari(k, x, c, 3))
    assert ari(jax.random.PRNGKey(1), x, c) > 0.97
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    aris = jax.jit(jax.vmap(ari, in_axes=(0, None, None)))(keys, x, c)
    assert aris.shape == (3,) and np.all(np.asarray(aris) > 0.97)


def test_metric_shape_errors():
    with pytest.raises(ValueError, match="must be a"):
        metrics.effective_rank(jnp.ones(3))
    with pytest.raises(ValueError, match="same d"):
        metrics.fisher_capture(jnp.ones((3, 2)), jnp.ones((4, 1)))
