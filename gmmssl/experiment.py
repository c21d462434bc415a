"""Experiments: a declarative config, a grid through the sweep engine, tidy results, a verdict.

An :class:`Experiment` names its default configuration (a flat dict; every key can be
overridden with ``--set KEY=VALUE``), how to build the grid from a resolved config, which
claims it checks and which figures it draws. :func:`run_experiment` is the one runner:

    config -> Sweep(train_fn, evaluate_fn, axes) -> sweep.run_grid -> rows -> results.csv, config.json,
    projectors.npz, figures, verdict.json
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from gmmssl import results, sweep
from gmmssl.sweep import Sweep

__all__ = ["Experiment", "Run", "Sweep", "parse_overrides", "resolve_config", "run_experiment"]


@dataclasses.dataclass
class Run:
    """A finished run: the resolved config, the flattened grid, raw outputs, tidy rows."""

    config: dict
    grid: dict
    outputs: dict
    rows: list
    claims: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A claim-checking experiment.

    Attributes:
      name, description: shown by ``gmmssl list``.
      defaults: flat default config; its value types define how ``--set`` parses.
      build: resolved config -> :class:`Sweep` (raises ValueError on a bad config).
      claims: (run) -> list of :class:`gmmssl.results.Claim`.
      figures: (run, out_dir) -> list of written paths.
      report: (run) -> text printed after the run (tables).
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    build: Callable[[dict], Sweep]
    claims: Callable[[Run], list]
    figures: Callable[[Run, Path], list]
    report: Callable[[Run], str]


def _parse_value(key: str, text: str, default):
    def bad(kind):
        return ValueError(f"--set {key}={text!r}: expected {kind} (default is {default!r})")

    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise bad("a boolean (true/false)")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if isinstance(default, (tuple, list)):
        kind = type(default[0]) if default else float
        parts = [p for p in text.replace(" ", "").split(",") if p]
        if not parts:
            raise bad("a comma-separated list with at least one value")
        return tuple(_parse_value(key, p, kind()) for p in parts)
    return text


def parse_overrides(items) -> dict[str, str]:
    """["k=v", ...] -> {k: v}; raises ValueError for an item without '='."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def resolve_config(experiment: Experiment, overrides: Mapping[str, Any]) -> dict:
    """The defaults with overrides (strings are parsed by the default's type)."""
    config = dict(experiment.defaults)
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(
                f"unknown --set key {key!r} for experiment {experiment.name!r}; "
                f"valid keys: {', '.join(sorted(config))}")
        config[key] = _parse_value(key, value, config[key]) if isinstance(value, str) else value
    return config


def _check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {str(out_dir)!r} cannot be created: {err.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"--out {str(out_dir)!r} is not writable")


def environment() -> dict:
    """Versions and devices, recorded in config.json."""
    import chex
    import flax
    import jaxlib
    import optax

    import gmmssl

    return {
        "gmmssl": gmmssl.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "optax": optax.__version__, "flax": flax.__version__, "chex": chex.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
    }


def run_experiment(experiment: Experiment, out_dir, overrides: Mapping[str, Any] | None = None,
                   progress: Callable[[str], None] | None = None) -> Run:
    """Resolves the config, runs the grid, writes every result file into ``out_dir``.

    Files: results.csv (tidy), config.json (config, grid axes, environment, timing),
    projectors.npz (every learned or fitted projector, keyed "method"), figures, and
    verdict.json (each claim: statement, measured, tolerance, passed).
    """
    config = resolve_config(experiment, overrides or {})
    spec = experiment.build(config)  # validates before anything compiles
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    start = time.perf_counter()
    grid, outputs = sweep.run_grid(spec, progress=progress)
    seconds = time.perf_counter() - start
    run = Run(config, grid, outputs, results.tidy_rows(grid, outputs["metrics"]), seconds=seconds)
    run.claims = experiment.claims(run)
    results.write_csv(run.rows, out_dir / "results.csv")
    np.savez_compressed(out_dir / "projectors.npz", **{k: v for k, v in outputs["projectors"].items()},
                        **{f"grid_{k}": v for k, v in grid.items()})
    results.write_json({"experiment": experiment.name, "config": config,
                        "axes": {k: list(v) for k, v in spec.axes.items()},
                        "num_cells": len(next(iter(grid.values()))),
                        "environment": environment(), "seconds": round(seconds, 3)},
                       out_dir / "config.json")
    experiment.figures(run, out_dir)
    results.write_json({"experiment": experiment.name,
                        "passed": all(c.passed for c in run.claims),
                        "claims": [dataclasses.asdict(c) for c in run.claims]},
                       out_dir / "verdict.json")
    return run
