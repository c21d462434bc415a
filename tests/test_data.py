import jax
import numpy as np
import pytest

from gmmssl.data import Dataset, load_features, sample_dataset_pairs
from gmmssl.train import TrainConfig, make_hparams, train


def _fixture(rng, n=300, d=5, k=3):
    y = np.arange(n) % k
    x = rng.normal(size=(n, d)) + 3.0 * np.eye(k, d)[y]
    return x, y


def test_load_features_from_npz_and_folder(tmp_path):
    x, y = _fixture(np.random.default_rng(0))
    np.savez(tmp_path / "f.npz", X=x, y=y)
    a = load_features(tmp_path / "f.npz")
    assert a.dim == 5 and a.num_components == 3 and len(a) == 300
    np.testing.assert_allclose(np.asarray(a.x).mean(0), 0, atol=1e-5)  # standardized
    folder = tmp_path / "feat"
    folder.mkdir()
    np.save(folder / "X.npy", x)
    np.save(folder / "y.npy", y)
    b = load_features(folder)
    np.testing.assert_allclose(a.x, b.x)


@pytest.mark.parametrize("mutate, match", [
    (lambda x, y: (x[:, 0], y), r"X must be a \(n, d\) array"),
    (lambda x, y: (x, y[:-1]), r"y must have shape"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y), "finite"),
    (lambda x, y: (x, y + 0.5), "integer class labels"),
    (lambda x, y: (x, np.zeros_like(y)), "at least 2 classes"),
    (lambda x, y: (x, np.where(y == 1, 5, y)), "labels 0..K"),
])
def test_bad_features_are_refused(mutate, match, tmp_path):
    x, y = mutate(*_fixture(np.random.default_rng(1)))
    np.savez(tmp_path / "bad.npz", X=x, y=y)
    with pytest.raises(ValueError, match=match):
        load_features(tmp_path / "bad.npz")


def test_missing_arrays_or_files(tmp_path):
    np.savez(tmp_path / "f.npz", features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="must hold arrays 'X' and 'y'"):
        load_features(tmp_path / "f.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="must hold X.npy and y.npy"):
        load_features(tmp_path / "empty")
    with pytest.raises(ValueError, match="must be a .npz file or a folder"):
        load_features(tmp_path / "nothing.csv")
    with pytest.raises(ValueError, match="does not exist"):
        load_features(tmp_path / "missing.npz")


@pytest.mark.parametrize("delta", [0.0, 0.4, 1.0])
def test_dataset_pairs_follow_aed(delta):
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], [100, 300, 600])
    data = Dataset(rng.normal(size=(1000, 3)), y)
    n = 100_000
    x, xp, c, cp = sample_dataset_pairs(jax.random.PRNGKey(0), data, n, delta)
    p = np.array([0.1, 0.3, 0.6])
    expected = delta + (1 - delta) * np.sum(p**2)
    observed = np.mean(np.asarray(c) == np.asarray(cp))
    assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9
    # the partner's features are those of its own row
    xs, xps = np.asarray(data.x), np.asarray(xp)[:50]
    rows = np.argmin(((xps[:, None, :] - xs[None, :, :]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(xs[rows], xps)
    np.testing.assert_array_equal(np.asarray(data.y)[rows], np.asarray(cp)[:50])
    with pytest.raises(ValueError, match="delta"):
        sample_dataset_pairs(jax.random.PRNGKey(0), data, 10, 1.5)


def test_training_on_a_dataset():
    x, y = _fixture(np.random.default_rng(3))
    data = Dataset(x, y)
    res = train(jax.random.PRNGKey(0), data, make_hparams(delta=1.0), TrainConfig(r=2, batch_size=64, steps=100, log_every=50))
    assert res.params["A"].shape == (5, 2)
    with pytest.raises(ValueError, match="trains on a GMM"):
        train(jax.random.PRNGKey(0), data, make_hparams(), TrainConfig(loss="infonce_population"))
