"""Issue 12: an open library. A user's own objective, hyper-parameters, optimizer, schedule,
data and sweep go through the public trainer and engine; one top-level package."""
import os
import subprocess
import sys
from pathlib import Path

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.nn import logsumexp

import gmmssl
from gmmssl.data import PairSource
from gmmssl.evaluate import make_compare_cell
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import parallel_pancakes
from gmmssl.sweep import Sweep, map_grid, run_grid, trainer_ranges
from gmmssl.train import OBJECTIVES, Objective, TrainConfig, diverged, embed, learning_rate_schedule, train

GMM = parallel_pancakes(4, 2)
SMALL = dict(r=2, batch_size=32, steps=20, log_every=10)


def _dcl(params, x, x_pos, hparams, config, data):
    z, zp = embed(params, x, config), embed(params, x_pos, config)
    logits = z @ zp.T / hparams["temperature"]
    off = jnp.where(jnp.eye(z.shape[0], dtype=bool), -jnp.inf, logits)
    return jnp.mean(logsumexp(off, axis=1) - hparams["alpha"] * jnp.diagonal(logits))


DCL = Objective("dcl", _dcl, hparams={"alpha": (1.0, 0.0, 10.0, False)})


def test_a_users_objective_trains_over_its_own_traced_hyper_parameter_compiling_once():
    cfg = TrainConfig(loss=DCL, **SMALL)
    fn = chex.assert_max_traces(lambda a: train(jax.random.PRNGKey(0), GMM, {"alpha": a}, cfg), n=1)
    chex.clear_trace_counter()
    grid = jax.jit(jax.vmap(fn))
    out = grid(jnp.array([0.0, 1.0, 2.0, 11.0]))
    out = grid(jnp.array([0.5, 1.5, 3.0, 4.0]))  # another grid: no retrace
    assert out.params["A"].shape == (4, 4, 2)
    flags = jax.vmap(diverged)(grid(jnp.array([0.5, 11.0, -1.0, jnp.nan])))
    assert flags.tolist() == [False, True, True, True]  # out of range when traced: NaN, flagged
    with pytest.raises(ValueError, match=r"alpha must be in \[0.0, 10.0\]"):
        train(jax.random.PRNGKey(0), GMM, {"alpha": 11.0}, cfg)
    with pytest.raises(ValueError, match="unknown hyper-parameter 'beta'"):
        train(jax.random.PRNGKey(0), GMM, {"beta": 1.0}, cfg)
    # α changes the result: the value is really used
    one = train(jax.random.PRNGKey(0), GMM, {"alpha": 0.2}, cfg).params["A"]
    two = train(jax.random.PRNGKey(0), GMM, {"alpha": 2.0}, cfg).params["A"]
    assert not np.allclose(one, two)


def test_objectives_are_checked_when_built():
    with pytest.raises(ValueError, match="hyper-parameter 'delta' is built in"):
        Objective("x", _dcl, hparams={"delta": (0.5, 0.0, 1.0, False)})
    with pytest.raises(ValueError, match=r"must be \(default, low, high, low_open\)"):
        Objective("x", _dcl, hparams={"alpha": (1.0, 0.0)})
    with pytest.raises(ValueError, match="alpha must be in"):
        Objective("x", _dcl, hparams={"alpha": (20.0, 0.0, 10.0, False)})
    with pytest.raises(ValueError, match="loss must be callable"):
        Objective("x", "not a function")


def test_builtin_losses_take_the_same_public_route():
    assert all(isinstance(o, Objective) and o.name == n for n, o in OBJECTIVES.items())
    by_name = train(jax.random.PRNGKey(1), GMM, {"delta": 0.5}, TrainConfig(loss="infonce", **SMALL))
    by_object = train(jax.random.PRNGKey(1), GMM, {"delta": 0.5}, TrainConfig(loss=OBJECTIVES["infonce"], **SMALL))
    np.testing.assert_array_equal(by_name.params["A"], by_object.params["A"])


def test_optimizer_and_schedule_are_the_users_choice():
    key, hp = jax.random.PRNGKey(2), {"delta": 1.0, "learning_rate": 0.1}
    adam = train(key, GMM, hp, TrainConfig(**SMALL))
    sgd = train(key, GMM, hp, TrainConfig(optimizer=optax.sgd, **SMALL))
    assert not np.allclose(adam.params["A"], sgd.params["A"])
    # the default schedule is optax's cosine decay, recorded at each block's last step
    cfg = TrainConfig(**SMALL)
    want = optax.cosine_decay_schedule(0.1, cfg.steps, alpha=cfg.final_lr_fraction)
    np.testing.assert_allclose(adam.history["learning_rate"], [want(9), want(19)], rtol=1e-6)
    # a callable schedule: (peak, steps) -> optax schedule
    warm = TrainConfig(schedule=lambda peak, steps: optax.linear_schedule(0.0, peak, steps), **SMALL)
    out = train(key, GMM, hp, warm)
    np.testing.assert_allclose(out.history["learning_rate"], [0.1 * 9 / 20, 0.1 * 19 / 20], rtol=1e-6)
    np.testing.assert_allclose(learning_rate_schedule(warm, 0.1)(10), 0.05, rtol=1e-6)
    # a ready transformation keeps its own rate: no rate to record
    fixed = train(key, GMM, {"delta": 1.0}, TrainConfig(optimizer=optax.sgd(0.01), **SMALL))
    assert "learning_rate" not in fixed.history and np.all(np.isfinite(fixed.params["A"]))
    with pytest.raises(ValueError, match="learning_rate"):  # a rate it would not use: refused, not ignored
        train(key, GMM, hp, TrainConfig(optimizer=optax.sgd(0.01), **SMALL))
    with pytest.raises(ValueError, match="optimizer must be an optax optimizer factory"):
        train(key, GMM, hp, TrainConfig(optimizer="adam", **SMALL))
    with pytest.raises(ValueError, match="schedule must be one of"):
        train(key, GMM, hp, TrainConfig(schedule="linear", **SMALL))


@flax.struct.dataclass
class _Blobs:
    direction: jax.Array
    dim: int = flax.struct.field(pytree_node=False, default=3)

    def pairs(self, key, n, hparams):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        s = jnp.where(jax.random.bernoulli(k1, 0.5, (n, 1)), 1.0, -1.0)
        s_pos = jnp.where(jax.random.bernoulli(k2, hparams["delta"], (n, 1)), s, -s)
        return (s * self.direction + jax.random.normal(k3, (n, self.dim)),
                s_pos * self.direction + jax.random.normal(k4, (n, self.dim)))


def test_a_users_data_source_trains_like_a_mixture():
    blobs = _Blobs(jnp.array([3.0, 0.0, 0.0]))
    assert isinstance(blobs, PairSource)
    cfg = TrainConfig(r=1, batch_size=128, steps=200, log_every=50)
    out = jax.jit(lambda b: train(jax.random.PRNGKey(3), b, {"delta": 1.0}, cfg))(blobs)  # a pytree argument
    a = np.asarray(out.params["A"][:, 0])
    assert abs(a[0]) / np.linalg.norm(a) > 0.99
    with pytest.raises(ValueError, match="trains on a GMM, a Dataset or a PairSource"):
        train(jax.random.PRNGKey(3), object(), {}, cfg)


def test_map_grid_returns_tidy_rows_compiles_once_and_resumes(tmp_path):
    cfg = TrainConfig(loss=DCL, **SMALL)
    fisher = fisher_subspace(GMM)

    def cell(c):
        out = train(jax.random.PRNGKey(c["seed"]), GMM, {"alpha": c["alpha"], "delta": c["delta"]}, cfg, fisher)
        return {"capture": out.history["fisher_capture"][-1], "A": out.params["A"]}

    counted = chex.assert_max_traces(cell, n=1)
    chex.clear_trace_counter()
    axes = {"alpha": [0.5, 1.0], "delta": [0.0, 1.0], "seed": [0, 1, 2]}
    lines = []
    rows = map_grid(counted, axes, ranges=trainer_ranges(cfg), chunk_size=4, progress=lines.append)
    assert len(rows) == 12 and len(lines) == 3  # 3 chunks of 4, one compilation
    assert [(r["alpha"], r["delta"], r["seed"]) for r in rows[:4]] == [(0.5, 0.0, 0), (0.5, 0.0, 1), (0.5, 0.0, 2),
                                                                      (0.5, 1.0, 0)]
    assert isinstance(rows[0]["capture"], float) and rows[0]["A"].shape == (4, 2)
    single = train(jax.random.PRNGKey(2), GMM, {"alpha": 1.0, "delta": 1.0}, cfg, fisher)
    np.testing.assert_allclose(rows[11]["A"], single.params["A"], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"alpha must be in \[0.0, 10.0\], got 12.0"):
        map_grid(cell, {"alpha": [1.0, 12.0], "seed": [0]}, ranges=trainer_ranges(cfg))
    with pytest.raises(ValueError, match="needs a fingerprint"):
        map_grid(cell, axes, out_dir=tmp_path)
    first = map_grid(cell, axes, ranges=trainer_ranges(cfg), out_dir=tmp_path, fingerprint={"v": 1}, chunk_size=4)
    stats_lines = []
    again = map_grid(cell, axes, ranges=trainer_ranges(cfg), out_dir=tmp_path, fingerprint={"v": 1}, resume=True,
                     progress=stats_lines.append)
    assert [r["capture"] for r in again] == [r["capture"] for r in first]
    with pytest.raises(ValueError, match="different config"):
        map_grid(cell, axes, ranges=trainer_ranges(cfg), out_dir=tmp_path, fingerprint={"v": 2}, resume=True)
    with pytest.raises(ValueError, match="also axis names"):
        map_grid(lambda c: {"seed": c["seed"] * 1.0}, {"seed": [0]})


@pytest.mark.slow
def test_a_users_objective_runs_through_the_comparison_cell_and_the_engine():
    cfg = TrainConfig(loss=DCL, **SMALL)
    prepare_fn, train_fn, evaluate_fn = make_compare_cell(lambda cell: GMM, cfg, num_baseline=100, num_eval=100)
    spec = Sweep(train_fn, evaluate_fn, {"alpha": (0.5, 1.0), "seed": (0,)}, prepare_fn=prepare_fn,
                 ranges=trainer_ranges(cfg))
    grid, out = run_grid(spec)
    assert set(out["metrics"]) == {"pca", "lda", "oracle", "init", "dcl"}
    assert not np.allclose(out["projectors"]["dcl"][0], out["projectors"]["dcl"][1])  # α reached the trainer


def test_one_top_level_package(tmp_path):
    """A user's own experiments/ or benchmarks/ folder shadows nothing; gmmssl.losses is
    there after import gmmssl; the package ships py.typed."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("MINE = True\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("MINE = True\n")
    code = ("import gmmssl, experiments; from gmmssl.cli import main; assert experiments.MINE; "
            "assert callable(gmmssl.losses.infonce); raise SystemExit(main(['list']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert "pancakes" in out.stdout
    assert (Path(gmmssl.__file__).parent / "py.typed").exists()
    assert gmmssl.experiments.__name__ == "gmmssl.experiments"


def test_the_api_reference_is_generated_from_the_current_code():
    from gmmssl import apidoc

    committed = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    assert committed == apidoc.generate(), "docs/api.md is stale: run python -m gmmssl.apidoc"
    assert "map_grid" in committed and "class Objective" in committed


@pytest.mark.slow
def test_a_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """The built distribution holds one top-level package and works from any directory."""
    import shutil
    import zipfile

    from tiny import TINY

    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    shutil.copytree(repo, src, ignore=shutil.ignore_patterns(".venv", ".git", "results", ".pytest_cache", "build",
                                                             "*.egg-info", ".hypothesis", "__pycache__"))
    # built with the test environment's setuptools (the test extra pins pyproject's build floor),
    # not in a fresh isolated environment: 2 s instead of 6
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(src), "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("gmmssl-*.whl"))
    top = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    assert top == {"gmmssl"}, top
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (f"import gmmssl, gmmssl.experiments; assert gmmssl.__file__.startswith({str(site)!r}), gmmssl.__file__; "
            f"from gmmssl.cli import main; assert main(['list']) == 0; "
            f"raise SystemExit(main(['run', 'pancakes', '--out', 'out', *{TINY!r}]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "out" / "verdict.json").exists() and "zoo" in run.stdout


def test_plots_select_agg_once_and_keep_a_backend_the_user_chose(tmp_path):
    """gmmssl.plots imports pyplot lazily; Agg is selected on first use only, so saving a
    figure never switches back a backend the user chose afterwards."""
    import matplotlib

    from gmmssl import plots

    plt = plots.plt
    assert matplotlib.get_backend().lower() == "agg"
    try:
        matplotlib.use("svg")
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        assert plots.save(fig, tmp_path / "f.png").exists()
        assert matplotlib.get_backend().lower() == "svg"
    finally:
        matplotlib.use("Agg")


def test_the_docs_pandas_comes_with_an_extra():
    """The docs' tables use pandas, which the library itself does not need: the
    ``analysis`` extra installs it (the guide says which extra each section needs)."""
    from importlib.metadata import metadata

    meta = metadata("gmmssl")
    assert "analysis" in meta.get_all("Provides-Extra")
    assert any(r.startswith("pandas") and 'extra == "analysis"' in r for r in meta.get_all("Requires-Dist"))
    assert not any(r.startswith("pandas") and "extra ==" not in r for r in meta.get_all("Requires-Dist"))
