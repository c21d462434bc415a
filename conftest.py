"""Test-session setup shared by tests/, the doctests of gmmssl/ and docs/guide.md."""
import os
from pathlib import Path

import pytest

# Reuse compilations across tests and the CLI subprocesses they start: many tests compile
# the same tiny programs. (A cache hit changes no result: it is the same executable.)
_CACHE = Path(__file__).resolve().parent / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's time is mostly XLA compiling small programs: compile them with most
# optimizations off (about a fifth faster; that changes rounding, not what a test checks).
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 tests the optimized programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# ... and with XLA:CPU's older elemental emitters instead of its fusion emitters: with
# optimizations off, they halve the compile time again (the pancakes run's evaluation
# program: 6.2 s -> 3.2 s). Rounding only, as above; CLI subprocesses inherit both.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()


# doc files whose examples run long programs (as the ``optimized`` marker)
OPTIMIZED_DOCS = ("README.md::README.md",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Tests marked ``optimized`` (programs that run for seconds, compiled once) get XLA's
    optimizations back: unoptimized, their programs run about four times slower."""
    if item.get_closest_marker("optimized") is None and not item.nodeid.endswith(OPTIMIZED_DOCS):
        yield
        return
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def pytest_collection_modifyitems(config, items):
    """The long tests first (marked ``slow``, and the doc files' doctests), so that with
    ``-n 2`` the workers finish together instead of one waiting on a late long test."""
    def long(item):
        return item.get_closest_marker("slow") is not None or item.nodeid.endswith((".md::README.md", "guide.md"))

    items.sort(key=lambda item: not long(item))  # stable: collection order otherwise
