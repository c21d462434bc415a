import jax
import numpy as np
import pytest

from gmmssl.gmm import parallel_pancakes, random_gmm


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
