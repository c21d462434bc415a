import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl.augment import sample_pairs
from gmmssl.gmm import GMM, random_gmm

N = 200_000


@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_prior_mode_same_component_probability(delta):
    w = jnp.array([0.5, 0.3, 0.2])
    g = GMM(jnp.eye(3) * 2.0, jnp.eye(3), w)
    _, _, c, cp = sample_pairs(jax.random.PRNGKey(0), g, N, delta, "prior")
    p = float(delta + (1 - delta) * np.sum(np.asarray(w) ** 2))
    observed = float(np.mean(np.asarray(c) == np.asarray(cp)))
    assert abs(observed - p) < 4 * np.sqrt(p * (1 - p) / N) + 1e-12


def test_other_mode_never_repeats_the_component_when_noisy():
    g = random_gmm(jax.random.PRNGKey(1), 3, 4)
    _, _, c, cp = sample_pairs(jax.random.PRNGKey(0), g, N, 0.0, "other")
    assert np.all(np.asarray(c) != np.asarray(cp))
    counts = np.bincount((np.asarray(cp) - np.asarray(c)) % 4, minlength=4)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / N, 1 / 3, atol=0.01)


def _cross_cov(x, xp, mu):
    return (x - mu).T @ (xp - mu) / x.shape[0]


@pytest.mark.parametrize("mode,delta", [("prior", 0.4), ("prior", 1.0), ("other", 0.4), ("other", 0.1)])
def test_cross_covariance_is_scaled_between_scatter(mode, delta):
    g = random_gmm(jax.random.PRNGKey(2), 4, 3, separation=2.0)
    x, xp, _, _ = sample_pairs(jax.random.PRNGKey(5), g, N, delta, mode)
    x, xp = np.asarray(x, np.float64), np.asarray(xp, np.float64)
    mu = np.asarray(g.mean, np.float64)
    k = g.num_components
    kappa = delta if mode == "prior" else delta - (1 - delta) / (k - 1)
    expected = kappa * np.asarray(g.between_scatter, np.float64)
    observed = _cross_cov(x, xp, mu)
    # sampling error of a cross-covariance entry: sqrt(Var(x_i) Var(x'_j) / N)
    sd = np.sqrt(np.outer(x.var(0), xp.var(0)) / N)
    assert np.all(np.abs(observed - expected) < 5 * sd + 1e-9)


def test_common_random_numbers_across_delta():
    g = random_gmm(jax.random.PRNGKey(0), 5, 3)
    key = jax.random.PRNGKey(9)
    x0, xp0, c0, cp0 = sample_pairs(key, g, 1000, 0.0)
    x1, xp1, c1, cp1 = sample_pairs(key, g, 1000, 1.0)
    xh, xph, ch, cph = sample_pairs(key, g, 1000, 0.5)
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(c0, c1)
    np.testing.assert_array_equal(cp1, c1)  # delta = 1: clean
    same = np.asarray(cph) == np.asarray(ch)
    # x⁺ uses the same noise draws: where the component agrees with δ=0's or δ=1's, x⁺ agrees too
    np.testing.assert_allclose(np.asarray(xph)[same], np.asarray(xp1)[same], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(xph)[~same], np.asarray(xp0)[~same], rtol=1e-6)
    # monotone coupling: a pair that is clean at δ=0.5 stays clean at any larger δ
    _, _, c9, cp9 = sample_pairs(key, g, 1000, 0.9)
    clean9 = np.asarray(cp9) == np.asarray(c9)
    assert np.all(~same | clean9) and clean9.sum() > same.sum()


def test_traced_delta_under_jit_and_vmap():
    g = random_gmm(jax.random.PRNGKey(0), 3, 2)
    f = jax.jit(jax.vmap(lambda d: sample_pairs(jax.random.PRNGKey(0), g, 64, d)[3]))
    out = f(jnp.array([0.0, 1.0]))
    assert out.shape == (2, 64)


@pytest.mark.parametrize("delta", [-0.1, 1.5, float("nan")])
def test_delta_out_of_range(delta):
    g = random_gmm(jax.random.PRNGKey(0), 3, 2)
    with pytest.raises(ValueError, match=r"delta must be .*\[0.0, 1.0\]"):
        sample_pairs(jax.random.PRNGKey(0), g, 10, delta)


def test_bad_mode_and_n():
    g = random_gmm(jax.random.PRNGKey(0), 3, 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        sample_pairs(jax.random.PRNGKey(0), g, 10, 0.5, mode="uniform")
    with pytest.raises(ValueError, match="n must be"):
        sample_pairs(jax.random.PRNGKey(0), g, 0, 0.5)
