"""The sweep engine: a grid of cells trained in one compiled, vmapped call.

A grid is a dict of *dynamic axes* (name -> sequence of values). Their cartesian
product, first axis slowest, is flattened into one grid axis of G cells; each cell is a
dict of scalars. A :class:`Sweep` has two phases per cell:

* ``train_fn(cell) -> trained`` is vmapped over the chunk (the hot path: all the
  optimizer steps of every cell advance together);
* ``evaluate_fn(cell, trained) -> outputs`` is mapped cell by cell with ``lax.map``
  (baselines and metrics; see :mod:`gmmssl.evaluate` for why not vmapped).

Each phase is jitted once; the grid is processed in chunks of ``chunk_size`` cells (the
last chunk is padded, so every chunk reuses the one compilation).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Sweep", "flatten_grid", "run_grid"]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid to run: the two phases of a cell and the dynamic axes."""

    train_fn: Callable[[dict], Any]
    evaluate_fn: Callable[[dict, Any], dict]
    axes: dict


def flatten_grid(axes: dict) -> dict[str, np.ndarray]:
    """Cartesian product of the axes, first axis slowest: {name: (G,) array}."""
    if not axes:
        raise ValueError("axes must name at least one dynamic axis")
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"axis {name!r} is empty; give it at least one value")
    names = list(axes)
    product = list(itertools.product(*(list(axes[n]) for n in names)))
    return {n: np.asarray([p[i] for p in product]) for i, n in enumerate(names)}


def _as_device_array(values: np.ndarray):
    if np.issubdtype(values.dtype, np.integer):
        return jnp.asarray(values, jnp.int32)
    return jnp.asarray(values, jnp.float32)


def run_grid(spec: Sweep, *, chunk_size: int | None = None,
             progress: Callable[[str], None] | None = None):
    """Runs both phases of ``spec`` on every cell of its grid.

    Args:
      spec: the :class:`Sweep`.
      chunk_size: cells per compiled call (default: the whole grid).
      progress: optional callback receiving one line per finished chunk.

    Returns:
      (grid, outputs): grid is {axis: (G,) numpy array}; outputs is evaluate_fn's pytree
      with a leading (G,) axis, as numpy arrays.
    """
    grid = flatten_grid(spec.axes)
    size = len(next(iter(grid.values())))
    chunk = size if chunk_size is None else max(1, min(int(chunk_size), size))
    train = jax.jit(jax.vmap(spec.train_fn))
    evaluate = jax.jit(lambda cells, trained: jax.lax.map(lambda a: spec.evaluate_fn(*a), (cells, trained)))
    pieces = []
    start_time = time.perf_counter()
    num_chunks = math.ceil(size / chunk)
    for i in range(num_chunks):
        lo, hi = i * chunk, min((i + 1) * chunk, size)
        idx = np.arange(lo, lo + chunk) % size  # pad the last chunk by wrapping around
        cells = {n: _as_device_array(v[idx]) for n, v in grid.items()}
        out = evaluate(cells, train(cells))
        pieces.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: hi - lo], out))
        if progress is not None:
            elapsed = time.perf_counter() - start_time
            progress(f"chunk {i + 1}/{num_chunks}: {hi}/{size} cells, {elapsed:.1f}s")
    outputs = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *pieces)
    return grid, outputs
