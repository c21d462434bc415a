"""gmmssl: self-supervised learning on Gaussian mixtures, in JAX.

Modules, in the order data flows: :mod:`gmmssl.gmm` (mixtures) and :mod:`gmmssl.data`
(labelled data sets, your own pair sources), :mod:`gmmssl.augment` (AeD(δ) pairs),
:mod:`gmmssl.losses`, :mod:`gmmssl.train` (the trainer and its extension points:
:class:`gmmssl.train.Objective`, optimizers, schedules), :mod:`gmmssl.fisher` (subspaces
and baselines), :mod:`gmmssl.metrics`, :mod:`gmmssl.exact` (the exact population InfoNCE
objective and certified optima), :mod:`gmmssl.analysis` (projectors against the Fisher
subspace and the exact optimum), :mod:`gmmssl.evaluate` (one grid cell of a
comparison), :mod:`gmmssl.sweep` (grids: :func:`gmmssl.sweep.map_grid` for a sweep from
a script; :mod:`gmmssl.distributed` across processes, :mod:`gmmssl.backend` for what
differs between the CPU and accelerators), :mod:`gmmssl.results` (tidy tables, verdicts), :mod:`gmmssl.plots`,
:mod:`gmmssl.experiment` (the runner), :mod:`gmmssl.report`, :mod:`gmmssl.cli`; the
paper's experiments in :mod:`gmmssl.experiments`, the benchmarks in
:mod:`gmmssl.benchmarks`.

Every module is imported on first use (``import gmmssl; gmmssl.losses.infonce`` works, and so
does ``from gmmssl import losses``): ``import gmmssl`` itself imports nothing heavy, so the
command line starts, and handles Ctrl-C, before JAX is loaded.
"""
import importlib

__version__ = "0.1.0"

_LIBRARY = ("analysis", "augment", "backend", "data", "distributed", "evaluate", "exact", "fisher", "gmm", "losses", "metrics",
            "projectors", "results", "sweep", "train")
_LAZY = ("benchmarks", "cli", "experiment", "experiments", "plots", "report")
__all__ = ["__version__", *_LIBRARY, *_LAZY]


def __getattr__(name):
    if name in _LIBRARY or name in _LAZY:
        return importlib.import_module(f"gmmssl.{name}")
    raise AttributeError(f"module 'gmmssl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
