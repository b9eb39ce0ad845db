r"""Music-segment files: Audacity label tracks, CSV and the AudioShake music_detection JSON.

The writers round times to the millisecond and confidences to 4 digits (no float noise such as
``0.9868499999999999`` in a file a person reads) and the readers give back exactly what was
written; everything read is checked by :func:`shakelab.frames.as_segments`, so a bad file
raises :class:`~shakelab.errors.ValidationError` naming the line or the row. Label tracks and
JSON hold one recording's segments; CSV carries ``source`` and ``job_id`` and may hold many.
The same functions are re-exported by :mod:`shakelab.segments`.

Examples
--------
>>> import io
>>> from shakelab import labels
>>> f = io.StringIO()
>>> labels.write_labels([{"start_time": 20.0, "end_time": 30.0, "confidence": 0.17867346107959747}], f)
>>> f.getvalue()
'20.0\t30.0\t0.1787\n'
>>> labels.read_labels(io.StringIO(f.getvalue()))["confidence"].tolist()
[0.1787]
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shakelab.errors import ValidationError
from shakelab.frames import SEGMENTS_COLUMNS, as_segments, segments_frame

__all__ = ["CONFIDENCE_DECIMALS", "TIME_DECIMALS", "read_csv", "read_json", "read_labels", "write_csv",
           "write_json", "write_labels"]

_KEYS = ["source", "job_id"]

#: Decimals written by the exports: times to the millisecond, confidences to 4 digits.
TIME_DECIMALS, CONFIDENCE_DECIMALS = 3, 4


def _time(x: Any) -> float:
    return round(float(x), TIME_DECIMALS) + 0.0  # + 0.0: no "-0.0"


def _conf(x: Any) -> float:
    return round(float(x), CONFIDENCE_DECIMALS) + 0.0


def _num(x: float) -> str:
    """Shortest text that reads back as exactly the same (already rounded) float."""
    return repr(float(x))


def _one_source(df: pd.DataFrame, fmt: str) -> None:
    keys = df[_KEYS].drop_duplicates()
    if len(keys) > 1:
        raise ValidationError(f"a {fmt} file holds one recording's segments, but `segments` has "
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
        raise ValidationError("`path` must be a path or a file object, not "
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
        raise ValidationError("`path` must be a path or a file object, not "
                              f"{type(path_or_file).__name__}")
    p = Path(path_or_file)
    if not p.is_file():
        raise ValidationError(f"`path` must be an existing file, not {os.fspath(path_or_file)!r}")
    return p.read_text(encoding="utf-8"), os.fspath(p)


def _stem(path_or_file: Any) -> str | None:
    name = path_or_file if isinstance(path_or_file, (str, os.PathLike)) else getattr(
        path_or_file, "name", None)
    return Path(name).stem if isinstance(name, (str, os.PathLike)) else None


def write_labels(segments: Any, path: Any) -> None:
    r"""Write an Audacity label track: ``start<TAB>end<TAB>confidence`` per line.

    Times are rounded to the millisecond and confidences to 4 digits (no float noise such as
    ``0.9868499999999999``); :func:`read_labels` gets back exactly what was written. One
    source/job per file.

    Examples
    --------
    >>> import io
    >>> f = io.StringIO()
    >>> write_labels([{"start_time": 0.0, "end_time": 10.0, "confidence": 0.9868499999999999}], f)
    >>> f.getvalue()
    '0.0\t10.0\t0.9868\n'
    """
    df = as_segments(segments)
    _one_source(df, "label")
    lines = [f"{_num(_time(s))}\t{_num(_time(e))}\t{_num(_conf(c))}\n" for s, e, c in
             zip(df["start_time"], df["end_time"], df["confidence"], strict=True)]
    _write_text(path, "".join(lines))


def read_labels(path: Any, *, source: str | None = None,
                job_id: str | None = None) -> pd.DataFrame:
    r"""Read an Audacity label track (``start<TAB>end[<TAB>label]`` lines).

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
        The columns of :func:`shakelab.frames.as_segments` (plus ``label`` when some labels are not numbers).

    Examples
    --------
    >>> import io
    >>> read_labels(io.StringIO("1.5\t3.0\tmusic\n"))[["start_time", "confidence", "label"]
    ...     ].to_dict("records")
    [{'start_time': 1.5, 'confidence': 1.0, 'label': 'music'}]
    """
    text, name = _read_text(path)
    rows: list[dict] = []
    labels: list[str | None] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValidationError(f"{name} line {n}: expected start<TAB>end[<TAB>label], got {line!r}")
        try:
            s, e = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValidationError(f"{name} line {n}: times must be numbers, got {line!r}") from None
        label: str | None = parts[2] if len(parts) > 2 else ""
        try:
            c = float(label or "")
        except ValueError:
            c = math.nan
        if 0.0 <= c <= 1.0:
            label = None  # a number: the confidence
        else:
            c = 1.0
        rows.append({"start_time": s, "end_time": e, "confidence": c})
        labels.append(label)
    df = pd.DataFrame(rows, columns=["start_time", "end_time", "confidence"], dtype="float64")
    if any(lab is not None for lab in labels):
        df["label"] = pd.Series(labels, dtype="string")
    return as_segments(df, source=source if source is not None else _stem(path), job_id=job_id)


def write_csv(segments: Any, path: Any) -> None:
    """Write segments as CSV with the seven columns of a segments frame, rounded like :func:`write_labels`.

    Missing ``source``/``job_id``/``provenance`` are written as empty fields (and read back
    as missing).

    Examples
    --------
    >>> import io
    >>> f = io.StringIO()
    >>> write_csv([{"start_time": 0.0, "end_time": 0.1, "confidence": 1/3}], f)
    >>> f.getvalue().splitlines()[1]
    ',,0.0,0.1,0.1,0.3333,'
    """
    df = as_segments(segments)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SEGMENTS_COLUMNS)
    for row in df[list(SEGMENTS_COLUMNS)].itertuples(index=False):
        w.writerow(["" if pd.isna(row.source) else row.source,
                    "" if pd.isna(row.job_id) else row.job_id,
                    _num(_time(row.start_time)), _num(_time(row.end_time)),
                    _num(_time(_time(row.end_time) - _time(row.start_time))),
                    _num(_conf(row.confidence)), "" if pd.isna(row.provenance) else row.provenance])
    _write_text(path, buf.getvalue())


def read_csv(path: Any) -> pd.DataFrame:
    r"""Read segments from CSV written by :func:`write_csv`.

    Any CSV with ``start_time``, ``end_time`` and optionally ``confidence``, ``source``,
    ``job_id`` columns reads too.

    Examples
    --------
    >>> import io
    >>> read_csv(io.StringIO("start_time,end_time\n0,2.5\n"))["duration"].tolist()
    [2.5]
    """
    text, name = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    cols: dict[str, list] = {c: [] for c in (reader.fieldnames or [])}
    for n, row in enumerate(reader, start=2):
        for c in cols:
            v: Any = row.get(c)
            if c in ("start_time", "end_time", "confidence", "duration"):
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ValidationError(f"{name} line {n}: `{c}` must be a number, not {v!r}") \
                        from None
            elif v == "":
                v = None
            cols[c].append(v)
    if not cols:
        return segments_frame([])
    df = pd.DataFrame(cols)
    for c in [*_KEYS, "provenance"]:
        if c in df.columns:
            df[c] = df[c].astype("string")
    out = as_segments(df)
    if "duration" in df.columns:  # what the file says (write_csv rounds it), when it agrees with the times
        written = df["duration"].to_numpy(dtype=np.float64)
        agree = np.abs(written - out["duration"].to_numpy()) <= 10.0 ** -TIME_DECIMALS
        out["duration"] = np.where(agree, written, out["duration"].to_numpy())
    return out


def write_json(segments: Any, path: Any, *, indent: int | None = None) -> None:
    """Write the AudioShake music_detection JSON: ``[{start_time, end_time, confidence}]``.

    Rounded like :func:`write_labels` (milliseconds, 4-digit confidence); :func:`read_json`
    gets back exactly what was written. One source/job per file.

    Examples
    --------
    >>> import io
    >>> f = io.StringIO()
    >>> write_json([{"start_time": 0.0, "end_time": 10.0, "confidence": 0.5}], f)
    >>> f.getvalue()
    '[{"start_time": 0.0, "end_time": 10.0, "confidence": 0.5}]'
    """
    df = as_segments(segments)
    _one_source(df, "JSON")
    payload = [{"start_time": _time(s), "end_time": _time(e), "confidence": _conf(c)}
               for s, e, c in zip(df["start_time"], df["end_time"], df["confidence"], strict=True)]
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
        raise ValidationError(f"{name} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValidationError(f"{name}: expected a JSON list of segments, got {type(data).__name__}")
    return as_segments(data, source=source, job_id=job_id)
