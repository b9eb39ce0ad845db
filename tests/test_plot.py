"""shakelab.plot: artists, limits, legends and labels; one image comparison of the overlay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from matplotlib.collections import PolyCollection, QuadMesh

from shakelab import plot

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]
SR = 8000


def signal(seconds=30.0, sr=SR):
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.05 * rng.standard_normal(t.size)
    music = (t >= 10) & (t < 20)
    y[music] += 0.5 * np.sin(2 * np.pi * 440 * t[music])
    return y.astype(np.float32)


SEGS = [{"start_time": 0.0, "end_time": 10.0, "confidence": 0.1},
        {"start_time": 10.0, "end_time": 20.0, "confidence": 0.95},
        {"start_time": 20.0, "end_time": 30.0, "confidence": 0.4}]


def twin_of(ax):
    others = [a for a in ax.figure.axes if a is not ax and a.bbox.bounds == ax.bbox.bounds]
    assert len(others) == 1
    return others[0]


def all_axes(fig):
    return [a for top in fig.axes for a in (top, *top.child_axes)]


def legend_texts(ax):
    legends = [a.get_legend() for a in all_axes(ax.figure) if a.get_legend() is not None]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "rec.wav"
    sf.write(str(p), signal(), SR, subtype="PCM_16")
    return p


# --------------------------------------------------------------------------- plot_detection
def test_detection_artists_limits_legend(wav):
    _fig, ax = plt.subplots()
    out = plot.plot_detection(wav, SEGS, threshold=0.5, ax=ax)
    assert out is ax
    assert ax.get_xlim() == (0.0, 30.0)
    spans = [c for c in ax.collections if c.get_label() == "music (shade = confidence)"]
    assert len(spans) == 1 and len(spans[0].get_paths()) == 1      # only 10-20 s passes 0.5
    below = [c for c in ax.collections if c.get_label() == "below threshold"]
    assert len(below) == 1 and len(below[0].get_paths()) == 2      # shown, not hidden
    wave = [c for c in ax.collections if c.get_label() == "waveform"]
    assert len(wave) == 1
    # drawn from the envelope, not from 240 000 samples
    assert len(wave[0].get_paths()[0].vertices) < 5000
    lane = ax.confidence_ax
    assert lane in ax.child_axes and lane.get_ylim()[1] > 1.05     # 1.0 stays inside the frame
    conf = next(ln for ln in lane.get_lines() if ln.get_label() == "confidence")
    assert conf.get_ydata().tolist() == [0.1, 0.1, 0.95, 0.95, 0.4, 0.4]
    thr = next(ln for ln in lane.get_lines() if ln.get_label() == "threshold 0.5")
    assert list(thr.get_ydata()) == [0.5, 0.5] and not [ln for ln in ax.get_lines() if "threshold" in
                                                          ln.get_label()]
    assert legend_texts(ax) == ["waveform", "music (shade = confidence)", "below threshold", "confidence",
                                "threshold 0.5"]
    assert plt.gca() is ax


def test_detection_threshold_lane_title_and_top_confidence_stay_apart(wav):
    """The review's findings: threshold on the waveform's zero line, title over the legend, 1.0 in the frame."""
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=80, layout="constrained")
    plot.plot_detection(wav, [{"start_time": 0, "end_time": 30, "confidence": 0.999}], threshold=0.5, ax=ax)
    ax.set_title("a title")
    fig.canvas.draw()
    lane = ax.confidence_ax
    zero_y = ax.transData.transform((0.0, 0.0))[1]
    thr_y = lane.transData.transform((0.0, 0.5))[1]
    wave_bottom = ax.transData.transform((0.0, ax.get_ylim()[0]))[1]
    assert lane.get_window_extent().y1 <= ax.transData.transform((0, -0.9 * abs(ax.get_ylim()[1])))[1]
    assert abs(thr_y - zero_y) > 20 and wave_bottom <= thr_y < zero_y   # in the lane, below the waveform
    top_y = lane.transData.transform((0.0, 0.999))[1]
    assert lane.get_window_extent().y1 - top_y >= 3                   # a near-1.0 line is not the frame
    legend = next(a.get_legend() for a in all_axes(fig) if a.get_legend() is not None)
    title, box = ax.title.get_window_extent(), legend.get_window_extent()
    assert title.y0 >= box.y1 - 1, (title, box)


def test_detection_shades_every_returned_segment_by_default():
    """The documented answer: both low-confidence segments are music."""
    from shakelab import segments as sg

    y = np.zeros(70 * SR, np.float32)
    documented = sg.read_json(DATA / "music-detection-documented.json")
    ax = plot.plot_detection((y, SR), documented)
    spans = next(c for c in ax.collections if c.get_label() == "music (shade = confidence)")
    xs = [(p.vertices[:, 0].min(), p.vertices[:, 0].max()) for p in spans.get_paths()]
    assert xs == [(20.0, 30.0), (40.0, 60.0)]
    assert not [c for c in ax.collections if c.get_label() == "below threshold"]
    assert "threshold" not in " ".join(legend_texts(ax))


def test_detection_of_all_windows_needs_a_threshold():
    from shakelab.frames import provenance, segments_frame

    every = segments_frame(SEGS, provenance=provenance("cnn", all_windows=True))
    with pytest.raises(ValueError, match=r"all-window output.*`threshold=`"):
        plot.plot_detection((signal(), SR), every)
    ax = plot.plot_detection((signal(), SR), every, threshold=0.3, gap=15.0)
    spans = next(c for c in ax.collections if c.get_label() == "music (shade = confidence)")
    assert [(p.vertices[:, 0].min(), p.vertices[:, 0].max()) for p in spans.get_paths()] == [(10.0, 30.0)]


def test_detection_array_input_and_gaps_break_the_line():
    y = signal()
    segs = [SEGS[0], SEGS[2]]  # a hole 10-20 s
    ax = plot.plot_detection((y, SR), segs)
    assert ax is plt.gca()
    conf = next(ln for ln in ax.confidence_ax.get_lines() if ln.get_label() == "confidence")
    assert np.isnan(conf.get_ydata()[2])
    assert "threshold" not in " ".join(legend_texts(ax))


def test_detection_kwargs_go_to_waveform(wav):
    ax = plot.plot_detection(wav, SEGS, color="green")
    wave = next(c for c in ax.collections if c.get_label() == "waveform")
    assert tuple(wave.get_facecolor()[0][:3]) == pytest.approx((0.0, 0.5019607, 0.0))


def test_detection_very_short_input_draws_samples():
    ax = plot.plot_detection((np.array([0.0, 0.5, -0.5, 0.25]), 4), [])
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "waveform")
    assert line.get_ydata().tolist() == [0.0, 0.5, -0.5, 0.25]


def test_detection_long_file_ticks_read_hms():
    sr = 10
    y = np.zeros(int(3700 * sr), np.float32)
    ax = plot.plot_detection((y, sr), [{"start_time": 0, "end_time": 3700, "confidence": 1}])
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "1:00:00" in labels and ax.get_xlabel() == "time (h:mm:ss)"
    assert ax.get_ylim()[1] == 1.1  # silence: a unit scale, not a zero-height axis


def test_detection_accepts_segments_frame(wav):
    from shakelab.frames import segments_frame

    df = segments_frame(SEGS, source="rec.wav", job="j1")
    ax = plot.plot_detection(wav, df)
    spans = next(c for c in ax.collections if c.get_label() == "music (shade = confidence)")
    assert len(spans.get_paths()) == 3


@pytest.mark.parametrize("kwargs, needle", [
    ({"threshold": 1.5}, "`threshold` must be a number in"),
    ({"threshold": "high"}, "`threshold` must be a number in"),
])
def test_detection_bad_threshold(wav, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        plot.plot_detection(wav, SEGS, **kwargs)


def test_detection_rejects_many_recordings_and_bad_audio(wav, tmp_path):
    df = pd.DataFrame({"source": ["a", "b"], "start_time": [0.0, 0.0], "end_time": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"one recording.*plot_timeline"):
        plot.plot_detection(wav, df)
    with pytest.raises(ValueError, match="must be a path, a numpy array"):
        plot.plot_detection(3.0, SEGS)
    with pytest.raises(ValueError, match="not a readable audio file"):
        plot.plot_detection(tmp_path / "missing.wav", SEGS)


# --------------------------------------------------------------------------- image comparison
BASELINE = DATA / "plot_detection_baseline.png"


def draw_baseline_figure(path):
    y = signal()
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=80, layout="constrained")
    plot.plot_detection((y, SR), SEGS, threshold=0.5, ax=ax, bins=600)
    ax.set_title("rec.wav")  # composition: the title stays above the legend
    fig.savefig(path)
    plt.close(fig)


def test_detection_image_matches_baseline(tmp_path):
    from matplotlib.testing.compare import compare_images

    if os.environ.get("SHAKELAB_UPDATE_BASELINES"):
        draw_baseline_figure(BASELINE)
    actual = tmp_path / "actual.png"
    draw_baseline_figure(actual)
    result = compare_images(str(BASELINE), str(actual), tol=3)
    assert result is None, result


# --------------------------------------------------------------------------- spectrogram
def test_spectrogram_mesh_limits_and_strip(wav):
    _fig, ax = plt.subplots()
    out = plot.plot_spectrogram(wav, SEGS, ax=ax, n_mels=40)
    assert out is ax
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(mesh) == 1 and mesh[0].get_array().shape[0] == 40
    assert ax.get_ylim() == pytest.approx((0.0, SR / 2))
    assert ax.get_xlim()[1] == pytest.approx(30.0, abs=0.1)
    strip = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(strip) == 1 and len(strip[0].get_paths()) == 3
    arr = np.asarray(mesh[0].get_array())
    assert arr.max() == pytest.approx(0.0, abs=1e-4) and arr.min() >= -80.0 - 1e-4
    # every segment is music by default (3 marks above); a threshold is an explicit filter
    ax = plot.plot_spectrogram(wav, SEGS, threshold=0.5, ax=plt.figure().gca(), n_mels=40)
    strip = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(strip) == 1 and len(strip[0].get_paths()) == 1


def test_spectrogram_long_input_bounded_columns():
    y = signal(600.0, sr=4000)
    ax = plot.plot_spectrogram((y, 4000), max_columns=100, cmap="gray")
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    assert mesh.get_array().shape[1] <= 100
    assert mesh.get_cmap().name == "gray"
    assert ax.get_xlabel() == "time (m:ss)" and ax.get_legend() is None


# --------------------------------------------------------------------------- timeline
def batch_frame():
    rows = []
    for i, src in enumerate(["b.wav", "a.wav", "c.wav"]):
        for k in range(4):
            rows.append({"source": src, "job_id": f"j{i}", "start_time": 10.0 * k,
                         "end_time": 10.0 * k + 10, "confidence": (k + i) / 6})
    return pd.DataFrame(rows)


def test_timeline_rows_colours_and_colorbar():
    fig, ax = plt.subplots()
    out = plot.plot_timeline(batch_frame(), ax=ax)
    assert out is ax and plt.gca() is ax
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b.wav", "a.wav", "c.wav"]
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bars) == 3 and all(len(b.get_paths()) == 4 for b in bars)
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_allclose(bars[1].get_facecolors()[2], viridis(3 / 6))
    assert ax.get_ylim() == (2.5, -0.5)  # first row on top
    assert ax.get_xlim() == (0.0, 40.0)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "confidence"


def test_timeline_by_job_and_bad_by():
    fig, ax = plt.subplots()
    plot.plot_timeline(batch_frame(), by="job_id", ax=ax, colorbar=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["j0", "j1", "j2"]
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="`by` must be 'source' or 'job_id', not 'model'"):
        plot.plot_timeline(batch_frame(), by="model")


def test_timeline_keeps_recordings_without_music():
    _fig, ax = plt.subplots()
    plot.plot_timeline(batch_frame(), recordings=["a.wav", "silent.wav", "b.wav", "c.wav"], ax=ax,
                       colorbar=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a.wav", "silent.wav", "b.wav", "c.wav"]
    notes = [t for t in ax.texts if t.get_text() == "no music found"]
    assert len(notes) == 1 and notes[0].xy == (0, 1)
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 3
    from shakelab.frames import provenance, segments_frame

    every = segments_frame([{"start_time": 0, "end_time": 10, "confidence": 0.2}], source="x.wav",
                           provenance=provenance("cnn", all_windows=True))
    with pytest.raises(ValueError, match="`threshold=`"):
        plot.plot_timeline(every)
    ax = plot.plot_timeline(every, threshold=0.5, recordings=["x.wav"], colorbar=False, ax=plt.figure().gca())
    assert [t.get_text() for t in ax.texts] == ["no music found"]
    coverage = pd.DataFrame({"source": ["x.wav", "broken.wav"], "finding": ["no music found", "no result"]})
    ax = plot.plot_timeline(every, threshold=0.5, recordings=coverage, colorbar=False, ax=plt.figure().gca())
    assert [t.get_text() for t in ax.texts] == ["no music found", "no result"]


def test_timeline_empty():
    ax = plot.plot_timeline([], colorbar=False)
    assert len(ax.collections) == 0 and len(ax.get_yticklabels()) == 0


# --------------------------------------------------------------------------- confidence
def test_confidence_histogram_is_duration_weighted():
    segs = [{"start_time": 0, "end_time": 30, "confidence": 0.05},
            {"start_time": 30, "end_time": 120, "confidence": 0.95}]
    _fig, ax = plt.subplots()
    out = plot.plot_confidence(segs, bins=10, ax=ax, color="red")
    assert out is ax
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 10
    assert heights[0] == pytest.approx(0.5) and heights[-1] == pytest.approx(1.5)  # minutes
    assert sum(heights[1:-1]) == 0
    assert ax.get_ylabel() == "duration (minutes)" and ax.get_xlim() == (0.0, 1.0)
    assert ax.patches[0].get_facecolor()[:3] == (1.0, 0.0, 0.0)


def test_confidence_units_and_bad_bins():
    ax = plot.plot_confidence([{"start_time": 0, "end_time": 5, "confidence": 0.5}])
    assert ax.get_ylabel() == "duration (seconds)"
    with pytest.raises(ValueError, match="`bins` must be a positive integer, not 0"):
        plot.plot_confidence([], bins=0)


# --------------------------------------------------------------------------- usage
def example_usage():
    return json.loads((ROOT / "data" / "example_usage.json").read_text())


def all_texts(ax):
    return [t.get_text() for a in ax.figure.axes for t in a.texts]


def test_example_usage_payload_shape():
    payload = example_usage()
    assert set(payload) == {"clientId", "usage"} and len(payload["usage"]) == 36
    months = [r["month"] for r in payload["usage"]]
    assert months == sorted(months) and len(set(months)) == 36
    for r in payload["usage"]:
        assert set(r) == {"month", "totalJobs", "totalMinutes"}
        assert isinstance(r["totalJobs"], int) and r["totalJobs"] > 0 and r["totalMinutes"] > 0


def test_usage_36_months():
    payload = example_usage()
    _fig, ax = plt.subplots(figsize=(10, 3.5))
    out = plot.plot_usage(payload, ax=ax)
    assert out is ax and plt.gca() is ax
    bars = ax.containers[0]
    assert len(bars) == 36
    assert [b.get_height() for b in bars] == [r["totalJobs"] for r in payload["usage"]]
    texts = all_texts(ax)
    for r in payload["usage"]:  # every job count is written
        assert f"{r['totalJobs']:,}" in texts
    last = payload["usage"][-1]["totalMinutes"]
    assert f"{last:,.0f}" in texts  # minutes labelled at max/last only when dense
    tw = twin_of(ax)
    line = tw.get_lines()[0]
    assert line.get_ydata().tolist() == [r["totalMinutes"] for r in payload["usage"]]
    assert ax.get_ylim()[0] == 0 and tw.get_ylim()[0] == 0
    labels = [t.get_text() for t in ax.get_xticklabels()]
    # 2023-11 .. 2026-10: ticks every 3rd month from Jan 2024, the year under each January
    assert len(labels) == 12 and labels[:5] == ["Jan\n2024", "Apr", "Jul", "Oct", "Jan\n2025"]
    assert legend_texts(ax) == ["jobs", "minutes"]


def test_usage_one_month_and_labels():
    ax = plot.plot_usage({"clientId": "x", "usage": [
        {"month": "2026-03", "totalJobs": 412, "totalMinutes": 823.5}]})
    assert sorted(all_texts(ax)) == ["412", "824"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Mar\n2026"]
    lo, hi = ax.get_xlim()
    assert hi - lo == pytest.approx(3.2)  # one bar does not fill the axes


def test_usage_fills_missing_months_and_accepts_frame():
    from shakelab.frames import usage_frame

    rows = [{"month": "2026-01", "totalJobs": 5, "totalMinutes": 10.0},
            {"month": "2026-04", "totalJobs": 7, "totalMinutes": 12.5}]
    for data in (rows, usage_frame(rows)):
        _fig, ax = plt.subplots()
        plot.plot_usage(data, ax=ax)
        assert [b.get_height() for b in ax.containers[0]] == [5, 0, 0, 7]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["Jan\n2026", "Feb", "Mar", "Apr"]


def test_usage_says_what_it_counts():
    from shakelab.frames import merge_usage, usage_frame

    tasks = usage_frame([{"month": "2026-03", "totalTargets": 42, "totalMinutes": "123.5"}])  # the Tasks API
    jobs = usage_frame({"usage": [{"month": "2026-02", "totalJobs": 5, "totalMinutes": 9.0}]})
    for data, counts in ((tasks, "targets"), (jobs, "jobs"), (tasks.to_dict("records"), "jobs"),
                         (merge_usage(jobs, tasks), "targets"), (usage_frame([], counts="targets"), "targets")):
        ax = plot.plot_usage(data, ax=plt.subplots()[1])
        assert ax.get_ylabel() == counts and legend_texts(ax)[:1] == ([counts] if len(ax.containers) else [])
    empty = plot.plot_usage([{"month": "2026-03", "totalTargets": 0, "totalMinutes": "0"}])
    assert [t.get_text() for t in empty.texts] == ["no targets in these months"]
    # both APIs' frames still concatenate (one column); pandas drops the differing attrs: "jobs"
    both = pd.concat([jobs, tasks], ignore_index=True)
    assert list(both.columns) == ["month", "total_jobs", "total_minutes"] and both["total_jobs"].tolist() == [5, 42]
    assert plot.plot_usage(both, ax=plt.subplots()[1]).get_ylabel() == "jobs"
    with pytest.raises(ValueError, match="`counts` must be 'jobs' or 'targets', not 'minutes'"):
        usage_frame([], counts="minutes")


def test_usage_empty_and_bad():
    ax = plot.plot_usage({"usage": []})
    assert ax.containers == []
    with pytest.raises(ValueError, match="lacks columns"):
        plot.plot_usage(pd.DataFrame({"month": ["2026-01"]}))
    with pytest.raises(ValueError, match="month"):
        plot.plot_usage([{"month": "soon", "totalJobs": 1, "totalMinutes": 1}])


# --------------------------------------------------------------------------- hygiene
def test_no_rcparams_change_and_no_show(monkeypatch, wav):
    before = dict(matplotlib.rcParams)
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() called"))
    plot.plot_detection(wav, SEGS, threshold=0.3)
    plot.plot_spectrogram(wav, SEGS)
    plot.plot_timeline(batch_frame())
    plot.plot_confidence(SEGS)
    plot.plot_usage(example_usage())
    assert dict(matplotlib.rcParams) == before


def test_format_time():
    assert plot.format_time(3725, 7200) == "1:02:05"
    assert plot.format_time(75, 300) == "1:15"
    assert plot.format_time(2.5, 10) == "2.5"


def test_import_stays_light_and_reexports():
    code = ("import sys, shakelab, shakelab.plot, shakelab.segments, shakelab.audio;"
            "print(sorted(m for m in ('matplotlib', 'librosa') if m in sys.modules));"
            "print(shakelab.plot_detection is shakelab.plot.plot_detection,"
            " shakelab.plot_usage is shakelab.plot.plot_usage)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["[]", "True True"]


# --------------------------------------------------------------------------- the browser review
def test_usage_job_ticks_are_whole_and_empty_months_unlabelled():
    """Fractional job ticks (0.2, 0.4 ... jobs) and "0"/"0.0" labels on top of each other."""
    ax = plot.plot_usage({"usage": [{"month": "2026-10", "totalJobs": 0, "totalMinutes": 0.0},
                                    {"month": "2026-11", "totalJobs": 0, "totalMinutes": 0.0},
                                    {"month": "2026-12", "totalJobs": 3, "totalMinutes": 1.8}]})
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert sorted(all_texts(ax)) == ["1.8", "3"]                 # nothing written on empty months
    empty = plot.plot_usage({"usage": [{"month": "2026-12", "totalJobs": 0, "totalMinutes": 0.0}]},
                            ax=plt.figure().gca())
    assert all_texts(empty) == ["no jobs in these months"]


def test_timeline_labels_rows_with_short_names():
    """Full paths once filled the left of the plot (notebook 04 rewrote them by hand)."""
    df = batch_frame()
    df["source"] = df["source"].map({"b.wav": "/data/set/x/take1.wav", "a.wav": "/data/set/y/take1.wav",
                                     "c.wav": "/data/set/y/sub/c.wav"})
    ax = plot.plot_timeline(df, ax=plt.figure().gca(), colorbar=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x/take1.wav", "y/take1.wav", "y/sub/c.wav"]
    one = plot.plot_timeline(df[df["source"] == "/data/set/x/take1.wav"], ax=plt.figure().gca(), colorbar=False)
    assert [t.get_text() for t in one.get_yticklabels()] == ["take1.wav"]


def _timeline_frame():
    rng = np.random.default_rng(7)
    rows = []
    for i, name in enumerate(["recordings/a/take1.wav", "recordings/b/take1.wav", "recordings/b/take2.wav"]):
        for k in range(6 - i):
            rows.append({"source": name, "start_time": 10.0 * k, "end_time": 10.0 * k + 10,
                         "confidence": float(rng.uniform())})
    return pd.DataFrame(rows)


def draw_usage(path):
    fig, ax = plt.subplots(figsize=(8, 3), dpi=80, layout="constrained")
    plot.plot_usage(example_usage(), ax=ax)
    fig.savefig(path)
    plt.close(fig)


def draw_usage_short(path):
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=80, layout="constrained")
    plot.plot_usage({"usage": [{"month": "2026-10", "totalJobs": 0, "totalMinutes": 0.0},
                               {"month": "2026-11", "totalJobs": 2, "totalMinutes": 1.5},
                               {"month": "2026-12", "totalJobs": 3, "totalMinutes": 2.2}]}, ax=ax)
    fig.savefig(path)
    plt.close(fig)


def draw_timeline(path):
    fig, ax = plt.subplots(figsize=(7, 2.4), dpi=80, layout="constrained")
    plot.plot_timeline(_timeline_frame(), ax=ax)
    fig.savefig(path)
    plt.close(fig)


def draw_confidence(path):
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=80, layout="constrained")
    plot.plot_confidence(_timeline_frame(), bins=10, ax=ax)
    fig.savefig(path)
    plt.close(fig)


@pytest.mark.parametrize("name,draw", [("plot_usage", draw_usage), ("plot_usage_short", draw_usage_short),
                                       ("plot_timeline", draw_timeline), ("plot_confidence", draw_confidence)])
def test_main_plots_match_their_baselines(tmp_path, name, draw):
    """Composition (labels, ticks, colour bar, legend) guarded with a tolerance; regenerate with
    SHAKELAB_UPDATE_BASELINES=1 after a deliberate change, and look at the PNG."""
    from matplotlib.testing.compare import compare_images

    baseline = DATA / f"{name}_baseline.png"
    if os.environ.get("SHAKELAB_UPDATE_BASELINES"):
        draw(baseline)
    actual = tmp_path / f"{name}.png"
    draw(actual)
    result = compare_images(str(baseline), str(actual), tol=3)
    assert result is None, result
