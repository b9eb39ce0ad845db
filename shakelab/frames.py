"""The only place shakelab builds and validates pandas DataFrames: jobs, music-detection segments, usage.

Every frame has fixed snake_case columns with fixed dtypes, documented below; an empty input
gives an empty frame with the same columns and dtypes; a malformed payload raises
:class:`~shakelab.errors.ValidationError` (a ``ValueError``) naming the bad field (and the row).
:func:`segments_frame` reads a ``music_detection`` answer; :func:`as_segments` checks any
segments a user hands over (a frame, the payload list, an output file) for
:mod:`shakelab.segments`, :mod:`shakelab.labels`, :mod:`shakelab.evaluation` and the plots.

Examples
--------
>>> from shakelab.frames import segments_frame, usage_frame
>>> segments_frame([{"start_time": 0.0, "end_time": 10.0, "confidence": 0.9}], source="a.wav",
...                provenance="audioshake")
  source job_id  start_time  end_time  duration  confidence  provenance
0  a.wav   <NA>         0.0      10.0      10.0         0.9  audioshake
>>> usage_frame({"usage": [{"month": "2026-03", "totalJobs": 4, "totalMinutes": 8.5}]})
     month  total_jobs  total_minutes
0  2026-03           4            8.5
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shakelab.errors import ValidationError
from shakelab.models import Job, JobStatus, OutputAsset, Target, Task, parse_timestamp

__all__ = ["JOBS_COLUMNS", "SEGMENTS_COLUMNS", "SERVICE", "TASKS_COLUMNS", "USAGE_COLUMNS", "as_segments",
           "check_no_overlap", "distribution_frame", "is_all_windows", "jobs_frame", "merge_usage", "provenance",
           "segments_frame", "tasks_frame", "usage_counts", "usage_frame"]

SEGMENTS_COLUMNS = ("source", "job_id", "start_time", "end_time", "duration", "confidence", "provenance")
#: ``provenance`` of segments answered by the AudioShake service
SERVICE = "audioshake"
_ALL_WINDOWS = ":all_windows"
USAGE_COLUMNS = ("month", "total_jobs", "total_minutes")
#: what ``total_jobs`` of a usage frame counts, kept in ``frame.attrs["counts"]``
_USAGE_COUNTS = ("jobs", "targets")
JOBS_COLUMNS = ("job_id", "model", "format", "status", "asset_id", "source_name", "created_at",
                "started_at", "updated_at", "processing_s", "audio_s", "outputs", "error")
#: the columns of a jobs frame of Tasks API tasks: one row per target
TASKS_COLUMNS = (*JOBS_COLUMNS, "task_id", "target_id", "cost")

_UTC = "datetime64[ns, UTC]"
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])(\b|-|T|$)")
_STATUS_CATEGORIES = [s.value for s in JobStatus]


# --------------------------------------------------------------------------- segments
def _constant_strings(value: str | None, n: int) -> pd.arrays.StringArray:
    # one validated element, repeated by take(): ~8x faster than validating n copies
    return pd.array([pd.NA if value is None else value], dtype="string").take(np.zeros(n, dtype=np.intp))


def _detection_records(detection: Any) -> Any:
    """Normalise the accepted inputs of segments_frame to a sequence of mappings."""
    if isinstance(detection, os.PathLike):
        detection = Path(detection).read_bytes()
    if isinstance(detection, bytes):
        detection = detection.decode("utf-8")
    if isinstance(detection, str):
        text = detection.strip()
        if not text:
            return []
        if text[0] in "[{":
            try:
                detection = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"`detection` is not valid JSON: {exc}") from None
        else:  # the txt output: start<TAB>end<TAB>confidence per line
            rows = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.split("\t") if "\t" in line else line.split()
                if len(parts) < 3:
                    raise ValidationError(f"`detection` line {lineno} must hold start_time, end_time and "
                                          f"confidence separated by tabs, not {line!r}")
                rows.append({"start_time": parts[0], "end_time": parts[1], "confidence": parts[2]})
            return rows
    if isinstance(detection, Mapping):  # {"segments": [...]} or similar wrappers
        for key in ("segments", "detections", "results", "data", "intervals"):
            if isinstance(detection.get(key), list):
                return detection[key]
        raise ValidationError("`detection` must be a list of {start_time, end_time, confidence} objects, "
                              f"not an object with keys {sorted(detection)!r}")
    if isinstance(detection, pd.DataFrame):
        return detection  # read column-wise by _column
    if detection is None or not isinstance(detection, Iterable):
        raise ValidationError("`detection` must be a list of {start_time, end_time, confidence} objects "
                              f"(or the JSON/txt output as str, bytes or a path), not {type(detection).__name__}")
    return detection if isinstance(detection, (list, tuple)) else list(detection)


def _column(records: Any, key: str) -> np.ndarray:
    if isinstance(records, pd.DataFrame):
        if key not in records.columns:
            raise ValidationError(f"`detection` frame has no `{key}` column: columns {list(records.columns)!r}")
        try:
            return records[key].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            records = records.to_dict("records")  # find and name the bad row below
    try:  # fast path: one C-level pass, no intermediate list
        return np.fromiter(map(itemgetter(key), records), dtype=np.float64, count=len(records))
    except (KeyError, TypeError, IndexError, ValueError):
        pass
    try:
        values = [r[key] for r in records]
    except (KeyError, TypeError, IndexError):
        for i, r in enumerate(records):
            if not isinstance(r, Mapping):
                raise ValidationError(f"`detection` row {i} must be an object with start_time, end_time and "
                                      f"confidence, not {type(r).__name__} {r!r:.80}") from None
            if key not in r:
                raise ValidationError(f"`detection` row {i} has no `{key}` field: {dict(r)!r:.120}") from None
        raise
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        for i, v in enumerate(values):
            try:
                float(v)
            except (TypeError, ValueError):
                raise ValidationError(f"`{key}` of detection row {i} must be a number, not {v!r}") from None
        raise


def provenance(detector: str | None = None, *, window: float = 10.0, all_windows: bool = False) -> str:
    """Give the ``provenance`` text of a segments frame: who answered, and how.

    ``"audioshake"`` (:data:`SERVICE`) for the service (``detector=None``); for the local
    server ``"local:<detector>:window=<w>s"``, ending in ``":all_windows"`` when every window
    was asked for (then the rows are windows with their scores, music or not).

    Examples
    --------
    >>> provenance(), provenance("cnn"), provenance("features", window=2.5, all_windows=True)
    ('audioshake', 'local:cnn:window=10s', 'local:features:window=2.5s:all_windows')
    """
    if detector is None:
        return SERVICE
    return f"local:{detector}:window={float(window):g}s" + (_ALL_WINDOWS if all_windows else "")


def is_all_windows(values: Any) -> np.ndarray:
    """Which rows (or which provenance texts) come from all-window output.

    Parameters
    ----------
    values : pandas.DataFrame, pandas.Series, str or iterable of str
        A segments frame (its ``provenance`` column; none -> no row is), or provenance texts.

    Examples
    --------
    >>> is_all_windows(["audioshake", "local:cnn:window=10s:all_windows", None]).tolist()
    [False, True, False]
    """
    if isinstance(values, pd.DataFrame):
        if "provenance" not in values.columns:
            return np.zeros(len(values), bool)
        values = values["provenance"]
    if isinstance(values, str) or values is None:
        values = [values]
    return np.array([isinstance(v, str) and v.endswith(_ALL_WINDOWS) for v in values], dtype=bool)


def segments_frame(detection: Any, *, job: Job | str | None = None, source: str | os.PathLike | None = None,
                   provenance: str | None = None) -> pd.DataFrame:
    """Music-detection output as a typed DataFrame, one row per segment.

    Every returned segment is a detection of music, whatever its confidence (the service's
    meaning); time no row covers has no music. Only the local ``all_windows`` extension
    returns windows without music: its ``provenance`` says so (:func:`is_all_windows`).

    Parameters
    ----------
    detection : list of dict, str, bytes, path or DataFrame
        The ``music_detection`` JSON output (``[{"start_time", "end_time", "confidence"}]``),
        its text (JSON, or the ``txt`` output: ``start<TAB>end<TAB>confidence`` per line), a
        path to either file, or a DataFrame with those three columns (and a ``provenance``
        column, kept when ``provenance`` is not given).
    job : Job or str, optional
        The job (or job id) that produced it, for the ``job_id`` column.
    source : str or path, optional
        What was analysed (a file name), for the ``source`` column; defaults to
        ``job.source_name`` when a Job is given.
    provenance : str, optional
        Where the segments come from (:func:`provenance`: ``"audioshake"``, or
        ``"local:<detector>:window=<w>s[:all_windows]"``). Never guessed: missing (<NA>) when
        not given.

    Returns
    -------
    pandas.DataFrame
        Columns, in order: ``source`` (string), ``job_id`` (string), ``start_time`` (float64,
        seconds), ``end_time`` (float64, seconds), ``duration`` (float64, ``end_time -
        start_time``), ``confidence`` (float64, 0-1), ``provenance`` (string). Rows in input
        order. Empty input gives an empty frame with these columns.

    Raises
    ------
    ValidationError
        A row without a field or with a non-numeric, non-finite or out-of-range value
        (``confidence`` outside 0-1, ``end_time`` before ``start_time``), naming field and row.

    Examples
    --------
    >>> df = segments_frame([{"start_time": 20.0, "end_time": 30.0, "confidence": 0.179}], job="j1")
    >>> df.dtypes.astype(str).tolist()
    ['string', 'string', 'float64', 'float64', 'float64', 'float64', 'string']
    """
    records = _detection_records(detection)
    job_id = job.id if isinstance(job, Job) else (None if job is None else str(job))
    if source is None and isinstance(job, Job):
        source = job.source_name
    if isinstance(source, os.PathLike):
        source = Path(source).name
    source = None if source is None else str(source)

    start = _column(records, "start_time")
    end = _column(records, "end_time")
    conf = _column(records, "confidence")
    n = len(start)
    failed = _first_invalid(start, end, conf, negative_start=False)
    if failed is not None:  # messages name the payload's row number
        check, i = failed
        values = {"start_time": start, "end_time": end, "confidence": conf}
        if check in values:
            raise ValidationError(f"`{check}` of detection row {i} must be a finite number, "
                                  f"not {float(values[check][i])!r}")
        if check == "order":
            raise ValidationError(f"`end_time` of detection row {i} ({float(end[i])!r}) is before its "
                                  f"`start_time` ({float(start[i])!r})")
        raise ValidationError(f"`confidence` of detection row {i} must be within 0-1, not {float(conf[i])!r}")
    if provenance is None and isinstance(records, pd.DataFrame) and "provenance" in records.columns:
        origin = pd.array(records["provenance"].astype(object).where(records["provenance"].notna(), None),
                          dtype="string")
    else:
        origin = _constant_strings(None if provenance is None else str(provenance), n)
    return pd.DataFrame({
        "source": _constant_strings(source, n),
        "job_id": _constant_strings(job_id, n),
        "start_time": start,
        "end_time": end,
        "duration": end - start,
        "confidence": conf,
        "provenance": origin,
    }, columns=list(SEGMENTS_COLUMNS))


_KEYS = ["source", "job_id"]


def _py(v: Any) -> Any:
    """Numpy scalars as Python scalars, so messages show 2.0, not np.float64(2.0)."""
    return v.item() if isinstance(v, np.generic) else v


def _first_invalid(start: np.ndarray, end: np.ndarray, conf: np.ndarray, *,
                   negative_start: bool) -> tuple[str, int] | None:
    """Return the first failed check of segment values and its row position, or None.

    The one set of checks behind :func:`segments_frame` and :func:`as_segments`, in order: a
    non-finite ``start_time``/``end_time``/``confidence`` (the check is that column's name),
    a negative start (``"negative"``, when ``negative_start``), an end before its start
    (``"order"``), a confidence outside [0, 1] (``"range"``).
    """
    checks = [("start_time", ~np.isfinite(start)), ("end_time", ~np.isfinite(end)),
              ("confidence", ~np.isfinite(conf))]
    if negative_start:
        checks.append(("negative", start < 0))
    checks += [("order", end < start), ("range", (conf < 0.0) | (conf > 1.0))]
    for check, bad in checks:
        if bad.any():
            return check, int(np.argmax(bad))
    return None


def _bad_row(df: pd.DataFrame, pos: int, message: str) -> None:
    """Raise ValidationError for the row at ``pos``, naming its index label and source."""
    row = df.iloc[pos]
    where = f"row {df.index[pos]!r}"
    if "source" in df.columns and not pd.isna(row["source"]):
        where += f" (source {row['source']!r})"
    raise ValidationError(f"{where}: " + message.format(**{k: _py(row[k]) for k in df.columns}))


def _payload_rows(rows: list) -> pd.DataFrame:
    """Turn the raw payload list into a frame of its three fields, checking each row's shape."""
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValidationError(f"row {i}: a segment must be a mapping with start_time, end_time "
                                  f"and confidence, not {row!r}")
        for key in ("start_time", "end_time"):
            if key not in row:
                raise ValidationError(f"row {i}: missing `{key}` in {dict(row)!r}")
    if not rows:
        return segments_frame([])
    return pd.DataFrame({
        "start_time": [r["start_time"] for r in rows],
        "end_time": [r["end_time"] for r in rows],
        "confidence": [r.get("confidence", 1.0) for r in rows],
    })


def check_no_overlap(segments: pd.DataFrame, by: Iterable[str] = ("source", "job_id")) -> None:
    """Raise ValidationError when two intervals of the same ``by`` group overlap (touching is fine).

    Parameters
    ----------
    segments : pandas.DataFrame
        A segments frame (:func:`as_segments`).
    by : iterable of str
        The columns that say which rows belong to one recording.

    Examples
    --------
    >>> check_no_overlap(as_segments([{"start_time": 0, "end_time": 10}, {"start_time": 10, "end_time": 12}]))
    >>> check_no_overlap(as_segments([{"start_time": 0, "end_time": 10}, {"start_time": 9, "end_time": 12}]))
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: row 1: interval [9.0, 12.0] overlaps row 0 [0.0, 10.0]; merge() them first
    """
    for _, g in segments.groupby(list(by), dropna=False, sort=False):
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
            raise ValidationError(
                f"row {g.index[i]!r}: interval [{_py(b['start_time'])!r}, {_py(b['end_time'])!r}] "
                f"overlaps row {g.index[prev]!r} [{_py(a['start_time'])!r}, {_py(a['end_time'])!r}]"
                + (f" (source {b['source']!r})" if not pd.isna(b["source"]) else "")
                + "; merge() them first")


def as_segments(segments: Any, *, allow_overlap: bool = True, source: str | None = None,
                job_id: str | None = None) -> pd.DataFrame:
    """Check segments and return them as a segments frame (the columns of :func:`segments_frame`).

    Parameters
    ----------
    segments : pandas.DataFrame, list of dict or path
        A frame with at least ``start_time`` and ``end_time`` (``confidence`` defaults to 1.0,
        ``source``/``job_id``/``provenance`` to missing, ``duration`` is recomputed), the raw
        ``music_detection`` payload ``[{"start_time", "end_time", "confidence"}]``, or the
        path of a music_detection ``.json``/``.txt`` output (read by :func:`segments_frame`).
    allow_overlap : bool
        When False, overlapping intervals of the same source and job raise
        :class:`~shakelab.errors.ValidationError` (touching ones are fine).
    source, job_id : str, optional
        Set the ``source`` / ``job_id`` column of every row (before the checks, so that an
        error names the source).

    Returns
    -------
    pandas.DataFrame
        Columns ``source`` (string), ``job_id`` (string), ``start_time``, ``end_time``,
        ``duration``, ``confidence`` (float64), ``provenance`` (string; <NA> when the input has
        none), then any extra columns of the input. The input is never modified.

    Raises
    ------
    ValidationError
        Naming the row and the value: non-numeric or non-finite times, negative times, an end
        before its start, a confidence outside [0, 1], or an overlap when not allowed.

    Examples
    --------
    >>> as_segments([{"start_time": 0, "end_time": 10, "confidence": 0.5}]).columns.tolist()
    ['source', 'job_id', 'start_time', 'end_time', 'duration', 'confidence', 'provenance']
    >>> as_segments([{"start_time": 5, "end_time": 2, "confidence": 0.5}])
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: row 0: `end_time` 2.0 is before `start_time` 5.0
    """
    if isinstance(segments, pd.DataFrame):
        df = segments.copy()
    elif isinstance(segments, (list, tuple)):
        df = _payload_rows(list(segments))
    elif isinstance(segments, os.PathLike) or (isinstance(segments, str) and Path(segments).is_file()):
        df = segments_frame(Path(segments))  # a music_detection .json or .txt output file
    else:
        raise ValidationError("`segments` must be a pandas DataFrame, a list of "
                              "{start_time, end_time, confidence} dicts or the path of a "
                              f"music_detection output file, not {type(segments).__name__} "
                              f"{segments!r:.60}")
    for key in ("start_time", "end_time"):
        if key not in df.columns:
            raise ValidationError(f"`segments` has no `{key}` column (columns: {list(df.columns)})")
    if "confidence" not in df.columns:
        df["confidence"] = 1.0
    for key, value in (("source", source), ("job_id", job_id)):
        if value is not None:
            df[key] = value
    for key in [*_KEYS, "provenance"]:
        if key not in df.columns:
            df[key] = pd.Series(pd.NA, index=df.index, dtype="string")
        else:
            df[key] = df[key].astype("string")
    raw = {key: df[key] for key in ("start_time", "end_time", "confidence")}
    for key, values in raw.items():
        df[key] = pd.to_numeric(values, errors="coerce").astype("float64")
    start = df["start_time"].to_numpy()
    end = df["end_time"].to_numpy()
    conf = df["confidence"].to_numpy()
    failed = _first_invalid(start, end, conf, negative_start=True)
    if failed is not None:  # messages name the row's index label and its source
        check, pos = failed
        if check in raw:
            raise ValidationError(f"row {df.index[pos]!r}: `{check}` must be a finite number, "
                                  f"not {raw[check].iloc[pos]!r}")
        _bad_row(df, pos, {"negative": "`start_time` {start_time!r} is negative",
                           "order": "`end_time` {end_time!r} is before `start_time` {start_time!r}",
                           "range": "`confidence` {confidence!r} is outside [0, 1]"}[check])
    df["duration"] = end - start
    extra = [c for c in df.columns if c not in SEGMENTS_COLUMNS]
    df = df[[*SEGMENTS_COLUMNS, *extra]]
    if not allow_overlap:
        check_no_overlap(df)
    return df


# --------------------------------------------------------------------------- usage
def usage_frame(usage: Any, *, counts: str | None = None) -> pd.DataFrame:
    """``/usage`` as a typed DataFrame, one row per month, sorted by month.

    Parameters
    ----------
    usage : dict or list of dict
        The ``/usage`` payload (``{"clientId", "usage": [{"month", "totalJobs", "totalMinutes"}]}``)
        or its ``usage`` list. The Tasks API's ``totalTargets`` is read as ``totalJobs``; snake_case
        keys are accepted too.
    counts : {"jobs", "targets"}, optional
        What the counts count, kept in ``frame.attrs["counts"]`` (plots and the usage dashboard
        label them so). By default ``"targets"`` when every row gives ``totalTargets``
        (the Tasks API's statistics), else ``"jobs"``.

    Returns
    -------
    pandas.DataFrame
        Columns: ``month`` (period[M]), ``total_jobs`` (int64), ``total_minutes`` (float64).
        Empty input gives an empty frame with these columns. The column keeps its legacy name
        whatever it counts, so frames of both APIs concatenate; ``attrs["counts"]`` says what
        it counts (:func:`usage_counts`).

    Raises
    ------
    ValidationError
        A month that is not ``YYYY-MM``, a missing or non-numeric count, naming field and row;
        a ``counts`` other than ``"jobs"`` or ``"targets"``.

    Examples
    --------
    >>> usage_frame([{"month": "2026-02", "totalJobs": 1, "totalMinutes": 2.0}]).dtypes.astype(str).tolist()
    ['period[M]', 'int64', 'float64']
    >>> usage_frame([{"month": "2026-03", "totalTargets": 42, "totalMinutes": "123.5"}]).attrs
    {'counts': 'targets'}
    """
    if counts is not None and counts not in _USAGE_COUNTS:
        raise ValidationError(f"`counts` must be 'jobs' or 'targets', not {counts!r}")
    rows = usage
    if isinstance(usage, Mapping):
        rows = usage.get("usage", usage.get("data"))
        if rows is None:
            raise ValidationError(f"`usage` payload has no `usage` field: keys {sorted(usage)!r}")
    if not isinstance(rows, (list, tuple)):
        raise ValidationError(f"`usage` must be the /usage payload or its list of months, not {type(rows).__name__}")
    months: list[pd.Period | None] = []
    jobs: list[float] = []
    minutes: list[float] = []
    targets = bool(rows)  # every row counts targets
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValidationError(f"`usage` row {i} must be an object, not {row!r:.80}")
        month = row.get("month")
        text = str(month) if month is not None else ""
        try:
            months.append(pd.Period(text[:7], freq="M") if _MONTH.match(text) else None)
        except (ValueError, TypeError):
            months.append(None)
        if months[-1] is None:
            raise ValidationError(f"`month` of usage row {i} must be 'YYYY-MM', not {month!r}")
        targets = targets and row.get("totalJobs", row.get("total_jobs")) is None
        for key, alts, out, cast in (("totalJobs", ("total_jobs", "totalTargets", "total_targets"), jobs, int),
                                     ("totalMinutes", ("total_minutes",), minutes, float)):
            value = row.get(key)
            for alt in alts:
                if value is None:
                    value = row.get(alt)
            if value is None:
                raise ValidationError(f"usage row {i} has no `{key}` field: {dict(row)!r:.120}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValidationError(f"`{key}` of usage row {i} must be a number, not {value!r}") from None
            if not math.isfinite(number) or (cast is int and number != int(number)):
                raise ValidationError(f"`{key}` of usage row {i} must be a finite {'whole ' if cast is int else ''}"
                                      f"number, not {value!r}")
            out.append(cast(number))
    frame = pd.DataFrame({
        "month": pd.array(months, dtype="period[M]"),
        "total_jobs": np.asarray(jobs, dtype=np.int64),
        "total_minutes": np.asarray(minutes, dtype=np.float64),
    }, columns=list(USAGE_COLUMNS))
    frame = frame.sort_values("month", kind="stable").reset_index(drop=True)
    frame.attrs["counts"] = counts or ("targets" if targets else "jobs")
    return frame


def usage_counts(usage: pd.DataFrame) -> str:
    """Say what the ``total_jobs`` of a usage frame counts: ``"jobs"`` or ``"targets"``.

    ``frame.attrs["counts"]`` as :func:`usage_frame` set it; ``"jobs"`` when the frame does not
    say (a frame built by hand, read back from a file, or a ``pd.concat`` of both APIs' frames:
    pandas keeps ``attrs`` only when all the frames agree).

    Examples
    --------
    >>> usage_counts(usage_frame([{"month": "2026-03", "totalTargets": 42, "totalMinutes": "123.5"}]))
    'targets'
    >>> usage_counts(pd.DataFrame({"month": [], "total_jobs": [], "total_minutes": []}))
    'jobs'
    """
    counts = usage.attrs.get("counts", "jobs")
    return counts if counts in _USAGE_COUNTS else "jobs"


def merge_usage(history: Any, fresh: Any) -> pd.DataFrame:
    """Merge freshly fetched months into a usage history, sorted by month.

    A month in ``fresh`` replaces the same month of ``history`` (the service's figure is the
    newer one); the other months of both are kept. The result counts what ``fresh`` counts
    (:func:`usage_counts`).

    Both may be usage frames or ``/usage`` payloads (the service lists only its last months,
    so refreshing a long saved history must not throw the older months away).

    Examples
    --------
    >>> old = {"usage": [{"month": "2026-01", "totalJobs": 5, "totalMinutes": 9.0},
    ...                  {"month": "2026-02", "totalJobs": 1, "totalMinutes": 2.0}]}
    >>> merge_usage(old, {"usage": [{"month": "2026-02", "totalJobs": 3, "totalMinutes": 6.0}]})
         month  total_jobs  total_minutes
    0  2026-01           5            9.0
    1  2026-02           3            6.0
    """
    def frame(usage: Any) -> pd.DataFrame:
        return usage[list(USAGE_COLUMNS)] if isinstance(usage, pd.DataFrame) else usage_frame(usage)

    old, new = frame(history), frame(fresh)
    kept = old[~old["month"].isin(new["month"])]
    merged = pd.concat([kept, new], ignore_index=True) if len(kept) else new.copy()
    merged = merged.sort_values("month", kind="stable").reset_index(drop=True)
    merged.attrs = {"counts": usage_counts(new)}
    return merged


def distribution_frame(distribution: Any) -> pd.DataFrame:
    """Frame the Tasks API's ``distribution`` statistics (its shape is undocumented).

    One row per entry of the answer (a single object is one row), one column per key, named in
    snake_case (``totalTargets`` -> ``total_targets``), in the order the keys first appear;
    nested objects are flattened with ``_`` (``{"a": {"b": 1}}`` -> ``a_b``). A ``month``
    column of ``YYYY-MM`` strings becomes period[M]; numbers in strings stay strings.

    Raises
    ------
    ValueError
        An answer that is neither an object nor a list of objects.

    Examples
    --------
    >>> distribution_frame([{"model": "bass", "totalTargets": 3}, {"model": "vocals", "totalTargets": 1}])
        model  total_targets
    0    bass              3
    1  vocals              1
    """
    rows = [distribution] if isinstance(distribution, Mapping) else distribution
    if not isinstance(rows, (list, tuple)):
        raise ValueError(f"`distribution` must be an object or a list of objects, not {type(rows).__name__}")
    if any(not isinstance(row, Mapping) for row in rows):
        raise ValueError(f"`distribution` entries must be objects: {list(rows)!r:.120}")

    def snake(key: str) -> str:
        return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", str(key)).lower()

    def flat(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in row.items():
            name = f"{prefix}{snake(key)}"
            out.update(flat(value, f"{name}_") if isinstance(value, Mapping) else {name: value})
        return out

    flats = [flat(row) for row in rows]
    columns = list(dict.fromkeys(k for row in flats for k in row))
    frame = pd.DataFrame(flats, columns=columns)
    if "month" in frame and len(frame) and frame["month"].map(lambda m: bool(_MONTH.match(str(m)))).all():
        frame["month"] = pd.array([pd.Period(str(m)[:7], freq="M") for m in frame["month"]], dtype="period[M]")
    return frame


# --------------------------------------------------------------------------- jobs
def jobs_frame(jobs: Iterable[Job | Mapping[str, Any]], *, audio_s: Mapping[str, float] | None = None
               ) -> pd.DataFrame:
    """Jobs as a typed DataFrame, one row per job, in input order.

    Parameters
    ----------
    jobs : iterable of Job or dict
        :class:`shakelab.models.Job` objects or raw job payloads (parsed with ``Job.from_payload``).
    audio_s : mapping, optional
        Asset id -> length of that recording in seconds (the service does not say it; the
        client knows it for the files it uploaded).

    Returns
    -------
    pandas.DataFrame
        Given Tasks API tasks (payloads with ``targets``, or task objects), the frame of
        :func:`tasks_frame`: one row per target, these columns plus ``task_id``, ``target_id``
        and ``cost``. Otherwise columns, in order:

        - ``job_id`` (string)
        - ``model`` (category): ``metadata.name``
        - ``format`` (string): ``metadata.format``
        - ``status`` (category): the status as the service wrote it (categories: the known
          statuses, plus any unknown one met)
        - ``asset_id`` (string), ``source_name`` (string): the analysed asset and its name
        - ``created_at``, ``started_at``, ``updated_at`` (datetime64[ns, UTC]; NaT when absent)
        - ``processing_s`` (float64): how long the service worked on it, ``updated_at -
          started_at`` of a finished job, NaN otherwise
        - ``audio_s`` (float64): length of the recording, NaN when not known
        - ``outputs`` (object): list of output file names (empty list when none)
        - ``error`` (string): the service's message for a failed job, <NA> otherwise

        Empty input gives an empty frame with these columns.

    Raises
    ------
    ValidationError
        A payload that is not a job (no ``id``).

    Examples
    --------
    >>> jobs_frame([{"id": "j1", "status": "queued", "metadata": {"name": "vocals", "format": "wav"}}])[
    ...     ["job_id", "model", "status"]]
      job_id   model  status
    0     j1  vocals  queued
    """
    jobs = list(jobs)
    if any(_is_task(job) for job in jobs):
        return tasks_frame(jobs, audio_s=audio_s)
    parsed: list[Job] = []
    for i, job in enumerate(jobs):
        if isinstance(job, Job):
            parsed.append(job)
        elif isinstance(job, Mapping):
            try:
                parsed.append(Job.from_payload(job))
            except ValueError as exc:
                raise ValidationError(f"`jobs` item {i}: {getattr(exc, 'message', exc)}") from None
        else:
            raise ValidationError(f"`jobs` item {i} must be a Job or a job payload dict, not {type(job).__name__}")

    def ts(values: list) -> pd.Series:
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True)).astype(_UTC)

    statuses = [j.status_text for j in parsed]
    categories = _STATUS_CATEGORIES + sorted({s for s in statuses if s not in _STATUS_CATEGORIES})
    models = [j.model for j in parsed]
    durations = [j.duration_s for j in parsed]
    frame = pd.DataFrame({
        "job_id": pd.array([j.id for j in parsed], dtype="string"),
        "model": pd.Categorical(models, categories=sorted({m for m in models if m is not None})),
        "format": pd.array([j.format for j in parsed], dtype="string"),
        "status": pd.Categorical(statuses, categories=categories),
        "asset_id": pd.array([j.asset_id for j in parsed], dtype="string"),
        "source_name": pd.array([j.source_name for j in parsed], dtype="string"),
        "created_at": ts([j.created_at for j in parsed]),
        "started_at": ts([j.started_at for j in parsed]),
        "updated_at": ts([j.updated_at for j in parsed]),
        "processing_s": np.asarray([np.nan if d is None else d for d in durations], dtype=np.float64),
        "audio_s": np.asarray([(audio_s or {}).get(j.asset_id or "", np.nan) for j in parsed], dtype=np.float64),
        "outputs": pd.Series([[o.name for o in j.outputs] for j in parsed], dtype=object),
        "error": pd.array([j.error for j in parsed], dtype="string"),
    }, columns=list(JOBS_COLUMNS))
    return frame


# --------------------------------------------------------------------------- tasks
def _is_task(item: Any) -> bool:
    """Tell whether ``item`` is of the Tasks API: a Target, or a task (payload or object with ``.raw``)."""
    if isinstance(item, Target):
        return True
    raw = getattr(item, "raw", item)
    return isinstance(raw, Mapping) and isinstance(raw.get("targets"), list)


def _output_name(output: OutputAsset, model: str | None) -> str:
    # Tasks outputs are named without extension ("bass", "vocals_high_quality"): the file name adds the format
    name, fmt = output.name or model or "output", output.format
    return name if not fmt or name.endswith(f".{fmt}") else f"{name}.{fmt}"


def tasks_frame(tasks: Iterable[Any], *, audio_s: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Tasks API tasks as a jobs frame: one row per target, in task then target order.

    A target is what a legacy job was (one model on one recording), so the columns are those
    of :func:`jobs_frame` plus ``task_id``, ``target_id`` and ``cost``; frames of both APIs
    concatenate. Legacy jobs in ``tasks`` give their usual rows (<NA> in the three new columns).

    Parameters
    ----------
    tasks : iterable of Task, Target or dict
        :class:`shakelab.models.Task` objects, ``GET /tasks/{id}`` payloads, or single
        :class:`shakelab.models.Target` objects (the runs of ``TasksClient.start``: a row each);
        a task's ``source_name`` attribute, when it has one, fills ``source_name``.
    audio_s : mapping, optional
        Asset id -> length of the recording in seconds, used where a target has no
        ``duration`` yet.

    Returns
    -------
    pandas.DataFrame
        :data:`TASKS_COLUMNS`, with the dtypes of :func:`jobs_frame`. For a target:

        - ``job_id`` and ``target_id`` (string): the target's id; ``task_id`` (string)
        - ``model`` (category), ``format`` (string): ``model`` and its ``formats`` joined by ``,``
        - ``status`` (category): the target's status as written (``processing``, ``completed``,
          ``error``, ...); the task has none
        - ``asset_id`` (string): the task's ``assetId`` (<NA> for a ``url`` task);
          ``source_name`` (string): the asset's name when the task says it, else the ``url``
        - ``created_at``: the target's ``createdAt``, else the task's; ``started_at``: the
          target's ``startedAt`` (NaT: the API sends none); ``updated_at``: the target's
          ``updatedAt``, else the task's ``completedAt`` once the target is done
        - ``processing_s`` (float64): ``updated_at`` minus ``started_at`` (else ``created_at``)
          of a finished target, so queueing is included when no start time is sent
        - ``audio_s`` (float64): the target's ``duration`` (seconds of source audio)
        - ``outputs`` (object): file names, ``name.format`` per entry of ``output``
        - ``error`` (string): ``error.message`` of a failed target
        - ``cost`` (float64): the target's credits, NaN while not known

    Raises
    ------
    ValidationError
        A task without ``id``, or a target that is not an object with an ``id``.

    Examples
    --------
    >>> task = {"id": "t1", "assetId": "a1", "targets": [
    ...     {"id": "g1", "model": "bass", "formats": ["wav"], "status": "completed", "cost": 4,
    ...      "duration": 200.53, "output": [{"name": "bass", "format": "wav", "link": "https://x"}]}]}
    >>> tasks_frame([task])[["task_id", "target_id", "model", "status", "audio_s", "outputs", "cost"]]
      task_id target_id model     status  audio_s     outputs  cost
    0      t1        g1  bass  completed   200.53  [bass.wav]   4.0
    """
    items = list(tasks)
    if not all(_is_task(item) for item in items):  # legacy jobs among them: their own rows, in order
        parts = [tasks_frame([item], audio_s=audio_s) if _is_task(item) else jobs_frame([item], audio_s=audio_s)
                 for item in items]
        frame = pd.concat([p.reindex(columns=list(TASKS_COLUMNS)) for p in parts], ignore_index=True)
        return _typed_tasks(frame.to_dict("list"))
    cols: dict[str, list] = {c: [] for c in TASKS_COLUMNS}
    done: list[bool] = []   # which targets finished: only their processing time is known
    known = audio_s or {}
    for i, item in enumerate(items):
        try:
            if isinstance(item, Target):  # a run of TasksClient.start: one target, its own row
                task = Task(id=item.task_id or "", targets=[item], asset_id=item.asset_id,
                            raw={"targets": [item.raw]})
            else:
                task = item if isinstance(item, Task) else Task.from_payload(getattr(item, "raw", item))
        except ValueError as exc:
            raise ValidationError(f"`tasks` item {i}: {getattr(exc, 'message', exc)}") from None
        source_name = getattr(item, "source_name", None) or task.url
        for j, target in enumerate(task.raw["targets"]):
            if not isinstance(target, Mapping) or not target.get("id"):
                raise ValidationError(f"target {j} of task {task.id!r} must be an object with an `id`, "
                                 f"not {target!r:.120}")
        for target in task.targets:
            cols["job_id"].append(target.id)
            cols["target_id"].append(target.id)
            cols["task_id"].append(task.id)
            cols["model"].append(target.model)
            cols["format"].append(",".join(target.formats) or None)
            cols["status"].append(target.status_text)
            cols["asset_id"].append(task.asset_id)
            cols["source_name"].append(source_name)
            cols["created_at"].append(target.created_at or task.created_at)
            cols["started_at"].append(parse_timestamp(target.raw.get("startedAt")))
            cols["updated_at"].append(target.updated_at or (task.completed_at if target.is_done else None))
            cols["processing_s"].append(np.nan)  # from the timestamps, once the frame is typed
            done.append(target.is_done)
            cols["audio_s"].append(target.duration if target.duration is not None
                                   else known.get(task.asset_id or "", np.nan))
            cols["outputs"].append([_output_name(o, target.model) for o in target.outputs])
            cols["error"].append(target.error)
            cols["cost"].append(np.nan if target.cost is None else target.cost)
    frame = _typed_tasks(cols)
    began = frame["started_at"].fillna(frame["created_at"]) if len(frame) else frame["started_at"]
    seconds = (frame["updated_at"] - began).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    frame["processing_s"] = np.where(np.asarray(done, dtype=bool), seconds, np.nan)
    return frame


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _typed_tasks(cols: Mapping[str, list]) -> pd.DataFrame:
    def ts(values: list) -> pd.Series:
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")).astype(_UTC)

    def text(values: list) -> pd.arrays.StringArray:
        return pd.array([None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)
                         for v in values], dtype="string")

    statuses = [str(s) for s in cols["status"]]
    models = [m for m in text(cols["model"])]
    return pd.DataFrame({
        "job_id": text(cols["job_id"]),
        "model": pd.Categorical([None if m is pd.NA else m for m in models],
                                categories=sorted({m for m in models if m is not pd.NA})),
        "format": text(cols["format"]),
        "status": pd.Categorical(statuses, categories=_STATUS_CATEGORIES
                                 + sorted({s for s in statuses if s not in _STATUS_CATEGORIES})),
        "asset_id": text(cols["asset_id"]),
        "source_name": text(cols["source_name"]),
        "created_at": ts(cols["created_at"]),
        "started_at": ts(cols["started_at"]),
        "updated_at": ts(cols["updated_at"]),
        "processing_s": np.asarray(cols["processing_s"], dtype=np.float64),
        "audio_s": np.asarray(cols["audio_s"], dtype=np.float64),
        "outputs": pd.Series([list(o) if isinstance(o, list) else [] for o in cols["outputs"]], dtype=object),
        "error": text(cols["error"]),
        "task_id": text(cols["task_id"]),
        "target_id": text(cols["target_id"]),
        "cost": np.asarray(cols["cost"], dtype=np.float64),
    }, columns=list(TASKS_COLUMNS))
