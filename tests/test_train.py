import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import parallel_pancakes
from gmmssl.metrics import fisher_capture
from gmmssl.train import TrainConfig, init_params, make_hparams, train

CFG = TrainConfig(r=2, batch_size=128, steps=200, log_every=50)


def test_training_finds_the_fisher_subspace_on_pancakes():
    g = parallel_pancakes(10, 2)
    f = fisher_subspace(g)
    res = jax.jit(train, static_argnums=3)(jax.random.PRNGKey(0), g, make_hparams(delta=1.0), CFG, f)
    assert res.params["A"].shape == (10, 2)
    assert set(res.history) == {"loss", "start_loss", "param_change", "learning_rate", "fisher_capture"}
    assert res.history["loss"].shape == res.history["start_loss"].shape == res.history["param_change"].shape == (4,)
    a0 = init_params(jax.random.PRNGKey(0), g, CFG)["A"]  # the relative change of A, the only parameter
    np.testing.assert_allclose(res.history["param_change"][-1],
                               np.linalg.norm(res.params["A"] - a0) / np.linalg.norm(a0), rtol=1e-5)
    assert float(res.history["start_loss"][0]) > float(res.history["loss"][-1])
    assert float(res.history["fisher_capture"][-1]) > 0.95
    assert float(res.history["loss"][-1]) < float(res.history["loss"][0])
    # the cosine schedule decays the learning rate
    lr = np.asarray(res.history["learning_rate"])
    assert lr[0] > lr[-1] and np.all(np.diff(lr) <= 0)


def test_vmapped_grid_cell_equals_the_single_run():
    g = parallel_pancakes(8, 2)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    deltas = jnp.array([0.2, 0.5, 1.0])
    lrs = jnp.array([0.01, 0.05, 0.02])
    grid = jax.jit(jax.vmap(lambda k, d, lr: train(k, g, {"delta": d, "learning_rate": lr}, CFG)))(keys, deltas, lrs)
    single = jax.jit(train, static_argnums=3)(keys[1], g, {"delta": deltas[1], "learning_rate": lrs[1]}, CFG)
    np.testing.assert_allclose(grid.params["A"][1], single.params["A"], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(grid.history["loss"][1], single.history["loss"], rtol=1e-5)


def test_train_compiles_once_for_any_hyperparameters():
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(r=2, batch_size=32, steps=20, log_every=10)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key, delta, lr, tau):
        return train(key, g, {"delta": delta, "learning_rate": lr, "temperature": tau}, cfg).params["A"]

    chex.clear_trace_counter()
    for i, (d, lr, tau) in enumerate([(0.1, 0.01, 1.0), (0.9, 0.1, 0.5), (1.0, 0.03, 2.0)]):
        run(jax.random.PRNGKey(i), jnp.float32(d), jnp.float32(lr), jnp.float32(tau))


def test_common_random_numbers_start_from_the_same_projector():
    g = parallel_pancakes(6, 2)
    a0 = init_params(jax.random.PRNGKey(4), g, CFG)["A"]
    short = TrainConfig(r=2, batch_size=32, steps=1, log_every=1, schedule="constant")
    r1 = train(jax.random.PRNGKey(4), g, make_hparams(delta=0.2, learning_rate=1e-8), short)
    np.testing.assert_allclose(r1.params["A"], a0, atol=1e-6)


def test_finite_sample_regime():
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(r=2, batch_size=64, steps=100, log_every=50, num_samples=256)
    f = fisher_subspace(g)
    res = train(jax.random.PRNGKey(0), g, make_hparams(delta=1.0), cfg, f)
    assert np.isfinite(np.asarray(res.history["loss"])).all()
    assert fisher_capture(res.params["A"], f) > 0.8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(r=0), r"r must be in \[1, inf\]"),
        (dict(r=7), r"r must be in \[1, 6\]"),  # against the data's d = 6: at train
        (dict(steps=100, log_every=30), "multiple of log_every"),
        (dict(loss="byol2"), "loss must be one of"),
        (dict(mode="bad"), "mode must be one of"),
        (dict(batch_size=0), "batch_size"),
        (dict(num_samples=10), "num_samples"),
    ],
)
def test_bad_config_is_rejected_before_compiling(kwargs, match):
    """Where the config is made (every check that needs no data), else at train."""
    g = parallel_pancakes(6, 2)
    with pytest.raises(ValueError, match=match):
        train(jax.random.PRNGKey(0), g, make_hparams(), TrainConfig(**kwargs))


@pytest.mark.parametrize(
    "hp, match",
    [
        (dict(delta=1.5), r"delta must be in \[0.0, 1.0\]"),
        (dict(delta=-0.1), "delta"),
        (dict(learning_rate=0.0), r"learning_rate must be in \(0.0, inf\)"),
        (dict(temperature=-1.0), "temperature"),
        (dict(learning_rate=float("nan")), "learning_rate must be finite"),
        (dict(xi=-1.0), "xi"),
    ],
)
def test_bad_hyperparameters(hp, match):
    with pytest.raises(ValueError, match=match):
        make_hparams(**hp)
    g = parallel_pancakes(6, 2)
    with pytest.raises(ValueError, match=match):
        train(jax.random.PRNGKey(0), g, hp, CFG)


def test_unknown_hyperparameter():
    with pytest.raises(ValueError, match="unknown hyper-parameter 'lr'"):
        make_hparams(lr=0.1)
