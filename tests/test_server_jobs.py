"""Jobs that really run on the local server: models x formats, bad audio, usage, concurrency,
restart persistence and callbacks. Real processing (shakelab.server.processing), real HTTP.
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import soundfile as sf

from shakelab import catalog
from shakelab.server import LocalServer
from tests.helpers import hook_receiver
from tests.helpers import wait_for as _wait_for

TERMINAL = ("completed", "failed")


def auth(srv) -> dict:
    return {"Authorization": f"Bearer {srv.token}"}


def audio_bytes(seconds: float = 2.0, sr: int = 22050, fmt: str = "WAV", channels: int = 1) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    y = np.repeat(y[:, None], channels, axis=1).astype("float32")
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt)
    return buf.getvalue()


def upload(srv, data: bytes, filename: str = "clip.wav") -> dict:
    r = requests.post(f"{srv.base_url}/upload", files={"file": (filename, data)}, headers=auth(srv), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def submit(srv, asset_id: str, model: str, fmt: str, **extra) -> dict:
    body = {"metadata": {"name": model, "format": fmt}, "assetId": asset_id, **extra}
    r = requests.post(f"{srv.base_url}/job", json=body, headers=auth(srv), timeout=30)
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert job["status"] == "queued"
    return job


def get_job(srv, job_id: str) -> dict:
    r = requests.get(f"{srv.base_url}/job/{job_id}", headers=auth(srv), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["job"]


def wait(srv, job_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(srv, job_id)
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def clip(server):
    """A 2-s 22.05 kHz stereo WAV uploaded once to the session server."""
    return upload(server, audio_bytes(2.0, 22050, channels=2), "clip.wav")


STEM_CASES = [(m, f) for m, fmts in catalog.LOCAL_MODELS.items() if m != "music_detection" for f in fmts]


@pytest.mark.parametrize("model,fmt", STEM_CASES)
def test_stem_models_produce_audio_of_input_length(server, clip, model, fmt, tmp_path):
    job = wait(server, submit(server, clip["id"], model, fmt)["id"])
    assert job["status"] == "completed", job["statusInfo"]
    assert job["statusInfo"]["code"] == "completed"
    assert job["startedAt"] and job["updatedAt"] >= job["startedAt"] >= job["createdAt"]
    assert job["sourceAsset"]["id"] == clip["id"]
    (out,) = job["outputAssets"]
    assert out["format"] == fmt and out["fileType"] == catalog.MIME_TYPES[fmt]
    assert out["name"].endswith("." + fmt)
    data = requests.get(out["link"], timeout=30)
    assert data.status_code == 200
    path = tmp_path / out["name"]
    path.write_bytes(data.content)
    info = sf.info(str(path))
    assert info.samplerate == 22050
    tolerance = 0.1 if fmt == "mp3" else 1e-3  # mp3 frames pad the end
    assert abs(info.duration - 2.0) <= tolerance


def meta(model: str, fmt: str, **options) -> dict:
    return {"metadata": {"name": model, "format": fmt, **options}}


@pytest.mark.parametrize("fmt", ["json", "txt"])
def test_music_detection_formats(server, fmt):
    """The local all-window extension: every window of the 10-s grid, with its score."""
    asset = upload(server, audio_bytes(25.0, 16000), "long.wav")
    body = {**meta("music_detection", fmt, all_windows=True), "assetId": asset["id"]}
    job = requests.post(f"{server.base_url}/job", json=body, headers=auth(server), timeout=30).json()["job"]
    job = wait(server, job["id"])
    assert job["status"] == "completed", job["statusInfo"]
    assert job["shakelab"]["allWindows"] is True and job["shakelab"]["window"] == 10.0
    (out,) = job["outputAssets"]
    assert out["format"] == fmt
    text = requests.get(out["link"], timeout=30).text
    if fmt == "json":
        windows = json.loads(text)
        assert [(w["start_time"], w["end_time"]) for w in windows] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
        assert all(0.0 <= w["confidence"] <= 1.0 for w in windows)
    else:
        rows = [line.split("\t") for line in text.strip().splitlines()]
        assert [float(r[0]) for r in rows] == [0.0, 10.0, 20.0]
        assert all(len(r) == 3 and 0 <= float(r[2]) <= 1 for r in rows)


def test_detection_window_option_reaches_the_model(server):
    asset = upload(server, audio_bytes(6.0, 16000), "six.wav")
    jobs = []
    for options in ({"all_windows": True}, {"window": 2, "all_windows": True}):
        body = {**meta("music_detection", "json", **options), "assetId": asset["id"]}
        job = requests.post(f"{server.base_url}/job", json=body, headers=auth(server), timeout=30).json()["job"]
        jobs.append(wait(server, job["id"]))
    assert jobs[1]["metadata"]["window"] == 2 and jobs[1]["shakelab"]["window"] == 2.0
    coarse, fine = (requests.get(j["outputAssets"][0]["link"], timeout=30).json() for j in jobs)
    assert len(coarse) == 1 and len(fine) == 3


@pytest.mark.parametrize("fmt", ["json", "txt"])
def test_music_detection_answers_like_the_service(server, demo_path, fmt):
    """Only the segments where music is present, on the 10-s grid, adjacent ones merged.

    The demo is speech to 10 s, music to 22 s, silence and noise to 30 s, speech over music
    to 44 s: the speech-only window is not returned; 10-44 s is one segment.
    """
    asset = upload(server, demo_path.read_bytes(), "demo.flac")
    job = wait(server, submit(server, asset["id"], "music_detection", fmt)["id"])
    assert job["status"] == "completed", job["statusInfo"]
    assert job["shakelab"] == {"detector": job["shakelab"]["detector"], "window": 10.0, "allWindows": False}
    text = requests.get(job["outputAssets"][0]["link"], timeout=30).text
    if fmt == "json":
        rows = json.loads(text)
    else:
        rows = [dict(zip(("start_time", "end_time", "confidence"), map(float, line.split("\t")), strict=True))
                for line in text.strip().splitlines()]
    assert [(r["start_time"], r["end_time"]) for r in rows] == [(10.0, 44.0)]
    assert 0.5 <= rows[0]["confidence"] <= 1.0
    # the all-window extension holds the same decision: windows scoring >= 0.5 are the answer's
    body = {**meta("music_detection", fmt, all_windows=True), "assetId": asset["id"]}
    every = wait(server, requests.post(f"{server.base_url}/job", json=body, headers=auth(server),
                                       timeout=30).json()["job"]["id"])
    text = requests.get(every["outputAssets"][0]["link"], timeout=30).text
    scores = [float(r["confidence"]) for r in json.loads(text)] if fmt == "json" else \
        [float(line.split("\t")[2]) for line in text.strip().splitlines()]
    assert len(scores) == 5 and scores[0] < 0.5 <= min(scores[1:])


def test_music_detection_of_a_recording_without_music_is_empty(server):
    silence = io.BytesIO()
    sf.write(silence, np.zeros(12 * 16000, np.float32), 16000, format="WAV")
    asset = upload(server, silence.getvalue(), "silence.wav")
    job = wait(server, submit(server, asset["id"], "music_detection", "json")["id"])
    assert job["status"] == "completed", job["statusInfo"]
    assert requests.get(job["outputAssets"][0]["link"], timeout=30).json() == []


@pytest.mark.parametrize("options, needle", [
    ({"all_windows": "yes"}, "`metadata.all_windows` must be true or false, not 'yes'"),
    ({"all_windows": 1}, "`metadata.all_windows` must be true or false, not 1"),
])
def test_all_windows_is_validated(server, options, needle):
    body = {**meta("music_detection", "json", **options), "assetId": "A"}
    r = requests.post(f"{server.base_url}/job", json=body, headers=auth(server), timeout=30)
    assert r.status_code == 400 and needle in r.json()["message"]
    body = {**meta("vocals", "wav", all_windows=True), "assetId": "A"}
    r = requests.post(f"{server.base_url}/job", json=body, headers=auth(server), timeout=30)
    assert r.status_code == 400 and "applies only to 'music_detection'" in r.json()["message"]


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3"), ("AIFF", "aiff")])
def test_input_formats_are_decoded(server, fmt, ext):
    asset = upload(server, audio_bytes(1.5, 22050, fmt=fmt), f"in.{ext}")
    assert asset["format"] == ext
    job = wait(server, submit(server, asset["id"], "drums", "wav")["id"])
    assert job["status"] == "completed", job["statusInfo"]


def test_non_audio_upload_fails_with_one_layer_message(server):
    asset = upload(server, b"this is not audio at all" * 10, "fake.mp3")
    job = wait(server, submit(server, asset["id"], "vocals", "wav")["id"])
    assert job["statusInfo"] == {"code": "invalid_audio", "message": (
        "'fake.mp3' is not a readable audio file: it holds plain text (despite its .mp3 name); "
        "readable: WAV, FLAC, AIFF, OGG, MP3 (AAC/M4A/MP4 with ffmpeg)")}


@pytest.mark.parametrize("data,name", [(b"", "empty.wav"), (b"this is not audio at all" * 10, "fake.mp3"),
                                       (audio_bytes(2.0, fmt="FLAC")[:30], "truncated.flac"),
                                       (b"RIFF\xff\xff\xff\xffWAVEjunkjunk", "header-only.wav")])
def test_bad_audio_uploads_end_failed_with_status_info(server, data, name):
    asset = upload(server, data, name)
    job = wait(server, submit(server, asset["id"], "vocals", "wav")["id"])
    assert job["status"] == "failed"
    assert job["statusInfo"]["code"] == "invalid_audio"
    assert name in job["statusInfo"]["message"] or "audio" in job["statusInfo"]["message"]
    assert str(server.data_dir) not in job["statusInfo"]["message"]  # no internal paths
    assert job["outputAssets"] == []
    assert get_job(server, job["id"])["status"] == "failed"  # and the server still answers


def test_truncated_audio_never_hangs_or_crashes(server):
    """A WAV cut mid-data: either the decodable part is processed or the job fails with a reason."""
    data = audio_bytes(2.0)
    asset = upload(server, data[: len(data) // 2], "cut.wav")
    job = wait(server, submit(server, asset["id"], "vocals", "wav")["id"])
    if job["status"] == "failed":
        assert job["statusInfo"]["code"] == "invalid_audio" and job["statusInfo"]["message"]
    else:
        assert len(job["outputAssets"]) == 1


def test_usage_counts_minutes_of_completed_jobs(fresh_server):
    ok = upload(fresh_server, audio_bytes(3.0, 8000), "three.wav")
    bad = upload(fresh_server, b"nope", "bad.wav")
    for asset in (ok, ok, bad):
        wait(fresh_server, submit(fresh_server, asset["id"], "music_detection", "json")["id"])
    usage = requests.post(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10).json()["usage"]
    assert usage[-1]["totalJobs"] == 2
    assert usage[-1]["totalMinutes"] == pytest.approx(6.0 / 60, abs=1e-3)
    assert sum(u["totalJobs"] for u in usage) == 2


def test_twenty_concurrent_uploads_and_jobs_lose_nothing(fresh_server):
    payloads = [audio_bytes(1.0 + i * 0.05, 8000) for i in range(20)]

    def one(i):
        asset = upload(fresh_server, payloads[i], f"c{i}.wav")
        job = submit(fresh_server, asset["id"], "music_detection", "json")
        return asset, job

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assets = {a["id"] for a, _ in results}
    jobs = {j["id"] for _, j in results}
    assert len(assets) == 20 and len(jobs) == 20
    for i, (asset, _job) in enumerate(results):
        assert requests.get(asset["link"], timeout=30).content == payloads[i]
    done = [wait(fresh_server, j) for j in jobs]
    assert all(j["status"] == "completed" for j in done), [j["statusInfo"] for j in done]
    assert all(len(j["outputAssets"]) == 1 for j in done)
    stats = fresh_server.stats()
    assert stats["uploads"] == 20 and stats["jobs"] == 20
    assert stats["requests"]["POST /upload"] == 20 and stats["requests"]["POST /job"] == 20
    assert fresh_server.store.count("jobs") == 20
    assert fresh_server.store.count("assets") == 40  # 20 uploads + 20 outputs
    usage = requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10).json()
    assert usage["usage"][-1]["totalJobs"] == 20


def test_restart_keeps_assets_and_jobs_and_resumes_queued(tmp_path):
    data_dir = tmp_path / "persist"
    first = LocalServer(data_dir, token="persist-token", workers=1).start()
    first.faults.processing_delay = 600
    done_asset = upload(first, audio_bytes(1.0, 8000), "done.wav")
    assets = [upload(first, audio_bytes(1.0, 8000), f"p{i}.wav") for i in range(3)]
    jobs = [submit(first, a["id"], "music_detection", "json")["id"] for a in assets]
    deadline = time.monotonic() + 30
    while get_job(first, jobs[0])["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [get_job(first, j)["status"] for j in jobs] == ["processing", "queued", "queued"]
    first.stop()

    with LocalServer(data_dir, token="persist-token", workers=2) as second:
        finished = [wait(second, j, timeout=120) for j in jobs]
        assert [j["status"] for j in finished] == ["completed"] * 3, [j["statusInfo"] for j in finished]
        assert [j["assetId"] for j in finished] == [a["id"] for a in assets]
        assert second.store.get_asset(done_asset["id"])["name"] == "done.wav"
        fresh = finished[0]["sourceAsset"]["link"]
        assert fresh.startswith(second.base_url)
        assert requests.get(fresh, timeout=10).content == audio_bytes(1.0, 8000)
        assert second.stats()["jobs"] == 0  # stats count since this start only
        usage = requests.get(f"{second.base_url}/usage", headers=auth(second), timeout=10).json()["usage"]
        assert usage[-1]["totalJobs"] == 3

    with LocalServer(data_dir, token="persist-token") as third:  # and a finished job stays finished
        assert get_job(third, jobs[2])["status"] == "completed"
        assert third.store.count("jobs") == 3


@pytest.fixture
def receiver():
    with hook_receiver(ok_status=200) as httpd:
        yield httpd


def test_callback_receives_processing_and_completed_job(fresh_server, receiver):
    asset = upload(fresh_server, audio_bytes(1.0, 8000))
    job = submit(fresh_server, asset["id"], "music_detection", "json", callbackUrl=receiver.url)
    assert job["callbackUrl"] == receiver.url
    done = wait(fresh_server, job["id"])
    _wait_for(lambda: any(p["job"]["status"] == "completed" for p in receiver.handler.received))
    statuses = [p["job"]["status"] for p in receiver.handler.received]
    assert "processing" in statuses and statuses[-1] == "completed"
    final = receiver.handler.received[-1]["job"]
    assert final["id"] == job["id"] and final["outputAssets"][0]["id"] == done["outputAssets"][0]["id"]
    assert requests.get(final["outputAssets"][0]["link"], timeout=10).status_code == 200


def test_callback_is_retried_and_never_breaks_the_job(fresh_server, receiver):
    receiver.handler.fail_first = 2  # the first two deliveries answer 500
    asset = upload(fresh_server, audio_bytes(1.0, 8000))
    job = submit(fresh_server, asset["id"], "music_detection", "json", callbackUrl=receiver.url)
    assert wait(fresh_server, job["id"])["status"] == "completed"
    _wait_for(lambda: any(p["job"]["status"] == "completed" for p in receiver.handler.received))
    # unreachable callback: the job still completes
    dead = submit(fresh_server, asset["id"], "music_detection", "json", callbackUrl="http://127.0.0.1:9/nothing")
    assert wait(fresh_server, dead["id"])["status"] == "completed"


def test_callbacks_to_private_hosts_are_refused_by_default(tmp_path, receiver):
    """Refused when the job is created (400 naming the flag, as /upload/link does), so no job exists."""
    with LocalServer(tmp_path / "strict", token="strict-cb") as srv:
        asset = upload(srv, audio_bytes(1.0, 8000))
        body = {"metadata": {"name": "music_detection", "format": "json"}, "assetId": asset["id"],
                "callbackUrl": receiver.url}
        r = requests.post(f"{srv.base_url}/job", json=body, headers=auth(srv), timeout=30)
        assert r.status_code == 400, r.text
        assert "`callbackUrl`" in r.json()["message"] and "--allow-private-links" in r.json()["message"]
        assert srv.store.count("jobs") == 0 and srv.stats()["jobs"] == 0
        assert receiver.handler.received == []


def test_api_answers_while_jobs_run(fresh_server):
    """The worker pool is bounded and the API keeps answering while it is busy."""
    asset = upload(fresh_server, audio_bytes(20.0, 22050, channels=2), "busy.wav")
    ids = [submit(fresh_server, asset["id"], m, "wav")["id"] for m in ("vocals", "instrumental", "drums", "bass")]
    seen_processing = 0
    while True:
        states = [get_job(fresh_server, j)["status"] for j in ids]
        running = len(fresh_server.store.jobs_with_status("processing"))  # one snapshot, unlike 4 GETs
        seen_processing = max(seen_processing, running)
        assert running <= fresh_server.workers
        r = requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=30)
        assert r.ok, r.text
        if all(s in TERMINAL for s in states):
            break
        time.sleep(0.1)
    assert seen_processing >= 1
    final = [get_job(fresh_server, j) for j in ids]
    assert all(j["status"] == "completed" for j in final), [j["statusInfo"] for j in final]


def test_a_dying_model_process_fails_only_its_job(fresh_server):
    """The OOM killer (here: SIGKILL) takes a model process: that job fails with a reason, the server goes on."""
    import os
    import signal

    from shakelab.server import pool

    assert fresh_server.isolation == "process"
    asset = upload(fresh_server, audio_bytes(60.0, 44100, channels=2), "long.wav")
    job = submit(fresh_server, asset["id"], "vocals", "wav")
    deadline = time.monotonic() + 60
    while get_job(fresh_server, job["id"])["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert pool.busy
    for proc in list(pool.busy):
        os.kill(proc.pid, signal.SIGKILL)
    failed = wait(fresh_server, job["id"])
    assert failed["status"] == "failed" and failed["statusInfo"]["code"] == "processing_error"
    assert "died" in failed["statusInfo"]["message"]
    small = upload(fresh_server, audio_bytes(1.0, 8000), "after.wav")
    again = submit(fresh_server, small["id"], "music_detection", "json")
    assert wait(fresh_server, again["id"])["status"] == "completed"


def test_job_time_limit_ends_the_model_process(fresh_server):
    fresh_server.worker.job_timeout = 0.5
    asset = upload(fresh_server, audio_bytes(60.0, 44100, channels=2), "slow.wav")
    job = wait(fresh_server, submit(fresh_server, asset["id"], "vocals", "wav")["id"])
    assert job["status"] == "failed" and job["statusInfo"]["code"] == "processing_timeout"
    assert "0.5 s" in job["statusInfo"]["message"]


def test_stop_mid_job_ends_its_process_and_the_job_resumes(tmp_path):
    from shakelab.server import pool

    data_dir = tmp_path / "mid"
    srv = LocalServer(data_dir, token="mid-token", workers=1).start()
    asset = upload(srv, audio_bytes(60.0, 44100, channels=2), "long.wav")
    job = submit(srv, asset["id"], "vocals", "wav")
    deadline = time.monotonic() + 60
    while not pool.busy:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = [p.pid for p in pool.busy]
    srv.stop()
    assert not pool.busy
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with LocalServer(data_dir, token="mid-token", workers=1) as again:
        done = wait(again, job["id"])
        assert done["status"] == "completed", done["statusInfo"]


def test_model_process_survives_a_notebook_interrupt(tmp_path):
    """A kernel interrupt sends SIGINT to the whole process group: the model process must not die of it."""
    import signal

    from shakelab.server.pool import ModelProcess

    src = tmp_path / "clip.wav"
    src.write_bytes(audio_bytes(1.0))
    proc = ModelProcess()
    try:
        proc.run("bass", str(src), str(tmp_path / "a"), "wav", {}, timeout=120)  # started and ready
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        assert proc.alive()
        status, _duration, outputs, _detail = proc.run("bass", str(src), str(tmp_path / "b"), "wav", {}, timeout=120)
        assert status == "ok" and os.path.getsize(outputs[0]) > 0
    finally:
        proc.close()


def test_a_data_dir_of_an_older_version_gains_the_detail_column(tmp_path):
    """Stores written before jobs recorded how detection was computed open, keep their jobs, and record it."""
    import sqlite3

    from shakelab.server import store as store_mod

    old_schema = store_mod._SCHEMA.replace(",\n    detail TEXT", "")
    assert "detail" not in old_schema
    tmp_path.mkdir(exist_ok=True)
    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.executescript(old_schema)
    db.execute("INSERT INTO jobs(id, client_id, request_id, metadata, asset_id, status, created_at, updated_at,"
               " status_code, status_message) VALUES ('j1', 'c', 'r', ?, 'a1', 'completed', 1, 2, 'completed', 'ok')",
               (json.dumps({"name": "music_detection", "format": "json"}),))
    db.commit()
    db.close()
    st = store_mod.Store(tmp_path)
    try:
        assert st.get_job("j1")["detail"] is None
        job = st.update_job("j1", status="completed", code="completed", message="ok",
                            detail={"detector": "cnn", "window": 10.0, "allWindows": False})
        assert job["detail"] == {"detector": "cnn", "window": 10.0, "allWindows": False}
    finally:
        st.close()
