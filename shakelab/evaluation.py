"""Scores of music detection against a reference, shaped like mir_eval: validate, metrics, evaluate.

- :func:`validate` checks a reference and an estimate (segments frames, payload lists or output
  files) and says which estimate segments are music;
- the metrics: :func:`frame_metrics` (blocks of ``resolution`` seconds, sed_eval's
  segment-based metrics), :func:`segment_metrics` (events matched one-to-one within a
  ``collar``), and, for tracks, :func:`counts` and :func:`scores` (the one place precision,
  recall, F1 and the false-positive rate are computed);
- :func:`evaluate` returns every metric of one recording (or of several, paired by ``source``);
- :func:`evaluate_dirs` scores a folder of estimates against a folder of references, per group
  and overall: ``shakelab evaluate REF_DIR EST_DIR``.

Numbers are returned exactly; only :func:`main` rounds, when it prints.

An estimate is read as the service means it: **every returned segment is music**, whatever
its confidence, and time no segment covers is not. ``threshold`` (``--threshold``) is an
optional filter, for estimates that list every window with a probability (the local
``metadata.all_windows`` output, or a detector's frame track): then a window is music when its
confidence is >= ``threshold``. Every reference segment is music.

``REF_DIR`` holds one reference per recording: ``<name>.txt`` (Audacity labels, every interval
is music) or ``<name>.json`` (a ``music_detection`` answer: every segment is music);
optionally ``<name>.wav`` (its length sets the duration) and ``manifest.csv`` (a
``condition`` column groups the results, as written by ``tools/devset.py``).
``EST_DIR`` holds ``<name>.json`` (the ``music_detection`` payload, on any grid, e.g. from
``metadata.window``) or ``<name>.txt`` (``start<TAB>end<TAB>confidence``). Scores of *music
presence*, pooled over the files of a group: frame level on 10 ms frames; window level on 10-s
windows from 0, a window being music when at least half of its frames are, on each side.

Examples
--------
>>> from shakelab import evaluation
>>> documented = [{"start_time": 20.0, "end_time": 30.0, "confidence": 0.17867346107959747},
...               {"start_time": 40.0, "end_time": 60.0, "confidence": 0.3173922598361969}]
>>> reference = [{"start_time": 20, "end_time": 30}, {"start_time": 40, "end_time": 60}]
>>> scores = evaluation.evaluate(reference, documented)
>>> scores["frame_recall"], scores["segment_f1"]
(1.0, 1.0)
>>> evaluation.evaluate(reference, documented, threshold=0.5)["frame_recall"]
0.0
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shakelab.errors import ValidationError
from shakelab.frames import as_segments
from shakelab.labels import read_json, read_labels
from shakelab.segments import _check_number, _frame_index, _is, _merge_group, _n_frames, select_music

HOP = 0.01
WINDOW = 10.0

__all__ = ["HOP", "WINDOW", "MissingInputError", "activity", "counts", "evaluate", "evaluate_dirs",
           "frame_metrics", "main", "read_segments", "scores", "segment_metrics", "validate", "window_decisions"]


class MissingInputError(ValidationError, FileNotFoundError):
    """A reference or estimate folder, or a file in it, is missing (a ``FileNotFoundError`` too)."""


# --------------------------------------------------------------------------- validation
def validate(reference: Any, estimate: Any, *, threshold: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check a reference and an estimate; return them as segments frames, the estimate's music only.

    Parameters
    ----------
    reference, estimate : pandas.DataFrame, list of dict or path
        Segments (see :func:`shakelab.frames.as_segments`). Every reference segment is music.
    threshold : float, optional
        In [0, 1]: estimate segments count when their confidence is >= it; default none (every
        estimate segment is music). Required for all-window output.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(reference, estimate)``.

    Raises
    ------
    ValidationError
        A bad row (naming it and its value), a bad ``threshold``, or all-window output without
        a threshold.

    Examples
    --------
    >>> ref, est = validate([{"start_time": 0, "end_time": 10}],
    ...                     [{"start_time": 0, "end_time": 5, "confidence": 0.2}], threshold=0.5)
    >>> len(ref), len(est)
    (1, 0)
    """
    return as_segments(reference), select_music(as_segments(estimate), threshold)


def _pairs(ref: pd.DataFrame, est: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Pair reference and estimate by source; one source each -> the same recording."""
    rs, es = list(pd.unique(ref["source"])), list(pd.unique(est["source"]))
    if len(rs) <= 1 and len(es) <= 1:
        return [(ref, est)]
    keys = list(dict.fromkeys(rs + es))
    return [(ref[_is(ref["source"], k)], est[_is(est["source"], k)]) for k in keys]


# --------------------------------------------------------------------------- tracks and counts
def _track(starts: np.ndarray, ends: np.ndarray, n: int, hop: float) -> np.ndarray:
    """Boolean track of ``n`` frames: True where an interval overlaps the frame (overlaps allowed)."""
    diff = np.zeros(n + 1, np.int64)
    i0, i1 = _frame_index(starts, ends, hop, n)
    np.add.at(diff, i0, 1)
    np.add.at(diff, i1, -1)
    return np.cumsum(diff[:n]) > 0


def activity(segments: Any, duration: float, *, hop: float = HOP, threshold: float | None = None) -> np.ndarray:
    """Boolean music track, one value per ``hop`` s over ``[0, duration)``.

    Frame ``i`` spans ``[i*hop, (i+1)*hop)`` and is music when a segment overlaps it (with
    ``threshold``: a segment with confidence >= ``threshold``). The confidence timeline of
    segments is :func:`shakelab.segments.timeline`.

    Examples
    --------
    >>> activity([{"start_time": 0.0, "end_time": 0.02, "confidence": 0.9}], 0.05).tolist()
    [True, True, False, False, False]
    """
    df = as_segments(segments)
    if threshold is not None:
        df = df[df["confidence"].to_numpy() >= _check_number("threshold", threshold, high=1.0)]
    h = _check_number("hop", hop, low_open=True)
    return _track(df["start_time"].to_numpy(), df["end_time"].to_numpy(),
                  _n_frames(_check_number("duration", duration), h), h)


def window_decisions(frames: np.ndarray, *, hop: float = HOP, window: float = WINDOW) -> np.ndarray:
    """Music per ``window`` s (from 0): True when at least half of its frames are music.

    Examples
    --------
    >>> window_decisions(np.r_[np.ones(600, bool), np.zeros(700, bool)]).tolist()
    [True, False]
    """
    k = round(window / hop)
    f = np.asarray(frames, bool)
    return np.array([f[i:i + k].mean() >= 0.5 for i in range(0, len(f), k)], dtype=bool)


def counts(ref: np.ndarray, est: np.ndarray) -> dict:
    """Count tp, fp, fn, tn of two boolean tracks (the shorter is padded with False).

    Examples
    --------
    >>> counts(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    {'tp': 1, 'fp': 1, 'fn': 1, 'tn': 1}
    """
    n = max(len(ref), len(est))
    r = np.zeros(n, bool)
    e = np.zeros(n, bool)
    r[:len(ref)] = ref
    e[:len(est)] = est
    return {"tp": int(np.sum(r & e)), "fp": int(np.sum(~r & e)), "fn": int(np.sum(r & ~e)), "tn": int(np.sum(~r & ~e))}


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def scores(c: dict) -> dict:
    """Precision, recall, F1 (and the false-positive rate when ``c`` has ``tn``) from counts.

    A ratio whose denominator is 0 is NaN (e.g. precision with no estimated music). Exact:
    round when printing.

    Examples
    --------
    >>> s = scores({"tp": 8, "fp": 2, "fn": 2, "tn": 88})
    >>> {k: round(v, 4) for k, v in s.items()}
    {'precision': 0.8, 'recall': 0.8, 'f1': 0.8, 'fpr': 0.0222}
    >>> scores({"tp": 0, "fp": 0, "fn": 3})
    {'precision': nan, 'recall': 0.0, 'f1': 0.0}
    """
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    out = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}
    if "tn" in c:
        out["fpr"] = _ratio(fp, fp + c["tn"])
    return out


# --------------------------------------------------------------------------- metrics
def _frame_counts_of(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], res: float) -> dict:
    tp = fp = fn = 0
    for r, e in pairs:
        end = max(r["end_time"].max() if len(r) else 0.0, e["end_time"].max() if len(e) else 0.0)
        n = _n_frames(float(end), res)
        a = _track(r["start_time"].to_numpy(), r["end_time"].to_numpy(), n, res)
        b = _track(e["start_time"].to_numpy(), e["end_time"].to_numpy(), n, res)
        tp += int(np.sum(a & b))
        fp += int(np.sum(~a & b))
        fn += int(np.sum(a & ~b))
    return {"tp": tp, "fp": fp, "fn": fn}


def _events(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and offsets of the events: touching or overlapping segments merged."""
    if not len(df):
        return np.zeros(0), np.zeros(0)
    s, e, _ = _merge_group(df["start_time"].to_numpy(), df["end_time"].to_numpy(), np.zeros(len(df)), 0.0)
    return s, e


def _segment_counts_of(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], col: float) -> dict:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    tp = fp = fn = 0
    for r, e in pairs:
        rs, re_ = _events(r)
        es, ee = _events(e)
        hits = 0
        if len(rs) and len(es):
            tol = col + 1e-9
            hit = (np.abs(rs[:, None] - es[None, :]) <= tol) & (np.abs(re_[:, None] - ee[None, :]) <= tol)
            match = maximum_bipartite_matching(csr_matrix(hit.astype(np.int8)), perm_type="column")
            hits = int(np.sum(match >= 0))
        tp += hits
        fp += len(es) - hits
        fn += len(rs) - hits
    return {"tp": tp, "fp": fp, "fn": fn}


def frame_metrics(reference: Any, estimate: Any, *, resolution: float = HOP,
                  threshold: float | None = None) -> dict:
    """Frame-level precision, recall and F1 (sed_eval's segment-based metrics).

    The timeline is cut into blocks of ``resolution`` seconds; a block is active when any
    segment overlaps it, and blocks are counted as true/false positives/negatives, pooled over
    sources (see :func:`evaluate` for the pairing).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (NaN when undefined), ``tp``, ``fp``, ``fn`` (blocks).

    Examples
    --------
    >>> frame_metrics([{"start_time": 0, "end_time": 10}], [{"start_time": 5, "end_time": 10}],
    ...               resolution=1.0)
    {'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'tp': 5, 'fp': 0, 'fn': 5}
    """
    res = _check_number("resolution", resolution, low_open=True)
    c = _frame_counts_of(_pairs(*validate(reference, estimate, threshold=threshold)), res)
    return {**scores(c), **c}


def segment_metrics(reference: Any, estimate: Any, *, collar: float = 0.5,
                    threshold: float | None = None) -> dict:
    """Segment-level precision, recall and F1: events matched one-to-one within a collar.

    Touching or overlapping segments are merged into events on each side; an estimated event
    matches a reference event when both its onset and its offset are within ``collar`` seconds
    (maximum bipartite matching).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (NaN when undefined), ``tp``, ``fp``, ``fn`` (events).

    Examples
    --------
    >>> segment_metrics([{"start_time": 0, "end_time": 10}], [{"start_time": 0.4, "end_time": 9.7}])
    {'precision': 1.0, 'recall': 1.0, 'f1': 1.0, 'tp': 1, 'fp': 0, 'fn': 0}
    """
    col = _check_number("collar", collar)
    c = _segment_counts_of(_pairs(*validate(reference, estimate, threshold=threshold)), col)
    return {**scores(c), **c}


def evaluate(reference: Any, estimate: Any, *, resolution: float = HOP,
             threshold: float | None = None, collar: float = 0.5) -> dict:
    """Every score of detected music against a reference annotation.

    Every reference segment counts as music (its confidence is ignored), and so does every
    estimate segment (the service returns only music), unless ``threshold`` is given: then
    estimate segments count when their confidence is >= it (required for all-window
    output, whose rows are every window). With several sources, reference and
    estimate are paired by ``source`` and counts are pooled; with one source on each side
    they are taken to be the same recording whatever their names.

    Parameters
    ----------
    reference, estimate : pandas.DataFrame, list of dict or path
        Segments (see :func:`shakelab.frames.as_segments`).
    resolution : float
        Block length for the frame-level scores (:func:`frame_metrics`), > 0.
    threshold : float, optional
        Minimum estimate confidence, in [0, 1]; default none (every estimate segment is music).
    collar : float
        Onset and offset tolerance in seconds for the segment-level scores
        (:func:`segment_metrics`), >= 0.

    Returns
    -------
    dict
        ``frame_precision``, ``frame_recall``, ``frame_f1``, ``frame_tp``, ``frame_fp``,
        ``frame_fn`` (counts of blocks), ``segment_precision``, ``segment_recall``,
        ``segment_f1``, ``segment_tp``, ``segment_fp``, ``segment_fn`` (counts of events),
        and the ``resolution``, ``threshold`` (None when not given) and ``collar`` used. A ratio
        whose denominator is 0 is NaN (e.g. precision with no estimated music).

    Examples
    --------
    >>> ref = [{"start_time": 0, "end_time": 10, "confidence": 1}]
    >>> est = [{"start_time": 0, "end_time": 5, "confidence": 0.9},
    ...        {"start_time": 5, "end_time": 20, "confidence": 0.2}]
    >>> r = evaluate(ref, est, resolution=1.0)
    >>> r["frame_precision"], r["frame_recall"], r["segment_tp"], r["segment_fp"]
    (0.5, 1.0, 0, 1)
    >>> evaluate(ref, est, resolution=1.0, threshold=0.5)["frame_recall"]
    0.5
    """
    res = _check_number("resolution", resolution, low_open=True)
    thr = None if threshold is None else _check_number("threshold", threshold, high=1.0)
    col = _check_number("collar", collar)
    pairs = _pairs(*validate(reference, estimate, threshold=thr))
    out: dict[str, Any] = {}
    for level, c in (("frame", _frame_counts_of(pairs, res)), ("segment", _segment_counts_of(pairs, col))):
        out.update({f"{level}_{k}": v for k, v in {**scores(c), **c}.items()})
    return {**out, "resolution": res, "threshold": thr, "collar": col}


# --------------------------------------------------------------------------- folders
def read_segments(path: str | os.PathLike) -> list[dict]:
    r"""Segments ``[{start_time, end_time, confidence}]`` from a ``.json`` payload or a ``.txt`` label file.

    Read with :func:`shakelab.labels.read_json` / :func:`~shakelab.labels.read_labels`: in
    a label file, a label that is a number in [0, 1] is the confidence, any other label (e.g.
    ``music``) or none means 1.0.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = p.write_text("0\t2.5\tmusic\n")
    >>> read_segments(p)
    [{'start_time': 0.0, 'end_time': 2.5, 'confidence': 1.0}]
    """
    p = Path(path)
    frame = read_json(p) if p.suffix.lower() == ".json" else read_labels(p)
    return [{"start_time": float(r.start_time), "end_time": float(r.end_time), "confidence": float(r.confidence)}
            for r in frame.itertuples(index=False)]


def _frame_counts(ref: list[dict], est: list[dict], duration: float, threshold: float | None) -> dict:
    """Frame (10 ms) counts over ``[0, duration)`` through :func:`frame_metrics`, plus the true negatives."""
    ref_c = [dict(s, end_time=min(s["end_time"], duration)) for s in ref if s["start_time"] < duration]
    est_c = [dict(s, end_time=min(s["end_time"], duration)) for s in est if s["start_time"] < duration]
    r = frame_metrics(ref_c, est_c, resolution=HOP, threshold=threshold)
    n = _n_frames(duration, HOP)
    tp, fp, fn = r["tp"], r["fp"], r["fn"]
    return {"tp": tp, "fp": fp, "fn": fn, "tn": n - tp - fp - fn}


def _duration(ref_dir: Path, name: str, ref: list[dict], est: list[dict]) -> float:
    wav = ref_dir / f"{name}.wav"
    if wav.is_file():
        from shakelab.audio import info

        return info(wav).duration
    ends = [s["end_time"] for s in ref + est]
    return max(ends) if ends else 0.0


def _find(d: Path, name: str) -> Path | None:
    for ext in (".json", ".txt"):
        if (d / f"{name}{ext}").is_file():
            return d / f"{name}{ext}"
    return None


def evaluate_dirs(ref_dir: str | os.PathLike, est_dir: str | os.PathLike, *,
                  threshold: float | None = None) -> pd.DataFrame:
    r"""Per-group frame (10 ms) and window (10 s) scores of ``est_dir`` against ``ref_dir``.

    Every estimate segment is music unless ``threshold`` is given (then those with confidence
    >= it are: for all-window estimates).

    Returns
    -------
    pandas.DataFrame
        Indexed by group (``condition`` from ``manifest.csv``, else one group per file) plus
        ``all``, with columns ``files``, ``seconds``, ``frame_precision``, ``frame_recall``,
        ``frame_f1``, ``frame_fpr``, ``window_precision``, ``window_recall``, ``window_f1``,
        ``window_fpr`` (float64, exact; NaN where undefined, e.g. recall without music).

    Raises
    ------
    MissingInputError
        Naming the directory when a directory or an estimate is missing (a ``FileNotFoundError``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for d, text in (("ref", "0\t20\tmusic\n"), ("est", "0\t15\t0.9\n")):
    ...     (root / d).mkdir(); _ = (root / d / "take.txt").write_text(text)
    >>> evaluate_dirs(root / "ref", root / "est").loc["all", ["frame_recall", "window_recall"]].tolist()
    [0.75, 1.0]
    """
    ref_dir, est_dir = Path(ref_dir), Path(est_dir)
    for label, d in (("REF_DIR", ref_dir), ("EST_DIR", est_dir)):
        if not d.is_dir():
            raise MissingInputError(f"{label} {os.fspath(d)!r} is not a directory")
    if threshold is not None and (isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0):
        raise ValidationError(f"`threshold` must be in [0, 1] or None, not {threshold!r}")
    groups: dict[str, str] = {}
    manifest = ref_dir / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            groups = {row["name"]: row.get("condition") or row["name"] for row in csv.DictReader(fh)}
    names = sorted({p.stem for p in ref_dir.glob("*.txt")} | {p.stem for p in ref_dir.glob("*.json")})
    if not names:
        raise MissingInputError(f"REF_DIR {os.fspath(ref_dir)!r} holds no reference (.txt or .json)")
    acc: dict[str, dict] = {}
    for name in names:
        ref_path, est_path = _find(ref_dir, name), _find(est_dir, name)
        if est_path is None or ref_path is None:
            raise MissingInputError(f"EST_DIR {os.fspath(est_dir)!r} has no estimate for {name!r} "
                                    f"({name}.json or {name}.txt)")
        ref = read_segments(ref_path)
        est = read_segments(est_path)
        dur = _duration(ref_dir, name, ref, est)
        fc = _frame_counts(ref, est, dur, threshold)
        wc = counts(window_decisions(activity(ref, dur)), window_decisions(activity(est, dur, threshold=threshold)))
        for g in (groups.get(name, name), "all"):
            a = acc.setdefault(g, {"files": 0, "seconds": 0.0, "f": dict.fromkeys(("tp", "fp", "fn", "tn"), 0),
                                   "w": dict.fromkeys(("tp", "fp", "fn", "tn"), 0)})
            a["files"] += 1
            a["seconds"] += dur
            for k in ("tp", "fp", "fn", "tn"):
                a["f"][k] += fc[k]
                a["w"][k] += wc[k]
    rows = {}
    for g, a in acc.items():
        row = {"files": a["files"], "seconds": a["seconds"]}
        row.update({f"frame_{k}": v for k, v in scores(a["f"]).items()})
        row.update({f"window_{k}": v for k, v in scores(a["w"]).items()})
        rows[g] = row
    order = [*dict.fromkeys(groups.get(n, n) for n in names), "all"]
    return pd.DataFrame.from_dict(rows, orient="index").loc[order]


def main(args: Any) -> int:
    r"""Print the table of :func:`evaluate_dirs` (``shakelab evaluate REF_DIR EST_DIR``), rounded to 3 decimals.

    Examples
    --------
    >>> import argparse, pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for d in ("ref", "est"):
    ...     (root / d).mkdir(); _ = (root / d / "take.txt").write_text("0\t20\tmusic\n")
    >>> args = argparse.Namespace(ref_dir=root / "ref", est_dir=root / "est")
    >>> main(args)  # doctest: +NORMALIZE_WHITESPACE, +ELLIPSIS
    files seconds frame_precision frame_recall frame_f1 frame_fpr window_precision window_recall
    ...
    all 1 20.000 1.000 1.000 1.000 NaN 1.000 1.000
    ...
    0
    """
    threshold = getattr(args, "threshold", None)
    table = evaluate_dirs(args.ref_dir, args.est_dir, threshold=threshold)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0
