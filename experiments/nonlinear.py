"""nonlinear: do non-linear projectors still find the Fisher subspace? (the paper's Open
Question 1). MLP projectors (``depth`` hidden layers of ``width`` units, flax.nnx, then a
linear head to r dimensions; depth 0 is the linear projector of the theory) trained with
InfoNCE and SimSiam on the same mixtures as the linear experiments (parallel pancakes,
where PCA fails, and random anisotropic mixtures, where the classes overlap), vmapped
over δ and seeds, one compilation per architecture.

Linear readouts of the learned representation z = f(x) on held-out points: k-means ARI
and the test accuracy of a linear probe (logistic regression fitted on half of them),
beside LDA's and PCA's projections, the untrained network ("init") and the Bayes
optimum (the true posterior on x). Where the representation looks in the input space:
the fraction of its Jacobian ∂z/∂x that acts on the Fisher subspace, averaged over data
points (1: the Jacobian's row space lies in S_F), measured in coordinates whitened by the
total covariance Σ_T (:func:`gmmssl.projectors.jacobian_energy` with ``cov``), so that it
is invariant to linear changes of x, as S_F is. The Euclidean share, which depends on how
x happens to be scaled, is reported beside it ("jacobian_fisher_euclidean") but not judged.

What that fraction is without training is not m/d (0.125 here): in whitened coordinates it
depends on Σ_T. Measured on 2026-12-07 with the default mixtures (δ = 1, 4 seeds, range
over the cells of both losses and depths): the untrained network ("init") 0.005–0.09 on
pancakes and 0.35–0.80 on random mixtures, and PCA's projection at most 0.0004 on
pancakes but 0.92–0.96 on random mixtures.
So on random mixtures an absolute bar such as 0.9 does not separate a learned
representation from PCA's; the claim below is stated relative to the "pca" and "init" rows.

Predictions, stated before running: for every depth and both losses the MLP's linear
probe is within 0.02 of LDA's and its k-means ARI within 0.05 of LDA's (mean over cells
with δ ≥ 0.5). The Jacobian's share on S_F was first bounded absolutely (≥ 0.9); PCA
passes that bar on random mixtures (0.93), so since issue 28 the share is stated relative
to the better of PCA's and the untrained network's, b: (share − b)/(1 − b) ≥ 0.5.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gmmssl.experiments._compare import mixture
from gmmssl import fisher, metrics, plots, projectors, results
from gmmssl._validate import check_choice, check_int
from gmmssl.evaluate import cell_hparams
from gmmssl.experiment import Experiment, Run
from gmmssl.gmm import sample
from gmmssl.sweep import Sweep, estimate_cell_bytes
from gmmssl.train import TrainConfig, check_setup, divergence, init_params, train, validate_hparams

STATIC_KEYS = ("mixture", "d", "num_components", "r", "depth", "width", "activation", "loss", "batch_size", "steps")
DEFAULTS = {
    "scale": "default",
    "mixture": ("pancakes", "random"),
    "d": 16,
    "num_components": 3,
    "r": 2,
    "separation": 0.7,
    "thickness": (0.1,),
    "condition_number": (10.0,),
    "heterogeneity": (0.0,),
    "depth": (0, 2),
    "width": 64,
    "activation": "gelu",
    "loss": ("infonce", "simsiam"),
    "delta": (0.25, 0.5, 1.0),
    "seeds": 4,
    "learning_rate": 0.01,
    "temperature": 1.0,
    "xi": 1.0,
    "steps": 1000,
    "log_every": 100,
    "batch_size": 512,
    "num_baseline": 2000,
    "num_eval": 2000,
    "num_jacobian": 256,
}
PRESETS = {"paper": {"depth": (0, 1, 2, 3), "width": 128, "seeds": 8, "delta": (0.1, 0.25, 0.5, 0.75, 1.0),
                     "steps": 2000}}
METRICS = ("probe_accuracy", "ari", "jacobian_fisher", "bayes_accuracy")
REFERENCES = ("lda", "pca", "init")


def build(config: dict) -> Sweep:
    check_choice("mixture", config["mixture"], ("pancakes", "random"))
    depth = check_int("depth", config["depth"], low=0)
    width = check_int("width", config["width"], low=1)
    k = config["num_components"]
    train_config = TrainConfig(r=config["r"], batch_size=config["batch_size"], steps=config["steps"],
                               loss=config["loss"], log_every=config["log_every"], hidden=(width,) * depth,
                               activation=config["activation"])
    check_setup(mixture(config, {"seed": 0}), train_config)
    n_eval = check_int("num_eval", config["num_eval"], low=4 * k)
    n_jac = check_int("num_jacobian", config["num_jacobian"], low=1, high=n_eval)
    check_int("num_baseline", config["num_baseline"], low=config["d"] + 1)
    hparams = {"learning_rate": config["learning_rate"], "temperature": config["temperature"], "xi": config["xi"]}
    validate_hparams({k_: np.asarray(v) for k_, v in hparams.items()})
    axes = {"delta": tuple(config["delta"]), "seed": tuple(range(check_int("seeds", config["seeds"], low=1)))}
    validate_hparams({"delta": np.asarray(axes["delta"])})
    m = k - 1

    def hp(cell):
        return {**hparams, **cell_hparams(cell)}

    def prepare_fn(cell):
        gmm = mixture(config, cell)
        return {"gmm": gmm, "fisher": fisher.fisher_subspace(gmm, num_directions=m)}

    def train_fn(cell, data):
        key = jax.random.split(jax.random.PRNGKey(cell["seed"]), 4)[0]
        return train(key, data["gmm"], hp(cell), train_config)

    def evaluate_fn(cell, data, trained):
        params = trained.params
        keys = jax.random.split(jax.random.PRNGKey(cell["seed"]), 4)
        gmm, basis = data["gmm"], data["fisher"]
        x_base, c_base = sample(keys[1], gmm, config["num_baseline"])
        x, c = sample(keys[2], gmm, n_eval)
        half = n_eval // 2
        start = init_params(keys[0], gmm, train_config)
        nets = {config["loss"]: params, "init": start}
        linear = {"lda": fisher.lda(x_base, c_base, k), "pca": fisher.pca(x_base, config["r"])}
        bayes = metrics.bayes_accuracy(x[half:], c[half:], gmm)
        out = {}
        for name, p in nets.items():
            z = projectors.embed(p, x, train_config.hidden, train_config.activation)
            jac = projectors.jacobians(p, x[:n_jac], train_config.hidden, train_config.activation)
            energy = [projectors.jacobian_share(jac, basis, cov) for cov in (gmm.total_cov, None)]
            out[name] = _readouts(keys[3], z, c, half, k, energy, bayes)
        for name, a in linear.items():
            jac = projectors.jacobians({"A": a}, x[:n_jac])
            energy = [projectors.jacobian_share(jac, basis, cov) for cov in (gmm.total_cov, None)]
            out[name] = _readouts(keys[3], x @ a, c, half, k, energy, bayes)
        code = divergence(trained)
        failed = code > 0
        for name, scores in out.items():
            scores["diverged"] = code if name == config["loss"] else jnp.asarray(0, jnp.int32)
            if name == config["loss"]:
                scores.update({m: jnp.where(failed, jnp.nan, v) for m, v in scores.items() if m != "diverged"})
        return {"metrics": out, "projectors": {config["loss"]: params, **linear}}

    return Sweep(train_fn, evaluate_fn, axes, estimate_cell_bytes(max(config["d"], width), config["r"],
                                                                  config["batch_size"], num_param_matrices=depth + 1),
                 prepare_fn)


def _readouts(key, z, c, half, k, energy, bayes):
    probe = metrics.linear_probe_accuracy(z[:half], c[:half], z[half:], c[half:], k)
    return {"probe_accuracy": probe, "ari": metrics.kmeans_ari(key, z[half:], c[half:], k),
            "jacobian_fisher": energy[0], "jacobian_fisher_euclidean": energy[1], "bayes_accuracy": bayes,
            "probe_gap_to_bayes": bayes - probe}


def _groups(run: Run):
    """{(loss, mixture): rows} with the depth as a column (from the rows alone)."""
    c = run.config
    out: dict = {}
    for r in run.rows:
        key = (r.get("loss", c["loss"]), r.get("mixture", c["mixture"]))
        out.setdefault(key, []).append({**r, "depth": r.get("depth", c["depth"])})
    return out


def _summary(rows):
    return results.summarize(rows, ("method", "depth"), METRICS + ("probe_gap_to_bayes",))


RELATIVE_SHARE = 0.5  # fixed before the runs of issue 28: the share closes at least half the gap above the baselines


def relative_share(share: float, pca: float, init: float) -> float:
    """(share − b)/(1 − b), b = max(PCA's share, the untrained network's): how much of the
    way from the better baseline to a map acting on S_F only (1) the Jacobian has come
    (≤ 0: no better than a baseline). NaN when b is 1."""
    b = max(pca, init)
    return (share - b) / (1.0 - b) if b < 1.0 else float("nan")


def claims(run: Run) -> list:
    out = []
    for (loss, mix), rows in _groups(run).items():
        rows = [r for r in rows if r["delta"] >= 0.5]
        by = {(s["method"], s["depth"]): s for s in _summary(rows)}
        seeds = run.config["seeds"]
        for depth in sorted({dp for _, dp in by}):
            tag = f"[{mix} {loss} depth={depth}]"
            ssl, lda = by[(loss, depth)], by[("lda", depth)]
            pca, init = by[("pca", depth)]["jacobian_fisher_mean"], by[("init", depth)]["jacobian_fisher_mean"]
            where = f"{mix}, depth {depth}, δ ≥ 0.5 ({ssl['n']} cells, {seeds} seeds each)"
            out.append(results.claim(f"{tag} linear probe minus LDA's (δ ≥ 0.5)",
                                     ssl["probe_accuracy_mean"] - lda["probe_accuracy_mean"], ">=", -0.02,
                                     quantity="mean linear-probe accuracy minus LDA's",
                                     population=f"{loss} and LDA, {where}", method=loss))
            out.append(results.claim(f"{tag} k-means ARI minus LDA's (δ ≥ 0.5)",
                                     ssl["ari_mean"] - lda["ari_mean"], ">=", -0.05,
                                     quantity="mean k-means ARI minus LDA's",
                                     population=f"{loss} and LDA, {where}", method=loss))
            out.append(results.claim(
                f"{tag} Jacobian on the Fisher subspace beyond the baselines (δ ≥ 0.5): (share − b)/(1 − b), "
                f"b = max(PCA's {pca:.3f}, the untrained network's {init:.3f})",
                relative_share(ssl["jacobian_fisher_mean"], pca, init), ">=", RELATIVE_SHARE,
                quantity="Jacobian share on S_F relative to the better baseline",
                population=f"{loss}, PCA and init, {where}", method=loss))
    return out


def report(run: Run) -> str:
    lines = []
    for (loss, mix), rows in _groups(run).items():
        s = _summary(rows)
        for metric in ("probe_accuracy", "ari", "jacobian_fisher"):
            lines.append(results.format_table(s, "method", "depth", metric,
                                              title=f"[{mix} {loss}] {metric} (mean±std over δ and seeds)"))
        bayes = np.mean([r["bayes_accuracy"] for r in rows])
        lines.append(f"[{mix} {loss}] Bayes-optimal accuracy on the same test points: {bayes:.3f}")
    return "\n\n".join(lines)


def figures(run: Run, out_dir) -> list:
    groups = _groups(run)
    fig, axes = plots.plt.subplots(len(groups), 3, figsize=(13, 3.8 * len(groups)), squeeze=False)
    labels = {"probe_accuracy": "linear-probe accuracy", "ari": "k-means ARI",
              "jacobian_fisher": "Jacobian on the Fisher subspace"}
    for ax_row, ((loss, mix), rows) in zip(axes, groups.items()):
        s = _summary(rows)
        for ax, metric in zip(ax_row, labels):
            plots.metric_against(ax, s, "depth", metric, [loss, *REFERENCES], ylabel=labels[metric])
            if metric == "probe_accuracy":
                ax.axhline(np.mean([r["bayes_accuracy"] for r in rows]), color="k", ls="--", lw=1,
                           label="Bayes optimum")
            ax.set_xlabel("MLP depth (0 = linear projector)")
            ax.set_title(f"{labels[metric]} — {mix}, {loss}", fontsize=9)
        ax_row[0].legend(fontsize=7)
    fig.suptitle(f"nonlinear: MLP projectors (width {run.config['width']}), mean ± std over δ and seeds")
    return [plots.save(fig, out_dir / "nonlinear.png")]


def findings(run: Run) -> str:
    """What the rows show, for docs/open-questions.md."""
    out = [f"MLP width {run.config['width']}, activation {run.config['activation']}, {run.config['steps']} steps; "
           "mean over δ ≥ 0.5 and seeds (depth 0 is the linear projector).", "",
           "| mixture | loss | depth | probe acc. | LDA probe | Bayes | ARI | LDA ARI | Jacobian on S_F | PCA's "
           "| init's |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    good, bad, wide, baselines = [], [], [], {}
    for (loss, mix), rows in _groups(run).items():
        rows = [r for r in rows if r["delta"] >= 0.5]
        by = {(s["method"], s["depth"]): s for s in _summary(rows)}
        for depth in sorted({dp for _, dp in by}):
            ssl, lda = by[(loss, depth)], by[("lda", depth)]
            pca, init = by[("pca", depth)]["jacobian_fisher_mean"], by[("init", depth)]["jacobian_fisher_mean"]
            out.append(f"| {mix} | {loss} | {depth} | {ssl['probe_accuracy_mean']:.3f} | "
                       f"{lda['probe_accuracy_mean']:.3f} | {ssl['bayes_accuracy_mean']:.3f} | {ssl['ari_mean']:.3f} | "
                       f"{lda['ari_mean']:.3f} | {ssl['jacobian_fisher_mean']:.3f} | {pca:.3f} | {init:.3f} |")
            baselines.setdefault(mix, []).append(pca)
            close = ssl["probe_accuracy_mean"] >= lda["probe_accuracy_mean"] - 0.02
            (good if close else bad).append(f"{mix}/{loss}/depth {depth}")
            rel = relative_share(ssl["jacobian_fisher_mean"], pca, init)
            if not rel >= RELATIVE_SHARE:
                wide.append(f"{mix}/{loss}/depth {depth} (share {ssl['jacobian_fisher_mean']:.2f}, relative {rel:.2f})")
    out += ["", f"Linear probe within 0.02 of LDA's: {', '.join(good) or 'none'}; short of it: "
            f"{', '.join(bad) or 'none'}."]
    pca_share = "; ".join(f"on {mix} PCA's share is {min(v):.2f}–{max(v):.2f}" if max(v) - min(v) >= 0.005
                          else f"on {mix} PCA's share is {v[0]:.2f}" for mix, v in baselines.items())
    if baselines:  # (none when no cell has δ ≥ 0.5)
        out.append("The Jacobian's share is read against PCA's projection and the untrained network (\"PCA's\", "
                   f"\"init's\"): {pca_share} (where it is high, the share separates a Fisher-seeking map from a "
                   "variance-seeking one less).")
    if wide:
        out.append(f"The Jacobian's share closes less than {RELATIVE_SHARE:g} of the gap from the better baseline "
                   "(PCA's or the untrained network's share) to 1 for " + ", ".join(wide) + ": there the network's "
                   "Jacobian is not clearly closer to S_F than that baseline's (a negative value: farther), so it "
                   "does not find the Fisher subspace in the linear theory's sense, whatever its linear readouts "
                   "keep.")
    return "\n".join(out)


EXPERIMENT = Experiment(
    name="nonlinear", description="MLP projectors (flax.nnx) against the linear theory: linear readouts "
    "and where their Jacobian looks, beside LDA and the Bayes optimum.", defaults=DEFAULTS, build=build,
    claims=claims, figures=figures, report=report, static_keys=STATIC_KEYS, presets=PRESETS, findings=findings)
