"""Masks on every loss (issue 30, item 3).

A masked row must touch neither the value nor any gradient (reverse or forward mode): a
NaN or ±inf in a padded row of either view gives exactly what the loss gives on the kept
rows alone (sliced), and exactly 0 gradient on the padded rows. Masks are boolean (a
float 0.5 is refused, not read as True), and a mask that keeps no row is refused when
concrete and gives NaN (with zero gradients) when traced.

Every masked loss of gmmssl.losses is here (``mask=`` in its signature: checked below),
one jitted program per loss, shared by the tests that call it.
"""
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl import losses

B = 8
KEPT = np.array([1, 2, 3, 4, 6, 7])  # rows 0 and 5 are padding
MASK = np.isin(np.arange(B), KEPT)
DROPPED = ~MASK
K = 3


def _predictor(w):
    return lambda u: jnp.tanh(u @ w)


# name -> (loss(z, z_pos, theta, **kw), theta: the loss's differentiable parameters (taken by the loss as they
#          are: arithmetic on a padded row outside the loss would put 0 · NaN in their gradients), r,
#          reduction="none" taken, smallest batch the loss takes)
CASES = {
    "infonce": (lambda z, zp, t, **kw: losses.infonce(z, zp, temperature=t["tau"], **kw), {"tau": 0.5}, 2, True, 2),
    "infonce_cos_sym": (lambda z, zp, t, **kw: losses.infonce(z, zp, temperature=t["tau"], similarity="cosine",
                                                              symmetric=True, **kw), {"tau": 0.3}, 2, True, 2),
    # r > SMALL_RANK: the (B, B) logits path rather than the fused kernel
    "infonce_matmul": (lambda z, zp, t, **kw: losses.infonce(z, zp, temperature=t["tau"], symmetric=True, **kw),
                       {"tau": 0.7}, 6, True, 2),
    "clip": (lambda z, zp, t, **kw: losses.clip(z, zp, temperature=t["tau"], similarity="cosine", **kw),
             {"tau": 0.5}, 3, True, 2),
    "infonce_population": (lambda z, zp, t, **kw: losses.infonce_population(
        z, zp, t["means"], t["cov"], jnp.log(jnp.ones(K) / K), temperature=t["tau"], **kw),
        {"tau": 0.7, "means": 0.5 * np.arange(K * 3, dtype=np.float32).reshape(K, 3) / K,
         "cov": np.array([[0.5, 0.1, 0.0], [0.1, 0.4, 0.0], [0.0, 0.0, 0.3]], np.float32)}, 3, True, 1),
    "simsiam": (lambda z, zp, t, **kw: losses.simsiam(z, zp, predictor=t["p"], xi=t["xi"], stop_gradient=False, **kw),
                {"p": np.array([[1.0, 0.2, 0.0], [0.3, 0.9, 0.1], [0.0, -0.2, 1.1]], np.float32), "xi": 0.3}, 3,
                True, 2),
    "simsiam_cos_callable": (lambda z, zp, t, **kw: losses.simsiam(z, zp, predictor=_predictor(t["w"]), xi=t["xi"],
                                                                   distance="cosine", **kw),
                             {"w": np.array([[1.0, 0.5], [-0.3, 0.8]], np.float32), "xi": 0.6}, 2, True, 2),
    "covariance_penalty": (lambda z, zp, t, **kw: losses.covariance_penalty(z, **kw), {}, 3, False, 1),
    "spectral_contrastive": (lambda z, zp, t, **kw: losses.spectral_contrastive(z, zp, **kw), {}, 3, True, 2),
    "ntxent": (lambda z, zp, t, **kw: losses.ntxent(z, zp, temperature=t["tau"], **kw), {"tau": 0.5}, 3, True, 2),
    "dcl": (lambda z, zp, t, **kw: losses.dcl(z, zp, temperature=t["tau"], **kw), {"tau": 0.4}, 3, True, 2),
    "barlow_twins": (lambda z, zp, t, **kw: losses.barlow_twins(z, zp, lambda_=t["lam"], **kw), {"lam": 0.05}, 3,
                     True, 2),
    "vicreg": (lambda z, zp, t, **kw: losses.vicreg(z, zp, std_coeff=t["mu"], **kw), {"mu": 25.0}, 3, True, 2),
    "negative_cosine": (lambda z, zp, t, **kw: losses.negative_cosine(z, zp, **kw), {}, 3, True, 1),
    "byol": (lambda z, zp, t, **kw: losses.byol(z, zp, **kw), {}, 3, True, 1),
    "siglip": (lambda z, zp, t, **kw: losses.siglip(z, zp, log_temperature=t["t"], bias=t["b"], **kw),
               {"t": math.log(3.0), "b": -1.0}, 3, True, 2),
}
VARIANTS = {"infonce_cos_sym": "infonce", "infonce_matmul": "infonce", "simsiam_cos_callable": "simsiam"}


def _views(r, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    z = jax.random.normal(k1, (B, r))
    return z, z + 0.5 * jax.random.normal(k2, (B, r))


def _theta(name):
    return jax.tree_util.tree_map(jnp.asarray, CASES[name][1])


_PROGRAMS = {}


def _program(name):
    """One jitted program per loss: value, gradients (both views and the parameters) and a
    forward-mode tangent, with a traced mask and on the kept rows sliced; the per-example
    values likewise."""
    if name in _PROGRAMS:
        return _PROGRAMS[name]
    loss, _, _, takes_none, _ = CASES[name]

    def run(z, zp, theta, mask):
        masked = lambda a, b, t: loss(a, b, t, mask=mask)  # noqa: E731
        sliced = lambda a, b, t: loss(a[KEPT], b[KEPT], t)  # noqa: E731
        ones = jax.tree_util.tree_map(jnp.ones_like, (z, zp, theta))
        out = {}
        for key, f in (("masked", masked), ("sliced", sliced)):
            value, grads = jax.value_and_grad(f, argnums=(0, 1, 2))(z, zp, theta)
            out[key] = {"value": value, "grads": grads, "jvp": jax.jvp(f, (z, zp, theta), ones)[1]}
        if takes_none:
            out["masked"]["per"] = loss(z, zp, theta, mask=mask, reduction="none")
            out["sliced"]["per"] = loss(z[KEPT], zp[KEPT], theta, reduction="none")
        return out

    _PROGRAMS[name] = jax.jit(run)
    return _PROGRAMS[name]


def _poisoned(z, zp):
    """(label, z, z_pos) with NaN, inf and -inf in the padded rows of either view or both."""
    for bad in (np.nan, np.inf, -np.inf):
        yield f"{bad} in z", z.at[DROPPED].set(bad), zp
        yield f"{bad} in z_pos", z, zp.at[DROPPED].set(bad)
        yield f"{bad} in both", z.at[DROPPED].set(bad), zp.at[DROPPED].set(-bad)
    yield "mixed", z.at[0, 0].set(np.nan).at[5].set(-np.inf), zp.at[0, 1].set(np.inf).at[5, 0].set(np.nan)


@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_rows_touch_neither_value_nor_gradient(name):
    z, zp = _views(CASES[name][2])
    theta = _theta(name)
    run = _program(name)
    for label, pz, pzp in _poisoned(z, zp):
        out = run(pz, pzp, theta, jnp.asarray(MASK))
        got, want = out["masked"], out["sliced"]
        msg = f"{name}, {label}"
        np.testing.assert_allclose(got["value"], want["value"], rtol=1e-5, err_msg=msg)
        np.testing.assert_allclose(got["jvp"], want["jvp"], rtol=1e-5, atol=1e-5, err_msg=msg + " (jvp)")
        if "per" in got:
            np.testing.assert_allclose(got["per"][KEPT], want["per"], rtol=1e-5, atol=1e-6, err_msg=msg)
            np.testing.assert_array_equal(got["per"][DROPPED], 0.0, err_msg=msg)
        g_views, g_theta = got["grads"][:2], got["grads"][2]
        for view, g, g_ref in zip(("z", "z_pos"), g_views, want["grads"][:2]):
            np.testing.assert_array_equal(g[DROPPED], 0.0, err_msg=f"{msg}: gradient on padded rows of {view}")
            np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6, err_msg=f"{msg}: gradient on {view}")
        for key in g_theta:
            np.testing.assert_allclose(g_theta[key], want["grads"][2][key], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{msg}: gradient on {key}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_traced_mask_that_keeps_no_row_gives_nan_and_zero_gradients(name):
    z, zp = _views(CASES[name][2])
    z = z.at[0].set(np.nan)
    out = _program(name)(z, zp.at[3].set(np.inf), _theta(name), jnp.zeros(B, bool))["masked"]
    assert np.isnan(out["value"]), name
    for g in jax.tree_util.tree_leaves(out["grads"]):
        np.testing.assert_array_equal(g, 0.0, err_msg=name)
    np.testing.assert_array_equal(out["jvp"], 0.0, err_msg=name)
    if "per" in out:
        np.testing.assert_array_equal(out["per"], 0.0, err_msg=name)


def _call(name, mask, r=None):
    loss, _, r_case, _, _ = CASES[name]
    z, zp = _views(r or r_case)
    return loss(z, zp, _theta(name), mask=mask)


def test_non_boolean_masks_are_refused():
    # every public loss that takes a mask is in CASES (so in every test of this file)
    masked = {name for name in losses.__all__
              if callable(getattr(losses, name)) and "mask" in inspect.signature(getattr(losses, name)).parameters}
    assert masked == {VARIANTS.get(name, name) for name in CASES}
    for name in CASES:
        for bad in (jnp.full(B, 0.5), np.ones(B, np.float32), jnp.asarray(MASK, jnp.int32), MASK.astype(np.uint8)):
            with pytest.raises(ValueError, match=r"^mask must be a boolean array .*got dtype"):
                _call(name, bad)
        with pytest.raises(ValueError, match=r"^mask must be a boolean array"):  # traced as well
            jax.jit(lambda m, name=name: _call(name, m))(jnp.full(B, 0.5))
    # a list of booleans is a boolean mask
    np.testing.assert_allclose(_call("infonce", list(MASK)), _call("infonce", MASK), rtol=1e-6)


def test_a_concrete_mask_that_keeps_too_few_rows_is_refused():
    none, one = np.zeros(B, bool), np.arange(B) == 3
    none_device = jnp.asarray(none)
    for name, (loss, _, _, _, min_batch) in CASES.items():
        with pytest.raises(ValueError, match=r"^mask keeps no row"):
            _call(name, none)
        with pytest.raises(ValueError, match=r"^mask keeps no row"):  # an array closed over by jit is concrete
            jax.jit(lambda name=name: _call(name, none_device))()
        if min_batch == 2:  # as a batch of one row is refused
            with pytest.raises(ValueError, match=r"^mask keeps 1 of 8 rows; .* needs at least 2"):
                _call(name, one)
    # losses that take a single row take a mask keeping one
    z, zp = _views(3)
    np.testing.assert_allclose(losses.byol(z, zp, mask=one), losses.byol(z[3:4], zp[3:4]), rtol=1e-6)
