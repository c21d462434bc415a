"""Issue 27 (items 6, 8, 16): stored results that were moved, edited or damaged are refused
in one line naming the file, never reported or resumed with exit status 0.

Every test starts from a copy of the shared tiny finished pancakes run (``finished_tiny``)
or from files written by hand; none trains anything.
"""
import csv
import io
import json
import shutil

import numpy as np
import pytest

from gmmssl import report, results
from gmmssl.cli import main
from tiny import TINY


def _one_line(capsys) -> str:
    """The command's standard error: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gmmssl: error: ") and "Traceback" not in err, err
    return err


def _results_under(finished_tiny, tmp_path, name):
    """The tiny pancakes run moved to tmp_path/results/NAME: (results root, the folder)."""
    folder, _ = finished_tiny
    root = tmp_path / "results"
    root.mkdir()
    shutil.move(folder, root / name)
    return root, root / name


def _rewrite_csv(path, change):
    """results.csv rewritten by hand: change(header, rows) -> (header, rows) of strings."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    header, rows = change(header, rows)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    path.write_text(buf.getvalue())


def _edit_json(path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _report(root, docs, *extra):
    return main(["report", "--results", str(root), "--docs", str(docs), *extra])


# item 6: the experiment a folder holds is the one its config.json names
@pytest.mark.parametrize("folder_name, holds", [("delta", "pancakes"), ("pancakes", "real")])
def test_report_refuses_a_folder_holding_another_experiment(finished_tiny, tmp_path, capsys, folder_name, holds):
    root, folder = _results_under(finished_tiny, tmp_path, folder_name)
    if holds != "pancakes":  # a finished run of `holds` (its own config and verdict) placed in results/pancakes
        for name in ("config.json", "verdict.json"):
            _edit_json(folder / name, lambda obj: obj.update(experiment=holds))
    assert _report(root, tmp_path / "docs", "--partial") == 2
    err = _one_line(capsys)
    assert str(folder) in err and f"experiment {holds!r}" in err and f"{folder_name!r}" in err, err
    assert not (tmp_path / "docs" / "RESULTS.md").exists()


# item 8: results.csv edited after the run
def _ari_changed(header, rows):
    col = header.index("ari")
    edited = [r for r in rows if r[col] == "1.0"][:1]
    assert edited, "the tiny run has an ARI of 1.0 (LDA separates the pancakes)"
    edited[0][col] = "0.985"
    return header, rows


def _duplicates_appended(header, rows):
    return header, rows + rows[:10]


@pytest.mark.parametrize("edit, digest_updated", [(_ari_changed, False), (_duplicates_appended, False),
                                                   (_duplicates_appended, True)])
def test_report_refuses_results_edited_after_the_run(finished_tiny, tmp_path, capsys, edit, digest_updated):
    root, folder = _results_under(finished_tiny, tmp_path, "pancakes")
    assert "## pancakes" in report.write_report(root, tmp_path / "docs0", partial=True).read_text()  # untouched
    _rewrite_csv(folder / "results.csv", edit)
    if digest_updated:  # the digest recomputed too: verdict.json's row count still tells
        _edit_json(folder / "verdict.json",
                   lambda v: v.update(results_sha256=results.file_sha256(folder / "results.csv")))
    assert _report(root, tmp_path / "docs", "--partial") == 2
    err = _one_line(capsys)
    assert str(folder / "results.csv") in err and "edited after the run" in err and "rerun" in err, err
    if edit is _duplicates_appended:
        rows = len(results.read_csv(folder / "results.csv"))
        assert f"{rows} rows" in err and f"{rows - 10}" in err, err
    assert not (tmp_path / "docs" / "RESULTS.md").exists()


def test_report_refuses_a_config_edited_after_the_run(finished_tiny, tmp_path, capsys):
    """config.json's steps changed (the run digest left alone): the report printed the
    command with steps=999 beside numbers made with 100 (the re-audit's case)."""
    root, folder = _results_under(finished_tiny, tmp_path, "pancakes")
    _edit_json(folder / "config.json", lambda c: c["config"].update(steps=999))
    assert _report(root, tmp_path / "docs", "--partial") == 2
    err = _one_line(capsys)
    assert str(folder / "config.json") in err and "edited after the run" in err, err
    assert not (tmp_path / "docs" / "RESULTS.md").exists()


def test_report_refuses_a_verdict_without_a_results_digest(finished_tiny, tmp_path, capsys):
    """An older verdict.json (no digest of results.csv) cannot vouch for the rows beside it."""
    root, folder = _results_under(finished_tiny, tmp_path, "pancakes")
    _edit_json(folder / "verdict.json", lambda v: v.pop("results_sha256"))
    assert _report(root, tmp_path / "docs", "--partial") == 2
    err = _one_line(capsys)
    assert str(folder / "verdict.json") in err and "digest" in err and "rerun" in err, err


# item 16: damaged or foreign files, each refused in one line naming the file
def _drop_ari(folder):
    _rewrite_csv(folder / "results.csv", lambda h, rows: ([c for c in h if c != "ari"],
                                                          [[v for c, v in zip(h, r) if c != "ari"] for r in rows]))
    # as if written so by the run (an older version's columns): the digest matches the file
    _edit_json(folder / "verdict.json", lambda v: v.update(results_sha256=results.file_sha256(folder / "results.csv")))
    return folder / "results.csv", "'ari'"


def _older_config(folder):
    _edit_json(folder / "config.json", lambda c: [c.pop(k) for k in ("environment", "numerics", "static")])
    return folder / "config.json", "environment"


def _docs_is_a_file(folder):
    docs = folder.parent.parent / "docs"
    docs.write_text("not a folder\n")
    return docs, "not a folder"


@pytest.mark.parametrize("damage", [_drop_ari, _older_config, _docs_is_a_file])
def test_report_refuses_damaged_files_in_one_line(finished_tiny, tmp_path, capsys, damage):
    root, folder = _results_under(finished_tiny, tmp_path, "pancakes")
    path, what = damage(folder)
    assert _report(root, tmp_path / "docs", "--partial") == 2
    err = _one_line(capsys)
    assert str(path) in err and what in err, err


def test_a_truncated_sweep_json_is_refused_naming_it(finished_tiny, capsys):
    folder, _ = finished_tiny
    manifest = folder / "chunks" / "all" / "sweep.json"
    manifest.write_text(manifest.read_text()[:2])  # "{\n": Expecting value: line 2 column 1
    assert main(["run", "pancakes", "--out", str(folder), *TINY]) == 2
    err = _one_line(capsys)
    assert str(manifest) in err and "not valid JSON" in err, err


def test_a_truncated_pending_json_is_not_called_a_different_config(finished_tiny, capsys):
    folder, _ = finished_tiny
    pending = folder / ".pending.json"
    pending.write_text((folder / "config.json").read_text()[:40])  # an interrupted write
    assert main(["run", "pancakes", "--out", str(folder), *TINY]) == 2
    err = _one_line(capsys)
    assert str(pending) in err and "not valid JSON" in err and "different config" not in err, err


def _string_labels(path):
    np.savez(path, X=np.random.default_rng(0).normal(size=(40, 3)), y=np.array(["cat", "dog"] * 20))
    return "integer class labels"


def _truncated(path):
    np.savez(path, X=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(40) % 2)
    path.write_bytes(path.read_bytes()[:200])
    return "truncated"


@pytest.mark.parametrize("make", [_string_labels, _truncated])
def test_real_refuses_a_bad_features_file_in_one_line(tmp_path, capsys, make):
    path = tmp_path / "features.npz"
    what = make(path)
    assert main(["run", "real", "--set", f"features={path}", "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys)
    assert str(path) in err and what in err, err


def test_report_writes_both_documents_or_neither(finished_tiny, tmp_path, capsys):
    """Pancakes finished, no open question's experiment: with --partial, RESULTS.md could be
    written but docs/open-questions.md cannot; the report refuses before writing either."""
    root, _ = _results_under(finished_tiny, tmp_path, "pancakes")
    docs = tmp_path / "docs"
    assert _report(root, docs, "--partial") == 2
    assert "docs/open-questions.md" in _one_line(capsys)
    assert not docs.exists() or not list(docs.iterdir())


def test_the_report_says_whether_verdict_json_predates_the_claims_or_disagrees_with_them():
    from gmmssl.report import _stored_note
    from gmmssl.results import claim

    now = [claim("a", 1.0, ">=", 0.5, quantity="q", population="p"), claim("b", 0.0, ">=", 0.5, quantity="q",
                                                                            population="p")]
    same = {"claims": [{"statement": "a", "passed": True}, {"statement": "b", "passed": False}]}
    assert _stored_note(same, now) == []
    flipped = {"claims": [{"statement": "a", "passed": True}, {"statement": "b", "passed": True}]}
    assert "disagrees" in _stored_note(flipped, now)[0]
    older = {"claims": [{"statement": "a (an older wording)", "passed": True}]}
    note = _stored_note(older, now)[0]
    assert "earlier version" in note and "1 then and 2 now" in note and "recomputed from results.csv" in note


def test_report_only_splices_sections_in_place_and_drops_owned_ones_without_results():
    from gmmssl.report import _owner, _splice

    old = [("pancakes", 1), ("pancakes_full", 2), ("delta", 3), ("nonlinear", 4), ("nonlinear_paper", 5), ("zoo", 6)]
    new = [("pancakes", "p"), ("nonlinear", "n"), ("nonlinear_extra", "x")]
    got = _splice(old, new, lambda t: _owner(t, ["pancakes", "nonlinear"]))
    # pancakes and nonlinear replaced where they were; pancakes_full and nonlinear_paper (no fresh run) dropped;
    # a fresh section the old report lacked follows the last replaced one; the others untouched, in order
    assert got == [("pancakes", "p"), ("delta", 3), ("nonlinear", "n"), ("nonlinear_extra", "x"), ("zoo", 6)]
    assert _owner("conjecture_k58", ["conjecture"]) and not _owner("conjectures", ["conjecture"])


def test_the_stored_verdict_agrees_whatever_the_order_of_its_claims():
    from gmmssl.report import _stored_note
    from gmmssl.results import claim

    now = [claim("a", 1.0, ">=", 0.5, quantity="q", population="p"), claim("b", 0.0, ">=", 0.5, quantity="q",
                                                                            population="p")]
    assert _stored_note({"claims": [{"statement": "b", "passed": False}, {"statement": "a", "passed": True}]},
                        now) == []
    assert "disagrees" in _stored_note({"claims": [{"statement": "b", "passed": True},
                                                   {"statement": "a", "passed": True}]}, now)[0]
