"""``python -m gmmssl.benchmarks [kernels|sweep|answer|all|device] [--quick] [--out DIR]``: writes
bench.json (every figure with its configuration and the environment) and bench.md (tables).

``device`` is the one prepared script for an accelerator (a GPU or TPU lent for a short
check): the kernel benchmark, the sweep at G = 16 … 4096 (at float32 matmul precision, as
gmmssl trains, and at the chip's default precision, side by side) and the pancakes
experiment at its default size, on whatever device JAX finds, recorded with the device's
kind."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gmmssl.benchmarks import common, kernels, sweeps, time_to_answer


# the smallest delta run that still has two δ (tests share it: one compilation per session)
QUICK_ANSWER = {"steps": "50", "log_every": "25", "num_baseline": "200", "num_eval": "200", "seeds": "1",
                "delta": "0.1,0.5", "d": "6"}


# the tests' shared tiny pancakes configuration (tests/tiny.py): one compilation per session
QUICK_PANCAKES = {"steps": "100", "d": "8", "batch_size": "128", "num_baseline": "500", "num_eval": "500",
                  "seeds": "2", "delta": "0,0.5,1"}


def _pancakes(out_dir, overrides) -> dict:
    """The pancakes experiment, timed (recomputed: never reused from stored chunks)."""
    import time

    import gmmssl.experiments as experiments
    from gmmssl.experiment import run_experiment

    t0 = time.perf_counter()
    run = run_experiment(experiments.get("pancakes"), out_dir, overrides, overwrite=True,
                         progress=lambda line: print("  " + line, flush=True))
    return {"wall_s": time.perf_counter() - t0, "grid_s": run.seconds, "num_cells": sum(len(next(iter(p.grid.values()))) for p in run.parts), "claims_passed": sum(c.passed for c in run.claims),
            "num_claims": len(run.claims), "verdict": all(c.passed for c in run.claims)}


def _table(rows, cols):
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gmmssl.benchmarks")
    p.add_argument("what", nargs="?", default="all", choices=["kernels", "sweep", "answer", "all", "device"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    p.add_argument("--out", default="results/bench", help="folder for bench.json and bench.md")
    a = p.parse_args(argv)
    out = Path(a.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        print(f"python -m gmmssl.benchmarks: error: --out {out}: cannot write there "
              f"({err.strerror or type(err).__name__}); nothing was run", file=sys.stderr)
        return 2
    report = {"environment": common.environment(), "quick": a.quick}
    md = [f"# gmmssl benchmarks\n\n{json.dumps(report['environment'])}\n"]
    if a.what in ("kernels", "all", "device"):
        # quick: one loss of each kind (in-batch, non-contrastive, population)
        kw = dict(batches=(64,), ranks=(2,), dims=(8,), repeats=2,
                  names=("infonce", "simsiam", "infonce_population"),
                  implementations=("xla", "low_rank", "pallas"), bound_size=1 << 18) if a.quick else {}
        if a.what == "device" and not a.quick:  # the paper's losses, and the B = 8,192 kernel: minutes, not an hour
            kw = dict(names=("infonce", "simsiam", "clip", "ntxent", "infonce_population"),
                      batches=(512, 8192), ranks=(2, 128), dims=(32,))
        k = report["kernels"] = kernels.run(**kw)
        md += ["## Kernels",
               f"rates measured in this run: a 2048² float32 matmul {k['matmul_reference']['flops_per_s'] / 1e9:.1f} "
               f"GFLOP/s (a reference, not a peak), copy bandwidth {k['bounds']['bandwidth_bytes_per_s'] / 1e9:.1f} "
               f"GB/s, exponentials {k['bounds']['exps_per_s'] / 1e9:.1f} G/s", "",
               _table(k["rows"], ["loss", "implementation", "mode", "B", "r", "d", "compile_s", "median_s", "iqr_s",
                                  "flops_per_s", "fraction_of_matmul", "fraction_of_bound"])]
    if a.what in ("sweep", "all", "device"):
        kw = dict(configs=("pancakes",), sizes=(1, 4), loop_sizes=(1,), repeats=1, steps=10) if a.quick else {}
        if a.what == "device" and not a.quick:
            kw = dict(configs=("pancakes",), sizes=(16, 64, 256, 1024, 4096), loop_sizes=(1,))
        if a.what == "device":  # float32 matmuls (gmmssl's) against the chip's default, side by side
            kw["precisions"] = (None, "default")
            if not a.quick:  # every code path of the contrastive loss, side by side
                kw["implementations"] = (None, "xla", "pallas")
        report["sweep"] = sweeps.run(**kw)
        md += ["## Sweeps", _table(report["sweep"]["rows"], ["config", "method", "precision", "implementation", "G",
                                                             "compile_s", "median_s",
                                                             "model_steps_per_s", "ratio_to_handwritten",
                                                             "peak_rss_mb"])]
    if a.what in ("answer", "all"):
        # quick: the configuration of the delta experiment's tiny test run (tests/test_experiments.py)
        kw = dict(batch_size=64, overrides=QUICK_ANSWER) if a.quick else {}
        tta = report["time_to_answer"] = time_to_answer.run(out / "time_to_answer", **kw)
        md += ["## Time to answer (delta experiment's default grid)",
               f"speed-up of infonce_population: {tta['speedup_wall']:.1f}x in wall time, "
               f"{tta['speedup_to_target']:.1f}x to equal capture",
               _table(tta["rows"], ["loss", "batch_size", "num_cells", "wall_s", "grid_s", "claims_passed",
                                    "num_claims", "final_capture", "target_capture", "steps_to_target",
                                    "time_to_target_s"])]
    if a.what == "device":
        # quick: the tests' tiny pancakes run (tests/tiny.py); else the experiment's default size
        report["pancakes"] = pancakes = _pancakes(out / "pancakes", QUICK_PANCAKES if a.quick else {})
        md += ["## Pancakes experiment (default size)" if not a.quick else "## Pancakes experiment (tiny)",
               f"{pancakes['num_cells']} cells, {pancakes['wall_s']:.1f} s wall ({pancakes['grid_s']:.1f} s in the "
               f"grid, compilation included), verdict {pancakes['claims_passed']}/{pancakes['num_claims']} claims "
               f"passed"]
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "bench.md").write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
