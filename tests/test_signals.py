"""Signals to the command line (gmmssl.cli): whenever SIGINT, SIGTERM or SIGHUP arrives, one
line and status 128 + the signal, never a traceback and never status 0 with results (the
audit's SIGINT during JAX's garbage-collector callback was dropped, and JAX's distributed
runtime swallowed SIGTERM: both runs finished with status 0)."""
import gc
import os
import signal
import subprocess
import sys
import time

import pytest

from gmmssl import cli


@pytest.fixture
def handlers():
    """gmmssl's handlers installed, the previous ones (pytest's) restored after."""
    saved = {sig: signal.getsignal(sig) for sig in cli._HANDLED}
    hook = sys.unraisablehook
    del cli._received[:]
    cli.install_signal_handlers()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    sys.unraisablehook = hook
    del cli._received[:]


def test_a_signal_during_a_weakref_callback_is_delivered_just_after_it(handlers, capsys):
    """Raised inside a weakref callback (the audit's SIGTERM in WeakKeyDictionary's), the
    exception would be printed ("Exception ignored in ...") and dropped."""
    import weakref

    class Thing:
        pass

    def callback(ref):
        signal.raise_signal(signal.SIGTERM)

    thing = Thing()
    ref = weakref.ref(thing, callback)  # noqa: F841 - kept alive so that its callback runs
    with pytest.raises(KeyboardInterrupt):
        del thing
        time.sleep(2.0)
    assert cli._signalled() == signal.SIGTERM and "Exception ignored" not in capsys.readouterr().err


def test_a_signal_during_a_gc_callback_is_delivered_just_after_it(handlers):
    fired = []

    def callback(phase, info):  # as JAX's own gc callback: an exception raised here would be dropped
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)

    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt):
            gc.collect()
            time.sleep(2.0)  # the redelivery comes 10 ms after the callback
    finally:
        gc.callbacks.remove(callback)
    assert fired and cli._signalled() == signal.SIGINT


def test_a_signal_that_could_not_interrupt_stops_the_run_at_the_next_chunk(handlers, capsys):
    cli._received.append(signal.SIGTERM)  # received, its KeyboardInterrupt lost somewhere
    with pytest.raises(KeyboardInterrupt):
        cli._progress("chunk 2/3")
    assert capsys.readouterr().out == ""  # the chunk line is not printed: the run stops there
    assert cli._interrupted(None) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "gmmssl: stopped by SIGTERM\n"


@pytest.mark.parametrize("sig,delay", [(signal.SIGINT, 0.3), (signal.SIGTERM, 1.5), (signal.SIGHUP, 3.0)])
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, sig, delay):
    """While Python imports JAX and numpy (a C extension interrupted in its import used to
    print a traceback and fail with ImportError)."""
    command = ["run", "pancakes", "--out", str(tmp_path / "out"), "--set", "steps=20", "--set", "log_every=10"]
    proc = subprocess.Popen([sys.executable, "-m", "gmmssl.cli", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(delay)
    proc.send_signal(sig)
    status = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert status == 128 + sig, (status, err[-2000:])
    assert len(err.strip().splitlines()) == 1 and err.startswith("gmmssl: "), err[-2000:]
    assert ("interrupted" if sig == signal.SIGINT else signal.Signals(sig).name) in err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_a_closed_standard_output_stops_the_printing_not_the_run(tmp_path):
    """``gmmssl run ... | head -1``: the reader leaves; the run finishes and writes its results."""
    from tiny import TINY

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gmmssl.cli", "run", "pancakes", "--out", str(out), *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.stdout.readline()
    proc.stdout.close()  # as head does
    status = proc.wait(timeout=300)
    assert status == 0, proc.stderr.read()[-2000:]
    assert proc.stderr.read() == b""
    assert (out / "verdict.json").exists() and (out / "results.csv").exists()
