"""Issue 30, item 6: one named range type, HParam, for the trainer's, an objective's and a
sweep axis's hyper-parameters; the old positional tuples converted; empty ranges refused."""
import jax.numpy as jnp
import pytest

from gmmssl.sweep import Sweep, map_grid, run_grid, trainer_ranges
from gmmssl.train import HPARAM_RANGES, HParam, Objective, TrainConfig, as_hparam, hparam_ranges, make_hparams


def _loss(params, x, x_pos, hparams, config, data):
    return hparams["lam"] * jnp.sum(params["A"] ** 2)


def test_one_named_type_serves_the_trainer_an_objective_and_a_sweep():
    assert all(isinstance(spec, HParam) for spec in HPARAM_RANGES.values())
    assert HPARAM_RANGES["learning_rate"] == HParam(0.05, 0.0, float("inf"), low_open=True, high_open=True)
    new = Objective("new", _loss, hparams={"lam": HParam(1.0, 0.0, 10.0, high_open=True)})
    old = Objective("old", _loss, hparams={"lam": (1.0, 0.0, 10.0, False)})  # (default, low, high, low_open)
    assert old.hparams["lam"] == HParam(1.0, 0.0, 10.0, False, False)
    assert hparam_ranges(TrainConfig(loss=new))["lam"].high_open
    assert make_hparams(TrainConfig(loss=old))["lam"] == 1.0
    ranges = trainer_ranges(TrainConfig(loss=new))
    assert ranges["lam"] == new.hparams["lam"] and ranges["delta"] == HPARAM_RANGES["delta"]
    with pytest.raises(ValueError, match=r"lam must be in \[0.0, 10.0\), got 10.0"):
        make_hparams(TrainConfig(loss=new), lam=10.0)


@pytest.mark.parametrize("spec", [
    HParam(None, 0.0, 10.0),  # a sweep range needs no default
    (0.0, 10.0, False, False),  # the sweep's old (low, high, low_open, high_open)
    (1.0, 0.0, 10.0, False),  # an objective's old (default, low, high, low_open), read as such
])
def test_a_sweep_reads_every_form_by_name(spec):
    assert as_hparam("lam", spec, axis=True)[1:] == (0.0, 10.0, False, False)
    cell = lambda c: {"y": c["lam"] * 2.0}  # noqa: E731
    with pytest.raises(ValueError, match=r"lam must be in \[0.0, 10.0\], got 12.0"):
        map_grid(cell, {"lam": [1.0, 12.0]}, ranges={"lam": spec})


def test_an_empty_range_is_refused_in_one_line_naming_the_hyper_parameter():
    want = r"hyper-parameter 'lam': its range is empty \(low 10.0 > high 1.0\)"
    with pytest.raises(ValueError, match="Objective 'x': " + want):
        Objective("x", _loss, hparams={"lam": HParam(0.0, 10.0, 1.0)})
    with pytest.raises(ValueError, match="Objective 'x': " + want):
        Objective("x", _loss, hparams={"lam": (0.0, 10.0, 1.0, False)})  # low and high swapped in the old tuple
    traced = []
    # a sweep range in the wrong order is refused before fn is traced, whatever the values
    with pytest.raises(ValueError, match=want) as err:
        map_grid(lambda c: traced.append(c) or {"y": c["lam"]}, {"lam": [0.0]}, ranges={"lam": (10.0, 1.0, False, False)})
    assert "\n" not in str(err.value) and not traced
    with pytest.raises(ValueError, match="its range is empty"):
        run_grid(Sweep(lambda c, d: c, lambda c, d, t: t, {"x": [0.0]}, ranges={"lam": HParam(None, 1.0, 1.0, True)}))


def test_an_objective_needs_a_default_and_a_known_shape():
    with pytest.raises(ValueError, match=r"Objective 'x': hyper-parameter 'lam' needs a default"):
        Objective("x", _loss, hparams={"lam": (0.0, 10.0, False, False)})  # a sweep's tuple: no default
    with pytest.raises(ValueError, match=r"must be \(default, low, high, low_open\) or an HParam"):
        Objective("x", _loss, hparams={"lam": (1.0, 0.0)})
    with pytest.raises(ValueError, match=r"lam must be in \[0.0, 10.0\], got 20.0"):
        Objective("x", _loss, hparams={"lam": HParam(20.0, 0.0, 10.0)})
