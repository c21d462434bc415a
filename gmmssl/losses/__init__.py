"""Self-supervised losses on embeddings: pure, jittable, vmappable, differentiable in both
modes (reverse and forward: ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).

Every loss takes (B, r) embeddings and, like optax's losses, returns the scalar mean over
the batch by default, or the (B,) per-example values with ``reduction="none"``; a (B,)
``mask`` marks padded rows (False), which count neither as examples nor, for the in-batch
losses, as negatives. Shapes are checked with chex (AssertionError naming the
arguments), option values with ValueError.
"""
from gmmssl.losses._common import REDUCTIONS, normalize
from gmmssl.losses._infonce import SMALL_RANK, clip, infonce, infonce_population, low_rank_logsumexp, row_logsumexp
from gmmssl.losses._simsiam import covariance_penalty, simsiam, spectral_contrastive
from gmmssl.losses._zoo import (barlow_twins, barlow_twins_population, byol, dcl, negative_cosine, ntxent, siglip,
                                spectral_contrastive_population, vicreg, vicreg_population)

__all__ = ["REDUCTIONS", "SMALL_RANK", "barlow_twins", "barlow_twins_population", "byol", "clip", "covariance_penalty", "dcl", "infonce",
           "infonce_population", "low_rank_logsumexp", "negative_cosine", "normalize", "ntxent", "row_logsumexp",
           "siglip", "simsiam", "spectral_contrastive", "spectral_contrastive_population", "vicreg",
           "vicreg_population"]
