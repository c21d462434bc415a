"""The pancakes training written as a plain PyTorch loop with torch.optim.Adam (the loop a
user would otherwise write): one model at a time, fresh AeD(δ) pairs every step, InfoNCE
as cross-entropy of the B×B logits. Optional: only when torch is installed (the ``bench``
extra); never a runtime dependency of gmmssl."""
from __future__ import annotations

import time


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run(models: int = 4, d: int = 20, r: int = 2, batch: int = 512, steps: int = 100, delta: float = 0.5,
        repeats: int = 3) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)
    means = torch.zeros(2, d)
    means[0, 0], means[1, 0] = 0.7, -0.7
    scale = torch.ones(d)
    scale[0] = 0.1

    def train_one(seed):
        g = torch.Generator().manual_seed(seed)
        a = torch.nn.Parameter(torch.randn(d, r, generator=g) / d**0.5)
        opt = torch.optim.Adam([a], lr=0.05)
        labels = torch.arange(batch)
        for _ in range(steps):
            c = torch.randint(0, 2, (batch,), generator=g)
            other = torch.randint(0, 2, (batch,), generator=g)
            cp = torch.where(torch.rand(batch, generator=g) < delta, c, other)
            x = means[c] + torch.randn(batch, d, generator=g) * scale
            xp = means[cp] + torch.randn(batch, d, generator=g) * scale
            logits = (x @ a) @ (xp @ a).T
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return a.detach()

    train_one(0)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for m in range(models):
            train_one(m)
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {"config": "pancakes", "method": "torch_loop", "G": models, "median_s": med,
            "model_steps_per_s": models * steps / med, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
