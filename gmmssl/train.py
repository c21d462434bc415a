r"""Training a linear projector A (d×r) as one pure function of a key and traced hyper-parameters.

``train(key, gmm, hparams, config)`` runs ``config.steps`` optimizer steps in a
``jax.lax.scan``. Every step draws fresh AeD(δ) pairs on the device (online regime), or
a minibatch from a fixed sample of ``config.num_samples`` pairs (finite-sample regime),
embeds them with the projector, and takes an optax step. Hyper-parameters that vary
over a grid (δ, learning rate, temperature, ξ) live in ``hparams``, a dict of scalars,
so ``jax.vmap(train, in_axes=(0, None, 0, None))`` trains a whole grid in one compiled
call. Static choices (shapes, loss, schedule) live in the frozen ``TrainConfig``.

Optimizer: Adam by default, with a cosine decay of the rate
(``optax.cosine_decay_schedule``) to ``final_lr_fraction`` of its peak: constant-rate Adam
leaves a noise floor in the learned subspace. The peak rate is the traced
hyper-parameter "learning_rate"; ``TrainConfig(optimizer=..., schedule=...)`` takes any
optax optimizer factory and any schedule.

Extension points (no global registry): ``TrainConfig(loss=Objective(...))`` trains a
user-defined :class:`Objective` (its own loss on embeddings, its own initialization,
its own traced hyper-parameters with their valid ranges, its own batches); the
built-in losses are :class:`Objective` values too (:data:`OBJECTIVES`), on the same route.
Data: a :class:`gmmssl.gmm.GMM`, a :class:`gmmssl.data.Dataset`, or any
:class:`gmmssl.data.PairSource` (a pytree with ``dim`` and ``pairs(key, n, hparams)``).

History: every ``log_every`` steps the scan records the mean loss over the block, the
current learning rate and, when a Fisher basis is given, the Fisher capture.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gmmssl import losses, projectors
from gmmssl._validate import check_choice, check_int, check_range
from gmmssl.augment import MODES, sample_pairs
from gmmssl.backend import with_matmul_precision
from gmmssl.data import Dataset, sample_dataset_pairs
from gmmssl.gmm import GMM, HeteroGMM, MultiModalGMM, sample_multimodal
from gmmssl.metrics import fisher_capture

__all__ = ["BLOWUP_FACTOR", "DEFAULT_HPARAMS", "DIVERGENCE_REASONS", "HPARAM_RANGES", "IN_BATCH_LOSSES", "OBJECTIVES",
           "SCHEDULES", "STUCK_TOL", "Objective", "TrainConfig", "TrainResult", "aed_pairs", "check_setup", "diverged",
           "divergence", "embed", "hparam_ranges",
           "hparams_in_range", "init_params", "init_projector", "learning_rate_schedule", "make_hparams",
           "objective_of", "pair_moments", "train", "validate_hparams"]

# name: (default, low, high, low_open)
HPARAM_RANGES = {
    "delta": (1.0, 0.0, 1.0, False),
    "learning_rate": (0.05, 0.0, float("inf"), True),
    "temperature": (1.0, 0.0, float("inf"), True),
    "xi": (0.5, 0.0, float("inf"), False),
}
DEFAULT_HPARAMS = {name: spec[0] for name, spec in HPARAM_RANGES.items()}
SCHEDULES = ("cosine", "constant")


def validate_hparams(hparams: dict, ranges: dict | None = None) -> None:
    """Raises ValueError for an unknown hyper-parameter or a concrete value out of range.

    ranges: {name: (default, low, high, low_open)}; default :data:`HPARAM_RANGES` (a
    config's own: :func:`hparam_ranges`)."""
    ranges = HPARAM_RANGES if ranges is None else ranges
    for name, value in hparams.items():
        if name not in ranges:
            raise ValueError(f"unknown hyper-parameter {name!r}; known: {sorted(ranges)}")
        _, low, high, low_open = ranges[name]
        check_range(name, value, low, high, low_open=low_open, high_open=high == float("inf"))


def hparams_in_range(hparams: dict, ranges: dict | None = None) -> jax.Array:
    """A traceable boolean: every known hyper-parameter finite and inside its range.

    Under jit/vmap the values are tracers that :func:`validate_hparams` cannot see; the
    trainer uses this to turn a cell with an out-of-range value into NaN outputs (flagged
    diverged) instead of training it with a clipped or meaningless value."""
    ranges = HPARAM_RANGES if ranges is None else ranges
    ok = jnp.asarray(True)
    for name, value in hparams.items():
        if name not in ranges:
            continue
        _, low, high, low_open = ranges[name]
        v = jnp.asarray(value)
        inside = jnp.isfinite(v) & ((v > low) if low_open else (v >= low))
        if high != float("inf"):
            inside &= v <= high
        ok &= jnp.all(inside)
    return ok


def make_hparams(config: "TrainConfig | None" = None, **overrides) -> dict:
    """The default hyper-parameters (the built-in ones and those of ``config``'s
    objective) with ``overrides``, validated, as float32 scalars."""
    ranges = HPARAM_RANGES if config is None else hparam_ranges(config)
    hp = dict({name: spec[0] for name, spec in ranges.items()}, **overrides)
    validate_hparams(hp, ranges)
    return {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training choices (one compilation per distinct config).

    Attributes:
      r: embedding dimension, 1 <= r <= d.
      batch_size: pairs per step B.
      steps: optimizer steps (a multiple of ``log_every``).
      loss: a built-in objective's name (a key of :data:`OBJECTIVES`) or an
        :class:`Objective` of your own.
      similarity, symmetric: InfoNCE options.
      mode: AeD mode, "prior" or "other".
      schedule: "cosine" (``optax.cosine_decay_schedule`` to ``final_lr_fraction`` of the
        peak), "constant", or a callable (peak, steps) -> optax schedule (count -> rate);
        the peak is the traced hyper-parameter "learning_rate".
      optimizer: an optax optimizer factory, called with the schedule as its learning
        rate (default ``optax.adam``; e.g. ``optax.sgd``, or
        ``lambda lr: optax.adamw(lr, weight_decay=1e-4)``), or a ready
        ``optax.GradientTransformation`` (its own rate: the "learning_rate"
        hyper-parameter and the schedule are then unused, and the history records no rate).
      log_every: steps between history records.
      init_scale: A's entries start as N(0, init_scale²/d).
      num_samples: None for fresh pairs every step; an int n for minibatches from a
        fixed sample of n pairs.
      predictor, distance, stop_gradient: SimSiam options (a trained r×r predictor
        starting at identity plus N(0, 0.01²) noise; "l2" or "cosine"; stop-gradient on
        the targets).
      hidden, activation: a non-linear projector (beyond the paper): an MLP with these
        hidden widths and activation, then the linear head A (h, r); see
        :mod:`gmmssl.projectors`. Empty (the default): the linear projector of the
        theory. For losses "infonce", "simsiam" and "spectral"; the history records no
        Fisher capture (A is not a map from the data space).
    """

    r: int = 2
    batch_size: int = 512
    steps: int = 1000
    loss: str = "infonce"
    similarity: str = "dot"
    symmetric: bool = False
    mode: str = "prior"
    schedule: str = "cosine"
    final_lr_fraction: float = 0.01
    log_every: int = 50
    init_scale: float = 1.0
    num_samples: int | None = None
    predictor: bool = False
    distance: str = "l2"
    stop_gradient: bool = True
    hidden: tuple = ()
    activation: str = "gelu"
    optimizer: Any = optax.adam

    @property
    def objective(self) -> "Objective":
        """The :class:`Objective` this config trains."""
        return objective_of(self.loss)

    @property
    def loss_name(self) -> str:
        """The objective's name (the method name in results)."""
        return self.objective.name

    def validate(self, d: int) -> None:
        check_int("r", self.r, low=1, high=d)
        objective = self.objective
        check_int("batch_size", self.batch_size, low=2 if objective.in_batch else 1)
        check_int("steps", self.steps, low=1)
        check_int("log_every", self.log_every, low=1, high=self.steps)
        if self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of log_every ({self.log_every})")
        check_choice("similarity", self.similarity, losses._common.SIMILARITIES)
        check_choice("mode", self.mode, MODES)
        if not callable(self.schedule):
            check_choice("schedule", self.schedule, SCHEDULES)
        if not (callable(self.optimizer) or isinstance(self.optimizer, optax.GradientTransformation)):
            raise ValueError(f"optimizer must be an optax optimizer factory (such as optax.adam) or an "
                             f"optax.GradientTransformation, got {self.optimizer!r}")
        check_choice("distance", self.distance, losses._simsiam.DISTANCES)
        check_range("final_lr_fraction", self.final_lr_fraction, 0.0, 1.0)
        check_range("init_scale", self.init_scale, 0.0, float("inf"), low_open=True, high_open=True)
        if self.num_samples is not None:
            check_int("num_samples", self.num_samples, low=self.batch_size)
        projectors.check_hidden(self.hidden, self.activation)
        if self.hidden and not objective.nonlinear:
            raise ValueError(f"loss {objective.name!r} needs a linear projector (hidden=()); an MLP projector "
                             f"trains with {', '.join(NONLINEAR_LOSSES)} (or an Objective with nonlinear=True)")


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    r"""A trainable objective: what :func:`train` needs to know about a loss.

    The built-in losses are Objectives (:data:`OBJECTIVES`); a user's own loss is one
    too, passed as ``TrainConfig(loss=Objective(...))``: no registry, no global state.
    Compared by identity, so keep one instance per objective (one compilation).

    Attributes:
      name: the method name in results (e.g. "dcl").
      loss: (params, x, x_pos, hparams, config, data) -> scalar. Embed the batch with
        :func:`embed` (``embed(params, x, config)``, the linear or MLP projector) and
        apply a loss on the (B, r) embeddings; ``hparams`` is a dict of traced scalars
        (the built-in ones and this objective's own).
      init: (key, data, config) -> params, a dict with "A" (the projector the metrics
        score; default :func:`init_projector`: A (d, r) ~ N(0, init_scale²/d)).
      batch: (key, data, n, hparams, config) -> (x, x_pos), the n training pairs of one
        step (default :func:`aed_pairs`: AeD(δ) pairs of a GMM, Dataset or PairSource).
      hparams: this objective's own traced hyper-parameters,
        {name: (default, low, high, low_open)}; they become grid axes like "delta"
        (validated the same way, out-of-range traced values give NaN).
      data: the data types it trains on (None: any the batch function accepts).
      in_batch: the loss compares rows of the batch (needs B ≥ 2).
      nonlinear: it may train an MLP projector (``TrainConfig(hidden=...)``).
      post_update: optional (params, hparams, config) -> params, applied after every
        optimizer step (e.g. BYOL's moving-average target network, kept in the params
        with a stop-gradient, so it rides in the scan's state).

    Example (decoupled contrastive learning: InfoNCE without the positive in the
    denominator, with a traced weight):

      >>> import jax.numpy as jnp
      >>> from jax.nn import logsumexp
      >>> def dcl(params, x, x_pos, hparams, config, data):
      ...     z, zp = embed(params, x, config), embed(params, x_pos, config)
      ...     logits = z @ zp.T / hparams["temperature"]
      ...     off = jnp.where(jnp.eye(z.shape[0], dtype=bool), -jnp.inf, logits)
      ...     return jnp.mean(logsumexp(off, axis=1) - hparams["alpha"] * jnp.diagonal(logits))
      >>> DCL = Objective("dcl", dcl, hparams={"alpha": (1.0, 0.0, 10.0, False)})
      >>> TrainConfig(loss=DCL, steps=10, log_every=5).loss_name
      'dcl'
    """

    name: str
    loss: Callable
    init: Callable | None = None
    batch: Callable | None = None
    hparams: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    data: tuple | None = None
    in_batch: bool = True
    nonlinear: bool = True
    post_update: Callable | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Objective name must be a non-empty string, got {self.name!r}")
        for attr in ("loss", "init", "batch", "post_update"):
            fn = getattr(self, attr)
            if fn is not None and not callable(fn):
                raise ValueError(f"Objective {self.name!r}: {attr} must be callable, got {fn!r}")
        for hp, spec in dict(self.hparams).items():
            if hp in HPARAM_RANGES:
                raise ValueError(f"Objective {self.name!r}: hyper-parameter {hp!r} is built in; choose another name")
            if not (isinstance(spec, tuple) and len(spec) == 4):
                raise ValueError(f"Objective {self.name!r}: hparams[{hp!r}] must be (default, low, high, low_open), "
                                 f"got {spec!r}")
            default, low, high, low_open = spec
            check_range(hp, default, low, high, low_open=low_open, high_open=high == float("inf"))

    def init_params(self, key, data, config):
        return (self.init or init_projector)(key, data, config)

    def pairs(self, key, data, n, hparams, config):
        return (self.batch or aed_pairs)(key, data, n, hparams, config)


def objective_of(loss) -> Objective:
    """The :class:`Objective` of ``TrainConfig.loss``: a built-in name or an Objective."""
    if isinstance(loss, Objective):
        return loss
    check_choice("loss", loss, OBJECTIVES)
    return OBJECTIVES[loss]


def hparam_ranges(config: "TrainConfig") -> dict:
    """{name: (default, low, high, low_open)}: the built-in hyper-parameters and those
    of the config's objective."""
    return {**HPARAM_RANGES, **dict(config.objective.hparams)}


def _projector(key, d, config):
    return config.init_scale * jax.random.normal(key, (d, config.r)) / jnp.sqrt(d)


def init_projector(key, data, config):
    """The default initialization: {"A": (d, r)} with entries N(0, init_scale²/d), d =
    ``data.dim`` (with ``config.hidden``: an MLP then A (h, r), see :mod:`gmmssl.projectors`)."""
    gmm = data
    if config.hidden:
        k_mlp, k_head = jax.random.split(key)
        return {"mlp": projectors.init_mlp(k_mlp, gmm.dim, config.hidden, config.activation),
                "A": _projector(k_head, config.hidden[-1], config)}
    return {"A": _projector(key, gmm.dim, config)}


def embed(params, x, config):
    """The embeddings z = f(x) (B, r) of a batch x (B, d) under ``params``: xA for the linear
    projector, the MLP then A with ``config.hidden``."""
    return projectors.embed(params, x, config.hidden, config.activation)


def _init_simsiam(key, gmm, config):
    k_a, k_p = jax.random.split(key)
    params = init_projector(k_a, gmm, config)
    if config.predictor:
        params["P"] = jnp.eye(config.r) + 0.01 * jax.random.normal(k_p, (config.r, config.r))
    return params


def _init_clip(key, gmm, config):
    k1, k2 = jax.random.split(key)
    return {"A": _projector(k1, gmm.dims[0], config), "A2": _projector(k2, gmm.dims[1], config)}


def aed_pairs(key, data, n, hparams, config):
    """The default batch: n AeD(δ) pairs (x, x⁺), each (n, d), δ = hparams["delta"]:
    :func:`gmmssl.augment.sample_pairs` for a GMM (``config.mode``),
    :func:`gmmssl.data.sample_dataset_pairs` for a Dataset, ``data.pairs(key, n, hparams)``
    for any other :class:`gmmssl.data.PairSource`."""
    if isinstance(data, Dataset):
        x, x_pos, _, _ = sample_dataset_pairs(key, data, n, hparams["delta"])
    elif isinstance(data, GMM):
        x, x_pos, _, _ = sample_pairs(key, data, n, hparams["delta"], config.mode)
    else:
        x, x_pos = data.pairs(key, n, hparams)
    return x, x_pos


def _modality_pairs(key, gmm, n, hparams, config):
    pairs = sample_multimodal(key, gmm, n, hparams["delta"])
    return pairs.x1, pairs.x2


def _infonce_loss(params, x, x_pos, hparams, config, gmm):
    return losses.infonce(embed(params, x, config), embed(params, x_pos, config), temperature=hparams["temperature"],
                          similarity=config.similarity, symmetric=config.symmetric)


def _infonce_population_loss(params, x, x_pos, hparams, config, gmm):
    a = params["A"]
    la = gmm.chol.T @ a
    return losses.infonce_population(x @ a, x_pos @ a, gmm.means @ a, la.T @ la, jnp.log(gmm.weights),
                                     temperature=hparams["temperature"])


def _simsiam_loss(params, x, x_pos, hparams, config, gmm):
    return losses.simsiam(embed(params, x, config), embed(params, x_pos, config), predictor=params.get("P"), xi=hparams["xi"],
                          distance=config.distance, stop_gradient=config.stop_gradient)


def _spectral_loss(params, x, x_pos, hparams, config, gmm):
    return losses.spectral_contrastive(embed(params, x, config), embed(params, x_pos, config))


def _clip_loss(params, x1, x2, hparams, config, gmm):
    return losses.clip(x1 @ params["A"], x2 @ params["A2"], temperature=hparams["temperature"],
                       similarity=config.similarity)


def _views(params, x, x_pos, config):
    return embed(params, x, config), embed(params, x_pos, config)


def _ntxent_loss(params, x, x_pos, hparams, config, gmm):
    return losses.ntxent(*_views(params, x, x_pos, config), temperature=hparams["temperature"])


def _dcl_loss(params, x, x_pos, hparams, config, gmm):
    return losses.dcl(*_views(params, x, x_pos, config), temperature=hparams["temperature"])


def _barlow_loss(params, x, x_pos, hparams, config, gmm):
    return losses.barlow_twins(*_views(params, x, x_pos, config))


def _vicreg_loss(params, x, x_pos, hparams, config, gmm):
    return losses.vicreg(*_views(params, x, x_pos, config))


def _init_with_predictor(key, gmm, config):
    k_a, k_p = jax.random.split(key)
    params = init_projector(k_a, gmm, config)
    params["P"] = jnp.eye(config.r) + 0.01 * jax.random.normal(k_p, (config.r, config.r))
    return params


def _negative_cosine_loss(params, x, x_pos, hparams, config, gmm):
    # SimSiam as written in its paper: a predictor, stop-gradient on the targets, both views
    z, zp = _views(params, x, x_pos, config)
    sg = jax.lax.stop_gradient
    return 0.5 * (losses.negative_cosine(z @ params["P"], sg(zp)) + losses.negative_cosine(zp @ params["P"], sg(z)))


def _init_byol(key, gmm, config):
    params = _init_with_predictor(key, gmm, config)
    params["target"] = {k: v for k, v in params.items() if k != "P"}  # the target starts as the online network
    return params


def _byol_loss(params, x, x_pos, hparams, config, gmm):
    z, zp = _views(params, x, x_pos, config)
    target = jax.lax.stop_gradient(params["target"])
    t, tp = embed(target, x, config), embed(target, x_pos, config)
    return 0.5 * (losses.byol(z @ params["P"], tp) + losses.byol(zp @ params["P"], t))


def _byol_update(params, hparams, config):
    rate = hparams["ema"]
    online = {k: v for k, v in params.items() if k not in ("P", "target")}
    target = jax.tree_util.tree_map(lambda t, o: rate * t + (1.0 - rate) * o, params["target"], online)
    return {**params, "target": target}


def _init_siglip(key, gmm, config):
    params = init_projector(key, gmm, config)
    params["log_t"] = jnp.asarray(math.log(10.0), jnp.float32)
    params["bias"] = jnp.asarray(-10.0, jnp.float32)
    return params


def _siglip_loss(params, x, x_pos, hparams, config, gmm):
    return losses.siglip(*_views(params, x, x_pos, config), log_temperature=params["log_t"], bias=params["bias"])


def pair_moments(a, gmm, delta, mode: str = "prior"):
    """(S, X, m): the embedding covariance AᵀΣ_T A, the views' cross-covariance
    κ·AᵀS_B A under AeD(δ) (κ as in :func:`gmmssl.fisher.canonical_correlations`) and the
    embedded mean Aᵀμ̄, in closed form (mode "other": exact for uniform weights, as κ)."""
    kappa = delta if mode == "prior" else delta - (1.0 - delta) / (gmm.num_components - 1)
    return a.T @ gmm.total_cov @ a, kappa * (a.T @ gmm.between_scatter @ a), gmm.mean @ a


def _population(fn):
    def loss(params, x, x_pos, hparams, config, gmm):
        s, cross, mean = pair_moments(params["A"], gmm, hparams["delta"], config.mode)
        return fn(s, cross, mean)

    return loss


NONLINEAR_LOSSES = ("infonce", "simsiam", "spectral", "ntxent", "dcl", "barlow_twins", "vicreg", "negative_cosine",
                    "byol", "siglip")
ZOO = ("ntxent", "dcl", "barlow_twins", "vicreg", "negative_cosine", "byol", "siglip")
OBJECTIVES: dict[str, Objective] = {
    "infonce": Objective("infonce", _infonce_loss),
    "infonce_population": Objective("infonce_population", _infonce_population_loss, data=(GMM,), in_batch=False,
                                    nonlinear=False),
    "simsiam": Objective("simsiam", _simsiam_loss, init=_init_simsiam),
    "spectral": Objective("spectral", _spectral_loss),
    "clip": Objective("clip", _clip_loss, init=_init_clip, batch=_modality_pairs, data=(MultiModalGMM,),
                      nonlinear=False),
    # the loss zoo (issue 13): the trainer's "temperature" (default 1) for NT-Xent and DCL
    "ntxent": Objective("ntxent", _ntxent_loss),
    "dcl": Objective("dcl", _dcl_loss),
    "barlow_twins": Objective("barlow_twins", _barlow_loss),
    "vicreg": Objective("vicreg", _vicreg_loss),
    "negative_cosine": Objective("negative_cosine", _negative_cosine_loss, init=_init_with_predictor, in_batch=False),
    "byol": Objective("byol", _byol_loss, init=_init_byol, hparams={"ema": (0.99, 0.0, 1.0, False)},
                      post_update=_byol_update, in_batch=False),
    "siglip": Objective("siglip", _siglip_loss, init=_init_siglip),
    # noise-free references: the population losses of the second-moment objectives
    "spectral_population": Objective("spectral_population", _population(losses.spectral_contrastive_population),
                                     data=(GMM,), in_batch=False, nonlinear=False),
    "barlow_twins_population": Objective("barlow_twins_population", _population(
        lambda s, x, m: losses.barlow_twins_population(s, x)), data=(GMM,), in_batch=False, nonlinear=False),
    "vicreg_population": Objective("vicreg_population", _population(lambda s, x, m: losses.vicreg_population(s, x)),
                                   data=(GMM,), in_batch=False, nonlinear=False),
}
# losses whose batch statistics need two rows at least: in-batch negatives (one pair has
# none: the InfoNCE loss is identically 0) or a batch covariance
IN_BATCH_LOSSES = tuple(name for name, o in OBJECTIVES.items() if o.in_batch)


def check_setup(gmm, config: TrainConfig) -> None:
    """Raises ValueError when config cannot train on gmm (eagerly, before tracing)."""
    objective = config.objective
    if objective.data is not None and not isinstance(gmm, objective.data):
        names = " or ".join(t.__name__ for t in objective.data)
        raise ValueError(f"loss {objective.name!r} trains on a {names}, got {type(gmm).__name__}")
    if objective.data is None and objective.batch is None and not isinstance(gmm, (GMM, Dataset)) \
            and not callable(getattr(gmm, "pairs", None)):
        raise ValueError(f"loss {objective.name!r} trains on a GMM, a Dataset or a PairSource (with a "
                         f"pairs(key, n, hparams) method), got {type(gmm).__name__}")
    if not isinstance(getattr(gmm, "dim", None), int):
        raise ValueError(f"data must have an integer attribute dim (the input dimension d), got "
                         f"{type(gmm).__name__}")
    if objective is OBJECTIVES["infonce_population"] and isinstance(gmm, HeteroGMM):
        raise ValueError("loss 'infonce_population' needs a shared covariance (its closed-form negatives "
                         "assume one); got a HeteroGMM: use loss 'infonce'")
    config.validate(gmm.dim)
    if isinstance(gmm, MultiModalGMM):
        check_int("r", config.r, low=1, high=min(gmm.dims))


# divergence codes (the "diverged" column of results): why a run's numbers are not scored
DIVERGENCE_REASONS = ("ok", "non-finite parameters or loss", "loss grew over 100-fold from its start",
                      "parameters did not move")
BLOWUP_FACTOR = 100.0  # a logged loss above this × max(|initial loss|, 1) has diverged
STUCK_TOL = 1e-6  # parameters that moved less than this, relative to their start, did not train


def divergence(result: "TrainResult") -> jax.Array:
    """Why a run cannot be scored, as an int32 code (:data:`DIVERGENCE_REASONS`): 0 it
    trained; 1 a parameter or a logged loss is non-finite (a diverged run, or a traced
    hyper-parameter out of range); 2 a logged loss (a block mean) exceeds
    :data:`BLOWUP_FACTOR` × max(|L₀|, 1), L₀ the loss at the initial parameters (finite,
    but blown up: a learning rate far too large); 3 the parameters moved less than
    :data:`STUCK_TOL` relative to their start, ‖θ_T − θ₀‖ ≤ STUCK_TOL·‖θ₀‖ (overflowing
    gradients, a vanishing rate: the "trained" projector is the initial one). The first
    that applies is returned. Codes 2 and 3 need the history's "start_loss" and
    "param_change" (recorded by :func:`train`). Traceable; for a vmapped grid of results
    use ``jax.vmap(divergence)``."""
    ok = jnp.all(jnp.isfinite(result.history["loss"]))
    for leaf in jax.tree_util.tree_leaves(result.params):
        ok &= jnp.all(jnp.isfinite(leaf))
    code = jnp.where(ok, 0, 1)
    history = result.history
    if "start_loss" in history:
        scale = BLOWUP_FACTOR * jnp.maximum(jnp.abs(history["start_loss"][0]), 1.0)
        code = jnp.where((code == 0) & jnp.any(jnp.abs(history["loss"]) > scale), 2, code)
    if "param_change" in history:
        code = jnp.where((code == 0) & (history["param_change"][-1] <= STUCK_TOL), 3, code)
    return code.astype(jnp.int32)


def diverged(result: "TrainResult") -> jax.Array:
    """True when the run cannot be scored (:func:`divergence` is not 0): non-finite values,
    a loss blown up over 100-fold, or parameters that did not move. Traceable; for a
    vmapped grid of results use ``jax.vmap(diverged)``."""
    return divergence(result) > 0


class TrainResult(NamedTuple):
    """params: the trained parameters ({"A": (d, r), ...});
    history: dict of (steps // log_every,) arrays: "loss" (each block's mean),
    "start_loss" (the loss at each block's starting parameters: [0] is L₀, before any
    step), "param_change" (‖θ − θ₀‖/‖θ₀‖ at each block's end, all parameters together),
    "learning_rate" and, when a Fisher basis was given, "fisher_capture"."""

    params: dict
    history: dict


def init_params(key, gmm, config: TrainConfig):
    """The parameters :func:`train` starts from for this key (before any step)."""
    return config.objective.init_params(jax.random.split(key)[0], gmm, config)


def learning_rate_schedule(config: TrainConfig, peak):
    """The optax schedule (count -> rate) of ``config`` with peak rate ``peak`` (may be
    traced): ``optax.cosine_decay_schedule(peak, steps, final_lr_fraction)``,
    ``optax.constant_schedule(peak)``, or the config's own ``schedule(peak, steps)``."""
    if callable(config.schedule):
        return config.schedule(peak, config.steps)
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    return optax.cosine_decay_schedule(peak, config.steps, alpha=config.final_lr_fraction)


@with_matmul_precision
def train(key, gmm: GMM, hparams: dict, config: TrainConfig, fisher_basis=None) -> TrainResult:
    """Trains one projector; pure in (key, gmm, hparams, fisher_basis), static in config.

    Args:
      key: PRNG key. For one key the initialization and every step's draws are the
        same whatever the hyper-parameters (common random numbers across a grid).
      gmm: the data mixture (a :class:`MultiModalGMM` for loss "clip", whose history
        and "A" refer to the first modality; its second projector is "A2").
      hparams: dict of scalars (see :data:`HPARAM_RANGES` and the objective's own
        ``Objective.hparams``); missing ones take defaults.
      config: static :class:`TrainConfig`.
      fisher_basis: optional (d, m) basis; when given, the history records capture.

    Its matmuls (the user's objective's included) run at
    :func:`gmmssl.backend.matmul_precision`: float32 on every chip unless you set JAX's
    ``jax_default_matmul_precision`` (a GPU's TF32 default, say, by
    ``with jax.default_matmul_precision("default"):`` around the call or its jit).

    Returns:
      :class:`TrainResult`. Concrete hyper-parameters out of range raise ValueError here;
      traced ones (inside jit/vmap, values unknown) cannot, so a cell whose value is out
      of range returns NaN parameters and losses instead, which :func:`diverged` flags.

    Example:
      >>> import jax
      >>> from gmmssl.gmm import parallel_pancakes
      >>> cfg = TrainConfig(steps=20, log_every=10, batch_size=64)
      >>> res = train(jax.random.PRNGKey(0), parallel_pancakes(6), make_hparams(delta=0.5), cfg)
      >>> res.params["A"].shape, res.history["loss"].shape
      ((6, 2), (2,))
    """
    check_setup(gmm, config)
    ranges = hparam_ranges(config)
    hparams = {**{k: jnp.asarray(spec[0], jnp.float32) for k, spec in ranges.items()}, **hparams}
    validate_hparams(hparams, ranges)
    objective = config.objective
    k_data = jax.random.split(key)[1]
    params = init_params(key, gmm, config)
    if isinstance(config.optimizer, optax.GradientTransformation):
        tx, schedule = config.optimizer, None
    else:
        schedule = learning_rate_schedule(config, hparams["learning_rate"])
        tx = config.optimizer(schedule)
    opt_state = tx.init(params)

    def pairs(step_key, n):
        x, x_pos = objective.pairs(step_key, gmm, n, hparams, config)
        if x.shape[:1] != (n,) or x_pos.shape[:1] != (n,):  # shapes are static: checked as it is traced
            raise ValueError(f"the pair source ({type(gmm).__name__}, objective {objective.name!r}) must return n = {n} "
                             f"rows of each view, got {x.shape} and {x_pos.shape}")
        return x, x_pos

    if config.num_samples is None:
        def batch(step_key):
            return pairs(step_key, config.batch_size)
    else:
        pool_x, pool_pos = pairs(jax.random.fold_in(k_data, config.steps), config.num_samples)

        def batch(step_key):
            idx = jax.random.randint(step_key, (config.batch_size,), 0, config.num_samples)
            return pool_x[idx], pool_pos[idx]

    def loss_fn(p, x, x_pos):
        return objective.loss(p, x, x_pos, hparams, config, gmm)

    def step(carry, t):
        params, opt_state = carry
        x, x_pos = batch(jax.random.fold_in(k_data, t))
        value, grads = jax.value_and_grad(loss_fn)(params, x, x_pos)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if objective.post_update is not None:
            params = objective.post_update(params, hparams, config)
        return (params, opt_state), value

    start_params = params
    start_norm = _tree_norm(params)

    def block(carry, start):
        carry, values = jax.lax.scan(step, carry, start + jnp.arange(config.log_every))
        moved = _tree_norm(jax.tree_util.tree_map(jnp.subtract, carry[0], start_params))
        record = {"loss": values.mean(), "start_loss": values[0],
                  "param_change": moved / jnp.maximum(start_norm, jnp.finfo(start_norm.dtype).tiny)}
        if schedule is not None:  # the rate of the block's last step
            record["learning_rate"] = jnp.asarray(schedule(start + config.log_every - 1), jnp.float32)
        if fisher_basis is not None and not config.hidden:
            record["fisher_capture"] = fisher_capture(carry[0]["A"], fisher_basis)
        return carry, record

    starts = jnp.arange(0, config.steps, config.log_every)
    (params, _), history = jax.lax.scan(block, (params, opt_state), starts)
    # a traced hyper-parameter out of range (unseen by validate_hparams) gives NaN, never a
    # silently clipped run; diverged() flags it
    valid = hparams_in_range(hparams, ranges)
    params = jax.tree_util.tree_map(lambda p: jnp.where(valid, p, jnp.nan), params)
    history = {**history, "loss": jnp.where(valid, history["loss"], jnp.nan)}
    return TrainResult(params, history)


def _tree_norm(tree) -> jax.Array:
    """The Frobenius norm of every leaf together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))
