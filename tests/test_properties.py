"""Property-based checks (hypothesis) of the invariances the metrics and losses promise,
and of the refusals that keep them meaningful."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from gmmssl import losses, metrics, projectors
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import random_gmm

SETTINGS = settings(max_examples=25, deadline=None)
FINITE = st.floats(-3.0, 3.0, allow_nan=False, width=32)


def _well_conditioned(m):
    return np.linalg.cond(m) < 1e3


@pytest.fixture(scope="module")
def gmm():
    return random_gmm(jax.random.PRNGKey(0), 6, 3, separation=1.5, condition_number=10.0)


@SETTINGS
@given(a=arrays(np.float32, (6, 2), elements=FINITE), m=arrays(np.float32, (2, 2), elements=FINITE))
def test_capture_and_efficiency_are_invariant_to_an_invertible_change_of_the_embedding(gmm, a, m):
    if np.linalg.svd(a, compute_uv=False)[-1] < 0.1 or not _well_conditioned(m) or abs(np.linalg.det(m)) < 0.1:
        return
    f = fisher_subspace(gmm)
    np.testing.assert_allclose(metrics.fisher_capture(a @ m, f), metrics.fisher_capture(a, f), atol=2e-3)
    np.testing.assert_allclose(metrics.fisher_efficiency(a @ m, gmm), metrics.fisher_efficiency(a, gmm), atol=2e-3)


@SETTINGS
@given(true=arrays(np.int32, 30, elements=st.integers(0, 2)), pred=arrays(np.int32, 30, elements=st.integers(0, 3)),
       perm=st.permutations([0, 1, 2, 3]))
def test_ari_is_symmetric_and_invariant_to_relabelling(true, pred, perm):
    from sklearn.metrics import adjusted_rand_score

    ari = float(metrics.adjusted_rand_index(jnp.asarray(true), jnp.asarray(pred), 3, 4))
    relabelled = np.asarray(perm, np.int32)[pred]
    np.testing.assert_allclose(float(metrics.adjusted_rand_index(jnp.asarray(true), jnp.asarray(relabelled), 3, 4)),
                               ari, atol=1e-5)
    np.testing.assert_allclose(float(metrics.adjusted_rand_index(jnp.asarray(pred), jnp.asarray(true), 4, 3)),
                               ari, atol=1e-5)
    np.testing.assert_allclose(ari, adjusted_rand_score(true, pred), atol=1e-5)


@SETTINGS
@given(z=arrays(np.float32, (5, 3), elements=FINITE), zp=arrays(np.float32, (5, 3), elements=FINITE),
       seed=st.integers(0, 2**16))
def test_dot_and_cosine_losses_are_invariant_to_a_rotation_of_the_embeddings(z, zp, seed):
    q = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))[0].astype(np.float32)
    cases = [lambda a, b: losses.infonce(a, b), lambda a, b: losses.infonce(a, b, similarity="cosine"),
             lambda a, b: losses.clip(a, b), lambda a, b: losses.spectral_contrastive(a, b),
             lambda a, b: losses.simsiam(a, b, xi=0.5)]
    for loss in cases:
        np.testing.assert_allclose(loss(z @ q, zp @ q), loss(z, zp), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@SETTINGS
@given(i=st.integers(0, 4), j=st.integers(0, 2))
def test_nan_in_nan_out(gmm, i, j):
    z = jnp.ones((5, 3)).at[i, j].set(jnp.nan)
    for loss in (losses.infonce, losses.clip, losses.spectral_contrastive, losses.simsiam):
        assert np.isnan(float(loss(z, jnp.ones((5, 3)))))
    a = jnp.ones((6, 2)).at[i, min(j, 1)].set(jnp.nan)
    f = fisher_subspace(gmm)
    for value in (metrics.fisher_capture(a, f), metrics.fisher_efficiency(a, gmm), metrics.effective_rank(a),
                  metrics.principal_angles(a, f)[0],
                  metrics.kmeans_ari(jax.random.PRNGKey(0), z, jnp.arange(5) % 2, 2)):
        assert np.isnan(float(value))


def test_nan_out_under_jit_and_vmap_too(gmm):
    f = fisher_subspace(gmm)
    a = jnp.stack([jnp.eye(6)[:, :2], jnp.full((6, 2), jnp.nan)])
    out = jax.jit(jax.vmap(lambda x: metrics.fisher_capture(x, f)))(a)
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_metrics_refuse_a_basis_that_is_not_orthonormal(gmm):
    f = fisher_subspace(gmm)
    a = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
    with pytest.raises(ValueError, match="orthonormal"):
        metrics.fisher_capture(a, 3.0 * f)
    assert 0.0 <= float(metrics.fisher_capture(a, f)) <= 1.0


def test_ari_refuses_labels_out_of_range_or_float_and_nan_when_traced():
    with pytest.raises(ValueError, match=r"labels_true must be in \[0, 2\)"):
        metrics.adjusted_rand_index(jnp.array([0, 1, 5, 5]), jnp.array([0, 1, 1, 0]), 2, 2)
    with pytest.raises(ValueError, match="must be integers"):
        metrics.adjusted_rand_index(jnp.array([0.0, 1.0]), jnp.array([0, 1]), 2, 2)
    traced = jax.jit(lambda t: metrics.adjusted_rand_index(t, jnp.array([0, 1, 1, 0]), 2, 2))
    assert np.isnan(float(traced(jnp.array([0, 1, 5, 5]))))


def test_kmeans_refuses_more_clusters_than_points():
    with pytest.raises(ValueError, match="k must be at most the number of points"):
        metrics.kmeans(jax.random.PRNGKey(0), jnp.ones((3, 2)), 5)


def test_embedding_effective_rank_sees_a_column_the_projector_hides():
    cov = jnp.diag(jnp.array([1.0, 1.0, 1e-4]))
    a = jnp.eye(3)  # three equal columns, the third along a direction with almost no variance
    assert float(metrics.effective_rank(a)) == pytest.approx(3.0, abs=1e-4)
    assert float(metrics.effective_rank(a, cov)) < 2.2


@SETTINGS
@given(m=arrays(np.float64, (6, 6), elements=st.floats(-2, 2, allow_nan=False)))
def test_whitened_jacobian_share_is_invariant_to_a_linear_change_of_x(gmm, m):
    m = m + 3.0 * np.eye(6)
    if not _well_conditioned(m):
        return
    with jax.enable_x64(True):
        a = jnp.asarray(np.random.default_rng(1).normal(size=(6, 2)))
        f = jnp.asarray(fisher_subspace(gmm), jnp.float64)
        cov = jnp.asarray(gmm.total_cov, jnp.float64)
        x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 6)))
        m = jnp.asarray(m)
        minv_t = jnp.linalg.inv(m).T
        # x' = M x: the projector a' = M^{-T} a gives the same embedding; S_F' = M^{-T} S_F; Σ' = M Σ Mᵀ
        before = projectors.jacobian_energy({"A": a}, x, f, cov=cov)
        after = projectors.jacobian_energy({"A": minv_t @ a}, x @ m.T, jnp.linalg.qr(minv_t @ f)[0],
                                           cov=m @ cov @ m.T)
        np.testing.assert_allclose(after, before, atol=1e-8)
