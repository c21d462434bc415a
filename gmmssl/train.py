r"""Training a linear projector A (d×r) as one pure function of a key and traced hyper-parameters.

``train(key, gmm, hparams, config)`` runs ``config.steps`` optimizer steps in a
``jax.lax.scan``. Every step draws fresh AeD(δ) pairs on the device (online regime), or
a minibatch from a fixed sample of ``config.num_samples`` pairs (finite-sample regime),
embeds them with the projector, and takes an optax step. Hyper-parameters that vary
over a grid (δ, learning rate, temperature, ξ) live in ``hparams``, a dict of scalars,
so ``jax.vmap(train, in_axes=(0, None, 0, None))`` trains a whole grid in one compiled
call. Static choices (shapes, loss, schedule) live in the frozen ``TrainConfig``.

Optimizer: Adam through ``optax.inject_hyperparams`` (so the learning rate is a traced
value), with a cosine decay of the rate to ``final_lr_fraction`` of its peak by
default: constant-rate Adam leaves a noise floor in the learned subspace.

History: every ``log_every`` steps the scan records the mean loss over the block, the
current learning rate and, when a Fisher basis is given, the Fisher capture.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gmmssl import losses, projectors
from gmmssl._validate import check_choice, check_int, check_range
from gmmssl.augment import MODES, sample_pairs
from gmmssl.data import Dataset, sample_dataset_pairs
from gmmssl.gmm import GMM, HeteroGMM, MultiModalGMM, sample_multimodal
from gmmssl.metrics import fisher_capture

__all__ = ["DEFAULT_HPARAMS", "HPARAM_RANGES", "IN_BATCH_LOSSES", "OBJECTIVES", "TrainConfig", "TrainResult",
           "check_setup", "diverged", "hparams_in_range", "init_params", "make_hparams", "train", "validate_hparams"]

# name: (default, low, high, low_open)
HPARAM_RANGES = {
    "delta": (1.0, 0.0, 1.0, False),
    "learning_rate": (0.05, 0.0, float("inf"), True),
    "temperature": (1.0, 0.0, float("inf"), True),
    "xi": (0.5, 0.0, float("inf"), False),
}
DEFAULT_HPARAMS = {name: spec[0] for name, spec in HPARAM_RANGES.items()}
SCHEDULES = ("cosine", "constant")


def validate_hparams(hparams: dict) -> None:
    """Raises ValueError for an unknown hyper-parameter or a concrete value out of range."""
    for name, value in hparams.items():
        if name not in HPARAM_RANGES:
            raise ValueError(f"unknown hyper-parameter {name!r}; known: {sorted(HPARAM_RANGES)}")
        _, low, high, low_open = HPARAM_RANGES[name]
        check_range(name, value, low, high, low_open=low_open, high_open=high == float("inf"))


def hparams_in_range(hparams: dict) -> jax.Array:
    """A traceable boolean: every known hyper-parameter finite and inside its range.

    Under jit/vmap the values are tracers that :func:`validate_hparams` cannot see; the
    trainer uses this to turn a cell with an out-of-range value into NaN outputs (flagged
    diverged) instead of training it with a clipped or meaningless value."""
    ok = jnp.asarray(True)
    for name, value in hparams.items():
        if name not in HPARAM_RANGES:
            continue
        _, low, high, low_open = HPARAM_RANGES[name]
        v = jnp.asarray(value)
        inside = jnp.isfinite(v) & ((v > low) if low_open else (v >= low))
        if high != float("inf"):
            inside &= v <= high
        ok &= jnp.all(inside)
    return ok


def make_hparams(**overrides) -> dict:
    """The default hyper-parameters with ``overrides``, validated, as float32 scalars."""
    hp = dict(DEFAULT_HPARAMS, **overrides)
    validate_hparams(hp)
    return {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training choices (one compilation per distinct config).

    Attributes:
      r: embedding dimension, 1 <= r <= d.
      batch_size: pairs per step B.
      steps: optimizer steps (a multiple of ``log_every``).
      loss: key of :data:`OBJECTIVES`.
      similarity, symmetric: InfoNCE options.
      mode: AeD mode, "prior" or "other".
      schedule: "cosine" (decay to ``final_lr_fraction``) or "constant".
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

    def validate(self, d: int) -> None:
        check_int("r", self.r, low=1, high=d)
        check_int("batch_size", self.batch_size, low=2 if self.loss in IN_BATCH_LOSSES else 1)
        check_int("steps", self.steps, low=1)
        check_int("log_every", self.log_every, low=1, high=self.steps)
        if self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of log_every ({self.log_every})")
        check_choice("loss", self.loss, OBJECTIVES)
        check_choice("similarity", self.similarity, losses._common.SIMILARITIES)
        check_choice("mode", self.mode, MODES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("distance", self.distance, losses._simsiam.DISTANCES)
        check_range("final_lr_fraction", self.final_lr_fraction, 0.0, 1.0)
        check_range("init_scale", self.init_scale, 0.0, float("inf"), low_open=True, high_open=True)
        if self.num_samples is not None:
            check_int("num_samples", self.num_samples, low=self.batch_size)
        projectors.check_hidden(self.hidden, self.activation)
        if self.hidden and self.loss not in NONLINEAR_LOSSES:
            raise ValueError(f"loss {self.loss!r} needs a linear projector (hidden=()); an MLP projector "
                             f"trains with {', '.join(NONLINEAR_LOSSES)}")


class Objective(NamedTuple):
    """A trainable loss.

    init(key, gmm, config) -> params; loss(params, x, x_pos, hparams, config, gmm) -> scalar;
    batch(key, gmm, n, hparams, config) -> (x, x_pos), the training pairs;
    data: the mixture type it trains on.
    """

    init: Callable
    loss: Callable
    batch: Callable
    data: tuple = (GMM, Dataset)


def _projector(key, d, config):
    return config.init_scale * jax.random.normal(key, (d, config.r)) / jnp.sqrt(d)


def _init_projector(key, gmm, config):
    if config.hidden:
        k_mlp, k_head = jax.random.split(key)
        return {"mlp": projectors.init_mlp(k_mlp, gmm.dim, config.hidden, config.activation),
                "A": _projector(k_head, config.hidden[-1], config)}
    return {"A": _projector(key, gmm.dim, config)}


def _embed(params, x, config):
    return projectors.embed(params, x, config.hidden, config.activation)


def _init_simsiam(key, gmm, config):
    k_a, k_p = jax.random.split(key)
    params = _init_projector(k_a, gmm, config)
    if config.predictor:
        params["P"] = jnp.eye(config.r) + 0.01 * jax.random.normal(k_p, (config.r, config.r))
    return params


def _init_clip(key, gmm, config):
    k1, k2 = jax.random.split(key)
    return {"A": _projector(k1, gmm.dims[0], config), "A2": _projector(k2, gmm.dims[1], config)}


def _aed_pairs(key, gmm, n, hparams, config):
    if isinstance(gmm, Dataset):
        x, x_pos, _, _ = sample_dataset_pairs(key, gmm, n, hparams["delta"])
    else:
        x, x_pos, _, _ = sample_pairs(key, gmm, n, hparams["delta"], config.mode)
    return x, x_pos


def _modality_pairs(key, gmm, n, hparams, config):
    pairs = sample_multimodal(key, gmm, n, hparams["delta"])
    return pairs.x1, pairs.x2


def _infonce_loss(params, x, x_pos, hparams, config, gmm):
    return losses.infonce(_embed(params, x, config), _embed(params, x_pos, config), temperature=hparams["temperature"],
                          similarity=config.similarity, symmetric=config.symmetric)


def _infonce_population_loss(params, x, x_pos, hparams, config, gmm):
    a = params["A"]
    la = gmm.chol.T @ a
    return losses.infonce_population(x @ a, x_pos @ a, gmm.means @ a, la.T @ la, jnp.log(gmm.weights),
                                     temperature=hparams["temperature"])


def _simsiam_loss(params, x, x_pos, hparams, config, gmm):
    return losses.simsiam(_embed(params, x, config), _embed(params, x_pos, config), predictor=params.get("P"), xi=hparams["xi"],
                          distance=config.distance, stop_gradient=config.stop_gradient)


def _spectral_loss(params, x, x_pos, hparams, config, gmm):
    return losses.spectral_contrastive(_embed(params, x, config), _embed(params, x_pos, config))


def _clip_loss(params, x1, x2, hparams, config, gmm):
    return losses.clip(x1 @ params["A"], x2 @ params["A2"], temperature=hparams["temperature"],
                       similarity=config.similarity)


NONLINEAR_LOSSES = ("infonce", "simsiam", "spectral")
# losses whose batch statistics need two rows at least: in-batch negatives (one pair has
# none: the InfoNCE loss is identically 0) or a batch covariance
IN_BATCH_LOSSES = ("infonce", "simsiam", "spectral", "clip")
OBJECTIVES: dict[str, Objective] = {
    "infonce": Objective(_init_projector, _infonce_loss, _aed_pairs),
    "infonce_population": Objective(_init_projector, _infonce_population_loss, _aed_pairs, (GMM,)),
    "simsiam": Objective(_init_simsiam, _simsiam_loss, _aed_pairs),
    "spectral": Objective(_init_projector, _spectral_loss, _aed_pairs),
    "clip": Objective(_init_clip, _clip_loss, _modality_pairs, (MultiModalGMM,)),
}


def check_setup(gmm, config: TrainConfig) -> None:
    """Raises ValueError when config cannot train on gmm (eagerly, before tracing)."""
    check_choice("loss", config.loss, OBJECTIVES)
    want = OBJECTIVES[config.loss].data
    if not isinstance(gmm, want):
        names = " or ".join(t.__name__ for t in want)
        raise ValueError(f"loss {config.loss!r} trains on a {names}, got {type(gmm).__name__}")
    if config.loss == "infonce_population" and isinstance(gmm, HeteroGMM):
        raise ValueError("loss 'infonce_population' needs a shared covariance (its closed-form negatives "
                         "assume one); got a HeteroGMM: use loss 'infonce'")
    config.validate(gmm.dim)
    if isinstance(gmm, MultiModalGMM):
        check_int("r", config.r, low=1, high=min(gmm.dims))


def diverged(result: "TrainResult") -> jax.Array:
    """True when training left a non-finite parameter or a non-finite logged loss (a
    diverged run, or a traced hyper-parameter out of range). Traceable; for a vmapped
    grid of results use ``jax.vmap(diverged)``."""
    ok = jnp.all(jnp.isfinite(result.history["loss"]))
    for leaf in jax.tree_util.tree_leaves(result.params):
        ok &= jnp.all(jnp.isfinite(leaf))
    return ~ok


class TrainResult(NamedTuple):
    """params: the trained parameters ({"A": (d, r), ...});
    history: dict of (steps // log_every,) arrays: "loss", "learning_rate" and, when a
    Fisher basis was given, "fisher_capture"."""

    params: dict
    history: dict


def init_params(key, gmm, config: TrainConfig):
    """The parameters :func:`train` starts from for this key (before any step)."""
    return OBJECTIVES[config.loss].init(jax.random.split(key)[0], gmm, config)


def _schedule(config: TrainConfig, peak):
    if config.schedule == "constant":
        return lambda count: peak * jnp.ones_like(count, dtype=jnp.float32)
    alpha = config.final_lr_fraction

    def cosine(count):
        frac = jnp.minimum(count / config.steps, 1.0)
        return peak * (alpha + (1.0 - alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))

    return cosine


def train(key, gmm: GMM, hparams: dict, config: TrainConfig, fisher_basis=None) -> TrainResult:
    """Trains one projector; pure in (key, gmm, hparams, fisher_basis), static in config.

    Args:
      key: PRNG key. For one key the initialization and every step's draws are the
        same whatever the hyper-parameters (common random numbers across a grid).
      gmm: the data mixture (a :class:`MultiModalGMM` for loss "clip", whose history
        and "A" refer to the first modality; its second projector is "A2").
      hparams: dict of scalars (see :data:`HPARAM_RANGES`); missing ones take defaults.
      config: static :class:`TrainConfig`.
      fisher_basis: optional (d, m) basis; when given, the history records capture.

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
    hparams = {**{k: jnp.asarray(v, jnp.float32) for k, v in DEFAULT_HPARAMS.items()}, **hparams}
    validate_hparams(hparams)
    objective = OBJECTIVES[config.loss]
    k_data = jax.random.split(key)[1]
    params = init_params(key, gmm, config)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=_schedule(config, hparams["learning_rate"]))
    opt_state = tx.init(params)

    if config.num_samples is None:
        def batch(step_key):
            return objective.batch(step_key, gmm, config.batch_size, hparams, config)
    else:
        pool_x, pool_pos = objective.batch(jax.random.fold_in(k_data, config.steps), gmm,
                                           config.num_samples, hparams, config)

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
        return (optax.apply_updates(params, updates), opt_state), value

    def block(carry, start):
        carry, values = jax.lax.scan(step, carry, start + jnp.arange(config.log_every))
        record = {"loss": values.mean(), "learning_rate": carry[1].hyperparams["learning_rate"]}
        if fisher_basis is not None and not config.hidden:
            record["fisher_capture"] = fisher_capture(carry[0]["A"], fisher_basis)
        return carry, record

    starts = jnp.arange(0, config.steps, config.log_every)
    (params, _), history = jax.lax.scan(block, (params, opt_state), starts)
    # a traced hyper-parameter out of range (unseen by validate_hparams) gives NaN, never a
    # silently clipped run; diverged() flags it
    valid = hparams_in_range(hparams)
    params = jax.tree_util.tree_map(lambda p: jnp.where(valid, p, jnp.nan), params)
    history = {**history, "loss": jnp.where(valid, history["loss"], jnp.nan)}
    return TrainResult(params, history)
