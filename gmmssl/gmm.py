r"""Gaussian mixtures with a shared covariance, their presets and their samplers.

A mixture has K components with weights :math:`\pi` (K,), means :math:`\mu_k`
(rows of a K×d array) and one shared covariance :math:`\Sigma = L L^\top`, stored
by its lower Cholesky factor L (d×d). Sampling: :math:`c \sim \pi`,
:math:`x = \mu_c + L\varepsilon`, :math:`\varepsilon \sim N(0, I_d)`.

``GMM`` is a JAX pytree, so mixtures can be passed through ``jit`` and stacked
along a grid axis and ``vmap``-ed. The constructor validates eagerly (outside
jit); pytree unflattening bypasses the checks.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmmssl._validate import check_int, check_range, is_concrete
from gmmssl.backend import map_linalg

__all__ = [
    "GMM",
    "HeteroGMM",
    "hetero_gmm",
    "MultiModalGMM",
    "MultiModalPairs",
    "multimodal_gmm",
    "sample_multimodal",
    "parallel_pancakes",
    "random_gmm",
    "sample",
]


def _check_real(name: str, value) -> None:
    kind = np.asarray(value).dtype.kind
    if kind not in "biuf":  # complex (its imaginary part), strings, objects: never coerced
        raise ValueError(f"{name} must hold real numbers, got dtype {np.asarray(value).dtype}")


def _check_weights(weights, num_components: int):
    _check_real("weights", weights)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_components,):
        raise ValueError(
            f"weights must have shape (num_components,) = ({num_components},), got {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite (found NaN or inf)")
    if np.any(w < 0):
        raise ValueError(f"weights must be non-negative, got {w.tolist()}")
    if abs(w.sum() - 1.0) > 1e-5:
        raise ValueError(f"weights must sum to 1 (within 1e-5), got sum {w.sum():.6g}")


def _check_means_cov(means, cov):
    _check_real("means", means)
    _check_real("cov", cov)
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(cov, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"means must be a (num_components, d) array, got shape {m.shape}")
    if m.shape[0] < 2:
        raise ValueError(f"a mixture needs num_components >= 2, got {m.shape[0]} (means.shape[0])")
    if not np.all(np.isfinite(m)):
        raise ValueError("means must be finite (found NaN or inf)")
    d = m.shape[1]
    if d < 1:
        raise ValueError("means must have d >= 1 columns")
    if s.shape != (d, d):
        raise ValueError(
            f"cov must have shape (d, d) = ({d}, {d}) to match means of shape {m.shape}, "
            f"got {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("cov must be finite (found NaN or inf)")
    scale = max(np.abs(s).max(), 1e-300)
    if np.abs(s - s.T).max() > 1e-6 * scale:
        raise ValueError("cov must be symmetric positive definite; it is not symmetric")
    eig = np.linalg.eigvalsh(s)
    if eig[0] <= 1e-12 * max(eig[-1], 1e-300):
        raise ValueError(
            "cov must be symmetric positive definite; its smallest eigenvalue is "
            f"{eig[0]:.3g} (largest {eig[-1]:.3g})"
        )


@jax.tree_util.register_pytree_node_class
class GMM:
    r"""A shared-covariance Gaussian mixture.

    Args:
      means: (K, d) component means :math:`\mu_k`, K >= 2.
      cov: (d, d) shared covariance :math:`\Sigma`, symmetric positive definite.
      weights: (K,) mixture weights :math:`\pi`, non-negative, summing to 1;
        uniform when None.

    Attributes:
      means, chol (lower Cholesky factor L of Σ), weights.

    Example:
      >>> import jax.numpy as jnp
      >>> g = GMM(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.eye(2))
      >>> g.dim, g.num_components
      (2, 2)
    """

    def __init__(self, means, cov, weights=None):
        if is_concrete((means, cov, weights)):
            _check_means_cov(means, cov)
            k = np.shape(means)[0]
            if weights is not None:
                _check_weights(weights, k)
        means = jnp.asarray(means)
        dtype = jnp.result_type(means.dtype, jnp.float32)
        means = means.astype(dtype)
        cov = jnp.asarray(cov, dtype=dtype)
        k = means.shape[0]
        if weights is None:
            weights = jnp.full((k,), 1.0 / k, dtype=dtype)
        self.means = means
        self.chol = jnp.linalg.cholesky(0.5 * (cov + cov.T))
        self.weights = jnp.asarray(weights, dtype=dtype)

    @classmethod
    def from_cholesky(cls, means, chol, weights):
        """Builds a mixture from arrays without validation (for traced code)."""
        obj = object.__new__(cls)
        obj.means, obj.chol, obj.weights = means, chol, weights
        return obj

    # pytree protocol
    def tree_flatten(self):
        return (self.means, self.chol, self.weights), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls.from_cholesky(*children)

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def num_components(self) -> int:
        return self.means.shape[-2]

    @property
    def cov(self) -> jax.Array:
        """Σ = L Lᵀ, (d, d)."""
        return self.chol @ self.chol.T

    @property
    def component_covs(self) -> jax.Array:
        """Each component's covariance, (K, d, d) (Σ repeated for a shared covariance)."""
        return jnp.broadcast_to(self.cov, (self.num_components,) + self.cov.shape)

    @property
    def mean(self) -> jax.Array:
        """μ̄ = Σ_k π_k μ_k, (d,)."""
        return self.weights @ self.means

    @property
    def between_scatter(self) -> jax.Array:
        """S_B = Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ, (d, d)."""
        centered = self.means - self.mean
        return (centered * self.weights[:, None]).T @ centered

    @property
    def total_cov(self) -> jax.Array:
        """Σ_T = Σ + S_B, (d, d)."""
        return self.cov + self.between_scatter

    def noise(self, c, eps):
        """The component noise L ε of points with labels c (n,) and standard normals eps (n, d)."""
        del c
        return eps @ self.chol.T

    def sample(self, key, n: int):
        """Draws n labelled points; see :func:`sample`."""
        return sample(key, self, n)

    def __repr__(self):
        return f"GMM(dim={self.dim}, num_components={self.num_components}, dtype={self.means.dtype})"


@jax.tree_util.register_pytree_node_class
class HeteroGMM(GMM):
    r"""A heteroscedastic Gaussian mixture: one covariance :math:`\Sigma_k` per component
    (beyond the paper).

    Sampling: :math:`x = \mu_c + L_c\varepsilon`. Everything that reads ``cov`` / ``chol``
    (the Fisher subspace, ``fisher_efficiency``, LDA's population target) sees the pooled
    within-class covariance :math:`\Sigma_W = \sum_k \pi_k\Sigma_k`, so
    ``fisher_subspace`` of a HeteroGMM is the subspace LDA estimates,
    :math:`\mathrm{span}\{\Sigma_W^{-1}(\mu_k-\bar\mu)\}`; it need not keep the
    Bayes-optimal (quadratic) classifier's accuracy.

    Args:
      means: (K, d); covs: (K, d, d), each symmetric positive definite; weights: (K,) or None.

    Attributes:
      means, chols (K, d, d) per-component Cholesky factors, chol (pooled), weights.
    """

    def __init__(self, means, covs, weights=None):
        if is_concrete((means, covs)):
            c = np.asarray(covs, dtype=np.float64)
            k = np.shape(means)[0] if np.ndim(means) == 2 else None
            if c.ndim != 3 or k is None or c.shape[0] != k:
                raise ValueError(f"covs must be (num_components, d, d) to match means {np.shape(means)}, "
                                 f"got {c.shape}")
            for j in range(k):
                try:
                    _check_means_cov(means, c[j])
                except ValueError as err:
                    raise ValueError(f"covs[{j}]: {err}") from None
        w = None if weights is None else jnp.asarray(weights)
        covs = jnp.asarray(covs)
        pooled_w = jnp.full((covs.shape[0],), 1.0 / covs.shape[0]) if w is None else w
        super().__init__(means, jnp.einsum("k,kij->ij", pooled_w.astype(covs.dtype), covs), weights)
        covs = covs.astype(self.means.dtype)
        # one Cholesky per component: a loop on the CPU, vmapped elsewhere (gmmssl.backend)
        self.chols = map_linalg(lambda c: jnp.linalg.cholesky(0.5 * (c + c.T)), covs, unroll=True)

    @classmethod
    def from_cholesky(cls, means, chol, weights, chols=None):
        obj = object.__new__(cls)
        obj.means, obj.chol, obj.weights, obj.chols = means, chol, weights, chols
        return obj

    def tree_flatten(self):
        return (self.means, self.chol, self.weights, self.chols), None

    @property
    def covs(self) -> jax.Array:
        """Σ_k = L_k L_kᵀ, (K, d, d)."""
        return self.chols @ jnp.swapaxes(self.chols, -1, -2)

    @property
    def component_covs(self) -> jax.Array:
        """Σ_k, (K, d, d)."""
        return self.covs

    def noise(self, c, eps):
        """L_c ε per point, (n, d)."""
        return jnp.einsum("nij,nj->ni", self.chols[c], eps)

    def __repr__(self):
        return f"HeteroGMM(dim={self.dim}, num_components={self.num_components}, dtype={self.means.dtype})"


def hetero_gmm(key, d: int, num_components: int, *, heterogeneity=0.5, separation: float = 1.0,
               condition_number: float = 10.0, weights=None, dtype=jnp.float32) -> HeteroGMM:
    r"""A random heteroscedastic mixture that interpolates from a shared covariance.

    Starts from :func:`random_gmm` (centered means, shared Σ of the given condition number)
    and gives component k the covariance
    :math:`\Sigma_k = (1-h)\,\Sigma + h\,U_k D_k U_k^\top` with a Haar-random rotation U_k
    and a log-uniform spectrum D_k of the same condition number, rescaled to Σ's trace. h = 0 is the shared-covariance mixture (the same draw for every h, so
    curves over h are smooth); h = 1 gives unrelated covariances.

    Args:
      heterogeneity: h in [0, 1] (may be traced).
    """
    k = check_int("num_components", num_components, low=2)
    d = check_int("d", d, low=1)
    check_range("heterogeneity", heterogeneity, 0.0, 1.0)
    k_base, k_comp = jax.random.split(key)
    base = random_gmm(k_base, d, k, separation=separation, condition_number=condition_number,
                      weights=weights, dtype=dtype)
    shared = base.cov
    keys = jax.random.split(k_comp, k)

    def one(kk):
        k_rot, k_spec = jax.random.split(kk)
        q, r = jnp.linalg.qr(jax.random.normal(k_rot, (d, d), dtype=dtype))
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        spec = jnp.exp(jax.random.uniform(k_spec, (d,), dtype=dtype) * jnp.log(condition_number))
        spec = spec * jnp.trace(shared) / spec.sum()
        return (q * spec[None, :]) @ q.T

    comps = map_linalg(one, keys, unroll=True)  # a loop on the CPU, vmapped elsewhere (gmmssl.backend)
    h = jnp.asarray(heterogeneity, dtype)
    return HeteroGMM(base.means, (1.0 - h) * shared[None] + h * comps, base.weights)


def sample(key, gmm: GMM, n: int):
    r"""Draws n labelled points: :math:`c \sim \pi`, :math:`x = \mu_c + L\varepsilon`.

    Returns:
      x: (n, d) samples; c: (n,) int32 component labels.
    """
    n = check_int("n", n, low=1)
    k_c, k_eps = jax.random.split(key)
    c = jax.random.categorical(k_c, jnp.log(gmm.weights), shape=(n,))
    eps = jax.random.normal(k_eps, (n, gmm.dim), dtype=gmm.means.dtype)
    return gmm.means[c] + gmm.noise(c, eps), c.astype(jnp.int32)


def _simplex(num_components: int) -> np.ndarray:
    """K points of a regular simplex centred at 0 with unit norm, in K−1 coordinates."""
    k = num_components
    centered = np.eye(k) - 1.0 / k
    # orthonormal basis of the (K-1)-dim subspace orthogonal to the all-ones vector
    q, _ = np.linalg.qr(centered)
    coords = centered @ q[:, : k - 1]
    return coords / np.linalg.norm(coords, axis=1, keepdims=True)


def parallel_pancakes(
    d: int,
    num_components: int = 2,
    *,
    separation: float = 0.7,
    thickness: float = 0.1,
    dtype=jnp.float32,
) -> GMM:
    r"""The "parallel pancakes" mixture: thin along the separating directions, wide elsewhere.

    For K = 2: :math:`\mu_\pm = \pm s e_1`, :math:`\Sigma = \mathrm{diag}(\sigma^2, 1, \dots, 1)`.
    For K > 2 the means lie on a regular simplex of radius s in span(e_1..e_{K−1}),
    and Σ has variance σ² along those K−1 directions and 1 along the others.
    The total variance along each separating direction (≈ s²·/(K−1) + σ²) is below 1,
    so PCA keeps the wide, class-free directions while LDA keeps the separating ones.

    Args:
      d: ambient dimension, d >= num_components.
      num_components: K >= 2.
      separation: s > 0, distance of each mean from the origin.
      thickness: σ > 0, standard deviation across the pancakes; must satisfy
        the PCA-failure condition s²/(K−1) + σ² < 1.
    """
    k = check_int("num_components", num_components, low=2)
    d = check_int("d", d, low=k)
    check_range("separation", separation, 0.0, np.inf, low_open=True, high_open=True)
    check_range("thickness", thickness, 0.0, np.inf, low_open=True, high_open=True)
    if is_concrete((separation, thickness)):
        per_dir = float(separation) ** 2 / (k - 1) + float(thickness) ** 2
        if per_dir >= 1.0:
            raise ValueError(
                "separation and thickness must satisfy separation**2/(num_components-1) + "
                f"thickness**2 < 1 (the wide directions have variance 1); got {per_dir:.3g}")
    simplex = np.zeros((k, d))
    simplex[:, : k - 1] = _simplex(k)
    thin = np.zeros(d)
    thin[: k - 1] = 1.0
    sep = jnp.asarray(separation, dtype)
    diag = 1.0 + (jnp.asarray(thickness, dtype) ** 2 - 1.0) * jnp.asarray(thin, dtype)
    # (separation and thickness may be traced: a grid axis)
    return GMM(sep * jnp.asarray(simplex, dtype), jnp.diag(diag))


def random_gmm(
    key,
    d: int,
    num_components: int,
    *,
    separation: float = 1.0,
    condition_number: float = 10.0,
    weights=None,
    centered: bool = True,
    dtype=jnp.float32,
) -> GMM:
    r"""A random anisotropic mixture.

    Means :math:`\mu_k \sim N(0, s^2 I_d)`, then (``centered=True``, the default) shifted
    so that :math:`\bar\mu = \sum_k \pi_k\mu_k = 0`; :math:`\Sigma = U\,\mathrm{diag}(\lambda)\,U^\top`
    with U a Haar-random rotation and λ log-uniform in [1/condition_number, 1]
    (the endpoints included, so cond(Σ) equals ``condition_number`` exactly when d >= 2).

    Args:
      key: PRNG key.
      d: dimension, >= 1.
      num_components: K >= 2.
      separation: s > 0.
      condition_number: >= 1.
      weights: (K,) weights or None for uniform.
      centered: shift the means so the mixture has mean 0. The Fisher subspace does
        not depend on a shift, but dot-product losses do: a global offset adds a common
        term to every embedding (measured: CLIP captured 0.88 of the shared Fisher
        subspace on uncentered data, 0.998 centered).
    """
    k = check_int("num_components", num_components, low=2)
    d = check_int("d", d, low=1)
    check_range("separation", separation, 0.0, np.inf, low_open=True, high_open=True)
    check_range("condition_number", condition_number, 1.0, np.inf, high_open=True)
    k_mu, k_u, k_lam = jax.random.split(key, 3)
    means = separation * jax.random.normal(k_mu, (k, d), dtype=dtype)
    u = jax.random.orthogonal(k_u, d, dtype=dtype) if d > 1 else jnp.ones((1, 1), dtype)
    t = jax.random.uniform(k_lam, (d,), dtype=dtype)
    if d >= 2:
        t = t.at[0].set(0.0).at[1].set(1.0)
    lam = jnp.asarray(condition_number, dtype) ** (-t)
    cov = (u * lam) @ u.T
    if centered:
        w = jnp.full((k,), 1.0 / k, dtype) if weights is None else jnp.asarray(weights, dtype)
        means = means - w @ means
    return GMM(means, 0.5 * (cov + cov.T), weights)


def _mixture_of_sums(a: GMM, b_means, b_weights) -> GMM:
    """The mixture of x = μ_c + ν_j + Lε over (c, j): K·J components, index c·J + j."""
    k, j = a.means.shape[0], b_means.shape[0]
    means = (a.means[:, None, :] + b_means[None, :, :]).reshape(k * j, -1)
    weights = (a.weights[:, None] * b_weights[None, :]).reshape(k * j)
    return GMM.from_cholesky(means, a.chol, weights)


def _scatter(means, weights):
    centered = means - weights @ means
    return (centered * weights[:, None]).T @ centered


@jax.tree_util.register_pytree_node_class
class MultiModalGMM:
    r"""Two modalities sharing a component (SPEC 3.2, for CLIP).

    A shared component :math:`c \sim \pi` and, per modality m ∈ {1, 2}, a private
    component :math:`j_m \sim \rho_m`, independent of c and of each other:
    :math:`x_m = \mu^{(m)}_c + \nu^{(m)}_{j_m} + L_m\varepsilon_m`. The pair (x₁, x₂)
    shares only c.

    Args:
      shared_means: pair of (K, d_m) arrays μ^(m).
      private_means: pair of (J_m, d_m) arrays ν^(m) (J_m >= 1; J_m = 1 means no private
        structure).
      covs: pair of (d_m, d_m) covariances Σ_m.
      weights: (K,) π or None (uniform).
      private_weights: pair of (J_m,) ρ_m or None (uniform).

    Views (each a :class:`GMM`):
      ``modality(m)``: the K·J_m-component mixture of x_m (component index c·J_m + j_m);
      ``shared_view(m)``: components c, covariance Σ_m + S_ν^(m) (the private structure
      counts as within-class spread): its Fisher subspace is the modality's Fisher
      subspace of the shared component;
      ``private_view(m)``: components j_m, covariance Σ_m + S_μ^(m).
    """

    def __init__(self, shared_means, private_means, covs, weights=None, private_weights=None):
        if private_weights is None:
            private_weights = (None, None)
        if not (len(shared_means) == len(private_means) == len(covs) == len(private_weights) == 2):
            raise ValueError("shared_means, private_means, covs and private_weights must be pairs (one per modality)")
        shared, private = [], []
        for m in range(2):
            shared.append(GMM(shared_means[m], covs[m], weights))
            nu = jnp.asarray(private_means[m], shared[m].means.dtype)
            if nu.ndim != 2 or nu.shape[1] != shared[m].dim or nu.shape[0] < 1:
                raise ValueError(f"private_means[{m}] must be (J, {shared[m].dim}) with J >= 1, got {nu.shape}")
            if is_concrete(nu) and not np.all(np.isfinite(np.asarray(nu))):
                raise ValueError(f"private_means[{m}] must be finite (found NaN or inf)")
            rho = private_weights[m]
            if rho is None:
                rho = jnp.full((nu.shape[0],), 1.0 / nu.shape[0], nu.dtype)
            elif is_concrete(rho):
                _check_weights(rho, nu.shape[0])
            private.append((nu, jnp.asarray(rho, nu.dtype)))
        self.shared = tuple(shared)
        self.private_means = tuple(p[0] for p in private)
        self.private_weights = tuple(p[1] for p in private)

    def tree_flatten(self):
        return (self.shared, self.private_means, self.private_weights), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.shared, obj.private_means, obj.private_weights = children
        return obj

    @property
    def dims(self) -> tuple[int, int]:
        return (self.shared[0].dim, self.shared[1].dim)

    @property
    def dim(self) -> int:
        """Dimension of the first modality (the one the trainer's history reports on)."""
        return self.shared[0].dim

    @property
    def num_components(self) -> int:
        """K, the number of shared components."""
        return self.shared[0].num_components

    @property
    def num_private(self) -> tuple[int, int]:
        return (self.private_means[0].shape[0], self.private_means[1].shape[0])

    def modality(self, m: int) -> GMM:
        return _mixture_of_sums(self.shared[m], self.private_means[m], self.private_weights[m])

    def shared_view(self, m: int) -> GMM:
        g = self.shared[m]
        cov = g.cov + _scatter(self.private_means[m], self.private_weights[m])
        return GMM.from_cholesky(g.means, jnp.linalg.cholesky(cov), g.weights)

    def private_view(self, m: int) -> GMM:
        g = self.shared[m]
        cov = g.cov + g.between_scatter
        return GMM.from_cholesky(self.private_means[m], jnp.linalg.cholesky(cov), self.private_weights[m])

    def __repr__(self):
        return (f"MultiModalGMM(dims={self.dims}, num_components={self.num_components}, "
                f"num_private={self.num_private})")


class MultiModalPairs(NamedTuple):
    """Matched pairs of the two modalities: x1 (n, d1), x2 (n, d2), the shared components
    c1 (of x1) and c2 (of x2; equal to c1 with probability δ), private components j1, j2."""

    x1: jax.Array
    x2: jax.Array
    c1: jax.Array
    c2: jax.Array
    j1: jax.Array
    j2: jax.Array


def sample_multimodal(key, mm: MultiModalGMM, n: int, delta=1.0) -> MultiModalPairs:
    """Draws n matched pairs (x₁, x₂) sharing their component c with probability δ.

    With probability 1 − δ the second modality's shared component is an independent draw
    from π (the AeD "prior" noise, SPEC 3.3). Common random numbers: for one key the
    draws do not depend on δ. A traced δ outside [0, 1] gives NaN samples.
    """
    n = check_int("n", n, low=1)
    check_range("delta", delta, 0.0, 1.0)
    keys = jax.random.split(key, 7)
    logits = jnp.log(mm.shared[0].weights)
    c1 = jax.random.categorical(keys[0], logits, shape=(n,))
    other = jax.random.categorical(keys[1], logits, shape=(n,))
    c2 = jnp.where(jax.random.uniform(keys[2], (n,)) < delta, c1, other)
    xs, js = [], []
    for m, c in ((0, c1), (1, c2)):
        g = mm.shared[m]
        j = jax.random.categorical(keys[3 + m], jnp.log(mm.private_weights[m]), shape=(n,))
        eps = jax.random.normal(keys[5 + m], (n, g.dim), dtype=g.means.dtype)
        x = g.means[c] + mm.private_means[m][j] + eps @ g.chol.T
        xs.append(jnp.where((delta >= 0.0) & (delta <= 1.0), x, jnp.nan))
        js.append(j.astype(jnp.int32))
    return MultiModalPairs(xs[0], xs[1], c1.astype(jnp.int32), c2.astype(jnp.int32), js[0], js[1])


def multimodal_gmm(key, dims=(8, 8), num_components: int = 3, num_private=(2, 2), *,
                   separation: float = 2.0, private_separation: float = 3.0,
                   condition_number: float = 10.0, dtype=jnp.float32) -> MultiModalGMM:
    """A random two-modality mixture: per modality, shared means N(0, s²I), private means
    N(0, s_p²I), both centered (weighted mean 0, see :func:`random_gmm`), and a random
    covariance of the given condition number."""
    k = check_int("num_components", num_components, low=2)
    keys = jax.random.split(key, 4)
    shared, private, covs = [], [], []
    for m in range(2):
        d = check_int(f"dims[{m}]", dims[m], low=1)
        j = check_int(f"num_private[{m}]", num_private[m], low=1)
        g = random_gmm(keys[m], d, k, separation=separation, condition_number=condition_number, dtype=dtype)
        shared.append(g.means)
        covs.append(g.cov)
        check_range("private_separation", private_separation, 0.0, np.inf, high_open=True)
        nu = private_separation * jax.random.normal(keys[2 + m], (j, d), dtype=dtype)
        private.append(nu - nu.mean(0))
    return MultiModalGMM(shared, private, covs)
