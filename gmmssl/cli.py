"""The command line: ``gmmssl list`` and ``gmmssl run NAME [--out DIR] [--set KEY=VALUE ...]``.

Exit statuses of ``run``: 0 done; 1 invalid (diverged) cells, or a failed claim with
``--strict``; 2 refused (bad input, another config in ``--out``, a full disk); 3 another
process of a distributed run died (``--coordinator``; see :mod:`gmmssl.distributed`).
Every process of a distributed run exits with the same status."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
from pathlib import Path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gmmssl")
    except PackageNotFoundError:
        return "unknown"


def _parser():
    p = argparse.ArgumentParser(prog="gmmssl", description="Self-supervised learning on Gaussian mixtures.")
    p.add_argument("--version", action="version", version=f"gmmssl {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    bench = sub.add_parser("bench", help="run the benchmarks (python -m gmmssl.benchmarks)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="kernels|sweep|all [--quick] [--out DIR]")
    rep = sub.add_parser("report", help="gather results/*/ into docs/RESULTS.md and docs/open-questions.md")
    rep.add_argument("--results", default="results", help="folder holding one folder per experiment")
    rep.add_argument("--docs", default="docs", help="where RESULTS.md and figures/ go")
    rep.add_argument("--partial", action="store_true",
                     help="write the report even when some experiments have no finished results")
    run = sub.add_parser("run", help="run an experiment", epilog="exit status: 0 done; 1 invalid cells (or a failed "
                         "claim with --strict); 2 refused; 3 another process of a distributed run died")
    run.add_argument("name", help="experiment name (see 'gmmssl list'), or 'all'")
    run.add_argument("--out", default=None, help="output folder (default results/NAME; for 'all', the parent)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value; lists are comma-separated (repeatable)")
    run.add_argument("--strict", action="store_true",
                     help="exit with status 1 when a claim fails (a run with diverged cells always exits 1)")
    run.add_argument("--resume", action="store_true",
                     help="reuse the finished chunks in --out (refused if its config differs)")
    run.add_argument("--chunk-size", type=int, default=None, metavar="N",
                     help="cells per compiled call (default: from the memory estimate)")
    run.add_argument("--budget-mb", type=float, default=None, metavar="MB",
                     help="memory budget of one chunk and of the held outputs (default: a quarter of the available "
                          "memory)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the results and chunks of another config in --out (never done without it)")
    run.add_argument("--yes", action="store_true",
                     help="run a grid whose held outputs exceed the budget or whose estimated time exceeds "
                          "--max-hours")
    run.add_argument("--max-hours", type=float, default=8.0, metavar="H",
                     help="stop (keeping finished chunks) a grid estimated to take longer, unless --yes (default 8)")
    dist = run.add_argument_group("distributed (several processes: hosts, GPUs, a TPU slice; see gmmssl.distributed)")
    dist.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                      help="process 0's address and a free port (with --num-processes, --process-id); 'auto': "
                           "read them from the cluster (SLURM, Open MPI, TPU). Default: start only under srun or "
                           "mpirun with several tasks, else one process")
    dist.add_argument("--num-processes", type=int, default=None, metavar="N", help="how many processes run")
    dist.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 … N-1")
    dist.add_argument("--heartbeat-timeout", type=int, default=100, metavar="S",
                      help="seconds before a silent process fails the run (default 100)")
    return p


def _error(message) -> int:
    print(f"gmmssl: error: {message}", file=sys.stderr)
    return 2


def _os_error(err: OSError, out) -> str:
    where = f" {err.filename}" if err.filename else ""
    return (f"cannot write{where}: {err.strerror or err}; finished chunks in {out}/chunks are kept: free space "
            f"or fix permissions, then rerun the same command")


@contextlib.contextmanager
def _stdout_silenced():
    """Standard output to /dev/null for the duration, Python's and the C++ runtime's alike
    (file descriptor 1: gloo's connection lines come from its own threads), restored after.
    A follower of a distributed run prints nothing: process 0 speaks for all."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import gmmssl.experiments as experiments

    if args.command == "list":
        for name, exp in experiments.REGISTRY.items():
            print(f"{name:12s} {exp.description}")
        return 0

    if args.command == "bench":
        from gmmssl.benchmarks.__main__ import main as bench_main

        return bench_main(args.args)

    if args.command == "report":
        from gmmssl.report import write_open_questions, write_report

        try:
            print(f"wrote {write_report(args.results, args.docs, partial=args.partial)}")
            print(f"wrote {write_open_questions(args.results, args.docs, partial=args.partial)}")
        except ValueError as err:
            return _error(err)
        return 0

    from gmmssl import distributed

    try:
        many = distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                      heartbeat_timeout_s=args.heartbeat_timeout)
    except ValueError as err:
        return _error(err)
    except RuntimeError as err:  # JAX's own (JaxRuntimeError is one): no coordinator, a timeout
        return _error(f"could not start the distributed run: {str(err).splitlines()[0][:300]}")
    if not many:
        return _run(args)
    # every process runs the grid; process 0 alone prints, reads and writes (gmmssl.distributed)
    import jax

    quiet = contextlib.nullcontext() if distributed.is_leader() else _stdout_silenced()
    try:
        with quiet:
            status = _run(args)
    except jax.errors.JaxRuntimeError as err:  # a collective failed: another process died or stalled
        _error(f"process {distributed.process_index()} of {distributed.process_count()}: a collective failed "
               f"({str(err).splitlines()[0][:200]}); another process probably died. Finished chunks are kept: "
               f"rerun the same command with --resume")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)  # not sys.exit: JAX's shutdown barrier would wait for the dead process
    return distributed.agree_status(status)


def _run(args) -> int:
    import gmmssl.experiments as experiments
    from gmmssl import distributed
    from gmmssl.experiment import parse_overrides, resolve_config, run_experiment

    if args.name == "all":
        return _run_all(args)

    try:
        exp = experiments.get(args.name)
        overrides = parse_overrides(args.overrides)
        resolve_config(exp, overrides)
        budget = _budget(args.budget_mb)
    except ValueError as err:
        return _error(err)
    out = Path(args.out or Path("results") / args.name)
    print(f"gmmssl run {args.name} -> {out}/", flush=True)
    try:
        run = run_experiment(exp, out, overrides, progress=lambda line: print("  " + line, flush=True),
                             resume=args.resume, chunk_size=args.chunk_size, budget_bytes=budget,
                             overwrite=args.overwrite, confirm=args.yes, max_hours=args.max_hours)
    except ValueError as err:
        return _error(err)
    except OSError as err:
        return _error(_os_error(err, out))
    from gmmssl import results

    cells = sum(len(next(iter(p.grid.values()))) for p in run.parts)
    reused = json.loads((out / "config.json").read_text()).get("cells_reused", 0) if distributed.is_leader() else 0
    print(f"{cells} cells in {len(run.parts)} static configuration(s), {run.seconds:.1f}s "
          f"(compilation included{f'; {reused} cells reused from stored chunks' if reused else ''})\n")
    print(exp.report(run))
    invalid, diverged = results.invalid_rows(run.rows), results.count_diverged(run.rows)
    if invalid:
        print(f"\nWARNING: {len(invalid)} of {len(run.rows)} rows are invalid ({diverged} diverged: training left "
              f"non-finite values); their metrics are NaN and no claim is scored (column 'diverged' of results.csv)")
    print("\nverdict:")
    for c in run.claims:
        note = f" [{c.note}]" if c.note and c.scored else ""
        print(f"  [{c.verdict}] {c.statement}: {c.measured:.4f} ({c.tolerance}){note}")
    print(f"\nwrote {out}/results.csv, config.json, projectors.npz, verdict.json and figures")
    if invalid or (args.strict and not all(c.passed for c in run.claims)):
        return 1
    return 0


def _budget(mb):
    if mb is None:
        return None
    if not (math.isfinite(mb) and mb > 0):
        raise ValueError(f"--budget-mb must be a positive finite number of MiB, got {mb!r}")
    return int(mb * 2**20)


def _run_all(args) -> int:
    """Every experiment at its default size (``--set`` applies to the experiments that know the key;
    a key that none knows is refused)."""
    import time

    import gmmssl.experiments as experiments
    from gmmssl.experiment import parse_overrides

    start = time.perf_counter()
    status = 0
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as err:
        return _error(err)
    known_anywhere = set().union(*(set(e.defaults) | ({"scale"} if e.presets else set())
                                   for e in experiments.REGISTRY.values()))
    unknown = sorted(set(overrides) - known_anywhere)
    if unknown:
        return _error(f"--set {', '.join(unknown)}: no experiment knows this key; valid keys: "
                      f"{', '.join(sorted(known_anywhere))}")
    for name in experiments.REGISTRY:
        exp = experiments.REGISTRY[name]
        known = [o for o in args.overrides if o.split("=", 1)[0].strip() in exp.defaults
                 or (exp.presets and o.split("=", 1)[0].strip() == "scale")]
        sub = ["run", name, "--out", str(Path(args.out or "results") / name), *sum((["--set", o] for o in known), [])]
        flags = [f for f, on in (("--strict", args.strict), ("--resume", args.resume), ("--overwrite", args.overwrite),
                                 ("--yes", args.yes)) if on]
        flags += ["--max-hours", str(args.max_hours)]
        flags += [] if args.budget_mb is None else ["--budget-mb", str(args.budget_mb)]
        flags += [] if args.chunk_size is None else ["--chunk-size", str(args.chunk_size)]
        status = max(status, _run(_parser().parse_args(sub + flags)))
    print(f"\nall experiments: {time.perf_counter() - start:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
