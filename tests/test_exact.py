"""The exact population InfoNCE objective, its certificates, and the sign-flip / Jensen
argument checked step by step (issue 14).

The long jitted programs here take their mixture and arrays as arguments, never as
closed-over constants: those values are computed eagerly, and their last bits depend on
whether this process first compiled the eager operations with optimizations on (an
``optimized`` test) or off; as constants they would change the program, so the
compilation cache would miss it in one test order and hit it in another.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from gmmssl import exact, metrics
from gmmssl.augment import sample_pairs
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import random_gmm
from gmmssl.losses import infonce


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _gmm(k=3, centered=True, d=6, seed=1, separation=1.5):
    return random_gmm(jax.random.PRNGKey(seed), d, k, separation=separation, condition_number=10.0,
                      centered=centered, dtype=jnp.float64)


def test_pair_law_is_the_samplers():
    g = _gmm(k=3)
    for mode in ("prior", "other"):
        law = np.asarray(exact.pair_law(g, 0.3, mode))
        assert law.sum() == pytest.approx(1.0) and np.allclose(law.sum(1), g.weights)
        _, _, c, cp = sample_pairs(jax.random.PRNGKey(0), g, 200_000, 0.3, mode)
        freq = np.histogram2d(np.asarray(c), np.asarray(cp), bins=[np.arange(4) - 0.5] * 2)[0] / 200_000
        np.testing.assert_allclose(freq, law, atol=4e-3)


@pytest.mark.parametrize("dim, level", [(1, 6), (2, 6), (3, 5), (5, 4), (7, 3)])
def test_gauss_hermite_integrates_gaussian_moments(dim, level):
    nodes, w = exact.gauss_hermite(dim, level)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    # E ξ_i² = 1, E ξ_i⁴ = 3, E ξ_i²ξ_j² = 1, odd moments 0
    np.testing.assert_allclose(w @ nodes**2, np.ones(dim), atol=1e-12)
    np.testing.assert_allclose(w @ nodes**4, 3 * np.ones(dim), atol=1e-10)
    np.testing.assert_allclose(w @ nodes**3, np.zeros(dim), atol=1e-12)
    if dim > 1:
        assert w @ (nodes[:, 0] ** 2 * nodes[:, 1] ** 2) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.optimized
@pytest.mark.parametrize("centered", [True, False])
def test_the_two_forms_agree_and_equal_a_long_monte_carlo_estimate(centered):
    g = _gmm(k=3, centered=centered)
    basis = exact.span_basis(g)
    q = basis[1].shape[1]
    assert q == (2 if centered else 3)
    b = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (q, 2))
    a = exact.span_projector(b, basis)
    # two quadratures of one integral (over z, 2-D, and over the span, q-D), converged
    v_span = float(exact.exact_infonce_in_span(b, g, 0.6, basis=basis, level=32))
    v_z = float(exact.exact_infonce(a, g, 0.6, level=32))
    assert v_span == pytest.approx(v_z, abs=1e-9)
    assert float(exact.exact_infonce(a, g, 0.6)) == pytest.approx(v_z, abs=1e-6)  # the default level
    # Monte Carlo from the sampler: anchors and positives drawn, negatives' MGF in closed form
    m, s = g.means @ a, a.T @ g.cov @ a

    def estimate(key, g, a, m, s):  # one replicate of 500,000 pairs
        x, xp, _, _ = sample_pairs(key, g, 500_000, 0.6)
        z, zp = x @ a, xp @ a
        lse = logsumexp(z @ m.T + jnp.log(g.weights), axis=1)
        return jnp.mean(lse + 0.5 * jnp.einsum("br,rs,bs->b", z, s, z) - jnp.sum(z * zp, 1))

    # arrays as arguments, not closed-over constants (see the note at the top of this file)
    run = jax.jit(lambda keys, *args: jax.lax.map(lambda k: estimate(k, *args), keys))
    est = np.asarray(run(jax.random.split(jax.random.PRNGKey(10), 6), g, a, m, s))
    se = np.std(est) / np.sqrt(len(est)) + 1e-4
    assert abs(np.mean(est) - v_z) <= 4 * se, (np.mean(est), v_z, se)


def test_gradients_match_finite_differences():
    g = _gmm(k=3, centered=False)
    basis = exact.span_basis(g)
    b = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (3, 2))
    a = exact.span_projector(b, basis) + 0.05 * jax.random.normal(jax.random.PRNGKey(4), (6, 2))
    for f, x in ((lambda v: exact.exact_infonce(v, g, 0.4, "other"), a),
                 (lambda v: exact.exact_infonce_in_span(v, g, 0.4, "other", basis=basis), b)):
        grad = np.asarray(jax.jit(jax.grad(f))(x))
        f = jax.jit(f)  # one compilation for the 2·x.size evaluations
        eps = 1e-6
        for idx in np.ndindex(x.shape):
            e = jnp.zeros_like(x).at[idx].set(eps)
            fd = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
            assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def _perp_direction(g, basis, r, seed):
    """V (d, r) whose whitened columns L^T V are orthogonal to the whitened means' span W."""
    chol, u = basis
    v = jax.random.normal(jax.random.PRNGKey(seed), (g.dim, r))
    v = v - u @ (u.T @ v)
    v = v / jnp.linalg.norm(v)
    return jax.scipy.linalg.solve_triangular(chol.T, v, lower=False)  # A-space: L^{-T} V


@pytest.mark.parametrize("k, centered, mode, delta", [(4, True, "prior", 0.3), (3, False, "other", 0.6)])
def test_the_sign_flip_and_jensen_steps_hold_numerically(k, centered, mode, delta):
    """L along A_W + t·A_⊥: even in t, zero slope at 0, rising in |t|, and its curvature at
    0 is ⟨C, VᵀV⟩ with C from perp_curvature (in whitened coordinates)."""
    g = _gmm(k=k, centered=centered)
    basis = exact.span_basis(g)
    q = basis[1].shape[1]  # 3: every quadrature below converged to ~1e-10
    b = 0.3 * jax.random.normal(jax.random.PRNGKey(5), (q, 2))
    a_w = exact.span_projector(b, basis)
    a_perp = _perp_direction(g, basis, 2, seed=6)

    def f(t):
        return exact.exact_infonce(a_w + t * a_perp, g, delta, mode, level=48)  # converged quadrature (2-D)

    ts = np.linspace(-1.0, 1.0, 9)
    values = np.asarray(jax.jit(lambda t: jax.lax.map(f, t))(jnp.asarray(ts)))  # lax.map: no batched LAPACK
    np.testing.assert_allclose(values, values[::-1], rtol=0, atol=1e-10)  # even
    assert abs(float(jax.jit(jax.grad(f))(0.0))) < 1e-10  # zero slope at 0
    half = values[4:]
    assert np.all(np.diff(half) > 0)  # rises with |t|
    curvature = float(jax.jit(jax.grad(jax.grad(f)))(0.0))
    v_white = basis[0].T @ a_perp  # whitened: B_⊥ = LᵀA_⊥
    c = exact.perp_curvature(b, g, delta, mode, basis=basis, level=32)
    assert curvature == pytest.approx(float(jnp.sum(c * (v_white.T @ v_white))), rel=1e-6)
    assert float(jnp.linalg.eigvalsh(c)[0]) > 0


def test_jensen_holds_for_the_sampled_in_batch_objective_too():
    """With common random numbers, adding a part outside the span raises the in-batch
    InfoNCE (B = 64) on average: the argument does not need infinitely many negatives."""
    g = _gmm(k=3)
    basis = exact.span_basis(g)
    a_w = exact.span_projector(0.4 * jax.random.normal(jax.random.PRNGKey(7), (2, 2)), basis)
    a_perp = 0.5 * _perp_direction(g, basis, 2, seed=8)

    @jax.jit
    def diff(key):
        x, xp, _, _ = sample_pairs(key, g, 64, 0.5)
        return infonce(x @ (a_w + a_perp), xp @ (a_w + a_perp)) - infonce(x @ a_w, xp @ a_w)

    d = np.asarray(jax.vmap(diff)(jax.random.split(jax.random.PRNGKey(9), 2000)))
    assert d.mean() > 5 * d.std() / np.sqrt(d.size), (d.mean(), d.std())


@pytest.mark.optimized  # its programs run for seconds: faster compiled with optimizations on
def test_certify_finds_and_certifies_the_optimum_and_the_certificate_can_fail():
    g = _gmm(k=3, d=6)
    # the mixture is an argument, not a closed-over constant (see the note at the top of this file)
    out = jax.jit(lambda key, g, delta: exact.certify(key, g, delta, 2, centered=True, starts=3, iterations=60))(
        jax.random.PRNGKey(0), g, 0.5)
    assert bool(out["certified"]) and bool(out["starts_agree"])
    assert float(out["grad_norm"]) <= exact.GRAD_TOL and float(out["hessian_min_eig"]) > 0
    assert 1.0 - float(metrics.fisher_capture(out["projector"], fisher_subspace(g))) < 1e-8
    assert float(out["quad_error"]) < 1e-10

    @jax.jit  # one program (eagerly, the Hessians' operations compiled one by one: 300 programs)
    def certificates(b, g):
        basis = exact.span_basis(g, centered=True)  # as the run above (a centered mixture)

        def f(b):
            return exact.exact_infonce_in_span(b, g, 0.5, basis=basis)

        zero = exact.certificate(f, jnp.zeros_like(b), lambda b: exact.perp_curvature(b, g, 0.5, basis=basis))
        return zero, exact.certificate(f, b * 1.1)

    zero, off = certificates(out["b"], g)
    # b = 0 is stationary but a saddle (the positive term pulls along S_F): not certified
    assert float(zero["grad_norm"]) == 0.0 and float(zero["hessian_min_eig"]) < 0 and not bool(zero["certified"])
    # a point off the optimum: gradient too large
    assert float(off["grad_norm"]) > exact.GRAD_TOL and not bool(off["certified"])


@pytest.mark.optimized  # its programs run for seconds: faster compiled with optimizations on
def test_uncentered_extra_rank_starts_agree():
    """Uncentered means, r = m + 1: on this mixture the start freed from S_F used to stop at
    a saddle (a zero column is stationary: L is even in each column of b) 1.3e-5 above the
    minimum every random start reaches; now every start ends at the certified minimum."""
    delta = 0.7
    g = random_gmm(jax.random.PRNGKey(1), 6, 3, separation=1.5, condition_number=10.0, centered=False,
                   dtype=jnp.float64)
    out = jax.jit(lambda key, g: exact.certify(key, g, delta, 3, centered=False, starts=3, iterations=60))(
        jax.random.PRNGKey(0), g)
    assert bool(out["certified"]) and bool(out["starts_agree"]), np.asarray(out["start_losses"])
    b = jnp.array([[0.3, 0.1, 0.0], [-0.2, 0.4, 0.0], [0.1, 0.2, 0.0]])  # a zero column: stationary in it
    grad = jax.grad(lambda v: exact.exact_infonce_in_span(v, g, delta, basis=exact.span_basis(g, False)))(b)
    assert float(jnp.abs(grad[:, 2]).max()) < 1e-12


def test_exact_objective_refuses_bad_input():
    g = _gmm(k=3)
    with pytest.raises(ValueError, match="a must be"):
        exact.exact_infonce(jnp.ones((5, 2)), g, 0.5)
    with pytest.raises(ValueError, match="delta"):
        exact.exact_infonce(jnp.ones((6, 2)), g, 1.5)
    with pytest.raises(ValueError, match="b must be"):
        exact.exact_infonce_in_span(jnp.ones((4, 2)), g, 0.5)
    with pytest.raises(ValueError, match="centered"):
        jax.jit(lambda gg: exact.span_basis(gg)[1])(g)


@pytest.mark.slow
@pytest.mark.optimized  # its programs run for seconds: faster compiled with optimizations on
def test_adam_on_the_sampled_objective_reaches_the_certified_optimum_uncentered_tilt_included():
    """An independent route to the uncentered finding: infonce_population trained with Adam
    (sampled anchors and positives) lands on the certified optimum, which is tilted off S_F."""
    from gmmssl.fisher import fisher_subspace
    from gmmssl.train import TrainConfig, make_hparams, train

    g = random_gmm(jax.random.PRNGKey(3), 6, 2, separation=1.5, condition_number=5.0, centered=False,
                   dtype=jnp.float64)
    cert = jax.jit(lambda k, g: exact.certify(k, g, 0.6, 1, centered=False, starts=2, iterations=40))(
        jax.random.PRNGKey(0), g)
    cfg = TrainConfig(r=1, batch_size=1024, steps=1600, log_every=400, loss="infonce_population")
    a = jax.jit(lambda k, g: train(k, g, make_hparams(delta=0.6, learning_rate=0.03), cfg).params["A"])(
        jax.random.PRNGKey(1), g)
    f = fisher_subspace(g)
    deficit = 1.0 - float(metrics.fisher_capture(cert["projector"], f))
    assert bool(cert["certified"]) and deficit > 0.05  # the tilt toward Σ⁻¹μ̄
    assert float(jnp.degrees(metrics.principal_angles(a, cert["projector"])[-1])) < 1.0
    assert 1.0 - float(metrics.fisher_capture(a, f)) == pytest.approx(deficit, abs=5e-3)


def test_exact_objective_refuses_a_heteroscedastic_mixture():
    from gmmssl.gmm import hetero_gmm

    with pytest.raises(ValueError, match="shared covariance"):
        exact.exact_infonce(jnp.ones((4, 1)), hetero_gmm(jax.random.PRNGKey(0), 4, 2), 0.5)
