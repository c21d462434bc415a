import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl.gmm import GMM, parallel_pancakes, random_gmm, sample


def test_gmm_stores_cholesky_and_derived_moments():
    means = jnp.array([[1.0, 0.0], [-1.0, 2.0]])
    cov = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    g = GMM(means, cov, jnp.array([0.25, 0.75]))
    assert g.dim == 2 and g.num_components == 2
    np.testing.assert_allclose(g.chol @ g.chol.T, cov, rtol=1e-6)
    assert np.allclose(np.triu(np.asarray(g.chol), 1), 0)
    mu_bar = 0.25 * means[0] + 0.75 * means[1]
    np.testing.assert_allclose(g.mean, mu_bar, rtol=1e-6)
    sb = 0.25 * np.outer(means[0] - mu_bar, means[0] - mu_bar) + 0.75 * np.outer(means[1] - mu_bar, means[1] - mu_bar)
    np.testing.assert_allclose(g.between_scatter, sb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.total_cov, cov + sb, rtol=1e-5)


@pytest.mark.parametrize(
    "means, cov, weights, match",
    [
        (np.zeros((2, 2)), np.array([[1.0, 0.3], [0.0, 1.0]]), None, "cov must be symmetric"),
        (np.zeros((2, 2)), np.array([[1.0, 2.0], [2.0, 1.0]]), None, "cov must be symmetric positive definite"),
        (np.zeros((2, 3)), np.eye(2), None, r"cov must have shape \(d, d\) = \(3, 3\)"),
        (np.zeros((1, 2)), np.eye(2), None, "num_components >= 2"),
        (np.zeros(3), np.eye(3), None, "means must be a"),
        (np.zeros((2, 2)), np.eye(2), np.array([1.2, -0.2]), "weights must be non-negative"),
        (np.zeros((2, 2)), np.eye(2), np.array([0.3, 0.3]), "weights must sum to 1"),
        (np.zeros((2, 2)), np.eye(2), np.array([0.3, 0.3, 0.4]), r"weights must have shape"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), np.eye(2), None, "means must be finite"),
        (np.zeros((2, 2)), np.array([[np.inf, 0.0], [0.0, 1.0]]), None, "cov must be finite"),
        (np.zeros((2, 2)), np.eye(2), np.array([np.nan, 0.5]), "weights must be finite"),
    ],
)
def test_gmm_rejects_bad_parameters(means, cov, weights, match):
    with pytest.raises(ValueError, match=match):
        GMM(means, cov, weights)


def test_gmm_is_a_pytree_usable_under_jit_and_vmap():
    g = parallel_pancakes(4, 2)
    leaves, tree = jax.tree_util.tree_flatten(g)
    assert len(leaves) == 3
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), g)
    dims = jax.vmap(lambda gg: gg.mean.sum() + gg.means[0, 0])(stacked)
    assert dims.shape == (2,)
    out = jax.jit(lambda gg, k: sample(k, gg, 5)[0])(g, jax.random.PRNGKey(0))
    assert out.shape == (5, 4)


def test_sample_moments_match_the_mixture():
    g = GMM(jnp.array([[2.0, 0.0, 0.0], [-2.0, 1.0, 0.0]]), jnp.diag(jnp.array([0.5, 1.0, 2.0])),
            jnp.array([0.3, 0.7]))
    n = 200_000
    x, c = sample(jax.random.PRNGKey(0), g, n)
    x, c = np.asarray(x), np.asarray(c)
    assert x.shape == (n, 3) and c.dtype == np.int32
    frac = (c == 0).mean()
    assert abs(frac - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    within = x - np.asarray(g.means)[c]
    np.testing.assert_allclose(np.cov(within.T), g.cov, atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), g.total_cov, atol=0.05)


def test_parallel_pancakes_pca_fails_by_construction():
    for k in (2, 3, 4):
        g = parallel_pancakes(10, k)
        tot = np.linalg.eigh(np.asarray(g.total_cov))
        # the class directions span(e_1..e_{K-1}) carry total variance below 1
        sep = np.asarray(g.total_cov)[: k - 1, : k - 1]
        assert np.linalg.eigvalsh(sep).max() < 1.0
        assert np.isclose(tot[0][-1], 1.0, atol=1e-5)  # the top eigenvalue is a wide direction
        # means on a simplex: centered, equal norms
        m = np.asarray(g.means)
        np.testing.assert_allclose(m.mean(0), 0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(m, axis=1), 0.7, rtol=1e-5)
        assert np.allclose(m[:, k - 1:], 0)


def test_parallel_pancakes_validates():
    with pytest.raises(ValueError, match="num_components"):
        parallel_pancakes(10, 1)
    with pytest.raises(ValueError, match="d must be in"):
        parallel_pancakes(2, 3)
    with pytest.raises(ValueError, match="separation"):
        parallel_pancakes(5, 2, separation=1.2)
    with pytest.raises(ValueError, match="thickness"):
        parallel_pancakes(5, 2, thickness=-1.0)


def test_random_gmm_condition_number_and_validation():
    g = random_gmm(jax.random.PRNGKey(1), 8, 3, condition_number=100.0)
    ev = np.linalg.eigvalsh(np.asarray(g.cov, np.float64))
    assert abs(ev[-1] / ev[0] - 100.0) < 1.0
    assert g.means.shape == (3, 8)
    with pytest.raises(ValueError, match="condition_number"):
        random_gmm(jax.random.PRNGKey(1), 8, 3, condition_number=0.5)
    with pytest.raises(ValueError, match="num_components"):
        random_gmm(jax.random.PRNGKey(1), 8, 1)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        random_gmm(jax.random.PRNGKey(1), 8, 2, weights=jnp.array([0.5, 0.6]))
