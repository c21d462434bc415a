"""pancakes, the main job: on parallel pancakes PCA fails, InfoNCE matches supervised LDA.

Mixture: ``parallel_pancakes(d, K)`` (SPEC 3.2), thin (σ) along the K−1 separating
directions, variance 1 along the others. Grid: δ × seeds (× learning rate × temperature),
one vmapped call. Methods: PCA, LDA (supervised, labels), the spectral oracle (CCA of
the pairs) and the SSL loss (InfoNCE by default). Fisher subspace: centered variant.

Predictions, stated before running (issue 2): PCA captures ≤ 0.05 of S_F with ARI ≤ 0.1;
LDA captures ≥ 0.99 with ARI ≥ 0.95; InfoNCE at every δ ≥ 0.25 captures ≥ 0.98 with
ARI within 0.02 of LDA's; at δ = 0 InfoNCE has no signal and fails like PCA (mean ARI
≤ 0.1). The method "init" (the untrained random projector) is the chance reference.
"""
from __future__ import annotations

import jax
import numpy as np

from gmmssl import plots, results
from gmmssl._validate import check_int
from gmmssl.evaluate import METRICS, make_compare_cell
from gmmssl.experiment import Experiment, Run, part_rows
from gmmssl.sweep import Sweep, estimate_cell_bytes
from gmmssl.fisher import fisher_subspace
from gmmssl.gmm import parallel_pancakes, sample
from gmmssl.train import TrainConfig, check_setup, validate_hparams

DEFAULTS = {
    "d": 20,
    "num_components": 2,
    "r": 2,
    "separation": 0.7,
    "thickness": 0.1,
    "delta": (0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
    "seeds": 5,
    "learning_rate": (0.05,),
    "temperature": (1.0,),
    "xi": (0.7,),
    "loss": "infonce",
    "mode": "prior",
    "steps": 600,
    "log_every": 50,
    "batch_size": 512,
    "num_baseline": 2000,
    "num_eval": 2000,
}


def _train_config(config) -> TrainConfig:
    return TrainConfig(r=config["r"], batch_size=config["batch_size"], steps=config["steps"],
                       loss=config["loss"], mode=config["mode"], log_every=config["log_every"])


def build(config) -> Sweep:
    gmm = parallel_pancakes(config["d"], config["num_components"],
                            separation=config["separation"], thickness=config["thickness"])
    train_config = _train_config(config)
    check_setup(gmm, train_config)
    seeds = check_int("seeds", config["seeds"], low=1)
    check_int("num_baseline", config["num_baseline"], low=config["d"] + 1)
    check_int("num_eval", config["num_eval"], low=config["num_components"])
    axes = {"delta": config["delta"], "seed": tuple(range(seeds)),
            "learning_rate": config["learning_rate"], "temperature": config["temperature"]}
    if config["loss"] == "simsiam":
        axes["xi"] = config["xi"]
    for name in [n for n in axes if n != "seed"]:
        if len(axes[name]) == 0:
            raise ValueError(f"{name} needs at least one value")
        validate_hparams({name: np.asarray(axes[name])})
    train_fn, evaluate_fn = make_compare_cell(gmm, train_config, fisher_subspace(gmm),
                                              num_baseline=config["num_baseline"],
                                              num_eval=config["num_eval"])
    cell_bytes = estimate_cell_bytes(config["d"], config["r"], config["batch_size"],
                                     num_negatives=0 if config["loss"] == "infonce_population" else None)
    return Sweep(train_fn, evaluate_fn, axes, cell_bytes)


def _summary(rows):
    return results.summarize(rows, ("method", "delta"), METRICS + ("final_loss",))


def _part_claims(rows, loss: str, tag: str):
    by = {(s["method"], s["delta"]): s for s in _summary(rows)}
    deltas = sorted({d for _, d in by})
    out = [
        results.claim(f"{tag}PCA fails: Fisher capture (max over cells)",
                      max(by[("pca", d)]["fisher_capture_max"] for d in deltas), "<=", 0.05),
        results.claim(f"{tag}PCA fails: k-means ARI (max over cells)",
                      max(by[("pca", d)]["ari_max"] for d in deltas), "<=", 0.1),
        results.claim(f"{tag}LDA finds S_F: Fisher capture (min over cells)",
                      min(by[("lda", d)]["fisher_capture_min"] for d in deltas), ">=", 0.99),
        results.claim(f"{tag}LDA separates: k-means ARI (min over cells)",
                      min(by[("lda", d)]["ari_min"] for d in deltas), ">=", 0.95),
    ]
    for d in deltas:
        if d >= 0.25:
            s, lda = by[(loss, d)], by[("lda", d)]
            out.append(results.claim(f"{tag}{loss} finds S_F at delta={d:g}: Fisher capture (min over seeds)",
                                     s["fisher_capture_min"], ">=", 0.98))
            out.append(results.claim(f"{tag}{loss} matches LDA at delta={d:g}: mean ARI minus LDA's",
                                     s["ari_mean"] - lda["ari_mean"], ">=", -0.02))
    if 0.0 in deltas:
        out.append(results.claim(f"{tag}{loss} at delta=0 fails like PCA: mean k-means ARI",
                                 by[(loss, 0.0)]["ari_mean"], "<=", 0.1))
    return out


def claims(run: Run):
    out = []
    for part in run.parts:
        tag = "".join(f"[{k}={v}] " for k, v in part.static.items())
        out += _part_claims(part_rows(run, part), part.config["loss"], tag)
    return out


def _shown_cell(grid):
    mid = [d for d in sorted(set(grid["delta"].tolist())) if 0 < d < 1]
    show = mid[len(mid) // 2] if mid else float(grid["delta"][0])
    return show, int(np.flatnonzero((grid["delta"] == show) & (grid["seed"] == grid["seed"].min()))[0])


def figures(run: Run, out_dir):
    fig, axes = plots.plt.subplots(len(run.parts), 4, figsize=(17, 4 * len(run.parts)), squeeze=False)
    for row, part in zip(axes, run.parts):
        config, loss = part.config, part.config["loss"]
        gmm = parallel_pancakes(config["d"], config["num_components"],
                                separation=config["separation"], thickness=config["thickness"])
        x, c = sample(jax.random.PRNGKey(12345), gmm, 1500)
        show, cell = _shown_cell(part.grid)
        proj = part.outputs["projectors"]
        summary = _summary(part_rows(run, part))
        methods = ["pca", "lda", "oracle", "init", loss]
        title = f"d={config['d']}, K={config['num_components']}, r={config['r']}"
        plots.scatter_embedding(row[0], x @ proj["pca"][cell], c, f"PCA projection ({title})")
        plots.scatter_embedding(row[1], x @ proj[loss][cell], c, f"{loss} projection (δ={show:g})")
        plots.metric_against(row[2], summary, "delta", "fisher_capture", methods, ylabel="Fisher capture")
        plots.metric_against(row[3], summary, "delta", "ari", methods, ylabel="k-means ARI")
        row[3].legend(fontsize=8, loc="center right")
    fig.suptitle(f"parallel pancakes: {run.config['seeds']} seeds, {run.config['steps']} steps")
    return [plots.save(fig, out_dir / "pancakes.png")]


def report(run: Run) -> str:
    out = []
    for part in run.parts:
        summary = _summary(part_rows(run, part))
        tag = "".join(f"[{k}={v}] " for k, v in part.static.items())
        out += [results.format_table(summary, "method", "delta", m, title=f"{tag}{m} (mean±std over seeds)")
                for m in ("fisher_capture", "fisher_efficiency", "ari")]
    return "\n\n".join(out)


EXPERIMENT = Experiment(
    name="pancakes",
    description="Parallel pancakes: PCA fails while InfoNCE matches supervised LDA for every δ > 0.",
    defaults=DEFAULTS,
    build=build,
    claims=claims,
    figures=figures,
    report=report,
    static_keys=("d", "num_components", "r", "batch_size", "steps", "loss", "separation", "thickness"),
)
