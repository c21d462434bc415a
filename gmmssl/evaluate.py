"""One grid cell of a method comparison: train the self-supervised projector, fit the
supervised and unsupervised baselines (LDA, PCA) on the same data, and score them all.

A cell is split in three pure, traceable phases that the sweep engine runs differently:

* ``prepare`` (the cell's mixture and its Fisher basis) and ``evaluate`` (baselines and
  metrics: eigendecompositions, SVDs, k-means) are mapped cell by cell with ``lax.map``
  on the CPU, vmapped on accelerators;
* ``train`` (the hot path) is vmapped over the whole chunk of cells.

Why: batched LAPACK calls on the CPU in jaxlib 0.10 can deadlock XLA's intra-op thread
pool when several run concurrently (each blocks a pool thread waiting for batch
sub-tasks); unbatched calls cannot. Preparation and evaluation are cheap, so nothing is
lost. GPUs and TPUs batch them natively (:mod:`gmmssl.backend`).

The phases split the cell key the same way, (train, baseline sample, evaluation
sample, k-means), none depending on the hyper-parameters: cells sharing a seed share
their data (common random numbers).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from gmmssl import fisher, metrics
from gmmssl.augment import sample_pairs
from gmmssl.backend import map_linalg, with_matmul_precision
from gmmssl.gmm import GMM, HeteroGMM, sample
from gmmssl.train import (HPARAM_RANGES, TrainConfig, divergence, hparam_ranges, init_params, make_hparams, train,
                          unused_hparams)

__all__ = ["METRICS", "cell_hparams", "estimate_eval_bytes", "evaluate_methods", "make_compare_cell",
           "score_projector"]

METRICS = ("fisher_capture", "fisher_efficiency", "ari", "effective_rank", "max_angle_deg")


@with_matmul_precision
def score_projector(key, a, gmm: GMM, fisher_basis, x_eval, c_eval, *, kmeans_restarts: int = 4) -> dict:
    """Every metric of one projector A (d, r) on held-out labelled points (x_eval, c_eval).

    "bayes_accuracy" is the accuracy of the Bayes-optimal classifier given xA, with the
    mixture's true parameters (:func:`gmmssl.metrics.bayes_accuracy`). "effective_rank"
    is the embedding's (singular values of z = xA, i.e. eigenvalues of AᵀΣ_T A), not A's:
    see :func:`gmmssl.metrics.effective_rank`. "max_angle_deg" is the largest principal
    angle between col(A) and S_F (over min(r, m) angles): 0 iff the smaller space lies in
    the larger. A non-finite A gives NaN everywhere.
    """
    angles = metrics.principal_angles(a, fisher_basis)
    return {
        "fisher_capture": metrics.fisher_capture(a, fisher_basis),
        "fisher_efficiency": metrics.fisher_efficiency(a, gmm),
        "ari": metrics.kmeans_ari(key, x_eval @ a, c_eval, gmm.num_components, restarts=kmeans_restarts),
        "effective_rank": metrics.effective_rank(a, gmm.total_cov),
        "max_angle_deg": jnp.degrees(angles[-1]),
        "bayes_accuracy": metrics.bayes_accuracy(x_eval, c_eval, gmm, a),
    }


def _keys(key):
    return jax.random.split(key, 4)  # train, baseline sample, evaluation sample, k-means


@with_matmul_precision
def evaluate_methods(key, gmm: GMM, hparams: dict, config: TrainConfig, fisher_basis, learned: dict, *,
                     num_baseline: int = 2000, num_eval: int = 2000, kmeans_restarts: int = 4) -> dict:
    """Fits PCA, LDA and the spectral oracle and scores them beside the learned projectors.

    Args:
      key: the cell key (the one given to :func:`train`).
      learned: {method: (d, r) projector} trained for this cell.

    Returns:
      {"metrics": {method: {metric: scalar}}, "projectors": {method: array}}
      (metrics as in :func:`score_projector`).
      Methods: "pca" (r directions), "lda" (K−1), "oracle" (r directions, scaled by their
      canonical correlations) and the learned ones. Every method also gets
      "bayes_retained", its Bayes accuracy over the full data's. For a
      :class:`gmmssl.gmm.HeteroGMM` there is one more method, "sufficient" (the r leading
      directions of the central subspace, :func:`gmmssl.fisher.sufficient_subspace`),
      and every method gets "sufficient_capture" and "oracle_capture", the capture of
      that subspace and of the oracle's.
    """
    _, k_base, k_eval, k_km = _keys(key)
    x, x_pos, c, _ = sample_pairs(k_base, gmm, num_baseline, hparams["delta"], config.mode)
    oracle = fisher.spectral_oracle(x, x_pos, config.r)
    hetero = isinstance(gmm, HeteroGMM)
    projectors = {
        "pca": fisher.pca(x, config.r),
        "lda": fisher.lda(x, c, gmm.num_components),
        "oracle": oracle.embedding,
        **({"sufficient": fisher.sufficient_subspace(gmm, config.r)} if hetero else {}),
        **learned,
    }
    x_eval, c_eval = sample(k_eval, gmm, num_eval)
    full = metrics.bayes_accuracy(x_eval, c_eval, gmm)

    def score(a):
        out = score_projector(k_km, a, gmm, fisher_basis, x_eval, c_eval, kmeans_restarts=kmeans_restarts)
        out["bayes_retained"] = out["bayes_accuracy"] / full
        if hetero:
            out["sufficient_capture"] = metrics.fisher_capture(a, projectors["sufficient"])
            out["oracle_capture"] = metrics.fisher_capture(a, oracle.basis)
        return out

    # projectors of one shape are scored by one map over their stack: the scoring program
    # (SVDs, k-means, Bayes rule) is compiled once per shape, not once per method (a 4×
    # smaller program for the usual five methods; lax.map on the CPU, vmap elsewhere:
    # gmmssl.backend)
    shapes: dict = {}
    for name, a in projectors.items():
        shapes.setdefault(a.shape, []).append(name)
    scores = {}
    for names in shapes.values():
        if len(names) == 1:
            scores[names[0]] = score(projectors[names[0]])
            continue
        stacked = map_linalg(score, jnp.stack([projectors[n] for n in names]))
        scores.update({n: {k: v[i] for k, v in stacked.items()} for i, n in enumerate(names)})
    return {"metrics": scores, "projectors": projectors}


def estimate_eval_bytes(d: int, r: int, num_components: int, *, num_baseline: int = 2000, num_eval: int = 2000,
                        num_methods: int = 6, kmeans_restarts: int = 4, itemsize: int = 4) -> dict[str, int]:
    """Bytes one method-comparison cell holds beside training, by the setting that sizes them.

    Add :func:`gmmssl.sweep.estimate_cell_bytes` (training) for the cell's estimate. The
    terms, in elements of ``itemsize`` bytes (K = ``num_components``, M = ``num_methods``):

    * "d": 12·d² + K·d, the mixture (its covariance, Cholesky factor and total covariance,
      the K means) and the d×d matrices of the fits (PCA's covariance and eigenvectors,
      LDA's and the oracle's scatter, whitening and eigenvector matrices);
    * "num_baseline": (2d + 1)·num_baseline, the baseline sample's two views and labels;
    * "num_eval": (d + 1)·num_eval + M·num_eval·(r + K·(restarts + 2)), the evaluation
      sample and its labels, and, for the methods scored together (vmapped off the CPU),
      their projections, the k-means distances of every restart and the Bayes
      log-likelihoods.

    Returns:
      {"d": bytes, "num_baseline": bytes, "num_eval": bytes}.
    """
    k = num_components
    return {"d": int((12 * d * d + k * d) * itemsize),
            "num_baseline": int((2 * d + 1) * num_baseline * itemsize),
            "num_eval": int(((d + 1) + num_methods * (r + k * (kmeans_restarts + 2))) * num_eval * itemsize)}


def cell_hparams(cell: dict, config: TrainConfig | None = None) -> dict:
    """The hyper-parameters among a cell's values (the others take their defaults): the
    built-in ones and those of ``config``'s objective."""
    names = HPARAM_RANGES if config is None else hparam_ranges(config)
    return {k: v for k, v in cell.items() if k in names}


def make_compare_cell(mixture_fn, config: TrainConfig, num_directions: int | None = None, **kwargs):
    """(prepare_fn, train_fn, evaluate_fn) of a method comparison, for the sweep engine.

    Args:
      mixture_fn: cell -> GMM (traceable; may use the cell's values, such as a condition
        number or the seed). A fixed mixture: ``lambda cell: gmm``.
      config: the static training config.
      num_directions: m, the Fisher subspace's dimension (default K − 1).
      kwargs: passed to :func:`evaluate_methods`.

    A cell is a dict of scalars: "seed" (the PRNG seed) and any hyper-parameter of
    :data:`gmmssl.train.HPARAM_RANGES` (the others keep their defaults), plus whatever
    mixture_fn reads. Outputs: "metrics" and "projectors" per method and the trainer's
    "history". Method "init" is the trainer's starting projector (random): the chance
    reference. Every method gets "diverged": for the learned projector the code of
    :func:`gmmssl.train.divergence` (0 trained; 1 non-finite values, 2 a loss blown up over
    100-fold, 3 parameters that did not move: its metrics are then NaN), 0 for the others.

    The config's static choices are checked here (:meth:`gmmssl.train.TrainConfig.validate`),
    and a cell holding a hyper-parameter the config does not use
    (:func:`gmmssl.train.unused_hparams`: learning_rate with a ready
    ``optax.GradientTransformation``) is refused as the first phase is traced, before
    anything is compiled.
    """
    config.validate()
    unused = unused_hparams(config)

    def check_cell(cell):
        for name in cell:
            if name in unused:
                raise ValueError(f"axis {name!r} is refused: {unused[name]}")

    def prepare_fn(cell):
        check_cell(cell)
        gmm = mixture_fn(cell)
        m = gmm.num_components - 1 if num_directions is None else num_directions
        return {"gmm": gmm, "fisher": fisher.fisher_subspace(gmm, num_directions=m)}

    def train_fn(cell, data):
        check_cell(cell)
        k_train = _keys(jax.random.PRNGKey(cell["seed"]))[0]
        return train(k_train, data["gmm"], cell_hparams(cell, config), config, data["fisher"])

    def evaluate_fn(cell, data, trained):
        key = jax.random.PRNGKey(cell["seed"])
        gmm = data["gmm"]
        start = init_params(_keys(key)[0], gmm, config)["A"]
        code = divergence(trained)
        failed = code > 0
        a = jnp.where(failed, jnp.nan, trained.params["A"])  # a diverged run scores NaN, never 0
        name = config.loss_name
        learned = {name: a, "init": start}
        out = evaluate_methods(key, gmm, {**make_hparams(config), **cell_hparams(cell, config)}, config, data["fisher"], learned, **kwargs)
        for method, scores in out["metrics"].items():
            scores["diverged"] = code if method == name else jnp.asarray(0, jnp.int32)
        out["metrics"][name]["final_loss"] = trained.history["loss"][-1]
        capture = trained.history["fisher_capture"]
        out["metrics"][name]["capture_at_quarter"] = capture[max(capture.shape[0] // 4 - 1, 0)]
        out["history"] = dict(trained.history)
        return out

    return prepare_fn, train_fn, evaluate_fn
