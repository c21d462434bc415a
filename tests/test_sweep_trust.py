"""Issue 27, items 9, 12 and 15: axis values that would change on the way into a cell,
chunks changed after they were written, and sizes that cannot fit the memory budget.

Toy functions for map_grid (no training) and CLI runs that are refused before anything
compiles: every test here takes milliseconds to a second.
"""
import json

import numpy as np
import pytest

import gmmssl.experiments as experiments
from gmmssl import sweep
from gmmssl.cli import main
from gmmssl.experiment import parse_overrides, run_experiment
from gmmssl.sweep import map_grid
from tiny import TINY


def _twice(cell):
    return {"y": cell["x"] * 2.0}


# item 9: values the int32 / float32 of a cell cannot hold, and repeated values
@pytest.mark.parametrize("axes, message", [
    ({"seed": [5, 2**32 + 5]}, "axis 'seed': the value 4294967301 does not fit the int32"),  # would run as seed 5
    ({"x": [2**31]}, "axis 'x': the value 2147483648 does not fit the int32"),  # would run as -2**31
    ({"x": [1.0, 1e40]}, "axis 'x': the value 1e+40 is outside the range of the float32"),  # would run as inf
    ({"x": [0.0, 0.5, 0.5, 1.0]}, "axis 'x' lists the value 0.5 twice"),  # would duplicate cells
    ({"x": [0.1, 0.10000000001]}, "(0.1 and 0.10000000001 are one float32)"),
])
def test_axis_values_a_cell_would_not_receive_as_given_are_refused(axes, message):
    name = next(iter(axes))
    with pytest.raises(ValueError) as err:
        map_grid(lambda c: {"y": c[name] + 0}, axes, cell_bytes=1)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("setting, message", [
    ("d=8,8", "--set d='8,8': 8 is given twice"),  # a static axis: the configuration would run twice
    ("delta=0,0.5,0.5,1", "--set delta='0,0.5,0.5,1': 0.5 is given twice"),
    ("temperature=1,1e40", "1e+40 is outside the range of a float32 grid value"),
])
def test_cli_lists_with_a_repeated_or_unholdable_value_are_refused(setting, message, tmp_path, capsys):
    assert main(["run", "pancakes", "--out", str(tmp_path / "run"), *TINY, "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gmmssl: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


# item 12: a chunk rewritten with the same key and cells but other numbers
def test_a_chunk_changed_after_it_was_written_or_never_recorded_is_set_aside_and_recomputed(tmp_path):
    axes = {"x": [0.0, 1.0, 2.0, 3.0]}
    kwargs = dict(out_dir=tmp_path, fingerprint={"fn": "twice"}, chunk_size=2, cell_bytes=1)
    map_grid(_twice, axes, **kwargs)
    forged = tmp_path / "chunk_000000002-000000004.npz"
    with np.load(forged) as data:
        arrays = dict(data)
    arrays["y"] = arrays["y"] + 100.0  # same "#key" and "#cells": only the numbers differ
    np.savez(forged, **arrays)
    # a chunk whose record was lost (as when a run stops between writing a chunk and recording it)
    unlisted = "chunk_000000000-000000002.npz"
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    del manifest["chunks"][unlisted]
    (tmp_path / "sweep.json").write_text(json.dumps(manifest))

    lines = []
    rows = map_grid(_twice, axes, resume=True, progress=lines.append, **kwargs)
    assert [r["y"] for r in rows] == [0.0, 2.0, 4.0, 6.0]
    assert any(forged.name in line and "sha256" in line and "recomputed" in line for line in lines), lines
    assert any(unlisted in line and "does not list it" in line and "recomputed" in line for line in lines), lines
    assert (tmp_path / (forged.name + ".rejected")).exists() and (tmp_path / (unlisted + ".rejected")).exists()
    # the recomputed chunks are recorded with their digests: the next resume uses them all
    recorded = json.loads((tmp_path / "sweep.json").read_text())["chunks"]
    assert sorted(recorded) == sorted(p.name for p in tmp_path.glob("chunk_*.npz")) == [unlisted, forged.name]
    lines.clear()
    assert [r["y"] for r in map_grid(_twice, axes, resume=True, progress=lines.append, **kwargs)] == [0, 2, 4, 6]
    assert not [line for line in lines if "set aside" in line], lines


# item 15: sizes refused from the estimate, before anything big is allocated
@pytest.mark.parametrize("setting", ["seeds=100000000000", "d=3000000000", "num_eval=99999999999999",
                                     "batch_size=60000"])
@pytest.mark.parametrize("chunk", [[], ["--chunk-size", "1"]])
def test_sizes_above_the_memory_budget_are_refused_in_one_line_naming_the_setting(setting, chunk, tmp_path, capsys):
    args = ["run", "pancakes", "--out", str(tmp_path / "run"), "--budget-mb", "1024", "--set", setting, *chunk]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gmmssl: error: {setting}: ") and err.count("\n") == 1, err
    assert "above the memory budget of" in err, err
    # the budget given is the one compared against
    with pytest.raises(ValueError, match=r"above the memory budget of 1 GiB"):
        run_experiment(experiments.get("pancakes"), tmp_path / "run", parse_overrides([setting]), budget_bytes=1 << 30)
    assert not (tmp_path / "run").exists()


def test_a_cell_or_a_grid_above_the_budget_is_refused_before_the_grid_is_built(monkeypatch):
    def never(axes):
        raise AssertionError("flatten_grid must not run for a grid refused by its size")

    monkeypatch.setattr(sweep, "flatten_grid", never)
    with pytest.raises(ValueError, match=r"the grid has 10000000000 cells \(x 100000 x seed 100000\).* above the "
                                         r"memory budget of 1 GiB"):
        map_grid(_twice, {"x": range(100_000), "seed": range(100_000)}, cell_bytes=1, budget_bytes=1 << 30)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"one grid cell needs about 2 GiB by the memory estimate, above the budget "
                                         r"of 1 GiB"):
        map_grid(_twice, {"x": [1.0]}, cell_bytes=2 << 30, budget_bytes=1 << 30)


def test_resume_keeps_the_cells_per_device_and_refuses_another(tmp_path):
    """A cell's numbers are bit-identical only between programs of the same width (cells per
    device): resume keeps the stored width, and refuses a chunk size that would change it."""
    from gmmssl.sweep import map_grid

    axes = {"x": [float(i) for i in range(8)]}

    def fn(c):
        return {"y": c["x"] * 2.0}

    first = map_grid(fn, axes, out_dir=tmp_path, fingerprint={"fn": "y"}, chunk_size=4)
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["cells_per_device"] == 4 and manifest["numerics"]["xla_flags"] is not None
    with pytest.raises(ValueError, match=r"computed 4 per device; this run would compute 2 per device .*"
                                         r"use --chunk-size 4, or --overwrite"):
        map_grid(fn, axes, out_dir=tmp_path, fingerprint={"fn": "y"}, resume=True, chunk_size=2)
    lines = []
    again = map_grid(fn, axes, out_dir=tmp_path, fingerprint={"fn": "y"}, resume=True, progress=lines.append)
    assert [r["y"] for r in again] == [r["y"] for r in first] and "chunk 2/2" in lines[-1]
    assert json.loads((tmp_path / "sweep.json").read_text())["cells_per_device"] == 4
