"""Beyond the paper: heteroscedastic mixtures, Bayes and probe readouts, the central
subspace, MLP projectors, and the experiment framework's presets / float64 / follow-up."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmssl.experiments as experiments
from gmmssl import fisher, metrics, projectors
from gmmssl.augment import sample_pairs
from gmmssl.experiment import resolve_config
from gmmssl.gmm import GMM, HeteroGMM, hetero_gmm, random_gmm, sample
from gmmssl.train import TrainConfig, init_params, make_hparams, train


def test_hetero_samples_have_each_components_covariance():
    g = hetero_gmm(jax.random.PRNGKey(0), 4, 3, heterogeneity=0.8)
    x, xp, c, cp = sample_pairs(jax.random.PRNGKey(1), g, 60000, 1.0)
    for k in range(3):
        emp = np.cov(np.asarray(x[c == k]).T)
        np.testing.assert_allclose(emp, np.asarray(g.covs[k]), atol=0.04 * float(jnp.max(g.covs[k])))
    # the pooled covariance is what the Fisher machinery sees
    np.testing.assert_allclose(np.asarray(g.cov), np.einsum("k,kij->ij", np.asarray(g.weights), np.asarray(g.covs)),
                               rtol=1e-5, atol=1e-6)


def test_hetero_gmm_interpolates_from_the_shared_draw_and_traces_in_h():
    g0 = hetero_gmm(jax.random.PRNGKey(3), 5, 3, heterogeneity=0.0)
    np.testing.assert_allclose(np.asarray(g0.covs - g0.covs[0]), 0.0, atol=1e-6)
    f = jax.jit(lambda h: hetero_gmm(jax.random.PRNGKey(3), 5, 3, heterogeneity=h).covs)
    np.testing.assert_allclose(np.asarray(f(0.4)), np.asarray(hetero_gmm(jax.random.PRNGKey(3), 5, 3,
                                                                          heterogeneity=0.4).covs), atol=1e-5)
    assert float(jnp.abs(f(1.0)[0] - f(1.0)[1]).max()) > 0.05
    leaves, tree = jax.tree_util.tree_flatten(g0)
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert isinstance(back, HeteroGMM) and back.chols.shape == (3, 5, 5)


@pytest.mark.parametrize("covs, match", [
    (np.stack([np.eye(3)] * 2), r"covs must be \(num_components, d, d\)"),
    (np.stack([np.eye(3), np.eye(3), -np.eye(3)]), r"covs\[2\]: cov must be symmetric positive definite"),
])
def test_hetero_gmm_rejects_bad_covariances(covs, match):
    with pytest.raises(ValueError, match=match):
        HeteroGMM(np.eye(3), covs)
    with pytest.raises(ValueError, match="heterogeneity"):
        hetero_gmm(jax.random.PRNGKey(0), 3, 2, heterogeneity=1.5)


@pytest.mark.parametrize("hetero", [False, True])
def test_bayes_log_posterior_matches_scipy(hetero):
    from scipy.stats import multivariate_normal  # here: scipy.stats takes 2 s to import

    g = hetero_gmm(jax.random.PRNGKey(5), 3, 3, heterogeneity=0.7) if hetero else random_gmm(jax.random.PRNGKey(5), 3, 3)
    x, c = sample(jax.random.PRNGKey(6), g, 50)
    covs = np.asarray(g.covs) if hetero else np.stack([np.asarray(g.cov)] * 3)
    want = np.stack([np.log(float(g.weights[k])) + multivariate_normal(np.asarray(g.means[k]), covs[k]).logpdf(
        np.asarray(x)) for k in range(3)], 1)
    got = np.asarray(metrics.bayes_log_posterior(x, g, jitter=0.0))
    np.testing.assert_allclose(got - got.max(1, keepdims=True), want - want.max(1, keepdims=True), atol=1e-3)
    # projecting on an orthonormal basis of the whole space loses nothing
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    assert float(metrics.bayes_accuracy(x, c, g, jnp.asarray(q, jnp.float32))) == float(metrics.bayes_accuracy(x, c, g))


def test_bayes_accuracy_of_the_fisher_subspace_is_the_full_accuracy_and_pca_loses_it():
    from gmmssl.gmm import parallel_pancakes

    g = parallel_pancakes(6, 2)
    x, c = sample(jax.random.PRNGKey(0), g, 4000)
    full = float(metrics.bayes_accuracy(x, c, g))
    assert full > 0.99
    assert float(metrics.bayes_accuracy(x, c, g, fisher.fisher_subspace(g))) == pytest.approx(full, abs=1e-3)
    assert float(metrics.bayes_accuracy(x, c, g, fisher.pca(x, 1))) < 0.6


def test_linear_probe_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    g = random_gmm(jax.random.PRNGKey(2), 4, 3, separation=0.6)
    x, c = sample(jax.random.PRNGKey(3), g, 3000)
    xtr, ctr, xte, cte = x[:1500], c[:1500], x[1500:], c[1500:]
    ours = float(metrics.linear_probe_accuracy(xtr, ctr, xte, cte, 3))
    theirs = LogisticRegression(max_iter=2000).fit(np.asarray(xtr), np.asarray(ctr)).score(np.asarray(xte),
                                                                                            np.asarray(cte))
    assert ours == pytest.approx(theirs, abs=0.02)
    assert ours > 0.5  # well above chance (1/3)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.linear_probe_accuracy(xtr, ctr, xte, cte, 1)


def test_sufficient_subspace_is_fisher_when_shared_and_finds_covariance_directions():
    g = random_gmm(jax.random.PRNGKey(4), 6, 3)
    assert float(metrics.fisher_capture(fisher.sufficient_subspace(g, 2), fisher.fisher_subspace(g))) > 0.9999
    # equal means, components differ only in their variance along e₃: the central subspace is e₃
    covs = np.stack([np.eye(4), np.diag([1.0, 1.0, 6.0, 1.0])])
    h = HeteroGMM(np.zeros((2, 4)), covs)
    s = np.asarray(fisher.sufficient_subspace(h, 1))[:, 0]
    assert abs(s[2]) > 0.999


def test_linear_jacobian_energy_is_the_projector_fraction_on_the_basis():
    a = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    basis = jnp.eye(5)[:, :2]
    want = float(jnp.sum((a.T @ basis) ** 2) / jnp.sum(a ** 2))
    got = float(projectors.jacobian_energy({"A": a}, jnp.ones((3, 5)), basis))
    assert got == pytest.approx(want, rel=1e-5)


def test_mlp_projector_trains_vmapped_and_compiles_once_per_architecture():
    g = random_gmm(jax.random.PRNGKey(0), 5, 3)
    cfg = TrainConfig(r=2, steps=20, log_every=10, batch_size=32, hidden=(8, 8), activation="tanh")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def grid(keys, deltas):
        return jax.vmap(lambda k, d: train(k, g, make_hparams(delta=d), cfg))(keys, deltas)

    out = grid(jax.random.split(jax.random.PRNGKey(1), 3), jnp.array([0.3, 0.6, 1.0]))
    out2 = grid(jax.random.split(jax.random.PRNGKey(2), 3), jnp.array([0.1, 0.2, 0.9]))
    assert out.params["A"].shape == (3, 8, 2)
    assert out.params["mlp"]["layers"][1]["kernel"].shape == (3, 8, 8)
    assert "fisher_capture" not in out.history
    assert np.all(np.isfinite(np.asarray(out2.history["loss"])))
    # the head maps the last hidden layer to r
    start = init_params(jax.random.PRNGKey(1), g, cfg)
    assert start["A"].shape == (8, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden=(8, 0)), r"hidden\[1\]"),
    (dict(hidden=8), "hidden must be a tuple"),
    (dict(hidden=(8,), activation="swish"), "activation"),
    (dict(hidden=(8,), loss="infonce_population"), "needs a linear projector"),
])
def test_mlp_config_errors(kwargs, match):
    g = random_gmm(jax.random.PRNGKey(0), 5, 3)
    with pytest.raises(ValueError, match=match):
        train(jax.random.PRNGKey(0), g, make_hparams(), TrainConfig(steps=10, log_every=10, **kwargs))


def test_population_loss_refuses_a_heteroscedastic_mixture():
    g = hetero_gmm(jax.random.PRNGKey(0), 4, 2)
    with pytest.raises(ValueError, match="shared covariance"):
        train(jax.random.PRNGKey(0), g, make_hparams(), TrainConfig(loss="infonce_population", steps=10,
                                                                    log_every=10))
    assert isinstance(g, GMM)


def test_scale_presets_resolve_and_bad_scale_is_refused():
    """Every experiment has --set scale=paper (gmmssl run all --set scale=paper), a larger
    grid than its default, whose config validates."""
    from gmmssl.experiment import validate_experiment

    def size(config):  # the grid's size from the config: every listed value, and the seeds
        listed = [len(v) for v in config.values() if isinstance(v, tuple)]
        return int(np.prod(listed)) * config.get("seeds", config.get("mixtures", 1))

    for name, exp in experiments.REGISTRY.items():
        paper = resolve_config(exp, {"scale": "paper"})
        assert paper["scale"] == "paper"
        assert resolve_config(exp, {})["scale"] == "default"
        with pytest.raises(ValueError, match="scale"):
            resolve_config(exp, {"scale": "huge"})
        assert size(paper) > size(resolve_config(exp, {})), name
        if name not in ("dimension", "conjecture", "real"):  # the slowest to build (d = 512, float64 draws, data)
            validate_experiment(exp, {"scale": "paper"})
    conj = resolve_config(experiments.get("conjecture"), {"scale": "paper"})
    static = ("d", "num_components", "mode", "centered", "extra_rank")
    assert conj["mixtures"] * int(np.prod([len(conj[k]) for k in static])) >= 1000
    assert max(conj["d"]) >= 64 and set(conj["num_components"]) >= {2, 8} and set(conj["mode"]) == {"prior", "other"}
    assert set(conj["centered"]) == {True, False} and set(conj["extra_rank"]) >= {0, 1}
    assert conj["small_kappa"] > 0 and "4096" in conj["finite_batch"]
    default = resolve_config(experiments.get("conjecture"), {})
    sizes = [len(default[k]) if isinstance(default[k], tuple) else 1 for k in static]
    assert default["mixtures"] * int(np.prod(sizes)) >= 128
