"""Transforms of music-detection segments: select, threshold, merge, drop short, coverage, timeline.

Every function takes segments as a DataFrame with the columns of
:func:`shakelab.frames.segments_frame` (``source``, ``job_id``, ``start_time``, ``end_time``,
``duration``, ``confidence``, ``provenance``), as the raw ``music_detection`` payload
(``[{"start_time", "end_time", "confidence"}, ...]``) or as the path of an output file,
checks them with :func:`shakelab.frames.as_segments` (re-exported here as :func:`as_frame`),
and returns new DataFrames; inputs are never modified. Pure pandas/numpy, no plotting.
Scoring against a reference is :mod:`shakelab.evaluation`; the label, CSV and JSON files are
:mod:`shakelab.labels` (its readers and writers are re-exported here).

**What a segment means.** The service returns only the segments where music is present, so
every returned segment is music whatever its confidence (the documented example's 0.18 and
0.32 both are), and time no segment covers has none. With their defaults, :func:`coverage`
and :func:`shakelab.evaluation.evaluate` count every segment; ``threshold=`` is an explicit,
optional filter. Frames of the local all-window extension (every window with its score; their
``provenance`` ends in ``:all_windows``) hold windows without music too: those functions then
ask for a ``threshold`` rather than count every window as music.

Bad input (an end before its start, a negative or non-finite time, a confidence outside
[0, 1], overlapping intervals where a function does not allow them) raises
:class:`~shakelab.errors.ValidationError` (a ``ValueError``) naming the row and the value.
Empty input gives empty output with the same columns.

Examples
--------
>>> from shakelab import segments as sg
>>> documented = [{"start_time": 20.0, "end_time": 30.0, "confidence": 0.17867346107959747},
...               {"start_time": 40.0, "end_time": 60.0, "confidence": 0.3173922598361969}]
>>> sg.coverage(documented, duration=70.0)[["music_seconds", "share"]].to_dict("records")
[{'music_seconds': 30.0, 'share': 0.42857142857142855}]
>>> sg.coverage(documented, duration=70.0, threshold=0.3)["music_seconds"].tolist()
[20.0]
>>> sg.merge(documented, gap=10.0)[["start_time", "end_time"]].to_dict("records")
[{'start_time': 20.0, 'end_time': 60.0}]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shakelab.errors import ValidationError
from shakelab.frames import SEGMENTS_COLUMNS, as_segments, check_no_overlap, is_all_windows
from shakelab.labels import read_csv, read_json, read_labels, write_csv, write_json, write_labels

__all__ = [
    "COLUMNS", "as_frame", "coverage", "drop_short", "merge", "read_csv", "read_json", "read_labels",
    "select_music", "threshold", "timeline", "write_csv", "write_json", "write_labels",
]

#: Column order of a segments frame (:data:`shakelab.frames.SEGMENTS_COLUMNS`, as a list).
COLUMNS = list(SEGMENTS_COLUMNS)

#: Checks segments and returns them as a segments frame: :func:`shakelab.frames.as_segments`.
as_frame = as_segments

_KEYS = ["source", "job_id"]
# Tolerance (in frames) when mapping times to frame indices, so that 10.0 s at a 0.01 s hop
# is frame 1000 exactly despite binary floating point.
_EPS = 1e-7


def _check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                  low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"`{name}` must be a number, not {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < low or v > high or (
            low_open and v == low):
        bounds = f"{'>' if low_open else '>='} {low:g}" + (
            f" and <= {high:g}" if math.isfinite(high) else "")
        raise ValidationError(f"`{name}` must be a finite number {bounds}, not {value!r}")
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
    df = as_segments(segments)
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
    df = as_segments(segments)
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
    df = as_segments(segments)
    if df.empty:
        return df[COLUMNS].reset_index(drop=True)
    parts = []
    for key, grp in df.groupby([*_KEYS, "provenance"], dropna=False, sort=True):
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
    """Source -> total duration in seconds, from a number / a mapping, else ``audio``.

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
                raise ValidationError(f"`duration` has no entry for source {key!r} "
                                      f"(keys: {list(duration.keys())!r})")
            out[k] = _check_number(f"duration[{key!r}]", duration[key])
        for key in duration.keys():  # noqa: SIM118 - a pandas Series iterates over its values
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
    """Source -> length of its audio file (``audio``: one path, or a mapping source -> path)."""
    from shakelab.audio import info

    def length(path: Any, key: Any) -> float:
        try:
            return float(info(path).duration)
        except Exception as exc:
            raise ValidationError(f"cannot read the length of {key!r} from `audio` {os.fspath(path)!r}: {exc}") \
                from None

    if audio is not None and not isinstance(audio, (Mapping, pd.Series)):
        if len(sources) > 1:
            raise ValidationError(f"`audio` is one file but `segments` holds {len(sources)} sources; pass a "
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
            raise ValidationError(f"cannot know the length of recording {key!r}: pass `duration=` (seconds, "
                                  "or a mapping source -> seconds) or `audio=` (its audio file)")
    for key, path in files.items():  # recordings without any segment: no music found
        if key not in out:
            out[key] = length(path, key)
    return out


def _is(col: pd.Series, key: Any) -> np.ndarray:
    if pd.isna(key):
        return col.isna().to_numpy()
    return (col == key).fillna(False).to_numpy(dtype=bool)


def select_music(segments: Any, threshold: Any = None, *, param: str = "threshold") -> pd.DataFrame:
    """Keep the rows that are music: every returned segment, or those >= ``threshold`` when given.

    The one rule behind the defaults of :func:`coverage`, :func:`evaluate`, the plots and the
    explorer. All-window output (its ``provenance`` ends in ``:all_windows``: windows without
    music too) raises :class:`~shakelab.errors.ValidationError` unless a threshold is given.

    Examples
    --------
    >>> select_music([{"start_time": 20, "end_time": 30, "confidence": 0.18}])["start_time"].tolist()
    [20.0]
    >>> select_music([{"start_time": 20, "end_time": 30, "confidence": 0.18}], 0.5).empty
    True
    """
    df = as_segments(segments)
    if threshold is not None:
        t = _check_number(param, threshold, high=1.0)
        return df[df["confidence"].to_numpy() >= t]
    every = is_all_windows(df)
    if every.any():
        origin = df["provenance"].iloc[int(np.argmax(every))]
        raise ValidationError(f"these segments are every window of the local all-window output (provenance "
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
        otherwise :class:`~shakelab.errors.ValidationError` says the length cannot be known (the last segment's end is
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
    df = as_segments(segments)
    durations = _durations(df, duration, audio=audio, fallback_end=False)
    df = select_music(df, threshold)
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


def timeline(segments: Any, *, hop: float = 0.01, duration: Any = None) -> pd.DataFrame:
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
    >>> timeline([{"start_time": 1, "end_time": 2, "confidence": 0.5}], hop=1.0)[
    ...     "confidence"].tolist()
    [0.0, 0.5]
    """
    h = _check_number("hop", hop, low_open=True)
    df = as_segments(segments)
    check_no_overlap(df, by=["source"])
    durations = _durations(df, duration)
    parts = []
    for key, grp in df.groupby("source", dropna=False, sort=True):
        key = key[0] if isinstance(key, tuple) else key
        d = durations[next(k for k in durations if (pd.isna(k) and pd.isna(key)) or k == key)]
        n = _n_frames(d, h)
        conf = np.zeros(n)
        i0, i1 = _frame_index(grp["start_time"].to_numpy(), grp["end_time"].to_numpy(), h, n)
        for a, b, c in zip(i0, i1, grp["confidence"].to_numpy(), strict=True):
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


