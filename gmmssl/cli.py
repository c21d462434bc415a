"""The command line: ``gmmssl list`` and ``gmmssl run NAME [--out DIR] [--set KEY=VALUE ...]``.

Exit statuses of ``run``: 0 done; 1 invalid (diverged) cells, or a failed claim with
``--strict``; 2 refused (bad input, another config in ``--out``, a full disk; in a
distributed run also processes started with other arguments, config or libraries, and a
run whose processes could not connect); 3 another process of a distributed run died or
stopped answering (``--coordinator``; see :mod:`gmmssl.distributed`); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP): the finished chunks are kept for
``--resume``. Each is one line on standard error. Every process of a distributed run that
ends normally exits with the same status.

Signals are handled from the first millisecond (``import gmmssl`` loads nothing heavy): a
signal that arrives while Python runs a garbage-collector callback, a weakref callback or
a finalizer, where an exception is printed and dropped, is delivered again just after it
(``sys.unraisablehook``), and a signal that was still lost stops the run at the next
chunk, never letting it end with status 0.
A closed standard output (``gmmssl run ... | head``) stops the printing, not the run."""
from __future__ import annotations

import _thread
import argparse
import contextlib
import io
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []  # the signals this process received, in order
_deferred: list[bool] = []  # non-empty: a signal is only recorded (during imports)
_in_flight: list[bool] = []  # a run stopped while a computation still ran (gmmssl.sweep.GridTooLarge)


def _on_signal(signum, frame):
    if signum not in _received:
        _received.append(signum)
    if _deferred:
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _unraisable(unraisable) -> None:
    """sys.unraisablehook: a KeyboardInterrupt of :func:`_on_signal` raised where Python
    cannot propagate it (a garbage-collector callback, a weakref callback, a ``__del__``)
    is not printed and dropped but delivered again, 10 ms later, outside it."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _signalled() is not None:
        timer = threading.Timer(0.01, _thread.interrupt_main, (_signalled(),))
        timer.daemon = True
        timer.start()
        return
    _previous_unraisable_hook(unraisable)


_previous_unraisable_hook = sys.unraisablehook


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread (see the module
    docstring); called at start-up, and again once JAX's distributed runtime has replaced
    the SIGTERM handler with its own (which would swallow it)."""
    if threading.current_thread() is threading.main_thread():
        for sig in _HANDLED:
            signal.signal(sig, _on_signal)
        sys.unraisablehook = _unraisable


def _import_heavy() -> None:
    """Imports JAX, numpy and the experiments with signals recorded, not raised (a C
    extension interrupted in its import prints a traceback and fails in other words);
    a signal received meanwhile is raised after."""
    _deferred.append(True)
    try:
        import gmmssl.experiments  # noqa: F401 - jax, numpy, the library
    finally:
        _deferred.clear()
    if _signalled() is not None:
        raise KeyboardInterrupt(signal.Signals(_signalled()).name)


def _signalled() -> int | None:
    """The first signal received, or None."""
    return _received[0] if _received else None


def _say(text: str = "", *, to_err: bool = False) -> None:
    """Prints a line; once standard output is closed (a pipe whose reader left), prints no
    more, and the run goes on."""
    stream = sys.stderr if to_err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, stream.fileno())
            os.close(null)


def _progress(line: str) -> None:
    """The runs' progress callback: a line per chunk, and the check for a signal that was
    received but could not interrupt (:func:`_on_signal`)."""
    if _signalled() is not None:
        raise KeyboardInterrupt(signal.Signals(_signalled()).name)
    _say("  " + line)


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
    rep.add_argument("--only", default=None, metavar="NAMES",
                     help="recompute the sections of these experiments (comma-separated) and keep every other "
                          "section of the existing reports as it is (marked as kept)")
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
    dist.add_argument("--connect-timeout", type=int, default=60, metavar="S",
                      help="seconds to wait for every process to connect at the start (default 60)")
    return p


def _error(message) -> int:
    _say(f"gmmssl: error: {message}", to_err=True)
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
    """The command line; returns the exit status (see the module docstring)."""
    del _received[:], _in_flight[:]
    previous = ({sig: signal.getsignal(sig) for sig in _HANDLED}, sys.unraisablehook)
    install_signal_handlers()
    args = None
    try:
        args = _parser().parse_args(argv)
        _import_heavy()
        return _main(args)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: one line, what was kept, status 128 + the signal
        return _interrupted(args)
    except Exception:
        if _signalled() is None:
            raise
        return _interrupted(args)  # what the signal broke (a C extension's import turns it into ImportError)
    finally:  # a caller's own handlers back (a script or a test calling main)
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous[0].items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            sys.unraisablehook = previous[1]


def entry() -> None:
    """The ``gmmssl`` command: :func:`main`, then exit. After a signal it exits at once: a
    computation still running on a device (the chunk the signal or the time limit
    interrupted) would otherwise hold the process until it finished."""
    status = main()
    if status >= 128 or _in_flight:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def _main(args) -> int:
    import gmmssl.experiments as experiments

    for flag in ("out", "results", "docs"):  # an empty value (an unset shell variable) is not the default folder
        if getattr(args, flag, None) == "" or (getattr(args, flag, None) or "x").isspace():
            return _error(f"--{flag} must name a folder, got {getattr(args, flag)!r}")

    if args.command == "list":
        for name, exp in experiments.REGISTRY.items():
            _say(f"{name:12s} {exp.description}")
        return 0

    if args.command == "bench":
        from gmmssl.benchmarks.__main__ import main as bench_main

        return bench_main(args.args)

    if args.command == "report":
        from gmmssl.report import write_reports

        try:
            only = None if args.only is None else [n for n in args.only.split(",") if n]
            for path in write_reports(args.results, args.docs, partial=args.partial, only=only):  # both, or neither
                _say(f"wrote {path}")
        except ValueError as err:
            return _error(err)
        return 0

    from gmmssl import distributed

    where = (args.coordinator, args.num_processes, args.process_id)
    try:
        distributed.check_arguments(*where, heartbeat_timeout_s=args.heartbeat_timeout,
                                    initialization_timeout_s=args.connect_timeout)
    except ValueError as err:
        return _error(err)
    if not distributed.requested(*where):
        return _run(args)
    # JAX's runtime aborts a process whose peer died: the work runs in a child whose end is one line
    status, line = distributed.run_supervised(
        lambda: _distributed(args), connect_timeout_s=args.connect_timeout,
        resume_hint=f"the finished chunks are kept in {_chunks(args)} on process 0's host: rerun the same command "
                    f"with --resume")
    if line is not None:
        _error(line)
    return status


def _distributed(args) -> int:
    """One process of a distributed run: joins it, checks that every process was started
    alike, runs; process 0 alone prints, reads and writes (gmmssl.distributed)."""
    import jax

    from gmmssl import distributed

    try:
        many = distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                      heartbeat_timeout_s=args.heartbeat_timeout,
                                      initialization_timeout_s=args.connect_timeout)
    except ValueError as err:
        return _error(err)
    except RuntimeError as err:  # JAX's own (JaxRuntimeError is one): the port in use, no coordinator
        return _error(f"could not start the distributed run: {str(err).splitlines()[0][:300]}"
                      f"{_jax_log_cause()}; nothing was run")
    install_signal_handlers()  # JAX's runtime took SIGTERM (its preemption notice), which would swallow it
    if not many:
        return _run(args)
    quiet = contextlib.nullcontext() if distributed.is_leader() else _stdout_silenced()
    try:
        with quiet:
            try:
                distributed.agree(lambda: _command(args), "the command")
            except ValueError as err:
                status = _error(err)
            else:
                status = _run(args)
        return distributed.agree_status(status)
    except jax.errors.JaxRuntimeError as err:  # a collective failed: another process died or stalled
        log = f" (JAX's log: {distributed.log_path()})" if distributed.log_path() else ""
        _error(f"process {distributed.process_index()} of {distributed.process_count()}: a collective failed "
               f"({str(err).splitlines()[0][:200]}){log}; another process probably died. The finished chunks are "
               f"kept in {_chunks(args)} on process 0's host: rerun the same command with --resume")
        distributed.exit_now(3)  # not sys.exit: JAX's shutdown barrier would wait for the dead process
    except KeyboardInterrupt:
        distributed.exit_now(_interrupted(args))
    return 3  # not reached


def _jax_log_cause() -> str:
    from gmmssl import distributed

    log = distributed.log_path()
    try:
        with open(log or "", errors="replace") as f:
            cause = distributed._cause(f.read())
    except OSError:
        return ""
    return f" ({cause})" if cause else ""


def _command(args) -> dict:
    """What every process of a distributed run must share: the experiment, its settings,
    the arguments that change the work or its outcome (not --out: process 0's alone is
    used), and the code and libraries (:func:`gmmssl.experiment.environment`,
    :func:`gmmssl.sweep.numerics`)."""
    from gmmssl import sweep
    from gmmssl.experiment import environment

    sets = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        sets[key.strip()] = value.strip()
    flags = ("resume", "overwrite", "chunk_size", "budget_mb", "yes", "max_hours", "strict")
    return {"experiment": args.name, "--set": sets,
            **{"--" + flag.replace("_", "-"): getattr(args, flag) for flag in flags},
            "environment": {**environment(), **sweep.numerics()}}


def _chunks(args) -> Path:
    """Where a run keeps its finished chunks."""
    if args.name == "all":
        return Path(args.out or "results") / "*" / "chunks"
    return Path(args.out or Path("results") / args.name) / "chunks"


def _is_follower() -> bool:
    """Whether this is a process other than 0 of a distributed run (JAX not imported here:
    a signal may have come during its import)."""
    jax = sys.modules.get("jax")
    try:
        return jax is not None and jax.distributed.is_initialized() and jax.process_index() != 0
    except Exception:  # noqa: BLE001 - a half-imported jax: no distributed run
        return False


def _interrupted(args) -> int:
    """A signal (Ctrl-C, SIGTERM, SIGHUP): one line saying what was kept and how to go on;
    status 128 + the signal's number."""
    sig = _signalled() or signal.SIGINT
    what = "interrupted" if sig == signal.SIGINT else f"stopped by {signal.Signals(sig).name}"
    status = 128 + int(sig)
    if getattr(args, "command", None) != "run":
        _say(f"gmmssl: {what}", to_err=True)
        return status
    chunks = _chunks(args)
    if _is_follower():
        done = None  # process 0's folder
    else:
        pattern = "*/chunks/*/chunk_*.npz" if args.name == "all" else "chunks/*/chunk_*.npz"
        done = len(list(chunks.parent.parent.glob(pattern) if args.name == "all" else chunks.parent.glob(pattern)))
    if done == 0:
        line = "no chunk had finished, nothing is kept: rerun the same command to start again"
    else:
        kept = f"{done} finished chunk(s) kept in {chunks}" if done else f"process 0 keeps the finished chunks in {chunks}"
        line = f"{kept}: rerun the same command with --resume to continue from them"
    _say(f"gmmssl: {what}; {line}", to_err=True)
    return status


def _identity(exp, config) -> dict:
    """The run's identity as :func:`gmmssl.experiment.run_experiment` records it: the
    resolved config, the digests of its input files and the run digest (which covers the
    numerics: float width, precision, backend, versions, gmmssl's source)."""
    import jax

    from gmmssl import experiment, sweep

    with jax.enable_x64(True) if exp.x64 else contextlib.nullcontext():
        numerics = sweep.numerics()
    config = experiment._jsonable_config(config)
    inputs = experiment.input_digests(exp, config)
    return {"config": config, "inputs": inputs, "run": experiment.run_digest(exp.name, config, numerics, inputs)}


def _run(args) -> int:
    import jax

    import gmmssl.experiments as experiments
    from gmmssl import distributed, sweep
    from gmmssl.experiment import parse_overrides, run_experiment, validate_experiment

    try:
        jax.devices()  # JAX starts its backend here: a JAX_PLATFORMS it cannot start is one line
    except (RuntimeError, AssertionError) as err:  # jax 0.10 asserts when no platform asked for is present
        why = str(err).splitlines()[0][:300] if str(err).strip() else "none of the platforms asked for is available"
        return _error(f"JAX could not start a backend: {why} (JAX_PLATFORMS="
                      f"{os.environ.get('JAX_PLATFORMS', '')!r}); nothing was run")
    if args.name == "all":
        return _run_all(args)

    many = jax.distributed.is_initialized() and distributed.process_count() > 1
    agreed_budget = None
    if many and args.budget_mb is None:  # one chunk size on every process: the smallest host's default budget
        agreed_budget = min(distributed.allgather(sweep.default_budget_bytes()))

    def prepare():
        exp = experiments.get(args.name)
        overrides = parse_overrides(args.overrides)
        budget = _budget(args.budget_mb) or agreed_budget
        config = validate_experiment(exp, overrides, budget_bytes=budget)
        return exp, overrides, budget, _identity(exp, config) if many else None

    try:  # in a distributed run: every process's run identity equal, or every process refuses
        exp, overrides, budget, _ = distributed.agree(prepare, "the run's identity", key=lambda v: v[3])
    except ValueError as err:
        return _error(err)
    out = Path(args.out or Path("results") / args.name)
    _say(f"gmmssl run {args.name} -> {out}/")
    try:
        run = run_experiment(exp, out, overrides, progress=_progress,
                             resume=args.resume, chunk_size=args.chunk_size, budget_bytes=budget,
                             overwrite=args.overwrite, confirm=args.yes, max_hours=args.max_hours)
    except ValueError as err:
        if getattr(err, "in_flight", False):
            _in_flight.append(True)
        return _error(err)
    except OSError as err:
        return _error(_os_error(err, out))
    from gmmssl import results

    cells = sum(len(next(iter(p.grid.values()))) for p in run.parts)
    reused = json.loads((out / "config.json").read_text()).get("cells_reused", 0) if distributed.is_leader() else 0
    _say(f"{cells} cells in {len(run.parts)} static configuration(s), {run.seconds:.1f}s "
         f"(compilation included{f'; {reused} cells reused from stored chunks' if reused else ''})\n")
    _say(exp.report(run))
    invalid = results.invalid_rows(run.rows)
    if invalid:
        _say(f"\nWARNING: {len(invalid)} of {len(run.rows)} rows are invalid ({results.divergence_summary(run.rows)}); "
             f"their metrics are NaN and no claim is scored (column 'diverged' of results.csv)")
    _say("\nverdict:")
    for c in run.claims:
        note = f" [{c.note}]" if c.note and c.scored else ""
        _say(f"  [{c.verdict}] {c.statement}: {c.measured:.4f} ({c.tolerance}){note}")
    _say(f"\nwrote {out}/results.csv, config.json, projectors.npz, verdict.json and figures")
    if _signalled() is not None:  # a signal that could not interrupt: the run is finished, but not status 0
        sig = signal.Signals(_signalled())
        _say(f"gmmssl: {sig.name} received during the run, which then finished: {out} holds its complete results",
             to_err=True)
        return 128 + int(sig)
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
    from gmmssl.experiment import parse_overrides, validate_experiment

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
    def known_to(exp):
        return [o for o in args.overrides if o.split("=", 1)[0].strip() in exp.defaults
                or (exp.presets and o.split("=", 1)[0].strip() == "scale")]

    refused = []  # every experiment's config checked before any starts
    for name, exp in experiments.REGISTRY.items():
        try:
            validate_experiment(exp, parse_overrides(known_to(exp)), budget_bytes=_budget(args.budget_mb))
        except ValueError as err:
            refused.append(f"{name}: {err}")
    if refused:
        more = f" (and {len(refused) - 1} more experiment(s) refuse their settings)" if len(refused) > 1 else ""
        return _error(f"run all: nothing started: {refused[0]}{more}")
    for name in experiments.REGISTRY:
        exp = experiments.REGISTRY[name]
        known = known_to(exp)
        sub = ["run", name, "--out", str(Path(args.out or "results") / name), *sum((["--set", o] for o in known), [])]
        flags = [f for f, on in (("--strict", args.strict), ("--resume", args.resume), ("--overwrite", args.overwrite),
                                 ("--yes", args.yes)) if on]
        flags += ["--max-hours", str(args.max_hours)]
        flags += [] if args.budget_mb is None else ["--budget-mb", str(args.budget_mb)]
        flags += [] if args.chunk_size is None else ["--chunk-size", str(args.chunk_size)]
        status = max(status, _run(_parser().parse_args(sub + flags)))
    _say(f"\nall experiments: {time.perf_counter() - start:.0f}s")
    return status


if __name__ == "__main__":
    entry()
