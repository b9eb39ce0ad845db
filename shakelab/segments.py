"""Analysis of music-detection intervals: threshold, merge, coverage, evaluate, label I/O.

Every function takes segments as a DataFrame with the columns of
:func:`shakelab.frames.segments_frame` (``source``, ``job_id``, ``start_time``, ``end_time``,
``duration``, ``confidence``, ``provenance``) or as the raw ``music_detection`` payload
(``[{"start_time", "end_time", "confidence"}, ...]``), and returns new DataFrames; inputs are
never modified. Pure pandas/numpy, no plotting.

**What a segment means.** The service returns only the segments where music is present, so
every returned segment is music whatever its confidence (the documented example's 0.18 and
0.32 both are), and time no segment covers has none. With their defaults, :func:`coverage`
and :func:`evaluate` count every segment; ``threshold=`` is an explicit, optional filter.
Frames of the local all-window extension (every window with its score; their
``provenance`` ends in ``:all_windows``) hold windows without music too: those functions then
ask for a ``threshold`` rather than count every window as music.

Bad input (an end before its start, a negative or non-finite time, a confidence outside
[0, 1], overlapping intervals where a function does not allow them) raises ``ValueError``
naming the row and the value. Empty input gives empty output with the same columns.

Examples
--------
>>> from shakelab import segments as sg
>>> documented = [{"start_time": 20.0, "end_time": 30.0, "confidence": 0.17867346107959747},
...               {"start_time": 40.0, "end_time": 60.0, "confidence": 0.3173922598361969}]
>>> sg.coverage(documented, duration=70.0)[["music_seconds", "share"]].to_dict("records")
[{'music_seconds': 30.0, 'share': 0.42857142857142855}]
>>> sg.evaluate([{"start_time": 20, "end_time": 30}, {"start_time": 40, "end_time": 60}],
...             documented)["frame_recall"]
1.0
>>> sg.coverage(documented, duration=70.0, threshold=0.3)["music_seconds"].tolist()
[20.0]
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS", "as_frame", "threshold", "merge", "drop_short", "coverage", "to_frames",
    "evaluate", "read_labels", "write_labels", "read_csv", "write_csv", "read_json",
    "write_json",
]

#: Column order of a segments frame (the ``segments_frame`` contract).
COLUMNS = ["source", "job_id", "start_time", "end_time", "duration", "confidence", "provenance"]

_KEYS = ["source", "job_id"]
# Tolerance (in frames) when mapping times to frame indices, so that 10.0 s at a 0.01 s hop
# is frame 1000 exactly despite binary floating point.
_EPS = 1e-7


# --------------------------------------------------------------------------- coercion
def _empty() -> pd.DataFrame:
    return pd.DataFrame({
        "source": pd.Series([], dtype="string"),
        "job_id": pd.Series([], dtype="string"),
        "start_time": pd.Series([], dtype="float64"),
        "end_time": pd.Series([], dtype="float64"),
        "duration": pd.Series([], dtype="float64"),
        "confidence": pd.Series([], dtype="float64"),
        "provenance": pd.Series([], dtype="string"),
    })


def _payload_frame(rows: list, *, source: str | None = None,
                   job_id: str | None = None) -> pd.DataFrame:
    """Build a segments frame from the raw payload list, checking each row's shape."""
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i}: a segment must be a mapping with start_time, end_time "
                             f"and confidence, not {row!r}")
        for key in ("start_time", "end_time"):
            if key not in row:
                raise ValueError(f"row {i}: missing `{key}` in {dict(row)!r}")
        records.append(row)
    if not records:
        out = _empty()
    else:
        out = pd.DataFrame({
            "start_time": [r["start_time"] for r in records],
            "end_time": [r["end_time"] for r in records],
            "confidence": [r.get("confidence", 1.0) for r in records],
        })
    if source is not None:
        out["source"] = source
    if job_id is not None:
        out["job_id"] = job_id
    return out


def _from_payload(rows: list) -> pd.DataFrame:
    """The raw page payload -> a frame, through :func:`shakelab.frames.segments_frame`."""
    from shakelab.frames import segments_frame

    as_frame(_payload_frame(rows))  # our checks first: messages name the row and value
    return segments_frame([r if "confidence" in r else {**r, "confidence": 1.0} for r in rows])


def _bad(df: pd.DataFrame, mask: np.ndarray, message: str) -> None:
    """Raise ValueError for the first row where ``mask`` is True."""
    if mask.any():
        pos = int(np.flatnonzero(mask)[0])
        row = df.iloc[pos]
        where = f"row {df.index[pos]!r}"
        if "source" in df.columns and not pd.isna(row["source"]):
            where += f" (source {row['source']!r})"
        raise ValueError(f"{where}: " + message.format(**{k: _py(row[k]) for k in df.columns}))


def _py(v: Any) -> Any:
    """numpy scalars -> Python scalars, so messages show 2.0, not np.float64(2.0)."""
    return v.item() if isinstance(v, np.generic) else v


def as_frame(segments: Any, *, allow_overlap: bool = True) -> pd.DataFrame:
    """Check segments and return them as a segments frame.

    Parameters
    ----------
    segments : pandas.DataFrame, list of dict or path
        A frame with at least ``start_time`` and ``end_time`` (``confidence`` defaults to 1.0,
        ``source``/``job_id`` to missing, ``duration`` is recomputed), the raw
        ``music_detection`` payload ``[{"start_time", "end_time", "confidence"}]``, or the
        path of a music_detection ``.json``/``.txt`` output (read by
        :func:`shakelab.frames.segments_frame`).
    allow_overlap : bool
        When False, overlapping intervals of the same source and job raise ``ValueError``
        (touching ones are fine).

    Returns
    -------
    pandas.DataFrame
        Columns ``source`` (string), ``job_id`` (string), ``start_time``, ``end_time``,
        ``duration``, ``confidence`` (float64), ``provenance`` (string; <NA> when the input has
        none), then any extra columns of the input.

    Raises
    ------
    ValueError
        Naming the row and the value: non-numeric or non-finite times, negative times, an end
        before its start, a confidence outside [0, 1], or an overlap when not allowed.

    Examples
    --------
    >>> as_frame([{"start_time": 0, "end_time": 10, "confidence": 0.5}]).columns.tolist()
    ['source', 'job_id', 'start_time', 'end_time', 'duration', 'confidence', 'provenance']
    >>> as_frame([{"start_time": 5, "end_time": 2, "confidence": 0.5}])
    Traceback (most recent call last):
    ...
    ValueError: row 0: `end_time` 2.0 is before `start_time` 5.0
    """
    if isinstance(segments, pd.DataFrame):
        df = segments.copy()
    elif isinstance(segments, (list, tuple)):
        df = _from_payload(list(segments))
    elif isinstance(segments, os.PathLike) or (isinstance(segments, str)
                                               and Path(segments).is_file()):
        from shakelab.frames import segments_frame

        df = segments_frame(Path(segments))  # a music_detection .json or .txt output file
    else:
        raise ValueError("`segments` must be a pandas DataFrame, a list of "
                         "{start_time, end_time, confidence} dicts or the path of a "
                         f"music_detection output file, not {type(segments).__name__} "
                         f"{segments!r:.60}")
    for key in ("start_time", "end_time"):
        if key not in df.columns:
            raise ValueError(f"`segments` has no `{key}` column (columns: {list(df.columns)})")
    if "confidence" not in df.columns:
        df["confidence"] = 1.0
    for key in _KEYS + ["provenance"]:
        if key not in df.columns:
            df[key] = pd.Series(pd.NA, index=df.index, dtype="string")
        else:
            df[key] = df[key].astype("string")
    for key in ("start_time", "end_time", "confidence"):
        raw = df[key]
        num = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = (~np.isfinite(num.to_numpy())) if len(num) else np.zeros(0, bool)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise ValueError(f"row {df.index[pos]!r}: `{key}` must be a finite number, "
                             f"not {raw.iloc[pos]!r}")
        df[key] = num
    start = df["start_time"].to_numpy()
    end = df["end_time"].to_numpy()
    conf = df["confidence"].to_numpy()
    _bad(df, start < 0, "`start_time` {start_time!r} is negative")
    _bad(df, end < start, "`end_time` {end_time!r} is before `start_time` {start_time!r}")
    _bad(df, (conf < 0) | (conf > 1), "`confidence` {confidence!r} is outside [0, 1]")
    df["duration"] = end - start
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    if not allow_overlap:
        _check_overlap(df, _KEYS)
    return df


def _check_overlap(df: pd.DataFrame, keys: list[str]) -> None:
    for _, g in df.groupby(keys, dropna=False, sort=False):
        if len(g) < 2:
            continue
        g = g.sort_values("start_time", kind="stable")
        ends = np.maximum.accumulate(g["end_time"].to_numpy())
        starts = g["start_time"].to_numpy()
        over = np.flatnonzero(starts[1:] < ends[:-1])
        if len(over):
            i = int(over[0]) + 1
            prev = int(np.argmax(g["end_time"].to_numpy()[:i]))
            a, b = g.iloc[prev], g.iloc[i]
            raise ValueError(
                f"row {g.index[i]!r}: interval [{_py(b['start_time'])!r}, {_py(b['end_time'])!r}] "
                f"overlaps row {g.index[prev]!r} [{_py(a['start_time'])!r}, {_py(a['end_time'])!r}]"
                + (f" (source {b['source']!r})" if not pd.isna(b["source"]) else "")
                + "; merge() them first")


def _check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                  low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, not {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < low or v > high or (
            low_open and v == low):
        bounds = f"{'>' if low_open else '>='} {low:g}" + (
            f" and <= {high:g}" if math.isfinite(high) else "")
        raise ValueError(f"`{name}` must be a finite number {bounds}, not {value!r}")
    return v


# --------------------------------------------------------------------------- transforms
def threshold(segments: Any, min_confidence: float) -> pd.DataFrame:
    """Keep the segments whose confidence is at least ``min_confidence``.

    Parameters
    ----------
    segments : pandas.DataFrame or list of dict
        Segments (see :func:`as_frame`).
    min_confidence : float
        In [0, 1]; the comparison is inclusive.

    Returns
    -------
    pandas.DataFrame
        The kept rows, in their order, with a fresh index; the columns of :func:`as_frame`.

    Examples
    --------
    >>> threshold([{"start_time": 0, "end_time": 10, "confidence": 0.4},
    ...            {"start_time": 10, "end_time": 20, "confidence": 0.6}], 0.5)["start_time"].tolist()
    [10.0]
    """
    t = _check_number("min_confidence", min_confidence, high=1.0)
    df = as_frame(segments)
    return df[df["confidence"].to_numpy() >= t].reset_index(drop=True)


def drop_short(segments: Any, min_duration: float) -> pd.DataFrame:
    """Drop segments shorter than ``min_duration`` seconds (a segment of exactly it stays).

    Examples
    --------
    >>> drop_short([{"start_time": 0, "end_time": 1, "confidence": 1},
    ...             {"start_time": 5, "end_time": 9, "confidence": 1}], 2.0)["end_time"].tolist()
    [9.0]
    """
    m = _check_number("min_duration", min_duration)
    df = as_frame(segments)
    return df[df["duration"].to_numpy() >= m].reset_index(drop=True)


def _merge_group(starts: np.ndarray, ends: np.ndarray, conf: np.ndarray, gap: float):
    order = np.lexsort((ends, starts))
    s, e, c = starts[order], ends[order], conf[order]
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), bool)
    new[1:] = s[1:] > reach[:-1] + gap
    label = np.cumsum(new) - 1
    n = int(label[-1]) + 1
    out_s = s[new]
    out_e = np.full(n, -np.inf)
    np.maximum.at(out_e, label, e)
    w = e - s
    wsum = np.bincount(label, weights=w, minlength=n)
    csum = np.bincount(label, weights=w * c, minlength=n)
    cnt = np.bincount(label, minlength=n)
    cplain = np.bincount(label, weights=c, minlength=n) / cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        out_c = np.where(wsum > 0, csum / np.where(wsum > 0, wsum, 1.0), cplain)
    # Keep the confidence inside [min, max] of its parts despite rounding.
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, label, c)
    np.maximum.at(hi, label, c)
    return out_s, out_e, np.clip(out_c, lo, hi)


def merge(segments: Any, *, gap: float = 0.0) -> pd.DataFrame:
    """Join overlapping, touching or nearly touching segments of the same source, job and provenance.

    Two segments join when the second starts at most ``gap`` seconds after the end of the
    first. The merged confidence is the duration-weighted mean of its parts (the plain mean
    when all parts have zero length).

    Parameters
    ----------
    segments : pandas.DataFrame or list of dict
        Segments (see :func:`as_frame`); overlaps are allowed.
    gap : float
        Largest gap in seconds to bridge, >= 0.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`as_frame` (extra columns dropped), sorted by source, job and
        start, with a fresh index; within each source and job the intervals are disjoint and
        separated by more than ``gap``.

    Examples
    --------
    >>> merge([{"start_time": 0, "end_time": 10, "confidence": 1.0},
    ...        {"start_time": 11, "end_time": 21, "confidence": 0.5}], gap=1.0)[
    ...     ["start_time", "end_time", "confidence"]].to_dict("records")
    [{'start_time': 0.0, 'end_time': 21.0, 'confidence': 0.75}]
    """
    g = _check_number("gap", gap)
    df = as_frame(segments)
    if df.empty:
        return df[COLUMNS].reset_index(drop=True)
    parts = []
    for key, grp in df.groupby(_KEYS + ["provenance"], dropna=False, sort=True):
        s, e, c = _merge_group(grp["start_time"].to_numpy(), grp["end_time"].to_numpy(),
                               grp["confidence"].to_numpy(), g)
        parts.append(pd.DataFrame({
            "source": pd.Series([key[0]] * len(s), dtype="string"),
            "job_id": pd.Series([key[1]] * len(s), dtype="string"),
            "start_time": s, "end_time": e, "duration": e - s, "confidence": c,
            "provenance": pd.Series([key[2]] * len(s), dtype="string"),
        }))
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def _union_seconds(starts: np.ndarray, ends: np.ndarray) -> float:
    if len(starts) == 0:
        return 0.0
    s, e, _ = _merge_group(starts, ends, np.zeros(len(starts)), 0.0)
    return float(np.sum(e - s))


def _durations(df: pd.DataFrame, duration: Any, by: str = "source", *, audio: Any = None,
               fallback_end: bool = True) -> dict:
    """source -> total duration in seconds, from a number / a mapping, else ``audio``.

    A mapping may name sources without segments (recordings without music): they are added.
    Without ``duration`` or ``audio``, ``fallback_end`` takes each source's last segment end;
    otherwise a source that is itself an audio file gives its length, and any other raises.
    """
    sources = list(pd.unique(df[by]))
    if isinstance(duration, (Mapping, pd.Series)):
        out = {}
        for k in sources:
            key = None if pd.isna(k) else k
            if key not in duration:
                raise ValueError(f"`duration` has no entry for source {key!r} "
                                 f"(keys: {list(duration.keys())!r})")
            out[k] = _check_number(f"duration[{key!r}]", duration[key])
        for key in duration.keys():
            if key not in out:
                out[key] = _check_number(f"duration[{key!r}]", duration[key])
        return out
    if duration is not None:
        d = _check_number("duration", duration)
        return {k: d for k in sources}
    if fallback_end:
        return {k: float(df.loc[_is(df[by], k), "end_time"].max()) for k in sources}
    return _audio_durations(sources, audio)


def _audio_durations(sources: list, audio: Any) -> dict:
    """source -> length of its audio file (``audio``: one path, or a mapping source -> path)."""
    from shakelab.audio import info

    def length(path: Any, key: Any) -> float:
        try:
            return float(info(path).duration)
        except Exception as exc:  # noqa: BLE001 - reported with the source it was for
            raise ValueError(f"cannot read the length of {key!r} from `audio` {os.fspath(path)!r}: {exc}") \
                from None

    if audio is not None and not isinstance(audio, (Mapping, pd.Series)):
        if len(sources) > 1:
            raise ValueError(f"`audio` is one file but `segments` holds {len(sources)} sources; pass a "
                             "mapping source -> file")
        if not sources:  # no segment at all: the recording is the file
            return {Path(os.fspath(audio)).name: length(audio, Path(os.fspath(audio)).name)}
        return {k: length(audio, k) for k in sources}
    files = dict(audio or {})
    out = {}
    for k in sources:
        key = None if pd.isna(k) else k
        if key in files:
            out[k] = length(files[key], key)
        elif key is not None and Path(key).is_file():
            out[k] = length(key, key)
        else:
            raise ValueError(f"cannot know the length of recording {key!r}: pass `duration=` (seconds, "
                             "or a mapping source -> seconds) or `audio=` (its audio file)")
    for key, path in files.items():  # recordings without any segment: no music found
        if key not in out:
            out[key] = length(path, key)
    return out


def _is(col: pd.Series, key: Any) -> np.ndarray:
    if pd.isna(key):
        return col.isna().to_numpy()
    return (col == key).fillna(False).to_numpy(dtype=bool)


def _music(df: pd.DataFrame, threshold: Any, *, param: str = "threshold") -> pd.DataFrame:
    """The rows that are music: every returned segment, or those >= ``threshold`` when given.

    All-window output (windows without music too) needs an explicit threshold.
    """
    if threshold is not None:
        t = _check_number(param, threshold, high=1.0)
        return df[df["confidence"].to_numpy() >= t]
    from shakelab.frames import is_all_windows

    every = is_all_windows(df)
    if every.any():
        origin = df["provenance"].iloc[int(np.argmax(every))]
        raise ValueError(f"these segments are every window of the local all-window output (provenance "
                         f"{origin!r}), music or not: pass `{param}=` (e.g. 0.5) to say which are music")
    return df


def coverage(segments: Any, *, duration: Any = None, audio: Any = None,
             threshold: float | None = None) -> pd.DataFrame:
    """Seconds and share of each recording covered by music segments (overlaps counted once).

    Every segment is music, whatever its confidence (what the service's answer means);
    ``threshold`` keeps only segments with confidence >= it.

    Parameters
    ----------
    segments : pandas.DataFrame or list of dict
        Segments (see :func:`as_frame`).
    duration : float or mapping, optional
        Length of the recording(s) in seconds: one number for all sources, or a mapping
        source -> seconds; a source of the mapping without segments (no music found) gets a
        row with 0 music seconds. Segments beyond it are clipped.
    audio : path or mapping, optional
        Without ``duration``: the audio file (or a mapping source -> file) whose length is the
        recording's. Without either, a ``source`` that is an existing audio file is read;
        otherwise ``ValueError`` says the length cannot be known (the last segment's end is
        not the recording's end: time after it has no music).
    threshold : float, optional
        In [0, 1]: count only segments with confidence >= it. Required for all-window output.

    Returns
    -------
    pandas.DataFrame
        One row per source: ``source`` (string), ``music_seconds`` (float64), ``duration``
        (float64), ``share`` (float64, ``music_seconds / duration``; NaN when the duration
        is 0). Empty in (and no mapping), empty out.

    Examples
    --------
    >>> coverage([{"start_time": 0, "end_time": 10, "confidence": 0.1},
    ...           {"start_time": 5, "end_time": 15, "confidence": 0.9}], duration=60)[
    ...     ["music_seconds", "share"]].to_dict("records")
    [{'music_seconds': 15.0, 'share': 0.25}]
    >>> coverage([], duration={"silent.wav": 30.0})[["source", "music_seconds"]].to_dict("records")
    [{'source': 'silent.wav', 'music_seconds': 0.0}]
    """
    df = as_frame(segments)
    durations = _durations(df, duration, audio=audio, fallback_end=False)
    df = _music(df, threshold)
    rows = []
    for key, d in durations.items():
        grp = df[_is(df["source"], key)]
        s = np.clip(grp["start_time"].to_numpy(), 0.0, d)
        e = np.clip(grp["end_time"].to_numpy(), 0.0, d)
        music = _union_seconds(s, e)
        rows.append((None if pd.isna(key) else key, music, d, music / d if d > 0 else math.nan))
    rows.sort(key=lambda r: (r[0] is None, "" if r[0] is None else str(r[0])))
    return pd.DataFrame({
        "source": pd.Series([r[0] for r in rows], dtype="string"),
        "music_seconds": pd.Series([r[1] for r in rows], dtype="float64"),
        "duration": pd.Series([r[2] for r in rows], dtype="float64"),
        "share": pd.Series([r[3] for r in rows], dtype="float64"),
    })


def _frame_index(starts: np.ndarray, ends: np.ndarray, hop: float, n: int):
    """First and one-past-last frame overlapped (by more than zero length) by each interval."""
    i0 = np.floor(starts / hop + _EPS).astype(np.int64)
    i1 = np.ceil(ends / hop - _EPS).astype(np.int64)
    i1 = np.maximum(i1, i0)  # zero-length intervals cover no frame
    return np.clip(i0, 0, n), np.clip(i1, 0, n)


def _n_frames(duration: float, hop: float) -> int:
    return int(max(0, math.ceil(duration / hop - _EPS)))


def to_frames(segments: Any, *, hop: float = 0.01, duration: Any = None) -> pd.DataFrame:
    """Resample segments to a regular confidence timeline, one row per frame and source.

    Frame ``i`` spans ``[i*hop, (i+1)*hop)``; its confidence is that of the segment covering
    it (the larger one on a frame shared by two touching segments), 0.0 where no segment
    covers it.

    Parameters
    ----------
    segments : pandas.DataFrame or list of dict
        Segments (see :func:`as_frame`); segments of one source must not overlap
        (``merge`` them first).
    hop : float
        Frame length in seconds, > 0.
    duration : float or mapping, optional
        As in :func:`coverage`; gives ``ceil(duration / hop)`` frames per source.

    Returns
    -------
    pandas.DataFrame
        ``source`` (string), ``frame`` (int64), ``time`` (float64, frame start in seconds),
        ``confidence`` (float64).

    Examples
    --------
    >>> to_frames([{"start_time": 1, "end_time": 2, "confidence": 0.5}], hop=1.0)[
    ...     "confidence"].tolist()
    [0.0, 0.5]
    """
    h = _check_number("hop", hop, low_open=True)
    df = as_frame(segments)
    _check_overlap(df, ["source"])
    durations = _durations(df, duration)
    parts = []
    for key, grp in df.groupby("source", dropna=False, sort=True):
        key = key[0] if isinstance(key, tuple) else key
        d = durations[next(k for k in durations if (pd.isna(k) and pd.isna(key)) or k == key)]
        n = _n_frames(d, h)
        conf = np.zeros(n)
        i0, i1 = _frame_index(grp["start_time"].to_numpy(), grp["end_time"].to_numpy(), h, n)
        for a, b, c in zip(i0, i1, grp["confidence"].to_numpy()):
            if b > a:
                np.maximum(conf[a:b], c, out=conf[a:b])
        frames = np.arange(n, dtype=np.int64)
        parts.append(pd.DataFrame({
            "source": pd.Series([key] * n, dtype="string"),
            "frame": frames, "time": frames * h, "confidence": conf,
        }))
    if not parts:
        return pd.DataFrame({"source": pd.Series([], dtype="string"),
                             "frame": pd.Series([], dtype="int64"),
                             "time": pd.Series([], dtype="float64"),
                             "confidence": pd.Series([], dtype="float64")})
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- evaluation
def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _pairs(ref: pd.DataFrame, est: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Pair reference and estimate by source; one source each -> the same recording."""
    rs, es = list(pd.unique(ref["source"])), list(pd.unique(est["source"]))
    if len(rs) <= 1 and len(es) <= 1:
        return [(ref, est)]
    keys = list(dict.fromkeys(rs + es))
    return [(ref[_is(ref["source"], k)], est[_is(est["source"], k)]) for k in keys]


def evaluate(reference: Any, estimate: Any, *, resolution: float = 0.01,
             threshold: float | None = None, collar: float = 0.5) -> dict:
    """Score detected music against a reference annotation.

    Every reference segment counts as music (its confidence is ignored), and so does every
    estimate segment (the service returns only music), unless ``threshold`` is given: then
    estimate segments count when their confidence is >= it (required for all-window
    output, whose rows are every window). With several sources, reference and
    estimate are paired by ``source`` and counts are pooled; with one source on each side
    they are taken to be the same recording whatever their names.

    *Frame level* (sed_eval's segment-based metrics with ``time_resolution=resolution``): the
    timeline is cut into blocks of ``resolution`` seconds, a block is active when any
    segment overlaps it, and blocks are counted as true/false positives/negatives.

    *Segment level*: touching or overlapping segments are merged into events on each side;
    an estimated event matches a reference event when both its onset and its offset are
    within ``collar`` seconds; events are matched one-to-one (maximum bipartite matching).

    Parameters
    ----------
    reference, estimate : pandas.DataFrame or list of dict
        Segments (see :func:`as_frame`).
    resolution : float
        Block length for the frame-level scores, > 0.
    threshold : float, optional
        Minimum estimate confidence, in [0, 1]; default none (every estimate segment is music).
    collar : float
        Onset and offset tolerance in seconds, >= 0.

    Returns
    -------
    dict
        ``frame_precision``, ``frame_recall``, ``frame_f1``, ``frame_tp``, ``frame_fp``,
        ``frame_fn`` (counts of blocks), ``segment_precision``, ``segment_recall``,
        ``segment_f1``, ``segment_tp``, ``segment_fp``, ``segment_fn`` (counts of events),
        and the ``resolution``, ``threshold`` (None when not given) and ``collar`` used. A ratio
        whose denominator
        is 0 is NaN (e.g. precision with no estimated music).

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
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    res = _check_number("resolution", resolution, low_open=True)
    thr = None if threshold is None else _check_number("threshold", threshold, high=1.0)
    col = _check_number("collar", collar)
    ref = as_frame(reference)
    est = _music(as_frame(estimate), thr)
    ftp = ffp = ffn = stp = sfp = sfn = 0
    for r, e in _pairs(ref, est):
        end = max(r["end_time"].max() if len(r) else 0.0, e["end_time"].max() if len(e) else 0.0)
        n = _n_frames(float(end), res)
        act = []
        for side in (r, e):
            a = np.zeros(n + 1, np.int64)
            i0, i1 = _frame_index(side["start_time"].to_numpy(), side["end_time"].to_numpy(),
                                  res, n)
            np.add.at(a, i0, 1)
            np.add.at(a, i1, -1)
            act.append(np.cumsum(a[:n]) > 0)
        ftp += int(np.sum(act[0] & act[1]))
        ffp += int(np.sum(~act[0] & act[1]))
        ffn += int(np.sum(act[0] & ~act[1]))
        rs, re_, _ = (_merge_group(r["start_time"].to_numpy(), r["end_time"].to_numpy(),
                                   np.zeros(len(r)), 0.0) if len(r) else (np.zeros(0),) * 3)
        es, ee, _ = (_merge_group(e["start_time"].to_numpy(), e["end_time"].to_numpy(),
                                  np.zeros(len(e)), 0.0) if len(e) else (np.zeros(0),) * 3)
        tol = col + 1e-9
        if len(rs) and len(es):
            hit = ((np.abs(rs[:, None] - es[None, :]) <= tol)
                   & (np.abs(re_[:, None] - ee[None, :]) <= tol))
            match = maximum_bipartite_matching(csr_matrix(hit.astype(np.int8)), perm_type="column")
            tp = int(np.sum(match >= 0))
        else:
            tp = 0
        stp += tp
        sfp += len(es) - tp
        sfn += len(rs) - tp
    return {
        "frame_precision": _ratio(ftp, ftp + ffp),
        "frame_recall": _ratio(ftp, ftp + ffn),
        "frame_f1": _ratio(2 * ftp, 2 * ftp + ffp + ffn),
        "frame_tp": ftp, "frame_fp": ffp, "frame_fn": ffn,
        "segment_precision": _ratio(stp, stp + sfp),
        "segment_recall": _ratio(stp, stp + sfn),
        "segment_f1": _ratio(2 * stp, 2 * stp + sfp + sfn),
        "segment_tp": stp, "segment_fp": sfp, "segment_fn": sfn,
        "resolution": res, "threshold": thr, "collar": col,
    }


# --------------------------------------------------------------------------- file formats
def _num(x: Any) -> str:
    """Shortest text that reads back as exactly the same float."""
    return repr(float(x))


def _one_source(df: pd.DataFrame, fmt: str) -> None:
    keys = df[_KEYS].drop_duplicates()
    if len(keys) > 1:
        raise ValueError(f"a {fmt} file holds one recording's segments, but `segments` has "
                         f"{len(keys)} source/job pairs: {keys.to_dict('records')!r}; "
                         "write one file per group (df.groupby(['source', 'job_id']))")


def _write_text(path_or_file: Any, text: str) -> None:
    if hasattr(path_or_file, "write"):
        try:
            path_or_file.write(text)
        except TypeError:
            path_or_file.write(text.encode("utf-8"))
        return
    if not isinstance(path_or_file, (str, os.PathLike)):
        raise ValueError("`path` must be a path or a file object, not "
                         f"{type(path_or_file).__name__}")
    Path(path_or_file).write_text(text, encoding="utf-8")


def _read_text(path_or_file: Any) -> tuple[str, str]:
    """(text, name) from a path or a text/binary file object."""
    if hasattr(path_or_file, "read"):
        data = path_or_file.read()
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return data, str(getattr(path_or_file, "name", "<file>"))
    if not isinstance(path_or_file, (str, os.PathLike)):
        raise ValueError("`path` must be a path or a file object, not "
                         f"{type(path_or_file).__name__}")
    p = Path(path_or_file)
    if not p.is_file():
        raise ValueError(f"`path` must be an existing file, not {os.fspath(path_or_file)!r}")
    return p.read_text(encoding="utf-8"), os.fspath(p)


def _stem(path_or_file: Any) -> str | None:
    name = path_or_file if isinstance(path_or_file, (str, os.PathLike)) else getattr(
        path_or_file, "name", None)
    return Path(name).stem if isinstance(name, (str, os.PathLike)) else None


def write_labels(segments: Any, path: Any) -> None:
    """Write an Audacity label track: ``start<TAB>end<TAB>confidence`` per line.

    Times and confidences are written with ``repr`` so :func:`read_labels` gets back the
    same floats. One source/job per file.

    Examples
    --------
    >>> import io
    >>> f = io.StringIO()
    >>> write_labels([{"start_time": 0.0, "end_time": 10.0, "confidence": 0.25}], f)
    >>> f.getvalue()
    '0.0\\t10.0\\t0.25\\n'
    """
    df = as_frame(segments)
    _one_source(df, "label")
    lines = [f"{_num(s)}\t{_num(e)}\t{_num(c)}\n" for s, e, c in
             zip(df["start_time"], df["end_time"], df["confidence"])]
    _write_text(path, "".join(lines))


def read_labels(path: Any, *, source: str | None = None,
                job_id: str | None = None) -> pd.DataFrame:
    """Read an Audacity label track (``start<TAB>end[<TAB>label]`` lines).

    A label that is a number in [0, 1] is the confidence; any other label (or none) gives
    confidence 1.0 and is kept in a ``label`` column. Spectral-selection lines (starting
    with a backslash) are skipped.

    Parameters
    ----------
    path : str, PathLike or file object
    source : str, optional
        Recording name; default the file's stem.
    job_id : str, optional

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`as_frame` (plus ``label`` when some labels are not numbers).

    Examples
    --------
    >>> import io
    >>> read_labels(io.StringIO("1.5\\t3.0\\tmusic\\n"))[["start_time", "confidence", "label"]
    ...     ].to_dict("records")
    [{'start_time': 1.5, 'confidence': 1.0, 'label': 'music'}]
    """
    text, name = _read_text(path)
    rows, labels = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{name} line {n}: expected start<TAB>end[<TAB>label], got {line!r}")
        try:
            s, e = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{name} line {n}: times must be numbers, got {line!r}") from None
        label = parts[2] if len(parts) > 2 else ""
        try:
            c = float(label)
            if not 0.0 <= c <= 1.0:
                raise ValueError
            label = None
        except ValueError:
            c = 1.0
        rows.append({"start_time": s, "end_time": e, "confidence": c})
        labels.append(label)
    df = _payload_frame(rows, source=source if source is not None else _stem(path),
                        job_id=job_id)
    if any(lab is not None for lab in labels):
        df["label"] = pd.Series(labels, dtype="string")
    return as_frame(df)


def write_csv(segments: Any, path: Any) -> None:
    """Write segments as CSV with the seven columns of :func:`as_frame` (repr-exact floats).

    Missing ``source``/``job_id``/``provenance`` are written as empty fields (and read back
    as missing).

    Examples
    --------
    >>> import io
    >>> f = io.StringIO()
    >>> write_csv([{"start_time": 0.0, "end_time": 0.1, "confidence": 1/3}], f)
    >>> f.getvalue().splitlines()[1]
    ',,0.0,0.1,0.1,0.3333333333333333,'
    """
    df = as_frame(segments)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in df[COLUMNS].itertuples(index=False):
        w.writerow(["" if pd.isna(row.source) else row.source,
                    "" if pd.isna(row.job_id) else row.job_id,
                    _num(row.start_time), _num(row.end_time), _num(row.duration),
                    _num(row.confidence), "" if pd.isna(row.provenance) else row.provenance])
    _write_text(path, buf.getvalue())


def read_csv(path: Any) -> pd.DataFrame:
    """Read segments from CSV written by :func:`write_csv` (or any CSV with ``start_time``,
    ``end_time`` and optionally ``confidence``, ``source``, ``job_id`` columns).

    Examples
    --------
    >>> import io
    >>> read_csv(io.StringIO("start_time,end_time\\n0,2.5\\n"))["duration"].tolist()
    [2.5]
    """
    text, name = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    cols: dict[str, list] = {c: [] for c in (reader.fieldnames or [])}
    for n, row in enumerate(reader, start=2):
        for c in cols:
            v = row.get(c)
            if c in ("start_time", "end_time", "confidence", "duration"):
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ValueError(f"{name} line {n}: `{c}` must be a number, not {v!r}") \
                        from None
            elif v == "":
                v = None
            cols[c].append(v)
    if not cols:
        return _empty()
    df = pd.DataFrame(cols)
    for c in _KEYS + ["provenance"]:
        if c in df.columns:
            df[c] = df[c].astype("string")
    return as_frame(df)


def write_json(segments: Any, path: Any, *, indent: int | None = None) -> None:
    """Write the AudioShake music_detection JSON: ``[{start_time, end_time, confidence}]``.

    Floats are written repr-exact (Python's json), so :func:`read_json` round-trips them.
    One source/job per file.

    Examples
    --------
    >>> import io
    >>> f = io.StringIO()
    >>> write_json([{"start_time": 0.0, "end_time": 10.0, "confidence": 0.5}], f)
    >>> f.getvalue()
    '[{"start_time": 0.0, "end_time": 10.0, "confidence": 0.5}]'
    """
    df = as_frame(segments)
    _one_source(df, "JSON")
    payload = [{"start_time": float(s), "end_time": float(e), "confidence": float(c)}
               for s, e, c in zip(df["start_time"], df["end_time"], df["confidence"])]
    _write_text(path, json.dumps(payload, indent=indent))


def read_json(path: Any, *, source: str | None = None,
              job_id: str | None = None) -> pd.DataFrame:
    """Read an AudioShake music_detection JSON output file.

    Parameters
    ----------
    path : str, PathLike or file object
    source : str, optional
        Recording name for the ``source`` column (default: missing).
    job_id : str, optional

    Examples
    --------
    >>> import io
    >>> read_json(io.StringIO('[{"start_time": 0, "end_time": 10, "confidence": 0.5}]'),
    ...           source="a.wav")[["source", "end_time"]].to_dict("records")
    [{'source': 'a.wav', 'end_time': 10.0}]
    """
    text, name = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"{name}: expected a JSON list of segments, got {type(data).__name__}")
    return as_frame(_payload_frame(data, source=source, job_id=job_id))
