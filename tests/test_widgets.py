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
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shakelab import catalog
from shakelab.client import Client
from shakelab.client import output_folder
from shakelab.errors import ValidationError
from shakelab.widgets import (
    NATURAL, PER_KIND, DetectionExplorer, JobSubmitter, UsageDashboard, explore_segments, is_local,
    models_for, status_table_html, usage_table_html, validate_submission,
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
    assert "No jobs yet" in status_table_html([]) and "No tasks yet" in status_table_html([], api="tasks")
    with pytest.raises(ValidationError, match="`api` must be 'jobs' or 'tasks', not 'job'"):
        status_table_html([], api="job")


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
    sub.models.value = ("vocals", "music_detection")  # two kinds: each its own, or one choice per kind
    assert [v for _, v in sub.format.options] == [NATURAL, PER_KIND] and sub.format.value == NATURAL
    assert sub.format.options[0][0] == "each model's own format (wav, json)" and not sub.format.disabled
    assert sub.family_box.children == () and sub.chosen_format() is None
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
    assert sub.header.value.startswith("<b>Submit jobs</b> &mdash; Jobs API, local server <code>http://127.0.0.1:")
    assert "Submitted tone.wav: 2 job(s)" in sub.messages.value and ">job id</th>" in sub.table.value
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
    segments = json.loads(Path(path).read_text())  # the music segments: [] for this tone, which is no music
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
    assert ex.use_threshold.value and ex.active_threshold == 0.5
    assert ex.segments()[["start_time", "end_time"]].values.tolist() == [[0.0, 4.0], [6.0, 8.0]]
    assert "6.0 s of music" in ex.coverage.value and "75.0%" in ex.coverage.value
    # rows and merged regions are counted apart, and the window under the threshold is drawn
    assert "3 of 4 returned segments at or above 0.50 (1 below, shown hatched)" in ex.coverage.value
    assert "<b>2 music regions</b> shown" in ex.coverage.value
    hatched = [c for c in ex.ax.collections if c.get_label() == "below threshold"]
    assert len(hatched) == 1 and len(hatched[0].get_paths()) == 1
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


def test_detection_explorer_shows_the_documented_answer_by_default(tmp_path):
    """The service's documented answer (confidences 0.18 and 0.32): both segments are music."""
    from shakelab import segments as sg

    documented = sg.read_json(Path(__file__).parent / "data" / "music-detection-documented.json")
    ex = DetectionExplorer((np.zeros(8000 * 70, dtype="float32"), 8000), documented)
    assert not ex.use_threshold.value and ex.threshold.disabled and ex.active_threshold is None
    assert ex.segments()[["start_time", "end_time"]].values.tolist() == [[20.0, 30.0], [40.0, 60.0]]
    assert "all 2 returned segments are music" in ex.coverage.value
    assert "30.0 s of music, 42.9% of the recording" in ex.coverage.value
    spans = next(c for c in ex.ax.collections if c.get_label() == "music (shade = confidence)")
    assert len(spans.get_paths()) == 2
    ex.use_threshold.value = True                  # an explicit filter: 0.5 drops both, shows them hatched
    assert ex.segments().empty and "<b>no music found</b>" in ex.coverage.value
    assert "0 of 2 returned segments at or above 0.50 (2 below" in ex.coverage.value
    # the labels of the buttons are not cut
    assert ex.export_button.layout.width == "auto" and ex.use_threshold.layout.width == "auto"


def test_detection_explorer_on_all_windows_starts_at_the_local_cut():
    from shakelab.frames import provenance, segments_frame

    every = segments_frame([{"start_time": 0.0, "end_time": 4.0, "confidence": 0.3},
                            {"start_time": 4.0, "end_time": 8.0, "confidence": 0.8}],
                           provenance=provenance("cnn", window=4, all_windows=True))
    ex = DetectionExplorer((np.zeros(8000 * 8, dtype="float32"), 8000), every)
    assert ex.active_threshold == 0.5 and ex.use_threshold.disabled
    assert "1 of 2 windows at or above 0.50" in ex.coverage.value and "4.0 s of music" in ex.coverage.value


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
    # the Jobs API's /usage counts jobs: chart and table say so
    assert dash.ax.get_ylabel() == "jobs" and ">jobs</th>" in dash.table.value


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


# ---------------------------------------------------------------------------------- the browser review

def test_mixed_models_get_each_their_own_format_or_one_per_kind(fresh_server, fresh_client, tmp_path):
    """music_detection with a stem model: the Format list once emptied and Submit blamed `format`."""
    sub = JobSubmitter(fresh_client, poll_interval=0.2)
    sub.path.value = str(_wav(tmp_path / "tone.wav"))
    sub.models.value = ("music_detection", "vocals")
    sub.submit_button.click()
    frame = sub.wait(timeout=WAIT)
    assert "shakelab-error" not in sub.messages.value, sub.messages.value
    assert frame["format"].tolist() == ["json", "wav"]          # what client.submit does by default
    assert frame["status"].astype(str).tolist() == ["completed", "completed"]

    sub.format.value = PER_KIND
    boxes = {d.description: d for d in sub.family_box.children}
    assert set(boxes) == {"music_detection", "vocals"}
    assert list(boxes["vocals"].options) == ["wav", "mp3", "flac", "aiff"]
    boxes["vocals"].value, boxes["music_detection"].value = "flac", "txt"
    assert sub.chosen_format() == {"music_detection": "txt", "vocals": "flac"}
    sub.submit_button.click()
    frame = sub.wait(timeout=WAIT)
    assert frame["format"].tolist()[2:] == ["txt", "flac"]
    assert [r["format"] for r in sub.rows] == ["json", "wav", "txt", "flac"]
    assert "vocals.flac" in sub.table.value and "music_detection.txt" in sub.table.value
    sub.format.value = NATURAL
    assert sub.family_box.children == ()


def test_download_outputs_keep_two_take1_apart(fresh_server, fresh_client, tmp_path, monkeypatch):
    """Two recordings' vocals.wav once landed on one name, silently."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _wav(tmp_path / "a" / "take1.wav", seconds=2.0)
    _wav(tmp_path / "b" / "take1.wav", seconds=3.0)
    sub = JobSubmitter(fresh_client, poll_interval=0.2, download_dir=tmp_path / "dl")
    sub.models.value = ("vocals",)
    for typed in ("a/take1.wav", "b/take1.wav"):
        sub.path.value = typed
        sub.submit_button.click()
    sub.path.value = ""
    content = _wav(tmp_path / "upload.wav", seconds=1.0).read_bytes()  # an upload named take1.wav too
    sub.upload.set_state({"value": [{"name": "take1.wav", "type": "audio/wav", "size": len(content),
                                     "content": memoryview(content), "last_modified": 1700000000000}]})
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    sub.download_button.click()
    sub.wait(timeout=WAIT)
    saved = [r["downloaded"] for r in sub.rows]
    rel = [[str(__import__("pathlib").Path(p).relative_to(tmp_path / "dl").as_posix()) for p in ps] for ps in saved]
    assert rel == [["a/take1/vocals.wav"], ["b/take1/vocals.wav"], ["take1/vocals.wav"]]
    frames = [sf.info(ps[0]).frames for ps in saved]
    assert frames == [32000, 48000, 16000]                      # three files, none overwritten
    assert "Saved 3 file(s)" in sub.messages.value
    assert output_folder("a/take1.wav").as_posix() == "a/take1"  # the rule the widget used


def test_clear_drops_the_upload_and_keeps_the_table(fresh_server, fresh_client, tmp_path):
    """After Upload then a typed path every submit said "not both"; re-running the cell lost the table."""
    content = _wav(tmp_path / "clip.wav").read_bytes()
    sub = JobSubmitter(fresh_client, poll_interval=0.2)
    assert sub.clear_button.disabled and sub.upload_label.value == ""
    sub.upload.set_state({"value": [{"name": "clip.wav", "type": "audio/wav", "size": len(content),
                                     "content": memoryview(content), "last_modified": 1700000000000}]})
    assert not sub.clear_button.disabled and "clip.wav" in sub.upload_label.value
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    sub.path.value = str(_wav(tmp_path / "other.wav", seconds=2.0))
    sub.submit_button.click()
    assert "not both" in sub.messages.value and "press Clear" in sub.messages.value
    sub.clear_button.click()
    assert sub.upload.value == () and sub.clear_button.disabled and sub.upload_label.value == ""
    sub.submit_button.click()
    frame = sub.wait(timeout=WAIT)
    assert frame["source_name"].tolist() == ["clip.wav", "other.wav"]   # the first row is still there
    assert "shakelab-error" not in sub.messages.value


def test_job_reused_from_the_ledger_says_so(fresh_server, tmp_path):
    """A reused job showed "completed, 0.0 s" and "Submitted ..." although nothing was sent."""
    from shakelab.ledger import Ledger

    client = Client(token=fresh_server.token, base_url=fresh_server.base_url,
                    ledger=Ledger(tmp_path / "ledger.sqlite"))
    wav = _wav(tmp_path / "tone.wav")
    client.submit(wav, ["music_detection"], progress=False)
    posts = fresh_server.stats()["requests"]["POST /job"]
    sub = JobSubmitter(client, poll_interval=0.2, download_dir=tmp_path / "dl")
    completed = []
    sub.on_complete(completed.append)
    sub.path.value = str(wav)
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    assert fresh_server.stats()["requests"]["POST /job"] == posts        # nothing sent
    (row,) = sub.rows
    assert row["status"] == "reused" and row["elapsed"] is None and "nothing sent" in row["message"]
    assert _table_statuses(sub.table.value) == ["reused"] and "0.0 s" not in sub.table.value
    assert "Nothing sent for tone.wav" in sub.messages.value and "Submitted" not in sub.messages.value
    assert completed == []                                                # it did not complete now
    sub.download_button.click()                                          # its outputs still download
    sub.wait(timeout=WAIT)
    assert "Saved 1 file(s)" in sub.messages.value


def test_usage_dashboard_refresh_merges_into_the_history(fresh_server, fresh_client, tmp_path):
    """Refresh once threw a 36-month history away for the server's 3 months, with no warning."""
    history = json.loads((__import__("pathlib").Path(__file__).resolve().parents[1]
                          / "data" / "example_usage.json").read_text())
    dash = UsageDashboard(fresh_client, usage=history)
    fresh = fresh_client.usage()
    dash.refresh_button.click()
    months = [str(m) for m in dash.usage["month"]]
    old = [u["month"] for u in history["usage"]]
    assert months[:len(old) - 1] == old[:-1]                             # the old months stay
    assert set(str(m) for m in fresh["month"]) <= set(months) and months == sorted(months)
    updated = len(set(old) & set(str(m) for m in fresh["month"]))
    assert len(months) == len(old) + len(fresh) - updated
    assert f"merged them into the {len(old)}-month history: {updated} updated" in dash.messages.value
    assert f"{len(fresh) - updated} added ({len(months)} months)" in dash.messages.value


def test_usage_table_is_light_right_aligned_and_scrolls():
    from shakelab.frames import usage_frame

    history = json.loads((__import__("pathlib").Path(__file__).resolve().parents[1]
                          / "data" / "example_usage.json").read_text())
    text = usage_table_html(usage_frame(history))
    assert "overflow-y:auto" in text and "max-height:18em" in text      # 36 rows scroll in a box
    assert "border=" not in text and "1px solid #eaeef2" in text         # no heavy table borders
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td><td style='([^']*)'>([^<]*)</td>"
                      r"<td style='([^']*)'>([^<]*)</td>", text)
    assert len(rows) == 36 and rows[0][0] == "2026-10" and rows[-1][0] == "2023-11"   # newest first
    assert all("text-align:right" in r[1] and "text-align:right" in r[3] for r in rows)
    assert rows[0][2] == "1,071" and rows[0][4] == "3,610.4"


# ---------------------------------------------------------------------------------- the Tasks API
# The same widgets on a TasksClient: they never ask which API they talk to (client.start/refresh).

@pytest.fixture
def tasks_client(fresh_server):
    from shakelab.tasks import TasksClient

    with TasksClient(api_key=fresh_server.token, base_url=fresh_server.base_url) as tasks:
        yield tasks


def test_submitter_on_the_tasks_api_runs_one_task_and_downloads_each_target(fresh_server, tasks_client, tmp_path):
    from shakelab.frames import TASKS_COLUMNS

    fresh_server.faults.processing_delay = 1.0
    wav = _wav(tmp_path / "tone.wav")
    sub = JobSubmitter(tasks_client, poll_interval=0.2, download_dir=tmp_path / "downloads")
    assert sub.catalogue == catalog.LOCAL_MODELS  # the local server's models (its Tasks API runs the same)
    assert "No tasks yet" in sub.table.value
    completed = []
    sub.on_complete(completed.append)
    sub.path.value = str(wav)
    sub.models.value = ("vocals", "bass")
    sub.format.value = "flac"
    sub.submit_button.click()
    frame = sub.wait(timeout=WAIT)
    assert _statuses(sub) == ["completed", "completed"]
    assert _table_statuses(sub.table.value) == ["completed", "completed"]
    # it says which API it talks to, and counts the task's targets
    assert sub.header.value.startswith("<b>Submit tasks</b> &mdash; Tasks API, local server <code>http://127.0.0.1:")
    assert "Submitted tone.wav: 2 target(s)" in sub.messages.value
    assert ">target id</th>" in sub.table.value and ">job id<" not in sub.table.value
    requests = fresh_server.stats()["requests"]
    # one upload and ONE task for both models; nothing through the Jobs API
    assert requests.get("POST /assets") == 1 and requests.get("POST /tasks") == 1
    assert not requests.get("POST /job") and not requests.get("POST /upload")
    assert tuple(frame.columns) == TASKS_COLUMNS
    assert frame["model"].astype(str).tolist() == ["vocals", "bass"]
    assert frame["format"].tolist() == ["flac", "flac"]
    assert frame["task_id"].nunique() == 1 and frame["target_id"].tolist() == frame["job_id"].tolist()
    assert (frame["cost"] > 0).all() and (frame["audio_s"] > 0).all()
    assert sorted(t.id for t in completed) == sorted(frame["target_id"])

    sub.download_button.click()
    sub.wait(timeout=WAIT)
    saved = [Path(p) for r in sub.rows for p in r["downloaded"]]
    # each row downloads its own target's output, into the recording's folder
    assert [p.name for p in saved] == ["vocals.flac", "bass.flac"]
    assert saved[0].parent == saved[1].parent and saved[0].parent.name == "tone"
    assert saved[0].is_relative_to(tmp_path / "downloads") and all(p.stat().st_size > 0 for p in saved)
    assert "Saved 2 file(s)" in sub.messages.value


def test_submitter_on_the_tasks_api_shows_a_failed_target_and_refuses_a_callback(fresh_server, tasks_client,
                                                                                  tmp_path):
    bogus = tmp_path / "not-audio.wav"
    bogus.write_bytes(b"this is plain text, not a RIFF file\n" * 50)
    sub = JobSubmitter(tasks_client, poll_interval=0.2)
    failures = []
    sub.on_complete(failures.append, failed=True)
    sub.path.value = str(bogus)
    sub.models.value = ("music_detection",)
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    (row,) = sub.rows
    assert row["status"] == "error"                       # the Tasks API's word for a failed target
    task = tasks_client.get_task(failures[0].task_id)
    (target,) = task.targets
    assert target.failed and row["message"] == target.error and [t.id for t in failures] == [target.id]

    # a per-task callback does not exist in the Tasks API: said before anything is sent
    before = fresh_server.stats()["requests"].get("POST /tasks", 0)
    sub.path.value = str(_wav(tmp_path / "a.wav"))
    sub.callback_url.value = "https://example.com/hook"
    sub.submit_button.click()
    sub.wait(timeout=WAIT)
    assert "no per-task callback" in sub.rows[-1]["message"]
    assert fresh_server.stats()["requests"].get("POST /tasks", 0) == before


def test_usage_dashboard_on_the_tasks_api(fresh_server, tasks_client, tmp_path):
    dash = UsageDashboard(tasks_client)
    before = int(dash.usage["total_jobs"].sum())
    tasks_client.submit(_wav(tmp_path / "a.wav"), ["music_detection", "vocals"], progress=False)
    dash.refresh_button.click()
    # the statistics count targets (a target is what a legacy job was): two more
    assert int(dash.usage["total_jobs"].sum()) == before + 2
    assert dash.image.value[:4] == b"\x89PNG" and str(dash.usage["month"].iloc[-1]) in dash.table.value
    # ... and chart and table say targets, before and after the refresh merged the months
    assert dash.usage.attrs == {"counts": "targets"}
    assert dash.ax.get_ylabel() == "targets"
    assert ">targets</th>" in dash.table.value and ">jobs<" not in dash.table.value
    assert [t.get_text() for t in dash.ax.get_legend().get_texts()] == ["targets", "minutes"]
