"""The command line: ``gmmssl list`` and ``gmmssl run NAME [--out DIR] [--set KEY=VALUE ...]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser():
    p = argparse.ArgumentParser(prog="gmmssl", description="Self-supervised learning on Gaussian mixtures.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    bench = sub.add_parser("bench", help="run the benchmarks (python -m benchmarks)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="kernels|sweep|all [--quick] [--out DIR]")
    rep = sub.add_parser("report", help="gather results/*/ into docs/RESULTS.md and docs/open-questions.md")
    rep.add_argument("--results", default="results", help="folder holding one folder per experiment")
    rep.add_argument("--docs", default="docs", help="where RESULTS.md and figures/ go")
    run = sub.add_parser("run", help="run an experiment")
    run.add_argument("name", help="experiment name (see 'gmmssl list'), or 'all'")
    run.add_argument("--out", default=None, help="output folder (default results/NAME; for 'all', the parent)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value; lists are comma-separated (repeatable)")
    run.add_argument("--strict", action="store_true", help="exit with status 1 when a claim fails")
    run.add_argument("--resume", action="store_true",
                     help="reuse the finished chunks in --out (refused if its config differs)")
    run.add_argument("--chunk-size", type=int, default=None, metavar="N",
                     help="cells per compiled call (default: from the memory estimate)")
    run.add_argument("--budget-mb", type=float, default=None, metavar="MB",
                     help="memory budget of one chunk (default: a quarter of the available memory)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import experiments

    if args.command == "list":
        for name, exp in experiments.REGISTRY.items():
            print(f"{name:12s} {exp.description}")
        return 0

    if args.command == "bench":
        from benchmarks.__main__ import main as bench_main

        return bench_main(args.args)

    if args.command == "report":
        from gmmssl.report import write_open_questions, write_report

        print(f"wrote {write_report(args.results, args.docs)}")
        print(f"wrote {write_open_questions(args.results, args.docs)}")
        return 0

    from gmmssl.experiment import parse_overrides, resolve_config, run_experiment

    if args.name == "all":
        return _run_all(args)

    try:
        exp = experiments.get(args.name)
        overrides = parse_overrides(args.overrides)
        resolve_config(exp, overrides)
    except ValueError as err:
        print(f"gmmssl: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("results") / args.name)
    print(f"gmmssl run {args.name} -> {out}/", flush=True)
    try:
        run = run_experiment(exp, out, overrides, progress=lambda line: print("  " + line, flush=True),
                             resume=args.resume, chunk_size=args.chunk_size,
                             budget_bytes=None if args.budget_mb is None else int(args.budget_mb * 2**20))
    except ValueError as err:
        print(f"gmmssl: error: {err}", file=sys.stderr)
        return 2
    cells = sum(len(next(iter(p.grid.values()))) for p in run.parts)
    print(f"{cells} cells in {len(run.parts)} static configuration(s), {run.seconds:.1f}s "
          f"(compilation included)\n")
    print(exp.report(run))
    print("\nverdict:")
    for c in run.claims:
        print(f"  [{'PASS' if c.passed else 'FAIL'}] {c.statement}: {c.measured:.4f} ({c.tolerance})")
    print(f"\nwrote {out}/results.csv, config.json, projectors.npz, verdict.json and figures")
    if args.strict and not all(c.passed for c in run.claims):
        return 1
    return 0


def _run_all(args) -> int:
    """Every experiment at its default size (``--set`` applies to the experiments that know the key)."""
    import time

    import experiments

    start = time.perf_counter()
    status = 0
    for name in experiments.REGISTRY:
        known = [o for o in args.overrides if o.split("=", 1)[0] in experiments.REGISTRY[name].defaults]
        sub = ["run", name, "--out", str(Path(args.out or "results") / name), *sum((["--set", o] for o in known), [])]
        status = max(status, main(sub + (["--strict"] if args.strict else [])))
    print(f"\nall experiments: {time.perf_counter() - start:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
