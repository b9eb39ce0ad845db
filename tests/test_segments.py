"""shakelab.segments: hand-computed answers, invariants (hypothesis), bad input, exact round-trips."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shakelab import evaluation as ev
from shakelab import segments as sg


def seg(s, e, c=1.0):
    return {"start_time": s, "end_time": e, "confidence": c}


def frame(rows, source="a.wav", job_id="j1"):
    df = pd.DataFrame(rows, columns=["start_time", "end_time", "confidence"]).astype("float64")
    df.insert(0, "job_id", pd.Series([job_id] * len(df), dtype="string"))
    df.insert(0, "source", pd.Series([source] * len(df), dtype="string"))
    df["duration"] = df["end_time"] - df["start_time"]
    df["provenance"] = pd.Series([pd.NA] * len(df), dtype="string")
    return df[sg.COLUMNS]


# --------------------------------------------------------------------------- coercion
def test_payload_list_becomes_contract_frame():
    df = sg.as_frame([seg(0, 10, 0.25), seg(10, 20, 0.75)])
    assert list(df.columns) == sg.COLUMNS
    assert df["duration"].tolist() == [10.0, 10.0]
    assert str(df["source"].dtype) == "string" and df["source"].isna().all()


def test_output_file_paths_are_read(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("0.0\t10.0\t0.5\n10.0\t20.0\t0.75\n")  # the service's txt output
    for arg in (p, str(p)):
        df = sg.as_frame(arg)
        assert df["confidence"].tolist() == [0.5, 0.75] and list(df.columns) == sg.COLUMNS
    sg.write_json(sg.as_frame(p), tmp_path / "out.json")
    assert sg.merge(tmp_path / "out.json")["end_time"].tolist() == [20.0]


def test_frame_input_recomputes_duration_and_defaults_confidence():
    df = sg.as_frame(pd.DataFrame({"start_time": [1.0], "end_time": [3.5], "duration": [99.0]}))
    assert df["duration"].tolist() == [2.5]
    assert df["confidence"].tolist() == [1.0]


@pytest.mark.parametrize("rows, needle", [
    ([seg(0, 10), seg(5, 2)], "row 1: `end_time` 2.0 is before `start_time` 5.0"),
    ([seg(-1, 2)], "row 0: `start_time` -1.0 is negative"),
    ([seg(0, 2, 1.5)], "row 0: `confidence` 1.5 is outside [0, 1]"),
    ([seg(0, 2, -0.1)], "`confidence` -0.1 is outside"),
    ([seg(0, float("nan"))], "row 0: `end_time` must be a finite number"),
])
def test_bad_rows_name_row_and_value(rows, needle):
    with pytest.raises(ValueError) as err:
        sg.as_frame(rows)
    assert needle in str(err.value)


def test_bad_row_in_frame_names_index_label_and_source():
    df = frame([(0, 10, 0.5), (20, 30, 2.0)])
    df.index = ["x", "y"]
    with pytest.raises(ValueError, match=r"row 'y' \(source 'a.wav'\): `confidence` 2.0"):
        sg.threshold(df, 0.5)


def test_text_in_time_column_is_echoed():
    df = pd.DataFrame({"start_time": ["0", "soon"], "end_time": [1.0, 2.0]})
    with pytest.raises(ValueError, match="row 1: `start_time` must be a finite number, not 'soon'"):
        sg.as_frame(df)


def test_rejects_other_types_and_missing_columns():
    with pytest.raises(ValueError, match=r"`segments` must be a pandas DataFrame, a list.*'nope'"):
        sg.as_frame("nope")
    with pytest.raises(ValueError, match="no `end_time` column"):
        sg.as_frame(pd.DataFrame({"start_time": [0.0]}))
    with pytest.raises(ValueError, match=r"row 0: missing `end_time`"):
        sg.as_frame([{"start_time": 0.0}])


@pytest.mark.parametrize("call", [
    lambda: sg.threshold([], 1.5), lambda: sg.threshold([], "x"),
    lambda: sg.merge([], gap=-1), lambda: sg.drop_short([], float("nan")),
    lambda: sg.timeline([], hop=0), lambda: ev.evaluate([], [], collar=-0.1),
])
def test_bad_parameters_raise(call):
    with pytest.raises(ValueError, match="must be"):
        call()


# --------------------------------------------------------------------------- known answers
WINDOWS = [seg(0, 10, 0.9), seg(10, 20, 0.7), seg(20, 30, 0.1), seg(30, 40, 0.6),
           seg(40, 50, 0.8)]


def test_threshold_is_inclusive_and_keeps_order():
    out = sg.threshold(WINDOWS, 0.7)
    assert out["start_time"].tolist() == [0.0, 10.0, 40.0]
    assert out.index.tolist() == [0, 1, 2]


def test_merge_known_answer_weighted_confidence():
    out = sg.merge(sg.threshold(WINDOWS, 0.5))
    assert out[["start_time", "end_time"]].values.tolist() == [[0.0, 20.0], [30.0, 50.0]]
    assert out["confidence"].tolist() == pytest.approx([0.8, 0.7])
    assert out["duration"].tolist() == [20.0, 20.0]


def test_merge_gap_bridges_up_to_and_including_gap():
    rows = [seg(0, 10, 1.0), seg(11, 21, 0.5), seg(23, 24, 0.5)]
    assert len(sg.merge(rows, gap=1.0)) == 2
    assert sg.merge(rows, gap=2.0)[["start_time", "end_time"]].values.tolist() == [[0.0, 24.0]]
    # duration-weighted: (10*1 + 10*.5 + 1*.5) / 21
    assert sg.merge(rows, gap=2.0)["confidence"].iloc[0] == pytest.approx(15.5 / 21)


def test_merge_keeps_sources_and_jobs_apart():
    df = pd.concat([frame([(0, 10, 1)], "a", "j1"), frame([(5, 15, 1)], "a", "j2"),
                    frame([(10, 20, 1)], "b", "j3")], ignore_index=True)
    out = sg.merge(df)
    assert list(zip(out["source"], out["job_id"], strict=True)) == [("a", "j1"), ("a", "j2"), ("b", "j3")]


def test_drop_short_boundary():
    out = sg.drop_short([seg(0, 1), seg(2, 4), seg(5, 5.5)], 2.0)
    assert out["start_time"].tolist() == [2.0]


def test_coverage_known_answer():
    df = pd.concat([frame([(0, 10, 1), (5, 15, 1), (50, 60, 1)], "a"),
                    frame([(0, 30, 1)], "b")], ignore_index=True)
    out = sg.coverage(df, duration={"a": 100.0, "b": 40.0})
    assert out.to_dict("records") == [
        {"source": "a", "music_seconds": 25.0, "duration": 100.0, "share": 0.25},
        {"source": "b", "music_seconds": 30.0, "duration": 40.0, "share": 0.75}]
    # a number clips segments beyond it
    assert sg.coverage(df, duration=12)["music_seconds"].tolist() == [12.0, 12.0]
    # the last segment's end is not the recording's end: without a length, coverage says so
    with pytest.raises(ValueError, match=r"cannot know the length of recording 'a'.*`duration=`.*`audio=`"):
        sg.coverage(df)


def test_coverage_mapping_missing_source():
    with pytest.raises(ValueError, match="`duration` has no entry for source 'b'"):
        sg.coverage(pd.concat([frame([(0, 1, 1)], "a"), frame([(0, 1, 1)], "b")]),
                    duration={"a": 3.0})


def test_timeline_known_answer():
    out = sg.timeline([seg(1, 2, 0.5), seg(2, 2.5, 0.25)], hop=0.5, duration=3)
    assert out["frame"].tolist() == [0, 1, 2, 3, 4, 5]
    assert out["time"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert out["confidence"].tolist() == [0.0, 0.0, 0.5, 0.5, 0.25, 0.0]


def test_timeline_exact_boundaries_at_default_hop():
    out = sg.timeline([seg(0, 10, 0.9), seg(10, 20, 0.1)])
    assert len(out) == 2000
    assert out["confidence"].iloc[999] == 0.9 and out["confidence"].iloc[1000] == 0.1


def test_timeline_rejects_overlap_naming_rows():
    with pytest.raises(ValueError, match=r"row 1: interval \[5.0, 15.0\] overlaps row 0 "
                                         r"\[0.0, 10.0\].*merge\(\) them first"):
        sg.timeline([seg(0, 10, 0.5), seg(5, 15, 0.5)])


def test_overlap_check_on_request():
    with pytest.raises(ValueError, match="overlaps"):
        sg.as_frame([seg(0, 10), seg(9, 12)], allow_overlap=False)
    sg.as_frame([seg(0, 10), seg(10, 12)], allow_overlap=False)  # touching is fine


# --------------------------------------------------------------------------- evaluate
REF = [seg(0, 10), seg(20, 30)]
EST = [seg(0, 5, 0.9), seg(5, 12, 0.8), seg(12, 20, 0.3), seg(20, 29.6, 0.7), seg(40, 45, 0.6)]


def test_evaluate_frame_level_hand_computed_1s():
    r = ev.evaluate(REF, EST, resolution=1.0, threshold=0.5)
    # est active: [0,12) [20,30) [40,45) = 27 blocks; ref 20 blocks, all hit
    assert (r["frame_tp"], r["frame_fp"], r["frame_fn"]) == (20, 7, 0)
    assert r["frame_precision"] == pytest.approx(20 / 27)
    assert r["frame_recall"] == 1.0
    assert r["frame_f1"] == pytest.approx(40 / 47)


def test_evaluate_frame_level_hand_computed_10ms():
    r = ev.evaluate(REF, EST, threshold=0.5)
    # est: 1200 + 960 + 500 = 2660 blocks; hits 1000 + 960; misses [29.6, 30) = 40
    assert (r["frame_tp"], r["frame_fp"], r["frame_fn"]) == (1960, 700, 40)
    assert r["frame_recall"] == pytest.approx(0.98)


def test_evaluate_segment_level_collar():
    r = ev.evaluate(REF, EST, collar=0.5, threshold=0.5)
    # events est [0,12] [20,29.6] [40,45]; only [20,29.6]~[20,30] is within 0.5 s
    assert (r["segment_tp"], r["segment_fp"], r["segment_fn"]) == (1, 2, 1)
    assert (r["segment_precision"], r["segment_recall"], r["segment_f1"]) == \
        pytest.approx((1 / 3, 1 / 2, 0.4))
    r = ev.evaluate(REF, EST, collar=2.0, threshold=0.5)
    assert (r["segment_tp"], r["segment_fp"], r["segment_fn"]) == (2, 1, 0)


def test_evaluate_threshold_changes_estimate():
    r = ev.evaluate(REF, EST, resolution=1.0, threshold=0.95)
    assert r["frame_tp"] == 0 and math.isnan(r["frame_precision"]) and r["frame_f1"] == 0.0
    assert r["segment_fn"] == 2


def test_evaluate_one_to_one_matching():
    ref = [seg(0, 0.5), seg(0.6, 1.0)]
    est = [seg(0, 0.25), seg(0.3, 0.8)]  # [0.3,0.8] fits both refs, [0,0.25] only the first
    r = ev.evaluate(ref, est, collar=0.5)
    assert (r["segment_tp"], r["segment_fp"], r["segment_fn"]) == (2, 0, 0)


def test_evaluate_pairs_by_source_and_pools():
    ref = pd.concat([frame([(0, 10, 1)], "a"), frame([(0, 10, 1)], "b")], ignore_index=True)
    est = pd.concat([frame([(0, 10, 1)], "a"), frame([(10, 20, 1)], "b")], ignore_index=True)
    r = ev.evaluate(ref, est, resolution=1.0)
    assert (r["frame_tp"], r["frame_fp"], r["frame_fn"]) == (10, 10, 10)
    # one source each side: same recording whatever the names
    r = ev.evaluate(frame([(0, 10, 1)], "labels"), frame([(0, 10, 1)], "job.wav"))
    assert r["frame_f1"] == 1.0 and r["segment_f1"] == 1.0


def test_evaluate_empty():
    r = ev.evaluate([], [])
    assert r["frame_tp"] == r["segment_tp"] == 0
    assert math.isnan(r["frame_f1"]) and math.isnan(r["segment_precision"])


# --------------------------------------------------------------------------- empty in, empty out
def test_empty_in_empty_out():
    for out in (sg.as_frame([]), sg.threshold([], 0.5), sg.merge([]), sg.drop_short([], 1)):
        assert out.empty and list(out.columns) == sg.COLUMNS
    cov = sg.coverage([], duration=10.0)
    assert cov.empty and list(cov.columns) == ["source", "music_seconds", "duration", "share"]
    tf = sg.timeline([])
    assert tf.empty and list(tf.columns) == ["source", "frame", "time", "confidence"]


# --------------------------------------------------------------------------- file formats
def test_labels_known_text_and_audacity_extras(tmp_path):
    p = tmp_path / "rec.txt"
    sg.write_labels([seg(0.0, 10.0, 0.25), seg(10.0, 20.5, 1.0)], p)
    assert p.read_text() == "0.0\t10.0\t0.25\n10.0\t20.5\t1.0\n"
    p.write_text("1.5\t3.0\tmusic\n\\\t100.0\t2000.0\n4.0\t4.0\n")
    df = sg.read_labels(p)
    assert df["start_time"].tolist() == [1.5, 4.0]
    assert df["confidence"].tolist() == [1.0, 1.0]
    assert df["source"].tolist() == ["rec", "rec"]
    assert df["label"].tolist()[0] == "music"


def test_label_read_errors_name_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("0\t1\t0.5\nzero\t1\t0.5\n")
    with pytest.raises(ValueError, match="line 2: times must be numbers"):
        sg.read_labels(p)
    p.write_text("3\t1\t0.5\n")
    with pytest.raises(ValueError, match=r"row 0 \(source 'bad'\): `end_time` 1.0 is before"):
        sg.read_labels(p)


def test_write_refuses_many_recordings(tmp_path):
    df = pd.concat([frame([(0, 1, 1)], "a"), frame([(0, 1, 1)], "b")])
    with pytest.raises(ValueError, match=r"one recording's segments.*2 source/job pairs"):
        sg.write_json(df, tmp_path / "x.json")
    sg.write_csv(df, tmp_path / "x.csv")  # CSV carries source and job_id
    assert sg.read_csv(tmp_path / "x.csv")["source"].tolist() == ["a", "b"]


def test_json_is_the_audioshake_payload(tmp_path):
    p = tmp_path / "out.json"
    sg.write_json([seg(0.0, 10.0, 0.179)], p)
    assert p.read_text() == '[{"start_time": 0.0, "end_time": 10.0, "confidence": 0.179}]'
    df = sg.read_json(p, source="a.wav", job_id="j9")
    assert df[["source", "job_id"]].values.tolist() == [["a.wav", "j9"]]
    p.write_text('{"oops": 1}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        sg.read_json(p)


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def raw_rows(draw, max_size=12):
    n = draw(st.integers(0, max_size))
    rows = []
    for _ in range(n):
        a, b = sorted([draw(finite), draw(finite)])
        rows.append(seg(a, b, draw(unit)))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=raw_rows())
def test_round_trips_are_exact(rows):
    """Exports are rounded on write (ms, 4-digit confidence); reading back gives exactly what was written."""
    df = frame([(r["start_time"], r["end_time"], r["confidence"]) for r in rows], "rec", "job-1")
    for write, read in ((sg.write_labels, lambda f: sg.read_labels(f, source="rec", job_id="job-1")),
                        (sg.write_json, lambda f: sg.read_json(f, source="rec", job_id="job-1")),
                        (sg.write_csv, sg.read_csv)):
        buf = io.StringIO()
        write(df, buf)
        text = buf.getvalue()
        back = read(io.StringIO(text))
        assert back["start_time"].tolist() == [round(v, 3) for v in df["start_time"]]
        assert back["end_time"].tolist() == [round(v, 3) for v in df["end_time"]]
        assert back["confidence"].tolist() == [round(v, 4) for v in df["confidence"]]
        again = io.StringIO()
        write(back, again)
        assert again.getvalue() == text                      # what was read is what was written
        pd.testing.assert_frame_equal(read(io.StringIO(again.getvalue())), back, check_exact=True)


def test_exports_carry_no_float_noise(tmp_path):
    df = frame([(0.1 + 0.2, 1 / 3 + 10, 0.9868499999999999), (1e-300, 11.00049, 1 / 7)])
    for ext, w, r in (("txt", sg.write_labels, sg.read_labels), ("csv", sg.write_csv, sg.read_csv),
                      ("json", sg.write_json, sg.read_json)):
        p = tmp_path / f"a.{ext}"
        w(df, p)
        text = p.read_text()
        assert "0.9868" in text and "0.98684" not in text and "0.30000000000000004" not in text, text
        back = r(p) if ext == "csv" else r(p, source="a.wav", job_id="j1")
        assert back["start_time"].tolist() == [0.3, 0.0]
        assert back["end_time"].tolist() == [10.333, 11.0]
        assert back["confidence"].tolist() == [0.9868, 0.1429]
        if ext == "csv":
            assert back["duration"].tolist() == [10.033, 11.0]


# --------------------------------------------------------------------------- invariants
small = st.floats(min_value=0, max_value=200, allow_nan=False)


@st.composite
def seg_frames(draw, disjoint=False):
    n = draw(st.integers(0, 15))
    rows = []
    t = 0.0
    for _ in range(n):
        src = draw(st.sampled_from(["a", "b"]))
        if disjoint:
            t += draw(st.floats(0, 5))
            a, b = t, t + draw(st.floats(0, 20))
            t = b
        else:
            a = draw(small)
            b = a + draw(st.floats(0, 30))
        rows.append((src, a, b, draw(unit)))
    df = pd.DataFrame(rows, columns=["source", "start_time", "end_time", "confidence"])
    df["source"] = df["source"].astype("string")
    return sg.as_frame(df)


def union_length(df):
    iv = sorted(zip(df["start_time"], df["end_time"], strict=True))
    total, cur_s, cur_e = 0.0, None, None
    for s, e in iv:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0.0)


@settings(max_examples=80, deadline=None)
@given(df=seg_frames(), t1=unit, t2=unit)
def test_threshold_invariants(df, t1, t2):
    lo, hi = sorted([t1, t2])
    a, b = sg.threshold(df, lo), sg.threshold(df, hi)
    assert (a["confidence"] >= lo).all() and (b["confidence"] >= hi).all()
    assert len(b) <= len(a) <= len(df)
    assert len(sg.threshold(df, 0.0)) == len(df)
    # exactly the rows at or above the bar, nothing else
    assert len(a) == int((df["confidence"] >= lo).sum())


@settings(max_examples=80, deadline=None)
@given(df=seg_frames(), gap=st.floats(0, 10))
def test_merge_invariants(df, gap):
    out = sg.merge(df, gap=gap)
    for src, g in out.groupby("source"):
        s, e = g["start_time"].to_numpy(), g["end_time"].to_numpy()
        assert (np.diff(s) > 0).all()
        assert (s[1:] > e[:-1] + gap).all()  # disjoint and separated by more than gap
        inp = df[df["source"] == src]
        for a, b in zip(inp["start_time"], inp["end_time"], strict=True):  # every input inside one output
            assert ((s <= a) & (e >= b)).sum() == 1
        if gap == 0:
            assert math.isclose(g["duration"].sum(), union_length(inp), rel_tol=1e-9, abs_tol=1e-9)
        assert g["confidence"].between(inp["confidence"].min(), inp["confidence"].max()).all()
    assert len(out) <= len(df)
    pd.testing.assert_frame_equal(sg.merge(out, gap=gap), out)  # idempotent


@settings(max_examples=80, deadline=None)
@given(df=seg_frames(), t=unit)
def test_coverage_invariants(df, t):
    cov = sg.coverage(df, duration=df.groupby("source")["end_time"].max().to_dict())
    for row in cov.itertuples():
        inp = df[df["source"] == row.source]
        assert 0.0 <= row.music_seconds <= row.duration + 1e-9
        assert math.isclose(row.music_seconds, union_length(inp), rel_tol=1e-9, abs_tol=1e-9)
        if row.duration > 0:
            assert 0.0 <= row.share <= 1.0 + 1e-12
    # thresholding can only lower the music time of a source
    cov_t = sg.coverage(sg.threshold(df, t), duration=dict(zip(cov["source"], cov["duration"], strict=True)))
    before = dict(zip(cov["source"], cov["music_seconds"], strict=True))
    for row in cov_t.itertuples():
        assert row.music_seconds <= before[row.source] + 1e-9


@settings(max_examples=100, deadline=None)
@given(df=seg_frames(disjoint=True), hop=st.sampled_from([0.01, 0.1, 0.25, 1.0]))
def test_timeline_invariants(df, hop):
    out = sg.timeline(df, hop=hop)
    for src, g in out.groupby("source"):
        inp = df[df["source"] == src]
        dur = inp["end_time"].max()
        assert len(g) == math.ceil(dur / hop - 1e-7)
        assert (g["frame"].to_numpy() == np.arange(len(g))).all()
        assert set(g["confidence"]) <= set(inp["confidence"]) | {0.0}
        # frames touched by a segment
        active = (g["confidence"] > 0).sum() * hop
        music = inp.loc[inp["confidence"] > 0, "duration"].sum()
        n_seg = int((inp["confidence"] > 0).sum())
        assert active <= music + 2 * hop * n_seg + 1e-6
        assert active >= music - 1e-6  # covered time is never lost


# --------------------------------------------------------------------------- the service's meaning
DOCUMENTED = Path(__file__).parent / "data" / "music-detection-documented.json"  # verbatim; see data/README.md


def documented():
    return sg.read_json(DOCUMENTED, source="documented.wav")


def test_documented_example_is_30_s_of_music_by_default():
    est = documented()
    assert est["confidence"].tolist() == [0.17867346107959747, 0.3173922598361969]
    cov = sg.coverage(est, duration=70)
    assert cov.to_dict("records") == [{"source": "documented.wav", "music_seconds": 30.0, "duration": 70.0,
                                       "share": 30 / 70}]
    ref = [seg(20, 30), seg(40, 60)]
    r = ev.evaluate(ref, est)
    assert (r["frame_recall"], r["frame_precision"], r["segment_recall"]) == (1.0, 1.0, 1.0)
    assert r["threshold"] is None
    # a threshold is an explicit filter, and a 0.5 cut throws the documented music away
    assert ev.evaluate(ref, est, threshold=0.5)["frame_recall"] == 0.0
    assert sg.coverage(est, duration=70, threshold=0.3)["music_seconds"].tolist() == [20.0]


def test_all_window_output_asks_for_a_threshold():
    from shakelab.frames import provenance, segments_frame

    every = segments_frame([seg(0, 10, 0.1), seg(10, 20, 0.9)], source="a.wav",
                           provenance=provenance("cnn", all_windows=True))
    for call in (lambda: sg.coverage(every, duration=20), lambda: ev.evaluate([seg(10, 20)], every)):
        with pytest.raises(ValueError, match=r"all-window output.*local:cnn:window=10s:all_windows.*`threshold=`"):
            call()
    assert sg.coverage(every, duration=20, threshold=0.5)["music_seconds"].tolist() == [10.0]
    assert ev.evaluate([seg(10, 20)], every, threshold=0.5)["frame_f1"] == 1.0
    # merge never joins rows of different provenance, and keeps it
    music = segments_frame([seg(20, 30, 0.6)], source="a.wav", provenance=provenance("cnn"))
    merged = sg.merge(pd.concat([every, music], ignore_index=True))
    assert merged["provenance"].tolist() == ["local:cnn:window=10s", "local:cnn:window=10s:all_windows"]


def test_coverage_keeps_recordings_without_music_and_reads_lengths_from_audio(tmp_path):
    import soundfile as sf

    cov = sg.coverage(frame([(0, 10, 0.2)], "a.wav"), duration={"a.wav": 40.0, "silent.wav": 30.0})
    assert cov.to_dict("records") == [
        {"source": "a.wav", "music_seconds": 10.0, "duration": 40.0, "share": 0.25},
        {"source": "silent.wav", "music_seconds": 0.0, "duration": 30.0, "share": 0.0}]
    wav = tmp_path / "take.wav"
    sf.write(wav, np.zeros(8000 * 12, np.float32), 8000)
    assert sg.coverage(frame([(0, 3, 0.9)], "take.wav"), audio=wav)["duration"].tolist() == [12.0]
    assert sg.coverage([], audio=wav).to_dict("records") == [
        {"source": "take.wav", "music_seconds": 0.0, "duration": 12.0, "share": 0.0}]
    assert sg.coverage(frame([(0, 3, 0.9)], str(wav)))["duration"].tolist() == [12.0]  # the source is the file
    with pytest.raises(ValueError, match=r"cannot read the length of 'x.wav'"):
        sg.coverage(frame([(0, 3, 0.9)], "x.wav"), audio={"x.wav": tmp_path / "missing.wav"})
