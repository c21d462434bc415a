"""The benchmarks run at a tiny size and write well-formed output (their figures are not asserted)."""
import json

import jax
import pytest

from gmmssl.cli import main


@pytest.mark.slow
def test_bench_device_quick_writes_json_and_markdown(tmp_path):
    """The accelerator script at the quick sizes: kernels, sweeps and the pancakes run (the
    tests' shared tiny configuration), recorded with the device. ``all`` is ``kernels``,
    ``sweep`` and ``answer``: the first two run here, the third below."""
    assert main(["bench", "device", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    env = report["environment"]
    assert env["backend"] == jax.default_backend() and env["device_kind"] and env["device_count"] >= 1
    kernels = report["kernels"]
    assert kernels["matmul_reference"]["flops_per_s"] > 0
    assert kernels["bounds"]["bandwidth_bytes_per_s"] > 0 and kernels["bounds"]["exps_per_s"] > 0
    for row in kernels["rows"]:
        assert row["median_s"] > 0 and row["compile_s"] > 0 and 0 < row["fraction_of_matmul"]
        assert 0 < row["fraction_of_bound"]
    assert {r["loss"] for r in kernels["rows"]} >= {"infonce", "simsiam", "infonce_population"}
    # the contrastive loss on each of its code paths, side by side (the Pallas kernel interpreted here)
    assert {r["implementation"] for r in kernels["rows"] if r["loss"] == "infonce"} == {"xla", "low_rank", "pallas"}
    methods = {r["method"] for r in report["sweep"]["rows"]}
    assert methods - {"torch_loop"} == {"grid", "handwritten", "loop_models", "loop_steps"}  # torch only when installed
    # the hand-written jit(vmap(lax.scan)) program, side by side: each grid row's ratio to it
    hand = {r["G"]: r["model_steps_per_s"] for r in report["sweep"]["rows"] if r["method"] == "handwritten"}
    assert sorted(hand) == [1, 4] and all(v > 0 for v in hand.values())
    for r in report["sweep"]["rows"]:
        if r["method"] == "grid":
            assert r["ratio_to_handwritten"] == pytest.approx(r["model_steps_per_s"] / hand[r["G"]])
    # the grid at gmmssl's float32 matmul precision and at the chip's default, side by side
    assert sorted((r["G"], r["precision"]) for r in report["sweep"]["rows"] if r["method"] == "grid") == \
        [(1, "default"), (1, "highest"), (4, "default"), (4, "highest")]
    assert "| precision |" in (tmp_path / "bench.md").read_text()
    pancakes = report["pancakes"]
    assert pancakes["num_cells"] == 6 and pancakes["wall_s"] > 0 and pancakes["num_claims"] > 0
    # the benchmark reports the experiment's own verdict (at this size the efficiency claim at δ = 0.5 can fail)
    stored = json.loads((tmp_path / "pancakes" / "verdict.json").read_text())["claims"]
    assert pancakes["num_claims"] == len(stored) and pancakes["claims_passed"] == sum(c["passed"] for c in stored)
    assert pancakes["verdict"] is (pancakes["claims_passed"] == pancakes["num_claims"])
    md = (tmp_path / "bench.md").read_text()
    assert "## Kernels" in md and "## Sweeps" in md and "## Pancakes experiment" in md


@pytest.mark.slow
def test_bench_answer_quick_writes_the_time_to_answer(tmp_path):
    assert main(["bench", "answer", "--quick", "--out", str(tmp_path)]) == 0
    tta = json.loads((tmp_path / "bench.json").read_text())["time_to_answer"]
    assert [r["loss"] for r in tta["rows"]] == ["infonce", "infonce_population"]
    for row in tta["rows"]:
        assert row["wall_s"] > 0 and 0 < row["time_to_target_s"] <= row["grid_s"]
        assert row["final_capture"] >= row["target_capture"] - 1e-9 and row["num_cells"] == 2
    assert tta["speedup_wall"] > 0
    assert (tmp_path / "time_to_answer" / "infonce_population" / "verdict.json").exists()
    assert "## Time to answer" in (tmp_path / "bench.md").read_text()


def test_grid_benchmark_chunks_within_a_memory_budget():
    from gmmssl.benchmarks import sweeps

    gmm, cfg = sweeps.CONFIGS["delta"]["gmm"](), sweeps.CONFIGS["delta"]["cfg"]
    cfg = cfg.__class__(r=cfg.r, batch_size=8, steps=2, log_every=2)
    cell = sweeps.estimate_cell_bytes(gmm.dim, cfg.r, cfg.batch_size)
    row = sweeps._grid_timed(gmm, cfg, 5, repeats=1, budget_bytes=2 * cell)
    assert row["chunk_size"] == 2 and row["num_chunks"] == 3 and row["median_s"] > 0


def test_bench_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine")
    assert main(["bench", "kernels", "--quick", "--out", str(tmp_path / "a-file")]) == 2  # was: FileExistsError
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write there" in err and "nothing was run" in err
    assert (tmp_path / "a-file").read_text() == "mine"
