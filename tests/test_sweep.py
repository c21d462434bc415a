import chex
import jax
import numpy as np
import pytest

from gmmssl.evaluate import make_compare_cell
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import parallel_pancakes
from gmmssl.sweep import Sweep, flatten_grid, run_grid
from gmmssl.train import TrainConfig, train
from gmmssl.cli import main


def test_flatten_grid_is_the_cartesian_product_first_axis_slowest():
    g = flatten_grid({"delta": (0.0, 1.0), "seed": (0, 1, 2)})
    np.testing.assert_array_equal(g["delta"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(g["seed"], [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="axis 'seed' is empty"):
        flatten_grid({"delta": (0.5,), "seed": ()})
    with pytest.raises(ValueError, match="at least one"):
        flatten_grid({})


@pytest.mark.slow
def test_grid_cell_matches_the_single_run_and_chunks_compile_once():
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(r=2, batch_size=64, steps=40, log_every=20)
    prepare_fn, train_fn, evaluate_fn = make_compare_cell(lambda cell: g, cfg, num_baseline=200, num_eval=200)
    counted = chex.assert_max_traces(train_fn, n=1)
    chex.clear_trace_counter()
    spec = Sweep(counted, evaluate_fn, {"delta": (0.25, 0.5, 1.0), "seed": (0, 1), "learning_rate": (0.05,)},
                 prepare_fn=prepare_fn)
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


# ------------------------------------------------------------- issue 4: the engine

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from gmmssl import results  # noqa: E402
from gmmssl.sweep import choose_chunk_size, estimate_cell_bytes  # noqa: E402

from tiny import CHUNKED, TINY  # noqa: E402


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "gmmssl.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def _rows(path):
    return results.read_csv(Path(path) / "results.csv")


def _max_metric_diff(a, b):
    assert len(a) == len(b)
    worst = 0.0
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if isinstance(v, str) or k in ("delta", "seed")} == \
               {k: v for k, v in rb.items() if isinstance(v, str) or k in ("delta", "seed")}
        for k in ("fisher_capture", "final_loss"):
            if k in ra:
                worst = max(worst, abs(ra[k] - rb[k]))
    return worst


@pytest.mark.slow
def test_chunks_compile_once_whatever_the_grid_size():
    # the configuration and chunk of the test above: the same programs (compiled once per session)
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(r=2, batch_size=64, steps=40, log_every=20)
    prepare_fn, train_fn, evaluate_fn = make_compare_cell(lambda cell: g, cfg, num_baseline=200, num_eval=200)
    for cells in (2, 12):
        chex.clear_trace_counter()
        spec = Sweep(chex.assert_max_traces(train_fn, n=1), chex.assert_max_traces(evaluate_fn, n=1),
                     {"delta": tuple(np.linspace(0, 1, cells)), "seed": (0,), "learning_rate": (0.05,)},
                     prepare_fn=chex.assert_max_traces(prepare_fn, n=1))
        grid, out = run_grid(spec, chunk_size=4)
        assert out["projectors"]["infonce"].shape[0] == cells


@pytest.mark.slow
def test_memory_estimate_bounds_what_xla_allocates():
    """The per-cell estimate is an upper bound within 4× of XLA's compiled temp memory."""
    for d, r, b in ((16, 2, 128), (64, 8, 256), (32, 4, 512)):
        g = parallel_pancakes(d, 2)
        cfg = TrainConfig(r=r, batch_size=b, steps=10, log_every=10)
        f = jax.jit(jax.vmap(lambda k: train(k, g, {}, cfg).params["A"]))
        temp = [f.lower(jax.random.split(jax.random.PRNGKey(0), n)).compile().memory_analysis().temp_size_in_bytes
                for n in (1, 9)]
        per_cell = (temp[1] - temp[0]) / 8
        est = estimate_cell_bytes(d, r, b)
        assert per_cell <= est <= 4 * per_cell, (d, r, b, per_cell, est)


def test_choose_chunk_size():
    assert choose_chunk_size(1000, grid_size=100, num_devices=1, budget_bytes=10_000) == 10
    assert choose_chunk_size(1000, grid_size=100, num_devices=4, budget_bytes=10_000) == 8
    assert choose_chunk_size(1000, grid_size=5, num_devices=1, budget_bytes=10**9) == 5
    assert choose_chunk_size(1000, grid_size=5, num_devices=4, budget_bytes=10**9) == 8  # padded
    assert choose_chunk_size(10**9, grid_size=5, num_devices=2, budget_bytes=1) == 2  # one per device
    assert choose_chunk_size(1000, grid_size=32, num_devices=1, budget_bytes=30_000) == 16  # 2 × 16, not 30 + 2
    assert choose_chunk_size(1000, grid_size=33, num_devices=2, budget_bytes=30_000) == 18  # 2 × 18 (3 padded)
    assert choose_chunk_size(1000, grid_size=256, budget_bytes=10**9, max_cells=64) == 64
    assert choose_chunk_size(1000, grid_size=100, budget_bytes=10**9, max_cells=64) == 50  # 2 × 50


@pytest.mark.slow
def test_same_command_twice_writes_identical_results(tmp_path, finished_tiny):
    first, _ = finished_tiny  # the same command, run earlier in this process
    assert main(["run", "pancakes", "--out", str(tmp_path / "b"), *TINY]) == 0
    assert (first / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.xdist_group("chunked")  # the tests that read finished_chunked share its run
def test_chunking_changes_nothing_beyond_rounding(finished_tiny, finished_chunked):
    one, _ = finished_tiny  # one chunk of 6 cells (seeds 0 and 1)
    many = [r for r in _rows(finished_chunked) if r["seed"] < 2]  # one cell per chunk, the same cells
    assert _max_metric_diff(_rows(one), many) < 1e-4


@pytest.mark.slow
def test_four_devices_give_the_same_results_as_one(tmp_path, finished_tiny):
    env = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    four = _cli("run", "pancakes", "--out", str(tmp_path / "four"), *TINY, env=env)
    assert four.returncode == 0, four.stderr
    one, _ = finished_tiny  # this process: one CPU device
    assert len(json.loads((one / "config.json").read_text())["environment"]["devices"]) == 1
    devices = json.loads((tmp_path / "four" / "config.json").read_text())["environment"]["devices"]
    assert len(devices) == 4
    manifest = json.loads((tmp_path / "four" / "chunks" / "all" / "sweep.json").read_text())
    assert manifest["chunk_size"] % 4 == 0
    assert _max_metric_diff(_rows(tmp_path / "four"), _rows(one)) < 1e-4


@pytest.mark.slow
@pytest.mark.xdist_group("chunked")
def test_sigkill_halfway_then_resume_gives_the_uninterrupted_results(tmp_path, finished_chunked):
    args = ["run", "pancakes", *CHUNKED]  # 12 chunks; finished_chunked: the uninterrupted run, in this process
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gmmssl.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = out / "chunks" / "all"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunks.glob("chunk_*.npz"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(chunks.glob("chunk_*.npz")))
    assert 4 <= done < 12, done
    assert not (out / "results.csv").exists()
    assert main([*args, "--out", str(out), "--resume"]) == 0  # finished by another process: this one
    assert (out / "results.csv").read_bytes() == (finished_chunked / "results.csv").read_bytes()
    assert len(list(chunks.glob("chunk_*.npz"))) == 12
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_resume_refuses_a_different_config(finished_tiny, capsys):
    out, _ = finished_tiny
    assert main(["run", "pancakes", "--out", str(out), *TINY, "--set", "steps=200", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "steps (100 -> 200)" in err


@pytest.mark.slow
def test_static_axes_run_one_compilation_each(tmp_path):
    assert main(["run", "pancakes", "--out", str(tmp_path), *TINY, "--set", "num_components=2,3"]) == 0
    rows = _rows(tmp_path)
    assert {r["num_components"] for r in rows} == {2, 3}
    assert (tmp_path / "chunks" / "num_components=2").is_dir() and (tmp_path / "chunks" / "num_components=3").is_dir()
    npz = np.load(tmp_path / "projectors.npz")
    assert npz["num_components=3/lda"].shape == (6, 8, 2)


@pytest.mark.parametrize("args, message", [
    (["--set", "delta="], "at least one value"),
    (["--set", "delta=0.5,2"], "delta must be in [0.0, 1.0]"),
    (["--set", "temperature=0"], "temperature must be in (0.0, inf)"),
    (["--set", "seed=3"], "unknown --set key 'seed'"),
    (["--chunk-size", "0"], "--chunk-size must be a positive integer"),
])
def test_bad_grid_input_is_refused_before_compiling(args, message, tmp_path, capsys):
    assert main(["run", "pancakes", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()
