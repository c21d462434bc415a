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
  tested numerically and re-checked at each optimum); each optimum checked for
  second-order stationarity (gradient, Hessian without the rotation modes: a local
  check, not a proof of a global minimum). Then the finite-batch picture: sampled in-batch
  InfoNCE at each B of ``finite_batch`` on ``finite_mixtures`` of the mixtures, compared
  with the exact optimum.
* ``view=sgd``, *how fast does SGD get there*: ``infonce_population`` (analytic negatives,
  sampled pairs) trained with Adam in float64 to the end of a cosine decay; the deficit
  at 1/4, 1/2 and the end; the ``candidates`` largest deficits re-run ``rerun_factor``
  times longer.

κ = δ (mode "prior") or δ − (1−δ)/(K−1) (mode "other") is the factor in C⁺ = κ·S_B.

Predictions. Certified view (split by centering and r − m since issue 28;
:mod:`gmmssl.experiments.conjecture_certified` states them): at least 95% of the optima
second-order stationary and reached from every start; the span argument's premise and
inequality hold at 99%; for κ > ``min_kappa``, centered means drop no Fisher direction
(99%), uncentered means at r = m tilt off S_F (95% with deficit above 1e-8, the
first-order argument) and at r ≥ K span Σ⁻¹span{μ_k} (99%); sampled in-batch InfoNCE at
each B ends within 2° (median) of the exact optimum. SGD view: among the cells inside the
premise the median deficit is below 1e-3 and the 95th percentile below 1e-2; the median
ratio of final to half-way deficit is at most 0.5; re-running the largest deficits longer
shrinks each of them (median ratio below 0.5), and the largest left is below 1e-2.
"""
from __future__ import annotations
from __future__ import annotations

from gmmssl._validate import check_choice, check_int
from gmmssl.experiment import Experiment, Run
from gmmssl.experiments import conjecture_certified as certified
from gmmssl.experiments import conjecture_sgd as sgd
from gmmssl.experiments._conjecture import DEFAULTS, PRESETS, STATIC_KEYS, VIEWS
from gmmssl.sweep import Sweep


def build(config: dict) -> Sweep:
    check_choice("view", config["view"], VIEWS)
    if config["view"] == "sgd":
        return sgd.build_grid(config, range(check_int("mixtures", config["mixtures"], low=1)))
    return certified.build(config)


def _view(run: Run):
    return sgd if run.config["view"] == "sgd" else certified


def followup(run: Run) -> list:
    return _view(run).followup(run)


def claims(run: Run) -> list:
    return _view(run).claims(run)


def report(run: Run) -> str:
    return _view(run).report(run)


def figures(run: Run, out_dir) -> list:
    return _view(run).figures(run, out_dir)


def findings(run: Run) -> str:
    return _view(run).findings(run)


EXPERIMENT = Experiment(
    name="conjecture", description="The noisy-augmentation conjecture (the paper's open question 2) on random "
    "mixtures: where the exact InfoNCE objective's optimum is (second-order stationary, all starts agreeing; "
    "Gauss–Hermite quadrature, Newton in float64), by centering of the means and rank r, beside sampled in-batch "
    "InfoNCE; `--set view=sgd` for how fast Adam gets there.", defaults=DEFAULTS,
    build=build, claims=claims, figures=figures, report=report, static_keys=STATIC_KEYS, presets=PRESETS,
    x64=True, followup=followup, findings=findings, notes=certified.ARGUMENT)
