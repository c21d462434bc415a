"""conjecture: does InfoNCE recover the exact Fisher subspace for noisy augmentations
(0 < δ < 1)? The paper proves it for δ = 1 and conjectures it for 0 < δ < 1 (its Open
Question 2).

Two views of many random mixtures, each with its own draw of the anisotropy (condition
number log-uniform in [1, condition_max]), the separation, the weights (Dirichlet in mode
"prior"; uniform in mode "other") and δ (uniform in [delta_min, delta_max], except a share
``small_kappa`` with κ uniform in (0, small_kappa_max]), for every d, K, AeD mode,
centering of the means and extra rank r − m (static axes):

* ``view=certified`` (default), *where is the optimum*: the exact objective
  (:mod:`gmmssl.exact`: every expectation computed, Gauss–Hermite quadrature) minimized by
  saddle-free Newton in float64 from ``starts`` random starts, over the span Σ⁻¹span{μ_j}
  where every minimizer lies (the sign-flip / Jensen argument of :mod:`gmmssl.exact`,
  tested numerically); each optimum certified (gradient, Hessian without the rotation
  modes, curvature across the span). Then the finite-batch picture: sampled in-batch
  InfoNCE at each B of ``finite_batch`` on ``finite_mixtures`` of the mixtures, compared
  with the certified optimum.
* ``view=sgd``, *how fast does SGD get there*: ``infonce_population`` (analytic negatives,
  sampled pairs) trained with Adam in float64 to the end of a cosine decay; the deficit
  at 1/4, 1/2 and the end; the ``candidates`` largest deficits re-run ``rerun_factor``
  times longer.

κ = δ (mode "prior") or δ − (1−δ)/(K−1) (mode "other") is the factor in C⁺ = κ·S_B.

Predictions, stated before running. Certified view: at least 95% of the optima are
certified and reached from every start; for κ > ``min_kappa`` at least 99% have deficit
1 − capture below 1e-8, for centered and for uncentered means; so do those with
0 < κ ≤ min_kappa (centered); sampled in-batch InfoNCE at each B ends within 2° (median)
of the certified optimum. SGD view: among the cells inside the premise the median deficit
is below 1e-3 and the 95th percentile below 1e-2; the median ratio of final to half-way
deficit is at most 0.5; re-running the largest deficits longer shrinks each of them
(median ratio below 0.5), and the largest left is below 1e-2.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gmmssl import exact, fisher, metrics, plots, results
from gmmssl._validate import check_choice, check_int, check_range
from gmmssl.augment import MODES
from gmmssl.evaluate import make_compare_cell
from gmmssl.experiment import Experiment, Run, part_rows
from gmmssl.gmm import random_gmm
from gmmssl.sweep import Sweep, estimate_cell_bytes
from gmmssl.train import TrainConfig, check_setup, train, validate_hparams

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


def _premise(rows, config):
    return [r for r in rows if r["kappa"] > config["min_kappa"]]


def followup_sgd(run: Run) -> list:
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


def claims_sgd(run: Run) -> list:
    config = run.config
    main = _premise(_ssl_rows(run.rows, "main"), config)
    longer = {_key(r): r for r in _ssl_rows(run.rows, "longer")}
    deficits = np.array([r["deficit"] for r in main])
    out = [results.claim(f"median deficit 1 − capture over {len(main)} mixtures with κ > {config['min_kappa']}",
                         np.median(deficits), "<=", 1e-3),
           results.claim("95th percentile of the deficit", np.quantile(deficits, 0.95), "<=", 1e-2),
           results.claim("median ratio of final to half-way deficit (the second half of training at least halves it)",
                         np.median([r["deficit"] / max(r["deficit_half"], 1e-300) for r in main]), "<=", 0.5)]
    worst = max(main, key=lambda r: r["deficit"])
    out.append(results.claim(
        f"largest deficit found (seed {worst['seed']}, d={worst.get('d', config['d'])}, "
        f"K={worst.get('num_components', config['num_components'])}, mode={worst.get('mode', config['mode'])}, "
        f"δ={worst['delta']:.3f}, cond={worst['condition_number']:.1f}), after {config['steps']} steps",
        worst["deficit"], "<=", 1e-2))
    pairs = [(r, longer[_key(r)]) for r in main if _key(r) in longer]
    if pairs:
        factor = config["rerun_factor"]
        out.append(results.claim(f"median ratio of the {len(pairs)} largest deficits after {factor}× longer "
                                 "training to before (longer training shrinks them)",
                                 np.median([b["deficit"] / max(a["deficit"], 1e-300) for a, b in pairs]), "<=", 0.5))
        out.append(results.claim(f"largest deficit left after {factor}× longer training",
                                 max(b["deficit"] for _, b in pairs), "<=", 1e-2))
    return out


def report_sgd(run: Run) -> str:
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


def figures_sgd(run: Run, out_dir) -> list:
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


def findings_sgd(run: Run) -> str:
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


# ------------------------------------------------------------------ the certified view


def _finite_batches(config) -> tuple:
    value = config["finite_batch"]
    parts = [p for p in str(value).replace(" ", "").split(",") if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"finite_batch must be comma-separated batch sizes such as 64,512, got {value!r}")
    return tuple(check_int("finite_batch", int(p), low=2) for p in parts)


def build_certified(config: dict) -> Sweep:
    """One cell per mixture: the exact objective's certified optimum (:func:`gmmssl.exact.certify`)."""
    validate(config)
    k, r = config["num_components"], config["num_components"] - 1 + config["extra_rank"]
    check_int("extra_rank", config["extra_rank"], low=0)
    check_int("starts", config["starts"], low=1)
    check_int("newton_steps", config["newton_steps"], low=1)
    check_range("small_kappa", config["small_kappa"], 0.0, 1.0)
    check_range("small_kappa_max", config["small_kappa_max"], 0.0, 1.0, low_open=True)
    _finite_batches(config)
    check_int("finite_mixtures", config["finite_mixtures"], low=0)
    check_int("finite_steps", config["finite_steps"], low=1)
    check_int("finite_d", config["finite_d"], low=2)
    check_choice("finite_mode", config["finite_mode"], ("all", *MODES))
    with jax.enable_x64(True):
        draw(config, 0)

    def prepare_fn(cell):
        gmm, draws = draw(config, cell["seed"])
        return {"gmm": gmm, "draws": draws, "fisher": fisher.fisher_subspace(gmm, num_directions=k - 1)}

    def train_fn(cell, data):
        return jnp.zeros(())

    def evaluate_fn(cell, data, trained):
        gmm, draws = data["gmm"], dict(data["draws"])
        out = exact.certify(jax.random.PRNGKey(cell["seed"]), gmm, draws["delta"], r, config["mode"],
                            config["temperature"], centered=config["centered"], starts=config["starts"],
                            iterations=config["newton_steps"])
        a = out["projector"]
        sv = out["sv"]
        angles = metrics.principal_angles(a, data["fisher"])
        row = {"deficit": 1.0 - metrics.fisher_capture(a, data["fisher"]),
               "max_angle_deg": jnp.degrees(angles[-1]), "sv_ratio": jnp.where(sv[0] > 1e-12, sv[min(k - 1, r) - 1] / jnp.maximum(sv[0], 1e-300), 0.0),
               "loss": out["loss"], "grad_norm": out["grad_norm"], "hessian_min_eig": out["hessian_min_eig"],
               "hessian_max_eig": out["hessian_max_eig"], "perp_min_eig": out["perp_min_eig"],
               "certified": out["certified"], "starts_agree": out["starts_agree"], "quad_error": out["quad_error"],
               "start_spread": jnp.max(out["start_losses"]) - jnp.min(out["start_losses"]), **draws}
        row["rho_min"] = fisher.canonical_correlations(gmm, draws["delta"], config["mode"])[k - 2]
        return {"metrics": {EXACT: row}, "projectors": {EXACT: a}}

    return Sweep(train_fn, evaluate_fn, {"seed": tuple(range(config["mixtures"]))}, 1 << 16, prepare_fn)


def build(config: dict) -> Sweep:
    check_choice("view", config["view"], VIEWS)
    if config["view"] == "sgd":
        return build_grid(config, range(check_int("mixtures", config["mixtures"], low=1)))
    return build_certified(config)


def _finite_grid(config: dict, seeds, batch_size: int, certified: dict) -> Sweep:
    """Sampled in-batch InfoNCE (dot similarity, the trainer's Adam and cosine decay) at one
    batch size on the mixtures ``seeds``; each scored against its certified optimum."""
    k, r = config["num_components"], config["num_components"] - 1 + config["extra_rank"]
    cfg = TrainConfig(r=r, batch_size=batch_size, steps=config["finite_steps"], loss="infonce", mode=config["mode"],
                      log_every=max(config["finite_steps"] // 10, 1))
    with jax.enable_x64(True):
        check_setup(draw(config, 0)[0], cfg)
    seeds = tuple(sorted(int(s) for s in seeds))
    targets = jnp.stack([jnp.asarray(certified[s]) for s in seeds])
    order = jnp.asarray(seeds)

    def prepare_fn(cell):
        gmm, draws = draw(config, cell["seed"])
        return {"gmm": gmm, "draws": draws, "fisher": fisher.fisher_subspace(gmm, num_directions=k - 1),
                "target": targets[jnp.searchsorted(order, cell["seed"])]}

    def train_fn(cell, data):
        hp = {"delta": data["draws"]["delta"], "learning_rate": config["learning_rate"],
              "temperature": config["temperature"]}
        return train(jax.random.PRNGKey(cell["seed"] + 7919), data["gmm"], hp, cfg, data["fisher"]).params["A"]

    def evaluate_fn(cell, data, a):
        angles = metrics.principal_angles(a, data["target"])
        row = {"deficit": 1.0 - metrics.fisher_capture(a, data["fisher"]),
               "angle_to_certified_deg": jnp.degrees(angles[-1]), **data["draws"]}
        return {"metrics": {"infonce": row}, "projectors": {"infonce": a}}

    return Sweep(train_fn, evaluate_fn, {"seed": seeds}, estimate_cell_bytes(config["d"], r, batch_size, itemsize=8), prepare_fn)


def followup_certified(run: Run) -> list:
    """The finite-batch picture: the first ``finite_mixtures`` mixtures inside the premise of
    each static configuration with centered means, r = m, d = ``finite_d`` and mode
    ``finite_mode`` ("all": both), trained with sampled in-batch InfoNCE at each batch size."""
    config = run.config
    plans = []
    for part in run.parts:
        c = part.config
        if not (c["centered"] and c["extra_rank"] == 0 and c["d"] == config["finite_d"]
                and config["finite_mode"] in ("all", c["mode"])):
            continue
        rows = [r for r in part_rows(run, part) if r["method"] == EXACT and r["kappa"] > config["min_kappa"]]
        seeds = [int(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"])][: config["finite_mixtures"]]
        if not seeds:
            continue
        projectors = np.asarray(part.outputs["projectors"][EXACT])
        where = {int(s): i for i, s in enumerate(np.asarray(part.grid["seed"]))}
        certified = {s: projectors[where[s]] for s in seeds}
        for b in _finite_batches(config):
            cfg = {**part.config, "batch_size": b}
            plans.append(({**part.static, "phase": "finite", "batch_size": b}, cfg,
                          _finite_grid(part.config, seeds, b, certified)))
    return plans


def _exact_rows(rows):
    return [r for r in rows if r["method"] == EXACT]


def _centered(r, config):
    return bool(r.get("centered", config["centered"]))


def collapse_kappa(rows, config) -> float:
    """The largest κ > 0 at which a certified optimum drops a Fisher direction (singular
    value ratio below 1e-6); NaN if none does."""
    dropped = [r["kappa"] for r in rows if r["kappa"] > 0 and r["sv_ratio"] < 1e-6]
    return max(dropped) if dropped else float("nan")


def claims_certified(run: Run) -> list:
    config = run.config
    rows = _exact_rows(run.rows)
    inside = [r for r in rows if r["kappa"] > config["min_kappa"]]
    n = len(rows)
    out = [results.claim(f"share of the {n} mixtures whose optimum is certified (relative gradient ≤ "
                         f"{exact.GRAD_TOL:g}, no curvature below −{exact.HESS_TOL:g}·λ_max after removing the "
                         "rotations, none across the span)", np.mean([r["certified"] for r in rows]), ">=", 0.95),
           results.claim("share whose starts all reach the same loss (within 1e-9 relative)",
                         np.mean([r["starts_agree"] for r in rows]), ">=", 0.95)]
    for centered in (True, False):
        sel = [r for r in inside if _centered(r, config) == centered and r["certified"]]
        if sel:
            tag = "centered" if centered else "uncentered"
            out.append(results.claim(
                f"{tag} means, κ > {config['min_kappa']:g}: share of the {len(sel)} certified optima with deficit "
                "1 − capture below 1e-8 (the conjecture: the optimum contains S_F)",
                np.mean([r["deficit"] < 1e-8 for r in sel]), ">=", 0.99))
    small = [r for r in rows if 0 < r["kappa"] <= config["min_kappa"] and _centered(r, config) and r["certified"]]
    if small:
        out.append(results.claim(f"centered means, 0 < κ ≤ {config['min_kappa']:g}: share of the {len(small)} "
                                 "certified optima with deficit below 1e-8 (does a weak signal still give S_F?)",
                                 np.mean([r["deficit"] < 1e-8 for r in small]), ">=", 0.99))
    finite = [r for r in run.rows if r.get("phase") == "finite"]
    for b in sorted({r["batch_size"] for r in finite}):
        sel = [r for r in finite if r["batch_size"] == b and _centered(r, config)]
        if sel:
            out.append(results.claim(
                f"sampled in-batch InfoNCE at B = {b} after {config['finite_steps']} Adam steps, centered means: "
                f"median over {len(sel)} mixtures of the largest angle to the certified optimum",
                np.median([r["angle_to_certified_deg"] for r in sel]), "<=", 2.0))
    return out


def report_certified(run: Run) -> str:
    config = run.config
    rows = _exact_rows(run.rows)
    lines = ["certified optima of the exact InfoNCE objective, by static configuration:",
             f"{'configuration':58s} {'n':>4s} {'cert':>5s} {'agree':>5s} {'max grad':>9s} {'min eig':>9s} "
             f"{'deficit<1e-8':>12s} {'max deficit':>11s} {'quad err':>9s}"]
    for part in run.parts:
        if part.static.get("phase") == "finite":
            continue
        sel = _exact_rows(part_rows(run, part))
        tag = " ".join(f"{k}={v}" for k, v in part.static.items()) or "all"
        lines.append(f"{tag:58s} {len(sel):4d} {sum(r['certified'] for r in sel):5d} "
                     f"{sum(r['starts_agree'] for r in sel):5d} {max(r['grad_norm'] for r in sel):9.1e} "
                     f"{min(r['hessian_min_eig'] for r in sel):9.2e} {sum(r['deficit'] < 1e-8 for r in sel):12d} "
                     f"{max(r['deficit'] for r in sel):11.2e} {max(r['quad_error'] for r in sel):9.1e}")
    kappa = collapse_kappa([r for r in rows if _centered(r, config)], config)
    lines += ["", f"largest κ > 0 with a dropped Fisher direction (centered means): "
              + ("none" if math.isnan(kappa) else f"{kappa:.4g}")]
    finite = [r for r in run.rows if r.get("phase") == "finite"]
    if finite:
        lines += ["", "finite batch (sampled in-batch InfoNCE) against the certified optimum:",
                  f"{'B':>6s} {'n':>4s} {'median angle°':>14s} {'max angle°':>11s} {'median deficit':>15s}"]
        for b in sorted({r["batch_size"] for r in finite}):
            sel = [r for r in finite if r["batch_size"] == b]
            lines.append(f"{b:6d} {len(sel):4d} {np.median([r['angle_to_certified_deg'] for r in sel]):14.3f} "
                         f"{max(r['angle_to_certified_deg'] for r in sel):11.3f} "
                         f"{np.median([r['deficit'] for r in sel]):15.2e}")
    return "\n".join(lines)


def figures_certified(run: Run, out_dir) -> list:
    config = run.config
    rows = _exact_rows(run.rows)
    fig, axes = plots.plt.subplots(1, 3, figsize=(15, 4.3))
    floor = 1e-16
    for centered in (True, False):
        sel = [r for r in rows if _centered(r, config) == centered]
        if not sel:
            continue
        tag = "centered" if centered else "uncentered"
        axes[0].scatter([r["kappa"] for r in sel], np.maximum([r["deficit"] for r in sel], floor), s=8, alpha=0.6,
                        label=tag)
        axes[1].scatter([r["kappa"] for r in sel], np.maximum([r["sv_ratio"] for r in sel], floor), s=8,
                        alpha=0.6, label=tag)
    for ax, label in ((axes[0], "deficit 1 − capture at the certified optimum"),
                      (axes[1], "smallest / largest singular value of the optimum")):
        ax.axvline(config["min_kappa"], color="grey", ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("κ (C⁺ = κ S_B)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    finite = [r for r in run.rows if r.get("phase") == "finite"]
    bs = sorted({r["batch_size"] for r in finite})
    if bs:
        axes[2].boxplot([[r["angle_to_certified_deg"] for r in finite if r["batch_size"] == b] for b in bs])
        axes[2].set_xticks(range(1, len(bs) + 1), [str(b) for b in bs])
    axes[2].set_xlabel("batch size B (sampled in-batch InfoNCE)")
    axes[2].set_ylabel("largest angle to the certified optimum (°)")
    fig.suptitle(f"conjecture: certified optima of the exact InfoNCE objective on {len(rows)} mixtures")
    return [plots.save(fig, out_dir / "conjecture-certified.png")]


def findings_certified(run: Run) -> str:
    config = run.config
    rows = _exact_rows(run.rows)

    def values(key):
        return sorted({r.get(key, config[key]) for r in rows})

    cert = [r for r in rows if r["certified"]]
    out = [f"{len(rows)} random mixtures (d ∈ {values('d')}, K ∈ {values('num_components')}, modes "
           f"{values('mode')}, centered ∈ {values('centered')}, r = K − 1 + {values('extra_rank')}; δ uniform in "
           f"[{config['delta_min']:g}, {config['delta_max']:g}] except a share {config['small_kappa']:g} with κ uniform "
           f"in (0, {config['small_kappa_max']:g}]), each minimized exactly (Gauss–Hermite quadrature, saddle-free "
           f"Newton in float64 from {config['starts']} random starts): {len(cert)} certified, "
           f"{sum(r['starts_agree'] for r in rows)} with every start at the same loss; largest relative gradient "
           f"{max(r['grad_norm'] for r in rows):.1e}, largest quadrature-error estimate "
           f"{max(r['quad_error'] for r in rows):.1e}.", ""]
    for centered in (True, False):
        sel = [r for r in cert if _centered(r, config) == centered and r["kappa"] > 0]
        if not sel:
            continue
        tag = "Centered" if centered else "Uncentered"
        d = np.array([r["deficit"] for r in sel])
        out.append(f"- {tag} means, κ > 0 ({len(sel)} certified optima): deficit below 1e-8 in "
                   f"{np.mean(d < 1e-8):.1%}; median {np.median(d):.2e}, largest {d.max():.2e}; largest angle to "
                   f"S_F: median {np.median([r['max_angle_deg'] for r in sel]):.3g}°.")
    kappa = collapse_kappa([r for r in cert if _centered(r, config)], config)
    out.append("- Dropped Fisher directions (centered, certified, singular value ratio below 1e-6): "
               + ("none at any κ > 0 sampled (smallest κ "
                  f"{min(r['kappa'] for r in cert if r['kappa'] > 0):.2g})." if math.isnan(kappa)
                  else f"up to κ = {kappa:.3g}."))
    neg = [r for r in cert if r["kappa"] <= 0]
    if neg:
        out.append(f"- κ ≤ 0 ({len(neg)} mixtures): median optimum loss {np.median([r['loss'] for r in neg]):.2e} "
                   f"and singular values ratio {np.median([r['sv_ratio'] for r in neg]):.2e} (the optimum "
                   "collapses to A = 0 when the views carry no positive correlation).")
    live = [r for r in cert if r["kappa"] > 0 and r["sv_ratio"] > 0]
    if live:
        low = min(r["perp_min_eig"] for r in live)
        out.append(f"- Curvature across the span at the {len(live)} certified optima with κ > 0 (the Jensen "
                   f"argument's local form): smallest eigenvalue of C {low:.3g}"
                   + (" (positive: leaving Σ⁻¹span{μ_j} raises the loss to second order)." if low > 0 else
                      " (not positive: flat or rising only at higher order there)."))
    finite = [r for r in run.rows if r.get("phase") == "finite"]
    for b in sorted({r["batch_size"] for r in finite}):
        sel = [r for r in finite if r["batch_size"] == b]
        out.append(f"- Sampled in-batch InfoNCE at B = {b} ({config['finite_steps']} steps, {len(sel)} mixtures): "
                   f"largest angle to the certified optimum median {np.median([r['angle_to_certified_deg'] for r in sel]):.3g}°, "
                   f"max {max(r['angle_to_certified_deg'] for r in sel):.3g}°.")
    return "\n".join(out)


ARGUMENT = """Why the optimum stays in Σ⁻¹span{μ_j} (a proof sketch, each step checked numerically in
tests/test_exact.py). In whitened coordinates B = LᵀA (Σ = LLᵀ) split B = B_W + B_⊥ along
W = span{L⁻¹μ_j} and its complement. The embedded means μ_jA and the positive term depend on B_W only;
B_⊥ adds to every embedding an independent Gaussian noise e ~ N(0, B_⊥ᵀB_⊥), whose sign flip leaves the
joint law of anchors, positives and negatives unchanged (so the loss is even in B_⊥: checked to 1e-10),
and adds B_⊥ᵀB_⊥ to the negatives' covariance. The anchor's term LSE_j(z·m_j/τ + log π_j) + ½zSzᵀ/τ² is
convex in z and increasing in S, so by Jensen's inequality the loss with B_⊥ ≠ 0 exceeds the loss with
B_⊥ = 0 by at least ½tr(S·B_⊥ᵀB_⊥)/τ² > 0; hence every minimizer of the exact objective has col(A) ⊆ Σ⁻¹span{μ_j}. For the
in-batch objective at any batch size the same conditional Jensen step, row by row, gives the weak
inequality (B_⊥ never lowers the expected loss; measured strictly higher at B = 64 with common random
numbers). For centered means that span is S_F itself, so the exact optimum can miss
S_F only by dropping a direction inside it (which the singular value ratio above measures), and with
uncentered means it can also tilt toward Σ⁻¹μ̄ (the uncentered deficits above)."""


def _by_view(certified, sgd):
    return lambda run, *a: (sgd if run.config["view"] == "sgd" else certified)(run, *a)


def followup(run: Run) -> list:
    return followup_sgd(run) if run.config["view"] == "sgd" else followup_certified(run)


claims = _by_view(claims_certified, claims_sgd)
report = _by_view(report_certified, report_sgd)
figures = _by_view(figures_certified, figures_sgd)
findings = _by_view(findings_certified, findings_sgd)

EXPERIMENT = Experiment(
    name="conjecture", description="The noisy-augmentation conjecture (the paper's open question 2) on random "
    "mixtures: where the exact InfoNCE objective's optimum is (certified optima, Gauss–Hermite quadrature, Newton in "
    "float64), beside sampled in-batch InfoNCE; `--set view=sgd` for how fast Adam gets there.", defaults=DEFAULTS,
    build=build, claims=claims, figures=figures, report=report, static_keys=STATIC_KEYS, presets=PRESETS,
    x64=True, followup=followup, findings=findings, notes=ARGUMENT)
