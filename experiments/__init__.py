"""The experiment registry: ``gmmssl list`` shows these, ``gmmssl run NAME`` runs one."""
from gmmssl.experiments import (clip, conjecture, delta, dimension, heteroscedastic, nonlinear, pancakes, rank, real,
                                simsiam_xi, variance, zoo)

REGISTRY = {e.name: e for e in (pancakes.EXPERIMENT, delta.EXPERIMENT, dimension.EXPERIMENT, variance.EXPERIMENT,
                                 rank.EXPERIMENT, simsiam_xi.EXPERIMENT, clip.EXPERIMENT, real.EXPERIMENT,
                                 conjecture.EXPERIMENT, nonlinear.EXPERIMENT,
                                 heteroscedastic.EXPERIMENT, zoo.EXPERIMENT)}


def get(name: str):
    """The experiment called ``name``; ValueError listing the known names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(REGISTRY)}")
    return REGISTRY[name]
