import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import subspace_distance
from gmmssl import fisher
from gmmssl.augment import sample_pairs
from gmmssl.gmm import GMM, parallel_pancakes, sample


def test_fisher_subspace_by_hand():
    # means ±e1 + e2 shift, Σ = [[4, 1], [1, 1]]:  Σ⁻¹(μ_k − μ̄) ∝ Σ⁻¹ e1 = [1, -1]/3
    g = GMM(jnp.array([[1.0, 1.0], [-1.0, 1.0]]), jnp.array([[4.0, 1.0], [1.0, 1.0]]))
    f = np.asarray(fisher.fisher_subspace(g))
    assert f.shape == (2, 1)
    np.testing.assert_allclose(np.abs(f[:, 0]), np.array([1.0, 1.0]) / np.sqrt(2), rtol=1e-5)
    # uncentered: span{Σ⁻¹μ_k} is all of R² here
    fu = np.asarray(fisher.fisher_subspace(g, centered=False))
    assert fu.shape == (2, 2)
    np.testing.assert_allclose(fu.T @ fu, np.eye(2), atol=1e-5)


def test_fisher_subspace_is_the_top_generalized_eigenspace(gmm4):
    f = fisher.fisher_subspace(gmm4)
    assert f.shape == (6, 3)
    gamma, vecs = fisher.generalized_eigh(gmm4.between_scatter, gmm4.cov)
    assert np.all(np.asarray(gamma[:3]) > 1e-3) and np.all(np.abs(np.asarray(gamma[3:])) < 1e-4)
    assert subspace_distance(f, vecs[:, :3]) < 1e-3
    with pytest.raises(ValueError, match="num_directions"):
        jax.jit(fisher.fisher_subspace)(gmm4)
    fj = jax.jit(lambda g: fisher.fisher_subspace(g, num_directions=3))(gmm4)
    assert subspace_distance(f, fj) < 1e-5


def test_parallel_pancakes_fisher_subspace_is_the_separating_span():
    g = parallel_pancakes(10, 4)
    f = np.asarray(fisher.fisher_subspace(g))
    assert f.shape == (10, 3)
    np.testing.assert_allclose(np.linalg.norm(f[:3], axis=0), 1.0, atol=1e-5)


def test_lda_matches_sklearn(gmm4):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # here: seconds to import

    x, c = sample(jax.random.PRNGKey(0), gmm4, 3000)
    ours = fisher.lda(x, c, 4)
    assert ours.shape == (6, 3)
    np.testing.assert_allclose(np.asarray(ours).T @ np.asarray(ours), np.eye(3), atol=1e-5)
    sk = LinearDiscriminantAnalysis(solver="eigen").fit(np.asarray(x, np.float64), np.asarray(c))
    assert subspace_distance(ours, sk.scalings_[:, :3]) < 1e-3
    # and it estimates the population Fisher subspace
    assert subspace_distance(ours, fisher.fisher_subspace(gmm4)) < 0.15


def test_pca_matches_sklearn(gmm4):
    from sklearn.decomposition import PCA

    x, _ = sample(jax.random.PRNGKey(1), gmm4, 3000)
    ours = fisher.pca(x, 2)
    sk = PCA(2).fit(np.asarray(x, np.float64))
    assert subspace_distance(ours, sk.components_.T) < 1e-3


def test_spectral_oracle_recovers_fisher_and_canonical_correlations(gmm4):
    delta = 0.6
    x, xp, _, _ = sample_pairs(jax.random.PRNGKey(2), gmm4, 200_000, delta)
    oracle = fisher.spectral_oracle(x, xp, 3)
    assert subspace_distance(oracle.basis, fisher.fisher_subspace(gmm4)) < 0.05
    predicted = np.asarray(fisher.canonical_correlations(gmm4, delta))[:3]
    np.testing.assert_allclose(np.asarray(oracle.rho), predicted, atol=0.01)
    assert oracle.embedding.shape == (6, 3)


def test_baselines_validate_inputs(gmm4):
    x, c = sample(jax.random.PRNGKey(0), gmm4, 100)
    with pytest.raises(ValueError, match=r"r must be in \[1, 6\]"):
        fisher.pca(x, 7)
    with pytest.raises(ValueError, match=r"r must be in \[1, 6\]"):
        fisher.pca(x, 0)
    with pytest.raises(ValueError, match="labels must be in"):
        fisher.lda(x, c + 1, 4)
    with pytest.raises(ValueError, match="labels must have shape"):
        fisher.lda(x, c[:10], 4)
    with pytest.raises(ValueError, match="x_pos must have the shape"):
        fisher.spectral_oracle(x, x[:50], 2)
    with pytest.raises(ValueError, match="delta"):
        fisher.canonical_correlations(gmm4, 2.0)
