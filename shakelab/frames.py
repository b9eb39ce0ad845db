"""The only place shakelab builds pandas DataFrames: jobs, music-detection segments, usage.

Every frame has fixed snake_case columns with fixed dtypes, documented below; an empty input
gives an empty frame with the same columns and dtypes; a malformed payload raises
``ValueError`` naming the bad field (and the row).

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
from operator import itemgetter
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from shakelab.models import Job, JobStatus

__all__ = ["jobs_frame", "segments_frame", "usage_frame", "merge_usage", "provenance", "is_all_windows",
           "JOBS_COLUMNS", "SEGMENTS_COLUMNS", "USAGE_COLUMNS", "SERVICE"]

SEGMENTS_COLUMNS = ("source", "job_id", "start_time", "end_time", "duration", "confidence", "provenance")
#: ``provenance`` of segments answered by the AudioShake service
SERVICE = "audioshake"
_ALL_WINDOWS = ":all_windows"
USAGE_COLUMNS = ("month", "total_jobs", "total_minutes")
JOBS_COLUMNS = ("job_id", "model", "format", "status", "asset_id", "source_name", "created_at",
                "started_at", "updated_at", "processing_s", "audio_s", "outputs", "error")

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
                raise ValueError(f"`detection` is not valid JSON: {exc}") from None
        else:  # the txt output: start<TAB>end<TAB>confidence per line
            rows = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.split("\t") if "\t" in line else line.split()
                if len(parts) < 3:
                    raise ValueError(f"`detection` line {lineno} must hold start_time, end_time and "
                                     f"confidence separated by tabs, not {line!r}")
                rows.append({"start_time": parts[0], "end_time": parts[1], "confidence": parts[2]})
            return rows
    if isinstance(detection, Mapping):  # {"segments": [...]} or similar wrappers
        for key in ("segments", "detections", "results", "data", "intervals"):
            if isinstance(detection.get(key), list):
                return detection[key]
        raise ValueError("`detection` must be a list of {start_time, end_time, confidence} objects, "
                         f"not an object with keys {sorted(detection)!r}")
    if isinstance(detection, pd.DataFrame):
        return detection  # read column-wise by _column
    if detection is None or not isinstance(detection, Iterable):
        raise ValueError("`detection` must be a list of {start_time, end_time, confidence} objects "
                         f"(or the JSON/txt output as str, bytes or a path), not {type(detection).__name__}")
    return detection if isinstance(detection, (list, tuple)) else list(detection)


def _column(records: Any, key: str) -> np.ndarray:
    if isinstance(records, pd.DataFrame):
        if key not in records.columns:
            raise ValueError(f"`detection` frame has no `{key}` column: columns {list(records.columns)!r}")
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
                raise ValueError(f"`detection` row {i} must be an object with start_time, end_time and "
                                 f"confidence, not {type(r).__name__} {r!r:.80}") from None
            if key not in r:
                raise ValueError(f"`detection` row {i} has no `{key}` field: {dict(r)!r:.120}") from None
        raise
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        for i, v in enumerate(values):
            try:
                float(v)
            except (TypeError, ValueError):
                raise ValueError(f"`{key}` of detection row {i} must be a number, not {v!r}") from None
        raise


def provenance(detector: str | None = None, *, window: float = 10.0, all_windows: bool = False) -> str:
    """The ``provenance`` text of a segments frame: who answered, and how.

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
    ValueError
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
    if n:
        for key, arr in (("start_time", start), ("end_time", end), ("confidence", conf)):
            bad = ~np.isfinite(arr)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"`{key}` of detection row {i} must be a finite number, not {float(arr[i])!r}")
        bad = (conf < 0.0) | (conf > 1.0)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"`confidence` of detection row {i} must be within 0-1, not {float(conf[i])!r}")
        bad = end < start
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"`end_time` of detection row {i} ({float(end[i])!r}) is before its "
                             f"`start_time` ({float(start[i])!r})")
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


# --------------------------------------------------------------------------- usage
def usage_frame(usage: Any) -> pd.DataFrame:
    """``/usage`` as a typed DataFrame, one row per month, sorted by month.

    Parameters
    ----------
    usage : dict or list of dict
        The ``/usage`` payload (``{"clientId", "usage": [{"month", "totalJobs", "totalMinutes"}]}``)
        or its ``usage`` list. The Tasks API's ``totalTargets`` is read as ``totalJobs``; snake_case
        keys are accepted too.

    Returns
    -------
    pandas.DataFrame
        Columns: ``month`` (period[M]), ``total_jobs`` (int64), ``total_minutes`` (float64).
        Empty input gives an empty frame with these columns.

    Raises
    ------
    ValueError
        A month that is not ``YYYY-MM``, a missing or non-numeric count, naming field and row.

    Examples
    --------
    >>> usage_frame([{"month": "2026-02", "totalJobs": 1, "totalMinutes": 2.0}]).dtypes.astype(str).tolist()
    ['period[M]', 'int64', 'float64']
    """
    rows = usage
    if isinstance(usage, Mapping):
        rows = usage.get("usage", usage.get("data"))
        if rows is None:
            raise ValueError(f"`usage` payload has no `usage` field: keys {sorted(usage)!r}")
    if not isinstance(rows, (list, tuple)):
        raise ValueError(f"`usage` must be the /usage payload or its list of months, not {type(rows).__name__}")
    months, jobs, minutes = [], [], []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"`usage` row {i} must be an object, not {row!r:.80}")
        month = row.get("month")
        text = str(month) if month is not None else ""
        try:
            months.append(pd.Period(text[:7], freq="M") if _MONTH.match(text) else None)
        except (ValueError, TypeError):
            months.append(None)
        if months[-1] is None:
            raise ValueError(f"`month` of usage row {i} must be 'YYYY-MM', not {month!r}")
        for key, alts, out, cast in (("totalJobs", ("total_jobs", "totalTargets", "total_targets"), jobs, int),
                                     ("totalMinutes", ("total_minutes",), minutes, float)):
            value = row.get(key)
            for alt in alts:
                if value is None:
                    value = row.get(alt)
            if value is None:
                raise ValueError(f"usage row {i} has no `{key}` field: {dict(row)!r:.120}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"`{key}` of usage row {i} must be a number, not {value!r}") from None
            if not math.isfinite(number) or (cast is int and number != int(number)):
                raise ValueError(f"`{key}` of usage row {i} must be a finite {'whole ' if cast is int else ''}"
                                 f"number, not {value!r}")
            out.append(cast(number))
    frame = pd.DataFrame({
        "month": pd.array(months, dtype="period[M]"),
        "total_jobs": np.asarray(jobs, dtype=np.int64),
        "total_minutes": np.asarray(minutes, dtype=np.float64),
    }, columns=list(USAGE_COLUMNS))
    return frame.sort_values("month", kind="stable").reset_index(drop=True)


def merge_usage(history: Any, fresh: Any) -> pd.DataFrame:
    """A usage history with freshly fetched months merged in: a month in ``fresh`` replaces
    the same month of ``history`` (the service's figure is the newer one), other months of
    both are kept, sorted by month.

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
    return merged.sort_values("month", kind="stable").reset_index(drop=True)


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
        Columns, in order:

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
    ValueError
        A payload that is not a job (no ``id``).

    Examples
    --------
    >>> jobs_frame([{"id": "j1", "status": "queued", "metadata": {"name": "vocals", "format": "wav"}}])[
    ...     ["job_id", "model", "status"]]
      job_id   model  status
    0     j1  vocals  queued
    """
    parsed: list[Job] = []
    for i, job in enumerate(jobs):
        if isinstance(job, Job):
            parsed.append(job)
        elif isinstance(job, Mapping):
            try:
                parsed.append(Job.from_payload(job))
            except ValueError as exc:
                raise ValueError(f"`jobs` item {i}: {exc}") from None
        else:
            raise ValueError(f"`jobs` item {i} must be a Job or a job payload dict, not {type(job).__name__}")

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
