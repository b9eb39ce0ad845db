"""shakelab.frames: fixed columns and dtypes, empty inputs, malformed payloads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shakelab.frames import (JOBS_COLUMNS, SEGMENTS_COLUMNS, USAGE_COLUMNS, jobs_frame, segments_frame,
                             usage_frame)
from shakelab.models import Job

DETECTION = [
    {"start_time": 0.0, "end_time": 10.0, "confidence": 0.02},
    {"start_time": 10.0, "end_time": 20.0, "confidence": 0.97},
    {"start_time": 20.0, "end_time": 25.5, "confidence": 0.5},
]
SEG_DTYPES = ["string", "string", "float64", "float64", "float64", "float64", "string"]


def test_segments_frame_columns_dtypes_values():
    df = segments_frame(DETECTION, job="job-7", source="demo.flac")
    assert tuple(df.columns) == SEGMENTS_COLUMNS
    assert df.dtypes.astype(str).tolist() == SEG_DTYPES
    assert df["duration"].tolist() == [10.0, 10.0, 5.5]
    assert df["confidence"].tolist() == [0.02, 0.97, 0.5]
    assert df["source"].tolist() == ["demo.flac"] * 3 and df["job_id"].tolist() == ["job-7"] * 3


def test_segments_frame_from_job_and_text_forms(tmp_path):
    job = Job.from_payload({"id": "j1", "status": "completed", "sourceAsset": {"id": "a", "name": "song.wav"}})
    df = segments_frame(json.dumps(DETECTION), job=job)
    assert df["job_id"].tolist() == ["j1"] * 3 and df["source"].tolist() == ["song.wav"] * 3
    txt = "0.0\t10.0\t0.02\n10.0\t20.0\t0.97\n20.0\t25.5\t0.5\n"
    pd.testing.assert_frame_equal(segments_frame(txt.encode()), segments_frame(DETECTION))
    path = tmp_path / "out.json"
    path.write_text(json.dumps(DETECTION))
    by_path = segments_frame(path, source=tmp_path / "dir" / "x.wav")
    assert by_path["end_time"].tolist() == [10.0, 20.0, 25.5] and by_path["source"].iloc[0] == "x.wav"
    assert segments_frame({"segments": DETECTION})["start_time"].tolist() == [0.0, 10.0, 20.0]
    reframed = segments_frame(df[["start_time", "end_time", "confidence"]], job="j2", source="b.wav")
    assert reframed["confidence"].tolist() == [0.02, 0.97, 0.5] and reframed["job_id"].iloc[0] == "j2"
    with pytest.raises(ValueError, match=r"`detection` frame has no `confidence` column"):
        segments_frame(df[["start_time", "end_time"]])
    bad = pd.DataFrame({"start_time": ["x"], "end_time": [1.0], "confidence": [0.5]})
    with pytest.raises(ValueError, match=r"`start_time` of detection row 0 must be a number, not 'x'"):
        segments_frame(bad)


@pytest.mark.parametrize("empty", [[], "", b"", "[]"])
def test_segments_frame_empty(empty):
    df = segments_frame(empty)
    assert len(df) == 0 and tuple(df.columns) == SEGMENTS_COLUMNS
    assert df.dtypes.astype(str).tolist() == SEG_DTYPES


def test_segments_frame_without_job_or_source_is_na():
    df = segments_frame(DETECTION[:1])
    assert df["source"].isna().all() and df["job_id"].isna().all()


@pytest.mark.parametrize("bad,pattern", [
    ([{"start_time": 0, "end_time": 1}], r"row 0 has no `confidence`"),
    ([DETECTION[0], {"end_time": 1, "confidence": 0.1}], r"row 1 has no `start_time`"),
    ([{"start_time": "a", "end_time": 1, "confidence": 0.1}],
     r"`start_time` of detection row 0 must be a number, not 'a'"),
    ([{"start_time": 0, "end_time": 1, "confidence": 1.5}],
     r"`confidence` of detection row 0 must be within 0-1, not 1.5"),
    ([{"start_time": 5, "end_time": 1, "confidence": 0.5}], r"`end_time` of detection row 0 \(1.0\) is before"),
    ([{"start_time": float("nan"), "end_time": 1, "confidence": 0.5}],
     r"`start_time` of detection row 0 must be a finite"),
    ([[0, 1, 0.5]], r"row 0 must be an object"),
    ("[{not json", r"not valid JSON"),
    ("0.0 10.0\n", r"line 1 must hold start_time, end_time and confidence"),
    ({"foo": 1}, r"not an object with keys \['foo'\]"),
    (42, r"not int"),
])
def test_segments_frame_malformed(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        segments_frame(bad)


def test_usage_frame_sorted_typed():
    payload = {"clientId": "c", "usage": [
        {"month": "2026-03", "totalJobs": 412, "totalMinutes": 823.5},
        {"month": "2026-01", "totalJobs": 3, "totalMinutes": 1},
        {"month": "2026-02", "totalTargets": 7, "totalMinutes": "2.25"},
    ]}
    df = usage_frame(payload)
    assert tuple(df.columns) == USAGE_COLUMNS
    assert df.dtypes.astype(str).tolist() == ["period[M]", "int64", "float64"]
    assert [str(m) for m in df["month"]] == ["2026-01", "2026-02", "2026-03"]
    assert df["total_jobs"].tolist() == [3, 7, 412] and df["total_minutes"].tolist() == [1.0, 2.25, 823.5]
    assert usage_frame(payload["usage"]).equals(df)


def test_usage_frame_empty_and_snake_case():
    df = usage_frame({"clientId": "c", "usage": []})
    assert len(df) == 0 and df.dtypes.astype(str).tolist() == ["period[M]", "int64", "float64"]
    one = usage_frame([{"month": "2025-12-01", "total_jobs": 1, "total_minutes": 0.5}])
    assert str(one["month"].iloc[0]) == "2025-12"


@pytest.mark.parametrize("bad,pattern", [
    ({"clientId": "c"}, r"no `usage` field"),
    ([{"month": "March", "totalJobs": 1, "totalMinutes": 1}], r"`month` of usage row 0 must be 'YYYY-MM', not 'March'"),
    ([{"month": "2026-01", "totalMinutes": 1}], r"usage row 0 has no `totalJobs`"),
    ([{"month": "2026-01", "totalJobs": "x", "totalMinutes": 1}],
     r"`totalJobs` of usage row 0 must be a number, not 'x'"),
    ([{"month": "2026-01", "totalJobs": 1.5, "totalMinutes": 1}], r"`totalJobs` of usage row 0 must be a finite whole"),
    ("nope", r"not str"),
])
def test_usage_frame_malformed(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        usage_frame(bad)


def test_jobs_frame_columns_and_values():
    done = {"id": "j1", "status": "completed", "createdAt": "2026-03-01T10:00:00Z",
            "startedAt": "2026-03-01T10:00:01Z", "updatedAt": "2026-03-01T10:00:04.5Z",
            "metadata": {"name": "vocals", "format": "wav"}, "assetId": "a1",
            "sourceAsset": {"id": "a1", "name": "song.wav"},
            "outputAssets": [{"name": "vocals.wav", "link": "l"}]}
    failed = {"id": "j2", "status": "error", "statusInfo": {"message": "bad audio"},
              "metadata": {"name": "music_detection", "format": "json"}, "assetId": "a1"}
    odd = {"id": "j3", "status": "paused"}
    df = jobs_frame([Job.from_payload(done), failed, odd], audio_s={"a1": 44.0})
    assert tuple(df.columns) == JOBS_COLUMNS
    assert df.dtypes.astype(str).tolist() == [
        "string", "category", "string", "category", "string", "string", "datetime64[ns, UTC]",
        "datetime64[ns, UTC]", "datetime64[ns, UTC]", "float64", "float64", "object", "string"]
    assert df["job_id"].tolist() == ["j1", "j2", "j3"]
    assert df["status"].astype(str).tolist() == ["completed", "error", "paused"]
    assert df["model"].tolist()[:2] == ["vocals", "music_detection"] and pd.isna(df["model"].iloc[2])
    # processing time and the recording's length are two columns (one `duration_s` read as the length)
    assert df["processing_s"].iloc[0] == pytest.approx(3.5) and np.isnan(df["processing_s"].iloc[1])
    assert df["audio_s"].tolist()[:2] == [44.0, 44.0] and np.isnan(df["audio_s"].iloc[2])
    assert df["outputs"].tolist() == [["vocals.wav"], [], []]
    assert df["error"].iloc[1] == "bad audio" and pd.isna(df["error"].iloc[0])
    assert df["source_name"].iloc[0] == "song.wav"
    assert df["created_at"].iloc[0] == pd.Timestamp("2026-03-01T10:00:00Z") and pd.isna(df["created_at"].iloc[2])


def test_jobs_frame_empty_and_bad_items():
    df = jobs_frame([])
    assert len(df) == 0 and tuple(df.columns) == JOBS_COLUMNS
    assert str(df["created_at"].dtype) == "datetime64[ns, UTC]"
    with pytest.raises(ValueError, match=r"`jobs` item 1: job payload has no `id`"):
        jobs_frame([{"id": "a"}, {"status": "queued"}])
    with pytest.raises(ValueError, match=r"`jobs` item 0 must be a Job or a job payload dict, not int"):
        jobs_frame([1])


def test_as_segments_is_the_validator_of_every_segments_input(tmp_path):
    """Frames, payload lists and output files come out as the segments_frame contract."""
    from shakelab import segments
    from shakelab.errors import ValidationError
    from shakelab.frames import as_segments

    assert segments.as_frame is as_segments and list(SEGMENTS_COLUMNS) == segments.COLUMNS
    out = tmp_path / "take.json"
    out.write_text(json.dumps(DETECTION))
    for given in (DETECTION, pd.DataFrame(DETECTION), out):
        df = as_segments(given, source="take.wav", job_id="j1")
        assert tuple(df.columns) == SEGMENTS_COLUMNS
        assert df["source"].tolist() == ["take.wav"] * len(DETECTION) and df["job_id"].unique().tolist() == ["j1"]
    with pytest.raises(ValidationError, match=r"row 0 \(source 'take.wav'\): `start_time` -1.0 is negative"):
        as_segments([{"start_time": -1, "end_time": 2}], source="take.wav")
