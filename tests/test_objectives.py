"""Training with every loss through the one scan-based trainer (issue 3)."""
import chex
import jax
import numpy as np
import pytest

from gmmssl.fisher import canonical_correlations, fisher_subspace, lda
from gmmssl.gmm import multimodal_gmm, parallel_pancakes, random_gmm, sample_multimodal
from gmmssl.metrics import fisher_capture, kmeans_ari
from gmmssl.train import OBJECTIVES, TrainConfig, init_params, make_hparams, train

jtrain = jax.jit(train, static_argnums=3)


@pytest.mark.parametrize("loss", ["infonce", "infonce_population", "simsiam", "spectral"])
def test_every_single_view_loss_trains_and_compiles_once(loss):
    g = parallel_pancakes(8, 2)
    f = fisher_subspace(g)
    cfg = TrainConfig(r=2, batch_size=128, steps=300, log_every=100, loss=loss,
                      predictor=(loss == "simsiam"))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key, delta, lr):
        return train(key, g, {"delta": delta, "learning_rate": lr, "xi": 0.7, "temperature": 1.0}, cfg, f)

    chex.clear_trace_counter()
    res = run(jax.random.PRNGKey(0), 1.0, 0.05)
    run(jax.random.PRNGKey(1), 0.5, 0.02)  # new values, no new trace
    assert np.all(np.isfinite(np.asarray(res.history["loss"])))
    assert float(res.history["fisher_capture"][-1]) > 0.95, (loss, res.history["fisher_capture"])


def test_simsiam_predictor_is_a_trained_parameter_starting_near_identity():
    g = parallel_pancakes(6, 2)
    cfg = TrainConfig(r=2, batch_size=64, steps=100, log_every=50, loss="simsiam", predictor=True)
    p0 = init_params(jax.random.PRNGKey(0), g, cfg)["P"]
    assert np.abs(np.asarray(p0) - np.eye(2)).max() < 0.05
    res = jtrain(jax.random.PRNGKey(0), g, make_hparams(xi=0.7), cfg)
    assert np.abs(np.asarray(res.params["P"]) - np.asarray(p0)).max() > 1e-3


@pytest.mark.slow
@pytest.mark.optimized  # its training runs for seconds: faster compiled with optimizations on
@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_surviving_norms_follow_the_prediction(stop_gradient):
    """No predictor, l2: the squared norms of AᵀΣ_T A against the canonical correlations ρ.

    Plain objective (stop_gradient=False): 1 − (1−ρ)/ξ, the SPEC's formula. SimSiam's
    stop-gradient halves the alignment gradient: 1 − (1−ρ)/(2ξ). Clipped at 0 (collapse).
    """
    g = random_gmm(jax.random.PRNGKey(3), 6, 4, separation=1.5, condition_number=20.0)
    delta = 0.5
    rho = np.asarray(canonical_correlations(g, delta))[:3]
    cfg = TrainConfig(r=3, batch_size=512, steps=1000, log_every=250, loss="simsiam",
                      stop_gradient=stop_gradient)
    factor = 2.0 if stop_gradient else 1.0
    xis = (0.4, 0.7, 1.0)  # one vmapped program over ξ (a traced hyper-parameter)
    # the mixture is an argument, not a closed-over constant: its values (computed eagerly,
    # rounded as this process's earlier programs were compiled) would change the program and
    # miss the compilation cache (tests/test_exact.py explains)
    run = jax.jit(jax.vmap(lambda g, xi: train(jax.random.PRNGKey(0), g, make_hparams(delta=delta, xi=xi,
                                                                                        learning_rate=0.03), cfg),
                           in_axes=(None, 0)))
    trained = run(g, np.asarray(xis, np.float32))
    for i, xi in enumerate(xis):
        a = np.asarray(trained.params["A"][i], np.float64)
        norms = np.sort(np.linalg.eigvalsh(a.T @ np.asarray(g.total_cov, np.float64) @ a))[::-1]
        predicted = np.maximum(0.0, 1.0 - (1.0 - rho) / (factor * xi))
        np.testing.assert_allclose(norms, predicted, atol=0.05, err_msg=f"xi={xi}")


@pytest.mark.slow
@pytest.mark.optimized  # its training runs for seconds: faster compiled with optimizations on
def test_clip_learns_the_shared_fisher_subspace_and_filters_private_structure():
    mm = multimodal_gmm(jax.random.PRNGKey(0), dims=(6, 6), num_components=3, num_private=(2, 2),
                        separation=2.0, private_separation=3.0)
    cfg = TrainConfig(r=2, batch_size=256, steps=600, log_every=100, loss="clip")
    res = jtrain(jax.random.PRNGKey(1), mm, make_hparams(delta=1.0), cfg)
    # unimodal InfoNCE on modality 1, whose augmentations keep both components, learns the private part
    uni = jtrain(jax.random.PRNGKey(1), mm.modality(0), make_hparams(delta=1.0), TrainConfig(r=3, batch_size=256, steps=600, log_every=100))

    shared = [fisher_subspace(mm.shared_view(m)) for m in (0, 1)]
    private = fisher_subspace(mm.private_view(0))

    @jax.jit  # every score in one program; the mixture and bases as arguments (see test_simsiam_... above)
    def scores(mm, shared, private, a1, a2, a_uni):
        ev = sample_multimodal(jax.random.PRNGKey(2), mm, 2000)
        km = jax.random.PRNGKey(3)
        out = {}
        for m, a, x, j in ((0, a1, ev.x1, ev.j1), (1, a2, ev.x2, ev.j2)):
            out[f"view{m}"] = {"capture": fisher_capture(a, shared[m]),
                      "ari_lda": kmeans_ari(km, x @ lda(x, ev.c1, 3), ev.c1, 3),
                      "ari": kmeans_ari(km, x @ a, ev.c1, 3), "ari_private": kmeans_ari(km, x @ a, j, 2)}
        out["uni"] = {"capture": fisher_capture(a_uni, private),
                      "ari_private": kmeans_ari(km, ev.x1 @ a_uni, ev.j1, 2)}
        return out

    out = jax.tree_util.tree_map(float, scores(mm, shared, private, res.params["A"], res.params["A2"], uni.params["A"]))
    for view in (out["view0"], out["view1"]):
        assert view["capture"] >= 0.98
        assert view["ari"] >= view["ari_lda"] - 0.02
        assert view["ari_private"] <= 0.05
    assert out["uni"]["capture"] >= 0.98
    assert out["uni"]["ari_private"] >= 0.9


def test_losses_refuse_the_wrong_kind_of_mixture():
    mm = multimodal_gmm(jax.random.PRNGKey(0), dims=(4, 5))
    with pytest.raises(ValueError, match="loss 'clip' trains on a MultiModalGMM"):
        train(jax.random.PRNGKey(0), parallel_pancakes(4, 2), make_hparams(), TrainConfig(loss="clip"))
    with pytest.raises(ValueError, match="loss 'infonce' trains on a GMM, a Dataset or a PairSource"):
        train(jax.random.PRNGKey(0), mm, make_hparams(), TrainConfig())
    with pytest.raises(ValueError, match=r"r must be in \[1, 4\]"):
        train(jax.random.PRNGKey(0), mm, make_hparams(), TrainConfig(loss="clip", r=5))


def test_every_registered_objective_is_tested():
    from gmmssl.train import ZOO

    population = {"spectral_population", "barlow_twins_population", "vicreg_population"}  # test_zoo.py
    assert set(OBJECTIVES) == {"infonce", "infonce_population", "simsiam", "spectral", "clip", *ZOO, *population}
