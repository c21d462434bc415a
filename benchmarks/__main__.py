"""``python -m benchmarks [kernels|sweep|all] [--quick] [--out DIR]``: writes bench.json
(every figure with its configuration and the environment) and bench.md (tables)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import common, kernels, sweeps


def _table(rows, cols):
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("what", nargs="?", default="all", choices=["kernels", "sweep", "all"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    p.add_argument("--out", default="results/bench", help="folder for bench.json and bench.md")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"environment": common.environment(), "quick": a.quick}
    md = [f"# gmmssl benchmarks\n\n{json.dumps(report['environment'])}\n"]
    if a.what in ("kernels", "all"):
        kw = dict(batches=(64,), ranks=(2,), dims=(8,), repeats=2) if a.quick else {}
        report["kernels"] = kernels.run(**kw)
        md += ["## Kernels", f"matmul peak: {report['kernels']['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s", "",
               _table(report["kernels"]["rows"], ["loss", "mode", "B", "r", "d", "compile_s", "median_s", "iqr_s",
                                                  "flops_per_s", "fraction_of_peak"])]
    if a.what in ("sweep", "all"):
        kw = dict(sizes=(1, 4), loop_sizes=(1,), repeats=1) if a.quick else {}
        report["sweep"] = sweeps.run(**kw)
        md += ["## Sweeps", _table(report["sweep"]["rows"], ["config", "method", "G", "compile_s", "median_s",
                                                             "model_steps_per_s", "peak_rss_mb"])]
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "bench.md").write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
