"""The sweep engine: a grid of cells trained in one compiled, vmapped call, chunked,
sharded over every device, resumable.

A grid is a dict of *dynamic axes* (name -> sequence of values: δ, seed, learning rate,
temperature, ξ, ...). Their cartesian product, first axis slowest, is flattened into one
grid axis of G cells; each cell is a dict of scalars, traced, so the whole grid compiles
once. (Static choices, such as d, r, K, B, the loss or the number of steps, change
shapes or code: the experiment runner loops over them outside, one compilation each.)

A :class:`Sweep` has three phases per cell:

* ``prepare_fn(cell) -> data`` (build the cell's mixture, its Fisher basis: linear
  algebra) is mapped cell by cell with ``lax.map`` on each device;
* ``train_fn(cell, data) -> trained`` is vmapped over the chunk (the hot path: every
  optimizer step of every cell advances together);
* ``evaluate_fn(cell, data, trained) -> outputs`` (a nested dict of arrays) is mapped
  cell by cell (baselines and metrics).

Linear algebra is kept out of the vmapped phase on purpose: see :mod:`gmmssl.evaluate`
for the jaxlib deadlock that batched LAPACK calls can cause on the CPU.

Memory: the grid is processed in chunks of ``chunk_size`` cells, chosen by
:func:`choose_chunk_size` from :func:`estimate_cell_bytes` and a budget (default a
quarter of the available memory), so a grid of any size runs. The last chunk is padded,
so every chunk reuses the one compilation.

Devices: each chunk's grid axis is sharded over all devices with a 1-D
``jax.sharding.Mesh`` (axis name "grid"); chunk sizes are multiples of the device count.
Across hosts the same code runs after ``jax.distributed.initialize()``: the mesh then
spans every host's devices, outputs are gathered with ``process_allgather`` and only
process 0 writes files.

Resumability: each finished chunk is written atomically (temporary file, then rename) to
``chunk_NNNNN.npz`` in the output folder, beside ``sweep.json`` (the grid, the chunk
size and the caller's fingerprint). With ``resume=True`` finished chunks are loaded, not
recomputed; a fingerprint that differs is refused, naming the keys that differ.
"""
from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gmmssl.results import atomic_write

__all__ = ["Sweep", "choose_chunk_size", "default_budget_bytes", "estimate_cell_bytes", "flatten_grid",
           "run_grid"]


def _no_data(cell):
    return {}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid to run: the phases of a cell, the dynamic axes, and the estimated memory of
    one cell (bytes; see :func:`estimate_cell_bytes`)."""

    train_fn: Callable[[dict, Any], Any]
    evaluate_fn: Callable[[dict, Any, Any], dict]
    axes: dict
    cell_bytes: int = 1 << 20
    prepare_fn: Callable[[dict], Any] = _no_data


def estimate_cell_bytes(d: int, r: int, batch_size: int, *, num_param_matrices: int = 1,
                        num_negatives: int | None = None, itemsize: int = 4) -> int:
    """Bytes one cell holds at once while training (the chunk's memory is G times this).

    The terms, in elements of ``itemsize`` bytes:

    * 3·B·N: the B×N logits, their softmax and its gradient (N = B in-batch negatives;
      0 for the population loss, which has no B×N matrix);
    * 6·B·d: the two views of the batch, their embeddings' inputs and gradients;
    * 6·B·r: embeddings, their gradients and the predictions;
    * 5·d·r per parameter matrix: parameters, gradients, two Adam moments, the update.

    Checked in the tests against XLA's own ``memory_analysis()`` of the compiled
    training step: the estimate is an upper bound within a factor of 4.
    """
    n = batch_size if num_negatives is None else num_negatives
    elements = 3 * batch_size * n + 6 * batch_size * d + 6 * batch_size * r + 5 * d * r * num_param_matrices
    return int(elements * itemsize)


def default_budget_bytes() -> int:
    """A quarter of the memory available now (Linux /proc/meminfo), else 2 GiB."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 4
    except (OSError, KeyError, ValueError):
        return 2 << 30


# On the CPU, chunks of more than this many cells ran about 2× slower per model (pancakes,
# B = 512: 1,343–1,464 model-steps/s for chunks of 8–64 cells, 744 for 128, 660 for 4,096;
# benchmarks/README.md), so the CPU default stops there; --chunk-size overrides it.
CPU_MAX_CHUNK = 64


def choose_chunk_size(cell_bytes: int, grid_size: int, num_devices: int = 1,
                      budget_bytes: int | None = None, max_cells: int | None = None) -> int:
    """Cells per chunk: a multiple of the device count, at least one cell per device, within
    the budget (and ``max_cells``), and as even as the fewest chunks that fit allow (the
    last chunk is padded)."""
    budget = default_budget_bytes() if budget_bytes is None else budget_bytes
    fit = max(1, int(budget // max(cell_bytes, 1)))
    if max_cells is not None:
        fit = min(fit, max_cells)
    per_device = max(1, min(fit // num_devices, math.ceil(grid_size / num_devices)))
    # balance the chunks: the last one is padded to the chunk size, so 32 cells with room
    # for 30 run as 2 × 16, not 30 + (2 padded to 30)
    num_chunks = math.ceil(grid_size / (per_device * num_devices))
    per_device = math.ceil(math.ceil(grid_size / num_devices) / num_chunks)
    return per_device * num_devices


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


def flatten_tree(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict of arrays -> {"a/b/c": numpy array} (keys joined with "/")."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if "/" in str(k):
            raise ValueError(f"output key {k!r} must not contain '/'")
        if isinstance(v, dict):
            out.update(flatten_tree(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def _as_dict(tree):
    """NamedTuples (such as TrainResult) to dicts, so outputs are nested dicts."""
    if hasattr(tree, "_asdict"):
        tree = tree._asdict()
    if isinstance(tree, dict):
        return {k: _as_dict(v) for k, v in tree.items()}
    return tree


def _diff_keys(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} ({old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r})" for k in keys
            if old.get(k) != new.get(k)]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(total, 1))
    return "#" * filled + "." * (width - filled)


def run_grid(spec: Sweep, *, out_dir=None, resume: bool = False, fingerprint: dict | None = None,
             chunk_size: int | None = None, budget_bytes: int | None = None,
             progress: Callable[[str], None] | None = None, label: str = ""):
    """Runs both phases of ``spec`` on every cell of its grid.

    Args:
      spec: the :class:`Sweep`.
      out_dir: folder for the chunk files and sweep.json (None: keep everything in memory).
      resume: load finished chunks from ``out_dir`` instead of recomputing them.
      fingerprint: JSON-able description of what produced the grid (the resolved config);
        a resume under a different fingerprint raises ValueError naming the keys.
      chunk_size: cells per compiled call (default: from the memory estimate and budget).
      budget_bytes: memory budget for one chunk (default :func:`default_budget_bytes`).
      progress: callback receiving one line per finished chunk (chunks done, cells/s, ETA).
      label: prefix of the progress lines (the static configuration).

    Returns:
      (grid, outputs): grid is {axis: (G,) numpy array}; outputs is evaluate_fn's nested
      dict with a leading (G,) axis, as numpy arrays.
    """
    grid = flatten_grid(spec.axes)
    size = len(next(iter(grid.values())))
    devices = jax.devices()
    num_devices = len(devices)
    manifest = {"axes": _jsonable({k: list(v) for k, v in spec.axes.items()}),
                "fingerprint": _jsonable(fingerprint or {})}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):
            stale.unlink()
        path = out / "sweep.json"
        if resume and path.exists():
            old = json.loads(path.read_text())
            if old["fingerprint"] != manifest["fingerprint"] or old["axes"] != manifest["axes"]:
                diffs = _diff_keys(old["fingerprint"], manifest["fingerprint"])
                diffs += [] if old["axes"] == manifest["axes"] else ["the grid axes"]
                raise ValueError(f"--resume: {out} was written by a different config; differing: "
                                 + "; ".join(diffs))
            chunk_size = old["chunk_size"]
        elif not resume:
            for old_chunk in out.glob("chunk_*.npz"):
                old_chunk.unlink()
    if chunk_size is None:
        chunk_size = choose_chunk_size(spec.cell_bytes, size, num_devices, budget_bytes,
                                       max_cells=CPU_MAX_CHUNK if jax.default_backend() == "cpu" else None)
    chunk = max(num_devices, (int(chunk_size) // num_devices) * num_devices)
    if out is not None:
        manifest["chunk_size"] = chunk
        atomic_write(out / "sweep.json", json.dumps(manifest, indent=2) + "\n")

    mesh = Mesh(np.array(devices), ("grid",))
    grid_sharding = NamedSharding(mesh, PartitionSpec("grid"))
    split_sharding = NamedSharding(mesh, PartitionSpec("grid", None))

    train = jax.jit(jax.vmap(spec.train_fn))

    def per_cell(fn):
        """fn mapped cell by cell (lax.map) on each device's share of the chunk."""

        def split(x):
            x = x.reshape((num_devices, -1) + x.shape[1:])
            return jax.lax.with_sharding_constraint(x, split_sharding if x.ndim > 1 else grid_sharding)

        def mapped(*args):
            outs = jax.vmap(lambda *a: jax.lax.map(lambda b: fn(*b), a))(*jax.tree_util.tree_map(split, args))
            return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), outs)

        return jax.jit(mapped)

    prepare = per_cell(spec.prepare_fn)
    evaluate_chunk = per_cell(lambda c, d, t: _as_dict(spec.evaluate_fn(c, d, t)))
    evaluate = evaluate_chunk
    num_chunks = math.ceil(size / chunk)
    pieces = []
    start_time = time.perf_counter()
    computed = 0
    for i in range(num_chunks):
        lo, hi = i * chunk, min((i + 1) * chunk, size)
        chunk_file = out / f"chunk_{i:05d}.npz" if out is not None else None
        if resume and chunk_file is not None and chunk_file.exists():
            with np.load(chunk_file) as data:
                pieces.append(_unflatten({k: data[k] for k in data.files}))
        else:
            idx = np.arange(lo, lo + chunk) % size  # pad the last chunk by wrapping around
            cells = {n: jax.device_put(_as_device_array(v[idx]), grid_sharding) for n, v in grid.items()}
            data = prepare(cells)
            result = evaluate(cells, data, train(cells, data))
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils
                result = multihost_utils.process_allgather(result, tiled=True)
            flat = {k: v[: hi - lo] for k, v in flatten_tree(result).items()}
            if chunk_file is not None and jax.process_index() == 0:
                buf = io.BytesIO()
                np.savez(buf, **flat)
                atomic_write(chunk_file, buf.getvalue())
            pieces.append(_unflatten(flat))
            computed += hi - lo
        if progress is not None:
            elapsed = time.perf_counter() - start_time
            rate = computed / elapsed if elapsed > 0 and computed else 0.0
            left = size - hi
            eta = f"{left / rate:.0f}s" if rate > 0 else "?"
            progress(f"{label}[{_bar(i + 1, num_chunks)}] chunk {i + 1}/{num_chunks}, {hi}/{size} cells, "
                     f"{rate:.1f} cells/s, {elapsed:.1f}s elapsed, ETA {eta}")
    outputs = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *pieces)
    return grid, outputs
