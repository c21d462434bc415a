"""One tiny pancakes configuration shared by the end-to-end tests.

Identical static configurations (and chunk shapes) compile to identical programs, so
JAX's persistent compilation cache (set up in conftest.py) compiles each of them once per
test session; tests that need another shape say why. 100 steps of batch 128 in d = 8 are
enough for InfoNCE to find the pancakes' Fisher direction at δ ≥ 0.5. It is the quick
device benchmark's pancakes run too (so that one shares the programs).
"""
from gmmssl.benchmarks.__main__ import QUICK_PANCAKES

OVERRIDES = dict(QUICK_PANCAKES)  # 6 cells (2 seeds × δ 0, 0.5, 1): one chunk of 6 unless --chunk-size says otherwise
TINY = [arg for k, v in OVERRIDES.items() for arg in ("--set", f"{k}={v}")]
# the same on 4 seeds, one cell per chunk: 12 chunks, enough for a run to be killed midway
# (tests/test_sweep.py), chunked otherwise than TINY's one chunk of 6
CHUNKED = [*TINY, "--set", "seeds=4", "--chunk-size", "1"]
