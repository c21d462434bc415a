"""Sweeps across processes: JAX's distributed runtime, and who touches the files.

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

A process that dies makes the others fail at their next collective ("connection closed
by peer"), or at the latest after the coordination service's heartbeat timeout; the
chunks finished before stay on disk for ``--resume``, which may run on any number of
processes (a chunk stores the cells it holds, not where they were computed).

With one process every function here is the identity: no collective, no cost.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["agree_status", "broadcast", "detect_cluster", "initialize", "is_leader", "on_leader", "process_count",
           "process_index"]


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


def _check_coordinator(address: str) -> str:
    if address == "auto":
        return address
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d+)", address or "")
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"--coordinator must be HOST:PORT (process 0's address and a free port, e.g. "
                         f"10.0.0.1:1234) or 'auto', got {address!r}")
    return address


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, heartbeat_timeout_s: int = 100, initialization_timeout_s: int = 300) -> bool:
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
      initialization_timeout_s: how long to wait for every process to connect.

    Returns:
      True when the run is distributed (more than one process).

    Raises:
      ValueError: the three values given only in part, out of range, or malformed.
    """
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
    for name, value in (("heartbeat timeout", heartbeat_timeout_s), ("initialization timeout", initialization_timeout_s)):
        if isinstance(value, bool) or int(value) < 1:
            raise ValueError(f"the {name} must be a positive number of seconds, got {value!r}")
    kwargs = {"heartbeat_timeout_seconds": int(heartbeat_timeout_s),
              "initialization_timeout": int(initialization_timeout_s)}
    if jax.distributed.is_initialized():
        return jax.process_count() > 1  # already joined (by the caller, or an earlier call)
    if coordinator is None and detect_cluster() is None:
        return False  # one process: nothing to start
    if coordinator is None or coordinator == "auto":  # JAX reads what is not given from the cluster
        jax.distributed.initialize(None, num_processes, process_id, **kwargs)
    else:
        if int(num_processes) == 1:
            return False
        jax.distributed.initialize(coordinator, int(num_processes), int(process_id), **kwargs)
    return jax.process_count() > 1


def _broadcast_bytes(data: bytes) -> bytes:
    from jax.experimental import multihost_utils

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

    return int(np.max(multihost_utils.process_allgather(np.asarray([status], np.int32))))
