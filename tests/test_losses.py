import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gmmssl.losses import clip, infonce, infonce_population, normalize, simsiam, spectral_contrastive


def _pair(b=16, r=4, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(k1, (b, r)), jax.random.normal(k2, (b, r))


@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
def test_infonce_equals_softmax_cross_entropy(temperature):
    z, zp = _pair()
    logits = z @ zp.T / temperature
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(16)).mean()
    np.testing.assert_allclose(infonce(z, zp, temperature=temperature), ref, rtol=1e-5)


def test_infonce_symmetric_and_cosine():
    z, zp = _pair()
    logits = z @ zp.T
    labels = jnp.arange(16)
    both = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                  + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
    np.testing.assert_allclose(infonce(z, zp, symmetric=True), both, rtol=1e-5)
    zn = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    zpn = zp / jnp.linalg.norm(zp, axis=1, keepdims=True)
    ref = optax.softmax_cross_entropy_with_integer_labels(zn @ zpn.T / 0.5, labels).mean()
    np.testing.assert_allclose(infonce(z, zp, temperature=0.5, similarity="cosine"), ref, rtol=1e-5)
    # cosine similarity is invariant to rescaling rows
    np.testing.assert_allclose(infonce(3 * z, 0.2 * zp, similarity="cosine"), infonce(z, zp, similarity="cosine"), rtol=1e-5)


def test_zero_embeddings_are_nan_safe_with_cosine():
    z = jnp.zeros((4, 3))
    val, grad = jax.value_and_grad(lambda a: infonce(a, a, similarity="cosine"))(z)
    assert np.isfinite(val) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(val, np.log(4.0), rtol=1e-6)
    assert np.all(np.isfinite(normalize(z)))


def test_infonce_is_stable_at_low_temperature_and_large_norm():
    z, zp = _pair()
    for args in [dict(temperature=1e-3), dict(temperature=1.0)]:
        val, grad = jax.value_and_grad(lambda a: infonce(1e3 * a, zp, **args))(z)
        assert np.isfinite(val) and np.all(np.isfinite(grad))


def test_infonce_jit_vmap_grad():
    z, zp = _pair()
    zs, zps = jnp.stack([z, 2 * z]), jnp.stack([zp, zp])
    taus = jnp.array([0.5, 1.0])
    vals = jax.jit(jax.vmap(lambda a, b, t: infonce(a, b, temperature=t)))(zs, zps, taus)
    np.testing.assert_allclose(vals[0], infonce(z, zp, temperature=0.5), rtol=1e-5)
    g = jax.grad(infonce)(z, zp)
    assert g.shape == z.shape


def test_infonce_checks_shapes_and_arguments():
    z, zp = _pair()
    with pytest.raises(AssertionError, match="must be"):
        infonce(z[:, 0], zp[:, 0])
    with pytest.raises(AssertionError, match="same"):
        infonce(z, zp[:8])
    with pytest.raises(ValueError, match="similarity must be one of"):
        infonce(z, zp, similarity="l2")
    with pytest.raises(ValueError, match="temperature"):
        infonce(z, zp, temperature=0.0)


# ---------------------------------------------------------------- issue 3: every loss

enable_x64 = jax.enable_x64

from gmmssl.losses import clip, infonce_population, simsiam, spectral_contrastive  # noqa: E402


def _pop_args(r=3, k=4, seed=0):
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    means = jax.random.normal(k1, (k, r))
    m = jax.random.normal(k2, (r, r))
    return means, m @ m.T / r + 0.5 * jnp.eye(r), jnp.log(jnp.full((k,), 1.0 / k))


def _np_simsiam(z, zp, P, xi, distance):
    z, zp = np.asarray(z, np.float64), np.asarray(zp, np.float64)
    p, pp = z @ P, zp @ P

    def d(a, b):
        if distance == "l2":
            return ((a - b) ** 2).sum(1)
        return -(a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    zc = z - z.mean(0)
    cov = zc.T @ zc / len(z)
    return 0.5 * d(p, zp).mean() + 0.5 * d(pp, z).mean() + xi * ((cov - np.eye(z.shape[1])) ** 2).sum()


def _np_spectral(z, zp):
    z, zp = np.asarray(z, np.float64), np.asarray(zp, np.float64)
    b = len(z)
    g = z @ zp.T
    off = [(g[i, j]) ** 2 for i in range(b) for j in range(b) if i != j]
    return -2 * np.mean(np.diag(g)) + np.mean(off)


def test_clip_is_the_mean_of_both_directions():
    za, zb = _pair(b=12, r=3, seed=1)
    one = infonce(za, zb, temperature=0.7)
    other = infonce(zb, za, temperature=0.7)
    np.testing.assert_allclose(clip(za, zb, temperature=0.7), 0.5 * (one + other), rtol=1e-5)
    np.testing.assert_allclose(clip(za, zb, similarity="cosine"), clip(zb, za, similarity="cosine"), rtol=1e-5)


def test_symmetric_cosine_infonce_is_ntxent_without_same_view_negatives():
    z, zp = _pair(b=8, r=5, seed=2)
    tau = 0.3
    emb = jnp.concatenate([z, zp])
    labels = jnp.concatenate([jnp.arange(8), jnp.arange(8)])
    ntx = optax.losses.ntxent(emb, labels, temperature=tau)
    ours = infonce(z, zp, temperature=tau, similarity="cosine", symmetric=True)
    assert float(ours) <= float(ntx) + 1e-6
    # NT-Xent = our loss with the same-view rows added to each logsumexp (documented convention)
    n = normalize(emb)
    s = n @ n.T / tau
    b = 8
    cross = s[:b, b:]
    same_a = jnp.where(jnp.eye(b, dtype=bool), -jnp.inf, s[:b, :b])
    same_b = jnp.where(jnp.eye(b, dtype=bool), -jnp.inf, s[b:, b:])
    pos = jnp.diagonal(cross)
    from jax.nn import logsumexp
    rows = logsumexp(jnp.concatenate([cross, same_a], 1), 1) - pos
    cols = logsumexp(jnp.concatenate([cross.T, same_b], 1), 1) - pos
    np.testing.assert_allclose(ntx, jnp.concatenate([rows, cols]).mean(), rtol=1e-4)
    # and without the same-view terms it is exactly ours
    np.testing.assert_allclose(ours, 0.5 * ((logsumexp(cross, 1) - pos).mean() + (logsumexp(cross.T, 1) - pos).mean()),
                               rtol=1e-5)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("with_predictor", [False, True])
def test_simsiam_matches_numpy(distance, with_predictor):
    z, zp = _pair(b=10, r=3, seed=3)
    P = np.eye(3) + 0.3 * np.asarray(jax.random.normal(jax.random.PRNGKey(7), (3, 3)))
    ours = simsiam(z, zp, predictor=jnp.asarray(P, jnp.float32) if with_predictor else None, xi=0.7, distance=distance)
    ref = _np_simsiam(z, zp, P if with_predictor else np.eye(3), 0.7, distance)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_spectral_contrastive_matches_numpy():
    z, zp = _pair(b=9, r=4, seed=4)
    np.testing.assert_allclose(spectral_contrastive(z, zp), _np_spectral(z, zp), rtol=1e-4)


def test_simsiam_stop_gradient_really_stops():
    z, zp = _pair(b=6, r=3, seed=5)
    # gradient wrt the target of the first term only: the target z⁺ enters as sg(z⁺) there
    g_target = jax.grad(lambda t: simsiam(z, t, xi=0.0) - 0.5 * jnp.mean(jnp.sum((t - jax.lax.stop_gradient(z)) ** 2, 1)))(zp)
    np.testing.assert_allclose(g_target, 0.0, atol=1e-7)
    # with stop-gradient the gradient is half of the plain objective's (alignment part)
    g_sg = jax.grad(lambda a: simsiam(a, zp, xi=0.0))(z)
    g_full = jax.grad(lambda a: simsiam(a, zp, xi=0.0, stop_gradient=False))(z)
    np.testing.assert_allclose(g_sg, 0.5 * g_full, rtol=1e-5, atol=1e-7)


def test_infonce_population_equals_a_direct_mgf_sum():
    z, zp = _pair(b=5, r=3, seed=6)
    means, cov, logw = _pop_args()
    t = 0.8
    z64, zp64 = np.asarray(z, np.float64), np.asarray(zp, np.float64)
    mgf = np.array([
        np.sum(np.exp(np.asarray(logw)) * np.exp(np.asarray(means) @ zi / t + 0.5 * zi @ np.asarray(cov) @ zi / t**2))
        for zi in z64])
    ref = np.mean(np.log(mgf) - (z64 * zp64).sum(1) / t)
    np.testing.assert_allclose(infonce_population(z, zp, means, cov, logw, temperature=t), ref, rtol=1e-4)


@pytest.mark.slow
def test_sampled_infonce_minus_log_b_tends_to_the_population_value():
    """(sampled − log B) → population value, the gap shrinking as B grows.

    For row i, logsumexp_j ℓ_ij − log B = log of the sample mean of e^{ℓ_ij} over B
    negatives, whose error is ≈ σ_i/√B in relative terms (σ_i the spread of e^{ℓ_ij}/E).
    The tolerance is 4 × that standard error, measured from the same batch, plus its square
    (the O(1/B) Jensen bias).
    """
    from gmmssl.augment import sample_pairs
    from gmmssl.gmm import random_gmm
    g = random_gmm(jax.random.PRNGKey(0), 6, 3, separation=1.0, condition_number=5.0)
    a = 0.25 * jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    la = g.chol.T @ a

    @jax.jit
    def gap_and_se(key, b_arr):
        x, xp, _, _ = sample_pairs(key, g, b_arr.shape[0], 0.7)
        z, zp = x @ a, xp @ a
        sampled = infonce(z, zp) - jnp.log(b_arr.shape[0])
        pop = infonce_population(z, zp, g.means @ a, la.T @ la, jnp.log(g.weights))
        e = jnp.exp(z @ zp.T)
        return sampled - pop, jnp.mean(e.std(1) / e.mean(1)) / jnp.sqrt(b_arr.shape[0])

    rms, tols = [], []
    for b in (64, 256, 1024, 4096, 8192):
        out = [gap_and_se(jax.random.PRNGKey(10 * b + rep), jnp.zeros(b)) for rep in range(4)]
        gaps = np.array([float(o[0]) for o in out])
        se = float(np.mean([float(o[1]) for o in out]))
        rms.append(float(np.sqrt(np.mean(gaps**2))))
        tols.append(4 * se + se**2)
    assert all(g_ <= t for g_, t in zip(rms, tols)), (rms, tols)
    assert rms[-1] < rms[0] / 4, rms


LOSSES = {
    "infonce": lambda z, zp: infonce(z, zp, temperature=0.7),
    "infonce_cos_sym": lambda z, zp: infonce(z, zp, temperature=0.5, similarity="cosine", symmetric=True),
    "clip": lambda z, zp: clip(z, zp, temperature=0.7),
    "simsiam": lambda z, zp: simsiam(z, zp, xi=0.5),
    "simsiam_pred_cos": lambda z, zp: simsiam(z, zp, predictor=jnp.eye(z.shape[1]) * 1.1, distance="cosine", xi=0.1),
    "spectral": spectral_contrastive,
    "population": lambda z, zp: infonce_population(z, zp, *[jnp.asarray(v, z.dtype) for v in _pop_args(r=z.shape[1])],
                                                   temperature=0.9),
}


def _check_fd(loss, z, zp, eps=1e-6):
    f = jax.jit(loss)  # jitted: eagerly, each operation of the loss and its gradient compiles on its own
    for arg in (0, 1):
        grad = np.asarray(jax.jit(jax.grad(loss, argnums=arg))(z, zp))
        fd = np.zeros_like(grad)
        for idx in np.ndindex(*grad.shape):
            plus, minus = [z, zp], [z, zp]
            plus[arg] = plus[arg].at[idx].add(eps)
            minus[arg] = minus[arg].at[idx].add(-eps)
            fd[idx] = (float(f(*plus)) - float(f(*minus))) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# SimSiam's stop-gradient makes its gradient differ from the derivative of its value by
# design; its plain objective is checked below and the stop-gradient itself above.
@pytest.mark.parametrize("name", sorted(n for n in LOSSES if not n.startswith("simsiam")))
def test_gradient_matches_central_finite_differences_in_float64(name):
    with enable_x64(True):
        z, zp = _pair(b=5, r=3, seed=8)
        _check_fd(LOSSES[name], z.astype(jnp.float64), zp.astype(jnp.float64))


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_simsiam_plain_objective_gradient_matches_finite_differences(distance):
    with enable_x64(True):
        z, zp = _pair(b=5, r=3, seed=9)
        P = jnp.eye(3, dtype=jnp.float64) * 0.9
        _check_fd(lambda a, b: simsiam(a, b, predictor=P, xi=0.3, distance=distance, stop_gradient=False),
                  z.astype(jnp.float64), zp.astype(jnp.float64))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("b", [1, 2])
def test_every_loss_is_finite_at_tiny_batches_and_extreme_scales(name, b):
    loss = LOSSES[name]
    z, zp = _pair(b=b, r=3, seed=10)
    if b == 1 and name != "population":  # in-batch losses need two rows (one pair has no negative)
        with pytest.raises(ValueError, match="needs B ≥ 2"):
            loss(z, zp)
        return
    value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # one program for the three scales
    for scale in (1.0, 1e3, 0.0):
        val, grads = value_and_grads(scale * z, scale * zp)
        if name in ("population", "spectral") and scale == 1e3:
            continue  # unbounded by design at norm 1e3 (quadratic/exponential in z); see the temperature test
        assert np.isfinite(val), (name, b, scale)
        assert all(np.all(np.isfinite(g)) for g in grads), (name, b, scale)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_low_temperature_is_finite(similarity):
    z, zp = _pair(b=8, r=3, seed=11)
    for f in (lambda a, c: infonce(a, c, temperature=1e-3, similarity=similarity),
              lambda a, c: clip(a, c, temperature=1e-3, similarity=similarity)):
        val, g = jax.jit(jax.value_and_grad(f))(z, zp)
        assert np.isfinite(val) and np.all(np.isfinite(g))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_under_jit_vmap_grad(name):
    loss = LOSSES[name]
    z, zp = _pair(b=6, r=3, seed=12)
    zs, zps = jnp.stack([z, 0.5 * z, 2 * z]), jnp.stack([zp, zp, zp])
    vals = jax.jit(jax.vmap(loss))(zs, zps)
    np.testing.assert_allclose(vals[1], loss(0.5 * z, zp), rtol=1e-5)
    grads = jax.jit(jax.vmap(jax.grad(loss)))(zs, zps)
    assert grads.shape == zs.shape


@pytest.mark.parametrize("fn", [clip, simsiam, spectral_contrastive])
def test_shape_checks_name_the_problem(fn):
    z, zp = _pair(b=6, r=3)
    with pytest.raises(AssertionError, match="must be"):
        fn(z[0], zp[0])
    with pytest.raises(AssertionError, match="same"):
        fn(z, zp[:4])


def test_population_and_simsiam_argument_checks():
    z, zp = _pair(b=6, r=3)
    means, cov, logw = _pop_args()
    with pytest.raises(AssertionError, match="neg_cov must be"):
        infonce_population(z, zp, means, cov[:2, :2], logw)
    with pytest.raises(AssertionError, match="neg_log_weights must be"):
        infonce_population(z, zp, means, cov, logw[:2])
    with pytest.raises(ValueError, match="distance must be one of"):
        simsiam(z, zp, distance="l1")
    with pytest.raises(ValueError, match="xi must be"):
        simsiam(z, zp, xi=-1.0)
    with pytest.raises(AssertionError, match="predictor must be"):
        simsiam(z, zp, predictor=jnp.eye(2))


@pytest.mark.parametrize("r", [1, 2, 4, 5])
@pytest.mark.parametrize("symmetric", [False, True])
def test_low_rank_kernel_equals_the_matmul_path_in_value_and_gradient(r, symmetric):
    """For r <= SMALL_RANK infonce uses the fused low-rank kernel; it must agree with the
    plain logits + cross-entropy path (r = 5 checks the dispatch boundary)."""
    import optax

    k1, k2 = jax.random.split(jax.random.PRNGKey(r))
    z, zp = jax.random.normal(k1, (33, r)) * 2.0, jax.random.normal(k2, (33, r)) * 2.0

    def xent(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(logits.shape[0])).mean()

    def reference(z, zp):
        logits = z @ zp.T / 0.3
        return 0.5 * (xent(logits) + xent(logits.T)) if symmetric else xent(logits)

    def ours(z, zp):
        return infonce(z, zp, temperature=0.3, symmetric=symmetric)

    # one jitted program (eagerly, every operation of both gradients compiles on its own)
    both = jax.jit(lambda z, zp: [(f(z, zp), jax.grad(f, argnums=(0, 1))(z, zp)) for f in (ours, reference)])
    (v_ours, grads_ours), (v_ref, grads_ref) = both(z, zp)
    np.testing.assert_allclose(v_ours, v_ref, rtol=1e-5)
    for g_ours, g_ref in zip(grads_ours, grads_ref):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-6)


# ------------------------------------------- issue 12: losses like optax's (per-example, masks, jvp)

def _every_loss():
    """(name, loss(z, z_pos, **kw)) for every public loss, r = 2 and r = 6 alike."""
    k = jax.random.PRNGKey(7)
    means, cov = jax.random.normal(k, (3, 6)), jnp.eye(6) * 0.5

    def population(z, zp, **kw):
        r = z.shape[1]
        return infonce_population(z, zp, means[:, :r], cov[:r, :r], jnp.log(jnp.ones(3) / 3), temperature=0.7, **kw)

    return {
        "infonce": lambda z, zp, **kw: infonce(z, zp, temperature=0.5, **kw),
        "infonce_sym_cos": lambda z, zp, **kw: infonce(z, zp, similarity="cosine", symmetric=True, **kw),
        "clip": lambda z, zp, **kw: clip(z, zp, temperature=0.8, **kw),
        "population": population,
        "simsiam": lambda z, zp, **kw: simsiam(z, zp, xi=0.3, stop_gradient=False, **kw),
        "spectral": spectral_contrastive,
    }


def _views(b, r, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    z = jax.random.normal(k1, (b, r))
    return z, z + 0.5 * jax.random.normal(k2, (b, r))


@pytest.mark.parametrize("r", [2, 6])  # the fused kernel and the matmul path
def test_per_example_values_and_masks(r):
    z, zp = _views(7, r)
    pad = jnp.concatenate([z, 100.0 * jnp.ones((3, r))]), jnp.concatenate([zp, -50.0 * jnp.ones((3, r))])
    mask = jnp.arange(10) < 7
    for name, loss in _every_loss().items():
        @jax.jit  # one compilation per loss, not one per operation
        def check(z, zp, pz, pzp):
            return {"per": loss(z, zp, reduction="none"), "mean": loss(z, zp),
                    "masked": loss(pz, pzp, mask=mask), "masked_per": loss(pz, pzp, mask=mask, reduction="none"),
                    "g_pad": jax.grad(lambda a: loss(a, pzp, mask=mask))(pz),
                    "g": jax.grad(lambda a: loss(a, zp))(z)}

        out = check(z, zp, *pad)
        assert out["per"].shape == (7,), name
        np.testing.assert_allclose(out["per"].mean(), out["mean"], rtol=1e-5, err_msg=name)
        # padded rows (wild values) change nothing, in value or gradient
        np.testing.assert_allclose(out["masked"], out["mean"], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["masked_per"][:7], out["per"], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(out["masked_per"][7:], 0.0)
        np.testing.assert_allclose(out["g_pad"][:7], out["g"], rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(out["g_pad"][7:], 0.0)


def test_per_example_infonce_is_each_rows_cross_entropy():
    import optax

    z, zp = _views(6, 3)
    want = optax.softmax_cross_entropy_with_integer_labels(z @ zp.T / 0.5, jnp.arange(6))
    np.testing.assert_allclose(infonce(z, zp, temperature=0.5, reduction="none"), want, rtol=1e-5)


@pytest.mark.parametrize("r", [2, 6])
def test_forward_mode_equals_reverse_mode_on_every_loss(r):
    z, zp = _views(5, r, seed=1)
    for name, loss in _every_loss().items():
        f = lambda a: loss(a, zp)  # noqa: E731
        fwd, rev, h = jax.jit(lambda a: (jax.jacfwd(f)(a), jax.jacrev(f)(a), jax.hessian(f)(a)))(z)
        np.testing.assert_allclose(fwd, rev, rtol=1e-4, atol=1e-6, err_msg=name)
        assert h.shape == (5, r, 5, r) and np.all(np.isfinite(h)), name
        np.testing.assert_allclose(h.reshape(5 * r, 5 * r), h.reshape(5 * r, 5 * r).T, atol=1e-4, err_msg=name)


def test_simsiam_takes_a_callable_predictor_and_bad_options_are_refused():
    z, zp = _views(6, 2)
    p = jnp.array([[1.0, 0.2], [0.3, 0.9]])
    np.testing.assert_allclose(simsiam(z, zp, predictor=lambda u: u @ p), simsiam(z, zp, predictor=p), rtol=1e-6)
    with pytest.raises(ValueError, match="predictor must map"):
        simsiam(z, zp, predictor=lambda u: u[:, :1])
    with pytest.raises(ValueError, match="reduction must be one of"):
        infonce(z, zp, reduction="sum")
    with pytest.raises(ValueError, match=r"mask must have shape \(B,\)"):
        spectral_contrastive(z, zp, mask=jnp.ones(5, bool))
