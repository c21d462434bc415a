r"""Projectors: the linear map z = xA of the theory, or a non-linear one (beyond the paper),
an MLP followed by a linear head, z = f(x)·A.

The MLP is a ``flax.nnx`` module (the current flax API). Training code stays functional:
parameters are plain nested dicts (``nnx.to_pure_dict``), so they pass through ``jit``,
``vmap``, ``lax.scan``, optax and the sweep engine like the linear A, and the module is
rebuilt from its static description (d, hidden widths, activation) when applied.

Parameters: ``{"A": (d, r)}`` for a linear projector; ``{"mlp": {...}, "A": (h, r)}`` for
an MLP with hidden widths (h₁, …, h) — A is then the linear head on the last hidden layer.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gmmssl._validate import check_choice, check_int

__all__ = ["ACTIVATIONS", "MLP", "apply_mlp", "check_hidden", "embed", "init_mlp", "jacobian_energy"]

ACTIVATIONS = {"gelu": nnx.gelu, "relu": nnx.relu, "tanh": jnp.tanh}


class MLP(nnx.Module):
    """Hidden layers x -> act(x W₁ + b₁) -> … -> act(· W_L + b_L), (n, d) -> (n, h_L).

    Weights are LeCun-normal (flax's default), biases zero.
    """

    def __init__(self, d: int, hidden: Sequence[int], activation: str = "gelu", *, rngs: nnx.Rngs):
        widths = (d, *hidden)
        self.layers = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in zip(widths[:-1], widths[1:])])
        self.activation = activation

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for layer in self.layers:
            x = act(layer(x))
        return x


def check_hidden(hidden, activation: str = "gelu") -> tuple[int, ...]:
    """Validates the hidden widths (a tuple of ints >= 1, possibly empty) and the activation."""
    if not isinstance(hidden, (tuple, list)):
        raise ValueError(f"hidden must be a tuple of layer widths, got {hidden!r}")
    check_choice("activation", activation, ACTIVATIONS)
    return tuple(check_int(f"hidden[{i}]", h, low=1) for i, h in enumerate(hidden))


def init_mlp(key, d: int, hidden: Sequence[int], activation: str = "gelu") -> dict:
    """Fresh MLP parameters as a plain nested dict (vmappable over keys)."""
    _, state = nnx.split(MLP(d, tuple(hidden), activation, rngs=nnx.Rngs(params=key)))
    return nnx.to_pure_dict(state)


def apply_mlp(params: dict, x, d: int, hidden: Sequence[int], activation: str = "gelu"):
    """The MLP's hidden representation of x (n, d) -> (n, hidden[-1])."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: MLP(d, tuple(hidden), activation, rngs=nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)(x)


def embed(params: dict, x, hidden: Sequence[int] = (), activation: str = "gelu"):
    """z = xA (linear, ``hidden`` empty) or z = MLP(x)·A; x (n, d) -> (n, r)."""
    if hidden:
        x = apply_mlp(params["mlp"], x, x.shape[-1], hidden, activation)
    return x @ params["A"]


def jacobians(params: dict, x, hidden: Sequence[int] = (), activation: str = "gelu"):
    """The embedding's Jacobians J(x) = ∂z/∂x at the points x (n, d): (n, r, d)."""
    return jax.vmap(jax.jacfwd(lambda p: embed(params, p[None, :], hidden, activation)[0]))(x)


def jacobian_share(jac, basis, cov=None):
    r"""Mean over the points of :math:`\|J F\|_F^2 / \|J\|_F^2` for Jacobians ``jac``
    (n, r, d) (see :func:`jacobian_energy`); ``cov`` whitens first. Takes the Jacobians
    so that several shares of one network cost one Jacobian."""
    if cov is not None:
        chol = jnp.linalg.cholesky(cov)
        basis = jnp.linalg.qr(chol.T @ basis)[0]
        jac = jac @ chol
    num = jnp.sum((jac @ basis) ** 2, axis=(1, 2))
    return jnp.mean(num / jnp.maximum(jnp.sum(jac ** 2, axis=(1, 2)), 1e-30))


def jacobian_energy(params: dict, x, basis, hidden: Sequence[int] = (), activation: str = "gelu", cov=None):
    r"""Mean over the points of :math:`\|J(x)F\|_F^2 / \|J(x)\|_F^2`, the fraction of the
    embedding's Jacobian J(x) = ∂z/∂x (r×d) that acts on the subspace with orthonormal
    basis F (d, m): 1 when J's row space lies in span(F), about m/d for a J whose entries
    are i.i.d. in the coordinates where the share is taken. In whitened coordinates (with
    ``cov``) a map that is random in x's coordinates is not: its share depends on Σ_T
    (an untrained network scored 0.005–0.09 on parallel pancakes and 0.35–0.80 on random
    mixtures, m/d = 0.125; experiments/nonlinear.py).

    With ``cov`` (d, d) (the data's covariance, Σ_T), the fraction is taken in whitened
    coordinates y = L⁻¹x (Σ_T = LLᵀ): J becomes JL and the subspace LᵀS_F (orthonormalized).
    That version is invariant to any invertible linear change of x, as S_F itself is;
    the Euclidean one (``cov`` None) is not: it depends on how x is scaled along
    directions. For a linear projector J = Aᵀ everywhere.

    Args:
      x: (n, d) points; basis: (d, m) orthonormal; cov: optional (d, d) covariance.
    """
    return jacobian_share(jacobians(params, x, hidden, activation), basis, cov)
