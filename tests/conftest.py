import contextlib
import io
import shutil

import jax
import numpy as np
import pytest

from gmmssl.cli import main
from gmmssl.gmm import parallel_pancakes, random_gmm
from tiny import CHUNKED, TINY


@pytest.fixture(scope="session")
def _finished_tiny(tmp_path_factory):
    """The shared tiny pancakes run (``tiny.TINY``), run once per test process:
    (folder, console output)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert main(["run", "pancakes", "--out", str(out), *TINY]) == 0
    return out, text.getvalue()


@pytest.fixture(scope="session")
def finished_chunked(tmp_path_factory):
    """The tiny run with ``tiny.CHUNKED``'s arguments, run once per test process (read it, do not
    change it): its folder."""
    out = tmp_path_factory.mktemp("chunked") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "pancakes", "--out", str(out), *CHUNKED]) == 0
    return out


@pytest.fixture
def finished_tiny(_finished_tiny, tmp_path):
    """A copy of that finished run in this test's own folder, for tests that start from
    finished work or compare against it: (folder, console output)."""
    src, text = _finished_tiny
    shutil.copytree(src, tmp_path / "finished")
    return tmp_path / "finished", text


@pytest.fixture
def pancakes():
    return parallel_pancakes(8, 2)


@pytest.fixture
def gmm4():
    """A random anisotropic K = 4 mixture in d = 6."""
    return random_gmm(jax.random.PRNGKey(3), 6, 4, separation=1.5, condition_number=20.0)


def subspace_distance(a, b):
    """Largest principal angle sine between column spaces (0 iff equal spans)."""
    qa, _ = np.linalg.qr(np.asarray(a, np.float64))
    qb, _ = np.linalg.qr(np.asarray(b, np.float64))
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - s.min() ** 2)))
