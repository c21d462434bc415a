"""Test-session setup shared by tests/, the doctests of gmmssl/ and docs/guide.md."""
import os
from pathlib import Path

# Reuse compilations across tests and the CLI subprocesses they start: many tests compile
# the same tiny programs. (A cache hit changes no result: it is the same executable.)
_CACHE = Path(__file__).resolve().parent / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
