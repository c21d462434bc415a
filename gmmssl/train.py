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

Your own loop: ``train`` is a ``lax.scan`` over :func:`step`, the pure optimizer step,
starting from :func:`init`'s :class:`TrainState` (parameters, optimizer state, the
hyper-parameters, the data key); drive them yourself to log, checkpoint or stop as you
like: the same key gives the same numbers as ``train``. An objective's loss may return
``(loss, aux)``, aux a dict of scalars (a learned temperature, say), as with
``jax.value_and_grad(has_aux=True)``: every step reports them beside the loss.

History: the steps run in windows of ``log_every``; each window adds one entry to every
history array (see :class:`TrainResult`). "loss" and the objective's aux values are
means over the window's steps; "learning_rate" is the rate of the window's last step;
"start_loss" the loss at its first; "param_change" and "fisher_capture" are measured
on the parameters at its end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gmmssl import losses, projectors
from gmmssl._validate import check_choice, check_int, check_range, is_concrete
from gmmssl.augment import MODES, sample_pairs
from gmmssl.backend import IMPLEMENTATIONS, with_matmul_precision
from gmmssl.data import Dataset, sample_dataset_pairs
from gmmssl.gmm import GMM, HeteroGMM, MultiModalGMM, sample_multimodal
from gmmssl.metrics import fisher_capture

__all__ = ["BLOWUP_FACTOR", "DEFAULT_HPARAMS", "DIVERGENCE_REASONS", "HISTORY_KEYS", "HPARAM_RANGES", "IN_BATCH_LOSSES",
           "OBJECTIVES", "SCHEDULES", "STUCK_TOL", "Objective", "TrainConfig", "TrainResult", "TrainState", "aed_pairs",
           "byol_ema_rate",
           "HParam", "as_hparam", "check_setup", "diverged", "divergence", "embed", "hparam_ranges",
           "hparams_in_range", "init", "init_params", "init_projector", "learning_rate_schedule", "make_hparams",
           "objective_of", "pair_moments", "step", "train", "unused_hparams", "validate_hparams"]

class HParam(NamedTuple):
    """A hyper-parameter's default and valid range, one type for every place that needs
    one: the built-in ones (:data:`HPARAM_RANGES`), an objective's own
    (``Objective.hparams``) and a sweep axis's (``Sweep.ranges``, ``map_grid(ranges=...)``).

    Attributes:
      default: the value when none is given (None for a sweep axis's range: it has none).
      low, high: the ends (``high`` may be ``float("inf")``).
      low_open, high_open: whether the value must be strictly above ``low`` / below ``high``.

    Where a range is read (:func:`as_hparam`), the older positional tuples are converted:
    an objective's ``(default, low, high, low_open)`` (``high_open`` is then ``high == inf``,
    as before) and a sweep's ``(low, high, low_open, high_open)``; a range with
    ``low > high`` (or an empty one) is refused in one line naming the hyper-parameter.

      >>> HParam(1.0, 0.0, 10.0)
      HParam(default=1.0, low=0.0, high=10.0, low_open=False, high_open=False)
      >>> as_hparam("alpha", (1.0, 0.0, 10.0, False))          # an objective's old tuple
      HParam(default=1.0, low=0.0, high=10.0, low_open=False, high_open=False)
      >>> as_hparam("alpha", (0.0, 10.0, True, False), axis=True)  # a sweep's old tuple
      HParam(default=None, low=0.0, high=10.0, low_open=True, high_open=False)
      >>> as_hparam("lam", HParam(1.0, 10.0, 0.0))
      Traceback (most recent call last):
      ...
      ValueError: hyper-parameter 'lam': its range is empty (low 10.0 > high 0.0); an HParam is (default, low, high, low_open=False, high_open=False)
    """

    default: float | None
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def check(self, name: str, value) -> None:
        """Raises ValueError when a concrete ``value`` is not finite or outside the range
        (tracers pass: their values are unknown)."""
        check_range(name, value, self.low, self.high, low_open=self.low_open, high_open=self.high_open)


def _is_flag(v) -> bool:
    return isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not _is_flag(v)


_HPARAM_FORMS = ("must be (default, low, high, low_open) or an HParam(default, low, high, low_open=False, "
                 "high_open=False)")


def as_hparam(name: str, spec, *, axis: bool = False) -> HParam:
    """``spec`` as an :class:`HParam`, checked; ``name`` names it in errors.

    Accepted: an HParam; a tuple (default, low, high[, low_open[, high_open]]) (a 4-tuple is
    an objective's old form, ``high_open = high == inf``); with ``axis=True`` (a sweep
    axis's range, no default needed) also the sweep's old (low, high, low_open, high_open).
    A 4-tuple whose third entry is a bool is read as the sweep's form, one whose fourth
    only is a bool as the objective's, whichever place it is given in; plain 0/1 flags
    follow the place (``axis``). Refused, in one line naming the hyper-parameter: another
    shape, non-numbers, NaN ends, low > high, an empty range, and (outside a sweep) a
    missing default or one outside the range."""
    if isinstance(spec, HParam):
        hp = spec
    elif isinstance(spec, (tuple, list)) and len(spec) == 4 and (
            _is_flag(spec[2]) or (axis and not _is_flag(spec[3]))):
        hp = HParam(None, spec[0], spec[1], spec[2], spec[3])  # a sweep's (low, high, low_open, high_open)
    elif isinstance(spec, (tuple, list)) and len(spec) == 4:
        hp = HParam(spec[0], spec[1], spec[2], spec[3], _is_number(spec[2]) and spec[2] == float("inf"))
    elif isinstance(spec, (tuple, list)) and len(spec) in (3, 5):
        hp = HParam(*spec) if len(spec) == 5 else HParam(*spec, False, _is_number(spec[2]) and spec[2] == math.inf)
    else:
        where = f"ranges[{name!r}] must be an HParam or (low, high, low_open, high_open)" if axis else \
            f"hparams[{name!r}] {_HPARAM_FORMS}"
        raise ValueError(f"{where}, got {spec!r}")
    if not (_is_number(hp.low) and _is_number(hp.high)) or math.isnan(hp.low) or math.isnan(hp.high):
        raise ValueError(f"hyper-parameter {name!r}: low and high must be numbers, got {hp!r}")
    if not all(_is_flag(f) or (isinstance(f, (int, np.integer)) and f in (0, 1)) for f in (hp.low_open, hp.high_open)):
        raise ValueError(f"hyper-parameter {name!r}: low_open and high_open must be bools, got {hp!r}")
    hp = hp._replace(low=float(hp.low), high=float(hp.high), low_open=bool(hp.low_open), high_open=bool(hp.high_open))
    if hp.low > hp.high or (hp.low == hp.high and (hp.low_open or hp.high_open)):
        raise ValueError(f"hyper-parameter {name!r}: its range is empty (low {hp.low} > high {hp.high}); an HParam is "
                         f"(default, low, high, low_open=False, high_open=False)" if hp.low > hp.high else
                         f"hyper-parameter {name!r}: its range is empty (low = high = {hp.low} with an open end)")
    if hp.default is None:
        if not axis:
            raise ValueError(f"hyper-parameter {name!r} needs a default: HParam(default, low, high, ...), got {spec!r} "
                             f"(a sweep's range (low, high, low_open, high_open) has none)")
    elif not _is_number(hp.default):
        raise ValueError(f"hyper-parameter {name!r}: the default must be a number, got {hp.default!r}")
    else:
        hp.check(name, hp.default)
    return hp


HPARAM_RANGES = {
    "delta": HParam(1.0, 0.0, 1.0),
    "learning_rate": HParam(0.05, 0.0, float("inf"), low_open=True, high_open=True),
    "temperature": HParam(1.0, 0.0, float("inf"), low_open=True, high_open=True),
    "xi": HParam(0.5, 0.0, float("inf"), high_open=True),
}
DEFAULT_HPARAMS = {name: spec.default for name, spec in HPARAM_RANGES.items()}
SCHEDULES = ("cosine", "constant")


def _ranges(ranges) -> dict:
    """{name: HParam} from :data:`HPARAM_RANGES` (None) or a mapping of HParams or old tuples."""
    if ranges is None:
        return HPARAM_RANGES
    return {name: spec if isinstance(spec, HParam) and isinstance(spec.low, float) else as_hparam(name, spec)
            for name, spec in ranges.items()}


def validate_hparams(hparams: dict, ranges: dict | None = None) -> None:
    """Raises ValueError for an unknown hyper-parameter or a concrete value out of range.

    ranges: {name: :class:`HParam`} (or the old (default, low, high, low_open) tuples);
    default :data:`HPARAM_RANGES` (a config's own: :func:`hparam_ranges`)."""
    ranges = _ranges(ranges)
    for name, value in hparams.items():
        if name not in ranges:
            raise ValueError(f"unknown hyper-parameter {name!r}; known: {sorted(ranges)}")
        ranges[name].check(name, value)


def hparams_in_range(hparams: dict, ranges: dict | None = None) -> jax.Array:
    """A traceable boolean: every known hyper-parameter finite and inside its range.

    Under jit/vmap the values are tracers that :func:`validate_hparams` cannot see; the
    trainer uses this to turn a cell with an out-of-range value into NaN outputs (flagged
    diverged) instead of training it with a clipped or meaningless value."""
    ranges = _ranges(ranges)
    ok = jnp.asarray(True)
    for name, value in hparams.items():
        if name not in ranges:
            continue
        spec = ranges[name]
        v = jnp.asarray(value)
        inside = jnp.isfinite(v) & ((v > spec.low) if spec.low_open else (v >= spec.low))
        if spec.high != float("inf"):
            inside &= (v < spec.high) if spec.high_open else (v <= spec.high)
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
        peak), "constant", or a callable (peak, steps) -> optax schedule (count -> rate).
        The peak is the hyper-parameter "learning_rate", traced in a sweep, so the trainer
        never hands it to the schedule (optax's schedules test some arguments in Python,
        which a traced value cannot pass): it calls ``schedule(1.0, steps)`` with a
        concrete peak of 1.0 and multiplies its rates by "learning_rate", the rate of step
        t being ``learning_rate * schedule(1.0, steps)(t)`` (:func:`learning_rate_schedule`).
        A callable must therefore be linear in its peak, every value relative to it:
        ``optax.warmup_cosine_decay_schedule(0.0, peak, steps // 10, steps)`` is; a fixed
        ``init_value=1e-4``, or a schedule that ignores the peak, is not. :func:`check_setup`
        compares ``schedule(2.0, steps)`` with twice ``schedule(1.0, steps)`` at a few
        steps and refuses a schedule that differs.
      optimizer: an optax optimizer factory, called with the schedule as its learning
        rate (default ``optax.adam``; e.g. ``optax.sgd``, or
        ``lambda lr: optax.adamw(lr, weight_decay=1e-4)``), or a ready
        ``optax.GradientTransformation`` (its own rate: the "learning_rate"
        hyper-parameter and the schedule are then unused, and the history records no rate;
        so a concrete learning_rate other than the default is refused by :func:`train`, and
        a sweep axis over it by :func:`gmmssl.sweep.trainer_ranges`' ranges and
        :func:`gmmssl.evaluate.make_compare_cell`).
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
      implementation: the in-batch contrastive losses' code path ("infonce", "clip",
        "ntxent", "dcl"): None (the backend's measured best), "xla", "low_rank" (InfoNCE
        and CLIP only) or "pallas" (:func:`gmmssl.backend.contrastive_implementation`).
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
    implementation: str | None = None

    @property
    def objective(self) -> "Objective":
        """The :class:`Objective` this config trains."""
        return objective_of(self.loss)

    @property
    def loss_name(self) -> str:
        """The objective's name (the method name in results)."""
        return self.objective.name

    def __post_init__(self):
        self.validate()  # a config that cannot train is refused where it is written, not at its first use

    def validate(self, d: int | None = None) -> None:
        """Raises ValueError for a choice out of range; without ``d`` (the data's
        dimension, unknown before the data) every check but r's upper bound. Called
        without ``d`` when the config is made."""
        check_int("r", self.r, low=1, high=d)
        objective = self.objective
        check_int("batch_size", self.batch_size, low=2 if objective.in_batch else 1)
        check_int("steps", self.steps, low=1)
        check_int("log_every", self.log_every, low=1)
        if self.log_every > self.steps:
            raise ValueError(f"log_every ({self.log_every}) must be at most steps ({self.steps}): the history records "
                             f"one entry every log_every steps; use a divisor of steps, such as "
                             f"log_every={self.steps}")
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
        if self.implementation is not None:
            check_choice("implementation", self.implementation, IMPLEMENTATIONS)
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
      loss: (params, x, x_pos, hparams, config, data) -> scalar, or -> (scalar, aux)
        with aux a dict {name: scalar} of values to log (as
        ``jax.value_and_grad(has_aux=True)`` takes them; a returned tuple is read as
        that pair, and aux is not differentiated). Embed the batch with
        :func:`embed` (``embed(params, x, config)``, the linear or MLP projector) and
        apply a loss on the (B, r) embeddings; ``hparams`` is a dict of traced scalars
        (the built-in ones and this objective's own). Each aux name becomes a history
        key (its mean over each logging window, like "loss") and a key of
        :func:`step`'s metrics; it may not be one of :data:`HISTORY_KEYS`.
      init: (key, data, config) -> params, a dict with "A" (the projector the metrics
        score; default :func:`init_projector`: A (d, r) ~ N(0, init_scale²/d)).
      batch: (key, data, n, hparams, config) -> (x, x_pos), the n training pairs of one
        step (default :func:`aed_pairs`: AeD(δ) pairs of a GMM, Dataset or PairSource).
      hparams: this objective's own traced hyper-parameters, {name: :class:`HParam`}
        (default, valid range; the older tuples (default, low, high, low_open) are
        converted); they become grid axes like "delta" (validated the same way,
        out-of-range traced values give NaN).
      data: the data types it trains on (None: any the batch function accepts).
      in_batch: the loss compares rows of the batch (needs B ≥ 2).
      nonlinear: it may train an MLP projector (``TrainConfig(hidden=...)``).
      post_update: optional (params, hparams, config) -> params, applied after every
        optimizer step (e.g. BYOL's moving-average target network, kept in the params
        with a stop-gradient, so it rides in the scan's state). A post_update with a
        keyword parameter ``count`` also receives the step number (a traced int32, 0 for
        the first step), for schedules such as BYOL's cosine EMA.

    Example (decoupled contrastive learning: InfoNCE without the positive in the
    denominator, with a traced weight):

      >>> import jax.numpy as jnp
      >>> from jax.nn import logsumexp
      >>> def dcl(params, x, x_pos, hparams, config, data):
      ...     z, zp = embed(params, x, config), embed(params, x_pos, config)
      ...     logits = z @ zp.T / hparams["temperature"]
      ...     off = jnp.where(jnp.eye(z.shape[0], dtype=bool), -jnp.inf, logits)
      ...     return jnp.mean(logsumexp(off, axis=1) - hparams["alpha"] * jnp.diagonal(logits))
      >>> DCL = Objective("dcl", dcl, hparams={"alpha": HParam(1.0, 0.0, 10.0)})
      >>> TrainConfig(loss=DCL, steps=10, log_every=5).loss_name
      'dcl'
    """

    name: str
    loss: Callable
    init: Callable | None = None
    batch: Callable | None = None
    hparams: Mapping[str, HParam] = dataclasses.field(default_factory=dict)
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
        if not isinstance(self.hparams, Mapping):
            raise ValueError(f"Objective {self.name!r}: hparams must be a dict {{name: HParam(...)}}, "
                             f"got {self.hparams!r}")
        converted = {}
        for hp, spec in dict(self.hparams).items():
            if hp in HPARAM_RANGES:
                raise ValueError(f"Objective {self.name!r}: hyper-parameter {hp!r} is built in; choose another name")
            try:
                converted[hp] = as_hparam(hp, spec)  # the old (default, low, high, low_open) tuples too
            except ValueError as err:
                raise ValueError(f"Objective {self.name!r}: {err}") from None
        object.__setattr__(self, "hparams", converted)

    def update(self, params, hparams, config, count):
        """``post_update`` applied (params unchanged when there is none), with ``count``
        when it takes one."""
        if self.post_update is None:
            return params
        if _takes_count(self.post_update):
            return self.post_update(params, hparams, config, count=count)
        return self.post_update(params, hparams, config)

    def init_params(self, key, data, config):
        return (self.init or init_projector)(key, data, config)

    def pairs(self, key, data, n, hparams, config):
        return (self.batch or aed_pairs)(key, data, n, hparams, config)


def _takes_count(fn) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "count" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def objective_of(loss) -> Objective:
    """The :class:`Objective` of ``TrainConfig.loss``: a built-in name or an Objective."""
    if isinstance(loss, Objective):
        return loss
    check_choice("loss", loss, OBJECTIVES)
    return OBJECTIVES[loss]


def hparam_ranges(config: "TrainConfig") -> dict:
    """{name: :class:`HParam`}: the built-in hyper-parameters and those of the config's
    objective."""
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
        return data.pairs(key, n, hparams)  # its structure is checked once, by check_setup
    return x, x_pos


def _modality_pairs(key, gmm, n, hparams, config):
    pairs = sample_multimodal(key, gmm, n, hparams["delta"])
    return pairs.x1, pairs.x2


def _infonce_loss(params, x, x_pos, hparams, config, gmm):
    return losses.infonce(embed(params, x, config), embed(params, x_pos, config), temperature=hparams["temperature"],
                          similarity=config.similarity, symmetric=config.symmetric,
                          implementation=config.implementation)


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
                       similarity=config.similarity, implementation=config.implementation)


def _views(params, x, x_pos, config):
    return embed(params, x, config), embed(params, x_pos, config)


def _ntxent_loss(params, x, x_pos, hparams, config, gmm):
    return losses.ntxent(*_views(params, x, x_pos, config), temperature=hparams["temperature"],
                         implementation=config.implementation)


def _dcl_loss(params, x, x_pos, hparams, config, gmm):
    return losses.dcl(*_views(params, x, x_pos, config), temperature=hparams["temperature"],
                      implementation=config.implementation)


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


def byol_ema_rate(hparams, config, count):
    r"""BYOL's target moving-average rate at step ``count``: with ``ema`` = τ_base and
    ``ema_cosine`` = c ∈ [0, 1],

    .. math:: \tau_k = (1 - c)\,\tau_{base} + c\,\big[1 - (1 - \tau_{base})(\cos(\pi k/K) + 1)/2\big],

    K = ``config.steps``. c = 0 (the default) keeps τ_base fixed; c = 1 is BYOL's cosine
    schedule (Grill et al. 2020, τ_base = 0.996 there: ``ema=0.996, ema_cosine=1``), rising
    from τ_base at the first step to 1 at the last."""
    base, c = hparams["ema"], hparams["ema_cosine"]
    frac = jnp.minimum(jnp.asarray(count, jnp.float32) / max(config.steps, 1), 1.0)
    cosine = 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0
    return (1.0 - c) * base + c * cosine


def _byol_update(params, hparams, config, *, count=0):
    rate = byol_ema_rate(hparams, config, count)
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
    "byol": Objective("byol", _byol_loss, init=_init_byol, hparams={"ema": (0.99, 0.0, 1.0, False),
                                                               "ema_cosine": (0.0, 0.0, 1.0, False)},
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


def check_setup(gmm, config: TrainConfig, hparams: Mapping | None = None) -> None:
    """Raises ValueError, in one line naming the culprit, when ``config`` cannot train on
    ``gmm`` (the data: a GMM, a Dataset or a PairSource): call it before a sweep, so that
    nothing is compiled for a setup that cannot run.

    Concretely: the data's type and dimension against the objective, the config's choices
    (:meth:`TrainConfig.validate`: steps and log_every, ...), a callable schedule's
    linearity in its peak (``TrainConfig.schedule``; evaluated at a few steps by one small
    program compiled apart) and, given ``hparams``, a concrete
    learning_rate other than the default with a ready ``optax.GradientTransformation`` as
    the optimizer (it would change nothing). Then abstractly (``jax.eval_shape``: shapes
    only, nothing computed or compiled), every hyper-parameter a traced float32 scalar as
    in a sweep: the schedule, the optimizer, the objective's init, its batch (the pair
    source: n rows of ``dim`` columns from a PairSource), its loss and gradient, and its
    post_update. An error there names the part that failed, with the shapes involved and
    the first line of the original error (chained as the cause).

    :func:`train` and :func:`init` call it; the abstract part runs once per config and
    data structure (shapes and dtypes), so calling it first costs a sweep nothing more.
    """
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
    if hparams is not None and isinstance(config.optimizer, optax.GradientTransformation):
        rate = hparams.get("learning_rate")
        if rate is not None and is_concrete(rate) and np.any(np.asarray(rate, np.float32)
                                                             != np.float32(HPARAM_RANGES["learning_rate"].default)):
            shown = ", ".join(f"{v:.6g}" for v in np.asarray(rate, np.float64).ravel()[:4])
            raise ValueError(f"learning_rate={shown} changes nothing: {_UNUSED_LEARNING_RATE}")
    key = _setup_key(gmm, config)
    if key is not None and key in _SETUP_CHECKED:
        return
    try:
        _check_schedule(config)
        _check_abstract(gmm, config)
    except _SetupError as err:  # a plain ValueError for the caller, the user's error as its cause
        raise ValueError(str(err)) from err.__cause__
    if key is not None:
        if len(_SETUP_CHECKED) >= _SETUP_CHECKED_MAX:
            _SETUP_CHECKED.pop(next(iter(_SETUP_CHECKED)))
        _SETUP_CHECKED[key] = True


_UNUSED_LEARNING_RATE = ("TrainConfig.optimizer is a ready optax.GradientTransformation, which keeps its own rate; "
                         "pass an optimizer factory (such as optax.adam, or lambda lr: optax.sgd(lr, momentum=0.9)) "
                         "to use the learning_rate hyper-parameter")


def unused_hparams(config: TrainConfig) -> dict[str, str]:
    """{name: why}: the hyper-parameters whose value changes nothing under ``config``
    (learning_rate with a ready ``optax.GradientTransformation`` as the optimizer). A
    sweep over one is refused (:func:`gmmssl.sweep.trainer_ranges`,
    :func:`gmmssl.evaluate.make_compare_cell`): every cell would be the same."""
    if isinstance(config.optimizer, optax.GradientTransformation):
        return {"learning_rate": f"a sweep over learning_rate changes nothing: {_UNUSED_LEARNING_RATE}"}
    return {}


class _SetupError(ValueError):
    """A refusal of check_setup's, already one line naming its culprit."""


_SETUP_CHECKED: dict = {}  # the (config, data structure) pairs check_setup passed, oldest first
_SETUP_CHECKED_MAX = 256


def _setup_key(data, config):
    """What check_setup's abstract part depends on, hashable; None when it is not (no caching)."""
    try:
        leaves, treedef = jax.tree_util.tree_flatten(data)
        sig = tuple((tuple(leaf.shape), jnp.dtype(leaf.dtype).name) for leaf in leaves)
        key = (config, treedef, sig, bool(jax.config.jax_enable_x64))
        hash(key)
        return key
    except Exception:  # noqa: BLE001 - a leaf without shape, an unhashable config field: check every time
        return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


@contextlib.contextmanager
def _blame(what: str):
    """Re-raises an error of the user's code inside as one line naming ``what``."""
    try:
        yield
    except _SetupError:
        raise
    except Exception as err:  # noqa: BLE001 - anything a user's callable raises
        raise _SetupError(f"{what} failed: {_first_line(err)}") from err


def _shapes(tree):
    return jax.tree_util.tree_map(lambda leaf: tuple(getattr(leaf, "shape", ())), tree)


def _check_schedule(config: TrainConfig) -> None:
    """A callable schedule, concretely: it builds at peak 1.0, gives finite scalar rates and
    is linear in its peak (schedule(2.0, steps) is twice schedule(1.0, steps)) at a few
    steps. One small program, compiled apart (also from inside a trace), evaluates both."""
    if isinstance(config.optimizer, optax.GradientTransformation) or not callable(config.schedule):
        return
    steps = config.steps
    name = getattr(config.schedule, "__name__", type(config.schedule).__name__)
    counts = np.asarray(sorted({0, 1, steps // 10, steps // 4, steps // 2, 3 * steps // 4, steps - 1, steps}), np.int32)

    def rates(count):
        out = []
        for peak in (1.0, 2.0):
            with _blame(f"the schedule TrainConfig.schedule={name}, called as schedule({peak}, {steps}),"):
                built = config.schedule(peak, steps)
            if not callable(built):
                raise _SetupError(f"the schedule TrainConfig.schedule={name} must return an optax schedule (a "
                                  f"callable count -> rate), got {type(built).__name__}")
            with _blame(f"the schedule TrainConfig.schedule={name}, evaluated at a step,"):
                rate = jnp.asarray(built(count))
            if rate.shape != ():
                raise _SetupError(f"the schedule TrainConfig.schedule={name} must give a scalar rate, got shape "
                                  f"{rate.shape}")
            out.append(rate.astype(jnp.float32))
        return tuple(out)

    one, two = (np.asarray(v, np.float64) for v in
                jax.jit(jax.vmap(rates)).lower(counts).compile()(counts))
    bad = ~(np.isfinite(one) & np.isfinite(two))
    if bad.any():
        raise _SetupError(f"the schedule TrainConfig.schedule={name} gives a non-finite rate at step "
                          f"{counts[bad][0]} ({one[bad][0]!r} at peak 1.0)")
    scale = np.abs(one).max()
    for count, a, b in zip(counts.tolist(), one.tolist(), two.tolist()):
        if abs(b - 2.0 * a) > 1e-5 * abs(2.0 * a) + 1e-6 * scale:
            raise _SetupError(
                f"the schedule TrainConfig.schedule={name} must be linear in its peak (the trainer builds it at peak "
                f"1.0 and multiplies its rates by the traced learning_rate): at step {count}, schedule(2.0, {steps}) "
                f"gives {b:.6g}, not 2 x schedule(1.0, {steps}) = {2.0 * a:.6g}; give every value relative to "
                f"the peak (such as init_value=0.0 or 0.01 * peak)")


def _check_abstract(data, config: TrainConfig) -> None:
    """The user's callables under ``jax.eval_shape``, with traced hyper-parameters."""
    objective = config.objective
    label = f"objective {objective.name!r}"
    n = config.batch_size
    if objective.batch is not None:
        source = f"{label}: its batch(key, data, n={n}, hparams, config) on a {type(data).__name__}"
    elif isinstance(data, (GMM, Dataset)):
        source = f"sampling {n} pairs from the {type(data).__name__}"
    else:
        source = f"the pair source {type(data).__name__}: its pairs(key, n={n}, hparams)"

    def same_structure(before, after, what):
        spec = lambda tree: jax.tree_util.tree_map(lambda l: (tuple(l.shape), jnp.dtype(l.dtype).name), tree)  # noqa: E731
        if jax.tree_util.tree_structure(before) != jax.tree_util.tree_structure(after) or spec(before) != spec(after):
            raise _SetupError(f"{what} changed the parameters from {spec(before)} to {spec(after)}: the training "
                              f"loop carries them from step to step, so their structure, shapes and dtypes must stay")

    def run(key, hp, count):
        k_init, k_data = jax.random.split(key)
        tx = None
        if not isinstance(config.optimizer, optax.GradientTransformation):
            schedule = learning_rate_schedule(config, hp["learning_rate"])
            with _blame("the learning-rate schedule (TrainConfig.schedule) at a traced step"):
                rate = jnp.asarray(schedule(count))
            if rate.shape != ():
                raise _SetupError(f"the learning-rate schedule (TrainConfig.schedule) must give a scalar rate, got "
                                  f"shape {rate.shape}")
            with _blame("the optimizer factory TrainConfig.optimizer, called with the schedule,"):
                tx = config.optimizer(schedule)
            if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
                raise _SetupError(f"the optimizer factory TrainConfig.optimizer must return an "
                                  f"optax.GradientTransformation, got {type(tx).__name__}")
        else:
            tx = config.optimizer
        with _blame(f"{label}: its init(key, data, config) on a {type(data).__name__}"):
            params = objective.init_params(k_init, data, config)
        with _blame(source):
            out = objective.pairs(k_data, data, n, hp, config)
        if not (isinstance(out, (tuple, list)) and len(out) == 2
                and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in out)):
            got = (f"one array of shape {tuple(out.shape)}" if hasattr(out, "shape") else
                   f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__)
            raise _SetupError(f"{source} must return two arrays (x, x_pos), got {got}")
        x, x_pos = out
        kinds = {jnp.dtype(v.dtype).kind for v in out}
        if not kinds <= set("biuf"):
            raise _SetupError(f"{source} must return real arrays (x, x_pos), got dtypes {jnp.dtype(x.dtype).name} "
                              f"and {jnp.dtype(x_pos.dtype).name}: pass the real features (complex values are not "
                              f"coerced)")
        if objective.batch is None and not isinstance(data, (GMM, Dataset)):
            want = (n, data.dim)
            if tuple(x.shape[:1]) != (n,) or tuple(x_pos.shape[:1]) != (n,):
                raise _SetupError(f"the pair source {type(data).__name__} (dim={data.dim}) must return n = {n} rows of "
                                  f"each view, got {tuple(x.shape)} and {tuple(x_pos.shape)}; pairs(key, n, hparams) "
                                  f"returns two (n, dim) = {want} arrays")
            if tuple(x.shape) != want or tuple(x_pos.shape) != want:
                raise _SetupError(f"the pair source {type(data).__name__} (dim={data.dim}) returned x of shape "
                                  f"{tuple(x.shape)} and x_pos of shape {tuple(x_pos.shape)} for n = {n}; "
                                  f"pairs(key, n, hparams) must return two (n, dim) = {want} arrays")
        elif tuple(x.shape[:1]) != (n,) or tuple(x_pos.shape[:1]) != (n,):
            raise _SetupError(f"{source} must return n = {n} rows of each view, got {tuple(x.shape)} and "
                              f"{tuple(x_pos.shape)}")

        def loss(p):
            value = objective.loss(p, x, x_pos, hp, config, data)
            return value[0] if isinstance(value, tuple) else value  # (loss, aux): the loss

        with _blame(f"{label}: its loss (and gradient) on parameters {_shapes(params)} and pairs x "
                    f"{tuple(x.shape)}, x_pos {tuple(x_pos.shape)}"):
            grads = jax.grad(loss)(params)
        with _blame(f"the optimizer (TrainConfig.optimizer) on parameters {_shapes(params)}"):
            updates, _ = tx.update(grads, tx.init(params), params)
            new = optax.apply_updates(params, updates)
        same_structure(params, new, "the optimizer's update (TrainConfig.optimizer)")
        if objective.post_update is not None:
            with _blame(f"{label}: its post_update(params, hparams, config)"):
                after = objective.update(new, hp, config, jnp.zeros((), jnp.int32))
            same_structure(new, after, f"{label}: its post_update")

    hp = {name: jax.ShapeDtypeStruct((), jnp.float32) for name in hparam_ranges(config)}
    jax.eval_shape(run, jax.eval_shape(jax.random.PRNGKey, 0), hp, jax.ShapeDtypeStruct((), jnp.int32))


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
    """What :func:`train` returns: the trained ``params`` ({"A": (d, r), ...}) and the
    ``history``, a dict of (steps // log_every,) arrays with one entry per logging
    window (window w holds steps w·log_every, ..., (w+1)·log_every − 1). A step's loss
    is the loss of its batch at the parameters before its update. Means over the window:

    - "loss": the mean of the window's steps' losses;
    - one key per auxiliary value of the objective (its loss returning ``(loss, aux)``):
      the mean of the window's values, like "loss".

    Single values:

    - "start_loss": the loss of the window's first step, i.e. at the window's starting
      parameters ([0] is L₀, before any step);
    - "learning_rate": the rate of the window's LAST step (the schedule at step
      (w+1)·log_every − 1), not a mean; absent when ``TrainConfig.optimizer`` is a ready
      ``optax.GradientTransformation`` (its rate is its own);
    - "param_change": ‖θ − θ₀‖/‖θ₀‖ for the parameters at the window's end (all
      parameters together);
    - "fisher_capture" (when a Fisher basis was given and the projector is linear): the
      capture of A at the window's end.

    A run whose traced hyper-parameters are out of range has NaN params, "loss" and aux
    values (:func:`diverged`)."""

    params: dict
    history: dict


def init_params(key, gmm, config: TrainConfig):
    """The parameters :func:`train` starts from for this key (before any step)."""
    return config.objective.init_params(jax.random.split(key)[0], gmm, config)


def _unit_schedule(config: TrainConfig):
    """The config's schedule built at a concrete peak of 1.0."""
    if callable(config.schedule):
        return config.schedule(1.0, config.steps)
    if config.schedule == "constant":
        return optax.constant_schedule(1.0)
    return optax.cosine_decay_schedule(1.0, config.steps, alpha=config.final_lr_fraction)


def learning_rate_schedule(config: TrainConfig, peak):
    """The optax schedule (count -> rate) of ``config`` with peak rate ``peak`` (may be
    traced): ``peak * unit(count)``, where ``unit`` is the config's schedule built at a
    concrete peak of 1.0: ``optax.cosine_decay_schedule(1.0, steps, final_lr_fraction)``,
    ``optax.constant_schedule(1.0)``, or the config's own ``schedule(1.0, steps)``.

    The schedule callable never sees a traced peak, so every optax schedule works in a
    learning-rate sweep (``optax.warmup_cosine_decay_schedule`` tests its peak in Python);
    it must be linear in its peak (see ``TrainConfig.schedule``; :func:`check_setup`
    checks it). The built-in schedules give the same numbers as built at ``peak``."""
    unit = _unit_schedule(config)

    def schedule(count):
        return peak * unit(count)

    return schedule


# the keys of the trainer's history and of step's metrics; an objective's aux values take other names
HISTORY_KEYS = ("loss", "start_loss", "param_change", "learning_rate", "fisher_capture")


class TrainState(NamedTuple):
    """The trainer between two steps (:func:`init` makes it, :func:`step` advances it): a
    pytree of arrays, so it goes through ``jax.jit`` and ``jax.vmap`` (a grid of states)
    and checkpoints as it is (orbax, or any pytree serializer).

    Attributes:
      count: int32 scalar, the steps taken. Step t draws its batch from
        ``jax.random.fold_in(key, t)`` and reports the schedule's rate at t.
      params: the parameters ({"A": (d, r), ...}).
      opt_state: the optax optimizer state.
      hparams: every hyper-parameter (the defaults filled in), float32 scalars.
      key: the data key.
      pool: the fixed sample (x, x_pos) the minibatches come from with
        ``TrainConfig(num_samples=n)`` (finite-sample regime); None otherwise.
    """

    count: jax.Array
    params: Any
    opt_state: Any
    hparams: dict
    key: jax.Array
    pool: tuple | None = None


def _optimizer(config: TrainConfig, hparams):
    """(tx, schedule): the config's optax optimizer at these hyper-parameters; schedule is
    None for a ready GradientTransformation (its rate is its own)."""
    if isinstance(config.optimizer, optax.GradientTransformation):
        return config.optimizer, None
    schedule = learning_rate_schedule(config, hparams["learning_rate"])
    return config.optimizer(schedule), schedule


def _pairs(key, data, n, hparams, config):
    objective = config.objective
    x, x_pos = objective.pairs(key, data, n, hparams, config)
    if x.shape[:1] != (n,) or x_pos.shape[:1] != (n,):  # shapes are static: checked as it is traced
        raise ValueError(f"the pair source ({type(data).__name__}, objective {objective.name!r}) must return n = {n} "
                         f"rows of each view, got {x.shape} and {x_pos.shape}")
    return x, x_pos


def _split_aux(objective: Objective, out):
    """(loss, aux) from what ``objective.loss`` returned: a scalar, or a pair (scalar, aux)."""
    if not isinstance(out, tuple):
        return out, {}
    if len(out) != 2 or not isinstance(out[1], Mapping):
        raise ValueError(f"Objective {objective.name!r}: loss must return a scalar or a pair (loss, aux) with aux a "
                         f"dict of scalars, got a tuple of {len(out)}: "
                         f"{tuple(type(o).__name__ for o in out)}")
    value, aux = out
    checked = {}
    for name, v in aux.items():
        if not isinstance(name, str) or name in HISTORY_KEYS:
            raise ValueError(f"Objective {objective.name!r}: aux names must be strings other than "
                             f"{', '.join(HISTORY_KEYS)} (the trainer's own history keys), got {name!r}")
        v = jnp.asarray(v)
        if v.shape != ():
            raise ValueError(f"Objective {objective.name!r}: aux value {name!r} must be a scalar, got shape {v.shape}")
        checked[name] = v
    return value, checked


def _init(key, data, hparams, config: TrainConfig, public: bool) -> TrainState:
    check_setup(data, config, hparams)
    ranges = hparam_ranges(config)
    hparams = {**{k: jnp.asarray(spec[0], jnp.float32) for k, spec in ranges.items()}, **hparams}
    validate_hparams(hparams, ranges)
    k_data = jax.random.split(key)[1]
    params = init_params(key, data, config)
    if public:  # train keeps the values as given (a Python float stays one) and masks at its end
        hparams = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
        # a traced hyper-parameter out of range: NaN from the start, never a clipped run
        valid = hparams_in_range(hparams, ranges)
        params = jax.tree_util.tree_map(lambda p: jnp.where(valid, p, jnp.nan), params)
    tx, _ = _optimizer(config, hparams)
    pool = None
    if config.num_samples is not None:
        pool = _pairs(jax.random.fold_in(k_data, config.steps), data, config.num_samples, hparams, config)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), hparams, k_data, pool)


@with_matmul_precision
def init(key, data, hparams: dict, config: TrainConfig) -> TrainState:
    """The :class:`TrainState` :func:`train` starts from, for your own loop over :func:`step`.

    Arguments as :func:`train`'s; pure in (key, data, hparams), static in config, so
    ``jax.vmap(init, in_axes=(0, None, 0, None))`` starts a grid. Concrete
    hyper-parameters out of range raise ValueError; traced ones out of range make the
    parameters NaN, so every later loss is NaN and :func:`diverged` flags the run.

    Example (a loop that stops early; jit ``step`` with the config static):

      >>> import jax
      >>> from gmmssl.gmm import parallel_pancakes
      >>> g, cfg = parallel_pancakes(6), TrainConfig(steps=20, log_every=10, batch_size=64)
      >>> state = init(jax.random.PRNGKey(0), g, make_hparams(delta=0.5), cfg)
      >>> step_fn = jax.jit(step, static_argnums=2)
      >>> while state.count < cfg.steps:
      ...     state, metrics = step_fn(state, g, cfg)
      ...     if metrics["loss"] < 1.0:
      ...         break
      >>> sorted(metrics)
      ['learning_rate', 'loss']
    """
    return _init(key, data, hparams, config, public=True)


@with_matmul_precision
def step(state: TrainState, data, config: TrainConfig) -> tuple[TrainState, dict]:
    """One optimizer step: draws step ``state.count``'s batch, takes the gradient of the
    objective's loss there, applies the optimizer (and the objective's ``post_update``).

    Pure in (state, data), static in config: ``jax.jit(step, static_argnums=2)``,
    ``jax.vmap(step, in_axes=(0, None, None))`` over a grid of states, or inside your own
    ``lax.scan``. :func:`train` is a scan over it: the same key gives the same numbers.

    Returns:
      (the next state, metrics): metrics["loss"] is the loss of this step's batch at
      ``state.params`` (before the update); the objective's aux values (its loss
      returning ``(loss, aux)``) likewise, one key each; "learning_rate" is the
      schedule's value at ``state.count``, the rate of this update (absent when
      ``TrainConfig.optimizer`` is a ready ``optax.GradientTransformation``).
      ``config.steps`` is the schedule's length: steps beyond it keep its final rate.
    """
    return _step(state, data, config, *_optimizer(config, state.hparams))


def _step(state: TrainState, data, config: TrainConfig, tx, schedule) -> tuple[TrainState, dict]:
    objective = config.objective
    step_key = jax.random.fold_in(state.key, state.count)
    if config.num_samples is None:
        x, x_pos = _pairs(step_key, data, config.batch_size, state.hparams, config)
    else:
        if state.pool is None:
            raise ValueError("config.num_samples is set but the state holds no fixed sample (pool): start it with "
                             "init(key, data, hparams, config) and this config")
        idx = jax.random.randint(step_key, (config.batch_size,), 0, config.num_samples)
        x, x_pos = state.pool[0][idx], state.pool[1][idx]

    def loss_fn(p, x, x_pos):
        return _split_aux(objective, objective.loss(p, x, x_pos, state.hparams, config, data))

    (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, x_pos)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = objective.update(params, state.hparams, config, state.count)
    metrics = {"loss": value, **aux}
    if schedule is not None:
        metrics["learning_rate"] = jnp.asarray(schedule(state.count), jnp.float32)
    return state._replace(count=state.count + 1, params=params, opt_state=opt_state), metrics


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
    state = _init(key, gmm, hparams, config, public=False)
    start_params, start_norm = state.params, _tree_norm(state.params)
    # the optimizer is built once, outside the scan (step builds it on each call, the same)
    tx, schedule = _optimizer(config, state.hparams)

    def one_step(carry, _):  # hparams, key and pool are the state's fixed part
        count, params, opt_state = carry
        state_t, metrics = _step(state._replace(count=count, params=params, opt_state=opt_state), gmm, config, tx,
                                 schedule)
        return (state_t.count, state_t.params, state_t.opt_state), metrics

    def window(carry, _):
        carry, metrics = jax.lax.scan(one_step, carry, None, length=config.log_every)
        params = carry[1]
        moved = _tree_norm(jax.tree_util.tree_map(jnp.subtract, params, start_params))
        record = {"loss": metrics["loss"].mean(), "start_loss": metrics["loss"][0],
                  "param_change": moved / jnp.maximum(start_norm, jnp.finfo(start_norm.dtype).tiny)}
        if "learning_rate" in metrics:  # the rate of the window's last step
            record["learning_rate"] = metrics["learning_rate"][-1]
        if fisher_basis is not None and not config.hidden:
            record["fisher_capture"] = fisher_capture(params["A"], fisher_basis)
        record.update({name: v.mean() for name, v in metrics.items() if name not in HISTORY_KEYS})  # aux: means
        return carry, record

    carry = (state.count, state.params, state.opt_state)
    (_, params, _), history = jax.lax.scan(window, carry, None, length=config.steps // config.log_every)
    # a traced hyper-parameter out of range (unseen by validate_hparams) gives NaN, never a
    # silently clipped run; diverged() flags it
    valid = hparams_in_range(state.hparams, hparam_ranges(config))
    params = jax.tree_util.tree_map(lambda p: jnp.where(valid, p, jnp.nan), params)
    averaged = ("loss", *(name for name in history if name not in HISTORY_KEYS))
    history = {**history, **{name: jnp.where(valid, history[name], jnp.nan) for name in averaged}}
    return TrainResult(params, history)


def _tree_norm(tree) -> jax.Array:
    """The Frobenius norm of every leaf together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))
