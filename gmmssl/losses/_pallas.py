r"""The in-batch contrastive losses' log-sum-exp as fused Pallas kernels: the B×B logits
are formed tile by tile on chip, with an online log-sum-exp (as flash attention does),
and never written to memory.

For anchors a (n, r), candidates b (n, r) and a column mask c (n,):

.. math::
   \mathrm{lse}_i = \log\sum_{j \in V(i)} e^{a_i\cdot b_j},\qquad
   P_{ij} = e^{a_i\cdot b_j - \mathrm{lse}_i}\ (j \in V(i)),

V(i) the columns j with c_j > 0, less j = i (``exclude_self``) and less i's other view
(``pair_half`` = h: j = i + h or i − h; NT-Xent and DCL on [z; z⁺]). Three kernels:

* :func:`_forward`: lse and P·b in one pass over the column tiles (P·b is what the
  tangent needs along the anchors);
* :func:`_transposed`: Pᵀ·u in one pass over the row tiles (what the tangent needs along
  the candidates);
* both under :func:`lse_sum` (the scalar Σ_i w_i lse_i, a ``jax.custom_jvp``): its
  tangent Σ_i dw_i lse_i + Σ_i w_i da_i·(Pb)_i + Σ_j db_j·(Pᵀ(w⊙a))_j applies the
  kernels to primal values only, so it is linear in the tangents through elementwise
  products: forward mode (``jax.jvp``) and reverse mode (its transpose) both work, and
  reverse mode, too, never forms the B×B matrix.

:func:`lse_rows` gives the (n,) values themselves (``reduction="none"``); its tangent
along b needs P applied to a tangent, which JAX cannot transpose through a Pallas call,
so that one term is formed with XLA (the (n, n) matrix P, in memory): the per-example
values are fused, their gradient along the candidates is not.

Kernels run compiled on a GPU (Triton) and TPU (Mosaic), and in interpret mode
elsewhere (``interpret=True``: the CPU runs the kernel body as JAX operations, for
correctness checks only, slowly). Rows and the embedding width are padded (to tile
multiples, the width to 16 at least: the tile matmuls' smallest shape on a GPU); padded
rows and columns are masked out.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

__all__ = ["lse_rows", "lse_sum"]

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)  # a finite stand-in for −inf inside the kernels


def _interpret() -> bool:
    return jax.default_backend() not in ("gpu", "tpu")


def _blocks(n: int) -> int:
    """Rows (and columns) per tile: 128, or the padded batch when smaller (a multiple of 16)."""
    return min(128, max(16, 16 * math.ceil(n / 16)))


def _valid(rows, cols, c, n: int, exclude_self: bool, pair_half):
    """(tm, tn) booleans: column j counts for anchor i (``rows``, ``cols``: global indices)."""
    ok = (c[None, :] > 0) & (cols[None, :] < n) & (rows[:, None] < n)
    if exclude_self:
        ok &= rows[:, None] != cols[None, :]
    if pair_half is not None:
        other = jnp.where(rows < pair_half, rows + pair_half, rows - pair_half)
        ok &= cols[None, :] != other[:, None]
    return ok


def _forward_kernel(a_ref, b_ref, c_ref, lse_ref, pb_ref, *, n, tile, num_tiles, exclude_self, pair_half):
    i = pl.program_id(0)
    a = a_ref[...].astype(jnp.float32)  # (tile, rp): this program's anchors
    rows = i * tile + jnp.arange(tile)

    def body(j, carry):
        m, l, acc = carry
        b = b_ref[pl.ds(j * tile, tile), :].astype(jnp.float32)
        c = c_ref[pl.ds(j * tile, tile)]
        ok = _valid(rows, j * tile + jnp.arange(tile), c, n, exclude_self, pair_half)
        s = jnp.where(ok, jnp.dot(a, b.T, preferred_element_type=jnp.float32), _NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.where(ok, jnp.exp(s - m_new[:, None]), 0.0)
        scale = jnp.exp(m - m_new)
        return m_new, scale * l + jnp.sum(p, axis=1), scale[:, None] * acc + jnp.dot(p, b)

    init = (jnp.full((tile,), _NEG, jnp.float32), jnp.zeros((tile,), jnp.float32), jnp.zeros(a.shape, jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, num_tiles, body, init)
    live = l > 0
    lse_ref[...] = jnp.where(live, m + jnp.log(jnp.where(live, l, 1.0)), 0.0)
    pb_ref[...] = jnp.where(live[:, None], acc / jnp.where(live, l, 1.0)[:, None], 0.0)


def _transposed_kernel(a_ref, b_ref, c_ref, lse_ref, u_ref, out_ref, *, n, tile, num_tiles, exclude_self,
                       pair_half):
    j = pl.program_id(0)
    b = b_ref[...].astype(jnp.float32)  # (tile, rp): this program's candidates
    cols = j * tile + jnp.arange(tile)
    c = c_ref[pl.ds(j * tile, tile)]

    def body(i, acc):
        a = a_ref[pl.ds(i * tile, tile), :].astype(jnp.float32)
        lse = lse_ref[pl.ds(i * tile, tile)]
        u = u_ref[pl.ds(i * tile, tile), :].astype(jnp.float32)
        rows = i * tile + jnp.arange(tile)
        ok = _valid(rows, cols, c, n, exclude_self, pair_half) & (c_ref[pl.ds(i * tile, tile)] > 0)[:, None]
        s = jnp.dot(a, b.T, preferred_element_type=jnp.float32)
        p = jnp.where(ok, jnp.exp(jnp.where(ok, s - lse[:, None], 0.0)), 0.0)
        return acc + jnp.dot(p.T, u)

    out_ref[...] = jax.lax.fori_loop(0, num_tiles, body, jnp.zeros(out_ref.shape, jnp.float32))


def _pad(a, b, c, tile: int):
    n, r = a.shape
    rp = max(16, 16 * math.ceil(r / 16))
    np_ = tile * math.ceil(n / tile)
    pad2 = lambda x: jnp.pad(x.astype(jnp.float32), ((0, np_ - n), (0, rp - r)))  # noqa: E731
    return pad2(a), pad2(b), jnp.pad(c.astype(jnp.float32), (0, np_ - n)), np_, rp


def _forward(a, b, c, exclude_self: bool, pair_half):
    """(lse (n,), P·b (n, r)) in float32."""
    n, r = a.shape
    tile = _blocks(n)
    ap, bp, cp, np_, rp = _pad(a, b, c, tile)
    kernel = functools.partial(_forward_kernel, n=n, tile=tile, num_tiles=np_ // tile, exclude_self=exclude_self,
                               pair_half=pair_half)
    lse, pb = pl.pallas_call(
        kernel, grid=(np_ // tile,),
        in_specs=[pl.BlockSpec((tile, rp), lambda i: (i, 0)), pl.BlockSpec((np_, rp), lambda i: (0, 0)),
                  pl.BlockSpec((np_,), lambda i: (0,))],
        out_specs=[pl.BlockSpec((tile,), lambda i: (i,)), pl.BlockSpec((tile, rp), lambda i: (i, 0))],
        out_shape=[jax.ShapeDtypeStruct((np_,), jnp.float32), jax.ShapeDtypeStruct((np_, rp), jnp.float32)],
        interpret=_interpret())(ap, bp, cp)
    return lse[:n], pb[:n, :r]


def _transposed(a, b, c, lse, u, exclude_self: bool, pair_half):
    """Pᵀ·u (n, r') in float32: Σ_i P_ij u_i over the anchors i with c_i > 0."""
    n, r = a.shape
    tile = _blocks(n)
    ap, bp, cp, np_, rp = _pad(a, b, c, tile)
    ru = u.shape[1]
    rup = max(16, 16 * math.ceil(ru / 16))
    up = jnp.pad(u.astype(jnp.float32), ((0, np_ - n), (0, rup - ru)))
    lp = jnp.pad(lse.astype(jnp.float32), (0, np_ - n))
    kernel = functools.partial(_transposed_kernel, n=n, tile=tile, num_tiles=np_ // tile,
                               exclude_self=exclude_self, pair_half=pair_half)
    out = pl.pallas_call(
        kernel, grid=(np_ // tile,),
        in_specs=[pl.BlockSpec((np_, rp), lambda j: (0, 0)), pl.BlockSpec((tile, rp), lambda j: (j, 0)),
                  pl.BlockSpec((np_,), lambda j: (0,)), pl.BlockSpec((np_,), lambda j: (0,)),
                  pl.BlockSpec((np_, rup), lambda j: (0, 0))],
        out_specs=pl.BlockSpec((tile, rup), lambda j: (j, 0)),
        out_shape=jax.ShapeDtypeStruct((np_, rup), jnp.float32),
        interpret=_interpret())(ap, bp, cp, lp, up)
    return out[:n, :ru]


def _cast(x, like):
    return x.astype(jnp.result_type(like))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def lse_sum(a, b, c, w, exclude_self: bool = False, pair_half=None):
    """Σ_i w_i lse_i (a scalar): the weighted sum of the rows' log-sum-exps, fused, with a
    JVP that never forms the B×B matrix (module docstring). a, b (n, r); c, w (n,)."""
    lse, _ = _forward(a, b, c, exclude_self, pair_half)
    return _cast(jnp.sum(w * lse), a)


@lse_sum.defjvp
def _lse_sum_jvp(exclude_self, pair_half, primals, tangents):
    a, b, c, w = primals
    da, db, _, dw = tangents
    lse, pb = _forward(a, b, c, exclude_self, pair_half)
    ptu = _transposed(a, b, c, lse, w[:, None] * a, exclude_self, pair_half)
    out = _cast(jnp.sum(w * lse), a)
    tangent = jnp.sum(dw * lse) + jnp.sum(w[:, None] * da * pb) + jnp.sum(db * ptu)
    return out, _cast(tangent, a)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def lse_rows(a, b, c, exclude_self: bool = False, pair_half=None):
    """The (n,) log-sum-exps themselves, fused (0 for a row with no valid column); their
    tangent along b forms P with XLA (module docstring)."""
    return _cast(_forward(a, b, c, exclude_self, pair_half)[0], a)


@lse_rows.defjvp
def _lse_rows_jvp(exclude_self, pair_half, primals, tangents):
    a, b, c = primals
    da, db, _ = tangents
    lse, pb = _forward(a, b, c, exclude_self, pair_half)
    n = a.shape[0]
    idx = jnp.arange(n)
    ok = _valid(idx, idx, c, n, exclude_self, pair_half)
    p = jnp.where(ok, jnp.exp(jnp.where(ok, a @ b.T - lse[:, None], 0.0)), 0.0)  # XLA: (n, n) in memory
    tangent = jnp.sum(da * pb, axis=1) + jnp.sum(a * (p @ db), axis=1)
    return _cast(lse, a), _cast(tangent, a)
