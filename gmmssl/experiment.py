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
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from gmmssl import distributed, results, sweep
from gmmssl.backend import matmul_precision, with_matmul_precision
from gmmssl.sweep import Sweep

__all__ = ["Experiment", "Part", "Run", "Sweep", "input_digests", "parse_overrides", "part_rows", "resolve_config",
           "run_digest", "run_experiment", "static_configs", "validate_experiment"]


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
      notes: fixed markdown that does not depend on a run (an argument, a caveat), shown
        once in docs/open-questions.md after the question's runs; None for none.
      inputs: config keys whose values name input files or folders (a ``features`` path):
        their content's digest (:func:`input_digests`) is part of the run's identity, so a
        file replaced under the same name is never mistaken for the one the stored cells
        came from.
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
    notes: str | None = None
    inputs: tuple = ()


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
        return _check_list(key, text, tuple(_parse_value(key, p, kind()) for p in parts))
    return text


def _check_list(key: str, text: str, values: tuple) -> tuple:
    """The values of a list given to --set, each one once (a repeated value would run its
    cells twice and count them twice in the summaries) and each one as a grid cell holds
    it: an integer within int32, a float within float32's finite nonzero range."""
    seen: dict = {}
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and not -2**31 <= v < 2**31:
            raise ValueError(f"--set {key}={text!r}: {v} is outside the int32 range [-2147483648, 2147483647] "
                             f"of a grid value")
        if isinstance(v, float) and (not abs(v) <= float(np.finfo(np.float32).max) or (v != 0 and np.float32(v) == 0)):
            raise ValueError(f"--set {key}={text!r}: {v!r} is outside the range of a float32 grid value "
                             f"(nonzero magnitudes 1.4e-45 to 3.4e+38)")
        same = float(np.float32(v)) if isinstance(v, float) else v  # values one float32 apart are one value
        if same in seen:
            twice = "twice" if seen[same] == v else f"twice ({seen[same]!r} and {v!r} are one float32)"
            raise ValueError(f"--set {key}={text!r}: {seen[same]!r} is given {twice}; give each value once "
                             f"(a repeated value duplicates its cells)")
        seen[same] = v
    return values


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
            values = _check_list(key, value, tuple(_parse_value(key, p, element) for p in parts))
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
        twice = [x for i, x in enumerate(v) if x in v[:i]]
        if twice:
            raise ValueError(f"{k} lists {twice[0]!r} twice; give each value once (a repeated value runs its "
                             f"static configuration twice)")
    combos = itertools.product(*axes.values()) if axes else [()]
    return [(dict(zip(axes, combo)), {**config, **dict(zip(axes, combo))}) for combo in combos]


def validate_experiment(experiment: Experiment, overrides: Mapping[str, Any] | None = None,
                        budget_bytes: int | None = None) -> dict:
    """The resolved config, once every static configuration's grid is built (as
    :func:`run_experiment` does first): a bad value of any key raises ValueError here,
    before anything runs (``gmmssl run all`` checks every experiment so before starting one).
    Sizes that cannot fit ``budget_bytes`` (default :func:`gmmssl.sweep.default_budget_bytes`)
    are refused before anything is built (:func:`_check_sizes`)."""
    config = resolve_config(experiment, overrides or {})
    budget = budget_bytes or sweep.default_budget_bytes()
    with jax.enable_x64(True) if experiment.x64 else contextlib.nullcontext():
        for _, cfg in static_configs(experiment, config):
            _build(experiment, cfg, budget)
    return config


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
        "matmul_precision": matmul_precision(),
    }


OUTPUTS = ("results.csv", "projectors.npz", "config.json", "verdict.json")  # plus the figures (*.png)
PENDING = ".pending.json"


def run_digest(experiment_name: str, config: dict, numerics: dict, inputs: dict | None = None) -> str:
    """The identity of a run's results: experiment, resolved config, numerics (float width,
    matmul precision, backend, library versions, gmmssl's source) and the digests of its
    input files (:func:`input_digests`); stored in config.json and verdict.json."""
    identity = {"experiment": experiment_name, "config": config, "numerics": numerics}
    if inputs:
        identity["inputs"] = inputs
    text = json.dumps(identity, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_digests(experiment: Experiment, config: dict) -> dict:
    """{key: sha256 of the content} of every ``experiment.inputs`` key whose value names an
    existing file (its bytes) or folder (every file in it, by relative path and bytes);
    other values (a built-in data set's name) are left out. Refuses in one line a path
    that cannot be read."""
    digests = {}
    for key in experiment.inputs:
        path = Path(str(config.get(key, "")))
        if not str(config.get(key, "")) or not path.exists():
            continue
        h = hashlib.sha256()
        try:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                h.update(f"{f.relative_to(path).as_posix() if path.is_dir() else ''}\n".encode())
                h.update(f.read_bytes())
        except OSError as err:
            raise ValueError(f"--set {key}={str(path)!r} cannot be read: {err.strerror or err}") from None
        digests[key] = h.hexdigest()[:16]
    return digests


def _numerics(env: dict) -> dict:
    """:func:`gmmssl.sweep.numerics` as recorded in an older config.json's environment."""
    return {k: env.get(k) for k in sweep.numerics()}


def _jsonable_config(config: dict) -> dict:
    return json.loads(json.dumps(config, default=list))


def _differences(old: dict, new: dict) -> list[str]:
    diffs = [] if old.get("experiment") == new["experiment"] else \
        [f"experiment ({old.get('experiment')!r} -> {new['experiment']!r})"]
    return diffs + sweep.diff_keys(old.get("config", {}), new["config"]) \
        + sweep.diff_keys(old.get("numerics", {}), new["numerics"]) \
        + [f"the content of {d}" for d in sweep.diff_keys(old.get("inputs", {}), new.get("inputs", {}))]


def _stored_identity(out_dir: Path) -> dict | None:
    """What the folder holds: the pending run's identity, else the finished run's. A
    record that cannot be read (truncated, damaged, an older layout without the keys that
    identify the run) is refused, naming the file: its run is unknown, not a different one."""
    for name in (PENDING, "config.json"):
        path = out_dir / name
        if path.exists():
            unknown = "; the run it records is unknown: --overwrite replaces this folder's work, or choose another --out"
            meta = results.read_json(path, unknown)  # ValueError naming the file when truncated or damaged
            try:
                return {"experiment": meta["experiment"], "config": dict(meta["config"]),
                        "numerics": dict(meta.get("numerics") or _numerics(meta["environment"])),
                        "inputs": dict(meta.get("inputs") or {})}
            except KeyError as err:
                raise ValueError(f"{path}: lacks the key {err} (an older layout or a damaged file){unknown}") from None
            except (TypeError, ValueError, AttributeError):
                raise ValueError(f"{path}: its config, numerics or environment is not a JSON object (a damaged "
                                 f"file){unknown}") from None
    return None


MANIFEST = ".gmmssl-files.json"  # the names gmmssl wrote in an output folder: all it may ever replace or delete
_FOLDER_NAMES = (PENDING, ".lock", "chunks", ".staging", MANIFEST)  # what a run creates before its outputs
_CHUNK_FILES = ("chunk_*.npz", "chunk_*.npz.rejected", "sweep.json", ".*.tmp")  # what the engine writes in chunks/


def _owned(out_dir: Path) -> set[str]:
    """The names in ``out_dir`` that gmmssl wrote: those its manifest (:data:`MANIFEST`)
    lists; none without one (a config.json alone proves nothing: anyone can write one)."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
        if manifest.get("written_by") == "gmmssl" and isinstance(manifest.get("files"), list):
            return {str(n) for n in manifest["files"]} | {MANIFEST}
    except (OSError, ValueError, AttributeError):
        pass
    return set()


def _claim(out_dir: Path, names) -> None:
    """Adds ``names`` to the folder's manifest (written atomically, before the files)."""
    owned = _owned(out_dir) | set(names) | {MANIFEST}
    results.write_json({"written_by": "gmmssl", "files": sorted(owned)}, out_dir / MANIFEST)


def _check_owned(out_dir: Path) -> None:
    """Refuses, in one line, a folder holding anything gmmssl did not write there: nothing
    of a user's is ever replaced or deleted, ``--overwrite`` included."""
    owned = _owned(out_dir)
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in owned)
    if foreign == [".lock"] and results.lock_held(out_dir):  # another run's, starting: FolderInUse follows
        foreign = []
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"--out {str(out_dir)!r} holds files gmmssl did not write there ({listed}); gmmssl never "
                         f"replaces or deletes them, --overwrite included: choose a new or empty folder")


def _old_figures(out_dir: Path) -> list[Path]:
    """The figures the finished run in ``out_dir`` wrote (listed in its config.json and
    owned, :func:`_owned`; other files of the folder are never touched)."""
    try:
        names = json.loads((out_dir / "config.json").read_text()).get("figures", [])
    except (OSError, ValueError, AttributeError):
        return []
    owned = _owned(out_dir)
    return [out_dir / n for n in names if isinstance(n, str) and n == Path(n).name and n in owned]


def _clear(out_dir: Path) -> None:
    """Removes a previous run's outputs and chunks (``--overwrite``), only what gmmssl
    wrote (:func:`_owned`): the verdict first, so a folder interrupted here never looks
    finished; in chunks/ only the engine's own files, and the folders left empty."""
    owned = _owned(out_dir)
    figures = _old_figures(out_dir)
    for name in ("verdict.json", *OUTPUTS, PENDING):
        if name in owned:
            (out_dir / name).unlink(missing_ok=True)
    for fig in figures:
        fig.unlink(missing_ok=True)
    for folder in ("chunks", ".staging"):
        root = out_dir / folder
        if folder not in owned or not root.is_dir():
            continue
        patterns = _CHUNK_FILES if folder == "chunks" else ("*",)
        for sub in sorted({root, *(d for d in root.rglob("*") if d.is_dir())}, key=lambda d: -len(d.parts)):
            for pattern in patterns:
                for f in sub.glob(pattern):
                    if f.is_file():
                        f.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: a file of someone else's stays, with its folder
                sub.rmdir()


@with_matmul_precision
def run_experiment(experiment: Experiment, out_dir, overrides: Mapping[str, Any] | None = None,
                   progress: Callable[[str], None] | None = None, resume: bool = False,
                   chunk_size: int | None = None, budget_bytes: int | None = None, *, overwrite: bool = False,
                   confirm: bool = False, max_hours: float = 8.0) -> Run:
    """Resolves the config, runs every static configuration's grid, writes the results.

    Everything is validated (every static configuration built) before anything compiles.
    Files in ``out_dir``: chunks/<static>/ (the sweep engine's chunk files, for resuming),
    and, once the run is finished, swapped in together: results.csv (tidy; a
    ``diverged`` column flags cells whose training went non-finite, their metrics NaN),
    config.json (config, axes, environment, timing), projectors.npz (keys "method", or
    "static/method" when there are static axes, plus the grid), figures, and
    verdict.json (each claim: statement, measured, tolerance, passed, note; the count of
    diverged cells; the row count and sha256 of results.csv, which ``gmmssl report``
    checks), written last. config.json and verdict.json carry the same ``run`` digest; a
    folder whose two differ is not a finished run.

    Finished work is protected: a folder (locked while a run uses it) that holds another
    experiment, config or numerics (float width, matmul precision, backend, library versions) is refused
    unless ``overwrite``; one that holds the same config resumes from its stored chunks
    (``resume`` says so explicitly; ``overwrite`` recomputes everything).

    Limits (unless ``confirm``): a grid whose outputs held in memory exceed the budget, or
    whose estimated time exceeds ``max_hours``, is stopped after its first chunks (kept).
    """
    config = resolve_config(experiment, overrides or {})
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
        raise ValueError(f"--chunk-size must be a positive integer, got {chunk_size!r}")
    if budget_bytes is not None and not (math.isfinite(budget_bytes) and budget_bytes > 0):
        raise ValueError(f"--budget-mb must be a positive finite number, got {budget_bytes / 2**20:g}")
    if not (math.isfinite(max_hours) and max_hours > 0):
        raise ValueError(f"--max-hours must be a positive finite number, got {max_hours!r}")
    limits = {} if confirm else {"max_output_bytes": budget_bytes or sweep.default_budget_bytes(),
                                 "max_seconds": max_hours * 3600.0}
    with jax.enable_x64(True) if experiment.x64 else contextlib.nullcontext():
        return _run(experiment, config, Path(out_dir), progress, resume, overwrite, chunk_size, budget_bytes,
                    limits)


_SEED_COUNTS = ("seeds", "mixtures")  # config keys that count a grid's seed values


def _check_sizes(cfg: dict, budget: int) -> int:
    """Refuses, before a static configuration's grid is built, sizes that cannot fit the
    memory budget, in one line naming the setting, from the keys the experiments share
    (seeds or mixtures; d, r, num_components, batch_size, num_baseline, num_eval). Returns
    the bytes a cell holds beside training: its mixture and evaluation samples
    (:func:`gmmssl.evaluate.estimate_eval_bytes`), added to the grid's cell estimate."""
    from gmmssl.evaluate import estimate_eval_bytes

    def count(key, default=0):
        v = cfg.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default

    text = sweep._bytes_text
    for key in _SEED_COUNTS:
        n = count(key)
        if 64 * n > budget:  # per seed: its Python int in the axis, its flattened-grid entry, its JSON fingerprint
            raise ValueError(f"{key}={n}: the grid's {n} seed values alone need about {text(64 * n)}, above the "
                             f"memory budget of {text(budget)} (--budget-mb); use fewer {key}")
        if n > 2**31:
            raise ValueError(f"{key}={n}: seeds are int32 values 0 ... 2147483647, so at most 2147483648 {key}")
    d = count("d")
    if not d:
        return 0
    k = count("num_components", 2)
    r = count("r", k)
    itemsize = 8 if jax.config.jax_enable_x64 else 4
    terms = estimate_eval_bytes(d, r, k, num_baseline=count("num_baseline"), num_eval=count("num_eval"),
                                itemsize=itemsize)
    extra = sum(terms.values())
    if count("batch_size"):
        terms["batch_size"] = sweep.estimate_cell_bytes(d, r, count("batch_size"), itemsize=itemsize)
    total = sum(terms.values())
    if total > budget:
        name = max(terms, key=terms.get)
        raise ValueError(f"{name}={cfg[name]}: one grid cell would hold about {text(total)} by the memory estimate "
                         f"({text(terms[name])} of it from {name}), above the memory budget of {text(budget)} "
                         f"(--budget-mb); lower {name} or raise the budget")
    return extra


def _build(experiment, cfg: dict, budget: int):
    """``experiment.build(cfg)`` once its sizes fit ``budget`` (:func:`_check_sizes`), its cell
    estimate counting the mixture and evaluation samples beside training."""
    extra = _check_sizes(cfg, budget)
    spec = experiment.build(cfg)
    return dataclasses.replace(spec, cell_bytes=spec.cell_bytes + extra)


def _run(experiment, config, out_dir, progress, resume, overwrite, chunk_size, budget_bytes, limits) -> Run:
    budget = budget_bytes or sweep.default_budget_bytes()
    plans = [(static, cfg, _build(experiment, cfg, budget)) for static, cfg in static_configs(experiment, config)]
    say = progress or (lambda line: None)
    env = environment()
    inputs = input_digests(experiment, config)
    identity = {"experiment": experiment.name, "config": _jsonable_config(config), "numerics": sweep.numerics(),
                "inputs": inputs}
    digest = run_digest(experiment.name, identity["config"], identity["numerics"], inputs)
    meta = {"experiment": experiment.name, "config": config, "run": digest, "numerics": identity["numerics"],
            "inputs": inputs,
            "static": [static for static, _, _ in plans],
            "axes": {_tag(static): {k: list(v) for k, v in spec.axes.items()} for static, _, spec in plans},
            "num_cells": sum(_size(spec) for _, _, spec in plans),
            "environment": env}

    def open_folder(stack):
        """Checks, locks and claims the folder; process 0 only (see gmmssl.distributed)."""
        _check_out_dir(out_dir)
        _check_owned(out_dir)
        stack.enter_context(results.folder_lock(out_dir))
        _claim(out_dir, _FOLDER_NAMES)
        old = None if overwrite else _stored_identity(out_dir)  # --overwrite replaces even an unreadable record
        if old is not None and not overwrite:
            diffs = _differences(old, identity)
            if diffs:
                raise ValueError(f"{out_dir} holds the results of a different config; differing: "
                                 + "; ".join(diffs) + ". Use --overwrite to replace them, or another --out")
            if not resume:
                say(f"{out_dir} holds this config's work: reusing its finished chunks "
                    f"(--overwrite recomputes everything)")
        if overwrite:
            _clear(out_dir)
        results.write_json(meta, out_dir / PENDING)

    with contextlib.ExitStack() as stack:
        distributed.on_leader(lambda: open_folder(stack))
        return _execute(experiment, config, out_dir, progress, chunk_size, budget_bytes, limits, plans, meta)


def _size(spec) -> int:
    return math.prod(len(values) for values in spec.axes.values())  # from the lengths: builds nothing


def _execute(experiment, config, out_dir, progress, chunk_size, budget_bytes, limits, plans, meta) -> Run:
    start = time.perf_counter()
    run = Run(config, [], [])
    meta["cells_reused"] = 0

    def run_plans(plans):
        for static, cfg, spec in plans:
            tag = _tag(static)
            stats: dict = {}
            fingerprint = {**cfg, "#inputs": meta["inputs"]} if meta["inputs"] else cfg
            grid, outputs = sweep.run_grid(spec, out_dir=out_dir / "chunks" / tag, resume=True,
                                           fingerprint=fingerprint, progress=progress, chunk_size=chunk_size,
                                           budget_bytes=budget_bytes, label=f"{tag} " if static else "",
                                           stats=stats, **limits)
            meta["cells_reused"] += stats["reused"]
            run.parts.append(Part(static, cfg, grid, outputs))
            run.rows.extend({**static, **row} for row in results.tidy_rows(grid, outputs["metrics"]))

    run_plans(plans)
    if experiment.followup is not None:
        extra = experiment.followup(run)
        meta["static"] += [static for static, _, _ in extra]
        meta["axes"].update({_tag(static): {k: list(v) for k, v in spec.axes.items()} for static, _, spec in extra})
        meta["num_cells"] += sum(_size(spec) for _, _, spec in extra)
        run_plans(extra)
    parts = run.parts
    run.seconds = seconds = time.perf_counter() - start
    run.claims = results.guard_claims(experiment.claims(run), run.rows)

    def write_outputs():
        """Stages the outputs and swaps them in; process 0 only."""
        staging = out_dir / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        results.write_csv(run.rows, staging / "results.csv")
        arrays = {}
        for part in parts:
            prefix = f"{_tag(part.static)}/" if len(parts) > 1 else ""
            arrays.update(sweep.flatten_tree(part.outputs["projectors"], prefix))
            arrays.update({f"{prefix}grid_{k}": v for k, v in part.grid.items()})
        np.savez_compressed(staging / "projectors.npz", **arrays)
        figures = [Path(f).name for f in experiment.figures(run, staging)]
        results.write_json({**meta, "seconds": round(seconds, 3), "figures": figures}, staging / "config.json")
        invalid = len(results.invalid_rows(run.rows))
        results.write_json({"experiment": experiment.name, "run": meta["run"],
                            "passed": all(c.passed for c in run.claims) and invalid == 0,
                            "diverged_rows": results.count_diverged(run.rows), "invalid_rows": invalid,
                            "num_rows": len(run.rows), "num_cells": meta["num_cells"],
                            "results_sha256": results.file_sha256(staging / "results.csv"),  # gmmssl report checks it
                            "claims": [dataclasses.asdict(c) for c in run.claims]},
                           staging / "verdict.json")
        # swap the finished outputs in: the old verdict goes first and the new one comes last,
        # so at no moment does the folder look finished with parts of two runs
        old_figures = _old_figures(out_dir)
        names = [path.name for path in staging.iterdir()]
        owned = _owned(out_dir)
        clash = [n for n in names if (out_dir / n).exists() and n not in owned]
        if clash:  # a file put there during the run: kept, and the results wait in .staging
            raise ValueError(f"{out_dir} now holds {', '.join(clash)}, which gmmssl did not write: the finished "
                             f"results are in {staging}; move that file away and rerun with --resume")
        _claim(out_dir, names)
        (out_dir / "verdict.json").unlink(missing_ok=True)
        for fig in old_figures:
            fig.unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == "verdict.json"):
            os.replace(path, out_dir / path.name)
        staging.rmdir()
        (out_dir / PENDING).unlink(missing_ok=True)

    distributed.on_leader(write_outputs)
    return run
