"""Self-supervised losses on embeddings: pure, jittable, vmappable, differentiable in both
modes (reverse and forward: ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).

Every loss takes (B, r) embeddings and, like optax's losses, returns the scalar mean over
the batch by default, or the (B,) per-example values with ``reduction="none"``. Shapes are
checked with chex (AssertionError naming the arguments), option values with ValueError.

Masks: a (B,) boolean ``mask`` (dtype bool; any other dtype, a float 0.5 say, is refused
with ValueError: pass ``weights > 0``) marks padded rows (False), which count neither as
examples nor, for the in-batch losses, as negatives, nor in batch statistics: the loss,
its per-example values on the kept rows and its gradients are those of the kept rows
sliced out. Masked rows are selected out (``jnp.where``) before any arithmetic and their
per-example values zeroed after it (the double ``where``), so whatever they hold, NaN or
±inf, reaches neither the value nor any gradient, in reverse or forward mode: their own
gradient is exactly 0 and their per-example value 0. (Arithmetic before the loss is the
caller's: a NaN in a padded input x still reaches the projector's gradient through
z = xA, as 0 · NaN; pad the inputs with finite values.)

A mask that keeps no row, or fewer than the loss needs (2 for the losses that compare
rows within the batch or take batch statistics, as for an unmasked batch), is refused
with ValueError when it is concrete. A traced mask (inside jit, vmap, grad) cannot be
checked: one that keeps no row gives NaN for the mean (0 on every row with
``reduction="none"``) and zero gradients; one that keeps a single row gives the formula's
value on one row (NaN for DCL, which has no negative left, and VICReg, whose unbiased
statistics divide by n − 1).
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
