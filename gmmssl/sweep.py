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
Across processes (hosts, or several processes of one machine) the same code runs after
:func:`gmmssl.distributed.initialize`: the mesh then spans every process's devices,
outputs are gathered to every process with ``process_allgather``, and only process 0
reads and writes the output folder, every other process receiving the outcome of each
step (:func:`gmmssl.distributed.on_leader`).

Storage and resumability: each finished chunk is written atomically (temporary file,
then rename) to ``chunk_<first>-<end>.npz`` in the output folder. Beside its outputs it
holds the indices of the grid cells it covers and a digest of :func:`store_fingerprint`
(the grid axes, the caller's config, the float width, the float32 matmul precision, the
backend and the library versions); ``sweep.json`` holds the fingerprint itself, the
chunk size and, under "chunks", the sha256 of every chunk file's bytes, recorded
(sweep.json rewritten atomically) right after the chunk is written. With ``resume=True``
a stored cell is reused only when its file is listed in sweep.json with the sha256 of
its bytes as they are now, carries the fingerprint's digest, and its name, its cell
index and its arrays agree; anything else (a file changed or replaced after it was
written, one sweep.json does not list, such as a chunk whose run stopped before
recording it, a damaged, misplaced or foreign one) is set aside (``*.rejected``, one
line naming it and why) and its cells recomputed, never loaded onto other cells.
Resuming with another chunk size or device count reuses every cell whose chunk is fully
stored. A folder written under another fingerprint is refused with ``resume``, naming
what differs; without ``resume`` or ``overwrite`` a folder holding chunks is refused.

Axis values reach a cell as int32 (an axis of integers) or float32 (any other), whatever
the float width; values those cannot hold (an integer outside the int32 range, a float
beyond float32's finite range or so small it would become 0) are refused, naming the
axis and the value, and so are repeated values (they would duplicate cells).

Limits: the grid is refused before it is built when its cells' axis values alone would
exceed the memory budget, and so is a cell whose memory estimate (``Sweep.cell_bytes``),
times the devices of the smallest chunk, exceeds it; a chunk size above the grid is
clamped to it, one whose memory estimate exceeds the budget is refused;
``max_output_bytes`` and ``max_seconds`` stop (with :class:`GridTooLarge`, keeping the
finished chunks) a grid whose outputs or time would exceed them, measured on its first
chunks; a grid that has run longer than ``max_seconds`` is stopped at once, also in the
middle of a chunk (one process).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gmmssl import distributed
from gmmssl.backend import cpu_measures, map_linalg, matmul_precision
from gmmssl.results import atomic_write, read_json

__all__ = ["GridTooLarge", "Sweep", "choose_chunk_size", "default_budget_bytes", "diff_keys", "estimate_cell_bytes",
           "flatten_grid", "flatten_tree", "map_grid", "numerics", "run_grid", "source_digest", "store_fingerprint",
           "trainer_ranges", "xla_flags"]


def _no_data(cell):
    return {}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid to run: the phases of a cell, the dynamic axes, the estimated memory of
    one cell (bytes; see :func:`estimate_cell_bytes`) and the valid range of axes the
    trainer does not know: {name: :class:`gmmssl.train.HParam`} (the old tuples
    (low, high, low_open, high_open) are converted), or {name: reason} (a string) to
    refuse an axis with that reason (:func:`trainer_ranges` does, for a hyper-parameter
    its config does not use). A range with low > high is refused when the grid runs."""

    train_fn: Callable[[dict, Any], Any]
    evaluate_fn: Callable[[dict, Any, Any], dict]
    axes: dict
    cell_bytes: int = 1 << 20
    prepare_fn: Callable[[dict], Any] = _no_data
    ranges: Mapping[str, Any] = dataclasses.field(default_factory=dict)


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
    columns = {n: np.asarray(list(values)) for n, values in axes.items()}
    size = math.prod(len(c) for c in columns.values())
    out, inner = {}, size
    for name, column in columns.items():  # each value repeated for the cells of the faster axes, the block tiled
        inner //= len(column)
        out[name] = np.tile(np.repeat(column, inner), size // (len(column) * inner))
    return out


def _host_array(values: np.ndarray) -> np.ndarray:
    """A grid axis as the cells see it: int32 or float32 (whatever the float width)."""
    return np.asarray(values, np.int32 if np.issubdtype(values.dtype, np.integer) else np.float32)


def flatten_tree(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict of arrays -> {"a/b/c": numpy array} (keys joined with "/")."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if "/" in str(k) or str(k).startswith("#"):
            raise ValueError(f"output key {k!r} must not contain '/' or start with '#'")
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


def diff_keys(old: dict, new: dict) -> list[str]:
    """["key (old -> new)", ...] for every key whose value differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k} ({old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r})" for k in keys
            if old.get(k) != new.get(k)]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(total, 1))
    return "#" * filled + "." * (width - filled)


class GridTooLarge(ValueError):
    """A grid whose held outputs or estimated time exceed the caller's limits.

    ``in_flight`` is True when it was raised while a chunk was still computing (the time
    limit passed during it): the device finishes that computation in the background, and
    a program that exits now should do so without waiting for it (``os._exit``)."""

    in_flight = False


def _duration(seconds: float) -> str:
    """"42 s", "12.5 min" or "3.20 h"."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


HEARTBEAT_SECONDS = 60.0  # a progress line this often while one chunk computes


def _wait(result, *, started: float, max_seconds: float | None, say: Callable[[str], None], what: str) -> None:
    """Waits for a chunk's dispatched computation (JAX dispatches asynchronously) in Python,
    so that a signal interrupts the wait at once, not after the chunk; says "still
    computing" every :data:`HEARTBEAT_SECONDS`; raises :class:`GridTooLarge` (in_flight)
    once the grid has run longer than ``max_seconds`` with this chunk unfinished: its
    time then exceeds the limit whatever the estimate (one process only: the processes of
    a distributed run must stop together, at the estimate after a chunk)."""
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(result) if hasattr(leaf, "is_ready")]
    beat = time.perf_counter() + HEARTBEAT_SECONDS
    pause = 0.001
    while not all(leaf.is_ready() for leaf in leaves):
        time.sleep(pause)
        pause = min(2 * pause, 0.05)
        now = time.perf_counter()
        if max_seconds is not None and now - started > max_seconds and jax.process_count() == 1:
            err = GridTooLarge(f"the grid has run {_duration(now - started)}, above the limit of "
                               f"{_duration(max_seconds)}, with {what} unfinished; use fewer cells or "
                               f"steps, or confirm (--yes); finished chunks are kept for --resume")
            err.in_flight = True
            raise err
        if now >= beat:
            say(f"{what}: still computing, {now - started:.0f}s elapsed")
            beat += HEARTBEAT_SECONDS


_CELLS, _KEY = "#cells", "#key"  # reserved entries of a chunk file (output keys cannot start with "#")


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """sha256 (16 hex digits) of gmmssl's own source: every ``.py`` file of the installed
    packages gmmssl, gmmssl.losses and gmmssl.experiments, by relative path and content.
    A code change that keeps the version number changes the numbers all the same; this is
    part of :func:`numerics`, so resuming across such a change is refused. Read once per
    process."""
    import gmmssl
    import gmmssl.experiments

    h = hashlib.sha256()
    for root in sorted({Path(gmmssl.__file__).parent, Path(gmmssl.experiments.__file__).parent}):
        for path in sorted(root.rglob("*.py")):
            h.update(f"{root.name}/{path.relative_to(root).as_posix()}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def numerics() -> dict:
    """What changes the numbers beside the config: the float width, the float32 matmul
    precision (:func:`gmmssl.backend.matmul_precision`), the backend, the library versions,
    gmmssl's own source (:func:`source_digest`), the XLA flags (:func:`xla_flags`) and
    whether XLA optimizes (``jax_disable_most_optimizations``) and the contrastive losses'
    default code path (:func:`default_contrastive_implementation`): part of every stored chunk's
    and run's fingerprint. With the cells per device (the chunk's width per device, which
    :func:`run_grid` keeps when it resumes) these fix a cell's numbers bit for bit."""
    import jaxlib

    import gmmssl

    return {"x64": bool(jax.config.jax_enable_x64), "matmul_precision": matmul_precision(),
            "backend": jax.default_backend(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "gmmssl": gmmssl.__version__, "source": source_digest(),
            "xla_flags": xla_flags(), "optimized": not jax.config.read("jax_disable_most_optimizations"),
            "contrastive_implementation": default_contrastive_implementation()}


def default_contrastive_implementation() -> str:
    """The in-batch contrastive losses' default code path on this backend, in words
    (:func:`gmmssl.backend.contrastive_implementation` with implementation=None)."""
    from gmmssl.backend import contrastive_implementation
    from gmmssl.losses import SMALL_RANK

    low, high = (contrastive_implementation(None, r, small_rank=SMALL_RANK) for r in (1, SMALL_RANK + 1))
    return low if low == high else f"{low} (r <= {SMALL_RANK}), else {high}"


def xla_flags() -> str:
    """The XLA flags of this process (``XLA_FLAGS``), sorted, without the host device count
    (which changes how many devices there are, not what a device computes): they can change
    the compiled programs, so :func:`numerics` records them."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return " ".join(sorted(f for f in flags if not f.startswith("--xla_force_host_platform_device_count")))


def store_fingerprint(axes: dict, fingerprint: dict | None = None) -> dict:
    """What a stored chunk must match to be reused: the grid axes, the caller's fingerprint
    (the resolved config), and what changes the numbers beside them (:func:`numerics`)."""
    return {"axes": _jsonable({k: list(v) for k, v in axes.items()}),
            "fingerprint": _jsonable(fingerprint or {}),
            "numerics": numerics()}


def _digest(manifest: dict) -> str:
    text = json.dumps({k: manifest[k] for k in ("axes", "fingerprint", "numerics")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _chunk_name(lo: int, hi: int) -> str:
    return f"chunk_{lo:09d}-{hi:09d}.npz"


def _chunk_bytes(lo: int, hi: int, flat: dict, key: str) -> bytes:
    """The file of a chunk: its outputs, its cell indices and the fingerprint's digest."""
    buf = io.BytesIO()
    np.savez(buf, **flat, **{_CELLS: np.arange(lo, hi), _KEY: np.asarray(key)})
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_chunk(path: Path, key: str, size: int, digests: dict | None):
    """(cells, flat outputs) of a stored chunk, or (None, reason) when it cannot be used.
    ``digests``: sweep.json's {file name: sha256 of its bytes} (None: sweep.json has none)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    if digests is None:
        return None, "no content digest to check it against (no sweep.json, or one written by an older gmmssl)"
    if path.name not in digests:
        return None, ("sweep.json does not list it (the run stopped before recording it, or it was put here "
                      "from elsewhere): its content cannot be checked")
    if _sha256(raw) != digests[path.name]:
        return None, "its content differs from what was written (the sha256 sweep.json recorded does not match)"
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            flat = {k: np.array(data[k]) for k in data.files}  # read everything: CRC errors surface here
    except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed, never trusted
        return None, f"unreadable ({type(err).__name__}: {err})"
    cells, stored_key = flat.pop(_CELLS, None), flat.pop(_KEY, None)
    if cells is None or stored_key is None:
        return None, "written by an older gmmssl (no cell index or fingerprint)"
    if str(stored_key) != key:
        return None, "written by another grid, config or library version"
    if cells.ndim != 1 or cells.size == 0 or cells.min() < 0 or cells.max() >= size \
            or len(np.unique(cells)) != cells.size:
        return None, "its cell index is invalid for this grid"
    if path.name != _chunk_name(int(cells[0]), int(cells[-1]) + 1) or \
            not np.array_equal(cells, np.arange(cells[0], cells[-1] + 1)):
        return None, "misplaced: its name does not match the cells it holds"
    if any(v.shape[:1] != cells.shape for v in flat.values()):
        return None, "its arrays do not have one row per cell"
    return cells, flat


def _load_finished(out: Path, key: str, size: int, say: Callable[[str], None], digests: dict | None):
    """({cell: (flat, row)} of every usable stored cell, {file name: sha256} of the files
    used); unusable files are set aside as ``*.rejected`` (kept for inspection, never
    loaded) with one line each. ``digests``: as in :func:`_read_chunk`."""
    have: dict[int, tuple[dict, int]] = {}
    trusted: dict[str, str] = {}
    reference = None
    for path in sorted(out.glob("chunk_*.npz")):
        cells, flat = _read_chunk(path, key, size, digests)
        if cells is not None:
            layout = {k: (v.dtype.str, v.shape[1:]) for k, v in flat.items()}
            reference = layout if reference is None else reference
            if layout != reference:
                cells, flat = None, "its outputs differ in names, shapes or dtypes from the other chunks"
        if cells is None:
            say(f"{path}: {flat}; set aside as {path.name}.rejected, its cells are recomputed")
            os.replace(path, path.with_name(path.name + ".rejected"))
            continue
        trusted[path.name] = digests[path.name]
        for row, cell in enumerate(cells.tolist()):
            have[cell] = (flat, row)
    return have, trusted


_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)


def _bytes_text(n: float) -> str:
    """A byte count for people: "512 KiB", "3.2 GiB", "8.4e+09 GiB"."""
    for unit, scale in (("KiB", 2**10), ("MiB", 2**20)):
        if n < 1024 * scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**30:.3g} GiB"


def _check_grid_size(axes: dict, budget: int) -> None:
    """Refuses, from the axes' lengths alone, a grid whose cells' axis values and outputs
    cannot fit the budget, before anything (the flattened grid) is built."""
    lengths = {name: len(values) for name, values in axes.items()}
    size = math.prod(lengths.values())
    # per cell at least: 8 bytes per axis (the flattened grid) and 8 for its outputs (one value)
    need = size * 8 * (len(lengths) + 1)
    if need > budget:
        shape = " x ".join(f"{n} {k}" for n, k in lengths.items())
        raise ValueError(f"the grid has {size} cells ({shape}): their axis values and outputs alone need at least "
                         f"{_bytes_text(need)}, above the memory budget of {_bytes_text(budget)} (--budget-mb); "
                         f"use fewer values")


def _validate_axes(axes: dict, ranges: dict) -> None:
    for name, values in axes.items():
        if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
            raise ValueError(f"axis {name!r} must be a sequence of numbers (a list, tuple or 1-D array), got "
                             f"{values!r}")
        values = list(values)
        if any(np.ndim(v) != 0 for v in values):
            raise ValueError(f"axis {name!r} must be a flat sequence of numbers, one per cell; got "
                             f"{values[:3]!r}: give each axis its own name")
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
            for v in values:  # an axis of integers reaches the cells as int32: nothing may wrap around
                if not _INT32.min <= int(v) <= _INT32.max:
                    raise ValueError(f"axis {name!r}: the value {int(v)} does not fit the int32 a grid cell holds "
                                     f"([{_INT32.min}, {_INT32.max}]; it would reach the cell as "
                                     f"{(int(v) + 2**31) % 2**32 - 2**31})")
        arr = np.asarray(values)
        if arr.dtype.kind not in "iufb":
            raise ValueError(f"axis {name!r} must hold numbers, got {values[:3]!r}")
        if not np.all(np.isfinite(arr.astype(np.float64))):
            raise ValueError(f"axis {name!r} must hold finite numbers, got {values!r}")
        if name == "seed" and (arr.dtype.kind not in "iu" or np.any(arr < 0)):
            raise ValueError(f"axis 'seed' must hold non-negative integers, got {values!r}")
        if arr.dtype.kind not in "iu":  # reaches the cells as float32: nothing may become inf or 0
            for v in arr.astype(np.float64).tolist():
                h = float(np.float32(v)) if abs(v) <= _FLOAT32_MAX else math.copysign(math.inf, v)
                if not math.isfinite(h) or (h == 0.0 and v != 0.0):
                    raise ValueError(f"axis {name!r}: the value {v!r} is outside the range of the float32 a grid "
                                     f"cell holds (nonzero magnitudes {_FLOAT32_TINY:.3g} to {_FLOAT32_MAX:.4g}; "
                                     f"it would reach the cell as {h!r})")
        host = _host_array(arr)  # the values as the cells see them
        seen: dict = {}
        for i, h in enumerate(host.tolist()):
            j = seen.setdefault(h, i)
            if j != i:
                same = "twice" if values[i] == values[j] else f"twice ({values[j]!r} and {values[i]!r} are one float32)"
                raise ValueError(f"axis {name!r} lists the value {values[j]!r} {same}; give each value once "
                                 f"(a repeated value duplicates its cells and counts them twice in summaries)")
        if name in ranges:
            for value in arr.tolist():  # the first offending value, named
                ranges[name].check(name, value)


def _axis_ranges(ranges: Mapping) -> dict:
    """The trainer's built-in ranges and ``ranges`` ({name: HParam, an old (low, high,
    low_open, high_open) tuple, or a string: the axis is refused}), as HParams, checked."""
    from gmmssl.train import as_hparam

    return {**trainer_ranges(), **{name: spec if isinstance(spec, str) else as_hparam(name, spec, axis=True)
                                   for name, spec in dict(ranges).items()}}


def _refuse_unused_axes(axes: Mapping, ranges: Mapping) -> None:
    for name in axes:
        if isinstance(ranges.get(name), str):
            raise ValueError(f"axis {name!r} is refused: {ranges[name]}")


def trainer_ranges(config=None) -> dict:
    """The valid ranges of the trainer's hyper-parameters as axis ranges for
    :class:`Sweep` and :func:`map_grid`: ``{name: HParam}`` (:class:`gmmssl.train.HParam`),
    the built-in ones and, given a :class:`gmmssl.train.TrainConfig`, those of its
    objective. Given a config, its static choices are checked first
    (:meth:`gmmssl.train.TrainConfig.validate`: steps and log_every, ...), so a sweep
    that cannot train is refused before anything is traced; and a hyper-parameter the
    config does not use (:func:`gmmssl.train.unused_hparams`: learning_rate with a ready
    ``optax.GradientTransformation``) maps to the reason, which refuses an axis over it."""
    from gmmssl.train import HPARAM_RANGES, hparam_ranges, unused_hparams

    if config is None:
        return dict(HPARAM_RANGES)
    config.validate()
    return {**hparam_ranges(config), **unused_hparams(config)}


_hparam_ranges = trainer_ranges


def map_grid(fn: Callable[[dict], Any], axes: Mapping[str, Any], *, score_fn: Callable | None = None,
             ranges: Mapping[str, tuple] | None = None, cell_bytes: int = 1 << 20, out_dir=None,
             resume: bool = False, overwrite: bool = False, fingerprint: dict | None = None,
             chunk_size: int | None = None, budget_bytes: int | None = None,
             progress: Callable[[str], None] | bool | None = None) -> list[dict]:
    """A sweep from a script: ``fn`` on every cell of a grid, as tidy rows.

    The grid is the cartesian product of ``axes`` (name -> values; first axis slowest).
    Each cell is a dict of traced scalars, so the grid compiles once: ``fn`` is vmapped
    over chunks of cells (the hot path: training), then the optional ``score_fn(cell, out)``
    runs cell by cell (``lax.map``: put eigendecompositions, SVDs and k-means there; see
    :mod:`gmmssl.evaluate` for why not under vmap). Chunking, device sharding, progress
    and resume are those of :func:`run_grid` (stored chunks in ``out_dir``).

    Args:
      fn: cell -> nested dict of arrays (traceable; seed a key with
        ``jax.random.PRNGKey(cell["seed"])``).
      axes: {name: sequence of numbers}, each value once; integers within int32, other
        values within float32's range (as the cells receive them); an axis named "seed" must
        hold non-negative ints.
      score_fn: optional (cell, fn's output) -> nested dict, mapped cell by cell; its
        output replaces fn's.
      ranges: valid ranges of your own axes, {name: :class:`gmmssl.train.HParam`} (or
        the old (low, high, low_open, high_open) tuples) (the trainer's hyper-parameters
        are always checked; pass :func:`trainer_ranges` of your config for its objective's
        own, and to refuse an axis the config does not use).
      cell_bytes: memory estimate of one cell (chunk sizing; :func:`estimate_cell_bytes`).
      progress: a callable receiving one line per chunk, True for lines on stderr, or None.
      out_dir, resume, overwrite, chunk_size, budget_bytes: as in :func:`run_grid`.
      fingerprint: as in :func:`run_grid`; required with ``out_dir`` (describe what fn
        computes: resuming reuses only chunks stored under the same fingerprint).

    Returns:
      One dict per cell: the axis values, then every output leaf under its "/"-joined
      path (scalars as Python numbers, larger leaves as numpy arrays):
      ``pandas.DataFrame(rows)`` is the table.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> rows = map_grid(lambda c: {"y": c["x"] * 2.0 + c["seed"]}, {"x": [0.5, 1.0], "seed": [0, 1]})
      >>> [(r["x"], r["seed"], r["y"]) for r in rows]
      [(0.5, 0, 1.0), (0.5, 1, 2.0), (1.0, 0, 2.0), (1.0, 1, 3.0)]
    """
    if not callable(fn) or (score_fn is not None and not callable(score_fn)):
        raise ValueError("map_grid: fn (and score_fn, when given) must be callable")
    if out_dir is not None and not fingerprint:
        raise ValueError("map_grid with out_dir needs a fingerprint: a JSON-able description of what fn computes "
                         "(its config, a version), so that resuming never reuses chunks another fn wrote")
    if progress is True:
        import sys

        progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    axes = dict(axes)
    axis_ranges = _axis_ranges(dict(ranges or {}))
    _refuse_unused_axes(axes, axis_ranges)  # as run_grid does, before the values are checked
    _validate_axes(axes, axis_ranges)
    fn = _checked(fn, "fn(cell)", list(axes))
    score_fn = None if score_fn is None else _checked(score_fn, "score_fn(cell, out)", list(axes))
    score = (lambda cell, data, out: out) if score_fn is None else (lambda cell, data, out: score_fn(cell, out))
    spec = Sweep(lambda cell, data: fn(cell), score, dict(axes), cell_bytes, ranges=dict(ranges or {}))
    grid, outputs = run_grid(spec, out_dir=out_dir, resume=resume, overwrite=overwrite, fingerprint=fingerprint,
                             chunk_size=chunk_size, budget_bytes=budget_bytes, progress=progress or None)
    flat = flatten_tree(_as_dict(outputs))
    clash = sorted(set(flat) & set(grid))
    if clash:
        raise ValueError(f"map_grid: output names {clash} are also axis names; rename them")
    size = len(next(iter(grid.values())))
    rows = []
    for g in range(size):
        row = {name: values[g].item() for name, values in grid.items()}
        row.update({k: (v[g].item() if v[g].ndim == 0 else v[g]) for k, v in flat.items()})
        rows.append(row)
    return rows


def _checked(fn: Callable, what: str, names) -> Callable:
    """``fn`` as the engine traces it (once: nothing is traced beforehand), with an error it
    raises, or an output that is not a dict of arrays, turned into one line naming it."""
    def wrapped(*args):
        try:
            out = fn(*args)
        except Exception as err:  # noqa: BLE001 - the user's code: one line naming it, the error chained
            lines = str(err).strip().splitlines()
            raise ValueError(f"map_grid: {what} failed on a cell of traced scalars ({', '.join(names)}): "
                             f"{type(err).__name__}: {lines[0][:300] if lines else ''}") from err
        if not isinstance(out, Mapping):
            shown = f"an array of shape {tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
            raise ValueError(f"map_grid: {what} must return a dict of arrays (output name -> value), got {shown}: "
                             f"return, say, {{'value': ...}}")
        for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
            if not (hasattr(leaf, "dtype") or isinstance(leaf, (int, float, bool, np.number))):
                raise ValueError(f"map_grid: {what} must return arrays or numbers, got {type(leaf).__name__} at "
                                 f"{jax.tree_util.keystr(path)}")
        return out

    return wrapped


def run_grid(spec: Sweep, *, out_dir=None, resume: bool = False, overwrite: bool = False,
             fingerprint: dict | None = None, chunk_size: int | None = None, budget_bytes: int | None = None,
             max_output_bytes: int | None = None, max_seconds: float | None = None,
             progress: Callable[[str], None] | None = None, label: str = "", stats: dict | None = None):
    """Runs the phases of ``spec`` on every cell of its grid.

    Args:
      spec: the :class:`Sweep`.
      out_dir: folder for the chunk files and sweep.json (None: keep everything in memory).
      resume: reuse the stored chunks in ``out_dir`` that match this grid (checked cell by
        cell; see the module docstring); a folder written by another fingerprint is refused.
      overwrite: delete the stored chunks of ``out_dir`` first. Without ``resume`` or
        ``overwrite`` a folder holding chunks is refused (finished work is never deleted
        by mistake).
      fingerprint: JSON-able description of what produced the grid (the resolved config).
      chunk_size: cells per compiled call (default: from the memory estimate and budget;
        clamped to the grid; refused when the estimate exceeds the budget).
      budget_bytes: memory budget for one chunk, and for the grid's axis values
        (default :func:`default_budget_bytes`).
      max_output_bytes, max_seconds: refuse (:class:`GridTooLarge`, after the chunks that
        measured it, which stay stored) a grid whose outputs, held in memory, or whose
        estimated time exceed these; None: no limit.
      progress: callback receiving one line per finished chunk (chunks done, cells/s, ETA)
        and one per stored chunk that could not be used.
      label: prefix of the progress lines (the static configuration).
      stats: a dict that receives "computed" and "reused", the cells computed by this call
        and those loaded from stored chunks (so a timing can say what it covers).

    Axis values are checked before anything is traced: numbers, finite; "seed" a
    non-negative integer; the trainer's hyper-parameters (:data:`gmmssl.train.HPARAM_RANGES`)
    and ``spec.ranges`` within their ranges (every range checked, low <= high; an axis whose
    range is a string is refused with it); each value once, and one the cells can hold as
    given (int32 for an axis of integers, float32 otherwise). Before that, a grid whose axis
    values alone exceed the budget is refused from the axes' lengths, and so is a cell
    whose ``spec.cell_bytes`` (one per device) exceeds it.

    Returns:
      (grid, outputs): grid is {axis: (G,) numpy array}; outputs is evaluate_fn's nested
      dict with a leading (G,) axis, as numpy arrays.
    """
    say = progress or (lambda line: None)
    plan = _plan(spec, fingerprint, chunk_size, default_budget_bytes() if budget_bytes is None else budget_bytes)
    out = Path(out_dir) if out_dir is not None else None
    # the folder is process 0's (see gmmssl.distributed): it reads it, every process gets the finished cells
    have, stored_width, trusted = (distributed.on_leader(lambda: _claim_folder(out, plan, resume, overwrite, say))
                                   if out is not None else ({}, None, {}))
    chunk = _chunk_width(plan, have, stored_width)
    if out is not None:
        plan.manifest.update(chunk_size=chunk, cells_per_device=chunk // plan.num_devices, chunks=dict(trusted))
        distributed.on_leader(lambda: _write_manifest(out, plan.manifest))
    if jax.process_count() > 1:  # every process compiles the same programs (see there)
        distributed.consistent_programs()
    programs = _programs(spec, plan.mesh)
    num_chunks = math.ceil(plan.size / chunk)
    pieces, names = [], set()
    start_time = time.perf_counter()
    computed = computed_chunks = 0
    for i in range(num_chunks):
        lo, hi = i * chunk, min((i + 1) * chunk, plan.size)
        names.add(_chunk_name(lo, hi))
        if all(c in have for c in range(lo, hi)):
            flat = _reused_chunk(have, lo, hi)
            if out is not None:  # stored under another layout: keep it under this one too
                distributed.on_leader(lambda: (out / _chunk_name(lo, hi)).exists() or _store_chunk(out, plan, lo, hi,
                                                                                                     flat))
        else:
            chunk_start = time.perf_counter()
            flat = _run_chunk(programs, plan, lo, hi, chunk,
                              wait=dict(started=start_time, max_seconds=max_seconds, say=say,
                                        what=f"{label}chunk {i + 1}/{num_chunks}"))
            if out is not None:
                distributed.on_leader(lambda: _store_chunk(out, plan, lo, hi, flat))
            computed += hi - lo
            computed_chunks += 1
            _check_limits(plan, have, flat, lo, hi, computed_chunks, time.perf_counter() - chunk_start,
                          max_output_bytes, max_seconds, kept=out is not None)
        pieces.append(_unflatten(flat))
        say(_progress_line(label, i, num_chunks, hi, plan.size, computed, have, time.perf_counter() - start_time))
    if out is not None:
        distributed.on_leader(lambda: _drop_superseded(out, plan.manifest, names))
    if stats is not None:
        stats.update(computed=computed, reused=plan.size - computed)
    outputs = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *pieces)
    return plan.grid, outputs


@dataclasses.dataclass
class _Plan:
    """What a run of a grid is: its cells, devices, the requested chunk size and the
    fingerprint (manifest) every stored chunk carries the digest (key) of."""

    grid: dict
    size: int
    devices: list
    requested: int | None
    chunk_size: int | None
    manifest: dict
    key: str
    precision: str
    mesh: Any

    @property
    def num_devices(self) -> int:
        return len(self.devices)


def _plan(spec: Sweep, fingerprint, chunk_size, budget: int) -> _Plan:
    """Checks the axes, sizes and budget (nothing traced yet) and plans the run."""
    _check_grid_size(spec.axes, budget)
    ranges = _axis_ranges(spec.ranges)
    _refuse_unused_axes(spec.axes, ranges)
    _validate_axes(spec.axes, ranges)
    grid = flatten_grid(spec.axes)
    size = len(next(iter(grid.values())))
    devices = jax.devices()
    num_devices = len(devices)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer (cells per compiled call), got {chunk_size!r}")
    requested = None if chunk_size is None else int(chunk_size)
    if chunk_size is not None:
        chunk_size = min(int(chunk_size), math.ceil(size / num_devices) * num_devices)  # no more than the grid
        if chunk_size * spec.cell_bytes > budget:
            raise ValueError(f"--chunk-size {chunk_size} needs about {chunk_size * spec.cell_bytes / 2**20:.0f} MiB "
                             f"by the memory estimate, above the budget of {budget / 2**20:.0f} MiB "
                             f"(--budget-mb); choose a smaller chunk or a larger budget")
    if num_devices * spec.cell_bytes > budget:  # the smallest chunk: one cell per device
        per_device = f" per device, {num_devices} devices" if num_devices > 1 else ""
        raise ValueError(f"one grid cell needs about {_bytes_text(spec.cell_bytes)}{per_device} by the memory "
                         f"estimate, above the budget of {_bytes_text(budget)} (--budget-mb); use smaller sizes "
                         f"(batch, samples, dimension) or a larger budget")
    if chunk_size is None:
        chunk_size = choose_chunk_size(spec.cell_bytes, size, num_devices, budget,
                                       max_cells=CPU_MAX_CHUNK if cpu_measures() else None)
    manifest = store_fingerprint(spec.axes, fingerprint)
    return _Plan(grid, size, devices, requested, chunk_size, manifest, _digest(manifest),
                 manifest["numerics"]["matmul_precision"], Mesh(np.array(devices), ("grid",)))


def _claim_folder(out: Path, plan: _Plan, resume: bool, overwrite: bool, say) -> tuple:
    """(finished cells, the stored cells per device, the trusted chunks' digests) of the
    output folder, after clearing it (overwrite) or checking its fingerprint (resume);
    process 0 only."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink()
    path = out / "sweep.json"
    stored = list(out.glob("chunk_*.npz"))
    if overwrite:
        for old_chunk in stored:
            old_chunk.unlink()
    elif resume:
        stored_width, digests = None, None
        if path.exists():
            old = read_json(path, "; --overwrite recomputes the chunks, or restore the file")  # one line naming it
            if _digest({k: old.get(k) for k in ("axes", "fingerprint", "numerics")}) != plan.key:
                diffs = diff_keys(old.get("fingerprint", {}), plan.manifest["fingerprint"])
                diffs += diff_keys(old.get("numerics", {}), plan.manifest["numerics"])
                diffs += [] if old.get("axes") == plan.manifest["axes"] else ["the grid axes"]
                raise ValueError(f"--resume: {out} was written by a different config; differing: "
                                 + ("; ".join(diffs) or "the stored fingerprint"))
            stored_width = old.get("cells_per_device")  # None: an older sweep.json (no digests either)
            digests = old.get("chunks") if isinstance(old.get("chunks"), dict) else None
        have, trusted = _load_finished(out, plan.key, plan.size, say, digests)
        return have, stored_width, trusted
    elif stored:
        raise ValueError(f"{out} holds {len(stored)} finished chunk(s); resume them (--resume) or "
                         f"replace them (--overwrite)")
    return {}, None, {}


def _chunk_width(plan: _Plan, have: dict, stored_width) -> int:
    """Cells per chunk, a multiple of the devices. A cell's numbers are bit-identical only
    between programs of the same width (cells per device): XLA batches and fuses by it.
    Resuming keeps the stored width on any number of devices (the chunk is that width
    times the devices, padded), and refuses another one."""
    n = plan.num_devices
    chunk_size = plan.chunk_size
    if stored_width and have and (plan.requested is None or plan.requested == stored_width * n):
        chunk_size = int(stored_width) * n  # not clamped to the grid: padded instead
    chunk = max(n, (int(chunk_size) // n) * n)
    if stored_width and have and chunk // n != stored_width:
        raise ValueError(f"--resume: the stored cells were computed {stored_width} per device; this run would compute "
                         f"{chunk // n} per device ({chunk} cells on {n} device(s)), and a cell's "
                         f"numbers are bit-identical only at equal cells per device: use --chunk-size "
                         f"{stored_width * n}, or --overwrite")
    return chunk


def _write_manifest(out: Path, manifest: dict) -> None:
    atomic_write(out / "sweep.json", json.dumps(manifest, indent=2) + "\n")


def _store_chunk(out: Path, plan: _Plan, lo: int, hi: int, flat: dict) -> None:
    """Writes a chunk, then records its sha256 in sweep.json (a chunk whose record a stop
    in between lost is set aside and recomputed on resume, never trusted); process 0 only."""
    data = _chunk_bytes(lo, hi, flat, plan.key)
    atomic_write(out / _chunk_name(lo, hi), data)
    plan.manifest["chunks"][_chunk_name(lo, hi)] = _sha256(data)
    _write_manifest(out, plan.manifest)


def _drop_superseded(out: Path, manifest: dict, names: set) -> None:
    """Deletes the chunks of another layout that this run's chunks replace; process 0 only."""
    extras = [p for p in out.glob("chunk_*.npz") if p.name not in names]
    for extra in extras:
        extra.unlink()
        manifest["chunks"].pop(extra.name, None)
    if extras:
        _write_manifest(out, manifest)  # after the files: a record without its file is harmless


def _programs(spec: Sweep, mesh) -> tuple:
    """The three compiled phases: prepare and evaluate map each device's share of the chunk
    (shard_map over the grid axis) cell by cell (lax.map) on the CPU, vmapped elsewhere
    (gmmssl.backend.map_linalg); nothing is batched over devices (vmapping the map over a
    device axis would trace every loop body again through its batching rule). train is
    vmapped over the chunk."""
    def per_cell(fn):
        return jax.jit(jax.shard_map(lambda *args: map_linalg(fn, *args), mesh=mesh,
                                     in_specs=PartitionSpec("grid"), out_specs=PartitionSpec("grid"),
                                     check_vma=False))

    return (per_cell(spec.prepare_fn), jax.jit(jax.vmap(spec.train_fn)),
            per_cell(lambda c, d, t: _as_dict(spec.evaluate_fn(c, d, t))))


def _run_chunk(programs, plan: _Plan, lo: int, hi: int, chunk: int, wait: dict) -> dict:
    """Computes cells lo … hi − 1 (the chunk padded by wrapping around to ``chunk`` cells,
    sharded over the devices, every phase traced under the fingerprint's precision);
    returns the flattened outputs of those cells, gathered from every process."""
    prepare, train, evaluate = programs
    idx = np.arange(lo, lo + chunk) % plan.size
    sharding = NamedSharding(plan.mesh, PartitionSpec("grid"))
    cells = {n: jax.device_put(_host_array(v[idx]), sharding) for n, v in plan.grid.items()}
    with jax.default_matmul_precision(plan.precision):
        data = prepare(cells)
        result = evaluate(cells, data, train(cells, data))
    _wait(result, **wait)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        result = multihost_utils.process_allgather(result, tiled=True)
    return {k: v[: hi - lo] for k, v in flatten_tree(result).items()}


def _reused_chunk(have: dict, lo: int, hi: int) -> dict:
    first = have[lo][0]
    return {k: np.stack([have[c][0][k][have[c][1]] for c in range(lo, hi)]) for k in first}


def _check_limits(plan: _Plan, have: dict, flat: dict, lo: int, hi: int, computed_chunks: int, chunk_seconds: float,
                  max_output_bytes, max_seconds, kept: bool) -> None:
    """GridTooLarge when the first computed chunk says the held outputs would exceed
    ``max_output_bytes``, or the second (the first includes compilation) that the rest
    would take longer than ``max_seconds`` (process 0's estimate, for every process)."""
    if max_output_bytes is not None and computed_chunks == 1:
        need = sum(v.nbytes for v in flat.values()) / (hi - lo) * plan.size
        if need > max_output_bytes:
            raise GridTooLarge(
                f"the grid's {plan.size} cells would hold about {need / 2**30:.2f} GiB of outputs in memory, "
                f"above the limit of {max_output_bytes / 2**30:.2f} GiB; use fewer cells, or confirm "
                f"(--yes){' and --resume: the finished chunk is kept' if kept else ''}")
    if max_seconds is not None and computed_chunks == 2 and hi < plan.size:
        left = sum(1 for c in range(hi, plan.size) if c not in have)
        eta = distributed.broadcast(left * chunk_seconds / (hi - lo))  # process 0's
        if eta > max_seconds:
            raise GridTooLarge(
                f"the grid's {left} remaining cells would take about {_duration(eta)}, above the limit "
                f"of {_duration(max_seconds)}; use fewer cells, or confirm (--yes)"
                f"{' and --resume: the finished chunks are kept' if kept else ''}")


def _progress_line(label: str, i: int, num_chunks: int, hi: int, size: int, computed: int, have: dict,
                   elapsed: float) -> str:
    rate = computed / elapsed if elapsed > 0 and computed else 0.0
    left = sum(1 for c in range(hi, size) if c not in have)
    eta = f"{left / rate:.0f}s" if rate > 0 else "?"
    return (f"{label}[{_bar(i + 1, num_chunks)}] chunk {i + 1}/{num_chunks}, {hi}/{size} cells, "
            f"{rate:.1f} cells/s, {elapsed:.1f}s elapsed, ETA {eta}")
