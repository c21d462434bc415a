"""Each backend makes its own choices (gmmssl.backend), and the other backend's path gives
the same numbers. On the CPU the accelerators' path is run through
gmmssl.backend.measured_on("gpu") on small programs (batched linear algebra on the CPU
can deadlock only when several calls run at once); on an accelerator the CPU's path is
refused (its fused kernel is never compiled there), so these tests check the
accelerator's own choices and compare its numbers with a float64 reference instead."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl import backend, fisher, metrics, sweep
from gmmssl.gmm import HeteroGMM, hetero_gmm
from gmmssl.losses import infonce

ON_CPU = jax.default_backend() == "cpu"


def test_the_suites_own_environment_starts_jax():
    """Every XLA flag and JAX option the suite sets (conftest.py), inherited by the CLI
    subprocesses the tests start, is one the installed jax and jaxlib know: XLA ends a
    process on an unknown XLA flag, so a subprocess with this environment imports jax and
    runs an op."""
    probe = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; "
                            "print(jax.default_backend(), float(jnp.ones(3) @ jnp.ones(3)))"],
                           env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, (f"jax does not start with the suite's environment (XLA_FLAGS="
                                   f"{os.environ.get('XLA_FLAGS', '')!r}): {probe.stderr.strip()[-1500:]}")
    assert probe.stdout.split() == [jax.default_backend(), "3.0"]


def test_the_choices_follow_the_backend():
    assert backend.cpu_measures() == ON_CPU and backend.fused_low_rank() == ON_CPU
    assert backend.batched_linalg() == (not ON_CPU)
    with backend.measured_on("gpu"):
        assert not backend.cpu_measures() and not backend.fused_low_rank() and backend.batched_linalg()
        if ON_CPU:
            with backend.measured_on("cpu"):
                assert backend.cpu_measures()
            assert not backend.cpu_measures()
    assert backend.cpu_measures() == ON_CPU
    with pytest.raises(ValueError, match="backend must be"):
        with backend.measured_on("cuda"):
            pass


def test_the_cpus_choices_are_refused_on_an_accelerator(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match=r"measured_on\('cpu'\) is refused on the gpu backend"):
        with backend.measured_on("cpu"):
            pass
    with backend.measured_on("tpu"):  # another accelerator's choices stay allowed
        assert backend.batched_linalg()


def _jaxpr(fn, *args):
    return str(jax.make_jaxpr(fn)(*args))


def _infonce_reference(z, zp, temperature):
    """Symmetric dot InfoNCE and its gradient in z, in float64 numpy (the logits matrix)."""
    z, zp = np.asarray(z, np.float64), np.asarray(zp, np.float64)
    logits = z @ zp.T / temperature
    b = len(z)

    def softmax(m):
        e = np.exp(m - m.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    lse_r = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    lse_c = np.log(np.exp(logits.T - logits.T.max(1, keepdims=True)).sum(1)) + logits.T.max(1)
    value = np.mean(0.5 * (lse_r + lse_c) - np.diag(logits))
    # d/dlogits of the mean, then chain through logits = z zp^T / tau
    g_logits = 0.5 * (softmax(logits) + softmax(logits.T).T) / b - np.eye(b) / b
    return value, g_logits @ zp / temperature


def test_infonce_uses_the_fused_kernel_on_the_cpu_only_with_the_same_value_and_gradient():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    z, zp = jax.random.normal(k1, (32, 2)), jax.random.normal(k2, (32, 2))

    def value_and_grad(z, zp):  # a new function each time: traces are cached per function
        return jax.value_and_grad(lambda a: infonce(a, zp, temperature=0.5, symmetric=True))(z)

    here = value_and_grad(z, zp)
    assert ("low_rank_logsumexp" in _jaxpr(lambda *a: value_and_grad(*a), z, zp)) == ON_CPU
    if ON_CPU:
        with backend.measured_on("gpu"):
            assert "low_rank_logsumexp" not in _jaxpr(lambda *a: value_and_grad(*a), z, zp)
            other = value_and_grad(z, zp)
        np.testing.assert_allclose(other[0], here[0], rtol=1e-5)
        np.testing.assert_allclose(other[1], here[1], rtol=1e-4, atol=1e-6)
    value, grad = _infonce_reference(z, zp, 0.5)
    np.testing.assert_allclose(here[0], value, rtol=1e-5)
    np.testing.assert_allclose(here[1], grad, rtol=1e-4, atol=1e-6)


def test_per_component_linear_algebra_is_vmapped_off_the_cpu_with_the_same_numbers():
    gmm = hetero_gmm(jax.random.PRNGKey(1), 5, 3, heterogeneity=0.5)
    x = jax.random.normal(jax.random.PRNGKey(2), (50, 5))
    a = jax.random.normal(jax.random.PRNGKey(3), (5, 2))

    def everything():
        h = HeteroGMM(gmm.means, gmm.component_covs, gmm.weights)
        return {"chols": h.chols, "posterior": metrics.bayes_log_posterior(x @ a, h, a),
                "sufficient": fisher.sufficient_subspace(h, 2),
                "drawn": hetero_gmm(jax.random.PRNGKey(4), 5, 3, heterogeneity=0.5).component_covs}

    here = everything()
    # on the CPU one Cholesky per component (5 × 5), off it one batched call (3 × 5 × 5)
    assert ("f32[3,5,5] = cholesky" in _jaxpr(lambda: everything())) == (not ON_CPU)
    np.testing.assert_allclose(here["chols"], np.linalg.cholesky(np.asarray(gmm.component_covs, np.float64)),
                               rtol=2e-4, atol=2e-5)
    if not ON_CPU:
        return
    with backend.measured_on("gpu"):
        assert "f32[3,5,5] = cholesky" in _jaxpr(lambda: everything())
        other = everything()
    for k in here:
        np.testing.assert_allclose(other[k] if k != "sufficient" else jnp.abs(other[k]),
                                   here[k] if k != "sufficient" else jnp.abs(here[k]), rtol=2e-4, atol=2e-5, err_msg=k)


def test_the_sweep_maps_cells_off_the_cpu_with_vmap_and_chunks_by_the_budget_alone():
    axes = {"x": [float(i) for i in range(70)], "seed": [0]}

    def rows(lines):
        return sweep.map_grid(lambda c: {"y": c["x"] * 2.0}, axes, progress=lines.append,
                              score_fn=lambda c, out: {"y": out["y"], "z": jnp.sum(jnp.arange(3.0) * c["x"])})

    expected = [(2.0 * i, 3.0 * i) for i in range(70)]
    here_lines, other_lines = [], []
    here = rows(here_lines)
    assert [(r["y"], r["z"]) for r in here] == expected
    # 70 cells: two chunks of 35 under the CPU's 64-cell cap, one chunk of 70 elsewhere
    # (on one device, or several: the chunk is then a multiple of their count)
    if ON_CPU and jax.device_count() == 1:
        assert "chunk 2/2, 70/70 cells" in here_lines[-1]
    if not ON_CPU and jax.device_count() == 1:
        assert "chunk 1/1, 70/70 cells" in here_lines[-1]
    if ON_CPU:
        with backend.measured_on("gpu"):
            other = rows(other_lines)
        assert "chunk 1/1, 70/70 cells" in other_lines[-1]
        assert [(r["y"], r["z"]) for r in other] == expected


def test_map_linalg_loops_maps_or_vmaps():
    xs = jnp.arange(6.0).reshape(3, 2)
    for unroll in (False, True):
        np.testing.assert_array_equal(backend.map_linalg(lambda v: v * 2.0, xs, unroll=unroll), xs * 2.0)
    with backend.measured_on("tpu"):
        np.testing.assert_array_equal(backend.map_linalg(lambda v, w: v + w, xs, xs), xs * 2.0)
        assert "scan" not in _jaxpr(lambda: backend.map_linalg(jnp.linalg.cholesky, jnp.stack([jnp.eye(2)] * 3)))
    # lax.map on the CPU, vmap elsewhere
    assert ("scan" in _jaxpr(lambda: backend.map_linalg(jnp.linalg.cholesky, jnp.stack([jnp.eye(2)] * 3)))) == ON_CPU


def _dot_precisions(jaxpr: str) -> set:
    """The precision of every dot_general in a printed jaxpr (nested ones included)."""
    import re

    found = set()
    for block in jaxpr.split("dot_general[")[1:]:
        params = re.split(r"\n\s*\]", block)[0]  # the eqn's parameters end on a line of their own
        match = re.search(r"precision=(\([^)]*\))", params)
        found.add(match.group(1) if match else "None")
    return found


def test_gmmssls_computations_run_at_float32_matmul_precision_and_a_users_own_code_at_jaxs(tmp_path):
    from gmmssl import exact
    from gmmssl.gmm import parallel_pancakes
    from gmmssl.train import TrainConfig, make_hparams, train

    gmm = parallel_pancakes(4, 2)
    a = jnp.ones((4, 2)) / 2.0
    cfg = TrainConfig(steps=2, log_every=1, batch_size=8)

    def ours():
        return _jaxpr(lambda: (train(jax.random.PRNGKey(0), gmm, make_hparams(delta=0.5), cfg).params["A"],
                               exact.exact_infonce(a, gmm, 0.5, level=3)))

    highest = "(Precision.HIGHEST, Precision.HIGHEST)"
    with jax.default_matmul_precision(None):  # JAX's own default (the suite sets "highest")
        assert backend.matmul_precision() == backend.DEFAULT_PRECISION == "highest"
        assert _dot_precisions(ours()) == {highest}
        assert _dot_precisions(_jaxpr(lambda m: m @ m.T, a)) == {"None"}  # the user's own code: untouched
        # a sweep records the precision it ran at; resuming under another is refused, naming it
        assert sweep.numerics()["matmul_precision"] == "highest"
        rows = sweep.map_grid(lambda c: {"y": jnp.ones((2, 2)) @ jnp.full((2, 2), c["x"])}, {"x": [1.0, 2.0]},
                              out_dir=tmp_path, fingerprint={"fn": "y"})
        assert [float(r["y"][0, 0]) for r in rows] == [2.0, 4.0]
        with jax.default_matmul_precision("default"):  # asked for: the chip's default, in gmmssl too
            assert backend.matmul_precision() == "default"
            assert _dot_precisions(ours()) == {"(Precision.DEFAULT, Precision.DEFAULT)"}
            with pytest.raises(ValueError, match=r"matmul_precision \('highest' -> 'default'\)"):
                sweep.map_grid(lambda c: {"y": c["x"]}, {"x": [1.0, 2.0]}, out_dir=tmp_path, resume=True,
                               fingerprint={"fn": "y"})
