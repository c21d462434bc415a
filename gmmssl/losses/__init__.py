"""Self-supervised losses on embeddings: pure, jittable, vmappable, differentiable.

Every loss takes (B, r) embeddings and returns the scalar mean over the batch.
"""
from gmmssl.losses._common import normalize
from gmmssl.losses._infonce import infonce

__all__ = ["infonce", "normalize"]
