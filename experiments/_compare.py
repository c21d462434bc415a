"""The method-comparison experiment: an SSL projector beside PCA, LDA, the spectral oracle
and the random start, on a family of mixtures, over grid axes.

Every comparison experiment (pancakes, delta, dimension, variance, rank) is this one
runner with its own defaults, its own x axis and its own claims; they differ only in
configuration. Keys:

* static (one compilation each; a comma-separated list makes a static axis):
  d, num_components, r, batch_size, steps, loss, mode, mixture, separation;
* dynamic (grid axes, traced; always lists): delta, learning_rate, temperature, xi, and,
  for the mixture family, condition_number (random), thickness (pancakes) or heterogeneity
  (hetero: random mixtures with one covariance per component, at condition_number[0]),
  or family (mixture "both": 0 pancakes, 1 random, in one compilation);
* seeds: the number of seeds (for "random" mixtures each seed also draws a new mixture);
* r_from_k=true sets r = K − 1 for each K (so ``--set num_components=2,3,4 --set
  r_from_k=true`` fits each K).

Random mixtures keep the spread of their means fixed across d: per coordinate the means
have standard deviation separation·√(16/d), so ‖μ_k − μ_l‖ is about the same at every d
and the dimension axis adds only noise directions (without it PCA would find the means
ever more easily as d grows).
"""
from __future__ import annotations

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gmmssl import plots, results
from gmmssl._validate import check_choice, check_int
from gmmssl.evaluate import METRICS, make_compare_cell
from gmmssl.experiment import Experiment, Run, part_rows
from gmmssl.gmm import hetero_gmm, parallel_pancakes, random_gmm, sample
from gmmssl.sweep import Sweep, estimate_cell_bytes
from gmmssl.train import HPARAM_RANGES, TrainConfig, check_setup, validate_hparams

STATIC_KEYS = ("d", "num_components", "r", "batch_size", "steps", "loss", "mode", "mixture", "separation")
MIXTURE_AXES = {"pancakes": ("thickness",), "random": ("condition_number",), "hetero": ("heterogeneity",),
                "both": ("family",)}
FAMILIES = ("pancakes", "random")  # the "family" axis of mixture "both": 0, 1
HPARAM_AXES = ("delta", "learning_rate", "temperature", "xi")
REFERENCE_DIM = 16

BASE = {
    "mixture": "random",
    "d": 16,
    "num_components": 3,
    "r": 2,
    "r_from_k": False,
    "separation": 1.0,
    "thickness": (0.1,),
    "condition_number": (10.0,),
    "heterogeneity": (0.0,),
    "family": (0, 1),
    "delta": (0.0, 0.25, 0.5, 1.0),
    "seeds": 4,
    "learning_rate": (0.05,),
    "temperature": (1.0,),
    "xi": (1.0,),
    "loss": "infonce",
    "mode": "prior",
    "steps": 600,
    "log_every": 50,
    "batch_size": 256,
    "num_baseline": 2000,
    "num_eval": 2000,
}


def mixture(config: dict, cell: dict):
    """The cell's mixture (traceable in the cell's dynamic values). Mixture "both": the
    cell's "family" (0 pancakes, 1 random; same d and K, so the same shapes) is a traced
    axis, and both families run in one compilation."""
    if config["mixture"] == "both":
        pancakes, rand = (mixture({**config, "mixture": f}, cell) for f in FAMILIES)
        family = cell.get("family", config["family"][0])
        return jax.tree_util.tree_map(lambda a, b: jnp.where(family == 0, a, b), pancakes, rand)
    if config["mixture"] == "pancakes":
        return parallel_pancakes(config["d"], config["num_components"], separation=config["separation"],
                                 thickness=cell.get("thickness", config["thickness"][0]))
    key = jax.random.fold_in(jax.random.PRNGKey(1234), cell["seed"])
    scale = (REFERENCE_DIM / config["d"]) ** 0.5  # the means' spread of d = 16 at every d
    if config["mixture"] == "hetero":
        return hetero_gmm(key, config["d"], config["num_components"], separation=config["separation"] * scale,
                          condition_number=config["condition_number"][0],
                          heterogeneity=cell.get("heterogeneity", config["heterogeneity"][0]))
    return random_gmm(key, config["d"], config["num_components"], separation=config["separation"] * scale,
                      condition_number=cell.get("condition_number", config["condition_number"][0]))


def axes_of(config: dict) -> dict:
    axes = {name: config[name] for name in HPARAM_AXES if name != "xi" or config["loss"] == "simsiam"}
    axes.update({name: config[name] for name in MIXTURE_AXES[config["mixture"]]})
    axes["seed"] = tuple(range(check_int("seeds", config["seeds"], low=1)))
    return axes


def build(config: dict) -> Sweep:
    check_choice("mixture", config["mixture"], MIXTURE_AXES)
    check_int("d", config["d"], low=2)  # before any mixture is drawn (d = 0 divided by zero)
    if config["r_from_k"]:  # r = K − 1, the Fisher subspace's dimension, for each K
        config = {**config, "r": config["num_components"] - 1}
    train_config = TrainConfig(r=config["r"], batch_size=config["batch_size"], steps=config["steps"],
                               loss=config["loss"], mode=config["mode"], log_every=config["log_every"])
    axes = axes_of(config)
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"{name} needs at least one value")
        if name in HPARAM_RANGES:
            validate_hparams({name: np.asarray(values)})
    if config["mixture"] == "both" and not set(config["family"]) <= {0, 1}:
        raise ValueError(f"family must hold 0 (pancakes) and/or 1 (random), got {config['family']!r}")
    if config["mixture"] in ("random", "hetero", "both"):
        for c in config["condition_number"]:
            if not np.isfinite(c) or c < 1:
                raise ValueError(f"condition_number must be in [1, inf), got {c!r}")
    # build every concrete mixture variant once: validates d, K, separation, thickness eagerly
    variants = [dict(zip(MIXTURE_AXES[config["mixture"]], v))
                for v in itertools.product(*(axes[n] for n in MIXTURE_AXES[config["mixture"]]))]
    for v in variants:
        gmm = mixture(config, {"seed": 0, **v})
    check_setup(gmm, train_config)
    check_int("num_baseline", config["num_baseline"], low=config["d"] + 1)
    check_int("num_eval", config["num_eval"], low=config["num_components"])
    prepare_fn, train_fn, evaluate_fn = make_compare_cell(
        lambda cell: mixture(config, cell), train_config,
        num_baseline=config["num_baseline"], num_eval=config["num_eval"])
    b = config["batch_size"]
    # the B×N similarity matrix: none for the population losses, 2B×2B (= B×4B) for the
    # losses on the 2B embeddings of both views; BYOL holds a target copy of A as well
    negatives = 0 if config["loss"].endswith("_population") else 4 * b if config["loss"] in ("ntxent", "dcl") else None
    cell_bytes = estimate_cell_bytes(config["d"], config["r"], b, num_negatives=negatives,
                                     num_param_matrices=2 if config["loss"] == "byol" else 1)
    return Sweep(train_fn, evaluate_fn, axes, cell_bytes, prepare_fn)


def summary(rows, x: str, extra: tuple = ()):
    present = tuple(m for m in extra if any(m in r for r in rows))
    return results.summarize(rows, ("method", x), METRICS + ("bayes_retained", "final_loss") + present)


def groups(run: Run, x: str) -> list[tuple[str, list, list]]:
    """(title, rows, parts) per combination of the varying static keys other than x."""
    keys = [k for k in (run.parts[0].static if run.parts else {}) if k != x]
    out: dict[tuple, tuple[list, list]] = {}
    for part in run.parts:
        rows, parts = out.setdefault(tuple(part.static[k] for k in keys), ([], []))
        rows.extend(part_rows(run, part))
        parts.append(part)
    return [(" ".join(f"{k}={v}" for k, v in zip(keys, key)), rows, parts) for key, (rows, parts) in out.items()]


def split_groups(run: Run, x: str) -> list[tuple[str, list, list]]:
    """:func:`groups`, each split further by δ when x is not δ and the grid holds several:
    a table or curve over x then averages over seeds only, never over δ, whose captures
    differ (the figure's title says "mean ± std over seeds")."""
    out = []
    for title, rows, parts in groups(run, x):
        deltas = sorted({r["delta"] for r in rows}) if x != "delta" and rows and "delta" in rows[0] else []
        if len(deltas) <= 1:
            out.append((title, rows, parts))
            continue
        out += [(f"{title} δ={d:g}".strip(), [r for r in rows if r["delta"] == d], parts) for d in deltas]
    return out


def report(run: Run, x: str, metrics: tuple = ()) -> str:
    out = []
    for title, rows, _ in split_groups(run, x):
        tag = f"[{title}] " if title else ""
        out += [results.format_table(summary(rows, x, metrics), "method", x, m, title=f"{tag}{m} (mean±std over seeds)")
                for m in ("fisher_capture", "fisher_efficiency", "ari", *metrics)]
    return "\n\n".join(out)


XLABELS = {"delta": "δ (probability x⁺ shares x's component)", "d": "dimension d",
           "heterogeneity": "heterogeneity h (0 = shared covariance)",
           "condition_number": "condition number of Σ", "r": "embedding dimension r",
           "thickness": "pancake thickness σ"}


LABELS = {"bayes_retained": "Bayes accuracy kept (0–1)", "sufficient_capture": "capture of the central subspace",
          "oracle_capture": "capture of the oracle's subspace"}


def figure(run: Run, out_dir, x: str, name: str, scatter: bool = False, metrics: tuple = ()):
    panels = [("fisher_capture", "Fisher capture (0–1)"), ("fisher_efficiency", "Fisher efficiency (0–1)"),
              ("ari", "k-means ARI (0 = chance)")] + [(m, LABELS.get(m, m)) for m in metrics]
    rows_of = split_groups(run, x)
    ncols = len(panels) + (2 if scatter else 0)
    fig, axes = plots.plt.subplots(len(rows_of), ncols, figsize=(4.3 * ncols, 3.8 * len(rows_of)), squeeze=False)
    for ax_row, (title, rows, parts) in zip(axes, rows_of):
        methods = ["pca", "lda", "oracle", "init"] + sorted({r["method"] for r in rows} - {"pca", "lda", "oracle", "init"})
        s = summary(rows, x, metrics)
        col = 0
        if scatter:
            _scatter(ax_row[0], ax_row[1], parts[0], parts[0].config["loss"])
            col = 2
        for ax, (metric, label) in zip(ax_row[col:], panels):
            plots.metric_against(ax, s, x, metric, methods, ylabel=label)
            ax.set_xlabel(XLABELS.get(x, x))
            if x in ("d", "condition_number") and len({r[x] for r in rows}) > 2:
                ax.set_xscale("log")
            ax.set_title(f"{label.split(' (')[0]}{' — ' + title if title else ''}", fontsize=9)
        ax_row[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{name}: mean ± std over {run.config['seeds']} seeds")
    return [plots.save(fig, out_dir / f"{name}.png")]


def _scatter(ax_pca, ax_ssl, part, loss):
    config = part.config
    gmm = mixture(config, {"seed": 0})
    x, c = sample(jax.random.PRNGKey(12345), gmm, 1500)
    grid = part.grid
    mid = [d for d in sorted(set(grid["delta"].tolist())) if 0 < d < 1]
    show = mid[len(mid) // 2] if mid else float(grid["delta"][-1])
    cell = int(np.flatnonzero((grid["delta"] == show) & (grid["seed"] == 0))[0])
    proj = part.outputs["projectors"]
    plots.scatter_embedding(ax_pca, x @ proj["pca"][cell], c, f"PCA projection (d={config['d']})")
    plots.scatter_embedding(ax_ssl, x @ proj[loss][cell], c, f"{loss} projection (δ={show:g})")


def by_method_x(rows, x, extra: tuple = ()):
    return {(s["method"], s[x]): s for s in summary(rows, x, extra)}


AXIS_NAMES = {"delta": "δ", "num_components": "K", "condition_number": "condition number", "heterogeneity": "h",
              "xi": "ξ", "learning_rate": "learning rate", "thickness": "thickness"}


def _values(values) -> str:
    vals = sorted(set(values), key=lambda v: (v is None, v))
    txt = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals)
    return f"= {txt}" if len(vals) == 1 else f"∈ {{{txt}}}"


def population(rows, methods, x: str, xs, *, config: dict | None = None, title: str = "") -> str:
    """A claim's ``population``: the rows of ``methods`` (a name or a tuple) at the x values
    ``xs`` that a :func:`by_method_x` mean pools. Names the methods, the x values, the
    mixture, d and K (with ``config``), every other grid axis with several values among
    them (the means pool those too; δ always), ``title`` (the static group), the number of
    distinct seeds and of rows per method."""
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    xs = set(xs)
    sel = [r for r in rows if r["method"] in methods and r.get(x) in xs]
    desc = [" and ".join(methods), f"{AXIS_NAMES.get(x, x)} {_values(xs)}"]
    if config is not None:
        if config.get("mixture") == "both":
            desc.append("mixture " + _values(FAMILIES[r["family"]] for r in sel if "family" in r).lstrip("= "))
        elif "mixture" in config:
            desc.append(f"mixture {config['mixture']}")
        desc += [f"{AXIS_NAMES.get(k, k)} {_values(r.get(k, config[k]) for r in sel)}"
                 for k in ("d", "num_components") if k != x and k in config and sel]
    named_family = config is not None and config.get("mixture") == "both"  # named as the mixture above
    grid_axes = HPARAM_AXES + tuple(dict.fromkeys(a for axes in MIXTURE_AXES.values() for a in axes))
    for axis in (a for a in grid_axes if a != "family" or not named_family):
        vals = {r[axis] for r in sel if axis in r}
        if axis != x and (len(vals) > 1 or (axis == "delta" and vals)):
            desc.append(f"{AXIS_NAMES.get(axis, axis)} {_values(vals)}")
    if title:
        desc.append(title)
    counts = sorted({sum(r["method"] == m for r in sel) for m in methods})
    each = " each" if len(methods) > 1 and len(counts) == 1 else ""
    desc.append(f"{len({r.get('seed') for r in sel})} seeds, {'/'.join(map(str, counts))} runs{each}")
    return ", ".join(desc)


def comparison(name: str, description: str, defaults: dict, claims: Callable[[Run], list], *, x: str = "delta",
               scatter: bool = False, presets: dict | None = None, metrics: tuple = (),
               findings: Callable[[Run], str] | None = None) -> Experiment:
    """A comparison experiment: BASE updated by ``defaults``, plotted and tabulated against x
    (``metrics``: more panels and tables beside capture, efficiency and ARI)."""
    return Experiment(
        name=name, description=description, defaults={**BASE, **defaults}, build=build, claims=claims,
        figures=lambda run, out: figure(run, out, x, name, scatter, metrics),
        report=lambda run: report(run, x, metrics), static_keys=STATIC_KEYS, presets=presets or {},
        findings=findings)
