"""The benchmarks run at a tiny size and write well-formed output (their figures are not asserted)."""
import json

from gmmssl.cli import main


def test_bench_quick_writes_json_and_markdown(tmp_path):
    assert main(["bench", "all", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["environment"]["backend"] == "cpu"
    assert report["kernels"]["matmul_peak"]["flops_per_s"] > 0
    for row in report["kernels"]["rows"]:
        assert row["median_s"] > 0 and row["compile_s"] > 0 and 0 < row["fraction_of_peak"]
    assert {r["loss"] for r in report["kernels"]["rows"]} >= {"infonce", "simsiam", "infonce_population"}
    methods = {r["method"] for r in report["sweep"]["rows"]}
    assert methods - {"torch_loop"} == {"grid", "loop_models", "loop_steps"}  # torch only when installed
    assert "## Kernels" in (tmp_path / "bench.md").read_text()
