r"""The InfoNCE loss computed exactly, with no sampling noise (every expectation over the
mixture integrated), its minimizers found and certified, and why they lie in Σ⁻¹span{μ_j}.

The sampled trainers (even ``infonce_population``, whose anchors and positives are still
drawn) descend a noisy objective. Here every expectation is computed. For a projector
A (d, r), embeddings z = xA, dot similarity at temperature τ, pairs from AeD(δ) and
negatives from the mixture (infinitely many, as in
:func:`gmmssl.losses.infonce_population`):

.. math::
   L(A) = -\tfrac1\tau E[z\cdot z^+]
          + E_x\Big[\log\sum_j \pi_j e^{z\cdot m_j/\tau + \frac12 zSz^\top/\tau^2}\Big],
   \qquad m_j = \mu_j A,\; S = A^\top\Sigma A.

* The positive term is exact: :math:`E[z\cdot z^+] = \sum_{c,c^+} P(c,c^+)\, m_c\cdot m_{c^+}`
  (the views' noises are independent), with P the pair law of AeD(δ) (:func:`pair_law`).
* The quadratic part of the outer term is exact:
  :math:`\tfrac1{2\tau^2}\sum_k\pi_k(m_kSm_k^\top + \mathrm{tr}\,S^2)`.
* The log-sum-exp part is a Gaussian integral per component, computed by tensor
  Gauss–Hermite quadrature (:func:`gauss_hermite`). :func:`exact_infonce` integrates over z (r dimensions, A of full column
  rank); :func:`exact_infonce_in_span` over the span of the whitened means (q ≤ K
  dimensions), for any A in that span, including rank-deficient ones.

**The sign-flip / Jensen argument** (tested numerically in tests/test_exact.py, stated in
docs/open-questions.md). In whitened coordinates B = LᵀA (Σ = LLᵀ), split B = B_W + B_⊥
along W = span{L⁻¹μ_j} and its complement. Then m_j and the positive term depend on B_W
only, and B_⊥ adds to z an independent noise e ~ N(0, P), P = B_⊥ᵀB_⊥, and P to S. The
integrand h(z; S) = LSE_j(z·m_j/τ + log π_j) + ½zSzᵀ/τ² is convex in z and increasing
in S, so by Jensen L(B_W + B_⊥) ≥ L(B_W) + ½ tr(S P)/τ² > L(B_W) for B_⊥ ≠ 0: every
minimizer has col(A) ⊆ Σ⁻¹ span{μ_j}. For centered means that span is S_F, so the only
way to miss S_F is to drop a direction inside it. Near B_⊥ = 0,
L = L(B_W) + ½⟨C, P⟩ + O(|P|²) with C = Σ_k π_k B_WᵀE_k[∇²f]B_W + (Σ_k π_k m_kᵀm_k + 2S_W)/τ²
(:func:`perp_curvature`), f the log-sum-exp in y = zB_Wᵀ.

Every public function here runs its matmuls at :func:`gmmssl.backend.matmul_precision`
(float32, "highest", unless you set JAX's own ``jax_default_matmul_precision``): a GPU's
TF32 default would round the objective and its certificates at ~1e-3.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from gmmssl._validate import check_choice, check_int, check_range
from gmmssl.augment import MODES
from gmmssl.backend import with_matmul_precision
from gmmssl.gmm import GMM, HeteroGMM

__all__ = ["GRAD_TOL", "HESS_TOL", "certificate", "certify", "exact_infonce", "exact_infonce_in_span", "gauss_hermite",
           "DEFAULT_LEVELS", "default_level", "jensen_gap", "newton", "pair_law", "perp_curvature",
           "span_basis", "span_projector"]


def pair_law(gmm: GMM, delta, mode: str = "prior") -> jax.Array:
    """P(c, c⁺) (K, K) of AeD(δ): π_c[δ·1{c⁺=c} + (1−δ)q(c⁺|c)], q = π (mode "prior") or
    uniform over the K−1 other components (mode "other")."""
    check_choice("mode", mode, MODES)
    check_range("delta", delta, 0.0, 1.0)
    k = gmm.num_components
    w = gmm.weights
    eye = jnp.eye(k, dtype=w.dtype)
    q = jnp.broadcast_to(w[None, :], (k, k)) if mode == "prior" else (1.0 - eye) / (k - 1)
    return w[:, None] * (delta * eye + (1.0 - delta) * q)


@functools.lru_cache(maxsize=None)
def _hermite_1d(n: int):
    x, w = np.polynomial.hermite_e.hermegauss(n)  # weight e^{-x²/2}
    return x, w / w.sum()


DEFAULT_LEVELS = {0: 1, 1: 48, 2: 32, 3: 20, 4: 8, 5: 7, 6: 5, 7: 4, 8: 3}
"""Points per dimension of the default tensor rule, by dimension (at most about 4·10⁴
nodes; coarse above 5 dimensions: check the ``quad_error`` of :func:`certify`)."""


def default_level(dim: int) -> int:
    """The default points per dimension for a ``dim``-dimensional integral."""
    return DEFAULT_LEVELS.get(dim, 3)


@functools.lru_cache(maxsize=None)
def gauss_hermite(dim: int, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (level^dim, dim) and weights with Σ w f(x) ≈ E f(ξ), ξ ~ N(0, I_dim): the
    tensor product of ``level``-point Gauss–Hermite rules (exact for polynomials of degree
    below 2·level in each coordinate), float64 numpy. dim = 0: one node of weight 1.

    The log-sum-exp integrands here have kinks smoothed at the scale of the noise, so
    convergence is algebraic rather than exponential: measured on a K = 3 mixture at a
    random projector of large scale, the error of a 2-D integral is 4e-7 at 16 points,
    1e-8 at 24, 1e-10 at 32. At the optima the embeddings are small and the integrand
    smooth: the defaults (:data:`DEFAULT_LEVELS`) are checked there by the ``quad_error``
    estimate of :func:`certify`.
    (A Smolyak sparse grid did worse on these integrands: 2e-4 at level 7 in 4-D.)
    """
    dim = check_int("dim", dim, low=0)
    level = check_int("level", level, low=1)
    if dim == 0:
        return np.zeros((1, 0)), np.ones(1)
    x, w = _hermite_1d(level)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    nodes = np.stack([gr.reshape(-1) for gr in grids], axis=1)
    weights = np.prod(np.stack([gr.reshape(-1) for gr in wgrids], axis=1), axis=1)
    return nodes, weights


def _positive_and_quadratic(means_emb, s, law, weights, t):
    positive = jnp.sum(law * (means_emb @ means_emb.T)) / t
    quad = (jnp.sum(weights * jnp.einsum("kr,rs,ks->k", means_emb, s, means_emb)) + jnp.sum(s * s)) / (2 * t**2)
    return positive, quad


def _lse_term(centers, noise, nodes, weights_q, log_pi, directions, t):
    """Σ_k π_k Σ_n w_n LSE_j((c_k + ξ_n N)·u_j/τ + log π_j) for centers c (K, p), noise
    factor N (q, p), directions u (K, p)."""
    y = centers[:, None, :] + (nodes @ noise)[None, :, :]  # (K, N, p)
    lse = logsumexp(jnp.einsum("knp,jp->knj", y, directions) / t + log_pi, axis=-1)  # (K, N)
    return jnp.sum(jnp.exp(log_pi) * (lse @ weights_q))


def _setup(gmm, delta, mode, temperature):
    if isinstance(gmm, HeteroGMM) or not isinstance(gmm, GMM):
        raise ValueError(f"the exact objective needs a GMM with one shared covariance, got {type(gmm).__name__}")
    check_range("temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True)
    return pair_law(gmm, delta, mode), jnp.log(gmm.weights)


@with_matmul_precision
def exact_infonce(a, gmm: GMM, delta, mode: str = "prior", temperature=1.0, *, level: int | None = None) -> jax.Array:
    """L(A) of the module docstring for a projector A (d, r) of full column rank.

    The log-sum-exp integral runs over z = m_k + ξ Lᵀ (ξ ~ N(0, I_r), S = LLᵀ) on
    :func:`gauss_hermite` nodes of ``level``. Differentiable to any order where A has full
    column rank; a rank-deficient A gives NaN (its S has no Cholesky factor): use
    :func:`exact_infonce_in_span`. Float64 recommended (``jax.enable_x64``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gmmssl.gmm import parallel_pancakes
      >>> with jax.enable_x64(True):
      ...     g = parallel_pancakes(4, 2, dtype=jnp.float64)
      ...     v = exact_infonce(jnp.eye(4, 2, dtype=jnp.float64), g, 0.5)
      >>> bool(jnp.isfinite(v))
      True
    """
    if jnp.ndim(a) != 2 or a.shape[0] != gmm.dim:
        raise ValueError(f"a must be (d, r) with d = {gmm.dim}, got shape {jnp.shape(a)}")
    law, log_pi = _setup(gmm, delta, mode, temperature)
    t = temperature
    m = gmm.means @ a
    s = a.T @ gmm.cov @ a
    positive, quad = _positive_and_quadratic(m, s, law, gmm.weights, t)
    nodes, w = gauss_hermite(a.shape[1], level or default_level(a.shape[1]))
    chol = jnp.linalg.cholesky(s)
    lse = _lse_term(m, chol.T, jnp.asarray(nodes, a.dtype), jnp.asarray(w, a.dtype), log_pi, m, t)
    return lse + quad - positive


@with_matmul_precision
def span_basis(gmm: GMM, centered: bool | None = None) -> tuple[jax.Array, jax.Array]:
    """(L, U): the Cholesky factor of Σ and an orthonormal basis U (d, q) of the whitened
    means' span W = span{L⁻¹μ_j}. Its first m = K − 1 columns span the whitened centered
    means L⁻¹(μ_j − μ̄), so L^{-T}U[:, :m] spans S_F; for uncentered means (``centered``
    False) a last column carries the rest of L⁻¹μ̄ (q = m + 1), else q = m. ``centered``
    None decides from the mixture (concrete only: under jit it must be given). Assumes
    the K means are affinely independent (generic).
    """
    chol = jnp.linalg.cholesky(gmm.cov)
    wmeans = jax.scipy.linalg.solve_triangular(chol, gmm.means.T, lower=True)  # (d, K)
    mean = wmeans @ gmm.weights
    u = jnp.linalg.svd(wmeans - mean[:, None], full_matrices=False)[0][:, : gmm.num_components - 1]
    rest = mean - u @ (u.T @ mean)
    if centered is None:
        if isinstance(rest, jax.core.Tracer):
            raise ValueError("span_basis under jit/vmap needs centered=True or False")
        centered = bool(jnp.linalg.norm(rest) <= 1e-8 * max(float(jnp.linalg.norm(wmeans)), 1.0))
    if not centered:
        u = jnp.concatenate([u, (rest / jnp.linalg.norm(rest))[:, None]], axis=1)
    return chol, u


@with_matmul_precision
def span_projector(b, basis) -> jax.Array:
    """A = L^{-T} U b (d, r), the projector of span coordinates b (q, r)."""
    chol, u = basis
    return jax.scipy.linalg.solve_triangular(chol.T, u @ b, lower=False)


@with_matmul_precision
def exact_infonce_in_span(b, gmm: GMM, delta, mode: str = "prior", temperature=1.0, *, basis=None,
                          level: int | None = None) -> jax.Array:
    """L(A) for A = L^{-T} U b, b (q, r): every projector whose column space lies in
    Σ⁻¹ span{μ_j} (where every minimizer lies, by the module's argument).

    In these coordinates m_j = w_j b with w_j = (UᵀL⁻¹μ_j)ᵀ, S = bᵀb, and the log-sum-exp
    depends on z through y = z bᵀ ∈ R^q, y | k ~ N(w_k M, M²), M = bbᵀ: the noise factor M
    is smooth in b, so this is differentiable to any order everywhere, rank-deficient b
    (a dropped direction) included. Integration: :func:`gauss_hermite` in q dimensions.

    Args:
      b: (q, r) coordinates. gmm: the mixture. basis: (L, U) from :func:`span_basis`
        (computed when None; pass it under jit).

    Returns:
      the scalar L(A); :func:`span_projector` gives A.
    """
    law, log_pi = _setup(gmm, delta, mode, temperature)
    chol, u = span_basis(gmm) if basis is None else basis
    t = temperature
    if jnp.ndim(b) != 2 or b.shape[0] != u.shape[1]:
        raise ValueError(f"b must be (q, r) with q = {u.shape[1]} (the whitened means' span), got {jnp.shape(b)}")
    w = jax.scipy.linalg.solve_triangular(chol, gmm.means.T, lower=True).T @ u  # (K, q): whitened means in W
    m = w @ b  # (K, r)
    s = b.T @ b
    positive, quad = _positive_and_quadratic(m, s, law, gmm.weights, t)
    mm = b @ b.T  # (q, q)
    nodes, wq = gauss_hermite(u.shape[1], level or default_level(u.shape[1]))
    lse = _lse_term(w @ mm, mm, jnp.asarray(nodes, b.dtype), jnp.asarray(wq, b.dtype), log_pi, w, t)
    return lse + quad - positive


@with_matmul_precision
def perp_curvature(b, gmm: GMM, delta, mode: str = "prior", temperature=1.0, *, basis=None,
                   level: int | None = None) -> jax.Array:
    r"""C (r, r): the curvature of L at A = L^{-T}Ub across the whitened means' span.

    For B_⊥ = tV (V ⊥ W), :math:`L = L_W + \tfrac{t^2}2\langle C, V^\top V\rangle + O(t^4)`
    with :math:`C = \sum_k\pi_k b^\top E_k[\nabla^2 f]\, b + (\sum_k\pi_k m_k^\top m_k + 2 b^\top b)/\tau^2`,
    f(y) = LSE_j(y·w_j/τ + log π_j), y | k ~ N(w_kM, M²) (Price's theorem on the noise e
    ~ N(0, VᵀV) that B_⊥ adds to z, and on the P it adds to S). C is positive
    semi-definite: its smallest eigenvalue is the smallest Hessian eigenvalue of L across
    the span (in whitened coordinates B = LᵀA); tested against finite differences of
    :func:`exact_infonce`.
    """
    chol, u = span_basis(gmm) if basis is None else basis
    check_range("temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True)
    t = temperature
    log_pi = jnp.log(gmm.weights)
    w = jax.scipy.linalg.solve_triangular(chol, gmm.means.T, lower=True).T @ u  # (K, q)
    mm = b @ b.T
    nodes, wq = gauss_hermite(u.shape[1], level or default_level(u.shape[1]))
    y = (w @ mm)[:, None, :] + (jnp.asarray(nodes, b.dtype) @ mm)[None]  # (K, N, q)
    p = jax.nn.softmax(jnp.einsum("knq,jq->knj", y, w) / t + log_pi, axis=-1)  # (K, N, K)
    # ∇²f = Wᵀ(diag p − ppᵀ)W / τ², averaged with the quadrature and mixture weights
    pw = jnp.exp(log_pi)[:, None] * jnp.asarray(wq, b.dtype)[None, :]  # (K, N)
    mean_p = jnp.einsum("kn,knj->j", pw, p)
    outer = jnp.einsum("kn,kni,knj->ij", pw, p, p)
    hess_f = w.T @ (jnp.diag(mean_p) - outer) @ w / t**2  # (q, q)
    m = w @ b
    return b.T @ hess_f @ b + (m.T @ (jnp.exp(log_pi)[:, None] * m) + 2.0 * b.T @ b) / t**2


@with_matmul_precision
def jensen_gap(a, push, gmm: GMM, delta, mode: str = "prior", temperature=1.0, *, basis=None,
               level: int | None = None) -> tuple[jax.Array, jax.Array]:
    r"""The sign-flip / Jensen argument checked at one point: (gap, bound).

    ``a`` (d, r) is a projector whose columns lie in Σ⁻¹span{μ_j} (an optimum of
    :func:`certify`, say) and ``push`` (d, r) any matrix. The part of the push that leaves
    the span, B_⊥ = (I − UUᵀ)Lᵀ·push in whitened coordinates (A_⊥ = L^{-T}B_⊥), is added
    to ``a``. With P = B_⊥ᵀB_⊥, S = AᵀΣA and M₂ = Σ_k π_k m_kᵀm_k (m_k = μ_kA), the
    argument of the module docstring gives

    .. math:: \mathrm{gap} = L(A + A_\perp) - L(A)
              \;\ge\; \mathrm{bound} = \tfrac1{2\tau^2}\,\mathrm{tr}\big(P\,(M_2 + S)\big) \;\ge 0

    (Jensen in z of the convex log-sum-exp, plus the exact ½zPzᵀ/τ² term). A gap below the
    bound (beyond quadrature error) would refute the argument, so this is a check that
    can fail, unlike the sign of :func:`perp_curvature`. L(A + A_⊥) by :func:`exact_infonce`
    (r-dimensional quadrature; gap is NaN when A + A_⊥ is rank-deficient, σ_min ≤ 1e-8·σ_max
    in whitened coordinates), L(A) by :func:`exact_infonce_in_span`. Traceable.
    """
    chol, u = span_basis(gmm) if basis is None else basis
    b_perp = chol.T @ push
    b_perp = b_perp - u @ (u.T @ b_perp)  # whitened, orthogonal to W
    a_perp = jax.scipy.linalg.solve_triangular(chol.T, b_perp, lower=False)
    b = u.T @ (chol.T @ a)  # span coordinates of a
    inside = exact_infonce_in_span(b, gmm, delta, mode, temperature, basis=(chol, u), level=level)
    outside = exact_infonce(a + a_perp, gmm, delta, mode, temperature, level=level)
    sv = jnp.linalg.svd(chol.T @ (a + a_perp), compute_uv=False)
    outside = jnp.where(sv[-1] > 1e-8 * sv[0], outside, jnp.nan)  # rank-deficient: undefined, on every jaxlib
    m = gmm.means @ a
    second = m.T @ (gmm.weights[:, None] * m) + a.T @ gmm.cov @ a
    bound = 0.5 * jnp.trace(b_perp.T @ b_perp @ second) / temperature**2
    return outside - inside, bound


GRAD_TOL = 1e-8
"""``certified`` needs the relative gradient norm ‖∇f‖·‖b‖/max(|f|, 1) at most this."""
HESS_TOL = 1e-7
"""… and no Hessian eigenvalue (rotations removed) below −HESS_TOL·max(λ_max, 1)."""


def _flat(f, shape):
    return lambda x: f(x.reshape(shape))


@with_matmul_precision
def newton(f, b0, iterations: int = 100):
    """Minimizes f from b0 by saddle-free Newton steps: p = −V|Λ|⁻¹Vᵀg over the Hessian's
    eigenpairs (|λ| floored at 1e-12·max|λ|, so saddles are left and the rotation zero
    modes take no step), each with a backtracking line search (the first of 1, ½, …, 2⁻³⁰
    that decreases f). Stops after ``iterations`` steps, when the relative gradient is
    1000× below :data:`GRAD_TOL`, or when no step decreases f. Deterministic, float64 recommended; traceable (no
    batching of the eigendecomposition: map it with ``lax.map``, not vmap, on the CPU)."""
    shape = b0.shape
    fx = _flat(f, shape)
    alphas = 2.0 ** -jnp.arange(31, dtype=b0.dtype)

    def step(state):
        i, x, _ = state
        f0, g = jax.value_and_grad(fx)(x)
        lam, v = jnp.linalg.eigh(jax.hessian(fx)(x))
        floor = 1e-12 * jnp.max(jnp.abs(lam))
        p = -v @ ((v.T @ g) / jnp.maximum(jnp.abs(lam), floor))
        # backtracking: halve until f decreases (usually the full step at once)
        j = jax.lax.while_loop(lambda j: (j < alphas.shape[0]) & ~(fx(x + alphas[jnp.minimum(j, 30)] * p) < f0),
                               lambda j: j + 1, 0)
        moved = j < alphas.shape[0]
        small = jnp.linalg.norm(g) * jnp.linalg.norm(x) <= 1e-3 * GRAD_TOL * jnp.maximum(jnp.abs(f0), 1.0)
        return i + 1, jnp.where(moved, x + alphas[jnp.minimum(j, 30)] * p, x), small | ~moved

    def running(state):
        i, _, done = state
        return (i < iterations) & ~done

    _, x, _ = jax.lax.while_loop(running, step, (0, b0.reshape(-1), jnp.asarray(False)))
    return x.reshape(shape)


@with_matmul_precision
def certificate(f, b, perp=None) -> dict:
    """The second-order stationarity check of a point b of f (q, r), f invariant to b → bQ.

    Returns {"loss", "grad_norm" (relative, ‖∇f‖‖b‖/max(|f|,1)), "hessian_min_eig" (the
    smallest eigenvalue of the Hessian on the complement of the rotation orbit's tangent
    space {bΩ: Ω skew}, numerically rank-determined), "hessian_max_eig", "perp_min_eig"
    (the smallest eigenvalue of ``perp(b)``, the curvature across the span; 0 when None),
    "certified"}.

    "certified" means *second-order stationary*: grad_norm ≤ :data:`GRAD_TOL` and
    hessian_min_eig ≥ −:data:`HESS_TOL`·max(λ_max, 1). That is a local statement about
    the quadrature objective, not a proof that b is the global minimum (:func:`certify`
    adds agreement of several starts, still not a proof). "perp_min_eig" is reported but
    not part of the check: :func:`perp_curvature` is positive semi-definite by
    construction, so its sign cannot fail and shows only rounding.
    """
    q, r = b.shape
    fx = _flat(f, b.shape)
    x = b.reshape(-1)
    loss, g = fx(x), jax.grad(fx)(x)
    h = jax.hessian(fx)(x)
    pairs = [(i, j) for i in range(r) for j in range(i + 1, r)]
    if pairs:
        tang = jnp.stack([(b[:, [i]] * (jnp.arange(r) == j) - b[:, [j]] * (jnp.arange(r) == i)).reshape(-1)
                          for i, j in pairs], axis=1)  # (q·r, r(r−1)/2): b(E_ij − E_ji)
        u, s, _ = jnp.linalg.svd(tang, full_matrices=False)
        orbit = u * (s > 1e-8 * jnp.maximum(s[0], 1e-300))  # the orbit's tangent directions (rank-determined)
        proj = jnp.eye(q * r, dtype=b.dtype) - orbit @ orbit.T
        shift = 10.0 * (jnp.max(jnp.abs(jnp.linalg.eigvalsh(h))) + 1.0)  # moves the orbit's zeros above the rest
        lam = jnp.linalg.eigvalsh(proj @ h @ proj + shift * orbit @ orbit.T)
        lam_max = jnp.max(jnp.where(lam < 0.5 * shift, lam, -jnp.inf))
    else:
        lam = jnp.linalg.eigvalsh(h)
        lam_max = lam[-1]
    perp_min = jnp.linalg.eigvalsh(perp(b))[0] if perp is not None else jnp.zeros((), b.dtype)
    grad_norm = jnp.linalg.norm(g) * jnp.linalg.norm(x) / jnp.maximum(jnp.abs(loss), 1.0)
    scale = jnp.maximum(lam_max, 1.0)
    certified = (grad_norm <= GRAD_TOL) & (lam[0] >= -HESS_TOL * scale)
    return {"loss": loss, "grad_norm": grad_norm, "hessian_min_eig": lam[0], "hessian_max_eig": lam_max,
            "perp_min_eig": perp_min, "certified": certified}


@with_matmul_precision
def certify(key, gmm: GMM, delta, r: int, mode: str = "prior", temperature=1.0, *, centered: bool = True,
            starts: int = 4, iterations: int = 100, level: int | None = None, init_scale: float = 0.5) -> dict:
    """Minimization of the exact InfoNCE objective over rank-r projectors, with a
    second-order stationarity check (:func:`certificate`) and agreement of the starts.

    By the module's argument every minimizer lies in Σ⁻¹span{μ_j}; the search runs there
    (:func:`exact_infonce_in_span`, coordinates b (q, r)) with :func:`newton` from
    ``starts`` random points (entries N(0, init_scale²)) and, for uncentered means, from
    the best point whose columns lie in S_F (the last coordinate, along Σ⁻¹μ̄, held at 0
    while it is found; freed with a small random push, since for r > m it is rank-deficient,
    which can be a stationary saddle of the full objective). The lowest end point is
    checked (:func:`certificate`: second-order stationary; "perp_min_eig" from
    :func:`perp_curvature`, reported only). "certified" names that check, as results.csv
    has always called it: it is not a certificate of the global minimum.

    Returns the certificate plus "projector" A (d, r), "b", "start_losses" (starts,),
    "starts_agree" (every start within 1e-9·max(|L|, 1) of the best), "sv" (b's singular
    values, descending: a zero one is a dropped direction) and "quad_error" (the change
    of L between this and a coarser quadrature level, an error estimate).
    ``centered`` must describe the mixture: True searches S_F only (q = m), which for
    uncentered means would miss the mean direction. Traceable in the mixture and δ
    (static: r, mode, centered, starts, iterations, level).
    """
    r = check_int("r", r, low=1)
    basis = span_basis(gmm, centered)
    q = gmm.num_components - (1 if centered else 0)
    level = level or default_level(q)
    coarse = max(level * 3 // 4, 2)

    def f(b, lvl=level):
        return exact_infonce_in_span(b, gmm, delta, mode, temperature, basis=basis, level=lvl)

    keys = jax.random.split(key, starts)
    inits = jax.vmap(lambda k: init_scale * jax.random.normal(k, (q, r), gmm.means.dtype))(keys)
    ends = jax.lax.map(lambda b0: newton(f, b0, iterations), inits)
    if not centered:  # the best point with columns in S_F, then freed
        def f_sf(c):
            return f(jnp.concatenate([c, jnp.zeros((1, r), c.dtype)], axis=0))
        sf = jax.lax.map(lambda b0: newton(f_sf, b0[:-1], iterations), inits)
        sf_best = sf[jnp.argmin(jax.lax.map(f_sf, sf))]
        freed = jnp.concatenate([sf_best, jnp.zeros((1, r), sf_best.dtype)], axis=0)
        # L is even in each column of b (flipping a column flips that coordinate of every
        # embedding) and invariant under b -> bQ, so a rank-deficient b (a zero column after
        # a rotation) is stationary along the missing direction whatever its curvature. For
        # r > m the S_F optimum is rank-deficient: once freed it can be a saddle that Newton
        # cannot leave; a push of 1e-3·init_scale lets it descend along negative curvature.
        push = 1e-3 * init_scale * jax.random.normal(jax.random.fold_in(key, 1), freed.shape, freed.dtype)
        freed = newton(f, freed + push, iterations)
        ends = jnp.concatenate([ends, freed[None]], axis=0)
    losses = jax.lax.map(f, ends)
    best = ends[jnp.argmin(losses)]
    cert = certificate(f, best, lambda b: perp_curvature(b, gmm, delta, mode, temperature, basis=basis,
                                                         level=level))
    agree = jnp.max(losses) - jnp.min(losses) <= 1e-9 * jnp.maximum(jnp.abs(jnp.min(losses)), 1.0)
    return {**cert, "projector": span_projector(best, basis), "b": best, "start_losses": losses,
            "starts_agree": agree, "sv": jnp.linalg.svd(best, compute_uv=False),
            "quad_error": jnp.abs(f(best) - f(best, coarse))}
