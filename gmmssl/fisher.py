r"""Subspaces: the Fisher subspace of a mixture, and the LDA, PCA and spectral-SSL baselines.

All bases are returned as (d, m) arrays with orthonormal columns. Only their column
space matters; compare them with :mod:`gmmssl.metrics`.

* Fisher subspace :math:`S_F = \mathrm{span}\{\Sigma^{-1}(\mu_k - \bar\mu)\}`, the span of the
  top-m generalized eigenvectors of :math:`S_B v = \gamma \Sigma v`, m = rank(S_B) <= K−1.
  The uncentered variant is :math:`\mathrm{span}\{\Sigma^{-1}\mu_k\}` (dimension <= K).
* LDA (supervised): top-m generalized eigenvectors of the sample between-class scatter
  against the pooled within-class covariance.
* PCA (unsupervised): top-r eigenvectors of the sample covariance.
* Spectral SSL oracle (unsupervised, uses pairs): CCA of the two views, the top-r
  generalized eigenvectors of the symmetrized cross-covariance against the total
  covariance. In the population it equals S_F for every δ > 0, with canonical
  correlations :math:`\rho_i = \delta\gamma_i/(1+\gamma_i)`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from gmmssl._validate import check_int, check_range, is_concrete
from gmmssl.backend import map_linalg
from gmmssl.gmm import GMM

__all__ = [
    "canonical_correlations",
    "fisher_eigenvalues",
    "fisher_subspace",
    "generalized_eigh",
    "lda",
    "pca",
    "spectral_oracle",
    "sufficient_subspace",
    "Oracle",
]


def generalized_eigh(a, b, *, jitter: float = 0.0):
    r"""Solves :math:`a v = \gamma b v` for symmetric a and positive definite b.

    Returns eigenvalues in descending order (n,) and b-orthonormal eigenvectors as
    columns (n, n), via the Cholesky whitening :math:`L^{-1} a L^{-\top}`.
    ``jitter`` adds ``jitter * mean(diag(b))`` to b's diagonal.
    """
    n = b.shape[-1]
    b = 0.5 * (b + b.T)
    if jitter:
        b = b + jitter * jnp.trace(b) / n * jnp.eye(n, dtype=b.dtype)
    chol = jnp.linalg.cholesky(b)
    half = jsl.solve_triangular(chol, 0.5 * (a + a.T), lower=True)
    m = jsl.solve_triangular(chol, half.T, lower=True)
    w, v = jnp.linalg.eigh(0.5 * (m + m.T))
    vecs = jsl.solve_triangular(chol.T, v, lower=False)
    return w[::-1], vecs[:, ::-1]


def _orthonormal(vectors):
    q, _ = jnp.linalg.qr(vectors)
    return q


def fisher_eigenvalues(gmm: GMM) -> jax.Array:
    r"""Eigenvalues γ of :math:`\Sigma^{-1} S_B` in descending order, (d,)."""
    w, _ = generalized_eigh(gmm.between_scatter, gmm.cov)
    return w


def canonical_correlations(gmm: GMM, delta, mode: str = "prior") -> jax.Array:
    r"""Population canonical correlations of the two views of AeD(δ), (d,), descending.

    :math:`\rho_i = \kappa\,\gamma_i/(1+\gamma_i)` with κ = δ (mode "prior") or
    κ = δ − (1−δ)/(K−1) (mode "other", uniform weights), γ the eigenvalues of Σ⁻¹S_B.
    For mode "other" with κ < 0 the correlations are negative; they are returned as is.
    """
    check_range("delta", delta, 0.0, 1.0)
    gamma = jnp.clip(fisher_eigenvalues(gmm), 0.0, None)
    if mode == "prior":
        kappa = delta
    elif mode == "other":
        kappa = delta - (1.0 - delta) / (gmm.num_components - 1)
    else:
        raise ValueError(f"mode must be one of ['other', 'prior'], got {mode!r}")
    return kappa * gamma / (1.0 + gamma)


def fisher_subspace(gmm: GMM, centered: bool = True, *, num_directions: int | None = None,
                    rtol: float = 1e-6) -> jax.Array:
    r"""Orthonormal basis (d, m) of the Fisher subspace of a shared-covariance mixture.

    centered=True: :math:`S_F = \mathrm{span}\{\Sigma^{-1}(\mu_k-\bar\mu)\}`, m = rank(S_B) <= K−1.
    centered=False: :math:`\mathrm{span}\{\Sigma^{-1}\mu_k\}`, m <= K.

    Args:
      gmm: the mixture.
      centered: which variant (see above).
      num_directions: m; when None it is the numerical rank (singular values above
        ``rtol`` times the largest), which needs concrete arrays. Pass it to call
        this function under jit/vmap.

    Example (solvable by hand): two means ±e₁ and Σ = diag(4, 1) give
    Σ⁻¹(μ_k − μ̄) ∝ e₁, so the basis is ±e₁.
    """
    means = gmm.means - gmm.mean if centered else gmm.means
    directions = jsl.cho_solve((gmm.chol, True), means.T)  # (d, K)
    u, s, _ = jnp.linalg.svd(directions, full_matrices=False)
    if num_directions is None:
        if not is_concrete(gmm):
            raise ValueError("fisher_subspace under jit/vmap needs num_directions (an int)")
        s_np = np.asarray(s)
        num_directions = int(np.sum(s_np > rtol * s_np[0])) if s_np[0] > 0 else 0
        if num_directions == 0:
            raise ValueError("the mixture's means coincide: the Fisher subspace is empty")
    else:
        num_directions = check_int("num_directions", num_directions, low=1, high=min(u.shape))
    return u[:, :num_directions]


def _check_samples(name, x, min_rows=2):
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (n, d) array, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")


def _check_r(r, d, name="r"):
    return check_int(name, r, low=1, high=d)


def lda(x, labels, num_components: int, *, num_directions: int | None = None,
        jitter: float = 1e-6) -> jax.Array:
    r"""LDA subspace (d, m) from a labelled sample; supervised baseline.

    Pooled within-class covariance :math:`S_W = \frac{1}{n-K}\sum_k\sum_{i\in k}(x_i-\bar x_k)(x_i-\bar x_k)^\top`
    and between-class scatter :math:`\hat S_B = \sum_k \frac{n_k}{n}(\bar x_k-\bar x)(\bar x_k-\bar x)^\top`;
    returns an orthonormal basis of the top-m generalized eigenvectors of
    :math:`\hat S_B v = \gamma S_W v`, m = min(K−1, d) by default.

    Args:
      x: (n, d) samples; labels: (n,) ints in [0, num_components);
      num_components: K >= 2 (static); num_directions: m (static).
    """
    x = jnp.asarray(x)
    _check_samples("x", x)
    k = check_int("num_components", num_components, low=2)
    labels = jnp.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape (n,) = ({x.shape[0]},), got {labels.shape}")
    if is_concrete(labels):
        lab = np.asarray(labels)
        if lab.min() < 0 or lab.max() >= k:
            raise ValueError(f"labels must be in [0, {k - 1}], got range [{lab.min()}, {lab.max()}]")
    d = x.shape[1]
    m = min(k - 1, d) if num_directions is None else _check_r(num_directions, d, "num_directions")
    n = x.shape[0]
    onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)  # (n, K)
    counts = onehot.sum(0)
    class_means = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
    within = x - onehot @ class_means
    s_w = within.T @ within / max(n - k, 1)
    centered = class_means - (counts / n) @ class_means
    s_b = (centered * (counts / n)[:, None]).T @ centered
    _, vecs = generalized_eigh(s_b, s_w, jitter=jitter)
    return _orthonormal(vecs[:, :m])


def pca(x, r: int) -> jax.Array:
    """PCA subspace (d, r): the top-r eigenvectors of the sample covariance of x (n, d)."""
    x = jnp.asarray(x)
    _check_samples("x", x)
    r = _check_r(r, x.shape[1])
    xc = x - x.mean(0)
    _, vecs = jnp.linalg.eigh(xc.T @ xc / x.shape[0])
    return vecs[:, ::-1][:, :r]


def sufficient_subspace(gmm: GMM, r: int) -> jax.Array:
    r"""r leading directions (d, r, orthonormal) of the central subspace of a mixture:
    the smallest subspace through which the Bayes posterior p(c | x) depends on x.

    In coordinates whitened by the pooled within-class covariance
    :math:`\Sigma_W = LL^\top` (y = L⁻¹x, ν_k = L⁻¹(μ_k − μ̄), Ψ_k = L⁻¹Σ_kL⁻ᵀ) the
    log-odds are quadratic in y with coefficients in span{ν_k} + ∪ col(Ψ_k − I); the
    SAVE-type kernel :math:`M = \sum_k\pi_k[\nu_k\nu_k^\top + (\Psi_k - I)^2]` is PSD with
    exactly that column space. Its top-r eigenvectors v, mapped back as L⁻ᵀv, are
    returned. For a shared covariance (Ψ_k = I) this is the Fisher subspace (r = m);
    for a :class:`gmmssl.gmm.HeteroGMM` it adds the directions where the components'
    shapes differ. The ranking by M's eigenvalues is a heuristic when r is smaller
    than the central subspace; measure what a projector keeps with
    :func:`gmmssl.metrics.bayes_accuracy`.
    """
    r = _check_r(r, gmm.dim)
    chol = gmm.chol
    nu = jsl.solve_triangular(chol, (gmm.means - gmm.mean).T, lower=True)  # (d, K)
    covs = gmm.component_covs
    eye = jnp.eye(gmm.dim, dtype=chol.dtype)

    def spread(cov):
        psi = jsl.solve_triangular(chol, jsl.solve_triangular(chol, cov, lower=True).T, lower=True)
        dev = 0.5 * (psi + psi.T) - eye
        return dev @ dev

    # per component: a loop on the CPU, vmapped elsewhere (gmmssl.backend)
    m = (nu * gmm.weights[None, :]) @ nu.T + jnp.einsum("k,kij->ij", gmm.weights, map_linalg(spread, covs, unroll=True))
    _, v = jnp.linalg.eigh(0.5 * (m + m.T))
    return _orthonormal(jsl.solve_triangular(chol.T, v[:, ::-1][:, :r], lower=False))


class Oracle(NamedTuple):
    """The spectral oracle's output: ``basis`` (d, r) orthonormal, ``rho`` (r,) the canonical
    correlations (descending), ``embedding`` (d, r) the canonical directions (Σ̂_T-normalized)
    scaled by max(ρ, 0), the map a spectral SSL method would embed with."""

    basis: jax.Array
    rho: jax.Array
    embedding: jax.Array


def spectral_oracle(x, x_pos, r: int, *, jitter: float = 1e-6) -> Oracle:
    r"""The spectral SSL oracle: CCA between the two views of AeD pairs.

    Top-r generalized eigenvectors of :math:`\tfrac12(\hat C_{xx^+} + \hat C_{x^+x})` against
    :math:`\hat\Sigma_T = \tfrac12(\hat C_{xx} + \hat C_{x^+x^+})`, all centered at the pooled mean.

    Args:
      x, x_pos: (n, d) the two views; r: number of directions (static).

    Returns:
      :class:`Oracle` (basis, rho, embedding); rho estimates δγ_i/(1+γ_i).
    """
    x, x_pos = jnp.asarray(x), jnp.asarray(x_pos)
    _check_samples("x", x)
    if x_pos.shape != x.shape:
        raise ValueError(f"x_pos must have the shape of x {x.shape}, got {x_pos.shape}")
    r = _check_r(r, x.shape[1])
    mu = 0.5 * (x.mean(0) + x_pos.mean(0))
    xc, pc = x - mu, x_pos - mu
    n = x.shape[0]
    cross = xc.T @ pc / n
    total = 0.5 * (xc.T @ xc + pc.T @ pc) / n
    w, vecs = generalized_eigh(0.5 * (cross + cross.T), total, jitter=jitter)
    vecs, rho = vecs[:, :r], w[:r]
    return Oracle(_orthonormal(vecs), rho, vecs * jnp.clip(rho, 0.0, None))
