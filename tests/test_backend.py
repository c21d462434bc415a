"""The CPU's measured choices apply on the CPU only; the accelerators' paths give the same
numbers (checked here on the CPU through gmmssl.backend.measured_on, on small programs:
batched linear algebra on the CPU can deadlock only when several calls run at once)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl import backend, fisher, metrics, sweep
from gmmssl.gmm import HeteroGMM, hetero_gmm
from gmmssl.losses import infonce


def test_the_cpu_choices_follow_the_backend():
    assert jax.default_backend() == "cpu"
    assert backend.cpu_measures() and backend.fused_low_rank() and not backend.batched_linalg()
    with backend.measured_on("gpu"):
        assert not backend.cpu_measures() and not backend.fused_low_rank() and backend.batched_linalg()
        with backend.measured_on("cpu"):
            assert backend.cpu_measures()
        assert not backend.cpu_measures()
    assert backend.cpu_measures()
    with pytest.raises(ValueError, match="backend must be"):
        with backend.measured_on("cuda"):
            pass


def _jaxpr(fn, *args):
    return str(jax.make_jaxpr(fn)(*args))


def test_infonce_uses_the_fused_kernel_on_the_cpu_only_with_the_same_value_and_gradient():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    z, zp = jax.random.normal(k1, (32, 2)), jax.random.normal(k2, (32, 2))

    def value_and_grad(z, zp):  # a new function each time: traces are cached per function
        return jax.value_and_grad(lambda a: infonce(a, zp, temperature=0.5, symmetric=True))(z)

    cpu = value_and_grad(z, zp)
    assert "low_rank_logsumexp" in _jaxpr(lambda *a: value_and_grad(*a), z, zp)
    with backend.measured_on("gpu"):
        assert "low_rank_logsumexp" not in _jaxpr(lambda *a: value_and_grad(*a), z, zp)
        other = value_and_grad(z, zp)
    np.testing.assert_allclose(other[0], cpu[0], rtol=1e-5)
    np.testing.assert_allclose(other[1], cpu[1], rtol=1e-4, atol=1e-6)


def test_per_component_linear_algebra_is_vmapped_off_the_cpu_with_the_same_numbers():
    gmm = hetero_gmm(jax.random.PRNGKey(1), 5, 3, heterogeneity=0.5)
    x = jax.random.normal(jax.random.PRNGKey(2), (50, 5))
    a = jax.random.normal(jax.random.PRNGKey(3), (5, 2))

    def everything():
        h = HeteroGMM(gmm.means, gmm.component_covs, gmm.weights)
        return {"chols": h.chols, "posterior": metrics.bayes_log_posterior(x @ a, h, a),
                "sufficient": fisher.sufficient_subspace(h, 2),
                "drawn": hetero_gmm(jax.random.PRNGKey(4), 5, 3, heterogeneity=0.5).component_covs}

    cpu = everything()
    # on the CPU one Cholesky per component (5 × 5), off it one batched call (3 × 5 × 5)
    assert "f32[3,5,5] = cholesky" not in _jaxpr(lambda: everything())
    with backend.measured_on("gpu"):
        assert "f32[3,5,5] = cholesky" in _jaxpr(lambda: everything())
        other = everything()
    for k in cpu:
        np.testing.assert_allclose(other[k] if k != "sufficient" else jnp.abs(other[k]),
                                   cpu[k] if k != "sufficient" else jnp.abs(cpu[k]), rtol=2e-4, atol=2e-5, err_msg=k)


def test_the_sweep_maps_cells_off_the_cpu_with_vmap_and_chunks_by_the_budget_alone():
    axes = {"x": [float(i) for i in range(70)], "seed": [0]}

    def rows(lines):
        return sweep.map_grid(lambda c: {"y": c["x"] * 2.0}, axes, progress=lines.append,
                              score_fn=lambda c, out: {"y": out["y"], "z": jnp.sum(jnp.arange(3.0) * c["x"])})

    cpu_lines, other_lines = [], []
    cpu = rows(cpu_lines)
    with backend.measured_on("gpu"):
        other = rows(other_lines)
    # 70 cells: two chunks of 35 under the CPU's 64-cell cap, one chunk of 70 elsewhere
    assert "chunk 2/2, 70/70 cells" in cpu_lines[-1] and "chunk 1/1, 70/70 cells" in other_lines[-1]
    assert [(r["y"], r["z"]) for r in other] == [(r["y"], r["z"]) for r in cpu] == \
        [(2.0 * i, 3.0 * i) for i in range(70)]


def test_map_linalg_loops_maps_or_vmaps():
    xs = jnp.arange(6.0).reshape(3, 2)
    for unroll in (False, True):
        np.testing.assert_array_equal(backend.map_linalg(lambda v: v * 2.0, xs, unroll=unroll), xs * 2.0)
    with backend.measured_on("tpu"):
        np.testing.assert_array_equal(backend.map_linalg(lambda v, w: v + w, xs, xs), xs * 2.0)
    assert "scan" in _jaxpr(lambda: backend.map_linalg(jnp.linalg.cholesky, jnp.stack([jnp.eye(2)] * 3)))  # lax.map
