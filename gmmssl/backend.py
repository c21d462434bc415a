"""What gmmssl does differently on the CPU and on accelerators: each choice measured on one
backend, and applied only there.

gmmssl was measured on the CPU, where two things differ from accelerators:

* **Batched linear algebra.** On the CPU (jaxlib 0.10), batched LAPACK calls (``eigh``,
  ``svd``, ``cholesky``, triangular solves under ``vmap``) can deadlock XLA's thread
  pool when several run at once (docs/development.md, "Known issue"). So on the CPU, per-component
  factorizations are Python loops and the sweep engine's preparation and evaluation
  phases (and the scoring of stacked projectors) map cell by cell with ``lax.map``.
  GPUs and TPUs batch these calls natively: there they are vmapped.
* **The fused low-rank InfoNCE kernel** (:func:`gmmssl.losses.low_rank_logsumexp`, no
  B×B logits) was faster than the matmul path on the CPU at the theory's small ranks;
  on accelerators the B×B matmul runs on the matrix units, so the fused kernel is used
  only on the CPU. (Both paths give the same value and gradient: tested.)
* **Chunks of at most 64 cells** on the CPU (:data:`gmmssl.sweep.CPU_MAX_CHUNK`), where
  larger chunks ran about 2× slower per model; on accelerators the memory budget alone
  sets the chunk.

Each choice is read when a function is traced, from ``jax.default_backend()``;
:func:`measured_on` overrides it for a block (to test the other backend's path, or when
you place arrays on a backend other than the default). The CPU's choices are refused on
an accelerator: XLA:GPU did not finish compiling the training program with the fused
kernel in 140 s (one H200, jaxlib 0.11.2).

**Float32 matmul precision, on every backend.** A GPU's default float32 matmul is TF32
(10-bit mantissa, rounding ~1e-3), a TPU's default uses bfloat16 passes; the CPU computes in
float32. gmmssl's own computations (the trainer, the evaluation, :mod:`gmmssl.exact`, the
sweep engine's phases) run their matmuls at :func:`matmul_precision`: JAX's own
``jax_default_matmul_precision`` when you set it (``jax.default_matmul_precision("default")``
or the ``JAX_DEFAULT_MATMUL_PRECISION`` variable), else :data:`DEFAULT_PRECISION`,
"highest" (float32), so that capture, efficiency, ARI and the exact objective agree across
chips to float32 rounding. Sweeps record it (:func:`gmmssl.sweep.numerics`): resuming under
another precision is refused. Your own code outside gmmssl keeps JAX's default.
"""
from __future__ import annotations

import contextlib
import functools
import threading

import jax

__all__ = ["DEFAULT_PRECISION", "batched_linalg", "cpu_measures", "fused_low_rank", "map_linalg", "matmul_precision",
           "measured_on", "with_matmul_precision"]

DEFAULT_PRECISION = "highest"

_override = threading.local()


def cpu_measures() -> bool:
    """True when the CPU's measured choices apply: the default backend is the CPU (or
    :func:`measured_on` says "cpu")."""
    backend = getattr(_override, "backend", None) or jax.default_backend()
    return backend == "cpu"


def batched_linalg() -> bool:
    """Whether linear algebra may be vmapped (batched): not on the CPU."""
    return not cpu_measures()


def fused_low_rank() -> bool:
    """Whether InfoNCE at r ≤ :data:`gmmssl.losses.SMALL_RANK` uses the fused kernel: on the CPU."""
    return cpu_measures()


IMPLEMENTATIONS = ("xla", "low_rank", "pallas")


def contrastive_implementation(implementation: str | None, r: int, *, low_rank: bool = True,
                               small_rank: int = 4) -> str:
    """The code path of an in-batch contrastive loss (InfoNCE, CLIP, NT-Xent, DCL), as
    ``jax.nn.dot_product_attention`` chooses: "xla" (the (B, B) logits matrix and XLA's
    matmul), "low_rank" (InfoNCE and CLIP only: the logits as r outer products inside the
    reductions, :func:`gmmssl.losses.low_rank_logsumexp`), "pallas" (the fused tiles of
    :mod:`gmmssl.losses._pallas`: no B×B array in memory; interpreted, slowly, off GPU
    and TPU), or None: the measured best on this backend, "low_rank" on the CPU for
    r ≤ ``small_rank`` (1.05–1.10× a hand-written program there), else "xla" (the Pallas
    kernel is not yet timed on an accelerator, so it is not the default anywhere)."""
    if implementation is None:
        return "low_rank" if (low_rank and r <= small_rank and fused_low_rank()) else "xla"
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be None or one of {list(IMPLEMENTATIONS)}, got {implementation!r}")
    if implementation == "low_rank" and not low_rank:
        raise ValueError("implementation 'low_rank' is InfoNCE's and CLIP's (dot products of two views); this loss "
                         "takes 'xla' or 'pallas'")
    return implementation


def map_linalg(fn, *xs, unroll: bool = False):
    """``fn`` over the leading axis of ``xs`` (arrays or pytrees), for functions that do
    linear algebra: ``vmap`` where batched linear algebra is safe; on the CPU ``lax.map``
    (one element at a time), or with ``unroll`` a Python loop (for a few elements, such
    as the K components, where it compiles to straight-line code)."""
    if batched_linalg():
        return jax.vmap(fn)(*xs)
    if not unroll:
        return jax.lax.map(lambda args: fn(*args), xs)
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    outs = [fn(*jax.tree_util.tree_map(lambda x, i=i: x[i], xs)) for i in range(n)]
    return jax.tree_util.tree_map(lambda *ys: jax.numpy.stack(ys), *outs)


@contextlib.contextmanager
def measured_on(backend: str):
    """Within the block, make the backend-dependent choices as on ``backend`` ("cpu",
    "gpu" or "tpu"), whatever the default backend is. Functions traced (compiled) inside
    the block keep the choice; a jitted function already compiled keeps its own.

    On the CPU, "gpu" batches linear algebra, which can deadlock the CPU's thread pool
    when several batched calls run at once: use it for small checks only. On an
    accelerator, "cpu" is refused (ValueError): the CPU's fused low-rank kernel is not
    compiled for an accelerator (XLA:GPU did not finish compiling it in 140 s).
    """
    if backend not in ("cpu", "gpu", "tpu"):
        raise ValueError(f"backend must be 'cpu', 'gpu' or 'tpu', got {backend!r}")
    if backend == "cpu" and jax.default_backend() != "cpu":
        raise ValueError(f"measured_on('cpu') is refused on the {jax.default_backend()} backend: the CPU's fused "
                         f"low-rank kernel is never compiled for an accelerator (XLA:GPU did not finish compiling "
                         f"it in 140 s); run the CPU's choices on the CPU (JAX_PLATFORMS=cpu)")
    before = getattr(_override, "backend", None)
    _override.backend = backend
    try:
        yield
    finally:
        _override.backend = before


def matmul_precision() -> str:
    """The float32 matmul precision of gmmssl's computations: JAX's
    ``jax_default_matmul_precision`` when set (globally, by ``JAX_DEFAULT_MATMUL_PRECISION``,
    or in a ``jax.default_matmul_precision(...)`` block), else :data:`DEFAULT_PRECISION`.

    Example:
      >>> matmul_precision() if jax.config.jax_default_matmul_precision is None else "highest"
      'highest'
      >>> with jax.default_matmul_precision("default"):
      ...     matmul_precision()
      'default'
    """
    return jax.config.jax_default_matmul_precision or DEFAULT_PRECISION


def with_matmul_precision(fn):
    """Decorator: ``fn`` traced (and run) under :func:`matmul_precision`. JAX resolves a
    matmul's precision when it is traced, and keys its compilation cache on the setting, so
    this holds inside ``jit``, ``vmap`` and ``grad`` too."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision(matmul_precision()):
            return fn(*args, **kwargs)

    return wrapper
