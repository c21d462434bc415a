"""Experiments: a declarative config, a grid through the sweep engine, tidy results, a verdict.

An :class:`Experiment` names its default configuration (a flat dict; every key can be
overridden with ``--set KEY=VALUE``), how to build the grid from a resolved config, which
claims it checks and which figures it draws. :func:`run_experiment` is the one runner:

    config -> Sweep(train_fn, evaluate_fn, axes) -> sweep.run_grid -> rows -> results.csv, config.json,
    projectors.npz, figures, verdict.json
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from gmmssl import results, sweep
from gmmssl.sweep import Sweep

__all__ = ["Experiment", "Part", "Run", "Sweep", "parse_overrides", "part_rows", "resolve_config",
           "run_experiment", "static_configs"]


@dataclasses.dataclass
class Part:
    """The grid of one static configuration: its static values, resolved config, the
    flattened grid and the raw outputs."""

    static: dict
    config: dict
    grid: dict
    outputs: dict


@dataclasses.dataclass
class Run:
    """A finished run: the resolved config, one :class:`Part` per static configuration,
    and the tidy rows of all of them (static values as columns)."""

    config: dict
    parts: list
    rows: list
    claims: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def grid(self) -> dict:
        """The first static configuration's grid (the only one when nothing is static)."""
        return self.parts[0].grid

    @property
    def outputs(self) -> dict:
        return self.parts[0].outputs


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A claim-checking experiment.

    Attributes:
      name, description: shown by ``gmmssl list``.
      defaults: flat default config; its value types define how ``--set`` parses.
      build: resolved config -> :class:`Sweep` (raises ValueError on a bad config).
      static_keys: config keys that may take a comma-separated list of values: each
        combination is a static configuration (its own shapes, its own compilation),
        run one after the other; dynamic axes (δ, seeds, ...) are lists inside build.
      claims: (run) -> list of :class:`gmmssl.results.Claim`.
      figures: (run, out_dir) -> list of written paths.
      report: (run) -> text printed after the run (tables).
      presets: named sizes, {name: {key: value}}, chosen with ``--set scale=NAME``
        (applied over the defaults, before the other overrides); "default" is the
        defaults themselves.
      x64: run in float64 (``jax.enable_x64`` around building and running the grid).
      followup: (run) -> [(static, config, Sweep)] run after the main grid, its parts
        and rows appended (e.g. the worst cells re-run longer); None for none.
      findings: (run) -> markdown summarizing what the rows show (for
        docs/open-questions.md; reads ``run.config`` and ``run.rows`` only).
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    build: Callable[[dict], Sweep]
    claims: Callable[[Run], list]
    figures: Callable[[Run, Path], list]
    report: Callable[[Run], str]
    static_keys: tuple = ()
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    x64: bool = False
    followup: Callable[[Run], list] | None = None
    findings: Callable[[Run], str] | None = None


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
    """The defaults with overrides (strings are parsed by the default's type; a static
    key given several comma-separated values becomes a tuple, a static axis).

    ``scale`` (for experiments with presets) picks a preset, applied before the other
    overrides; the resolved config records it.
    """
    config = dict(experiment.defaults)
    overrides = dict(overrides)
    if experiment.presets:
        scale = overrides.pop("scale", config.get("scale", "default"))
        names = ("default", *experiment.presets)
        if scale not in names:
            raise ValueError(f"--set scale={scale!r}: expected one of {', '.join(names)}")
        config.update(experiment.presets.get(scale, {}))
        config["scale"] = scale
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(
                f"unknown --set key {key!r} for experiment {experiment.name!r}; "
                f"valid keys: {', '.join(sorted(config))}")
        if not isinstance(value, str):
            config[key] = value
        elif key in experiment.static_keys and ("," in value or isinstance(experiment.defaults[key], tuple)):
            default = experiment.defaults[key]
            element = default[0] if isinstance(default, tuple) else default
            parts = [p for p in value.replace(" ", "").split(",") if p]
            if not parts:
                raise ValueError(f"--set {key}={value!r}: expected at least one value")
            values = tuple(_parse_value(key, p, element) for p in parts)
            config[key] = values if len(values) > 1 else values[0]
        else:
            config[key] = _parse_value(key, value, config[key])
    return config


def static_configs(experiment: Experiment, config: dict) -> list[tuple[dict, dict]]:
    """[(static values, scalar config)] for every combination of the static axes."""
    axes = {k: config[k] for k in experiment.static_keys if isinstance(config[k], (tuple, list))}
    for k, v in axes.items():
        if len(v) == 0:
            raise ValueError(f"{k} needs at least one value")
    combos = itertools.product(*axes.values()) if axes else [()]
    return [(dict(zip(axes, combo)), {**config, **dict(zip(axes, combo))}) for combo in combos]


def part_rows(run: Run, part: Part) -> list[dict]:
    """The rows of one static configuration."""
    return [r for r in run.rows if all(r.get(k) == v for k, v in part.static.items())]


def _tag(static: dict) -> str:
    return "_".join(f"{k}={v}" for k, v in static.items()) or "all"


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
                   progress: Callable[[str], None] | None = None, resume: bool = False,
                   chunk_size: int | None = None, budget_bytes: int | None = None) -> Run:
    """Resolves the config, runs every static configuration's grid, writes the results.

    Everything is validated (every static configuration built) before anything compiles.
    Files in ``out_dir``: config.json (written first: config, axes, environment; timing
    added at the end), chunks/<static>/ (the sweep engine's chunk files, for --resume),
    results.csv (tidy), projectors.npz (keys "method", or "static/method" when there are
    static axes, plus the grid), figures, and verdict.json (each claim: statement,
    measured, tolerance, passed).

    With ``resume=True`` finished chunks are reused; a folder written by a different
    config is refused, naming the keys that differ.
    """
    config = resolve_config(experiment, overrides or {})
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
        raise ValueError(f"--chunk-size must be a positive integer, got {chunk_size!r}")
    if budget_bytes is not None and budget_bytes <= 0:
        raise ValueError(f"--budget-mb must be positive, got {budget_bytes / 2**20:g}")
    with jax.enable_x64(True) if experiment.x64 else contextlib.nullcontext():
        return _run(experiment, config, Path(out_dir), progress, resume, chunk_size, budget_bytes)


def _run(experiment, config, out_dir, progress, resume, chunk_size, budget_bytes) -> Run:
    plans = [(static, cfg, experiment.build(cfg)) for static, cfg in static_configs(experiment, config)]
    _check_out_dir(out_dir)
    config_path = out_dir / "config.json"
    if resume and config_path.exists():
        old = json.loads(config_path.read_text())
        if old.get("experiment") != experiment.name:
            raise ValueError(f"--resume: {out_dir} holds experiment {old.get('experiment')!r}, "
                             f"not {experiment.name!r}")
        new = json.loads(json.dumps(config, default=list))
        diffs = [f"{k} ({old['config'].get(k)!r} -> {new.get(k)!r})" for k in sorted(set(old["config"]) | set(new))
                 if old["config"].get(k) != new.get(k)]
        if diffs:
            raise ValueError(f"--resume: {out_dir} was written by a different config; differing: "
                             + "; ".join(diffs))
    meta = {"experiment": experiment.name, "config": config,
            "static": [static for static, _, _ in plans],
            "axes": {_tag(static): {k: list(v) for k, v in spec.axes.items()} for static, _, spec in plans},
            "num_cells": sum(len(sweep.flatten_grid(spec.axes)[next(iter(spec.axes))]) for _, _, spec in plans),
            "environment": environment()}
    results.write_json(meta, config_path)
    start = time.perf_counter()
    run = Run(config, [], [])

    def run_plans(plans):
        for static, cfg, spec in plans:
            tag = _tag(static)
            grid, outputs = sweep.run_grid(spec, out_dir=out_dir / "chunks" / tag, resume=resume,
                                           fingerprint=cfg, progress=progress, chunk_size=chunk_size,
                                           budget_bytes=budget_bytes,
                                           label=f"{tag} " if static else "")
            run.parts.append(Part(static, cfg, grid, outputs))
            run.rows.extend({**static, **row} for row in results.tidy_rows(grid, outputs["metrics"]))

    run_plans(plans)
    if experiment.followup is not None:
        extra = experiment.followup(run)
        meta["static"] += [static for static, _, _ in extra]
        meta["axes"].update({_tag(static): {k: list(v) for k, v in spec.axes.items()} for static, _, spec in extra})
        meta["num_cells"] += sum(len(sweep.flatten_grid(spec.axes)[next(iter(spec.axes))]) for _, _, spec in extra)
        run_plans(extra)
    parts = run.parts
    run.seconds = seconds = time.perf_counter() - start
    results.write_csv(run.rows, out_dir / "results.csv")  # written before anything that could fail
    arrays = {}
    for part in parts:
        prefix = f"{_tag(part.static)}/" if len(parts) > 1 else ""
        arrays.update(sweep.flatten_tree(part.outputs["projectors"], prefix))
        arrays.update({f"{prefix}grid_{k}": v for k, v in part.grid.items()})
    np.savez_compressed(out_dir / "projectors.npz", **arrays)
    results.write_json({**meta, "seconds": round(seconds, 3)}, config_path)
    run.claims = experiment.claims(run)
    experiment.figures(run, out_dir)
    results.write_json({"experiment": experiment.name,
                        "passed": all(c.passed for c in run.claims),
                        "claims": [dataclasses.asdict(c) for c in run.claims]},
                       out_dir / "verdict.json")
    return run
