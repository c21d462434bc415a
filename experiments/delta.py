"""delta: Fisher capture, efficiency and k-means ARI against δ ∈ [0, 1] on random
anisotropic mixtures (each seed draws a new mixture), InfoNCE and SimSiam beside LDA and
PCA. The noisy-augmentation conjecture (InfoNCE finds S_F for every 0 < δ < 1) at many δ,
and how the deficit 1 − capture shrinks with training steps (from the training history)
and with the batch size (a static axis).

Predictions, stated before running: the SSL losses reach mean capture ≥ 0.95 at every
δ ≥ 0.25, for each d, loss and batch size; they beat PCA's mean capture at every
δ ≥ 0.25. At δ = 0.1, if the conjecture holds (the deficit 1 − capture tends to 0), the
deficit keeps falling fast: the final mean deficit is at most half of the one a quarter
of the way through training, and the larger batch (less sampling noise) leaves at most
three quarters of the smaller batch's final deficit. (Ratios, not signs: any converging
run shrinks its deficit, so "smaller" alone could not tell a vanishing deficit from a
non-zero limit.)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gmmssl.experiments._compare import by_method_x, comparison, groups, population
from gmmssl import plots, results

DEFAULTS = {
    "mixture": "random",
    "d": 16,
    "num_components": 3,
    "r": 2,
    "separation": 1.0,
    "condition_number": (10.0,),
    "delta": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    "seeds": 4,
    "loss": ("infonce", "simsiam"),
    "xi": (1.0,),
    "batch_size": (128, 512),
    "steps": 600,
}
# --set scale=paper: the paper gives no grid sizes, so larger ones (more seeds, finer grids, longer training)
PRESETS = {"paper": {"delta": tuple(round(0.05 * i, 2) for i in range(21)), "seeds": 16, "steps": 1000}}


def claims(run):
    out = []
    final, low_of = {}, {}
    for title, rows, parts in groups(run, "delta"):
        loss = parts[0].config["loss"]
        by = by_method_x(rows, "delta")
        high = [d for d in sorted({d for _, d in by}) if d >= 0.25]
        config = parts[0].config
        out.append(results.claim(f"[{title}] {loss}: mean capture, worst δ ≥ 0.25",
                                 min(by[(loss, d)]["fisher_capture_mean"] for d in high), ">=", 0.95,
                                 quantity=f"smallest over δ of {loss}'s mean Fisher capture",
                                 population=population(rows, loss, "delta", high, config=config, title=title),
                                 method=loss))
        out.append(results.claim(f"[{title}] {loss} minus PCA: mean capture, worst δ ≥ 0.25",
                                 min(by[(loss, d)]["fisher_capture_mean"] - by[("pca", d)]["fisher_capture_mean"]
                                     for d in high), ">=", 0.0,
                                 quantity=f"smallest over δ of {loss}'s mean Fisher capture minus PCA's",
                                 population=population(rows, (loss, "pca"), "delta", high, config=config,
                                                       title=title), method=loss))
        low = [r for r in rows if r["method"] == loss and r["delta"] == 0.1]
        if low:
            end = 1.0 - np.mean([r["fisher_capture"] for r in low])
            quarter = 1.0 - np.mean([r["capture_at_quarter"] for r in low])
            final[title] = end
            low_of[title] = population(rows, loss, "delta", (0.1,), config=config, title=title)
            out.append(results.claim(f"[{title}] {loss} at δ=0.1: final deficit / deficit at 1/4 of training",
                                     end / max(quarter, 1e-12), "<=", 0.5,
                                     quantity="mean final deficit 1 − capture over mean deficit at 1/4 of training",
                                     population=low_of[title]))
    # the larger batch shrinks the final deficit at δ = 0.1
    for title, end in final.items():
        parts = dict(kv.split("=") for kv in title.split())
        if "batch_size" in parts:
            sizes = sorted({int(dict(kv.split("=") for kv in t.split())["batch_size"]) for t in final})
            if int(parts["batch_size"]) == sizes[0] and len(sizes) > 1:
                other = " ".join(f"{k}={sizes[-1] if k == 'batch_size' else v}" for k, v in parts.items())
                if other in final:
                    out.append(results.claim(f"[{title.replace(f'batch_size={sizes[0]}', '').strip()}] δ=0.1 final "
                                             f"deficit, batch {sizes[-1]} / batch {sizes[0]}",
                                             final[other] / max(end, 1e-12), "<=", 0.75,
                                             quantity=f"mean final deficit 1 − capture at batch {sizes[-1]} over "
                                             f"that at batch {sizes[0]}",
                                             population=f"{low_of[other]}; over {low_of[title]}"))
    return out


def _deficit_figure(run, out_dir):
    fig, ax = plots.plt.subplots(1, 1, figsize=(7, 4.5))
    plotted, labelled = False, False
    for part in run.parts:
        sel = part.grid["delta"] == 0.1
        if not sel.any():
            continue
        plotted = True
        hist = 1.0 - part.outputs["history"]["fisher_capture"][sel]
        steps = np.arange(1, hist.shape[1] + 1) * part.config["log_every"]
        m, sd = hist.mean(0), hist.std(0)
        label = " ".join(f"{k}={v}" for k, v in part.static.items())  # "" for a single configuration
        labelled = labelled or bool(label)
        ax.plot(steps, m, label=label)
        ax.fill_between(steps, np.maximum(m - sd, 1e-6), m + sd, alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("Fisher capture deficit 1 − capture (log)")
    ax.set_title("δ = 0.1: deficit against training steps (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(fontsize=7)
    if not plotted:  # a grid without δ = 0.1: say so rather than draw empty axes
        ax.text(0.5, 0.5, "no cell of this run has δ = 0.1", ha="center", va="center", transform=ax.transAxes)
    return [plots.save(fig, out_dir / "delta_deficit.png")]


_BASE = comparison("delta", "Capture, efficiency and ARI against δ on random mixtures; the noisy-augmentation "
                   "conjecture at many δ.", DEFAULTS, claims, x="delta",
                   presets=PRESETS)
EXPERIMENT = dataclasses.replace(_BASE, figures=lambda run, out: _BASE.figures(run, out) + _deficit_figure(run, out))
