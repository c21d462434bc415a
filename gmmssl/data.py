"""Your own data instead of a synthetic mixture: a labelled data set (or any source of
pairs) that the trainer samples training pairs from, the partner drawn from the true class.

``Dataset`` holds features X (n, d) and integer labels y (n,) and draws augmentation
pairs the way AeD(δ) does for a mixture (SPEC 3.3, mode "prior"): x is a random point;
with probability δ its partner x⁺ is another random point of the same class, otherwise a
random point of the whole set (whose class follows the empirical class frequencies).

Your own data source: the trainer needs only a :class:`PairSource`, a pytree (so it can
be passed through ``jax.jit``/``jax.vmap``: a ``flax.struct.dataclass`` or
``chex.dataclass`` with arrays as fields) with an integer ``dim`` (d, static) and
``pairs(key, n, hparams) -> (x, x_pos)``, two (n, d) arrays of positive pairs drawn
with the traced hyper-parameters (``hparams["delta"]`` and any of the objective's own).
``TrainConfig`` then trains on it like on a mixture.

``load_features(path)`` reads features a user extracted elsewhere (for example CIFAR-100
features from any backbone) from a ``.npz`` file with arrays ``X`` and ``y``, or from a
pair ``X.npy``/``y.npy`` in a folder, and validates them.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from gmmssl._validate import check_int, check_range

__all__ = ["Dataset", "PairSource", "load_digits", "load_features", "sample_dataset_pairs"]


@runtime_checkable
class PairSource(Protocol):
    """What the trainer needs from a data source (see the module docstring).

    Example: Gaussian pairs around a (d,) direction, with a traced noise level:

      >>> import flax.struct, jax, jax.numpy as jnp
      >>> @flax.struct.dataclass
      ... class Noisy:
      ...     direction: jax.Array
      ...     dim: int = flax.struct.field(pytree_node=False, default=3)
      ...     def pairs(self, key, n, hparams):
      ...         k1, k2, k3 = jax.random.split(key, 3)
      ...         s = jnp.where(jax.random.bernoulli(k1, 0.5, (n, 1)), 1.0, -1.0)
      ...         x = s * self.direction + jax.random.normal(k2, (n, self.dim))
      ...         return x, s * self.direction + jax.random.normal(k3, (n, self.dim))
      >>> isinstance(Noisy(jnp.array([2.0, 0.0, 0.0])), PairSource)
      True
    """

    dim: int

    def pairs(self, key, n: int, hparams: dict) -> tuple:
        ...


@jax.tree_util.register_pytree_node_class
class Dataset:
    """Features and labels, with per-class index tables for same-class sampling.

    Args:
      x: (n, d) finite features. y: (n,) integer labels 0..K−1, every class present.
      standardize: center and scale each feature to unit variance (constant features
        are left at 0).
    """

    def __init__(self, x, y, *, standardize: bool = True):
        x = np.asarray(x)
        if x.dtype.kind not in "iuf":  # complex (its imaginary part), strings, objects: never coerced
            raise ValueError(f"X must hold real numbers, got dtype {x.dtype}")
        x = x.astype(np.float64)
        y = np.asarray(y)
        if x.ndim != 2:
            raise ValueError(f"X must be a (n, d) array, got shape {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape (n,) = ({x.shape[0]},), got {y.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("X must contain only finite values (found NaN or inf)")
        if y.dtype.kind not in "biuf":  # strings, objects, complex: labels must be numbers 0..K−1
            raise ValueError(f"y must hold integer class labels 0..K−1, got dtype {y.dtype} (map names to "
                             f"numbers first, e.g. numpy.unique(y, return_inverse=True)[1])")
        if not np.issubdtype(y.dtype, np.integer):
            if np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"y must hold at least 2 classes, got {classes.size}")
        if classes[0] != 0 or classes[-1] != classes.size - 1:
            raise ValueError(f"y must be the labels 0..K−1 with every class present, got {classes.tolist()[:10]}...")
        if standardize:  # each column first divided by its largest magnitude: no overflow, the same result
            top = np.max(np.abs(x), axis=0)
            x = x / np.where(top > 0, top, 1.0)
            sd = x.std(0)
            x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
        with np.errstate(over="ignore", under="ignore"):
            x32 = x.astype(np.float32)
        if not np.all(np.isfinite(x32)) or np.any((x32 == 0) & (x != 0)):
            raise ValueError(f"X holds values float32 cannot represent (|x| up to {np.max(np.abs(x)):.3g}, down to "
                             f"{np.min(np.abs(x[x != 0])) if np.any(x != 0) else 0:.3g}; float32 spans about 1e-45 to "
                             f"3.4e38): rescale the features, or keep standardize=True")
        order = np.argsort(y, kind="stable")
        counts = np.bincount(y, minlength=classes.size)
        self.x = jnp.asarray(x32)
        self.y = jnp.asarray(y, jnp.int32)
        self.order = jnp.asarray(order, jnp.int32)
        self.starts = jnp.asarray(np.concatenate([[0], np.cumsum(counts)[:-1]]), jnp.int32)
        self.counts = jnp.asarray(counts, jnp.int32)

    def tree_flatten(self):
        return (self.x, self.y, self.order, self.starts, self.counts), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.x, obj.y, obj.order, obj.starts, obj.counts = children
        return obj

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    @property
    def num_components(self) -> int:
        return self.counts.shape[0]

    def __len__(self):
        return self.x.shape[0]

    def subset(self, idx) -> "Dataset":
        return Dataset(np.asarray(self.x)[idx], np.asarray(self.y)[idx], standardize=False)


def sample_dataset_pairs(key, data: Dataset, n: int, delta):
    """n AeD(δ) pairs from a data set: (x, x_pos, c, c_pos), as ``augment.sample_pairs``
    (a traced δ outside [0, 1] gives NaN samples)."""
    n = check_int("n", n, low=1)
    check_range("delta", delta, 0.0, 1.0)
    k_i, k_u, k_same, k_any = jax.random.split(key, 4)
    i = jax.random.randint(k_i, (n,), 0, len(data))
    c = data.y[i]
    same = data.order[data.starts[c] + jax.random.randint(k_same, (n,), 0, jnp.iinfo(jnp.int32).max) % data.counts[c]]
    anyone = jax.random.randint(k_any, (n,), 0, len(data))
    j = jnp.where(jax.random.uniform(k_u, (n,)) < delta, same, anyone)
    valid = (delta >= 0.0) & (delta <= 1.0)
    return jnp.where(valid, data.x[i], jnp.nan), jnp.where(valid, data.x[j], jnp.nan), c, data.y[j]


def load_features(path) -> Dataset:
    """Reads features and labels: a ``.npz`` with arrays X and y, or a folder with X.npy and y.npy.

    Every problem with the file is a ValueError naming it: missing, truncated or damaged
    (not a readable ``.npz``/``.npy``), object arrays, labels that are not integers (such
    as strings: map them to 0..K−1 first), or features and labels that
    :class:`Dataset` refuses."""
    path = Path(path)
    if path.is_dir():
        files = {"X": path / "X.npy", "y": path / "y.npy"}
        missing = [str(f) for f in files.values() if not f.exists()]
        if missing:
            raise ValueError(f"feature folder {path} must hold X.npy and y.npy; missing {missing}")
        x, y = _load_array(files["X"]), _load_array(files["y"])
        x_file, y_file, where = files["X"], files["y"], f"{files['X']} and {files['y']}"
    elif path.suffix == ".npz" and not path.exists():
        raise ValueError(f"features file {str(path)!r} does not exist")
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                if "X" not in f.files or "y" not in f.files:
                    raise ValueError(f"{path} must hold arrays 'X' and 'y', found {f.files}")
                x, y = f["X"], f["y"]
        except _UNREADABLE as err:
            raise ValueError(_unreadable(path, err)) from None
        x_file = y_file = where = path
    else:
        raise ValueError(f"features must be a .npz file or a folder with X.npy and y.npy, got {str(path)!r}")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{y_file}: y must hold integer class labels 0..K−1, got dtype {y.dtype}"
                         + (" (strings: map them to integers first)" if y.dtype.kind in "SU" else ""))
    if x.dtype.kind not in "iuf":
        raise ValueError(f"{x_file}: X must hold real numbers, got dtype {x.dtype}")
    try:
        return Dataset(x, y)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


_UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _unreadable(path, err) -> str:
    if isinstance(err, ValueError) and str(err).startswith(str(path)):  # ours: it names the file already
        return str(err)
    return f"{path}: cannot be read as numpy arrays, it may be truncated or damaged ({type(err).__name__}: {err})"


def _load_array(path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except _UNREADABLE as err:
        raise ValueError(_unreadable(path, err)) from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise ValueError(f"{path}: holds an .npz archive, not one array (save it with np.save)")
    return array


def load_digits() -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 images, 64 features, 10 classes)."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ValueError("the real-data experiment needs scikit-learn: pip install 'gmmssl[real]' "
                         "(or pip install scikit-learn)") from None
    d = sk_digits()
    return Dataset(d.data, d.target)
