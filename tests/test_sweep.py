import chex
import jax
import numpy as np
import pytest

from gmmssl.evaluate import make_compare_cell
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import parallel_pancakes
from gmmssl.sweep import Sweep, flatten_grid, run_grid
from gmmssl.train import TrainConfig, train


def test_flatten_grid_is_the_cartesian_product_first_axis_slowest():
    g = flatten_grid({"delta": (0.0, 1.0), "seed": (0, 1, 2)})
    np.testing.assert_array_equal(g["delta"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(g["seed"], [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="axis 'seed' is empty"):
        flatten_grid({"delta": (0.5,), "seed": ()})
    with pytest.raises(ValueError, match="at least one"):
        flatten_grid({})


def _spec(g, cfg):
    train_fn, evaluate_fn = make_compare_cell(g, cfg, fisher_subspace(g), num_baseline=200, num_eval=200)
    return train_fn, evaluate_fn


def test_grid_cell_matches_the_single_run_and_chunks_compile_once():
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(r=2, batch_size=64, steps=40, log_every=20)
    train_fn, evaluate_fn = _spec(g, cfg)
    counted = chex.assert_max_traces(train_fn, n=1)
    chex.clear_trace_counter()
    spec = Sweep(counted, evaluate_fn, {"delta": (0.25, 0.5, 1.0), "seed": (0, 1), "learning_rate": (0.05,)})
    lines = []
    grid, out = run_grid(spec, chunk_size=4, progress=lines.append)  # 6 cells: 2 chunks, one padded
    assert len(lines) == 2
    assert out["projectors"]["infonce"].shape == (6, 6, 2)
    assert set(out["metrics"]) == {"pca", "lda", "oracle", "infonce", "init"}
    cell = 3  # delta = 0.5, seed = 1
    assert grid["delta"][cell] == 0.5 and grid["seed"][cell] == 1
    single = train(jax.random.split(jax.random.PRNGKey(1), 4)[0], g,
                   {"delta": 0.5, "learning_rate": 0.05}, cfg, fisher_subspace(g))
    np.testing.assert_allclose(out["projectors"]["infonce"][cell], single.params["A"], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out["metrics"]["infonce"]["final_loss"][cell], single.history["loss"][-1], rtol=1e-5)
