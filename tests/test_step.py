"""The trainer as a pure init/step pair, auxiliary outputs of an objective, and the
history's semantics (issue 30, items 5 and 7)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gmmssl import losses
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import parallel_pancakes
from gmmssl.metrics import fisher_capture
from gmmssl.train import (HISTORY_KEYS, Objective, TrainConfig, TrainState, diverged, embed, init, init_projector,
                          learning_rate_schedule, make_hparams, step, train)

G = parallel_pancakes(6, 2)
F = fisher_subspace(G)


def _init_learned_t(key, data, config):
    return {**init_projector(key, data, config), "log_t": jnp.asarray(0.0, jnp.float32)}


def _learned_t_loss(params, x, x_pos, hparams, config, data):
    t = jnp.exp(params["log_t"])
    value = losses.infonce(embed(params, x, config), embed(params, x_pos, config), temperature=t)
    return value, {"temperature": t}


LEARNED_T = Objective("learned_t", _learned_t_loss, init=_init_learned_t)
CFG_T = TrainConfig(r=2, batch_size=32, steps=12, log_every=4, loss=LEARNED_T)
STEP = jax.jit(step, static_argnums=2)


def _loop(key, data, hparams, config):
    """The user's own loop: init, then jit(step) from Python; the per-step metrics stacked."""
    state = init(key, data, hparams, config)
    metrics = []
    for _ in range(config.steps):
        state, m = STEP(state, data, config)
        metrics.append(m)
    return state, {k: np.stack([np.asarray(m[k]) for m in metrics]) for k in metrics[0]}


def test_an_objective_returning_aux_logs_it_in_the_history():
    res = train(jax.random.PRNGKey(0), G, make_hparams(delta=1.0), CFG_T, F)
    assert res.history["temperature"].shape == res.history["loss"].shape == (3,)
    t = np.asarray(res.history["temperature"])
    assert np.all(np.isfinite(t)) and np.all(t > 0)
    assert not np.allclose(t, 1.0)  # the temperature is learned: it moved from exp(0) = 1
    np.testing.assert_allclose(t[-1], np.exp(np.asarray(res.params["log_t"])), rtol=0.05)


def test_train_equals_a_python_loop_over_jitted_step():
    key, hp = jax.random.PRNGKey(1), make_hparams(delta=0.8)
    res = train(key, G, hp, CFG_T, F)
    state, m = _loop(key, G, hp, CFG_T)
    assert int(state.count) == CFG_T.steps
    windows = lambda v: v.reshape(-1, CFG_T.log_every)  # noqa: E731
    expected = {"loss": windows(m["loss"]).mean(1), "temperature": windows(m["temperature"]).mean(1),
                "start_loss": windows(m["loss"])[:, 0], "learning_rate": windows(m["learning_rate"])[:, -1]}
    # same program, same rounding on the CPU; other backends may fuse differently
    tol = dict(rtol=0, atol=0) if jax.default_backend() == "cpu" else dict(rtol=1e-5, atol=1e-6)
    for name in ("A", "log_t"):
        np.testing.assert_allclose(state.params[name], res.params[name], **tol)
    for name, value in expected.items():
        np.testing.assert_allclose(res.history[name], value, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(res.history["fisher_capture"][-1], fisher_capture(state.params["A"], F), rtol=1e-6)


@pytest.mark.parametrize("config", [
    TrainConfig(r=2, batch_size=32, steps=8, log_every=4, num_samples=64),  # the pool rides in the state
    TrainConfig(r=2, batch_size=32, steps=8, log_every=4, loss="byol"),  # post_update and an own hparam
    TrainConfig(r=2, batch_size=32, steps=8, log_every=4, optimizer=optax.sgd(0.1)),  # no learning_rate
], ids=["finite_sample", "byol", "ready_optimizer"])
def test_the_loop_equals_train_for_other_configs(config):
    key, hp = jax.random.PRNGKey(2), {"delta": 0.9}
    res = train(key, G, hp, config)
    state, m = _loop(key, G, hp, config)
    assert set(res.history) - set(HISTORY_KEYS) == set()
    assert ("learning_rate" in m) == ("learning_rate" in res.history) == (not isinstance(config.optimizer,
                                                                                          optax.GradientTransformation))
    for got, want in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(res.params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.history["loss"], m["loss"].reshape(-1, 4).mean(1), rtol=1e-5)


def test_aux_values_stack_per_window_under_vmap():
    cfg = TrainConfig(r=2, batch_size=32, steps=6, log_every=2, loss=LEARNED_T)
    deltas = jnp.array([0.5, 1.0, 1.5])  # the last is out of range: NaN, like "loss"
    res = jax.jit(jax.vmap(lambda k, d: train(k, G, {"delta": d}, cfg)))(jax.random.split(jax.random.PRNGKey(3), 3),
                                                                         deltas)
    assert res.history["temperature"].shape == res.history["loss"].shape == (3, 3)
    t = np.asarray(res.history["temperature"])
    assert np.isfinite(t[:2]).all() and np.isnan(t[2]).all()
    assert jax.vmap(diverged)(res).tolist() == [False, False, True]


def test_the_history_means_what_its_docstring_says():
    """loss and aux: window means; start_loss: the window's first step; learning_rate: the
    schedule at the window's LAST step; param_change: at the window's end."""
    cfg = TrainConfig(r=2, batch_size=32, steps=12, log_every=4, loss=LEARNED_T)  # cosine schedule: rates differ
    key, hp = jax.random.PRNGKey(4), make_hparams(delta=1.0, learning_rate=0.1)
    res = train(key, G, hp, cfg)
    state0 = init(key, G, hp, cfg)
    state, m = _loop(key, G, hp, cfg)
    schedule = learning_rate_schedule(cfg, hp["learning_rate"])
    lasts = np.arange(cfg.log_every - 1, cfg.steps, cfg.log_every)
    # the cosine's float32 rounding is relative to its peak (1 + cos cancels near the end):
    # 1e-6 of the peak, whether compiled inside the step or computed eagerly here
    np.testing.assert_allclose(m["learning_rate"], [schedule(t) for t in range(cfg.steps)], rtol=0, atol=1e-7)
    np.testing.assert_allclose(res.history["learning_rate"], [schedule(t) for t in lasts], rtol=0, atol=1e-7)
    assert not np.allclose(res.history["learning_rate"], m["learning_rate"].reshape(3, 4).mean(1))  # not a mean
    np.testing.assert_allclose(res.history["loss"], m["loss"].reshape(3, 4).mean(1), rtol=1e-6)
    np.testing.assert_allclose(res.history["temperature"], m["temperature"].reshape(3, 4).mean(1), rtol=1e-6)
    np.testing.assert_allclose(res.history["start_loss"], m["loss"][::4], rtol=1e-6)
    # step 0's loss is L0, the loss at init's parameters
    p0 = state0.params
    np.testing.assert_allclose(m["temperature"][0], math.exp(float(p0["log_t"])), rtol=1e-6)
    flat = lambda p: np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(p)])  # noqa: E731
    np.testing.assert_allclose(res.history["param_change"][-1],
                               np.linalg.norm(flat(state.params) - flat(p0)) / np.linalg.norm(flat(p0)), rtol=1e-5)


def test_a_state_checkpoints_and_resumes_to_the_same_numbers(tmp_path):
    cfg = TrainConfig(r=2, batch_size=32, steps=8, log_every=4)
    key, hp = jax.random.PRNGKey(5), make_hparams(delta=0.7)
    state = init(key, G, hp, cfg)
    for _ in range(4):
        state, _ = STEP(state, G, cfg)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    np.savez(tmp_path / "ckpt.npz", *[np.asarray(x) for x in leaves])  # any pytree serializer (orbax, ...)
    with np.load(tmp_path / "ckpt.npz") as f:
        restored = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(f[f"arr_{i}"]) for i in range(len(leaves))])
    assert isinstance(restored, TrainState) and int(restored.count) == 4
    for _ in range(4):
        restored, _ = STEP(restored, G, cfg)
    np.testing.assert_allclose(restored.params["A"], train(key, G, hp, cfg).params["A"], rtol=1e-5, atol=1e-6)


def test_a_vmapped_grid_of_states_steps_like_train():
    cfg = TrainConfig(r=2, batch_size=32, steps=4, log_every=2)
    keys, deltas = jax.random.split(jax.random.PRNGKey(6), 2), jnp.array([0.5, 1.0])
    states = jax.vmap(init, in_axes=(0, None, 0, None))(keys, G, {"delta": deltas}, cfg)
    grid_step = jax.jit(jax.vmap(step, in_axes=(0, None, None)), static_argnums=2)
    for _ in range(cfg.steps):
        states, metrics = grid_step(states, G, cfg)
    assert metrics["loss"].shape == (2,)
    want = jax.vmap(lambda k, d: train(k, G, {"delta": d}, cfg))(keys, deltas)
    np.testing.assert_allclose(states.params["A"], want.params["A"], rtol=1e-5, atol=1e-6)


def test_init_validates_and_a_traced_value_out_of_range_gives_nan():
    with pytest.raises(ValueError, match=r"delta must be in \[0.0, 1.0\]"):
        init(jax.random.PRNGKey(0), G, {"delta": 1.5}, CFG_T)
    state = jax.vmap(init, in_axes=(None, None, 0, None))(jax.random.PRNGKey(0), G, {"delta": jnp.array([1.0, 1.5])},
                                                          CFG_T)
    _, metrics = jax.vmap(step, in_axes=(0, None, None))(state, G, CFG_T)
    assert np.isfinite(metrics["loss"][0]) and np.isnan(metrics["loss"][1])


def _objective(aux):
    return Objective("bad_aux", lambda p, x, xp, hp, c, d: (jnp.sum((x @ p["A"]) ** 2) * 0.0 + 1.0, *aux))


@pytest.mark.parametrize("aux, match", [
    (({"loss": 1.0},), "aux names must be strings other than loss"),
    (({"v": jnp.ones(3)},), "aux value 'v' must be a scalar, got shape"),
    (({"v": 1.0}, 2.0), "a scalar or a pair"),
    ((1.0,), "a scalar or a pair"),
])
def test_bad_aux_is_refused_with_one_line(aux, match):
    cfg = TrainConfig(r=2, batch_size=8, steps=2, log_every=1, loss=_objective(aux))
    with pytest.raises(ValueError, match=match):
        train(jax.random.PRNGKey(0), G, {}, cfg)
