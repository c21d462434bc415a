"""Sweeps across processes (gmmssl.distributed): two processes of two CPU devices each on
127.0.0.1, with JAX's distributed runtime and CPU collectives (gloo)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gmmssl import distributed, results
from gmmssl.cli import main
from tiny import TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, num_processes=2):
    """The same command on ``num_processes`` processes of 2 CPU devices each."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", "gmmssl.cli", *args, "--coordinator", f"127.0.0.1:{port}",
                              "--num-processes", str(num_processes), "--process-id", str(i)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for i in range(num_processes)]


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


def _cpu_reference(finished_tiny, folder):
    """The single-process run of ``TINY`` on one CPU device, as the processes above compute
    on CPU devices: the shared run when this process runs on the CPU, else the same command
    in a subprocess on the CPU (an accelerator rounds differently: its float32 numbers
    differ from the CPU's by about 1e-6 after the run's 100 steps, measured on an H200)."""
    import jax

    if jax.default_backend() == "cpu":
        return finished_tiny[0]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "gmmssl.cli", "run", "pancakes", "--out", str(folder), *TINY],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_two_processes_killed_midway_then_resumed_give_the_single_process_results(tmp_path, finished_tiny):
    one = _cpu_reference(finished_tiny, tmp_path / "one")  # one device, seeds 0 and 1
    out = tmp_path / "two"
    # 4 seeds: 3 chunks of 4 cells, one per device
    args = ["run", "pancakes", "--out", str(out), *TINY, "--set", "seeds=4", "--chunk-size", "4",
            "--heartbeat-timeout", "20"]

    # process 1 is killed as soon as process 0 reports the first chunk stored (two remain)
    procs = _launch(args)
    for line in procs[0].stdout:
        if "chunk 1/3" in line:
            procs[1].send_signal(signal.SIGKILL)
            killed = time.time()
            break
    else:
        pytest.fail(f"process 0 never reported a chunk: {procs[0].wait()} {procs[0].stderr.read()[-2000:]}")
    status = procs[0].wait(timeout=60)
    waited = time.time() - killed
    procs[1].wait()
    err = procs[0].stderr.read()
    assert status != 0 and waited < 60, (status, waited, err[-2000:])
    # our line, unless JAX's coordination service terminated the process first (its own line)
    assert ("a collective failed" in err and "--resume" in err) or "another task died" in err, err[-2000:]
    # nothing is marked finished that is not: no outputs, the run still pending, its chunk kept
    assert not (out / "verdict.json").exists() and not (out / "results.csv").exists()
    assert (out / ".pending.json").exists()
    chunks = sorted(p.name for p in (out / "chunks" / "all").glob("chunk_*.npz"))
    assert chunks[:1] == ["chunk_000000000-000000004.npz"] and len(chunks) < 3, chunks

    # a refusal on process 0 (another config) is every process's, with the same status
    refused = _finish(_launch([*args, "--set", "steps=200", "--resume"]))
    assert [s for s, _, _ in refused] == [2, 2], [e[-2000:] for _, _, e in refused]
    assert all("different config" in e for _, _, e in refused)

    # resumed on two processes: finished, the single-process numbers, process 0 alone prints
    (s0, out0, err0), (s1, out1, err1) = _finish(_launch([*args, "--resume"]))
    assert (s0, s1) == (0, 0), (err0[-2000:], err1[-2000:])
    assert "cells reused from stored chunks" in out0 and "verdict:" in out0
    assert out1 == ""  # process 0 speaks for all (gloo's own lines included)
    assert len(json.loads((out / "config.json").read_text())["environment"]["devices"]) == 4
    _assert_close(out, one)


def test_one_process_functions_are_the_identity():
    assert distributed.process_count() == 1 and distributed.is_leader()
    assert distributed.broadcast({"a": [1, 2]}) == {"a": [1, 2]}
    assert distributed.on_leader(lambda: 7) == 7
    with pytest.raises(ValueError, match="boom"):
        distributed.on_leader(lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert distributed.agree_status(3) == 3


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
])
def test_bad_distributed_flags_are_refused_in_one_line(tmp_path, capsys, flags, message):
    assert main(["run", "pancakes", "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())
