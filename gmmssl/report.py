"""``gmmssl report``: gathers the latest results of every experiment into docs/RESULTS.md.

Every verdict in the report is recomputed from the ``results.csv`` beside it (through the
experiment's own claims, on rows read back from the file), not copied from a verdict
file, and the report says when the two disagree. Figures are copied into docs/figures/.

A folder is read only when it is trustworthy, else the report is refused (ValueError, one
line naming the file, nothing written): its config.json names the experiment the folder
is read for, holds the keys the report reads, and results.csv has the row count and the
sha256 that verdict.json recorded when the run finished (a file edited, truncated or
extended afterwards is refused; so is a verdict.json written before gmmssl recorded the
digest), and the experiment's claims can be computed from its rows (every column they
read is there).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from gmmssl import results

__all__ = ["check_run", "finished_problem", "recompute_claims", "write_open_questions", "write_report",
           "write_reports"]


def finished_problem(out_dir) -> str | None:
    """None when ``out_dir`` holds one finished run (results.csv, config.json and
    verdict.json, the last two readable JSON objects with the same run digest); otherwise
    why not. Whether a finished run can be trusted is :func:`check_run`'s question."""
    out_dir = Path(out_dir)
    missing = [f for f in ("results.csv", "config.json", "verdict.json") if not (out_dir / f).exists()]
    if missing:
        return f"no finished run ({', '.join(missing)} missing)"
    try:
        config = results.read_json(out_dir / "config.json")
        verdict = results.read_json(out_dir / "verdict.json")
    except ValueError as err:
        return f"unreadable: {err}"
    if config.get("run") is None:
        return f"{out_dir / 'config.json'} records no run digest (an older layout or a damaged file)"
    if config.get("run") != verdict.get("run"):
        return "config.json and verdict.json belong to different runs"
    return None


CONFIG_KEYS = {"experiment": str, "config": dict, "environment": dict}  # what the report reads of config.json
VERDICT_KEYS = {"num_rows": int, "claims": list}


def _lacking(obj: dict, keys: dict) -> list[str]:
    return [k for k, kind in keys.items() if not isinstance(obj.get(k), kind) or isinstance(obj.get(k), bool)]


def check_run(experiment, out_dir) -> tuple[dict, dict, list[dict]]:
    """(config.json, verdict.json, the rows of results.csv) of the finished run in
    ``out_dir``, read for ``experiment``; a ValueError naming the file and what is wrong
    when it is not finished (:func:`finished_problem`), holds another experiment, lacks
    what the report reads (an older layout), config.json no longer gives the run digest it
    records (an edited config: the report would state a command that did not run), or
    results.csv is not the file the run wrote
    (its row count or sha256 differs from verdict.json's, or verdict.json has no digest)."""
    out_dir = Path(out_dir)
    problem = finished_problem(out_dir)
    if problem is not None:
        raise ValueError(f"{out_dir}: {problem}")
    meta = results.read_json(out_dir / "config.json")
    verdict = results.read_json(out_dir / "verdict.json")
    lacking = _lacking(meta, CONFIG_KEYS) + [f"environment.{k}" for k in ("backend", "jax")
                                              if isinstance(meta.get("environment"), dict)
                                              and k not in meta["environment"]]
    static = meta.get("static")
    if static is not None and not (isinstance(static, list) and all(isinstance(s, dict) for s in static)):
        lacking.append("static (a list of objects)")
    if lacking:
        raise ValueError(f"{out_dir / 'config.json'}: lacks {', '.join(lacking)} (an older layout or a damaged "
                         f"file): rerun the experiment to report it")
    if meta["experiment"] != experiment.name:
        raise ValueError(f"{out_dir} holds a run of experiment {meta['experiment']!r} (its config.json), "
                         f"not {experiment.name!r}: a folder results/NAME must hold a run of NAME; move it, or replace "
                         f"it (gmmssl run {experiment.name} --out {out_dir} --overwrite)")
    from gmmssl.experiment import run_digest

    if run_digest(meta["experiment"], meta["config"], meta.get("numerics", {}), meta.get("inputs")) != meta["run"]:
        raise ValueError(f"{out_dir / 'config.json'}: its config, numerics or inputs no longer give the run digest it "
                         f"records: the file was edited after the run (or written by an older gmmssl): rerun the "
                         f"experiment or restore the file")
    if "results_sha256" not in verdict:
        raise ValueError(f"{out_dir / 'verdict.json'}: records no digest of results.csv (written by an older "
                         f"gmmssl), so the rows beside it cannot be verified: rerun the experiment to report it")
    lacking = _lacking(verdict, VERDICT_KEYS)
    if lacking or not all(isinstance(c, dict) and "passed" in c for c in verdict["claims"]):
        raise ValueError(f"{out_dir / 'verdict.json'}: lacks {', '.join(lacking) or 'claims[].passed'} "
                         f"(a damaged file): rerun the experiment to report it")
    csv_path = out_dir / "results.csv"
    rows = results.read_csv(csv_path)
    edited = "the file was edited after the run: rerun the experiment or restore the file"
    if len(rows) != verdict["num_rows"]:
        raise ValueError(f"{csv_path}: holds {len(rows)} rows, verdict.json recorded {verdict['num_rows']}: {edited}")
    if results.file_sha256(csv_path) != verdict["results_sha256"]:
        raise ValueError(f"{csv_path}: its sha256 differs from the one verdict.json recorded: {edited}")
    return meta, verdict, rows


_UNUSABLE_ROWS = (KeyError, IndexError, TypeError, ValueError, ArithmeticError)  # what claims raise on odd rows


def _from_rows(fn, csv_path: Path, what: str):
    """fn() (an experiment's claims or findings on the rows of csv_path); rows it cannot
    use (a column missing, text where a number belongs) give one line naming the file."""
    try:
        return fn()
    except _UNUSABLE_ROWS as err:
        key = err.args[0] if isinstance(err, KeyError) and err.args else None
        if isinstance(key, str):
            for suffix in ("_mean", "_std", "_min", "_max"):  # a summary's statistic names its column
                if key.endswith(suffix):
                    key = key[:-len(suffix)]
                    break
            detail = f"no column or value {key!r}"
        else:
            detail = f"{type(err).__name__}: {err}"
        raise ValueError(f"{csv_path}: {what} cannot be computed from its rows ({detail}): the file does not "
                         f"hold what this version of the experiment writes; rerun it") from None


def recompute_claims(experiment, out_dir: Path):
    """The experiment's claims evaluated on the rows read back from out_dir/results.csv
    (a grid with invalid rows scores none, :func:`gmmssl.results.guard_claims`), and
    config.json. Refuses (ValueError naming the file) what :func:`check_run` refuses and
    rows the claims cannot be computed from."""
    claims, meta, _, _ = _recompute(experiment, Path(out_dir))
    return claims, meta


def _recompute(experiment, out_dir: Path):
    """(claims, config.json, verdict.json, rows) of a checked run (:func:`recompute_claims`)."""
    from gmmssl.experiment import Part, Run

    meta, verdict, rows = check_run(experiment, out_dir)
    # claims read rows only; parts carry each static configuration's values and config
    # config.json stores each part's static values with sorted keys; the run held them in the
    # experiment's static_keys order, which titles such as "[num_components=2 loss=infonce]" follow
    order = {k: i for i, k in enumerate(experiment.static_keys)}

    def ordered(static: dict) -> dict:
        return dict(sorted(static.items(), key=lambda kv: order.get(kv[0], len(order))))

    parts = [Part(ordered(s), {**meta["config"], **s}, {}, {}) for s in meta.get("static") or [{}]]
    run = Run(meta["config"], parts, rows)
    claims = _from_rows(lambda: results.guard_claims(experiment.claims(run), rows), out_dir / "results.csv",
                        f"the claims of {experiment.name}")
    return claims, meta, verdict, rows


def _stored_note(stored: dict, claims) -> list[str]:
    """What the report says when verdict.json (written by the run) and the verdict
    recomputed now differ: claims of an earlier version (other statements), or the same
    claims judged differently."""
    then = sorted((str(c.get("statement")), bool(c.get("passed"))) for c in stored["claims"])
    now = sorted((c.statement, bool(c.passed)) for c in claims)  # (the order of static parts may differ)
    if [t for t, _ in then] != [t for t, _ in now]:
        return [f"(verdict.json was written by an earlier version of this experiment's claims, {len(then)} then and "
                f"{len(now)} now; every verdict here is recomputed from results.csv by this version.)", ""]
    if then != now:
        return ["**The stored verdict.json disagrees with the verdict recomputed from results.csv.**", ""]
    return []


def _check_docs(docs: Path) -> None:
    """Refuses a --docs (or its figures/) that is not a folder, before anything is written."""
    for folder in (docs, docs / "figures"):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--docs {docs}: {folder} is not a folder (a file is in the way); nothing was written")


def _write(docs: Path, copies, path: Path, text: str) -> Path:
    """Copies the figures (source, target) and writes ``path``, once every section is ready;
    a file system error is one line naming the file."""
    try:
        (docs / "figures").mkdir(parents=True, exist_ok=True)
        for source, target in copies:
            shutil.copyfile(source, target)
        results.atomic_write(path, text)
    except OSError as err:
        raise ValueError(f"cannot write {err.filename or path}: {err.strerror or err}") from None
    return path


def _reused(meta) -> str:
    """Says when the recorded time does not cover every cell (some came from stored chunks)."""
    n = meta.get("cells_reused", 0)
    return f"; the time covers the other cells only: {n} were reused from an earlier run's chunks" if n else ""


def _check_coverage(root: Path, names, partial: bool, what: str) -> None:
    done = [n for n in names if finished_problem(root / n) is None]
    if not done:
        found = [f"{n} ({finished_problem(root / n)})" for n in names if (root / n).is_dir()]
        raise ValueError(f"no finished results under {root}/ for {what}: run the experiments first "
                         f"(gmmssl run NAME); nothing was written"
                         + (f"; unfinished: {'; '.join(found)}" if found else ""))
    missing = [f"{n} ({finished_problem(root / n)})" for n in names if n not in done]
    if missing and not partial:
        raise ValueError(f"{what} would lose sections, no finished results for: {'; '.join(missing)}. Run them, "
                         f"or pass --partial to write the report without them")


def _command(name: str, exp, meta: dict, out: Path) -> str:
    """The ``gmmssl run`` command that reproduces the run in ``out``: its scale (when not
    the default) and every value that differs from what that scale gives."""
    scale = meta["config"].get("scale", "default")
    base = {**exp.defaults, **exp.presets.get(scale, {})}  # what --set scale=SCALE alone gives
    overrides = [f"--set {k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                 for k, v in meta["config"].items()
                 if k != "scale" and base.get(k) != (tuple(v) if isinstance(v, list) else v)]
    return " ".join([f"gmmssl run {name}", *([f"--set scale={scale}"] if scale != "default" else []), *overrides,
                     *([f"--out results/{out.name}"] if out.name != name else [])])


def write_report(results_root="results", docs="docs", names=None, partial: bool = False) -> Path:
    """docs/RESULTS.md from the finished runs under ``results_root``. Refuses (ValueError,
    nothing written) when no experiment has finished results, or when some have none
    and ``partial`` is False (the committed report would lose their sections)."""
    return _write(*_render_report(results_root, docs, names, partial))


def write_reports(results_root="results", docs="docs", partial: bool = False, only=None) -> list[Path]:
    """``gmmssl report``: docs/RESULTS.md and docs/open-questions.md, both or neither:
    each is computed in full (every run checked, every claim recomputed) before either is
    written, so a refusal (ValueError, one line) leaves ``docs`` as it was.

    ``only`` (experiment names, ``gmmssl report --only``): recompute the sections of these
    experiments (their runs must be finished) and keep every other section of the existing
    reports verbatim, for a machine that holds some runs only. Both files then open with a
    line naming what was recomputed and what was kept from the previous report (scored by
    the code of that time)."""
    if only is None:
        rendered = [_render_report(results_root, docs, None, partial),
                    _render_open_questions(results_root, docs, partial)]
    else:
        rendered = _render_only(results_root, docs, list(only))
    return [_write(*r) for r in rendered]


KEPT = "> Partly regenerated (`gmmssl report --only"


def _owner(title: str, names) -> bool:
    """Whether a report section or table row titled ``title`` (a results folder's name)
    belongs to one of the experiments ``names`` (results/NAME or results/NAME_*)."""
    return any(title == n or title.startswith(n + "_") for n in names)


def _chunks(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(the lines before the first "## " header, [(header title, its lines)])."""
    head, chunks = [], []
    for line in text.splitlines():
        if line.startswith("## "):
            chunks.append((line[3:].strip(), [line]))
        elif chunks:
            chunks[-1][1].append(line)
        else:
            head.append(line)
    return head, chunks


def _kept_note(head: list[str], names, kept, dropped=()) -> list[str]:
    """The preamble ``head`` with the one line saying what --only recomputed and kept
    (replacing an earlier such line), before the claims table when there is one."""
    head = [ln for i, ln in enumerate(head)
            if not ln.startswith(KEPT) and not (not ln.strip() and i and head[i - 1].startswith(KEPT))]
    note = (f"{KEPT} {','.join(names)}`): recomputed now: {', '.join(names)}; kept verbatim from the previous report, "
            f"scored by the code of that time (its claims may have changed since; rerun those experiments and "
            f"`gmmssl report` to rescore): {', '.join(kept) or 'none'}."
            + (f" Dropped, no finished run here: {', '.join(dropped)}." if dropped else ""))
    table = next((i for i, ln in enumerate(head) if ln.startswith("|")), None)
    if table is not None:
        return head[:table] + [note, ""] + head[table:]
    while head and not head[-1].strip():
        head.pop()
    return head + ["", note, ""]


def _splice(old: list, new: list, owned) -> list:
    """``old`` and ``new``: [(title, item)]. Old items whose title is ``owned`` are replaced
    in place by the new items of that title (dropped when there are none); new items of a
    title the old list lacks go right after the last replaced one (at the end if none)."""
    fresh: dict = {}
    for title, item in new:
        fresh.setdefault(title, []).append(item)
    out, last = [], None
    for title, item in old:
        if owned(title):
            out += [(title, x) for x in fresh.pop(title, [])]
            last = len(out)
        else:
            out.append((title, item))
    rest = [(title, x) for title, items in fresh.items() for x in items]
    at = len(out) if last is None else last
    return out[:at] + rest + out[at:]


def _render_only(results_root, docs, names):
    """(docs, copies, path, text) for RESULTS.md and open-questions.md, the sections of
    ``names`` recomputed and spliced into the existing files."""
    import gmmssl.experiments as experiments

    root, docs = Path(results_root), Path(docs)
    unknown = [n for n in names if n not in experiments.REGISTRY]
    if not names or unknown:
        raise ValueError(f"--only needs experiment names from {sorted(experiments.REGISTRY)}, got {names}")
    out = []
    # RESULTS.md: the claim table's rows and the sections of ``names`` replaced
    path = docs / "RESULTS.md"
    if not path.exists():
        raise ValueError(f"--only splices into {path}, which does not exist: run `gmmssl report` first")
    _, copies, _, fresh = _render_report(results_root, docs, names, False)
    old_head, old_chunks = _chunks(path.read_text())
    new_head, new_chunks = _chunks(fresh)

    def row(ln):
        return ln.startswith("| ") and not ln.startswith("| experiment |")

    def title(ln):
        return ln[2:].split(" |")[0]

    def owned(t):
        return t is not None and _owner(t, names)

    rows = [(title(ln), ln) for ln in new_head if row(ln)]
    spliced = _splice([(title(ln) if row(ln) else None, ln) for ln in old_head], rows, owned)
    head = [ln for _, ln in spliced]
    kept = sorted({t for t, _ in old_chunks if not _owner(t, names)})
    fresh_titles = {t for t, _ in new_chunks}
    dropped = [t for t, _ in old_chunks if _owner(t, names) and t not in fresh_titles]
    chunks = _splice(old_chunks, new_chunks, owned)
    text = "\n".join(_kept_note(head, names, kept, dropped) + [ln for _, lines in chunks for ln in lines]).rstrip() + "\n"
    out.append((docs, copies, path, text))
    # open-questions.md: the questions of ``names`` recomputed
    path = docs / "open-questions.md"
    questions = dict(OPEN_QUESTIONS)
    if path.exists() and any(n in questions for n in names):
        old_head, old_chunks = _chunks(path.read_text())
        copies, chunks = [], []
        for title, lines in old_chunks:
            name = next((n for n, q in OPEN_QUESTIONS if q == title), None)
            if name in names:
                exp = experiments.get(name)
                block = [f"## {title}", "", f"Experiment `{name}`: {exp.description}", ""]
                for i, run_dir in enumerate(_question_runs(root, name)):
                    if i:
                        block += [f"### Also at paper scale: `results/{run_dir.name}`", ""]
                    block += _question_section(exp, name, run_dir, docs, copies)
                if exp.notes:
                    block += ["### Notes (for every run above)", "", exp.notes, ""]
                lines = block
            chunks.append((title, lines))
        kept = [n for n, q in OPEN_QUESTIONS if n not in names]
        body = [ln for _, lines in chunks for ln in lines]
        text = "\n".join(_kept_note(old_head, names, kept) + body).rstrip() + "\n"
        out.append((docs, copies, path, text))
    return out


def _render_report(results_root, docs, names, partial):
    """(docs, figure copies, path, text) of :func:`write_report`, nothing written."""
    import gmmssl.experiments as experiments

    root, docs = Path(results_root), Path(docs)
    _check_docs(docs)
    _check_coverage(root, [n for n in experiments.REGISTRY if not names or n in names], partial, "the report")
    copies = []
    lines = ["# gmmssl results", "",
             "Generated by `gmmssl report` from the latest `results/<experiment>/` folders; every verdict",
             "below is recomputed from the `results.csv` beside it. Default sizes, 2 CPU cores unless noted.",
             "Do not edit by hand: rerun the experiments and `gmmssl report`.", "",
             "| experiment | claim | measured | tolerance | verdict |", "|---|---|---|---|---|"]
    sections = []
    folders = []
    for name, exp in experiments.REGISTRY.items():
        if names and name not in names:
            continue
        extra = [p for p in _finished_runs(root, name) if p != root / name]
        folders += [(name, exp, root / name, name)] + [(name, exp, p, p.name) for p in extra]
    for name, exp, out, title in folders:
        if finished_problem(out) is not None:
            sections += [f"## {title}", "", f"No finished results ({finished_problem(out)}): `gmmssl run {name}`.", ""]
            continue
        claims, meta, stored, _ = _recompute(exp, out)
        for c in claims:
            statement = c.statement.replace("|", "\\|")
            verdict = c.verdict if c.passed else f"**{c.verdict}**"
            lines.append(f"| {title} | {statement} | {c.measured:.4g} | {c.tolerance} | {verdict} |")
        sections += [f"## {title}", "", exp.description, "",
                     f"Command: `{_command(name, exp, meta, out)}` "
                     f"({meta.get('num_cells', '?')} cells, {meta.get('seconds', '?')} s on "
                     f"{meta['environment']['backend']}, jax {meta['environment']['jax']}"
                     f"{_reused(meta)}).", ""]
        sections += _stored_note(stored, claims)
        passed = sum(c.passed for c in claims)
        sections += [f"Verdict: {passed} of {len(claims)} claims pass.", ""]
        if claims and not claims[0].scored:
            sections += [f"**{claims[0].note}.**", ""]
        for fig in sorted(out.glob("*.png")):
            target = docs / "figures" / f"{title}-{fig.name}"
            copies.append((fig, target))
            sections += [f"![{title}: {fig.stem}](figures/{target.name})", ""]
    return docs, copies, docs / "RESULTS.md", "\n".join(lines + [""] + sections) + "\n"


OPEN_QUESTIONS = (
    ("conjecture", "Does InfoNCE recover the exact Fisher subspace for noisy augmentations, 0 < δ < 1?"),
    ("nonlinear", "Do non-linear projectors still find the Fisher subspace?"),
    ("heteroscedastic", "What does InfoNCE learn without a shared covariance?"),
)


def _finished_runs(root: Path, name: str) -> list[Path]:
    """results/NAME and results/NAME_* holding a finished run of experiment NAME."""
    found = []
    for p in [root / name, *sorted(root.glob(f"{name}_*"))]:
        if finished_problem(p) is None and results.read_json(p / "config.json").get("experiment") == name:
            found.append(p)
    return found


def _question_runs(root: Path, name: str) -> list[Path]:
    """The finished runs of NAME at scale "paper" (results/NAME first, then results/NAME_*
    by name: a paper-scale run and its supplements, such as another range of a static
    axis), else [results/NAME]."""
    paper = [p for p in _finished_runs(root, name) if _scale(p) == "paper"]
    return paper or [root / name]


def _scale(out: Path):
    config = results.read_json(out / "config.json").get("config")
    return config.get("scale") if isinstance(config, dict) else None


def write_open_questions(results_root="results", docs="docs", partial: bool = False) -> Path:
    """docs/open-questions.md: for each of the paper's open questions that gmmssl tests,
    what was run (its paper-scale runs, ``results/NAME`` or ``results/NAME_*`` at
    ``scale=paper``, each in its own section, when there are any; else ``results/NAME``),
    the verdict recomputed from its results.csv, and the experiment's own data-driven
    summary (its ``findings``), with its figures. Refuses like :func:`write_report`."""
    return _write(*_render_open_questions(results_root, docs, partial))


def _render_open_questions(results_root, docs, partial):
    """(docs, figure copies, path, text) of :func:`write_open_questions`, nothing written."""
    import gmmssl.experiments as experiments

    root, docs = Path(results_root), Path(docs)
    _check_docs(docs)
    _check_coverage(root, [n for n, _ in OPEN_QUESTIONS], partial, "docs/open-questions.md")
    copies = []
    lines = ["# Open questions: what gmmssl's runs show", "",
             "Generated by `gmmssl report` from `results/<experiment>/`; every number below is computed from",
             "the `results.csv` there. Do not edit by hand: rerun the experiments and `gmmssl report`.", ""]
    for name, question in OPEN_QUESTIONS:
        exp, runs = experiments.get(name), _question_runs(root, name)
        lines += [f"## {question}", "", f"Experiment `{name}`: {exp.description}", ""]
        for i, out in enumerate(runs):
            if i:
                lines += [f"### Also at paper scale: `results/{out.name}`", ""]
            lines += _question_section(exp, name, out, docs, copies)
        if exp.notes:
            lines += ["### Notes (for every run above)", "", exp.notes, ""]
    return docs, copies, docs / "open-questions.md", "\n".join(lines) + "\n"


def _question_section(exp, name: str, out: Path, docs: Path, copies: list | None = None) -> list[str]:
    """One run's part of docs/open-questions.md: its command, findings, recomputed verdict
    and figures (copied into docs/figures/ now, or appended to ``copies`` as (source,
    target) for the caller to copy once every section is ready)."""
    from gmmssl.experiment import Run

    if finished_problem(out) is not None:
        return [f"No finished results ({finished_problem(out)}): `gmmssl run {name}`.", ""]
    claims, meta, _, rows = _recompute(exp, out)
    lines = [f"Run: `{_command(name, exp, meta, out)}`, "
             f"{meta.get('num_cells', '?')} cells, {meta.get('seconds', '?')} s on "
             f"{meta['environment']['backend']} (jax {meta['environment']['jax']}{_reused(meta)}).", ""]
    if exp.findings is not None:
        run = Run(meta["config"], [], rows)
        lines += [_from_rows(lambda: exp.findings(run), out / "results.csv", f"the findings of {name}"), ""]
    lines += [f"Verdict, {sum(c.passed for c in claims)} of {len(claims)} predictions hold:", ""]
    if claims and not claims[0].scored:  # as in docs/RESULTS.md: why none is scored, once
        lines += [f"**{claims[0].note}.**", ""]
    lines += [f"- {c.verdict if c.passed else f'**{c.verdict}**'}: {c.statement}: {c.measured:.4g} ({c.tolerance})"
              + (f" ({c.note})" if c.note and c.scored else "") for c in claims]
    lines.append("")
    for fig in sorted(out.glob("*.png")):
        target = docs / "figures" / f"{out.name}-{fig.name}"
        if copies is None:
            shutil.copyfile(fig, target)
        else:
            copies.append((fig, target))
        lines += [f"![{out.name}: {fig.stem}](figures/{target.name})", ""]
    return lines
