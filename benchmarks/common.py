"""Timing helpers shared by the benchmarks: AOT compile time apart from steady state,
warm-up, ``block_until_ready`` on the whole output, median and IQR over repeats."""
from __future__ import annotations

import resource
import time

import jax
import numpy as np


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, *args, repeats: int = 5, warmup: int = 1) -> dict:
    """Ahead-of-time compile ``jax.jit(fn)`` for ``args``, then time calls of the executable.

    Returns compile_s, and median_s / iqr_s / min_s over ``repeats`` timed calls after
    ``warmup`` untimed ones; each call is blocked on its whole output.
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    return {"compile_s": compile_s, **time_stats(times)}


def time_stats(times) -> dict:
    """median_s, iqr_s, min_s and repeats of a list of wall times (seconds)."""
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1), "min_s": float(min(times)), "repeats": len(times)}


def environment() -> dict:
    import jaxlib

    dev = jax.devices()
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
            "device_kind": dev[0].device_kind, "device_count": len(dev),
            "dtype": "float32", "x64": bool(jax.config.jax_enable_x64),
            "compilation_cache_dir": jax.config.jax_compilation_cache_dir}
