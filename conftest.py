"""Test-session setup shared by tests/, the doctests of gmmssl/ and docs/guide.md."""
import os
import stat
from pathlib import Path

import pytest


def _cache_dir() -> str:
    """Where the test suite keeps compiled programs: GMMSSL_TEST_CACHE if set, else the
    user's cache folder (so a fresh clone on the same machine, as in CI, reuses them), else
    the clone's own .pytest_cache when that folder cannot be written."""
    if os.environ.get("GMMSSL_TEST_CACHE"):
        return os.environ["GMMSSL_TEST_CACHE"]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gmmssl" / "jax-tests"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return str(base)
    except OSError:
        return str(Path(__file__).resolve().parent / ".pytest_cache" / "jax-compilation-cache")


# Reuse compilations across tests, the CLI subprocesses they start and earlier runs of the
# suite, the smallest programs included (a tiny eager op loads in half the time it takes to
# compile): compiling is most of the suite's time (measured on 2 cores: 3 min 57 s with the
# cache full, 6 min 52 s empty; see docs/development.md). A hit changes no result: the key holds the
# program, the jax/jaxlib versions, the backend and the XLA flags, so a changed program or
# version compiles afresh. Kept under CACHE_MAX_BYTES (oldest first, at a session's start).
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # a user's own cache is never trimmed
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir()
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
CACHE_MAX_BYTES = 1 << 30  # a whole session writes about 70 MB (4,300 programs)
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # JAX_PLATFORMS=cuda (make test-gpu) runs the suite on a GPU
# several test workers (and the CLI subprocesses they start) share one accelerator: each takes
# the memory it needs, not JAX's default 75 % of the device at its first op
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite checks mathematics at float32: its matmuls run at float32 on every chip ("highest";
# a GPU's default is TF32, whose ~1e-3 rounding no float32 tolerance allows). The CPU computes
# float32 matmuls in float32 at any setting, so there only the programs' text changes.
# gmmssl's own trainer, sweeps and exact objective choose this precision themselves
# (gmmssl.backend.DEFAULT_PRECISION); this covers the tests' direct calls of the losses.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# The suite's time is mostly XLA compiling small programs: compile them with most
# optimizations off (about a fifth faster; that changes rounding, not what a test checks).
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 tests the optimized programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


def _xla_flag_works(flag: str) -> bool:
    """Whether the installed jaxlib accepts ``flag`` in XLA_FLAGS. XLA ends the process on a
    flag it does not know (jaxlib >= 0.11 dropped --xla_cpu_use_fusion_emitters), so a
    subprocess imports jax and runs an op with it; the answer is kept per jaxlib version and
    flag beside the compilation cache (about 2 s once, then a file read)."""
    import json
    import subprocess
    import sys
    from importlib.metadata import version

    memo = Path(_cache_dir()).parent / "xla-flags.json"
    key = f"jaxlib {version('jaxlib')} {sys.platform} {flag}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
        probe = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(2).block_until_ready()"],
                               env=env, capture_output=True, timeout=120)
        known[key] = probe.returncode == 0
        try:
            memo.write_text(json.dumps(known, indent=1))
        except OSError:
            pass
    return known[key]


# On the CPU only: XLA:CPU's older elemental emitters instead of its fusion emitters. With
# optimizations off they halve the compile time again (jaxlib 0.10: the pancakes run's
# evaluation program, 6.2 s -> 3.2 s); rounding only, as above. jaxlib >= 0.11 has no such
# flag (and its CPU compiler no such choice): there it is left out. CLI subprocesses inherit it.
CPU_ONLY_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)
if os.environ["JAX_PLATFORMS"] == "cpu":
    for _flag in CPU_ONLY_XLA_FLAGS:
        if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", "") and _xla_flag_works(_flag):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()


def pytest_sessionstart(session):
    """Above CACHE_MAX_BYTES, trim the suite's compilation cache to half of it, its oldest
    files first, before the session starts (once: not in xdist's workers; never a cache the
    user named with JAX_COMPILATION_CACHE_DIR)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not _OWN_CACHE:
        return
    files = []
    for f in Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).glob("*"):
        try:
            st = f.stat()
        except OSError:  # removed meanwhile (another run trimming)
            continue
        if stat.S_ISREG(st.st_mode):
            files.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in files)
    if total <= CACHE_MAX_BYTES:
        return
    for _, size, f in sorted(files, key=lambda t: t[0]):  # down to half, oldest first
        if total <= CACHE_MAX_BYTES // 2:
            break
        f.unlink(missing_ok=True)
        total -= size


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


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own (which tags the grouped tests)
def pytest_collection_modifyitems(config, items):
    """The long tests first (marked ``slow``, and the doc files' doctests), so that with
    ``-n 2`` the workers finish together instead of one waiting on a late long test.

    In an xdist worker under ``--dist loadgroup``, warns when xdist did not tag the tests
    marked ``xdist_group`` (a ``@group`` suffix on their node ids), as with pytest 9.2 and
    pytest-xdist 3.8 (pytest-xdist issue 1386): those tests would be spread over the workers,
    each running their shared tiny experiment again."""
    def long(item):
        return item.get_closest_marker("slow") is not None or item.nodeid.endswith((".md::README.md", "guide.md"))

    items.sort(key=lambda item: not long(item))  # stable: collection order otherwise
    lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if getattr(config.option, "loadgroup", False) and lost:
        import warnings

        warnings.warn(f"--dist loadgroup did not group {len(lost)} tests marked xdist_group (e.g. {lost[0]}): this "
                      f"pytest and pytest-xdist do not work together (see the pin in pyproject.toml's test extra); "
                      f"the tests still pass, but run their shared fixtures once per worker")
