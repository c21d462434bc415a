"""Sweeps across processes (gmmssl.distributed): two processes of two CPU devices each on
127.0.0.1, with JAX's distributed runtime and CPU collectives (gloo)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from gmmssl import distributed, results
from gmmssl.cli import main
from tiny import CHUNKED, TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, tmp, num_processes=2, *, started=None, extra=None):
    """The same command on ``num_processes`` processes of 2 CPU devices each (only the
    process ids in ``started``, if given; ``extra`` {process id: more arguments}); their
    temporary files (the log of JAX's C++ output, gmmssl.distributed) in ``tmp``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp),
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", "gmmssl.cli", *args, *(extra or {}).get(i, []),
                              "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
                              "--process-id", str(i)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for i in (range(num_processes) if started is None else started)]


def _worker(proc, timeout=30.0):
    """The child process that does the work of a distributed ``gmmssl run`` (see
    gmmssl.distributed.run_supervised), None once it is gone."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        except OSError:
            return None
        if children:
            return int(children[0])
        time.sleep(0.05)
    return None


def _wait_for_line(procs, text, timeout=240.0) -> None:
    """Reads process 0's standard output until a line holds ``text``; a run that has not
    printed it within ``timeout`` seconds (a hung collective waits 30 minutes) is killed,
    every process, and the test fails at once."""
    found = threading.Event()

    def read():
        for line in procs[0].stdout:
            if text in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if found.is_set():
        return
    hung = reader.is_alive()
    for p in procs:  # a supervisor killed takes its worker with it (gmmssl.distributed.run_supervised)
        p.kill()
    pytest.fail(f"process 0 did not print {text!r} within {timeout:g} s" if hung else
                f"process 0 ended without printing {text!r}: {procs[0].wait()} {procs[0].stderr.read()[-2000:]}")


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][:1] != "Z"
    except OSError:
        return False


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _finish(procs, timeout=240):
    return [(p.wait(timeout=timeout), p.stdout.read(), p.stderr.read()) for p in procs]


def _cell(row):
    return row["method"], row["delta"], row["seed"]


def _assert_close(folder, reference, tol=1e-6):
    """The reference's cells (a cell's numbers depend on its own values only) have the same
    labels and every number within tol·max(1, |value|) (a float32 value of 48 is only
    resolved to 3.8e-6), and the same projectors within tol."""
    got = {_cell(r): r for r in results.read_csv(folder / "results.csv")}
    want = results.read_csv(reference / "results.csv")
    for b in want:
        a = got[_cell(b)]
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float):
                assert abs(a[k] - b[k]) <= tol * max(1.0, abs(b[k])) or (np.isnan(a[k]) and np.isnan(b[k])), \
                    (k, a[k], b[k])
            else:
                assert a[k] == b[k], (k, a[k], b[k])
    with np.load(folder / "projectors.npz") as p, np.load(reference / "projectors.npz") as q:
        assert sorted(p.files) == sorted(q.files)
        where = {(d, s): i for i, (d, s) in enumerate(zip(p["grid_delta"], p["grid_seed"]))}
        rows = [where[(d, s)] for d, s in zip(q["grid_delta"], q["grid_seed"])]
        for k in p.files:
            np.testing.assert_allclose(p[k][rows], q[k], rtol=0, atol=tol, err_msg=k)


def _cpu_reference(finished_chunked, folder):
    """The single-process run of ``CHUNKED`` (4 seeds, one cell per chunk) on one CPU device,
    as the processes below compute on CPU devices with one cell per device: the shared run
    when this process runs on the CPU, else the same command in a subprocess on the CPU (an
    accelerator rounds differently: its float32 numbers differ from the CPU's by about 1e-6
    after the run's 100 steps, measured on an H200)."""
    import jax

    if jax.default_backend() == "cpu":
        return finished_chunked
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "gmmssl.cli", "run", "pancakes", "--out", str(folder), *CHUNKED],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_two_processes_leader_killed_midway_then_resumed_give_the_single_process_results(tmp_path, finished_chunked):
    # the same cells, one per device, on one device in one process (docs/scaling.md, "Several processes":
    # a cell's numbers are the same when each device runs as many cells at once)
    one = _cpu_reference(finished_chunked, tmp_path / "one")
    out = tmp_path / "two"
    # 4 seeds: 3 chunks of 4 cells, one per device
    args = ["run", "pancakes", "--out", str(out), *TINY, "--set", "seeds=4", "--chunk-size", "4",
            "--heartbeat-timeout", "20"]

    # process 0, the leader, is killed (kill -9) as soon as it reports the first chunk stored
    # (two remain): the follower ends in one line and status 3 (it was a 20-line C++ abort)
    procs = _launch(args, tmp_path)
    worker = _worker(procs[0])
    assert worker is not None, "no worker process under process 0 (gmmssl.distributed.run_supervised)"
    _wait_for_line(procs, "chunk 1/3")
    procs[0].send_signal(signal.SIGKILL)
    killed = time.time()
    status = procs[1].wait(timeout=60)
    waited = time.time() - killed
    procs[0].wait()
    line = _one_line(procs[1].stderr.read())
    assert status == 3 and waited < 60, (status, waited, line)
    assert line.startswith("gmmssl: error: process 1 of 2") and "--resume" in line, line
    assert not _alive(worker)  # the killed process's worker did not outlive it
    # nothing is marked finished that is not: no outputs, the run still pending, its chunk kept
    assert not (out / "verdict.json").exists() and not (out / "results.csv").exists()
    assert (out / ".pending.json").exists()
    chunks = sorted(p.name for p in (out / "chunks" / "all").glob("chunk_*.npz"))
    assert chunks[:1] == ["chunk_000000000-000000004.npz"] and len(chunks) < 3, chunks

    # a refusal on process 0 (another config) is every process's, with the same status
    refused = _finish(_launch([*args, "--set", "steps=200", "--resume"], tmp_path))
    assert [s for s, _, _ in refused] == [2, 2], [e[-2000:] for _, _, e in refused]
    assert all("different config" in _one_line(e) for _, _, e in refused)

    # resumed on two processes: finished, the single-process numbers, process 0 alone prints
    (s0, out0, err0), (s1, out1, err1) = _finish(_launch([*args, "--resume"], tmp_path))
    assert (s0, s1) == (0, 0), (err0[-2000:], err1[-2000:])
    assert "cells reused from stored chunks" in out0 and "verdict:" in out0
    assert out1 == "" and err0 == err1 == ""  # process 0 speaks for all (gloo's own lines included)
    assert len(json.loads((out / "config.json").read_text())["environment"]["devices"]) == 4
    # every cell, those at delta = 0 and those computed before the kill included: the same
    # numbers, bit for bit, as one process computing one cell per device
    _assert_close(out, one, tol=0.0)


@pytest.mark.slow
def test_sigterm_to_the_leader_stops_every_process_in_one_line(tmp_path):
    """JAX's distributed runtime installs its own SIGTERM handler (a preemption notice),
    which swallowed the signal: the audit's run went on and exited 0. Now the leader stops
    with status 143 and one line, the follower with status 3 and one line, and nothing is
    marked finished."""
    out = tmp_path / "run"
    args = ["run", "pancakes", "--out", str(out), *TINY, "--set", "seeds=4", "--chunk-size", "4",
            "--heartbeat-timeout", "20"]
    procs = _launch(args, tmp_path)
    _wait_for_line(procs, "chunk 1/3")
    procs[0].send_signal(signal.SIGTERM)
    (s0, _, err0), (s1, _, err1) = _finish(procs, timeout=120)
    assert s0 == 128 + signal.SIGTERM and _one_line(err0).startswith("gmmssl: stopped by SIGTERM;"), (s0, err0)
    assert s1 == 3 and _one_line(err1).startswith("gmmssl: error: process 1 of 2"), (s1, err1)
    assert not (out / "verdict.json").exists() and not (out / "results.csv").exists()
    assert (out / "chunks" / "all" / "chunk_000000000-000000004.npz").exists()


def test_processes_started_differently_not_started_or_stopped_end_in_one_line(tmp_path):
    """Three distributed runs at once (their waits overlap): two processes started with
    other arguments refuse before any work; a process whose peer never starts gives up
    after --connect-timeout; a run whose peer is stopped (SIGSTOP) ends after
    --heartbeat-timeout. Each was a wrong number with status 0, a 300 s wait then a C++
    abort, or a C++ abort."""
    start = time.time()
    base = ["run", "pancakes", *TINY]
    differ = _launch([*base, "--out", str(tmp_path / "differ")], tmp_path,
                     extra={1: ["--set", "separation=0.3", "--chunk-size", "2"]})
    alone = _launch([*base, "--out", str(tmp_path / "alone"), "--connect-timeout", "2"], tmp_path, started=[0])
    stopped = _launch([*base, "--out", str(tmp_path / "stopped"), "--heartbeat-timeout", "3"], tmp_path)
    follower = _worker(stopped[1])
    assert follower is not None, "no worker process under the follower (gmmssl.distributed.run_supervised)"
    try:
        assert stopped[0].stdout.readline().startswith("gmmssl run pancakes")  # both joined and agreed
        os.kill(follower, signal.SIGSTOP)
        stopped_at = time.time()
        status = stopped[0].wait(timeout=60)
        waited = time.time() - stopped_at
    finally:
        stopped[1].kill()
        os.kill(follower, signal.SIGKILL)
        stopped[1].wait()
    line = _one_line(stopped[0].stderr.read())
    assert status == 3 and waited < 30, (status, waited, line)
    assert "process 0 of 2" in line and "stopped answering" in line and "--resume" in line, line

    for status, out, err in _finish(differ):
        line = _one_line(err)
        assert status == 2 and out == "", (status, out, line)
        assert "differ in the command" in line and "nothing was run" in line, line
        assert "--chunk-size (process 0: None, process 1: 2)" in line, line
        assert "--set separation (process 0: not given, process 1: '0.3')" in line, line
    assert not (tmp_path / "differ").exists()  # refused before any work

    [(status, out, err)] = _finish(alone)
    line = _one_line(err)
    assert status == 2 and "could not join" in line and "--connect-timeout" in line, line
    assert not (tmp_path / "alone").exists()
    assert time.time() - start < 60


_PAIR_SCRIPT = """
import os
import sys

import numpy as np

mode, coordinator, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "jax":  # JAX's own calls, as a program without gmmssl makes them
    import jax
    from jax.experimental import multihost_utils

    jax.distributed.initialize(coordinator, 2, pid, initialization_timeout=60)
    values = [int(multihost_utils.broadcast_one_to_all(np.asarray(7 if pid == 0 else 0, np.int32)))]
else:
    from gmmssl import distributed

    distributed.initialize(coordinator, 2, pid, initialization_timeout_s=60)
    values = [distributed.broadcast(7 if distributed.is_leader() else 0), *distributed.allgather(pid)]
os.write(1, ("result=" + ",".join(map(str, values)) + "\\n").encode())  # one write: gloo's lines cannot cut it
"""


def _pair(tmp_path, mode, folders, cache):
    """The script above run as processes 0 and 1 from ``folders`` (its copies there), with
    ``cache`` as JAX's persistent compilation cache; the values each one printed.
    Killed after 90 s: a hung collective would wait 30 minutes."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    env.pop("JAX_HLO_SOURCE_FILE_CANONICALIZATION_REGEX", None)
    port = _free_port()
    procs = []
    for pid, folder in enumerate(folders):
        script = tmp_path / folder / "pair.py"
        script.parent.mkdir(exist_ok=True)
        script.write_text(_PAIR_SCRIPT)
        procs.append(subprocess.Popen([sys.executable, str(script), mode, f"127.0.0.1:{port}", str(pid)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        done = [p.communicate(timeout=90) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{mode} from {folders}: the processes' first collective did not finish within 90 s")
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in done]
    # gloo prints its own lines to the same output, before or after
    return [re.findall(r"result=([\d,]+)", o) for o, _ in done]


def test_processes_whose_code_lies_at_different_paths_or_comes_from_a_stale_cache_agree(tmp_path):
    """With jaxlib 0.12, a collective across processes waited 30 minutes when the
    program's source metadata differed from what the process lowered: code at two paths
    (two checkouts, or hosts that install gmmssl in different folders), or a program from a
    compilation cache written by code elsewhere. CI hung this way. gmmssl.distributed
    makes the programs path-independent and compiles them in each process
    (consistent_programs); jaxlib 0.10 never waited."""
    cache = tmp_path / "cache"
    # JAX's own calls from a/: the cache now holds the scalar broadcast, with a/'s paths
    assert _pair(tmp_path, "jax", ["a", "a"], cache) == [["7"]] * 2
    # gmmssl's broadcast and gather from b/ (that cache's key leaves the paths out), then from two folders
    assert _pair(tmp_path, "gmmssl", ["b", "b"], cache) == [["7,0,1"]] * 2
    assert _pair(tmp_path, "gmmssl", ["b", "c"], tmp_path / "empty") == [["7,0,1"]] * 2


@pytest.mark.parametrize("log, cause", [
    ("E1204 add_port.cc:83] Failed to add port to server: No address added", "port is in use"),
    ("F1204 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most "
     "likely indicates that another task died; see the other task logs. absl::Status: DEADLINE_EXCEEDED: Deadline "
     "Exceeded\n\nRPC: /xla.coordination.CoordinationService/RegisterTask", "--connect-timeout"),
    ("E1204 coordination_service.cc:1549] Use error polling to propagate the following error to all tasks: "
     "UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):", "stopped answering"),
    ("F1204 client.h:80] Terminating process ... another task died ... absl::Status: DEADLINE_EXCEEDED\n\n"
     "RPC: /xla.coordination.CoordinationService/Heartbeat", "process 0 (the coordinator) stopped answering"),
    ("W1204 preemption_sync_manager.cc:147] Failed to retrieve preemption notice: UNAVAILABLE: Socket closed\n"
     "F1204 client.h:80] Terminating process ... another task died", "connection to another process was lost"),
    ("E1204 foo.cc:1] something new", "JAX: something new"),
    ("", None),
])
def test_causes_read_from_jax_log(log, cause):
    """The words of the one line that a supervised process's end gets (the texts are JAX's
    log lines of jaxlib 0.10.2 and 0.12, shortened)."""
    got = distributed._cause(log)
    assert (got is None) if cause is None else (cause in got), got


def test_ctrl_c_keeps_the_finished_chunks_in_one_line(tmp_path):
    """SIGINT after the first chunk: one line (it was a 31-line KeyboardInterrupt traceback)
    saying what is kept and how to go on, status 130; the chunk is on disk."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gmmssl.cli", "run", "pancakes", "--out", str(out), *CHUNKED],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if "chunk 1/12" in line:
            proc.send_signal(signal.SIGINT)
            break
    status = proc.wait(timeout=60)
    line = _one_line(proc.stderr.read())
    assert status == 130, (status, line)
    assert line.startswith("gmmssl: interrupted;") and f"kept in {out / 'chunks'}" in line and "--resume" in line, line
    assert (out / "chunks" / "all" / "chunk_000000000-000000001.npz").exists()
    assert not (out / "results.csv").exists()


def test_one_process_functions_are_the_identity():
    assert distributed.process_count() == 1 and distributed.is_leader()
    assert distributed.broadcast({"a": [1, 2]}) == {"a": [1, 2]}
    assert distributed.on_leader(lambda: 7) == 7
    with pytest.raises(ValueError, match="boom"):
        distributed.on_leader(lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert distributed.agree_status(3) == 3
    # one process changes none of JAX's settings (consistent_programs is for several)
    import jax

    before = (jax.config.jax_hlo_source_file_canonicalization_regex, jax.config.jax_enable_compilation_cache)
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False and distributed.initialize() is False
    assert (jax.config.jax_hlo_source_file_canonicalization_regex, jax.config.jax_enable_compilation_cache) == before


@pytest.mark.parametrize("env, want", [
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, "slurm"),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}, None),  # the batch script's shell, outside srun
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, None),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "openmpi"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, None),
    ({}, None),
])
def test_detect_cluster(monkeypatch, env, want):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_", "TPU_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.detect_cluster() == want


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1234"], "go together"),
    (["--num-processes", "2", "--process-id", "0"], "go together"),
    (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["--coordinator", "127.0.0.1:70000", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"], "--num-processes"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "--process-id must be in [0, 2)"),
    (["--heartbeat-timeout", "0"], "heartbeat timeout"),
    (["--connect-timeout", "0"], "connect timeout"),
])
def test_bad_distributed_flags_are_refused_in_one_line(tmp_path, capsys, flags, message):
    assert main(["run", "pancakes", "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())
