"""The ``shakelab`` command on either API (``--api jobs|tasks``), against the real local server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from shakelab.cli import main
from shakelab.frames import SEGMENTS_COLUMNS

SR = 16000


@pytest.fixture
def hiss(tmp_path):
    path = tmp_path / "hiss.wav"   # noise: no music
    sf.write(path, 0.05 * np.random.default_rng(7).standard_normal(3 * SR).astype(np.float32), SR)
    return path


@pytest.fixture
def on_server(fresh_server, monkeypatch):
    """The environment of a user of the local server at a base URL: a token, which both APIs accept."""
    monkeypatch.setenv("AUDIOSHAKE_BASE_URL", fresh_server.base_url)
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", fresh_server.token)
    monkeypatch.setenv("AUDIOSHAKE_API_KEY", fresh_server.token)
    return fresh_server


def test_detect_and_usage_through_the_tasks_api(on_server, capsys, demo_path, hiss):
    assert main(["detect", str(demo_path), "--api", "tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == list(SEGMENTS_COLUMNS) and len(out) >= 2
    assert out[1].split()[0] == "demo.flac" and out[1].split()[2] == "10.0"   # the music starts at 10 s
    assert main(["detect", str(hiss), "--api", "tasks"]) == 0
    assert capsys.readouterr().out == "no music found in hiss.wav\n"
    stats = on_server.stats()
    assert (stats["tasks"], stats["jobs"]) == (2, 0)             # the Tasks API only
    # the same table as through the Jobs API, but for the ids
    assert main(["detect", str(demo_path), "--api", "jobs"]) == 0
    legacy = capsys.readouterr().out.splitlines()
    def without_job_id(lines):
        return [line.split()[:1] + line.split()[2:] for line in lines]

    assert without_job_id(legacy) == without_job_id(out)
    assert on_server.stats()["jobs"] == 1
    assert main(["usage", "--api", "tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["month", "total_jobs", "total_minutes"]
    assert out[-1].split()[1] == "2"                              # this month: two targets
    assert on_server.stats()["requests"].get("GET /tasks/statistics") == 1


def test_both_variables_and_no_api_is_refused(on_server, capsys, hiss):
    assert main(["detect", str(hiss)]) == 2
    err = capsys.readouterr().err
    assert 'shakelab.connect(api="tasks")' in err and on_server.stats()["requests"] == {}


@pytest.mark.parametrize("api", ["jobs", "tasks"])
def test_submit_waits_downloads_and_prints_the_jobs_table(on_server, capsys, tmp_path, hiss, api):
    code = main(["submit", str(hiss), "--models", "vocals,bass", "--format", "flac", "--api", api,
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    header = out[0].split()
    assert header[0] == "job_id"
    assert ("task_id" in header) is ("cost" in header) is (api == "tasks")   # the Tasks API's extra columns
    rows = [line.split() for line in out[1:3]]
    assert [r[header.index("model")] for r in rows] == ["vocals", "bass"]
    assert all(r[header.index("status")] == "completed" for r in rows)
    saved = [Path(line.removeprefix("saved ")) for line in out[3:]]
    assert [p.name for p in saved] == ["vocals.flac", "bass.flac"] and all(p.is_file() for p in saved)
    assert saved[0].is_relative_to(tmp_path / "out") and saved[0].parent.name == "hiss"
    stats = on_server.stats()
    if api == "tasks":   # one upload, one task for both models
        assert (stats["uploads"], stats["tasks"], stats["jobs"]) == (1, 1, 0)
    else:                # one upload, one job per model
        assert (stats["uploads"], stats["tasks"], stats["jobs"]) == (1, 0, 2)


def test_submit_of_a_failing_file_exits_1_with_the_message(on_server, capsys, tmp_path):
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"plain text, not audio\n" * 40)
    assert main(["submit", str(bogus), "--models", "music_detection", "--api", "tasks",
                 "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "music_detection failed" in captured.err and "error" in captured.out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


def test_batch_through_the_tasks_api(on_server, capsys, tmp_path, hiss):
    rec = tmp_path / "rec"
    rec.mkdir()
    hiss.rename(rec / "a.wav")
    code = main(["batch", str(rec), "--models", "music_detection,vocals", "--api", "tasks",
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert "2 jobs over 1 files: 2 completed" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "out" / "jobs.csv")
    assert summary["status"].tolist() == ["completed", "completed"]
    stats = on_server.stats()
    assert (stats["uploads"], stats["tasks"], stats["jobs"]) == (1, 1, 0)
