"""zoo: which self-supervised objectives learn the Fisher subspace, loss by loss.

Every loss of :mod:`gmmssl.losses` that trains on pairs (InfoNCE, the spectral
contrastive loss, SimCLR's NT-Xent, DCL, Barlow Twins, VICReg, SimSiam's negative cosine
with a predictor, BYOL with an EMA target, SigLIP) trains a linear projector (r = 2) on
parallel pancakes and on random anisotropic mixtures (K = 3, so m = 2), over δ, beside
PCA, LDA and the spectral oracle. Reported per loss: Fisher capture, efficiency, k-means
ARI, Bayes accuracy kept, the embedding's effective rank (collapse: ≤ 1.5 of r = 2).

Predictions, stated before the first run:

* **Contrastive losses with negatives** (infonce, ntxent, dcl, siglip) find S_F at
  δ = 1 on both mixtures (mean capture ≥ 0.9): their negatives repel every direction
  that does not separate components, as in the paper's theorem for InfoNCE.
* **Second-moment losses** (spectral, barlow_twins, vicreg) see the data only through
  the embeddings' second moments, AᵀΣ_T A and AᵀC⁺A (C⁺ = E[x x⁺ᵀ]); their optima are
  the top canonical directions of the pair, the spectral oracle's, which span S_F for
  δ > 0. Prediction: they find S_F at δ = 1 on both mixtures (mean capture ≥ 0.9),
  including the pancakes, where PCA (Σ_T alone) fails: C⁺ is what tells the thin
  separating directions apart.
* **Non-contrastive losses without a variance term** (negative_cosine with a predictor,
  byol): nothing in the loss keeps the two columns of the embedding apart, so we expect
  dimensional collapse toward the single most view-invariant direction: embedding
  effective rank ≤ 1.5 and capture ≤ 0.6 (about one of the m = 2 directions) on the
  random mixtures at δ = 1. This is the claim we are least sure of.
* **Noise-free references**: the population versions of the three second-moment losses
  (their B → ∞ values from the mixture's moments in closed form, trained without sampling
  noise) behave as their sampled versions: they find S_F at δ = 1. Where a sampled loss
  and its population version disagree, sampling noise is to blame; where they agree, the
  objective's optimum is.
* Every loss at δ = 0 has no signal (x⁺ independent of x's component): capture at
  chance, below 0.6 on the random mixtures.

Claims are scored per mixture and loss on the δ = 1 (and δ = 0) cells. Both mixture
families share d and K, so the family is a traced grid axis ("family": 0 pancakes, 1
random): one compilation per loss, not two.
"""
from __future__ import annotations

import dataclasses

from gmmssl import plots, results
from gmmssl.experiments._compare import FAMILIES, by_method_x, comparison, groups, population, summary

CONTRASTIVE = ("infonce", "ntxent", "dcl", "siglip")
SECOND_MOMENT = ("spectral", "barlow_twins", "vicreg")
NON_CONTRASTIVE = ("negative_cosine", "byol")
POPULATION = ("spectral_population", "barlow_twins_population", "vicreg_population")
LOSSES = CONTRASTIVE + SECOND_MOMENT + NON_CONTRASTIVE + POPULATION

DEFAULTS = {
    "mixture": "both",
    "family": (0, 1),
    "loss": LOSSES,
    "d": 12,
    "num_components": 3,
    "r": 2,
    "delta": (0.0, 0.5, 1.0),
    "seeds": 2,
    "steps": 400,
    "batch_size": 256,
    "num_baseline": 1000,
    "num_eval": 1000,
}
# --set scale=paper: the paper gives no grid sizes, so larger ones (more seeds, finer grids, longer training)
PRESETS = {"paper": {"delta": (0.0, 0.25, 0.5, 0.75, 1.0), "seeds": 8, "d": 16, "steps": 800}}


def _by_family(run):
    """(loss, family name, rows) for every loss and mixture family of the run."""
    out = []
    for _, rows, parts in groups(run, "delta"):
        for code in sorted({r["family"] for r in rows}):
            out.append((parts[0].config["loss"], FAMILIES[code], [r for r in rows if r["family"] == code]))
    return out


def claims(run):
    out = []
    for loss, mix, rows in _by_family(run):
        by = by_method_x(rows, "delta", ("effective_rank",))
        deltas = {d for _, d in by}
        tag = f"[{loss} on {mix}]"
        if 1.0 in deltas:
            s = by[(loss, 1.0)]
            one = population(rows, loss, "delta", (1.0,), config=run.config)
            if loss in CONTRASTIVE + SECOND_MOMENT + POPULATION:
                out.append(results.claim(f"{tag} finds S_F at δ=1: mean Fisher capture",
                                         s["fisher_capture_mean"], ">=", 0.9,
                                         quantity=f"{loss}'s mean Fisher capture", population=one, method=loss))
            elif mix == "random":
                out.append(results.claim(f"{tag} collapses at δ=1: mean effective rank of the embedding",
                                         s["effective_rank_mean"], "<=", 1.5,
                                         quantity=f"mean effective rank of {loss}'s embedding xA", population=one))
                out.append(results.claim(f"{tag} keeps about one direction at δ=1: mean Fisher capture",
                                         s["fisher_capture_mean"], "<=", 0.6,
                                         quantity=f"{loss}'s mean Fisher capture", population=one))
        if 0.0 in deltas and mix == "random":
            out.append(results.claim(f"{tag} no signal at δ=0: mean Fisher capture",
                                     by[(loss, 0.0)]["fisher_capture_mean"], "<=", 0.6,
                                     quantity=f"{loss}'s mean Fisher capture",
                                     population=population(rows, loss, "delta", (0.0,), config=run.config)))
    return out


def report(run):
    lines = ["| mixture | loss | capture δ=1 | efficiency δ=1 | ARI δ=1 | Bayes kept δ=1 | eff. rank δ=1 | "
             "collapsed | capture δ=0 |", "|---" * 9 + "|"]
    baselines = {}
    for loss, mix, rows in _by_family(run):
        by = by_method_x(rows, "delta", ("effective_rank", "bayes_retained"))
        one, zero = by.get((loss, 1.0)), by.get((loss, 0.0))
        if one is None:
            continue
        lines.append(f"| {mix} | {loss} | {one['fisher_capture_mean']:.3f} | {one['fisher_efficiency_mean']:.3f} | "
                     f"{one['ari_mean']:.3f} | {one['bayes_retained_mean']:.3f} | {one['effective_rank_mean']:.2f} | "
                     f"{'yes' if one['effective_rank_mean'] <= 1.5 else 'no'} | "
                     f"{zero['fisher_capture_mean'] if zero else float('nan'):.3f} |")
        baselines[mix] = (f"{mix}: PCA {by[('pca', 1.0)]['fisher_capture_mean']:.3f}, "
                          f"LDA {by[('lda', 1.0)]['fisher_capture_mean']:.3f}, "
                          f"oracle {by[('oracle', 1.0)]['fisher_capture_mean']:.3f} (capture at δ=1)")
    return "\n".join(lines) + "\n\nbaselines: " + "; ".join(baselines.values())


def figure(run, out_dir):
    codes = sorted({r["family"] for r in run.rows})
    panels = [("fisher_capture", "Fisher capture (0–1)"), ("effective_rank", "embedding effective rank"),
              ("ari", "k-means ARI")]
    fig, axes = plots.plt.subplots(len(codes), len(panels), figsize=(5.2 * len(panels), 4.0 * len(codes)),
                                   squeeze=False)
    for ax_row, code in zip(axes, codes):
        rows = [r for r in run.rows if r["family"] == code]
        s = summary(rows, "delta", ("effective_rank",))
        methods = ["pca", "lda", "oracle"] + [m for m in LOSSES if any(r["method"] == m for r in rows)]
        for ax, (metric, label) in zip(ax_row, panels):
            plots.metric_against(ax, s, "delta", metric, methods, ylabel=label)
            ax.set_xlabel("δ")
            ax.set_title(f"{FAMILIES[code]}: {label}", fontsize=9)
        ax_row[-1].legend(fontsize=6, loc="best", ncol=2)
    fig.suptitle(f"zoo: every loss side by side, mean ± std over {run.config['seeds']} seeds")
    return [plots.save(fig, out_dir / "zoo.png")]


EXPERIMENT = dataclasses.replace(
    comparison("zoo", "The loss zoo: which self-supervised objectives learn the Fisher subspace.", DEFAULTS, claims,
               presets=PRESETS),
    figures=figure, report=report)
