"""gmmssl: self-supervised learning on Gaussian mixtures, in JAX.

Modules, in the order data flows: :mod:`gmmssl.gmm` (mixtures) and :mod:`gmmssl.data`
(labelled data sets), :mod:`gmmssl.augment` (AeD(δ) pairs), :mod:`gmmssl.losses`,
:mod:`gmmssl.train`, :mod:`gmmssl.fisher` (subspaces and baselines),
:mod:`gmmssl.metrics`, :mod:`gmmssl.evaluate` (one grid cell of a comparison),
:mod:`gmmssl.sweep` (grids), :mod:`gmmssl.results` (tidy tables, verdicts),
:mod:`gmmssl.plots`, :mod:`gmmssl.experiment` (the runner), :mod:`gmmssl.report`,
:mod:`gmmssl.cli`.
"""
__version__ = "0.1.0"
