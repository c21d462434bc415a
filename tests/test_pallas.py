"""The fused Pallas path of the in-batch contrastive losses (gmmssl.losses._pallas), run in
interpret mode on the CPU: the same value, gradient and JVP as the matmul path ("xla"),
each within float32 rounding of a float64 reference, jitted and vmapped, with and without
masks, for InfoNCE, CLIP, NT-Xent and DCL. Its speed is an accelerator's question
(benchmarks/README.md)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmssl import losses
from gmmssl.backend import contrastive_implementation

LOSSES = {"infonce": losses.infonce, "clip": losses.clip, "ntxent": losses.ntxent, "dcl": losses.dcl}
# (loss, B, r, τ, masked, reduction): every B and r of the issue at least once, both τ, masks on and off
CASES = [
    ("infonce", 7, 1, 0.05, False, "mean"),
    ("clip", 7, 2, 1.0, True, "none"),
    ("ntxent", 128, 2, 0.05, True, "mean"),
    ("dcl", 128, 16, 1.0, False, "none"),
    ("infonce", 513, 16, 1.0, True, "mean"),
    ("ntxent", 130, 128, 1.0, False, "mean"),
    ("clip", 130, 128, 0.05, False, "mean"),
    ("dcl", 513, 1, 0.05, True, "mean"),
]


def _inputs(b, r):
    k1, k2 = jax.random.split(jax.random.PRNGKey(b * 1000 + r))
    z = jax.random.normal(k1, (b, r))
    return z, z + 0.3 * jax.random.normal(k2, (b, r))


def _parts(name, impl, z, zp, tau, mask, reduction):
    """Value, gradient along both inputs, and the JVP along (zp, z), of the loss's sum."""
    def f(z, zp):
        return jnp.sum(LOSSES[name](z, zp, temperature=tau, mask=mask, reduction=reduction, implementation=impl))

    value = jax.jit(f)(z, zp)
    grads = jax.jit(jax.grad(f, (0, 1)))(z, zp)
    tangent = jax.jit(lambda z, zp: jax.jvp(f, (z, zp), (zp, z))[1])(z, zp)
    return [value, *grads, tangent]


@pytest.mark.parametrize("name, b, r, tau, masked, reduction", CASES)
def test_pallas_equals_the_matmul_path_to_float32_rounding(name, b, r, tau, masked, reduction):
    z, zp = _inputs(b, r)
    mask = (jnp.arange(b) % 3 != 1) if masked else None
    xla = _parts(name, "xla", z, zp, tau, mask, reduction)
    fused = _parts(name, "pallas", z, zp, tau, mask, reduction)
    with jax.enable_x64(True):  # the truth both are measured against
        exact = _parts(name, "xla", z.astype(jnp.float64), zp.astype(jnp.float64), tau, mask, reduction)
    for what, x, p, e in zip(("value", "grad z", "grad z_pos", "jvp"), xla, fused, exact):
        x, p, e = (np.asarray(v, np.float64) for v in (x, p, e))
        scale = max(1.0, float(np.max(np.abs(e))))
        # as close to the float64 value as the matmul path, within a few float32 roundings
        bound = 4 * float(np.max(np.abs(x - e))) + 1e-5 * scale
        assert float(np.max(np.abs(p - e))) <= bound, (what, float(np.max(np.abs(p - e))), bound)
        np.testing.assert_allclose(p, x, rtol=0, atol=bound + float(np.max(np.abs(x - e))), err_msg=what)


def test_pallas_under_vmap_and_a_traced_mask():
    z, zp = _inputs(32, 2)
    zs, zps = jnp.stack([z, 2 * z]), jnp.stack([zp, zp])
    masks = jnp.stack([jnp.ones(32, bool), jnp.arange(32) < 20])

    def loss(impl):
        return jax.jit(jax.vmap(lambda z, zp, m: losses.infonce(z, zp, mask=m, implementation=impl)))

    np.testing.assert_allclose(loss("pallas")(zs, zps, masks), loss("xla")(zs, zps, masks), rtol=2e-6)
    grads = [jax.vmap(jax.grad(lambda z, zp, m: losses.ntxent(z, zp, mask=m, implementation=impl)))(zs, zps, masks)
             for impl in ("pallas", "xla")]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    # a traced mask keeping no row: NaN, as on the matmul path
    none = jnp.zeros((1, 32), bool)
    assert np.isnan(loss("pallas")(zs[:1], zps[:1], none)).all() and np.isnan(loss("xla")(zs[:1], zps[:1], none)).all()


def test_the_implementation_is_chosen_as_documented():
    on_cpu = jax.default_backend() == "cpu"
    assert contrastive_implementation(None, 2) == ("low_rank" if on_cpu else "xla")
    assert contrastive_implementation(None, 16) == "xla"
    assert contrastive_implementation(None, 2, low_rank=False) == "xla"
    assert contrastive_implementation("pallas", 2) == "pallas"
    with pytest.raises(ValueError, match="implementation must be None or one of"):
        losses.infonce(jnp.ones((4, 2)), jnp.ones((4, 2)), implementation="cuda")
    with pytest.raises(ValueError, match="'low_rank' is InfoNCE's and CLIP's"):
        losses.ntxent(jnp.ones((4, 2)), jnp.ones((4, 2)), implementation="low_rank")
    for name in LOSSES:  # one pair has no negative: refused on every path
        with pytest.raises(ValueError, match="needs B ≥ 2"):
            LOSSES[name](jnp.ones((1, 2)), jnp.ones((1, 2)), implementation="pallas")
