"""Issue 13: the loss zoo, each checked in value and gradient against a straightforward
reference written here, and trainable through the public trainer."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gmmssl import losses
from gmmssl.gmm import parallel_pancakes
from gmmssl.train import OBJECTIVES, ZOO, TrainConfig, diverged, train


def _views(b=6, r=3, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    z = jax.random.normal(k1, (b, r))
    return z, z + 0.7 * jax.random.normal(k2, (b, r))


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


# ----------------------------------------------------------------- references, loop by loop

def ref_ntxent(z, zp, tau, drop_positive=False):
    u = np.concatenate([z, zp])
    n, b = len(u), len(z)
    total = 0.0
    for a in range(n):
        p = (a + b) % n
        terms = [math.exp(_cos(u[a], u[c]) / tau) for c in range(n) if c != a and not (drop_positive and c == p)]
        total += -_cos(u[a], u[p]) / tau + math.log(sum(terms))
    return total / n


def ref_barlow(z, zp, lam=5e-3, eps=1e-5):
    def std(v):
        return (v - v.mean(0)) / np.sqrt(v.var(0) + eps)

    c = std(z).T @ std(zp) / len(z)
    return sum((1 - c[i, i]) ** 2 for i in range(len(c))) + lam * sum(
        c[i, j] ** 2 for i in range(len(c)) for j in range(len(c)) if i != j)


def ref_vicreg(z, zp, lam=25.0, mu=25.0, nu=1.0):
    def v(x):
        return np.mean(np.maximum(0.0, 1.0 - np.sqrt(x.var(0, ddof=1) + 1e-4)))

    def c(x):
        cov = np.cov(x, rowvar=False)
        return (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / x.shape[1]

    return lam * np.mean((z - zp) ** 2) + mu * 0.5 * (v(z) + v(zp)) + nu * (c(z) + c(zp))


def ref_siglip(z, zp, t=math.log(10.0), bias=-10.0):
    total = 0.0
    for i in range(len(z)):
        for j in range(len(z)):
            y = 1.0 if i == j else -1.0
            logit = math.exp(t) * _cos(z[i], zp[j]) + bias
            total += math.log1p(math.exp(-y * logit))
    return total / len(z)


CASES = {
    "ntxent": (lambda z, zp: losses.ntxent(z, zp), lambda z, zp: ref_ntxent(z, zp, 0.5)),
    "ntxent_tau": (lambda z, zp: losses.ntxent(z, zp, temperature=0.2), lambda z, zp: ref_ntxent(z, zp, 0.2)),
    "dcl": (lambda z, zp: losses.dcl(z, zp), lambda z, zp: ref_ntxent(z, zp, 0.1, drop_positive=True)),
    "barlow_twins": (lambda z, zp: losses.barlow_twins(z, zp), ref_barlow),
    "barlow_lambda": (lambda z, zp: losses.barlow_twins(z, zp, lambda_=0.3), lambda z, zp: ref_barlow(z, zp, 0.3)),
    "vicreg": (lambda z, zp: losses.vicreg(z, zp), ref_vicreg),
    "negative_cosine": (lambda z, zp: losses.negative_cosine(z, zp),
                        lambda z, zp: -np.mean([_cos(a, b) for a, b in zip(z, zp)])),
    "byol": (lambda z, zp: losses.byol(z, zp), lambda z, zp: np.mean([2 - 2 * _cos(a, b) for a, b in zip(z, zp)])),
    "siglip": (lambda z, zp: losses.siglip(z, zp), ref_siglip),
    "siglip_tb": (lambda z, zp: losses.siglip(z, zp, log_temperature=0.5, bias=-1.0),
                  lambda z, zp: ref_siglip(z, zp, 0.5, -1.0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_gradient_match_the_reference(name):
    ours, ref = CASES[name]
    with jax.enable_x64(True):
        z, zp = (np.asarray(v, np.float64) for v in _views())
        # value and gradient in one jitted program (eagerly, each operation compiles on its own)
        value, grad = jax.jit(jax.value_and_grad(ours))(jnp.asarray(z), jnp.asarray(zp))
        np.testing.assert_allclose(float(value), ref(z, zp), rtol=1e-9)
        grad = np.asarray(grad)
        h = 1e-6
        for idx in [(0, 0), (2, 1), (5, 2)]:
            up, down = z.copy(), z.copy()
            up[idx] += h
            down[idx] -= h
            np.testing.assert_allclose(grad[idx], (ref(up, zp) - ref(down, zp)) / (2 * h), rtol=1e-5, atol=1e-8)


def test_ntxent_equals_optax():
    z, zp = _views(5, 4)
    u = jnp.concatenate([z, zp])
    labels = jnp.concatenate([jnp.arange(5), jnp.arange(5)])
    np.testing.assert_allclose(losses.ntxent(z, zp, temperature=0.3),
                               optax.losses.ntxent(u, labels, temperature=0.3), rtol=1e-5)


def test_zoo_losses_take_masks_per_example_values_and_forward_mode():
    z, zp = _views(7, 2)
    pad = jnp.concatenate([z, 9.0 * jnp.ones((2, 2))]), jnp.concatenate([zp, -9.0 * jnp.ones((2, 2))])
    keep = jnp.arange(9) < 7
    for name in ("ntxent", "dcl", "barlow_twins", "vicreg", "negative_cosine", "byol", "siglip"):
        loss = getattr(losses, name)

        @jax.jit
        def check(z, zp, pz, pzp):
            f = lambda a: loss(a, zp)  # noqa: E731
            return {"mean": loss(z, zp), "per": loss(z, zp, reduction="none"), "masked": loss(pz, pzp, mask=keep),
                    "fwd": jax.jacfwd(f)(z), "rev": jax.jacrev(f)(z)}

        out = check(z, zp, *pad)
        np.testing.assert_allclose(out["per"].mean(), out["mean"], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["masked"], out["mean"], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["fwd"], out["rev"], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_every_zoo_loss_trains_linear_and_mlp_projectors():
    g = parallel_pancakes(6, 2)
    for name in ZOO:
        linear = TrainConfig(loss=name, r=2, batch_size=32, steps=10, log_every=10)
        mlp = TrainConfig(loss=name, r=2, batch_size=32, steps=10, log_every=10, hidden=(8,))
        both = jax.jit(lambda d: (train(jax.random.PRNGKey(0), g, {"delta": d}, linear),
                                  train(jax.random.PRNGKey(0), g, {"delta": d}, mlp)))(1.0)  # one compilation
        for out, d_in in zip(both, (6, 8)):
            assert not bool(diverged(out)), name
            assert out.params["A"].shape == (d_in, 2), name


def test_byol_target_is_the_moving_average_of_the_online_network():
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(loss="byol", r=2, batch_size=32, steps=10, log_every=5)
    key = jax.random.PRNGKey(1)
    frozen, follow, mid = (jax.tree_util.tree_map(lambda v, i=i: v[i], out) for out in
                           [jax.vmap(lambda e: train(key, g, {"ema": e}, cfg).params)(jnp.array([1.0, 0.0, 0.9]))]
                           for i in range(3))
    start = OBJECTIVES["byol"].init_params(jax.random.split(key)[0], g, cfg)
    np.testing.assert_allclose(frozen["target"]["A"], start["A"], rtol=1e-6)  # rate 1: never moves
    np.testing.assert_allclose(follow["target"]["A"], follow["A"], rtol=1e-6)  # rate 0: the online copy
    assert not np.allclose(mid["target"]["A"], mid["A"]) and not np.allclose(mid["target"]["A"], start["A"])


def test_byol_cosine_ema_schedule_rises_from_the_base_rate_to_one_as_in_the_paper():
    from gmmssl.train import Objective, byol_ema_rate, step, init

    cfg = TrainConfig(loss="byol", r=2, batch_size=32, steps=8, log_every=4)
    hp = {"ema": 0.996, "ema_cosine": 1.0}
    rates = [float(byol_ema_rate(hp, cfg, k)) for k in range(cfg.steps + 1)]
    # BYOL: τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2
    want = [1 - (1 - 0.996) * (math.cos(math.pi * k / cfg.steps) + 1) / 2 for k in range(cfg.steps + 1)]
    np.testing.assert_allclose(rates, want, rtol=1e-6)
    assert rates[0] == pytest.approx(0.996) and rates[-1] == pytest.approx(1.0) and np.all(np.diff(rates) > 0)
    assert float(byol_ema_rate({"ema": 0.9, "ema_cosine": 0.0}, cfg, 5)) == pytest.approx(0.9)  # the default: fixed

    # the trainer applies it step by step: replay the EMA by hand from the online weights of each step
    g = parallel_pancakes(6, 2)
    key = jax.random.PRNGKey(3)
    hparams = {"delta": jnp.float32(1.0), "learning_rate": jnp.float32(0.05), "temperature": jnp.float32(1.0),
               "xi": jnp.float32(0.7), "ema": jnp.float32(0.5), "ema_cosine": jnp.float32(1.0)}
    state = init(key, g, hparams, cfg)
    target = state.params["target"]["A"]
    for k in range(cfg.steps):
        state, _ = step(state, g, cfg)
        rate = 1 - 0.5 * (math.cos(math.pi * k / cfg.steps) + 1) / 2
        target = rate * target + (1 - rate) * state.params["A"]
    np.testing.assert_allclose(state.params["target"]["A"], target, rtol=1e-5, atol=1e-7)
    out = train(key, g, hparams, cfg)
    np.testing.assert_allclose(out.params["target"]["A"], target, rtol=1e-5, atol=1e-7)

    # a post_update without ``count`` is still called the old way; one with it gets the step number
    seen = Objective("counted", OBJECTIVES["infonce"].loss,
                     init=lambda k, d, c: {**OBJECTIVES["infonce"].init_params(k, d, c), "n": jnp.zeros(())},
                     post_update=lambda p, h, c, *, count: {**p, "n": p["n"] + count})
    old = Objective("old", OBJECTIVES["infonce"].loss, post_update=lambda p, h, c: {**p, "A": p["A"] * 1.0})
    counted = train(key, g, {"delta": 1.0}, TrainConfig(loss=seen, steps=6, log_every=3, batch_size=16))
    assert float(counted.params["n"]) == sum(range(6))
    train(key, g, {"delta": 1.0}, TrainConfig(loss=old, steps=4, log_every=2, batch_size=16))


def test_siglip_learns_its_temperature_and_bias():
    g = parallel_pancakes(6, 2)
    out = train(jax.random.PRNGKey(2), g, {"delta": 1.0}, TrainConfig(loss="siglip", batch_size=32, steps=20,
                                                                        log_every=10))
    assert float(out.params["log_t"]) != pytest.approx(math.log(10.0))
    assert float(out.params["bias"]) != pytest.approx(-10.0)


@pytest.mark.slow
def test_population_losses_are_the_large_batch_limits_of_the_sampled_ones():
    from gmmssl.augment import sample_pairs
    from gmmssl.gmm import random_gmm
    from gmmssl.train import pair_moments

    g = random_gmm(jax.random.PRNGKey(5), 5, 3, separation=1.5, centered=False)  # a non-zero mean matters
    a = jax.random.normal(jax.random.PRNGKey(6), (5, 2)) * 0.6
    with jax.enable_x64(True):
        g64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), g)
        a64 = jnp.asarray(a, jnp.float64)

        @jax.jit  # one program, not dozens of eager operations
        def sampled_and_population(key):
            s, x, m = pair_moments(a64, g64, 0.7)
            xs, xps, _, _ = sample_pairs(key, g64, 200_000, 0.7)
            z, zp = xs @ a64, xps @ a64
            # spectral: unbiased for every B; compare on a large batch's parts
            parts = [v.reshape(-1, 100, v.shape[1]).swapaxes(0, 1) for v in (z, zp)]  # part i: rows i, i+100, …
            return {"spectral": (jnp.mean(jax.vmap(losses.spectral_contrastive)(*parts)),
                                 losses.spectral_contrastive_population(s, x, m)),
                    "barlow_twins": (losses.barlow_twins(z, zp), losses.barlow_twins_population(s, x)),
                    "vicreg": (losses.vicreg(z, zp), losses.vicreg_population(s, x))}

        out = sampled_and_population(jax.random.PRNGKey(7))
        np.testing.assert_allclose(*out["spectral"], rtol=2e-2)
        np.testing.assert_allclose(*out["barlow_twins"], rtol=1e-2)
        np.testing.assert_allclose(*out["vicreg"], rtol=1e-2)


def test_population_objectives_train_noise_free():
    g = parallel_pancakes(6, 2)
    from gmmssl.fisher import fisher_subspace

    for name in ("spectral_population", "barlow_twins_population", "vicreg_population"):
        out = train(jax.random.PRNGKey(0), g, {"delta": 1.0}, TrainConfig(loss=name, batch_size=8, steps=200,
                                                                          log_every=100), fisher_subspace(g))
        assert float(out.history["fisher_capture"][-1]) > 0.95, name
