"""One sweep run by several cooperating processes (hosts, GPUs, a TPU slice): JAX's
distributed runtime, who touches the files, and how a failure ends.

One sweep can run as N cooperating processes (hosts of a cluster, GPUs of a node, a TPU
slice, or several processes on one machine): :func:`initialize` starts
``jax.distributed``; after it ``jax.devices()`` lists every process's devices, and the
sweep engine's mesh spans them all, so each chunk's cells are split over every device
of every process (each process computes the cells on its own devices) and the outputs
are gathered to every process (``process_allgather``).

Files: only process 0 (the *leader*) reads or writes the output folder (lock, chunk
files, results). Every step that touches it runs through :func:`on_leader`: the leader
runs it and broadcasts its outcome, a value or the exception it raised, to every
process, which returns or raises the same. So the processes stay in step (the same
collectives in the same order), refuse together, and exit with the same status
(:func:`agree_status`); an output folder shared by the hosts is not needed.

Agreement: :func:`agree` runs a check on every process and compares the outcomes, so that
processes started with other arguments, another config or other library versions refuse
together, before any work, instead of computing different cells under one name.

Failures: JAX's coordination service ends a process itself (a C++ abort, exit status 134,
with a stack trace) when a peer dies, stops answering for the heartbeat timeout, or does
not connect in time; no Python code runs then. :func:`run_supervised` therefore runs the
work in a forked child process whose C++ output goes to a log file, and turns the child's
end into one line and a defined status. The chunks finished before a failure stay on disk
for ``--resume``, which may run on any number of processes (a chunk stores the cells it
holds, not where they were computed).

With one process every function here is the identity: no collective, no cost.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import select
import signal
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["agree", "agree_status", "allgather", "broadcast", "check_arguments", "consistent_programs",
           "detect_cluster", "exit_now", "initialize", "is_leader", "log_path", "on_leader", "process_count",
           "process_index", "requested", "run_supervised"]


def process_count() -> int:
    """The number of processes of the run (1 unless :func:`initialize` joined several)."""
    return jax.process_count()


def process_index() -> int:
    """This process's index, 0 … :func:`process_count` − 1."""
    return jax.process_index()


def is_leader() -> bool:
    """True on process 0, the one that reads and writes files."""
    return jax.process_index() == 0


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def detect_cluster() -> str | None:
    """The cluster launcher whose environment says this is one of several processes:
    "slurm" (inside ``srun`` with more than one task), "openmpi" (``mpirun -n N``, N > 1),
    "tpu" (a multi-host TPU slice: TPU_WORKER_HOSTNAMES lists several hosts), else None.

    A SLURM batch script's own shell (outside ``srun``) is not detected: it is one
    process even when the job has several tasks.
    """
    if ("SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ) and \
            max(_int_env("SLURM_STEP_NUM_TASKS"), _int_env("SLURM_NTASKS")) > 1:
        return "slurm"
    if _int_env("OMPI_COMM_WORLD_SIZE") > 1:
        return "openmpi"
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return "tpu"
    return None


SOURCE_PATH_REGEX = r".*[/\\]"
"""What :func:`consistent_programs` removes from the source paths in compiled programs'
metadata: every directory, so that a file keeps its base name only."""


def consistent_programs() -> None:
    """Makes every process of a distributed run compile the same programs, and compile
    them itself; numbers do not change, only the programs' debug metadata and where they
    come from:

    * source paths in the programs' metadata keep their base names only (JAX's
      ``jax_hlo_source_file_canonicalization_regex``, set to :data:`SOURCE_PATH_REGEX`
      unless the user set one);
    * JAX's persistent compilation cache is off in this process.

    Why: with jaxlib 0.12, a collective across processes waits for ever (gloo's
    30-minute timeout) when the program's source metadata differs from what the process
    itself lowers: two processes whose code lies at different paths (two checkouts or
    virtual environments, hosts that install gmmssl in different folders), or a program
    taken from a compilation cache written by a checkout elsewhere (the cache's key
    leaves that metadata out, so the stale program is taken). Both were measured on
    2026-12-07, with jaxlib 0.12.1 on the CPU (gloo); jaxlib 0.10.2 did not wait. Applied on
    every backend: whether GPU (NCCL) or TPU collectives wait the same way is unmeasured,
    and the cost is only recompiling gmmssl's programs in each run (seconds).
    :func:`initialize` (when it joins several processes), every collective of this module
    and a sweep over several processes call it before they compile; a single process is
    left as it is."""
    if jax.config.jax_hlo_source_file_canonicalization_regex is None:
        jax.config.update("jax_hlo_source_file_canonicalization_regex", SOURCE_PATH_REGEX)
    if getattr(jax.config, "jax_enable_compilation_cache", False):
        jax.config.update("jax_enable_compilation_cache", False)
        try:  # JAX decides once per process whether to use the cache: forget that decision
            from jax._src import compilation_cache
        except ImportError:
            return
        reset = getattr(compilation_cache, "reset_cache", None)
        if reset is not None:
            reset()


def _check_coordinator(address: str) -> str:
    if address == "auto":
        return address
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d+)", address or "")
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"--coordinator must be HOST:PORT (process 0's address and a free port, e.g. "
                         f"10.0.0.1:1234) or 'auto', got {address!r}")
    return address


def check_arguments(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                    *, heartbeat_timeout_s: int = 100, initialization_timeout_s: int = 60) -> None:
    """Raises ValueError, in one line, for distributed arguments that cannot work: the
    three given only in part, out of range or malformed, a timeout that is not a positive
    number of seconds. Touches nothing (no device, no network)."""
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and coordinator != "auto":
        if any(v is None for v in explicit):
            raise ValueError("--coordinator, --num-processes and --process-id go together: give all three "
                             "(or --coordinator auto on a cluster JAX detects)")
        _check_coordinator(coordinator)
        if isinstance(num_processes, bool) or int(num_processes) < 1:
            raise ValueError(f"--num-processes must be a positive integer, got {num_processes!r}")
        if isinstance(process_id, bool) or not 0 <= int(process_id) < int(num_processes):
            raise ValueError(f"--process-id must be in [0, {num_processes}) (one per process), got {process_id!r}")
    for name, value in (("heartbeat timeout", heartbeat_timeout_s), ("connect timeout", initialization_timeout_s)):
        if isinstance(value, bool) or int(value) < 1:
            raise ValueError(f"the {name} must be a positive number of seconds, got {value!r}")


def requested(coordinator: str | None = None, num_processes: int | None = None,
              process_id: int | None = None) -> bool:
    """Whether :func:`initialize` with these arguments would start JAX's distributed
    runtime (several processes), rather than run as one process."""
    if coordinator == "auto":
        return True
    if coordinator is None and num_processes is None and process_id is None:
        return detect_cluster() is not None
    return num_processes is not None and int(num_processes) > 1


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, heartbeat_timeout_s: int = 100, initialization_timeout_s: int = 60) -> bool:
    """Joins the processes of a distributed run (``jax.distributed.initialize``); call it
    before anything touches a device.

    Args:
      coordinator: "HOST:PORT" of process 0 (it listens there; the others connect), with
        ``num_processes`` and ``process_id`` (0 … N−1, each process its own). "auto": let
        JAX read what is not given from the cluster's environment (SLURM, Open MPI, TPU,
        Kubernetes).
        None with the other two None: start only when :func:`detect_cluster` finds a
        launcher that started several processes; otherwise run as one process.
      heartbeat_timeout_s: how long the coordination service waits for a silent process
        before failing the run (a killed process is usually noticed at once, by the next
        collective).
      initialization_timeout_s: how long to wait for every process to connect (JAX's
        ``initialization_timeout``; its own default is 300 s). When it passes, JAX's
        runtime ends the process (see :func:`run_supervised`).

    Returns:
      True when the run is distributed (more than one process).

    Raises:
      ValueError: the three values given only in part, out of range, or malformed
        (:func:`check_arguments`).
    """
    check_arguments(coordinator, num_processes, process_id, heartbeat_timeout_s=heartbeat_timeout_s,
                    initialization_timeout_s=initialization_timeout_s)
    kwargs = {"heartbeat_timeout_seconds": int(heartbeat_timeout_s),
              "initialization_timeout": int(initialization_timeout_s)}
    if jax.distributed.is_initialized():
        return jax.process_count() > 1  # already joined (by the caller, or an earlier call)
    if coordinator is None and detect_cluster() is None:
        return False  # one process: nothing to start
    if coordinator not in (None, "auto") and int(num_processes) == 1:
        return False  # one process: nothing to start, and nothing to change
    consistent_programs()  # before anything is compiled (see there)
    if coordinator is None or coordinator == "auto":  # JAX reads what is not given from the cluster
        jax.distributed.initialize(None, num_processes, process_id, **kwargs)
    else:
        jax.distributed.initialize(coordinator, int(num_processes), int(process_id), **kwargs)
    _report(f"joined {jax.process_index()} {jax.process_count()}")
    return jax.process_count() > 1


def _broadcast_bytes(data: bytes) -> bytes:
    from jax.experimental import multihost_utils

    consistent_programs()  # also where the caller joined with jax.distributed.initialize

    n = int(multihost_utils.broadcast_one_to_all(np.asarray(len(data), np.int32)))
    size = 1 << max(n - 1, 0).bit_length()  # padded to a power of two: few distinct programs
    buf = np.zeros(size, np.uint8)
    if is_leader():
        buf[:n] = np.frombuffer(data, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf))[:n].tobytes()


def broadcast(obj: Any) -> Any:
    """Process 0's ``obj`` on every process (pickled; the others' argument is ignored).
    The identity on one process."""
    if process_count() == 1:
        return obj
    return pickle.loads(_broadcast_bytes(pickle.dumps(obj) if is_leader() else b""))


def on_leader(fn: Callable[[], Any]) -> Any:
    """Runs ``fn()`` on process 0 only and gives every process its outcome: the value it
    returned, or the exception it raised, raised on every process. Every process must
    call it at the same point (it is a collective)."""
    if process_count() == 1:
        return fn()
    outcome: tuple = (True, None)
    if is_leader():
        try:
            outcome = (True, fn())
        except Exception as err:  # noqa: BLE001 - re-raised below, on every process
            try:
                pickle.dumps(err)
                outcome = (False, err)
            except Exception:  # noqa: BLE001 - an exception that cannot travel: its text does
                outcome = (False, RuntimeError(f"{type(err).__name__}: {err}"))
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return value


def agree_status(status: int) -> int:
    """The largest exit status over all processes (so every process exits with it)."""
    if process_count() == 1:
        return status
    from jax.experimental import multihost_utils

    consistent_programs()
    return int(np.max(multihost_utils.process_allgather(np.asarray([status], np.int32))))


def _allgather_bytes(data: bytes) -> list[bytes]:
    from jax.experimental import multihost_utils

    consistent_programs()

    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(data)], np.int32))).reshape(-1)
    size = 1 << max(int(sizes.max()) - 1, 0).bit_length()  # padded to a power of two: few distinct programs
    buf = np.zeros(size, np.uint8)
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), size)
    return [rows[i, :int(n)].tobytes() for i, n in enumerate(sizes)]


def allgather(obj: Any) -> list:
    """Every process's ``obj`` (pickled), in process order, on every process. Every process
    must call it at the same point (it is a collective). ``[obj]`` on one process."""
    if process_count() == 1:
        return [obj]
    return [pickle.loads(b) for b in _allgather_bytes(pickle.dumps(obj))]


def _plain(value):
    """A JSON-able value as JSON reads it back (tuples as lists, keys as strings), so that
    equal values compare equal whatever container types built them."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _leaves(value, path: str = "") -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{path} {k}".strip()))
        return out
    return {path: value}


def _differences(mine, leader, index: int) -> list[str]:
    """["name (process 0: value, process i: value)", ...] between two plain values."""
    a, b = _leaves(leader), _leaves(mine)

    def shown(leaves, k):
        return repr(leaves[k]) if k in leaves else "not given"

    return [f"{k or 'value'} (process 0: {shown(a, k)}, process {index}: {shown(b, k)})"
            for k in sorted(set(a) | set(b)) if a.get(k, a) != b.get(k, a)]


def agree(fn: Callable[[], Any], what: str, key: Callable[[Any], Any] | None = None) -> Any:
    """Runs ``fn()`` on every process and returns its value when every process's value
    (or ``key(value)``) equals process 0's, compared as JSON. Otherwise raises, on every
    process, one ValueError naming what differs, process by process; a ValueError that
    ``fn`` raised on some process is raised on every process (the first such process's,
    named).

    Every process must call it at the same point (it is a collective); on one process it
    is ``fn()``. ``what`` names the compared thing in the message ("the command")."""
    if process_count() == 1:
        return fn()
    try:
        value, outcome = fn(), None
        mine = _plain(value if key is None else key(value))
    except ValueError as err:
        value, mine, outcome = None, None, str(err)
    everyone = allgather((mine, outcome))
    for i, (_, error) in enumerate(everyone):
        if error is not None:
            same = all(e == error for _, e in everyone)
            raise ValueError(error if same else f"process {i} of {len(everyone)}: {error}")
    diffs = [d for i, (v, _) in enumerate(everyone) if v != everyone[0][0] for d in _differences(v, everyone[0][0], i)]
    if diffs:
        text = "; ".join(diffs)
        if len(text) > 600:
            text = text[:597] + "..."
        raise ValueError(f"the {len(everyone)} processes differ in {what} (every process must run the same "
                         f"command with the same gmmssl and libraries; only --process-id differs), nothing was run: "
                         f"{text}")
    return value


# ------------------------------------------------------------------ the supervising process

_channel: dict = {}  # in a supervised child: {"fd": status pipe, "log": path of the C++ log}


def _report(event: str) -> None:
    """Tells the supervising process (:func:`run_supervised`) an event; nothing when unsupervised."""
    fd = _channel.get("fd")
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, (event + "\n").encode())


def log_path() -> str | None:
    """The file that receives JAX's C++ log in a supervised child, else None."""
    return _channel.get("log")


def exit_now(status: int) -> None:
    """Ends this process at once with ``status``, after its own line was printed: not
    through Python's exit, whose JAX shutdown barrier would wait for a dead process."""
    _report(f"exit {status}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def _text_stream(fd: int, like, line_buffering: bool):
    """A text stream on ``fd`` with the encoding of ``like`` (sys.stdout or sys.stderr)."""
    return io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "w")), encoding=getattr(like, "encoding", None) or "utf-8",
                            errors=getattr(like, "errors", None) or "strict", line_buffering=line_buffering,
                            write_through=bool(getattr(like, "write_through", False)))


def _can_fork() -> bool:
    """Only before JAX has started a backend (its threads and the device runtime must not
    be copied by fork) and where fork exists."""
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", lambda: True)()
    return hasattr(os, "fork") and not started and not jax.distributed.is_initialized()


# What JAX's log says, first match wins: (text in the log, why, in words). Seen with jaxlib 0.10.2 and 0.12.
_CAUSES = (
    ("Failed to add port", "the coordinator's port is in use on process 0's host (choose another free port)"),
    ("more recent barrier call", "two processes were given the same --process-id"),
    ("stopped sending heartbeats", "a process stopped answering (no heartbeat within --heartbeat-timeout)"),
    ("CoordinationService/Heartbeat", "process 0 (the coordinator) stopped answering within --heartbeat-timeout, "
                                      "or its host went away"),
    ("RegisterTask", "not every process connected within --connect-timeout (a process not started, a wrong "
                     "--coordinator, --num-processes or --process-id, or a blocked port)"),
    ("Socket closed", "the connection to another process was lost (it died, or its host went away)"),
    ("Connection reset", "the connection to another process was lost (it died, or its host went away)"),
    ("another task died", "another process died or stopped answering"),
)


def _cause(log: str) -> str | None:
    """Why JAX's runtime failed, in words, from its log; None when the log does not say."""
    for text, why in _CAUSES:
        if text in log:
            return why
    for line in log.splitlines():  # else JAX's first fatal or error line, shortened
        if line[:1] in "FE" and line[1:5].isdigit() and "] " in line:
            return "JAX: " + line.split("] ", 1)[1][:200]
    return None


def _ended(code: int) -> str:
    """How the child ended, in words (``code`` as :func:`os.waitstatus_to_exitcode` gives it)."""
    if code >= 0:
        return f"exit status {code}"
    name = signal.Signals(-code).name
    if -code == signal.SIGABRT:
        return "JAX's runtime aborted the process"
    if -code == signal.SIGKILL:
        return "the process was killed with SIGKILL: out of memory, or by a user or the scheduler"
    return f"the process ended by {name}"


def run_supervised(work: Callable[[], int], *, connect_timeout_s: float,
                   resume_hint: str) -> tuple[int, str | None]:
    """Runs ``work()`` (which joins the distributed run with :func:`initialize` and returns
    an exit status) in a forked child process; returns (exit status, the line to print, or
    None when the child printed its own), so that every end of the child is one line and
    a defined status, also when JAX's C++ runtime aborts it (a peer died or stopped
    answering, processes that do not connect, a port in use):

    * the child's standard error for Python (its own lines, warnings) is this process's;
      its C++ output (JAX's and gloo's logs, a stack trace) goes to a log file, removed
      after a clean end and named in the line otherwise;
    * a child that ends through :func:`exit_now` or by returning from ``work`` has printed
      its own line: its status is returned;
    * a child that ends otherwise (aborted, killed) before it joined: one line, status 2;
      after it joined: one line, status 3 (``resume_hint`` says what was kept);
    * SIGINT, SIGTERM and SIGHUP sent to this process go to the child (a second SIGINT
      kills it); the child runs in its own process group, so a terminal's Ctrl-C reaches
      it once, through this process;
    * when this process dies (kill -9), the child ends at once, so its peers stop too;
    * a child that has not joined ``connect_timeout_s`` + 60 s after its start is killed.

    Where fork is not available, or JAX has already started a backend in this process,
    ``work()`` runs here, unsupervised.
    """
    if not _can_fork():
        return work(), None
    fd, log = tempfile.mkstemp(prefix="gmmssl-distributed-", suffix=".log")
    status_r, status_w = os.pipe()
    life_r, life_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():  # Python >= 3.12 warns of any thread; here only numpy's idle BLAS pool
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: does the work, never returns into the caller
        status = 1
        try:
            os.close(status_r)
            os.close(life_w)
            os.setpgid(0, 0)
            # C++ output (absl's log, gloo's lines, a stack trace) to the log file, Python's to the user
            user_out, user_err = os.dup(1), os.dup(2)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            sys.stdout = _text_stream(user_out, sys.stdout, line_buffering=sys.stdout.line_buffering)
            sys.stderr = _text_stream(user_err, sys.stderr, line_buffering=True)
            _channel.update(fd=status_w, log=log)

            def orphaned():  # the supervising process died: stop, so that the peers stop too
                with contextlib.suppress(OSError):
                    os.read(life_r, 1)
                os._exit(3)

            threading.Thread(target=orphaned, daemon=True).start()
            status = work()
            _report(f"exit {status}")
            if jax.distributed.is_initialized():
                with contextlib.suppress(Exception):
                    jax.distributed.shutdown()  # the shutdown barrier: every process ends together
        except SystemExit as err:
            status = err.code if isinstance(err.code, int) else 1
            _report(f"exit {status}")
        except BaseException:  # noqa: BLE001 - a bug: its traceback, as one process would show it
            import traceback

            traceback.print_exc()
            status = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    with contextlib.suppress(OSError):  # also here: a Ctrl-C right after the fork reaches the child once
        os.setpgid(pid, pid)
    os.close(fd)
    os.close(status_w)
    os.close(life_r)
    forwarded: list[int] = []

    def forward(sig, _frame):
        forwarded.append(sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if forwarded.count(signal.SIGINT) > 1 else sig)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in handled}
    events: dict = {}
    deadline = time.monotonic() + float(connect_timeout_s) + 60.0
    stalled = False
    try:
        buffer = b""
        while True:
            ready, _, _ = select.select([status_r], [], [], 1.0)
            if ready:
                data = os.read(status_r, 4096)
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    name, _, rest = line.decode().partition(" ")
                    events[name] = rest
            elif "joined" not in events and time.monotonic() > deadline and not stalled:
                stalled = True
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                _, wait_status = os.waitpid(pid, 0)
                break
            except ChildProcessError:
                wait_status = 0
                break
    finally:
        os.close(status_r)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = os.waitstatus_to_exitcode(wait_status)
    if "exit" in events:
        status = int(events["exit"])
        if status in (0, 1, 2) or status >= 128:  # its own line said it all
            os.unlink(log)
        os.close(life_w)
        return status, None
    os.close(life_w)
    text = ""
    with contextlib.suppress(OSError):
        with open(log, errors="replace") as f:
            text = f.read()
    joined = events.get("joined", "").split()
    who = f"process {joined[0]} of {joined[1]}" if joined else "this process"
    if code < 0 and forwarded:  # ended by a signal sent to this process (a second Ctrl-C: killed)
        sig = signal.SIGINT if signal.SIGINT in forwarded else forwarded[-1]
        os.unlink(log)
        return 128 + int(sig), f"{who}: interrupted ({signal.Signals(sig).name}); {resume_hint}"
    if stalled:
        return 2, (f"could not join the distributed run: not every process connected within {connect_timeout_s:g} s "
                   f"(--connect-timeout); nothing was run (JAX's log: {log})")
    cause = _cause(text)
    if not joined:
        return 2, (f"could not join the distributed run: {cause or _ended(code)}; nothing was run "
                   f"({_ended(code) + '; ' if cause else ''}JAX's log: {log})")
    return 3, (f"{who}: the distributed run failed: {cause or _ended(code)} "
               f"({_ended(code) + '; ' if cause else ''}JAX's log: {log}); {resume_hint}")
