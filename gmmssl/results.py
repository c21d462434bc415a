"""Tidy results: rows, CSV/JSON written atomically, summaries, tables and verdicts.

A *row* is one grid cell and one method: the cell's axis values, ``method`` and every
metric as columns, so ``pandas.read_csv("results.csv")`` gives a tidy frame.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import socket
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["Claim", "FolderInUse", "atomic_write", "claim", "count_diverged", "divergence_summary", "file_sha256",
           "folder_lock", "format_table", "guard_claims", "lock_held", "invalid_rows", "lower_bound", "read_csv",
           "read_json", "summarize", "tidy_rows", "write_csv", "write_json"]


class FolderInUse(ValueError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder):
    """Holds an exclusive lock on ``folder`` (its ``.lock`` file, ``fcntl.flock``) for the
    block; a second holder gets :class:`FolderInUse` at once, naming the first. The
    operating system releases the lock when its process dies, so a killed run leaves
    no stale lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise FolderInUse(f"{folder} is in use by another gmmssl run ({holder}); wait for it to finish "
                          f"or choose another --out") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def lock_held(folder) -> bool:
    """Whether another process holds ``folder``'s lock (:func:`folder_lock`) now; the
    ``.lock`` file is left as it is."""
    try:
        with open(Path(folder) / ".lock", "r") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def atomic_write(path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename (never partial)."""
    path = Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _scalar(v):
    v = np.asarray(v)
    if v.dtype.kind in "iub":
        return int(v)
    return float(v)


def tidy_rows(grid: dict, metrics: dict) -> list[dict]:
    """One row per cell and method.

    Args:
      grid: {axis: (G,) values}.
      metrics: {method: {metric: (G,) values}}.
    """
    size = len(next(iter(grid.values())))
    rows = []
    for g in range(size):
        cell = {name: _scalar(values[g]) for name, values in grid.items()}
        for method, named in metrics.items():
            row = dict(cell, method=method)
            row.update({m: _scalar(v[g]) for m, v in named.items()})
            rows.append(row)
    return rows


def _columns(rows):
    cols = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def write_csv(rows: list[dict], path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, buf.getvalue())


def read_csv(path) -> list[dict]:
    """Reads a results.csv back into rows (numbers parsed, blanks dropped).

    Raises ValueError naming the file when it cannot be read, has no header, or holds a
    line whose number of fields differs from the header's (a damaged or hand-edited file)."""
    def parse(v):
        if v == "":
            return None
        if v in ("True", "False"):
            return v == "True"
        for t in (int, float):
            try:
                return t(v)
            except ValueError:
                pass
        return v

    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ValueError(f"{path}: no header line (an empty or damaged file)")
            rows = []
            for row in reader:
                if None in row or None in row.values():  # DictReader's marks of extra and missing fields
                    more = "more" if None in row else "fewer"
                    raise ValueError(f"{path}: line {reader.line_num} has {more} fields than the header's "
                                     f"{len(reader.fieldnames)} (a damaged or hand-edited file)")
                rows.append({k: parse(v) for k, v in row.items() if v != ""})
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot be read as CSV ({err})") from None


def read_json(path, advice: str = "") -> dict:
    """The JSON object stored in ``path``; a ValueError naming the file when it cannot be
    read, is not valid JSON (truncated, damaged) or holds something other than an object
    (``advice``, appended to the message, says what to do)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}){advice}") from None
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}): the file is truncated or damaged{advice}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found a {type(obj).__name__}{advice}")
    return obj


def file_sha256(path) -> str:
    """The sha256 hex digest of a file's bytes (verdict.json records results.csv's)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_json(obj, path) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# one-sided 95% quantiles of Student's t, by degrees of freedom (then the normal's 1.645)
_T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771, 1.761, 1.753,
        1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697)


def lower_bound(values) -> float:
    r"""The lower end of the one-sided 95% Student-t interval of the mean of ``values``:
    :math:`\bar v - t_{0.95,\,n-1}\, s/\sqrt n` (s the sample standard deviation). Paired
    differences (a method minus a baseline on the same seeds) with a positive lower bound
    are a win at that level; a mean inside the interval is a tie, whatever its sign. NaN
    for fewer than 2 values or any NaN."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size < 2 or np.isnan(v).any():
        return float("nan")
    t = _T95[v.size - 2] if v.size - 2 < len(_T95) else 1.645
    return float(v.mean() - t * v.std(ddof=1) / np.sqrt(v.size))


def summarize(rows: list[dict], by: tuple[str, ...], metrics: tuple[str, ...]) -> list[dict]:
    """Mean, standard deviation, min and max of each metric over rows sharing ``by``.

    Returns rows {by..., "n", metric + "_mean", metric + "_std", "_min", "_max"} in first-seen order.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(b) for b in by), []).append(row)
    out = []
    for key, members in groups.items():
        s = dict(zip(by, key), n=len(members))
        for m in metrics:
            vals = np.array([r[m] for r in members if r.get(m) is not None], dtype=float)
            if vals.size:  # NaN (a diverged or invalid cell) propagates to every statistic
                s[m + "_mean"] = float(vals.mean())
                s[m + "_std"] = float(vals.std())
                s[m + "_min"] = float(vals.min())
                s[m + "_max"] = float(vals.max())
        out.append(s)
    return out


def format_table(summary: list[dict], row_key: str, col_key: str, metric: str, *, digits: int = 3,
                 title: str | None = None) -> str:
    """A text table of ``metric`` (mean ± std) with ``row_key`` down and ``col_key`` across."""
    rows = list(dict.fromkeys(s[row_key] for s in summary))
    cols = list(dict.fromkeys(s[col_key] for s in summary))
    cell = {(s[row_key], s[col_key]): s for s in summary}

    def fmt(s):
        if s is None or metric + "_mean" not in s:
            return "-"
        return f"{s[metric + '_mean']:.{digits}f}±{s[metric + '_std']:.{digits}f}"

    header = [f"{row_key}\\{col_key}"] + [f"{c:g}" if isinstance(c, float) else str(c) for c in cols]
    body = [[str(r)] + [fmt(cell.get((r, c))) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    lines = [title or metric]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines.extend("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in body)
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checked claim: what is claimed, what was measured, against which bound.

    ``quantity`` names what ``measured`` is (a share, a mean capture, a difference to
    LDA's), ``population`` the cells it pools (which δ, r, mode, method, how many), and
    ``margin`` how far it passed (> 0) or failed (< 0): measured − bound for "≥",
    bound − measured for "≤" (NaN when measured is). verdict.json records all three.
    ``method``: the method whose success the claim states ("" for claims about baselines
    or about failures); tests put the untrained projector's rows (and PCA's, where PCA is
    predicted to fail) in its place and check that the claim then fails.
    """

    statement: str
    measured: float
    tolerance: str
    passed: bool
    note: str = ""
    quantity: str = ""
    population: str = ""
    margin: float = math.nan
    method: str = ""

    @property
    def scored(self) -> bool:
        """False when :func:`guard_claims` withheld the verdict (the grid has invalid
        rows): then ``passed`` is False and the claim neither passed nor failed."""
        return not self.note.startswith(NOT_SCORED)

    @property
    def verdict(self) -> str:
        """"PASS", "FAIL" or "NOT SCORED"."""
        return "NOT SCORED" if not self.scored else ("PASS" if self.passed else "FAIL")


NOT_SCORED = "not scored"


_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def claim(statement: str, measured: float, op: str, bound: float, *, quantity: str, population: str,
          method: str = "") -> Claim:
    """A :class:`Claim` that ``measured op bound`` (op is "<=" or ">="); NaN fails.

    ``quantity`` (what is measured) and ``population`` (the cells pooled) are required and
    must not be empty: a verdict that does not say what it pooled cannot be checked.
    ``method`` names the method whose success it states (see :class:`Claim`).
    """
    for name, text in (("quantity", quantity), ("population", population)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"claim {statement!r}: {name} must name what the claim measures/pools, got {text!r}")
    if op not in _OPS:
        raise ValueError(f"claim {statement!r}: op must be '<=' or '>=', got {op!r}")
    measured = float(measured)
    passed = (not math.isnan(measured)) and bool(_OPS[op](measured, bound))
    margin = measured - bound if op == ">=" else bound - measured
    note = "" if not math.isnan(measured) else "measured NaN: no valid cells, or too few for the statistic"
    return Claim(statement, measured, f"{op} {bound:g}", passed, note, quantity, population, margin, method)


def count_diverged(rows: list[dict]) -> int:
    """Rows flagged ``diverged`` (a nonzero code of :func:`gmmssl.train.divergence`: non-finite
    values, a loss blown up, parameters that did not move)."""
    return sum(1 for r in rows if r.get("diverged"))


def divergence_summary(rows: list[dict]) -> str:
    """"N diverged: n₁ <reason>, n₂ <reason>": the rows flagged ``diverged``, by reason
    (:data:`gmmssl.train.DIVERGENCE_REASONS`; an older True counts as non-finite)."""
    from gmmssl.train import DIVERGENCE_REASONS

    reasons = [f"{n} {reason}" for code, reason in enumerate(DIVERGENCE_REASONS) if code
               for n in [sum(1 for r in rows if r.get("diverged") == code)] if n]
    return f"{count_diverged(rows)} diverged" + (f": {', '.join(reasons)}" if reasons else "")


def invalid_rows(rows: list[dict]) -> list[dict]:
    """Rows that are flagged diverged or hold a NaN or infinite metric."""
    def bad(r):
        return r.get("diverged") or any(isinstance(v, float) and not math.isfinite(v) for v in r.values())

    return [r for r in rows if bad(r)]


def guard_claims(claims: list[Claim], rows: list[dict]) -> list[Claim]:
    """Fails every claim of a grid with diverged or invalid (NaN) rows, saying why.

    The claims are aggregates over the grid's cells (means, worst cases); a grid holding
    a cell without valid numbers has no valid aggregate, so none is scored. The measured
    values are kept for inspection."""
    bad = invalid_rows(rows)
    if not bad:
        return claims
    diverged = count_diverged(rows)
    detail = [divergence_summary(rows)] if diverged else []
    detail += [f"{len(bad) - diverged} with NaN or infinite metrics"] if len(bad) > diverged else []
    why = (f"{NOT_SCORED}: {len(bad)} of {len(rows)} rows are invalid ({', '.join(detail)}); "
           f"see the diverged column of results.csv")
    return [dataclasses.replace(c, passed=False, note=why) for c in claims]
