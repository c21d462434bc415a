import subprocess
import sys

import numpy as np
import pytest

from gmmssl import results
from gmmssl.cli import main

from tiny import TINY


def test_list_names_the_pancakes_experiment(capsys):
    assert main(["list"]) == 0
    assert "pancakes" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "gmmssl.cli", "list"], capture_output=True, text=True, check=True)
    assert "pancakes" in out.stdout


@pytest.mark.slow
def test_run_pancakes_writes_tidy_results(finished_tiny):
    out, text = finished_tiny  # main(["run", "pancakes", "--out", ..., *TINY]) == 0
    for name in ("results.csv", "config.json", "projectors.npz", "verdict.json", "pancakes.png"):
        assert (out / name).exists(), name
    rows = results.read_csv(out / "results.csv")
    methods = {"pca", "lda", "oracle", "infonce", "init"}
    assert len(rows) == 3 * 2 * len(methods)
    assert {r["method"] for r in rows} == methods
    for r in rows:
        assert {"delta", "seed", "learning_rate", "temperature", "fisher_capture", "fisher_efficiency", "ari"} <= set(r)
        assert 0.0 <= r["fisher_capture"] <= 1.0 + 1e-5
    lda = [r for r in rows if r["method"] == "lda"]
    assert min(r["fisher_capture"] for r in lda) > 0.95
    assert "fisher_capture (mean±std over seeds)" in text and "verdict:" in text
    npz = np.load(out / "projectors.npz")
    assert npz["infonce"].shape == (6, 8, 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "pancakes", "--set", "colour=red"], "unknown --set key 'colour'"),
        (["run", "pancakes", "--set", "delta=0.5,1.5"], "delta must be in [0.0, 1.0]"),
        (["run", "pancakes", "--set", "r=30"], "r must be in [1, 20]"),
        (["run", "pancakes", "--set", "r=0"], "r must be in [1, inf], got 0"),  # where TrainConfig is made
        (["run", "pancakes", "--set", "num_components=1"], "num_components"),
        (["run", "pancakes", "--set", "steps=abc"], "expected an integer"),
        (["run", "pancakes", "--set", "learning_rate=-1"], "learning_rate must be in (0.0, inf)"),
        (["run", "pancakes", "--set", "seeds=0"], "seeds must be in"),
        (["run", "pancakes", "--set", "steps"], "KEY=VALUE"),
        (["run", "pancakes", "--set", "loss=clip"], "loss 'clip' trains on a MultiModalGMM"),
        (["run", "pancakes", "--set", "loss=byol2"], "loss must be one of"),
        (["run", "pancakes", "--set", "loss=simsiam", "--set", "xi=-1"], "xi must be in"),
        (["run", "pancakes", "--out", ""], "--out must name a folder, got ''"),  # was: results/pancakes
        (["report", "--docs", " "], "--docs must name a folder"),
    ],
)
def test_bad_input_exits_with_a_clear_message(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "x")] if args[0] == "run" and "--out" not in args else args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unwritable_output_folder(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("not a folder")
    assert main(["run", "pancakes", "--out", str(target / "sub"), *TINY]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_run_with_another_loss(tmp_path):
    # the CLI's loss switch; every loss's own training is tested in test_objectives.py (and
    # infonce_population end to end by the time-to-answer benchmark's smoke test)
    loss = "simsiam"
    out = tmp_path / loss
    assert main(["run", "pancakes", "--out", str(out), *TINY, "--set", f"loss={loss}"]) == 0
    rows = results.read_csv(out / "results.csv")
    assert {r["method"] for r in rows} == {"pca", "lda", "oracle", "init", loss}
    best = [r for r in rows if r["method"] == loss and r["delta"] == 1.0]
    assert min(r["fisher_capture"] for r in best) > 0.9


def test_every_run_command_in_the_docs_is_accepted():
    """Each ``gmmssl run NAME ...`` that README.md, docs/experiments.md, docs/guide.md,
    docs/scaling.md and benchmarks/README.md show parses with the CLI's own parser and its
    --set values resolve for that experiment (a user copies them; placeholders such as
    ``...`` are skipped)."""
    import re
    import shlex
    from pathlib import Path

    import gmmssl.experiments as experiments
    from gmmssl.cli import _parser
    from gmmssl.experiment import parse_overrides, resolve_config

    repo = Path(__file__).resolve().parent.parent
    checked = []
    for doc in ("README.md", "docs/experiments.md", "docs/guide.md", "docs/scaling.md", "benchmarks/README.md"):
        for m in re.finditer(r"gmmssl run ([a-z_]+)([^`\n]*)", (repo / doc).read_text()):
            # a shell line: its variables ($i, "$OUT") stand for 0; a closing quote ends it
            name, rest = m.group(1), re.sub(r"\$\{?\w+\}?", "0", m.group(2)).rstrip().rstrip('"')
            words = shlex.split(rest.split("#")[0])
            if name not in experiments.REGISTRY or any("..." in w for w in words):
                continue
            args = _parser().parse_args(["run", name, *words])
            resolve_config(experiments.get(name), parse_overrides(args.overrides))
            checked.append(m.group(0))
    assert any("scale=paper" in c for c in checked) and any("--coordinator" in c for c in checked), checked
