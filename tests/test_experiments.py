"""Every experiment at a tiny size, and its verdict logic shown able to fail."""
import dataclasses
import json

import pytest

import gmmssl.experiments as experiments
from gmmssl.cli import main
from gmmssl.experiment import run_experiment
from gmmssl.report import recompute_claims, write_report
from tiny import OVERRIDES
from gmmssl.benchmarks.__main__ import QUICK_ANSWER

COMMON = {"steps": "50", "log_every": "25", "num_baseline": "200", "num_eval": "200"}
TINY = {
    "pancakes": OVERRIDES,  # the configuration the CLI, sweep and trust tests share (one compilation)
    # the quick benchmark's time-to-answer run (same programs)
    "delta": {**QUICK_ANSWER, "loss": "infonce", "batch_size": "64"},
    # dimension's d = 6 part and variance: delta's static configuration and grid size (2 cells),
    # so the compilation cache serves them the same programs
    "dimension": {**COMMON, "seeds": "1", "d": "6,8", "delta": "0.5,1", "batch_size": "64"},
    "variance": {**COMMON, "seeds": "1", "condition_number": "1,100", "d": "6", "batch_size": "64"},
    "rank": {**COMMON, "seeds": "1", "r": "1,3", "d": "6"},
    "simsiam_xi": {**COMMON, "seeds": "1", "xi": "0.1,1", "delta": "1", "predictor": "false", "batch_size": "64"},
    "clip": {"steps": "50", "log_every": "25", "num_eval": "200", "seeds": "1", "private_separation": "0,2",
             "delta": "1", "batch_size": "64"},
    "real": {"steps": "50", "log_every": "25", "seeds": "1", "delta": "0.25,1", "batch_size": "64"},
    "conjecture": {"d": "4", "num_components": "3", "mode": "prior", "centered": "true", "mixtures": "3",
                   "starts": "2", "newton_steps": "30", "finite_batch": "64", "finite_mixtures": "1",
                   "finite_steps": "100", "finite_d": "4"},
    "nonlinear": {**COMMON, "seeds": "1", "delta": "1", "loss": "infonce", "depth": "1", "width": "8", "d": "6",
                  "num_jacobian": "16", "batch_size": "64"},
    "zoo": {**COMMON, "seeds": "1", "loss": "infonce,byol", "delta": "0,1", "d": "6",
            "batch_size": "64"},
    "heteroscedastic": {**COMMON, "seeds": "1", "heterogeneity": "0,1", "separation": "0.3", "d": "6",
                        "batch_size": "64"},
}
# the metric each experiment's claims rest on, and a value that must fail them
BREAK = {"fisher_capture": 0.0}


def test_every_experiment_has_a_tiny_configuration():
    assert set(TINY) == set(experiments.REGISTRY)


class _Runs:
    """Each experiment's tiny run, computed the first time a test asks for it (so a single
    test runs only its own experiment)."""

    def __init__(self, root):
        self.root, self.done = root, {}

    def __getitem__(self, name):
        if name not in self.done:
            self.done[name] = (run_experiment(experiments.get(name), self.root / name, TINY[name]), self.root / name)
        return self.done[name]


# the report test reads pancakes' and rank's runs: one group, so one worker runs each once
_GROUP = {"pancakes": "experiment-rank"}


def _grouped(names):
    """One parameter per experiment, each in its own xdist group: the tests that read an
    experiment's tiny run go to one worker, which runs it once (`make test` runs
    ``--dist loadgroup``)."""
    return [pytest.param(n, marks=[pytest.mark.xdist_group(_GROUP.get(n, f"experiment-{n}")), pytest.mark.slow])
            for n in names]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, _Runs(root)


@pytest.mark.parametrize("name", _grouped(sorted(TINY)))
def test_experiment_writes_results_figures_and_a_verdict(runs, name):
    _, out = runs
    run, folder = out[name]
    for f in ("results.csv", "config.json", "verdict.json", "projectors.npz"):
        assert (folder / f).exists(), f
    assert list(folder.glob("*.png"))
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["claims"], "an experiment must check at least one claim"
    for c in verdict["claims"]:
        assert set(c) == {"statement", "measured", "tolerance", "passed", "note", "quantity", "population", "margin",
                          "method"}
        # every claim says what it measures, what it pools and by how much it passed or failed
        assert c["quantity"].strip() and c["population"].strip(), c
        if c["note"] == "" and c["margin"] == c["margin"]:  # scored, not NaN
            assert (c["margin"] >= 0) == c["passed"], c
    # the verdict recomputed from results.csv is the stored one
    recomputed, meta = recompute_claims(experiments.get(name), folder)
    assert (json.dumps([dataclasses.asdict(c) for c in recomputed], sort_keys=True)
            == json.dumps(verdict["claims"], sort_keys=True))  # (NaN == NaN as text)
    # the open-questions summary reads the stored rows (as gmmssl report does)
    if experiments.get(name).findings is not None:
        from gmmssl.experiment import Run
        from gmmssl.results import read_csv

        assert experiments.get(name).findings(Run(meta["config"], [], read_csv(folder / "results.csv")))


@pytest.mark.parametrize("name", _grouped(sorted(TINY)))
def test_verdict_logic_can_fail(runs, name):
    """Rows with the learned projectors' capture (and ARI) broken must fail some claim."""
    _, out = runs
    run, _ = out[name]
    learned = {r["method"] for r in run.rows} - {"pca", "lda", "oracle", "init", "lda_m1", "lda_m2"}
    broken_rows = []
    for r in run.rows:
        r = dict(r)
        if r["method"] in learned:
            for k in ("fisher_capture", "capture_at_quarter", "private_capture", "probe_accuracy",
                      "jacobian_fisher", "oracle_capture", "bayes_retained"):
                if k in r:
                    r[k] = 0.0
            if "deficit" in r:
                r["deficit"] = 0.5
            for k in ("ari", "ari_private"):
                if k in r:
                    r[k] = 0.5
            for k in [k for k in r if k.startswith("norm_")]:
                r[k] = r[k] + 0.5
            if "surviving" in r:
                r["surviving"] = r["surviving"] + 1
        broken_rows.append(r)
    broken = dataclasses.replace(run, rows=broken_rows)
    claims = experiments.get(name).claims(broken)
    assert any(not c.passed for c in claims), [dataclasses.asdict(c) for c in claims]


# where PCA is predicted to fail, its numbers must fail a method's success claims too
PCA_FAILS = {"pancakes"}
# the experiments whose rows hold the untrained projector ("init"): their success claims are swap-tested
HAS_INIT = {"pancakes", "delta", "dimension", "variance", "rank", "nonlinear", "heteroscedastic"}


def _swapped(run, method: str, baseline: str):
    """The run's rows with ``method``'s metrics replaced by ``baseline``'s on the same cell."""
    import numpy as np

    def cell(r):
        return tuple(sorted((k, v) for k, v in r.items() if k in KEYS))

    KEYS = {"seed", "delta", "d", "r", "depth", "mixture", "loss", "num_components", "condition_number", "xi",
            "heterogeneity", "separation", "thickness", "batch_size", "mode", "private_separation", "features"}
    base = {cell(r): r for r in run.rows if r["method"] == baseline}
    rows = []
    for r in run.rows:
        if r["method"] == method:
            assert cell(r) in base, f"no {baseline} row for the cell of {r}"
            r = {**r, **base[cell(r)], "method": method}  # its own training-only columns stay
        rows.append(r)
    assert np.any([r["method"] == method for r in rows])
    return dataclasses.replace(run, rows=rows)


@pytest.mark.parametrize("name", _grouped(sorted(HAS_INIT)))
def test_success_claims_fail_on_the_untrained_projectors_numbers(runs, name):
    """Issue 28, item 5: a claim that a method succeeds must fail when the untrained
    projector's numbers (and PCA's, where PCA is predicted to fail) stand in for the
    method's: otherwise it cannot separate the method from chance."""
    _, out = runs
    run, _ = out[name]
    claims = experiments.get(name).claims(run)
    success = [(i, c) for i, c in enumerate(claims) if c.method]
    assert success, f"{name}: no claim names the method whose success it states"
    for baseline in ["init"] + (["pca"] if name in PCA_FAILS else []):
        for method in {c.method for _, c in success}:
            swapped = experiments.get(name).claims(_swapped(run, method, baseline))
            assert len(swapped) == len(claims)
            for i, c in success:
                if c.method == method:
                    assert not swapped[i].passed, (baseline, c.statement, swapped[i].measured, c.tolerance)


@pytest.mark.xdist_group("experiment-rank")
def test_report_is_generated_from_the_results(runs, tmp_path):
    root, out = runs
    names = ["pancakes", "rank"]
    for name in names:
        out[name]
    path = write_report(root, tmp_path / "docs", names=names)
    text = path.read_text()
    for name in names:
        assert f"## {name}" in text
    assert "| experiment | claim | measured | tolerance | verdict |" in text
    assert list((tmp_path / "docs" / "figures").glob("*.png"))


@pytest.mark.xdist_group("experiment-rank")
def test_report_only_recomputes_the_named_sections_and_keeps_the_rest_verbatim(runs, tmp_path):
    from gmmssl.report import write_reports

    root, out = runs
    for name in ("pancakes", "rank"):
        out[name]
    docs = tmp_path / "docs"
    before = write_report(root, docs, names=["pancakes", "rank"]).read_text()
    pancakes = before[before.index("## pancakes"):before.index("## rank")]
    # rank's section edited by hand: --only rank must recompute it, and leave pancakes' alone
    (docs / "RESULTS.md").write_text(before.replace("## rank", "## rank\n\nA stale line.").replace(
        "| pancakes |", "| pancakes |"))
    paths = write_reports(root, docs, only=["rank"])
    assert [p.name for p in paths] == ["RESULTS.md"]  # no open-questions.md here to splice into
    after = paths[0].read_text()
    assert "A stale line." not in after and pancakes in after
    assert after.count("| rank |") == before.count("| rank |") and after.count("| pancakes |") == before.count(
        "| pancakes |")
    note = [ln for ln in after.splitlines() if ln.startswith("> Partly regenerated")]
    assert len(note) == 1 and "recomputed now: rank" in note[0]
    assert "previous report" in note[0] and "pancakes" in note[0]
    assert write_reports(root, docs, only=["rank"])[0].read_text() == after  # idempotent: one note, same text
    assert "Dropped" not in note[0]
    # a section of a named experiment with no finished run here (rank_paper) is dropped, and the note says so
    (docs / "RESULTS.md").write_text(after + "## rank_paper\n\nAn older paper-scale section.\n")
    again = write_reports(root, docs, only=["rank"])[0].read_text()
    assert "An older paper-scale section." not in again
    assert "Dropped, no finished run here: rank_paper." in again
    with pytest.raises(ValueError, match="--only needs experiment names"):
        write_reports(root, docs, only=["nosuch"])


@pytest.mark.xdist_group("experiment-heteroscedastic")
def test_open_questions_report_the_paper_scale_runs_when_there_are_any(runs, tmp_path, monkeypatch):
    import shutil

    from gmmssl.experiment import run_digest
    from gmmssl.report import write_open_questions

    root, out = runs
    out["heteroscedastic"]
    # an experiment's fixed notes (such as the conjecture's argument) are shown once per question
    notes = "A fixed argument that does not depend on the run."
    monkeypatch.setitem(experiments.REGISTRY, "heteroscedastic",
                        dataclasses.replace(experiments.get("heteroscedastic"), notes=notes))
    text = write_open_questions(root, tmp_path / "docs", partial=True).read_text()
    assert "Run: `gmmssl run heteroscedastic --set " in text and "--set scale=default" not in text
    default_run = [ln for ln in text.splitlines() if ln.startswith("Run: `gmmssl run heteroscedastic")]
    for name in ("heteroscedastic_paper", "heteroscedastic_paper_k"):  # a paper-scale run and a supplement
        paper = root / name
        shutil.copytree(root / "heteroscedastic", paper)
        meta = json.loads((paper / "config.json").read_text())
        meta["config"]["scale"] = "paper"
        # as if run so: the run digest that config gives, in both files (an edited config is refused)
        meta["run"] = run_digest(meta["experiment"], meta["config"], meta["numerics"], meta.get("inputs"))
        (paper / "config.json").write_text(json.dumps(meta))
        verdict = json.loads((paper / "verdict.json").read_text())
        (paper / "verdict.json").write_text(json.dumps({**verdict, "run": meta["run"]}))
    try:
        text = write_open_questions(root, tmp_path / "docs", partial=True).read_text()
        section = text.split("## What does InfoNCE learn without a shared covariance?")[1]
        # each printed command, resolved as `gmmssl run` resolves it, gives its run's config
        for line in [ln for ln in section.splitlines() if ln.startswith("Run: `")] + default_run:
            _assert_command_reproduces(line.split("`")[1], root)
    finally:
        for name in ("heteroscedastic_paper", "heteroscedastic_paper_k"):
            shutil.rmtree(root / name)
    # the paper-scale runs replace the default one, each with its command (the overrides of
    # the paper preset) and its figures
    assert "--out results/heteroscedastic_paper`" in section and "--out results/heteroscedastic_paper_k`" in section
    assert "Run: `gmmssl run heteroscedastic --set scale=paper --set " in section
    assert section.count("Run: `gmmssl run heteroscedastic") == 2
    assert section.count(notes) == 1 and section.index(notes) > section.index("--out results/heteroscedastic_paper_k`")
    assert section.index("--out results/heteroscedastic_paper`") < \
        section.index("### Also at paper scale: `results/heteroscedastic_paper_k`") < \
        section.index("--out results/heteroscedastic_paper_k`")
    assert list((tmp_path / "docs" / "figures").glob("heteroscedastic_paper-*.png"))
    assert list((tmp_path / "docs" / "figures").glob("heteroscedastic_paper_k-*.png"))


def _assert_command_reproduces(command: str, root) -> None:
    """The command a report prints, resolved as `gmmssl run` resolves it, gives the config
    stored in the folder it names."""
    from gmmssl.experiment import parse_overrides, resolve_config

    words = command.split()
    assert words[:2] == ["gmmssl", "run"], command
    name = words[2]
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    folder = root / (words[words.index("--out") + 1].split("/", 1)[1] if "--out" in words else name)
    stored = json.loads((folder / "config.json").read_text())["config"]
    resolved = resolve_config(experiments.get(name), parse_overrides(sets))
    assert json.loads(json.dumps(resolved)) == stored, command


def test_real_experiment_reads_user_features(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    y = np.arange(240) % 3
    np.savez(tmp_path / "feat.npz", X=rng.normal(size=(240, 6)) + 4.0 * np.eye(3, 6)[y], y=y)
    overrides = {"features": str(tmp_path / "feat.npz"), "r": "2", "steps": "50", "log_every": "25",
                 "seeds": "1", "delta": "1", "batch_size": "32"}
    run = run_experiment(experiments.get("real"), tmp_path / "out", overrides)
    assert {r["method"] for r in run.rows} == {"infonce", "lda", "pca", "init"}
    assert max(r["ari"] for r in run.rows if r["method"] == "lda") > 0.9
    # the same path with other content is another run: its stored cells are never reused
    np.savez(tmp_path / "feat.npz", X=rng.normal(size=(240, 6)), y=y)
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"differing: the content of features \('[0-9a-f]{16}' -> '[0-9a-f]{16}'\)"
                                             r".*--overwrite"):
            run_experiment(experiments.get("real"), tmp_path / "out", overrides, resume=resume)


def test_run_all_and_report_on_the_command_line(capsys, tmp_path):
    assert main(["run", "nonexistent-experiment"]) == 2
    assert "known experiments" in capsys.readouterr().err


@pytest.mark.xdist_group("experiment-conjecture")
def test_conjecture_certifies_its_optima_and_compares_finite_batches(runs):
    import numpy as np

    _, out = runs
    run, folder = out["conjecture"]
    exact_rows = [r for r in run.rows if r["method"] == "exact"]
    assert len(exact_rows) == 3 and all(r["certified"] and r["starts_agree"] for r in exact_rows)
    assert all(r["grad_norm"] <= 1e-8 and r["hessian_min_eig"] > 0 for r in exact_rows)
    finite = [r for r in run.rows if r.get("phase") == "finite"]
    assert len(finite) == 1 and finite[0]["batch_size"] == 64 and finite[0]["method"] == "infonce"
    assert np.asarray(run.parts[0].outputs["projectors"]["exact"]).dtype == np.float64
    assert (folder / "conjecture-certified.png").exists()


@pytest.mark.slow
def test_conjecture_sgd_view_runs_in_float64_and_reruns_the_worst_longer(tmp_path):
    import jax
    import numpy as np

    config = {**COMMON, "view": "sgd", "d": "4", "num_components": "3", "mode": "prior", "centered": "true",
              "mixtures": "3", "batch_size": "64", "candidates": "2", "rerun_factor": "2", "small_kappa": "0"}
    run = run_experiment(experiments.get("conjecture"), tmp_path, config)
    assert not jax.config.jax_enable_x64  # switched on for the run only
    ssl = [r for r in run.rows if r["method"] == "infonce_population"]
    main = [r for r in ssl if r.get("phase") != "longer"]
    longer = [r for r in ssl if r.get("phase") == "longer"]
    assert len(main) == 3 and len(longer) == 2
    worst = sorted(main, key=lambda r: -r["deficit"])[:2]
    assert sorted(r["seed"] for r in longer) == sorted(r["seed"] for r in worst)
    assert {r["delta"] for r in longer} == {r["delta"] for r in worst}  # the same mixtures
    assert run.parts[-1].config["steps"] == 2 * run.parts[0].config["steps"]
    assert np.asarray(run.parts[0].outputs["projectors"]["infonce_population"]).dtype == np.float64
    assert any(k.endswith("infonce_population") for k in np.load(tmp_path / "projectors.npz").files)
    recomputed, _ = recompute_claims(experiments.get("conjecture"), tmp_path)
    assert [c.passed for c in recomputed] == [c["passed"] for c in json.loads((tmp_path / "verdict.json").read_text())["claims"]]
    broken = dataclasses.replace(run, rows=[{**r, "deficit": 0.5} for r in run.rows])
    assert not all(c.passed for c in experiments.get("conjecture").claims(broken))


@pytest.mark.xdist_group("experiment-nonlinear")
def test_nonlinear_saves_the_network_parameters(runs):
    import numpy as np

    _, out = runs
    _, folder = out["nonlinear"]
    keys = np.load(folder / "projectors.npz").files
    assert any("infonce/mlp/layers/0/kernel" in k for k in keys) and any(k.endswith("infonce/A") for k in keys)


@pytest.mark.xdist_group("experiment-dimension")
@pytest.mark.slow
def test_tables_and_figures_over_d_never_average_over_delta(runs):
    """The dimension grid holds δ = 0.5 and 1: each table and figure row over d is one δ's
    (issue 28: one curve pooled both under a title that says "over seeds")."""
    from gmmssl.experiments._compare import split_groups

    _, out = runs
    run, _ = out["dimension"]
    split = split_groups(run, "d")
    assert [title for title, _, _ in split] == ["δ=0.5", "δ=1"]
    assert [{r["delta"] for r in rows} for _, rows, _ in split] == [{0.5}, {1.0}]
    text = experiments.get("dimension").report(run)
    assert "[δ=0.5] fisher_capture" in text and "[δ=1] fisher_capture" in text
