import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gmmssl.losses import infonce, normalize


def _pair(b=16, r=4, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(k1, (b, r)), jax.random.normal(k2, (b, r))


@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
def test_infonce_equals_softmax_cross_entropy(temperature):
    z, zp = _pair()
    logits = z @ zp.T / temperature
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(16)).mean()
    np.testing.assert_allclose(infonce(z, zp, temperature=temperature), ref, rtol=1e-5)


def test_infonce_symmetric_and_cosine():
    z, zp = _pair()
    logits = z @ zp.T
    labels = jnp.arange(16)
    both = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                  + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
    np.testing.assert_allclose(infonce(z, zp, symmetric=True), both, rtol=1e-5)
    zn = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    zpn = zp / jnp.linalg.norm(zp, axis=1, keepdims=True)
    ref = optax.softmax_cross_entropy_with_integer_labels(zn @ zpn.T / 0.5, labels).mean()
    np.testing.assert_allclose(infonce(z, zp, temperature=0.5, similarity="cosine"), ref, rtol=1e-5)
    # cosine similarity is invariant to rescaling rows
    np.testing.assert_allclose(infonce(3 * z, 0.2 * zp, similarity="cosine"), infonce(z, zp, similarity="cosine"), rtol=1e-5)


def test_zero_embeddings_are_nan_safe_with_cosine():
    z = jnp.zeros((4, 3))
    val, grad = jax.value_and_grad(lambda a: infonce(a, a, similarity="cosine"))(z)
    assert np.isfinite(val) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(val, np.log(4.0), rtol=1e-6)
    assert np.all(np.isfinite(normalize(z)))


def test_infonce_is_stable_at_low_temperature_and_large_norm():
    z, zp = _pair()
    for args in [dict(temperature=1e-3), dict(temperature=1.0)]:
        val, grad = jax.value_and_grad(lambda a: infonce(1e3 * a, zp, **args))(z)
        assert np.isfinite(val) and np.all(np.isfinite(grad))


def test_infonce_jit_vmap_grad():
    z, zp = _pair()
    zs, zps = jnp.stack([z, 2 * z]), jnp.stack([zp, zp])
    taus = jnp.array([0.5, 1.0])
    vals = jax.jit(jax.vmap(lambda a, b, t: infonce(a, b, temperature=t)))(zs, zps, taus)
    np.testing.assert_allclose(vals[0], infonce(z, zp, temperature=0.5), rtol=1e-5)
    g = jax.grad(infonce)(z, zp)
    assert g.shape == z.shape


def test_infonce_checks_shapes_and_arguments():
    z, zp = _pair()
    with pytest.raises(AssertionError, match="must be"):
        infonce(z[:, 0], zp[:, 0])
    with pytest.raises(AssertionError, match="same"):
        infonce(z, zp[:8])
    with pytest.raises(ValueError, match="similarity must be one of"):
        infonce(z, zp, similarity="l2")
    with pytest.raises(ValueError, match="temperature"):
        infonce(z, zp, temperature=0.0)
