"""shakelab.widgets driven in plain Python against the real local server.

The widgets are operated as a user would (set ``.value``, ``FileUpload.set_state``,
``.click()``); the tests then wait (bounded) for the background thread and check what the
server received (``server.stats()``), the status table, the jobs frame and the callbacks.
"""

from __future__ import annotations

import html
import json
import re
import threading

import numpy as np
import pytest
import soundfile as sf

from shakelab import catalog
from shakelab.client import Client
from shakelab.widgets import (
    DetectionExplorer, JobSubmitter, UsageDashboard, explore_segments, is_local, models_for,
    status_table_html, validate_submission,
)

WAIT = 180  # seconds: a bound for the background thread, never a timing assertion


def _wav(path, seconds=3.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, y.astype("float32"), sr, subtype="PCM_16")
    return path


@pytest.fixture
def fresh_client(fresh_server):
    return Client(token=fresh_server.token, base_url=fresh_server.base_url)


def _statuses(submitter):
    return [r["status"] for r in submitter.rows]


def _table_statuses(html_text):
    return re.findall(r"shakelab-status shakelab-status-(\w+)'", html_text)


# ---------------------------------------------------------------------------------- plain functions

def test_models_for_picks_local_catalogue_on_loopback(client):
    assert is_local(client)
    assert models_for(client) is catalog.LOCAL_MODELS
    remote = Client(token="not-a-real-token-000", base_url="https://groovy.audioshake.ai")
    assert not is_local(remote)
    assert models_for(remote) is catalog.SERVICE_MODELS


def test_validate_submission_names_field_and_value(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    ok = validate_submission(path=str(wav), models=["vocals", "drums"], format="flac",
                             catalogue=catalog.LOCAL_MODELS)
    assert ok["source"] == wav and ok["name"] == "a.wav" and ok["models"] == ["vocals", "drums"]
    assert ok["callback_url"] is None
    cases = [
        (dict(path=""), "both are empty"),
        (dict(path=str(tmp_path / "missing.wav")), "missing.wav"),
        (dict(path=str(tmp_path)), "is a directory"),
        (dict(path=str(wav), models=[]), "at least one `model`"),
        (dict(path=str(wav), models=["guitar"]), "'guitar'"),  # not on the local server
        (dict(path=str(wav), models=["vocals", "music_detection"], format="json"), "`format`"),
        (dict(path=str(wav), callback_url="ftp://x"), "'ftp://x'"),
        (dict(path=str(wav), uploads=[{"name": "b.wav", "content": b"x"}]), "not both"),
        (dict(uploads=[{"name": "b.wav", "content": b""}]), "'b.wav' is empty"),
    ]
    for kwargs, needle in cases:
        args = dict(models=["vocals"], format="wav", catalogue=catalog.LOCAL_MODELS)
        args.update(kwargs)
        with pytest.raises(ValueError) as err:
            validate_submission(**args)
        assert needle in str(err.value), (kwargs, str(err.value))


def test_status_table_html_escapes_and_links():
    text = status_table_html([{"file": "<b>x</b>.wav", "model": "vocals", "format": "wav", "status": "failed",
                               "elapsed": 2.34, "job_id": "j1", "outputs": [("vocals.wav", "http://h/d?a=1&b=2")],
                               "message": "bad <audio>"}])
    assert "&lt;b&gt;x&lt;/b&gt;.wav" in text and "bad &lt;audio&gt;" in text
    assert "href='http://h/d?a=1&amp;b=2'" in text
    assert _table_statuses(text) == ["failed"] and "2.3 s" in text
    assert "No jobs yet" in status_table_html([])


# ---------------------------------------------------------------------------------- JobSubmitter

def test_format_dropdown_offers_only_common_formats(fresh_client):
    sub = JobSubmitter(fresh_client)
    assert list(sub.models.options) == list(catalog.LOCAL_MODELS)
    assert sub.models.value == ("music_detection",)
    assert list(sub.format.options) == ["json", "txt"] and sub.format.value == "json"
    sub.models.value = ("vocals", "drums")
    assert list(sub.format.options) == catalog.common_formats(["vocals", "drums"], catalog.LOCAL_MODELS)
    assert sub.format.value == "wav"
    sub.format.value = "flac"
    sub.models.value = ("bass",)
    assert sub.format.value == "flac"  # a still-valid choice is kept
    sub.models.value = ("vocals", "music_detection")
    assert list(sub.format.options) == [] and sub.format.disabled
    remote = JobSubmitter(Client(token="not-a-real-token-000", base_url="https://groovy.audioshake.ai"))
    assert list(remote.models.options) == list(catalog.SERVICE_MODELS)
    remote.models.value = ("transcription", "alignment")
    assert list(remote.format.options) == ["json", "txt", "srt"]


def test_validation_errors_shown_and_nothing_sent(fresh_server, fresh_client, tmp_path):
    sub = JobSubmitter(fresh_client)
    sub.submit_button.click()
    assert "shakelab-error" in sub.messages.value and "both are empty" in sub.messages.value
    sub.path.value = str(tmp_path / "nope.flac")
    sub.submit_button.click()
    assert "nope.flac" in sub.messages.value and "does not exist" in sub.messages.value
    sub.path.value = str(_wav(tmp_path / "ok.wav"))
    sub.models.value = ("vocals", "music_detection")
    sub.submit_button.click()
    assert "`format`" in sub.messages.value
    sub.models.value = ("music_detection",)
    sub.callback_url.value = "not a url"
    sub.submit_button.click()
    assert "`callback_url`" in sub.messages.value and "'not a url'" in sub.messages.value
    assert sub.rows == [] and sub.jobs == [] and not sub.running
    stats = fresh_server.stats()
    assert stats["uploads"] == 0 and stats["jobs"] == 0
    assert not any(k.startswith("POST") for k in stats["requests"])


def test_submit_path_tracks_jobs_in_background(fresh_server, fresh_client, tmp_path):
    fresh_server.faults.processing_delay = 3.0  # so the click certainly returns before the jobs finish
    wav = _wav(tmp_path / "tone.wav")
    sub = JobSubmitter(fresh_client, poll_interval=0.2)
    completed, lock = [], threading.Lock()

    @sub.on_complete
    def remember(job):
        with lock:
            completed.append(job)

    sub.path.value = str(wav)
    sub.models.value = ("vocals", "bass")
    sub.format.value = "flac"
    sub.submit_button.click()
    # the click returned while the jobs still run: rows are there, not finished
    assert [r["model"] for r in sub.rows] == ["vocals", "bass"]
    assert sub.running
    assert not set(_statuses(sub)) & {"completed", "failed"}

    frame = sub.wait(timeout=WAIT)
    assert _statuses(sub) == ["completed", "completed"]
    assert _table_statuses(sub.table.value) == ["completed", "completed"]
    assert "vocals.flac" in sub.table.value and "bass.flac" in sub.table.value
    stats = fresh_server.stats()
    assert stats["uploads"] == 1 and stats["jobs"] == 2
    assert stats["requests"]["POST /job"] == 2
    assert frame["model"].astype(str).tolist() == ["vocals", "bass"]
    assert frame["format"].tolist() == ["flac", "flac"]
    assert frame["status"].astype(str).tolist() == ["completed", "completed"]
    assert sorted(j.id for j in completed) == sorted(frame["job_id"])
    assert all(r["elapsed"] > 0 for r in sub.rows)


def test_file_upload_then_download_button(fresh_server, fresh_client, tmp_path):
    content = _wav(tmp_path / "clip.wav").read_bytes()
    sub = JobSubmitter(fresh_client, poll_interval=0.2, download_dir=tmp_path / "downloads")
    sub.upload.set_state({"value": [{"name": "clip.wav", "type": "audio/wav", "size": len(content),
                                     "content": memoryview(content), "last_modified": 1700000000000}]})
    assert sub.upload.value[0]["name"] == "clip.wav"
    sub.models.value = ("music_detection",)
    sub.format.value = "json"
    sub.submit_button.click()
    frame = sub.wait(timeout=WAIT)
    assert frame["status"].astype(str).tolist() == ["completed"]
    assert frame["source_name"].tolist() == ["clip.wav"]
    assert fresh_server.stats()["uploads"] == 1

    sub.download_button.click()
    sub.wait(timeout=WAIT)
    (path,) = sub.rows[0]["downloaded"]
    segments = json.loads(open(path).read())  # the music segments: [] for this tone, which is no music
    assert isinstance(segments, list) and all({"start_time", "end_time", "confidence"} <= set(w) for w in segments)
    assert "Saved 1 file(s)" in sub.messages.value


def test_failed_job_shows_server_message(fresh_server, fresh_client, tmp_path):
    bogus = tmp_path / "not-audio.wav"
    bogus.write_bytes(b"this is plain text, not a RIFF file\n" * 50)
    sub = JobSubmitter(fresh_client, poll_interval=0.2)
    seen = []
    sub.on_complete(seen.append)                 # completed only: must not fire
    failures = []
    sub.on_complete(failures.append, failed=True)
    sub.path.value = str(bogus)
    sub.models.value = ("music_detection",)
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    (row,) = sub.rows
    assert row["status"] == "failed"
    job = fresh_client.get_job(row["job_id"])
    assert job.failed and job.error and row["message"] == job.error
    assert html.escape(job.error, quote=False) in sub.table.value
    assert seen == [] and [j.id for j in failures] == [row["job_id"]]
    assert fresh_server.stats()["jobs"] == 1


def test_rejected_submission_shows_server_error(fresh_server, fresh_client, tmp_path):
    fresh_server.faults.add(method="POST", path="/upload", status=400, times=1,
                            body={"error": "unavailable", "message": "maintenance window"})
    sub = JobSubmitter(fresh_client, poll_interval=0.2)
    sub.path.value = str(_wav(tmp_path / "a.wav"))
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    (row,) = sub.rows
    assert row["status"] == "failed" and "maintenance window" in row["message"]
    assert "maintenance window" in sub.messages.value
    assert fresh_server.stats()["jobs"] == 0


def test_callback_error_is_shown_not_lost(fresh_client, tmp_path):
    sub = JobSubmitter(fresh_client, poll_interval=0.2)

    def broken(job):
        raise RuntimeError("boom in user code")

    sub.on_complete(broken)
    with pytest.raises(ValueError, match="callable"):
        sub.on_complete("not callable")
    sub.path.value = str(_wav(tmp_path / "a.wav"))
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    assert _statuses(sub) == ["completed"]
    assert "boom in user code" in sub.messages.value and "broken" in sub.messages.value


# ---------------------------------------------------------------------------------- DetectionExplorer

def _detection():
    from shakelab.frames import segments_frame

    windows = [{"start_time": 0.0, "end_time": 2.0, "confidence": 0.9},
               {"start_time": 2.0, "end_time": 4.0, "confidence": 0.55},
               {"start_time": 4.0, "end_time": 6.0, "confidence": 0.2},
               {"start_time": 6.0, "end_time": 8.0, "confidence": 0.8}]
    return segments_frame(windows, job="j1", source="tone.wav")


def test_detection_explorer_sliders_redraw_and_cover(tmp_path):
    from shakelab import segments as sg

    wav = _wav(tmp_path / "tone.wav", seconds=8.0)
    seg = _detection()
    ex = DetectionExplorer(wav, seg, threshold=0.5, gap=0.0, export_path=tmp_path / "labels.txt")
    assert ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    first_png = ex.image.value
    assert ex.segments()[["start_time", "end_time"]].values.tolist() == [[0.0, 4.0], [6.0, 8.0]]
    assert "6.0 s of music" in ex.coverage.value and "75.0%" in ex.coverage.value
    assert ex.ax is not None and ex.ax.get_xlim()[1] >= 8.0 - 1e-6

    ex.threshold.value = 0.6                      # drops the 0.55 window
    assert ex.segments()[["start_time", "end_time"]].values.tolist() == [[0.0, 2.0], [6.0, 8.0]]
    assert "4.0 s of music" in ex.coverage.value and "50.0%" in ex.coverage.value
    assert ex.image.value != first_png
    ex.gap.value = 5.0                             # merges across the 4-s hole
    assert ex.segments()[["start_time", "end_time"]].values.tolist() == [[0.0, 8.0]]
    assert "8.0 s of music" in ex.coverage.value
    pd_equal = explore_segments(seg, threshold=0.6, gap=5.0)
    assert ex.segments().equals(pd_equal)

    ex.export_button.click()
    back = sg.read_labels(tmp_path / "labels.txt")
    assert back[["start_time", "end_time"]].values.tolist() == [[0.0, 8.0]]
    assert "Wrote 1 label(s)" in ex.messages.value
    ex.export_path.value = str(tmp_path / "no-such-dir" / "x" / "labels.txt")
    ex.export_button.click()
    assert "shakelab-error" in ex.messages.value and "no-such-dir" in ex.messages.value


def test_detection_explorer_array_input_and_bad_arguments():
    y = np.zeros(8000 * 8, dtype="float32")
    ex = DetectionExplorer((y, 8000), _detection(), threshold=0.0)
    assert len(ex.segments()) == 1 and "100.0%" in ex.coverage.value
    with pytest.raises(ValueError, match=r"`threshold`.*1\.5"):
        DetectionExplorer((y, 8000), _detection(), threshold=1.5)
    with pytest.raises(ValueError, match=r"`gap`.*-1"):
        DetectionExplorer((y, 8000), _detection(), gap=-1)


# ---------------------------------------------------------------------------------- UsageDashboard

def test_usage_dashboard_fetches_and_refreshes(fresh_client, tmp_path):
    dash = UsageDashboard(fresh_client)
    before = int(dash.usage["total_jobs"].sum())
    assert dash.image.value[:4] == b"\x89PNG" and "shakelab-usage-table" in dash.table.value
    fresh_client.submit(_wav(tmp_path / "a.wav"), ["music_detection"], progress=False)
    dash.refresh_button.click()
    assert int(dash.usage["total_jobs"].sum()) == before + 1
    month = str(dash.usage["month"].iloc[-1])
    assert month in dash.table.value and "Fetched" in dash.messages.value


def test_usage_dashboard_shows_history_and_reports_errors(fresh_server):
    history = json.loads((__import__("pathlib").Path(__file__).resolve().parents[1]
                          / "data" / "example_usage.json").read_text())
    broken = Client(token="wrong-token-0123456789", base_url=fresh_server.base_url, max_retries=0)
    dash = UsageDashboard(broken, usage=history)
    assert len(dash.usage) == len(history["usage"])
    assert history["usage"][0]["month"] in dash.table.value
    assert fresh_server.stats()["requests"].get("GET /usage", 0) == 0  # history shown, nothing fetched
    dash.refresh_button.click()
    assert "shakelab-error" in dash.messages.value and "could not fetch usage" in dash.messages.value
    assert len(dash.usage) == len(history["usage"])  # the history stays on screen


def test_widgets_default_to_connect(monkeypatch, tmp_path):
    """Without a client the widgets use shakelab.connect(): no token -> the embedded local server."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the embedded server's data dir
    sub = JobSubmitter()
    assert is_local(sub.client) and sub.catalogue == catalog.LOCAL_MODELS
    dash = UsageDashboard()
    assert dash.client.base_url == sub.client.base_url
    assert list(dash.usage.columns) == ["month", "total_jobs", "total_minutes"]


def test_submitter_rejects_bad_arguments(client):
    with pytest.raises(ValueError, match=r"`poll_interval`.*0"):
        JobSubmitter(client, poll_interval=0)
    with pytest.raises(ValueError, match=r"`timeout`.*'soon'"):
        JobSubmitter(client, timeout="soon")
    with pytest.raises(ValueError, match=r"`catalogue`"):
        JobSubmitter(client, catalogue={})
    only = JobSubmitter(client, catalogue={"vocals": ("wav", "flac")})
    assert list(only.models.options) == ["vocals"] and list(only.format.options) == ["wav", "flac"]
