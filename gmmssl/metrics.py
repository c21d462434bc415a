r"""How well a projector A (d, r) keeps the mixture's class structure.

* :func:`principal_angles` between column spaces.
* :func:`fisher_capture` :math:`= \|Q_A^\top F\|_F^2 / m`, the part of the Fisher subspace
  inside col(A) (1 iff :math:`S_F \subseteq` col(A)).
* :func:`fisher_efficiency` :math:`= \mathrm{tr}((A^\top\Sigma A)^+ A^\top S_B A)/\mathrm{tr}(\Sigma^{-1}S_B)`,
  the part of the discriminative information kept (invariant to invertible changes of
  the embedding).
* :func:`effective_rank`, the collapse diagnostic.
* :func:`kmeans`, :func:`adjusted_rand_index`, :func:`kmeans_ari`: clustering of
  projected samples, written in JAX so they vmap over a grid.

The numerical column space of A, Q_A, keeps the left singular vectors whose singular
value exceeds ``rtol`` (default 1e-3) times the largest: collapsed columns do not count.

Invalid input never scores: a projector or embedding with a NaN or infinite entry gives
NaN (not 0), also under jit and vmap. When values are concrete, a basis that is not
orthonormal and labels that are not integers in [0, K) are refused with ValueError;
traced labels out of range give NaN.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import lax

import numpy as np

from gmmssl._validate import check_int, is_concrete
from gmmssl.backend import map_linalg
from gmmssl.gmm import GMM

__all__ = [
    "RTOL",
    "adjusted_rand_index",
    "bayes_accuracy",
    "bayes_log_posterior",
    "check_orthonormal",
    "column_space",
    "effective_rank",
    "fisher_capture",
    "fisher_efficiency",
    "kmeans",
    "kmeans_ari",
    "linear_probe_accuracy",
    "principal_angles",
]

RTOL = 1e-3
ORTHONORMAL_ATOL = 1e-3


def _check_matrix(name, a):
    if jnp.ndim(a) != 2:
        raise ValueError(f"{name} must be a (d, r) matrix, got shape {jnp.shape(a)}")


def _finite(*arrays):
    ok = jnp.asarray(True)
    for x in arrays:
        ok &= jnp.all(jnp.isfinite(x))
    return ok


def _nan_unless(ok, value):
    value = jnp.asarray(value)
    dtype = value.dtype if jnp.issubdtype(value.dtype, jnp.floating) else jnp.result_type(float)
    return jnp.where(ok, value.astype(dtype), jnp.nan)


def check_orthonormal(name: str, basis, atol: float = ORTHONORMAL_ATOL) -> None:
    """Raises ValueError when a concrete (d, m) ``basis`` does not have orthonormal
    columns (max |FᵀF − I| > atol). Tracers pass (their values are unknown)."""
    _check_matrix(name, basis)
    if not is_concrete(basis):
        return
    f = np.asarray(basis, np.float64)
    if not np.all(np.isfinite(f)):
        return  # NaN in -> NaN out, not an error
    err = float(np.max(np.abs(f.T @ f - np.eye(f.shape[1]))))
    if err > atol:
        raise ValueError(f"{name} must have orthonormal columns (FᵀF = I), got max |FᵀF − I| = {err:.3g}; "
                         f"orthonormalize it (jnp.linalg.qr) or use gmmssl.fisher.fisher_subspace")


def _check_labels(name, labels, num: int):
    """Integer dtype always; values in [0, num) when concrete. Returns a traceable
    'all in range' flag."""
    if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
        raise ValueError(f"{name} must be integers in [0, {num}), got dtype {jnp.asarray(labels).dtype}")
    if is_concrete(labels):
        arr = np.asarray(labels)
        if arr.size and (arr.min() < 0 or arr.max() >= num):
            raise ValueError(f"{name} must be in [0, {num}), got values from {arr.min()} to {arr.max()}")
    return jnp.all((labels >= 0) & (labels < num))


def column_space(a, rtol: float = RTOL):
    """Left singular vectors U (d, r) of A and a (r,) mask of those above rtol·s_max."""
    _check_matrix("A", a)
    u, s, _ = jnp.linalg.svd(a, full_matrices=False)
    mask = s > rtol * s[0]
    return u, mask


def principal_angles(a, b) -> jax.Array:
    """Principal angles (radians, ascending) between col(a) and col(b), (min(r_a, r_b),).

    With orthonormal bases Q_a, Q_b (from the SVD; Q_b the smaller space), cos θ_i are
    the singular values of Q_aᵀQ_b and sin θ_i those of (I − Q_aQ_aᵀ)Q_b. Angles below
    45° come from their sines, the others from their cosines (Knyazev and Argentati,
    as ``scipy.linalg.subspace_angles``): arccos alone loses small angles to rounding
    (in float32, cos θ = 1 for every θ below about 3e-4 rad).
    """
    _check_matrix("A", a)
    _check_matrix("B", b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"A and B must have the same number of rows, got {a.shape} and {b.shape}")
    qa = jnp.linalg.svd(a, full_matrices=False)[0]
    qb = jnp.linalg.svd(b, full_matrices=False)[0]
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    overlap = qa.T @ qb
    cos = jnp.linalg.svd(overlap, compute_uv=False)  # descending: angles ascending
    sin = jnp.linalg.svd(qb - qa @ overlap, compute_uv=False)[::-1]  # ascending: the same order
    angles = jnp.where(cos**2 > 0.5, jnp.arcsin(jnp.clip(sin, 0.0, 1.0)), jnp.arccos(jnp.clip(cos, 0.0, 1.0)))
    return _nan_unless(_finite(a, b), angles)


def fisher_capture(a, fisher_basis, rtol: float = RTOL) -> jax.Array:
    r"""Fraction of the Fisher subspace inside col(A): :math:`\|Q_A^\top F\|_F^2/m`.

    Args:
      a: (d, r) projector.
      fisher_basis: (d, m) orthonormal basis F of S_F (see :func:`gmmssl.fisher.fisher_subspace`).
      rtol: relative singular-value tolerance defining Q_A.

    Returns:
      scalar in [0, 1]; 1 iff S_F ⊆ col(A). NaN when A or the basis is not finite.

    Raises:
      ValueError: a concrete basis whose columns are not orthonormal (the ratio would
        not be a fraction: ``fisher_capture(A, 3 F)`` would be 9).
    """
    _check_matrix("fisher_basis", fisher_basis)
    u, mask = column_space(a, rtol)
    if u.shape[0] != fisher_basis.shape[0]:
        raise ValueError(f"A {a.shape} and fisher_basis {fisher_basis.shape} must have the same d")
    check_orthonormal("fisher_basis", fisher_basis)
    proj = (u.T @ fisher_basis) * mask[:, None]
    return _nan_unless(_finite(a, fisher_basis), jnp.sum(proj**2) / fisher_basis.shape[1])


def fisher_efficiency(a, gmm: GMM, rtol: float = RTOL) -> jax.Array:
    r"""Discriminative information kept by col(A):
    :math:`\mathrm{tr}((A^\top\Sigma A)^+A^\top S_B A)/\mathrm{tr}(\Sigma^{-1}S_B)` in [0, 1].

    Computed on the numerical column space Q_A (so collapsed columns are dropped
    rather than inverted).
    """
    u, mask = column_space(a, rtol)
    if u.shape[0] != gmm.dim:
        raise ValueError(f"A has d = {u.shape[0]} rows but the mixture has dim {gmm.dim}")
    q = u * mask
    m = q.T @ gmm.cov @ q + jnp.diag(1.0 - mask.astype(q.dtype))
    n = q.T @ gmm.between_scatter @ q
    kept = jnp.trace(jnp.linalg.solve(m, n))
    total = jnp.trace(jsl.cho_solve((gmm.chol, True), gmm.between_scatter))
    return _nan_unless(_finite(a), kept / total)


def effective_rank(a, cov=None) -> jax.Array:
    r"""exp of the entropy of the normalized singular values: 1 (rank one) … r (all equal).

    With ``cov`` None, the singular values of A itself. With ``cov`` (d, d) the covariance
    of x (Σ_T for the embedding's spread), the singular values of the *embedding* z = xA:
    the square roots of the eigenvalues of AᵀΣA (computed as those of LᵀA, Σ = LLᵀ). The
    two differ when the data are anisotropic: a column of A along a low-variance
    direction of x looks full in A and is nearly collapsed in the embedding.
    """
    _check_matrix("A", a)
    m = a if cov is None else jnp.linalg.cholesky(cov).T @ a
    s = jnp.linalg.svd(m, compute_uv=False)
    p = s / jnp.maximum(jnp.sum(s), jnp.finfo(s.dtype).tiny)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return _nan_unless(_finite(a), jnp.exp(ent))


def _sq_dists(x, centers):
    return (jnp.sum(x**2, 1)[:, None] - 2.0 * x @ centers.T + jnp.sum(centers**2, 1)[None, :])


def _kmeans_once(key, x, k: int, iters: int):
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, 1)
    for j in range(1, k):  # k-means++ seeding (k is small and static)
        p = d2 / jnp.maximum(jnp.sum(d2), jnp.finfo(x.dtype).tiny)
        idx = jax.random.choice(keys[j], n, p=p)
        centers = centers.at[j].set(x[idx])
        d2 = jnp.minimum(d2, jnp.sum((x - x[idx]) ** 2, 1))

    def lloyd(_, centers):
        assign = jnp.argmin(_sq_dists(x, centers), axis=1)
        onehot = jax.nn.one_hot(assign, k, dtype=x.dtype)
        counts = onehot.sum(0)
        new = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, new, centers)

    centers = lax.fori_loop(0, iters, lloyd, centers)
    dists = _sq_dists(x, centers)
    labels = jnp.argmin(dists, axis=1)
    inertia = jnp.sum(jnp.min(dists, axis=1))
    return labels, centers, inertia


def kmeans(key, x, k: int, *, restarts: int = 4, iters: int = 50):
    """k-means with k-means++ seeding, ``restarts`` runs, best inertia kept.

    Args:
      key: PRNG key. x: (n, p) points. k: number of clusters (static).

    Returns:
      labels (n,) int, centers (k, p), inertia scalar.
    """
    k = check_int("k", k, low=1)
    restarts = check_int("restarts", restarts, low=1)
    iters = check_int("iters", iters, low=1)
    if jnp.ndim(x) != 2:
        raise ValueError(f"x must be (n, p), got shape {jnp.shape(x)}")
    if k > x.shape[0]:
        raise ValueError(f"k must be at most the number of points n = {x.shape[0]}, got k = {k}")
    labels, centers, inertia = jax.vmap(lambda kk: _kmeans_once(kk, x, k, iters))(
        jax.random.split(key, restarts))
    best = jnp.argmin(inertia)
    return labels[best], centers[best], inertia[best]


def _comb2(n):
    return n * (n - 1.0) / 2.0


def adjusted_rand_index(labels_true, labels_pred, num_true: int, num_pred: int) -> jax.Array:
    """Adjusted Rand index (Hubert and Arabie), as scikit-learn's ``adjusted_rand_score``.

    Labels must be integers in [0, num_true) and [0, num_pred) (static counts): a float
    dtype, or concrete values out of range, raise ValueError; traced values out of range
    give NaN (one-hot encoding would silently drop them).
    """
    if jnp.shape(labels_true) != jnp.shape(labels_pred) or jnp.ndim(labels_true) != 1:
        raise ValueError(
            f"labels_true and labels_pred must be 1-D of equal length, got "
            f"{jnp.shape(labels_true)} and {jnp.shape(labels_pred)}")
    num_true = check_int("num_true", num_true, low=1)
    num_pred = check_int("num_pred", num_pred, low=1)
    ok = _check_labels("labels_true", labels_true, num_true) & _check_labels("labels_pred", labels_pred, num_pred)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    a = jax.nn.one_hot(labels_true, num_true, dtype=dtype)
    b = jax.nn.one_hot(labels_pred, num_pred, dtype=dtype)
    table = a.T @ b
    n = jnp.asarray(labels_true.shape[0], dtype)
    index = jnp.sum(_comb2(table))
    sum_a = jnp.sum(_comb2(table.sum(1)))
    sum_b = jnp.sum(_comb2(table.sum(0)))
    expected = sum_a * sum_b / jnp.maximum(_comb2(n), 1.0)
    max_index = 0.5 * (sum_a + sum_b)
    denom = max_index - expected
    return _nan_unless(ok, jnp.where(denom == 0, 1.0, (index - expected) / jnp.where(denom == 0, 1.0, denom)))


def kmeans_ari(key, z, labels, k: int, *, restarts: int = 4, iters: int = 50) -> jax.Array:
    """k-means (k clusters) on embeddings z (n, p), scored by ARI against labels in [0, k);
    NaN when z is not finite."""
    pred, _, _ = kmeans(key, z, k, restarts=restarts, iters=iters)
    return _nan_unless(_finite(z), adjusted_rand_index(labels, pred, k, k))


def bayes_log_posterior(z, gmm: GMM, a=None, *, jitter: float = 1e-6) -> jax.Array:
    r"""Unnormalized log posteriors :math:`\log\pi_k + \log N(z; \mu_kA, A^\top\Sigma_kA)`, (n, K).

    The Bayes-optimal classifier given the projection z = xA (A = I when None), with the
    mixture's true parameters: linear (LDA's rule) for a shared covariance, quadratic for
    a :class:`gmmssl.gmm.HeteroGMM`. ``jitter`` times the mean variance is added to each
    projected covariance so collapsed projectors stay finite.

    Args:
      z: (n, r) projected points (x A), or (n, d) points when ``a`` is None.
      a: (d, r) projector or None.
    """
    covs = gmm.component_covs
    means = gmm.means
    if a is not None:
        _check_matrix("a", a)
        covs = jnp.einsum("di,kde,ej->kij", a, covs, a)
        means = means @ a
    r = means.shape[1]

    def one(cov, mean, weight):
        chol = jnp.linalg.cholesky(cov + jitter * jnp.trace(cov) / r * jnp.eye(r, dtype=cov.dtype))
        white = jsl.solve_triangular(chol, (z - mean).T, lower=True)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        return jnp.log(weight) - 0.5 * jnp.sum(white * white, axis=0) - 0.5 * logdet

    # per component: a loop on the CPU, vmapped elsewhere (gmmssl.backend)
    return map_linalg(one, covs, means, gmm.weights, unroll=True).T


def bayes_accuracy(x, labels, gmm: GMM, a=None) -> jax.Array:
    """Accuracy of the Bayes-optimal classifier on (x, labels), given the projection xA
    (the full data when ``a`` is None); see :func:`bayes_log_posterior`."""
    z = x if a is None else x @ a
    return _nan_unless(_finite(z), jnp.mean(jnp.argmax(bayes_log_posterior(z, gmm, a), axis=1) == labels))


def linear_probe_accuracy(z_train, c_train, z_test, c_test, num_classes: int, *, steps: int = 300,
                          learning_rate: float = 0.5, l2: float = 1e-4) -> jax.Array:
    r"""Test accuracy of a linear probe: multinomial logistic regression on the
    representations, fitted by full-batch gradient descent.

    Features are standardized with the training mean and standard deviation; the loss
    is mean cross-entropy + ``l2``·‖W‖²; ``steps`` steps of gradient descent (the
    problem is convex). Jittable and vmappable (no linear algebra).

    Args:
      z_train: (n, p), c_train: (n,) ints in [0, num_classes); z_test, c_test alike.
    """
    num_classes = check_int("num_classes", num_classes, low=2)
    mu = z_train.mean(0)
    sd = jnp.maximum(z_train.std(0), 1e-8)
    f_train, f_test = (z_train - mu) / sd, (z_test - mu) / sd
    onehot = jax.nn.one_hot(c_train, num_classes, dtype=f_train.dtype)

    def loss(params):
        w, b = params
        logp = jax.nn.log_softmax(f_train @ w + b)
        return -jnp.mean(jnp.sum(onehot * logp, axis=1)) + l2 * jnp.sum(w * w)

    params = (jnp.zeros((f_train.shape[1], num_classes), f_train.dtype), jnp.zeros((num_classes,), f_train.dtype))
    params = lax.fori_loop(0, steps, lambda _, p: jax.tree.map(lambda v, g: v - learning_rate * g, p,
                                                               jax.grad(loss)(p)), params)
    w, b = params
    return _nan_unless(_finite(z_train, z_test), jnp.mean(jnp.argmax(f_test @ w + b, axis=1) == c_test))
