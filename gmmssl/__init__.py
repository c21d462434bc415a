"""gmmssl: self-supervised learning on Gaussian mixtures, in JAX.

Modules, in the order data flows: :mod:`gmmssl.gmm` (mixtures), :mod:`gmmssl.augment`
(AeD(δ) pairs), :mod:`gmmssl.losses`, :mod:`gmmssl.train`, :mod:`gmmssl.fisher`
(subspaces and baselines), :mod:`gmmssl.metrics`, :mod:`gmmssl.sweep` (grids),
:mod:`gmmssl.results` (tidy tables and figures), :mod:`gmmssl.cli`.
"""
__version__ = "0.1.0"
