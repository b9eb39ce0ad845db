"""Evaluation: label reading, frame/window counting, per-condition table, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shakelab import cli, evaluation as ev


def test_read_segments_json_and_labels(tmp_path):
    j = tmp_path / "a.json"
    j.write_text(json.dumps([{"start_time": 0, "end_time": 10, "confidence": 0.75}]))
    assert ev.read_segments(j) == [{"start_time": 0.0, "end_time": 10.0, "confidence": 0.75}]
    t = tmp_path / "b.txt"
    t.write_text("1.5\t3\tmusic\n3\t4\t0.25\n\\ 100 200\n\n")
    assert ev.read_segments(t) == [{"start_time": 1.5, "end_time": 3.0, "confidence": 1.0},
                                   {"start_time": 3.0, "end_time": 4.0, "confidence": 0.25}]
    bad = tmp_path / "c.txt"
    bad.write_text("oops\n")
    with pytest.raises(ValueError, match="line 1"):
        ev.read_segments(bad)


def test_activity_threshold_and_edges():
    rows = [{"start_time": 0.0, "end_time": 0.02, "confidence": 0.9},
            {"start_time": 0.03, "end_time": 0.05, "confidence": 0.4}]
    assert ev.activity(rows, 0.05, threshold=0.5).tolist() == [True, True, False, False, False]
    assert ev.activity(rows, 0.05).tolist() == [True, True, False, True, True]  # every segment is music
    assert ev.activity([], 0.1).sum() == 0 and len(ev.activity([], 0.1)) == 10


def test_window_decisions_majority():
    track = np.r_[np.ones(500, bool), np.zeros(500, bool), np.ones(100, bool)]
    assert ev.window_decisions(track).tolist() == [True, True]
    assert ev.window_decisions(np.r_[np.ones(499, bool), np.zeros(501, bool)]).tolist() == [False]


def test_counts_and_scores():
    c = ev.counts(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1]))
    assert c == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    s = ev.scores({"tp": 0, "fp": 0, "fn": 0, "tn": 5})
    assert math.isnan(s["precision"]) and math.isnan(s["recall"]) and s["fpr"] == 0.0


def _write(d, name, labels, est, duration):
    (d / "ref").mkdir(exist_ok=True)
    (d / "est").mkdir(exist_ok=True)
    sf.write(d / "ref" / f"{name}.wav", np.zeros(int(duration * 100)), 100)
    (d / "ref" / f"{name}.txt").write_text("".join(f"{a}\t{b}\tmusic\n" for a, b in labels))
    (d / "est" / f"{name}.json").write_text(json.dumps(
        [{"start_time": a, "end_time": b, "confidence": c} for a, b, c in est]))


@pytest.fixture
def dirs(tmp_path):
    # music clip: 20 s of music, estimate finds the first 15 s
    _write(tmp_path, "m1", [(0, 20)], [(0, 10, 0.9), (10, 15, 0.8), (15, 20, 0.1)], 20.0)
    # speech clip: no music, estimate claims 2 s
    _write(tmp_path, "s1", [], [(0, 2, 0.6), (2, 20, 0.0)], 20.0)
    (tmp_path / "ref" / "manifest.csv").write_text("name,condition\nm1,music\ns1,speech\n")
    return tmp_path


def test_evaluate_dirs_per_condition(dirs):
    t = ev.evaluate_dirs(dirs / "ref", dirs / "est", threshold=0.5)  # the estimates list every window
    assert list(t.index) == ["music", "speech", "all"]
    assert t.loc["music", "frame_recall"] == 0.75 and t.loc["music", "frame_precision"] == 1.0
    assert t.loc["speech", "frame_fpr"] == 0.1 and math.isnan(t.loc["speech", "frame_recall"])
    assert t.loc["all", "frame_precision"] == 1500 / 1700  # exact: rounding is for printing
    assert t.loc["all", "frame_f1"] == 2 * 1500 / (2 * 1500 + 200 + 500)
    # 10-s windows: music [1, 1] vs est [1, 0] (5 s of 10 is a majority), speech [0, 0] vs [0, 0]
    assert t.loc["music", "window_recall"] == 1.0
    assert t.loc["speech", "window_fpr"] == 0.0
    assert t.loc["all", "files"] == 2 and t.loc["all", "seconds"] == 40.0


def test_evaluate_dirs_errors(dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="EST_DIR"):
        ev.evaluate_dirs(dirs / "ref", tmp_path / "nope")
    (dirs / "est" / "s1.json").unlink()
    with pytest.raises(FileNotFoundError, match="s1"):
        ev.evaluate_dirs(dirs / "ref", dirs / "est")
    with pytest.raises(ValueError, match="threshold"):
        ev.evaluate_dirs(dirs / "ref", dirs / "ref", threshold=2)


def test_cli_evaluate_prints_the_table(dirs, capsys):
    assert cli.main(["evaluate", str(dirs / "ref"), str(dirs / "est"), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "frame_f1" in out and "window_f1" in out and out.strip().splitlines()[-1].startswith("all")
    assert cli.main(["evaluate", str(dirs / "ref"), str(dirs / "missing")]) == 2


def test_documented_answer_scores_as_music_by_default(tmp_path, capsys):
    """The service's documented answer (verbatim) against a reference marking exactly its segments."""
    documented = (Path(__file__).parent / "data" / "music-detection-documented.json").read_text()
    for d in ("ref", "est"):
        (tmp_path / d).mkdir()
    sf.write(tmp_path / "ref" / "doc.wav", np.zeros(70 * 100), 100)
    (tmp_path / "ref" / "doc.txt").write_text("20\t30\tmusic\n40\t60\tmusic\n")
    (tmp_path / "est" / "doc.json").write_text(documented)
    t = ev.evaluate_dirs(tmp_path / "ref", tmp_path / "est")
    assert t.loc["all", "frame_recall"] == 1.0 and t.loc["all", "frame_precision"] == 1.0
    assert t.loc["all", "window_recall"] == 1.0 and t.loc["all", "frame_fpr"] == 0.0
    assert ev.evaluate_dirs(tmp_path / "ref", tmp_path / "est", threshold=0.5).loc["all", "frame_recall"] == 0.0
    assert cli.main(["evaluate", str(tmp_path / "ref"), str(tmp_path / "est")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[0] == "all" and last[3:6] == ["1.000", "1.000", "1.000"]  # frame precision, recall, F1


def test_frame_counts_agree_with_the_window_tracks(dirs):
    """The frame counts (evaluation.frame_metrics) and the tracks the window level uses see the same frames."""
    for ref_path in sorted((dirs / "ref").glob("*.txt")):
        ref = ev.read_segments(ref_path)
        est = ev.read_segments(next((dirs / "est").glob(ref_path.stem + ".*")))
        duration = max(s["end_time"] for s in ref + est)
        tracks = ev.counts(ev.activity(ref, duration, threshold=0.0), ev.activity(est, duration))
        assert ev._frame_counts(ref, est, duration, None) == tracks
        thresholded = ev.counts(ev.activity(ref, duration), ev.activity(est, duration, threshold=0.5))
        assert ev._frame_counts(ref, est, duration, 0.5) == thresholded


def test_metrics_are_the_parts_of_evaluate():
    """evaluate returns exactly frame_metrics and segment_metrics, prefixed; nothing is rounded."""
    ref = [{"start_time": 0, "end_time": 10}, {"start_time": 20, "end_time": 30}]
    est = [{"start_time": 0.3, "end_time": 10.2, "confidence": 0.9},
           {"start_time": 21, "end_time": 24, "confidence": 0.2}]
    both = ev.evaluate(ref, est, resolution=0.1, collar=0.5)
    frame = ev.frame_metrics(ref, est, resolution=0.1)
    segment = ev.segment_metrics(ref, est, collar=0.5)
    assert {k: both[f"frame_{k}"] for k in frame} == frame
    assert {k: both[f"segment_{k}"] for k in segment} == segment
    # 0.1-s blocks: est [0.3, 10.2) is blocks 3-101 (97 inside the reference), [21, 24) is 30 blocks
    assert (frame["tp"], frame["fp"], frame["fn"]) == (127, 2, 73) and frame["precision"] == 127 / 129
    assert segment == {"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                                          "tp": 1, "fp": 1, "fn": 1}
    ref_v, est_v = ev.validate(ref, est, threshold=0.5)
    assert len(ref_v) == 2 and est_v["start_time"].tolist() == [0.3]


def test_errors_are_shakelab_errors(tmp_path):
    from shakelab.errors import ShakelabError, ValidationError

    with pytest.raises(ValidationError, match=r"row 0: `end_time` 1\.0 is before"):
        ev.evaluate([{"start_time": 2, "end_time": 1}], [])
    with pytest.raises(ev.MissingInputError) as err:
        ev.evaluate_dirs(tmp_path / "nope", tmp_path)
    assert isinstance(err.value, ShakelabError) and isinstance(err.value, FileNotFoundError)
