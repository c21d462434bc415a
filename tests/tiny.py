"""One tiny pancakes configuration shared by the end-to-end tests.

Identical static configurations (and chunk shapes) compile to identical programs, so
JAX's persistent compilation cache (set up in conftest.py) compiles each of them once per
test session; tests that need another shape say why. 100 steps of batch 128 in d = 8 are
enough for InfoNCE to find the pancakes' Fisher direction at δ ≥ 0.5.
"""
BASE = {"steps": "100", "d": "8", "batch_size": "128", "num_baseline": "500", "num_eval": "500"}
GRID = {"seeds": "2", "delta": "0,0.5,1"}  # 6 cells: one chunk of 6 unless --chunk-size says otherwise
OVERRIDES = {**BASE, **GRID}
TINY = [arg for k, v in OVERRIDES.items() for arg in ("--set", f"{k}={v}")]
