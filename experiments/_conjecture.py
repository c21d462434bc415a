"""What the conjecture's two views share (see :mod:`gmmssl.experiments.conjecture`): the
config, the random mixtures and δ each cell draws from its seed, and the checks."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gmmssl._validate import check_choice, check_int, check_range
from gmmssl.augment import MODES
from gmmssl.gmm import random_gmm
from gmmssl.train import TrainConfig, validate_hparams

LOSS = "infonce_population"
EXACT = "exact"
VIEWS = ("certified", "sgd")
STATIC_KEYS = ("d", "num_components", "mode", "centered", "extra_rank")
DEFAULTS = {
    "scale": "default",
    "view": "certified",
    "centered": (True, False),
    "extra_rank": 0,
    "small_kappa": 0.25,
    "small_kappa_max": 0.05,
    "starts": 3,
    "newton_steps": 60,
    "finite_batch": "64,512",
    "finite_mixtures": 2,
    "finite_steps": 1500,
    "finite_d": 8,
    "finite_mode": "prior",
    "d": 8,
    "num_components": (2, 4),
    "mode": ("prior", "other"),
    "mixtures": 16,
    "condition_max": 100.0,
    "separation_min": 0.5,
    "separation_max": 2.0,
    "delta_min": 0.05,
    "delta_max": 0.95,
    "dirichlet": 2.0,
    "min_kappa": 0.05,
    "batch_size": 512,
    "steps": 1500,
    "log_every": 100,
    "learning_rate": 0.05,
    "temperature": 1.0,
    "num_baseline": 2000,
    "num_eval": 2000,
    "candidates": 6,
    "rerun_factor": 4,
}
PRESETS = {"paper": {"d": (16, 64), "num_components": (2, 3, 4, 8), "extra_rank": (0, 1), "mixtures": 16,
                     "steps": 3000, "candidates": 12, "small_kappa": 0.5, "finite_batch": "64,512,4096",
                     "finite_d": 16, "finite_mixtures": 2, "finite_steps": 1000,
                     "finite_mode": "all"}}
DRAWS = ("delta", "kappa", "condition_number", "separation", "min_weight", "rho_min")



def draw(config: dict, seed):
    """The mixture and δ of a cell, drawn from its seed (traceable in the seed).

    Returns (gmm, draws): draws holds δ, κ, the condition number, the separation and
    the smallest weight.
    """
    k, d, dtype = config["num_components"], config["d"], jnp.result_type(float)
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(2411), seed), 5)
    cond = jnp.exp(jax.random.uniform(keys[1], (), dtype) * math.log(config["condition_max"]))
    sep = jax.random.uniform(keys[2], (), dtype, config["separation_min"], config["separation_max"])
    if config["mode"] == "prior":
        w = jax.random.dirichlet(keys[3], jnp.full((k,), config["dirichlet"], dtype))
        w = (w + 0.02) / (1.0 + 0.02 * k)  # no component vanishes
    else:
        w = jnp.full((k,), 1.0 / k, dtype)
    delta = jax.random.uniform(keys[4], (), dtype, config["delta_min"], config["delta_max"])
    # a share of the mixtures get a small κ ∈ (0, small_kappa_max] (δ set from it)
    u = jax.random.uniform(jax.random.fold_in(keys[4], 1), (), dtype)
    small = u < config["small_kappa"]
    kappa_small = jax.random.uniform(jax.random.fold_in(keys[4], 2), (), dtype, 0.0, config["small_kappa_max"])
    kappa_small = jnp.maximum(kappa_small, 1e-4)
    delta = jnp.where(small, kappa_small if config["mode"] == "prior" else (kappa_small * (k - 1) + 1.0) / k, delta)
    kappa = delta if config["mode"] == "prior" else delta - (1.0 - delta) / (k - 1)
    gmm = random_gmm(keys[0], d, k, separation=sep * (16.0 / d) ** 0.5, condition_number=cond, weights=w,
                     centered=config["centered"], dtype=dtype)
    return gmm, {"delta": delta, "kappa": kappa, "condition_number": cond, "separation": sep,
                 "min_weight": jnp.min(w)}


def validate(config: dict) -> None:
    k = check_int("num_components", config["num_components"], low=2)
    check_int("d", config["d"], low=k)
    check_choice("mode", config["mode"], MODES)
    check_int("mixtures", config["mixtures"], low=1)
    check_range("condition_max", config["condition_max"], 1.0, 1e8)
    check_range("separation_min", config["separation_min"], 0.0, config["separation_max"], low_open=True)
    check_range("delta_min", config["delta_min"], 0.0, config["delta_max"], low_open=True)
    check_range("delta_max", config["delta_max"], config["delta_min"], 1.0, high_open=True)
    check_range("dirichlet", config["dirichlet"], 0.0, math.inf, low_open=True, high_open=True)
    check_int("candidates", config["candidates"], low=0)
    check_int("rerun_factor", config["rerun_factor"], low=1)
    # the sampled trainer's settings, whichever view runs (config.json records them all)
    r = k - 1 + check_int("extra_rank", config["extra_rank"], low=0)
    TrainConfig(r=r, batch_size=config["batch_size"], steps=config["steps"], loss=LOSS, mode=config["mode"],
                log_every=config["log_every"]).validate(config["d"])
    validate_hparams({"learning_rate": config["learning_rate"], "temperature": config["temperature"]})


def premise(rows, config):
    """The rows inside the conjecture's premise: κ > min_kappa."""
    return [r for r in rows if r["kappa"] > config["min_kappa"]]


def centered(r, config) -> bool:
    return bool(r.get("centered", config["centered"]))
