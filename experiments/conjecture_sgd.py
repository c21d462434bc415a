"""The conjecture's SGD view, ``gmmssl run conjecture --set view=sgd``: *how fast does SGD
get there*. ``infonce_population`` (analytic negatives, sampled pairs) trained with Adam
in float64 to the end of a cosine decay on each random mixture; the deficit 1 − capture
at 1/4, 1/2 and the end; the ``candidates`` largest deficits re-run ``rerun_factor``
times longer (:func:`followup`).

Predictions, stated before running: among the cells inside the premise (κ > min_kappa)
the median deficit is below 1e-3 and the 95th percentile below 1e-2; the median ratio of
final to half-way deficit is at most 0.5; re-running the largest deficits longer shrinks
each of them (median ratio below 0.5), and the largest left is below 1e-2.
"""
from __future__ import annotations

import jax
import numpy as np

from gmmssl import fisher, plots, results
from gmmssl.evaluate import make_compare_cell
from gmmssl.experiment import Run, part_rows
from gmmssl.experiments._conjecture import LOSS, draw, validate
from gmmssl.experiments._conjecture import premise as _premise
from gmmssl.sweep import Sweep, estimate_cell_bytes
from gmmssl.train import TrainConfig, check_setup


def build_grid(config: dict, seeds) -> Sweep:
    """The Sweep of the mixtures ``seeds`` under one static configuration."""
    validate(config)
    k = config["num_components"]
    train_config = TrainConfig(r=k - 1 + config["extra_rank"], batch_size=config["batch_size"], steps=config["steps"], loss=LOSS,
                               mode=config["mode"], log_every=config["log_every"])
    with jax.enable_x64(True):
        check_setup(draw(config, 0)[0], train_config)
    hparams = {"learning_rate": config["learning_rate"], "temperature": config["temperature"]}
    prepare, train, evaluate = make_compare_cell(lambda cell: draw(config, cell["seed"])[0], train_config,
                                                 num_baseline=config["num_baseline"], num_eval=config["num_eval"])

    def with_draws(cell, data):
        return {**cell, **hparams, "delta": data["draws"]["delta"]}

    def prepare_fn(cell):
        return {**prepare(cell), "draws": draw(config, cell["seed"])[1]}

    def train_fn(cell, data):
        return train(with_draws(cell, data), data)

    def evaluate_fn(cell, data, trained):
        out = evaluate(with_draws(cell, data), data, trained)
        gmm, draws = data["gmm"], dict(data["draws"])
        draws["rho_min"] = fisher.canonical_correlations(gmm, draws["delta"], config["mode"])[k - 2]
        capture = trained.history["fisher_capture"]
        n = capture.shape[0]
        ssl = out["metrics"][LOSS]
        ssl.update(deficit=1.0 - ssl["fisher_capture"], deficit_quarter=1.0 - capture[max(n // 4 - 1, 0)],
                   deficit_half=1.0 - capture[max(n // 2 - 1, 0)])
        for named in out["metrics"].values():
            named.update(draws)
        return out

    cell_bytes = estimate_cell_bytes(config["d"], k - 1, config["batch_size"], num_negatives=0, itemsize=8)
    return Sweep(train_fn, evaluate_fn, {"seed": tuple(int(s) for s in seeds)}, cell_bytes, prepare_fn)




def _ssl_rows(rows, phase):
    return [r for r in rows if r["method"] == LOSS and (r.get("phase") == "longer") == (phase == "longer")]


def followup(run: Run) -> list:
    """Re-runs the largest deficits inside the premise, ``rerun_factor`` times longer."""
    config = run.config
    found = []
    for part in run.parts:
        found += [(r["deficit"], r["seed"], part) for r in _premise(_ssl_rows(part_rows(run, part), "main"), config)]
    found.sort(key=lambda t: -t[0])
    chosen: dict[int, tuple] = {}
    for _, seed, part in found[: config["candidates"]]:
        chosen.setdefault(id(part), (part, []))[1].append(seed)
    plans = []
    for part, seeds in chosen.values():
        cfg = {**part.config, "steps": part.config["steps"] * config["rerun_factor"]}
        plans.append(({**part.static, "phase": "longer"}, cfg, build_grid(cfg, sorted(seeds))))
    return plans


def _key(r):
    return (r.get("d"), r.get("num_components"), r.get("mode"), r["seed"])


def claims(run: Run) -> list:
    config = run.config
    main = _premise(_ssl_rows(run.rows, "main"), config)
    longer = {_key(r): r for r in _ssl_rows(run.rows, "longer")}
    deficits = np.array([r["deficit"] for r in main])

    def configurations(rows):  # each static key's values among rows (the config's where it did not vary)
        named = []
        for key, name in (("d", "d"), ("num_components", "K"), ("mode", "mode"), ("extra_rank", "extra_rank"),
                          ("centered", "centered")):
            vals = {v for r in rows for v in np.atleast_1d(r.get(key, config.get(key))).tolist()} - {None}
            if vals:
                named.append(f"{name} ∈ {{{', '.join(map(str, sorted(vals, key=lambda v: (str(type(v)), v))))}}}")
        return ", ".join(named)

    inside = (f"{LOSS}, main training, {len(main)} mixtures with κ > {config['min_kappa']:g} "
              f"({configurations(main)})")
    out = [results.claim(f"median deficit 1 − capture over {len(main)} mixtures with κ > {config['min_kappa']}",
                         np.median(deficits), "<=", 1e-3,
                         quantity="median final deficit 1 − Fisher capture", population=inside),
           results.claim("95th percentile of the deficit", np.quantile(deficits, 0.95), "<=", 1e-2,
                         quantity="95th percentile of the final deficit 1 − Fisher capture", population=inside),
           results.claim("median ratio of final to half-way deficit (the second half of training at least halves it)",
                         np.median([r["deficit"] / max(r["deficit_half"], 1e-300) for r in main]), "<=", 0.5,
                         quantity="median of final deficit / deficit half-way through training",
                         population=inside)]
    worst = max(main, key=lambda r: r["deficit"])
    out.append(results.claim(
        f"largest deficit found (seed {worst['seed']}, d={worst.get('d', config['d'])}, "
        f"K={worst.get('num_components', config['num_components'])}, mode={worst.get('mode', config['mode'])}, "
        f"δ={worst['delta']:.3f}, cond={worst['condition_number']:.1f}), after {config['steps']} steps",
        worst["deficit"], "<=", 1e-2,
        quantity="largest final deficit 1 − Fisher capture", population=inside))
    pairs = [(r, longer[_key(r)]) for r in main if _key(r) in longer]
    if pairs:
        factor = config["rerun_factor"]
        rerun = (f"{LOSS}, the {len(pairs)} mixtures (of the {len(main)} with κ > {config['min_kappa']:g}) with "
                 f"the largest main-training deficits, each re-run {factor}× longer "
                 f"({configurations([a for a, _ in pairs])})")
        out.append(results.claim(f"median ratio of the {len(pairs)} largest deficits after {factor}× longer "
                                 "training to before (longer training shrinks them)",
                                 np.median([b["deficit"] / max(a["deficit"], 1e-300) for a, b in pairs]), "<=", 0.5,
                                 quantity=f"median of deficit after {factor}× longer training / deficit before",
                                 population=rerun))
        out.append(results.claim(f"largest deficit left after {factor}× longer training",
                                 max(b["deficit"] for _, b in pairs), "<=", 1e-2,
                                 quantity=f"largest deficit 1 − Fisher capture after {factor}× longer training",
                                 population=rerun))
    return out


def report(run: Run) -> str:
    config = run.config
    lines = ["deficit 1 − Fisher capture of infonce_population (main training), by static configuration:",
             f"{'configuration':32s} {'n':>4s} {'κ>min':>6s} {'median':>10s} {'q95':>10s} {'max':>10s} "
             f"{'median κ≤min':>13s}"]
    for part in run.parts:
        if part.static.get("phase") == "longer":
            continue
        rows = _ssl_rows(part_rows(run, part), "main")
        inside = _premise(rows, config)
        outside = [r["deficit"] for r in rows if r["kappa"] <= config["min_kappa"]]
        d = np.array([r["deficit"] for r in inside]) if inside else np.array([np.nan])
        tag = " ".join(f"{k}={v}" for k, v in part.static.items()) or "all"
        lines.append(f"{tag:32s} {len(rows):4d} {len(inside):6d} {np.median(d):10.2e} {np.quantile(d, 0.95):10.2e} "
                     f"{d.max():10.2e} {np.median(outside) if outside else float('nan'):13.3g}")
    longer = {_key(r): r for r in _ssl_rows(run.rows, "longer")}
    if longer:
        lines += ["", f"re-run {config['rerun_factor']}× longer (deficit before -> after):"]
        for r in _ssl_rows(run.rows, "main"):
            if _key(r) in longer:
                lines.append(f"  d={r.get('d', config['d'])} K={r.get('num_components', config['num_components'])} "
                             f"mode={r.get('mode', config['mode'])} seed={r['seed']} δ={r['delta']:.3f} "
                             f"κ={r['kappa']:.3f} cond={r['condition_number']:.1f} ρ_min={r['rho_min']:.3g}: "
                             f"{r['deficit']:.2e} -> {longer[_key(r)]['deficit']:.2e}")
    return "\n".join(lines)


def figures(run: Run, out_dir) -> list:
    config = run.config
    fig, axes = plots.plt.subplots(1, 3, figsize=(15, 4.3))
    rows = _ssl_rows(run.rows, "main")
    floor = 1e-9
    for mode in sorted({r.get("mode", config["mode"]) for r in rows}):
        sel = [r for r in _premise(rows, config) if r.get("mode", config["mode"]) == mode]
        axes[0].hist(np.log10(np.maximum([r["deficit"] for r in sel], floor)), bins=30, alpha=0.6,
                     label=f"mode={mode} (n={len(sel)})")
        out = [r for r in rows if r.get("mode", config["mode"]) == mode]
        axes[2].scatter([r["kappa"] for r in out], np.maximum([r["deficit"] for r in out], floor), s=8,
                        alpha=0.6, label=f"mode={mode}")
    axes[0].set_xlabel("log10 deficit (1 − capture), κ > min_kappa")
    axes[0].set_ylabel("mixtures")
    axes[0].legend(fontsize=8)
    for part in run.parts:
        hist = 1.0 - np.asarray(part.outputs["history"]["fisher_capture"])
        steps = np.arange(1, hist.shape[1] + 1) * part.config["log_every"]
        longer = part.static.get("phase") == "longer"
        tag = " ".join(f"{k}={v}" for k, v in part.static.items() if k != "phase")
        if longer:
            for h in hist:
                axes[1].plot(steps, np.maximum(h, floor), color="k", lw=0.8, alpha=0.7)
        else:
            axes[1].plot(steps, np.maximum(np.median(hist, 0), floor), label=f"median {tag}")
    axes[1].plot([], [], color="k", lw=0.8, label="largest deficits, re-run longer")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("deficit (1 − capture)")
    axes[1].legend(fontsize=6)
    axes[2].axvline(config["min_kappa"], color="grey", ls=":")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("κ (C⁺ = κ S_B)")
    axes[2].set_ylabel("final deficit")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"conjecture: infonce_population (float64) on {len(rows)} random mixtures")
    return [plots.save(fig, out_dir / "conjecture.png")]


def findings(run: Run) -> str:
    """What the rows show, for docs/open-questions.md."""
    config = run.config
    rows = _ssl_rows(run.rows, "main")
    inside = _premise(rows, config)
    outside = [r["deficit"] for r in rows if r["kappa"] <= config["min_kappa"]]
    deficits = np.array([r["deficit"] for r in inside])
    worst = max(inside, key=lambda r: r["deficit"])
    longer = {_key(r): r for r in _ssl_rows(run.rows, "longer")}
    pairs = [(r, longer[_key(r)]) for r in inside if _key(r) in longer]
    factor = config["rerun_factor"]

    def values(key):
        return sorted({r.get(key, config[key]) for r in rows})

    out = [f"{len(rows)} random mixtures (d ∈ {values('d')}, K ∈ {values('num_components')}, modes "
           f"{values('mode')}; condition number log-uniform in [1, {config['condition_max']:g}], separation uniform "
           f"in [{config['separation_min']:g}, {config['separation_max']:g}], δ uniform in "
           f"[{config['delta_min']:g}, {config['delta_max']:g}]), each trained with infonce_population in float64 "
           f"for {config['steps']} steps of batch {config['batch_size']}; {len(inside)} have κ > "
           f"{config['min_kappa']:g}.", "",
           f"- Deficit 1 − capture over those: median {np.median(deficits):.2e}, 95th percentile "
           f"{np.quantile(deficits, 0.95):.2e}, largest {worst['deficit']:.2e} (d={worst.get('d', config['d'])}, "
           f"K={worst.get('num_components', config['num_components'])}, mode={worst.get('mode', config['mode'])}, "
           f"δ={worst['delta']:.3f}, κ={worst['kappa']:.3f}, condition number {worst['condition_number']:.1f}, "
           f"smallest canonical correlation ρ={worst['rho_min']:.3g}).",
           f"- During training the median ratio of the final deficit to the half-way one is "
           f"{np.median([r['deficit'] / max(r['deficit_half'], 1e-300) for r in inside]):.3g}."]
    shrank = [b["deficit"] < a["deficit"] for a, b in pairs]
    if pairs:
        out.append(f"- The {len(pairs)} largest, re-run {factor}× longer: "
                   + ", ".join(f"{a['deficit']:.1e} → {b['deficit']:.1e}" for a, b in pairs)
                   + f"; {sum(shrank)} of {len(pairs)} shrank.")
    if outside:
        out.append(f"- Outside the premise (κ ≤ {config['min_kappa']:g}, {len(outside)} mixtures, mode \"other\" "
                   f"with δ near or below 1/K): median deficit {np.median(outside):.2f}; there a shared linear "
                   "projector cannot use the weak or anti-correlated views.")
    after = max((b["deficit"] for _, b in pairs), default=worst["deficit"])
    if pairs and all(shrank) and after <= 1e-2:
        verdict = ("Within the sampled range the data support the conjecture: the deficits are small, and the "
                   "largest ones shrink with longer training, i.e. slow convergence (small κ·ρ) rather than a "
                   "different optimum.")
    elif pairs and all(shrank):
        verdict = (f"Mixed: every re-run deficit shrank (no sign of a different optimum), but the largest is still "
                   f"{after:.1e} after {factor}× longer training, so these runs cannot rule out a small non-zero "
                   "limit.")
    else:
        verdict = ("Counterexample candidates: " + ", ".join(
            f"seed {a['seed']} ({a['deficit']:.1e} → {b['deficit']:.1e})" for (a, b), ok in zip(pairs, shrank)
            if not ok) + " did not shrink with longer training." if pairs else "No re-runs were made.")
    out += ["", f"Conclusion: {verdict}", "",
            "Limits: evidence, not proof; finite training (cosine decay) with sampled positive pairs (analytic "
            "negatives only); capture counts singular values above 1e-3 of the largest; only the ranges above."]
    return "\n".join(out)
