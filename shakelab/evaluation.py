"""Quality of music detection against reference labels: ``shakelab evaluate REF_DIR EST_DIR``.

``REF_DIR`` holds one reference per recording: ``<name>.txt`` (Audacity labels, every interval
is music) or ``<name>.json`` (a ``music_detection`` answer: every segment is music);
optionally ``<name>.wav`` (its length sets the duration) and ``manifest.csv`` (a
``condition`` column groups the results, as written by ``tools/devset.py``).
``EST_DIR`` holds ``<name>.json`` (the ``music_detection`` payload, on any grid, e.g. from
``metadata.window``) or ``<name>.txt`` (``start<TAB>end<TAB>confidence``).

An estimate is read as the service means it: **every returned segment is music**, whatever
its confidence, and time no segment covers is not. ``threshold`` (``--threshold``) is an
optional filter, for estimates that list every window with a probability (the local
``metadata.all_windows`` output, or a detector's frame track): then a window is music when its
confidence is >= ``threshold``.

Scores of *music presence*:

- frame level: 10 ms frames; an estimate frame is music when a (kept) segment covers it;
  counts pooled over files (``shakelab.segments.evaluate`` with ``resolution=0.01``);
- window level: 10-s windows from 0; a window is music when at least half of its 10 ms frames
  are, on each side.

Per group: precision, recall, F1 and the false-positive rate (music frames reported where
the reference has none, over all such frames).

Examples
--------
>>> from shakelab.evaluation import evaluate_dirs
>>> table = evaluate_dirs("out/devset", "out/est")        # doctest: +SKIP
>>> table.loc["all", "frame_f1"]                           # doctest: +SKIP
0.93

$ shakelab evaluate out/devset out/est
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

HOP = 0.01
WINDOW = 10.0

__all__ = ["read_segments", "to_frames", "window_decisions", "counts", "scores", "evaluate_dirs", "main"]


def read_segments(path: str | os.PathLike) -> list[dict]:
    """Segments ``[{start_time, end_time, confidence}]`` from a ``.json`` payload or a ``.txt`` label file.

    Read with :func:`shakelab.segments.read_json` / :func:`~shakelab.segments.read_labels`: in
    a label file, a label that is a number in [0, 1] is the confidence, any other label (e.g.
    ``music``) or none means 1.0.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = p.write_text("0\\t2.5\\tmusic\\n")
    >>> read_segments(p)
    [{'start_time': 0.0, 'end_time': 2.5, 'confidence': 1.0}]
    """
    from shakelab import segments

    p = Path(path)
    frame = segments.read_json(p) if p.suffix.lower() == ".json" else segments.read_labels(p)
    return [{"start_time": float(r.start_time), "end_time": float(r.end_time), "confidence": float(r.confidence)}
            for r in frame.itertuples(index=False)]


def to_frames(segments: list[dict], duration: float, *, hop: float = HOP,
              threshold: float | None = None) -> np.ndarray:
    """Boolean music track, one value per ``hop`` s over ``[0, duration)``.

    Frame ``i`` spans ``[i*hop, (i+1)*hop)`` and is music when a segment overlaps it (with
    ``threshold``: a segment with confidence >= ``threshold``).

    Examples
    --------
    >>> to_frames([{"start_time": 0.0, "end_time": 0.02, "confidence": 0.9}], 0.05).tolist()
    [True, True, False, False, False]
    """
    n = int(max(0, math.ceil(duration / hop - 1e-7)))
    diff = np.zeros(n + 1, np.int64)
    for s in segments:
        if threshold is not None and s["confidence"] < threshold:
            continue
        a = int(np.clip(math.floor(s["start_time"] / hop + 1e-7), 0, n))
        b = int(np.clip(math.ceil(s["end_time"] / hop - 1e-7), 0, n))
        if b > a:
            diff[a] += 1
            diff[b] -= 1
    return np.cumsum(diff[:n]) > 0


def window_decisions(frames: np.ndarray, *, hop: float = HOP, window: float = WINDOW) -> np.ndarray:
    """Music per ``window`` s (from 0): True when at least half of its frames are music.

    Examples
    --------
    >>> window_decisions(np.r_[np.ones(600, bool), np.zeros(700, bool)]).tolist()
    [True, False]
    """
    k = int(round(window / hop))
    f = np.asarray(frames, bool)
    return np.array([f[i:i + k].mean() >= 0.5 for i in range(0, len(f), k)], dtype=bool)


def counts(ref: np.ndarray, est: np.ndarray) -> dict:
    """tp, fp, fn, tn of two boolean tracks (the shorter is padded with False).

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


def scores(c: dict) -> dict:
    """precision, recall, f1, fpr from counts (NaN where undefined).

    Examples
    --------
    >>> scores({"tp": 8, "fp": 2, "fn": 2, "tn": 88})
    {'precision': 0.8, 'recall': 0.8, 'f1': 0.8, 'fpr': 0.0222}
    """
    def ratio(a, b):
        return round(a / b, 4) if b else math.nan

    return {"precision": ratio(c["tp"], c["tp"] + c["fp"]), "recall": ratio(c["tp"], c["tp"] + c["fn"]),
            "f1": ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]), "fpr": ratio(c["fp"], c["fp"] + c["tn"])}


def _frame_counts(ref: list[dict], est: list[dict], duration: float, threshold: float | None) -> dict:
    """Frame (10 ms) counts through :func:`shakelab.segments.evaluate`, plus the true negatives."""
    from shakelab.segments import evaluate

    ref_c = [dict(s, end_time=min(s["end_time"], duration)) for s in ref if s["start_time"] < duration]
    est_c = [dict(s, end_time=min(s["end_time"], duration)) for s in est if s["start_time"] < duration]
    r = evaluate(ref_c, est_c, resolution=HOP, threshold=threshold)
    n = int(max(0, math.ceil(duration / HOP - 1e-7)))
    tp, fp, fn = int(r["frame_tp"]), int(r["frame_fp"]), int(r["frame_fn"])
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


def evaluate_dirs(ref_dir: str | os.PathLike, est_dir: str | os.PathLike, *, threshold: float | None = None):
    """Per-group frame (10 ms) and window (10 s) scores of ``est_dir`` against ``ref_dir``.

    Every estimate segment is music unless ``threshold`` is given (then those with confidence
    >= it are: for all-window estimates).

    Returns a pandas DataFrame indexed by group (``condition`` from ``manifest.csv``, else one
    group per file) plus ``all``, with columns ``files``, ``seconds``, ``frame_precision``,
    ``frame_recall``, ``frame_f1``, ``frame_fpr``, ``window_precision``, ``window_recall``,
    ``window_f1``, ``window_fpr`` (float64; NaN where undefined, e.g. recall without music).

    Raises ``FileNotFoundError`` naming the directory when a directory or an estimate is missing.

    Examples
    --------
    >>> evaluate_dirs("out/devset", "out/est").loc["all", "window_f1"]   # doctest: +SKIP
    0.95
    """
    import pandas as pd

    ref_dir, est_dir = Path(ref_dir), Path(est_dir)
    for label, d in (("REF_DIR", ref_dir), ("EST_DIR", est_dir)):
        if not d.is_dir():
            raise FileNotFoundError(f"{label} {os.fspath(d)!r} is not a directory")
    if threshold is not None and (isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0):
        raise ValueError(f"`threshold` must be in [0, 1] or None, not {threshold!r}")
    groups: dict[str, str] = {}
    manifest = ref_dir / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            groups = {row["name"]: row.get("condition") or row["name"] for row in csv.DictReader(fh)}
    names = sorted({p.stem for p in ref_dir.glob("*.txt")} | {p.stem for p in ref_dir.glob("*.json")})
    if not names:
        raise FileNotFoundError(f"REF_DIR {os.fspath(ref_dir)!r} holds no reference (.txt or .json)")
    acc: dict[str, dict] = {}
    for name in names:
        est_path = _find(est_dir, name)
        if est_path is None:
            raise FileNotFoundError(f"EST_DIR {os.fspath(est_dir)!r} has no estimate for {name!r} "
                                    f"({name}.json or {name}.txt)")
        ref = read_segments(_find(ref_dir, name))
        est = read_segments(est_path)
        dur = _duration(ref_dir, name, ref, est)
        rf = to_frames(ref, dur)
        ef = to_frames(est, dur, threshold=threshold)
        fc = _frame_counts(ref, est, dur, threshold)
        wc = counts(window_decisions(rf), window_decisions(ef))
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
        row = {"files": a["files"], "seconds": round(a["seconds"], 2)}
        row.update({f"frame_{k}": v for k, v in scores(a["f"]).items()})
        row.update({f"window_{k}": v for k, v in scores(a["w"]).items()})
        rows[g] = row
    order = [g for g in dict.fromkeys(groups.get(n, n) for n in names)] + ["all"]
    return pd.DataFrame.from_dict(rows, orient="index").loc[order]


def main(args) -> int:
    """``shakelab evaluate REF_DIR EST_DIR``: print the table of :func:`evaluate_dirs`.

    Examples
    --------
    >>> import argparse
    >>> main(argparse.Namespace(ref_dir="out/devset", est_dir="out/est"))   # doctest: +SKIP
    0
    """
    threshold = getattr(args, "threshold", None)
    table = evaluate_dirs(args.ref_dir, args.est_dir, threshold=threshold)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0
