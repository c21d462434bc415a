"""Plotting helpers shared by the experiments (matplotlib, Agg backend, no display needed).

``plots.plt`` is ``matplotlib.pyplot``, imported (and the Agg backend selected) on first
use, so that commands that draw nothing (``gmmssl list``, a refused run) do not pay for it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["metric_against", "plt", "save", "scatter_embedding"]


def _pyplot():
    """matplotlib.pyplot; the first call imports it and selects Agg (a backend chosen
    afterwards is kept, as when this module selected Agg at import)."""
    if "plt" in globals():
        return globals()["plt"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    globals()["plt"] = matplotlib.pyplot  # later lookups of plots.plt skip __getattr__
    return matplotlib.pyplot


def __getattr__(name):
    if name == "plt":
        return _pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


METHOD_STYLE = {
    "lda": dict(color="black", marker="s", linestyle="--", label="LDA (supervised)"),
    "pca": dict(color="tab:red", marker="v", linestyle=":", label="PCA"),
    "oracle": dict(color="tab:green", marker="^", linestyle="-.", label="spectral oracle (CCA)"),
    "init": dict(color="tab:gray", marker="x", linestyle=":", label="random init (chance)"),
}


_LEARNED_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                   "gold", "navy", "teal", "crimson", "lime")
_MARKERS = ("o", "D", "P", "X", "*", "h")


def _style(method):
    """The baselines' fixed styles; learned methods a color and marker of their own
    (the same for a name in every figure)."""
    if method in METHOD_STYLE:
        return METHOD_STYLE[method]
    if method.endswith("_population") and method != "infonce_population":  # its sampled loss's color, dashed
        base = method.removesuffix("_population").replace("spectral_contrastive", "spectral")
        return {**_style(base), "linestyle": "--", "marker": "x", "label": method}
    known = ("infonce", "ntxent", "dcl", "siglip", "spectral", "barlow_twins", "vicreg", "negative_cosine", "byol",
             "simsiam", "infonce_population", "clip")
    code = known.index(method) if method in known else sum(method.encode())  # stable across runs (hash() is not)
    return dict(color=_LEARNED_COLORS[code % len(_LEARNED_COLORS)], marker=_MARKERS[code % len(_MARKERS)],
                linestyle="-", label=method)


def metric_against(ax, summary, axis: str, metric: str, methods, *, ylabel: str | None = None):
    """Mean ± std of ``metric`` against ``axis`` for each method, from results.summarize rows."""
    for method in methods:
        pts = sorted((s[axis], s[metric + "_mean"], s[metric + "_std"]) for s in summary
                     if s["method"] == method and metric + "_mean" in s)
        if not pts:
            continue
        x, m, sd = map(np.array, zip(*pts))
        ax.errorbar(x, m, yerr=sd, capsize=3, **_style(method))
    ax.set_xlabel(axis)
    ax.set_ylabel(ylabel or metric)
    ax.grid(alpha=0.3)


def scatter_embedding(ax, z, labels, title: str):
    """2-D scatter of an embedding z (n, 1 or 2) coloured by component."""
    z = np.asarray(z)
    y = z[:, 1] if z.shape[1] > 1 else np.random.default_rng(0).normal(0, 0.05, len(z))
    ax.scatter(z[:, 0], y, c=np.asarray(labels), cmap="coolwarm", s=4, alpha=0.6)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
