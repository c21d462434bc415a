"""Self-supervised losses on embeddings: pure, jittable, vmappable, differentiable.

Every loss takes (B, r) embeddings and returns the scalar mean over the batch; shapes
are checked with chex (AssertionError naming the arguments), option values with
ValueError.
"""
from gmmssl.losses._common import normalize
from gmmssl.losses._infonce import clip, infonce, infonce_population
from gmmssl.losses._simsiam import covariance_penalty, simsiam, spectral_contrastive

__all__ = ["clip", "covariance_penalty", "infonce", "infonce_population", "normalize", "simsiam",
           "spectral_contrastive"]
