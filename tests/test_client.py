"""shakelab.client against the real local server on loopback: every method, validation, token hygiene,
connect(), the ledger hooks and the `detect` / `usage` commands. Fault scenarios: test_client_faults.py."""

from __future__ import annotations

import io
from pathlib import Path
import logging
import traceback

import numpy as np
import pandas as pd
import pytest
import requests

from shakelab.client import Client, connect, output_folder, parse_retry_after
from shakelab.errors import (APIError, AuthenticationError, JobFailedError, NotFoundError, ShakelabError,
                             TransportError, ValidationError)
from shakelab.frames import JOBS_COLUMNS, SEGMENTS_COLUMNS
from shakelab.models import Asset, Job, JobStatus

SR = 22050


@pytest.fixture
def wav(tmp_path):
    """A 3-second stereo tone with a pulse, written as WAV."""
    import soundfile as sf

    t = np.arange(3 * SR) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * (np.sin(2 * np.pi * 2 * t) > 0.9)
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([y, y * 0.5], axis=1).astype(np.float32), SR)
    return path


def fresh_client(srv, **kwargs) -> Client:
    kwargs.setdefault("backoff", 0.05)
    return Client(token=srv.token, base_url=srv.base_url, **kwargs)


def requests_made(srv) -> int:
    return sum(srv.stats()["requests"].values())


def rendered_from_library(exc: BaseException) -> str:
    """The traceback with every frame's locals, from the first shakelab frame on (the test's own
    frame, which holds the secret it chose, is left out)."""
    tb = exc.__traceback__.tb_next
    return "".join(traceback.TracebackException(type(exc), exc, tb, capture_locals=True).format())


def link_bytes(link: str) -> bytes:
    resp = requests.get(link, timeout=10)
    resp.raise_for_status()
    return resp.content


# --------------------------------------------------------------------------- construction
def test_missing_token_names_the_variable():
    with pytest.raises(ValidationError, match="AUDIOSHAKE_API_TOKEN"):
        Client()


def test_token_and_base_url_from_environment(monkeypatch):
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", "env-token-abcdef123")
    monkeypatch.setenv("AUDIOSHAKE_BASE_URL", "http://127.0.0.1:9/")
    client = Client()
    assert client.base_url == "http://127.0.0.1:9"
    monkeypatch.delenv("AUDIOSHAKE_BASE_URL")
    assert Client().base_url == "https://groovy.audioshake.ai"


@pytest.mark.parametrize("kwargs,pattern", [
    ({"base_url": "ftp://x"}, r"`base_url` must be an http\(s\) URL .* not 'ftp://x'"),
    ({"timeout": 0}, r"`timeout` must be a positive number of seconds, not 0"),
    ({"max_retries": -1}, r"`max_retries` must be a whole number >= 0, not -1"),
    ({"token": 123}, r"`token` must be a non-empty string, not int"),
])
def test_bad_constructor_arguments(kwargs, pattern):
    kwargs.setdefault("token", "tok-abcdef123")
    with pytest.raises(ValidationError, match=pattern):
        Client(**kwargs)


def test_repr_str_and_state_hide_the_token():
    secret = "super-secret-token-0987654321"
    client = Client(token=secret, base_url="http://127.0.0.1:9")
    assert repr(client) == "Client(base_url='http://127.0.0.1:9', token=<hidden>)"
    shown = repr(client) + str(client) + repr(vars(client)) + repr(client.session.__dict__)
    assert secret not in shown
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(client)


# --------------------------------------------------------------------------- upload
def test_upload_path_str_and_file_objects(fresh_server, wav):
    client = fresh_client(fresh_server)
    content = wav.read_bytes()
    a1 = client.upload(wav, progress=False)
    a2 = client.upload(str(wav), name="renamed.wav", progress=False)
    with open(wav, "rb") as f:
        a3 = client.upload(f, progress=False)
        assert not f.closed  # the caller's file stays open
    buf = io.BytesIO(b"JUNK" + content)
    buf.seek(4)  # uploads from the current position
    a4 = client.upload(buf, name="from-buffer.wav", progress=False)
    assert all(isinstance(a, Asset) and a.id for a in (a1, a2, a3, a4))
    assert len({a.id for a in (a1, a2, a3, a4)}) == 4
    assert (a1.name, a2.name, a3.name, a4.name) == ("tone.wav", "renamed.wav", "tone.wav", "from-buffer.wav")
    assert a1.format == "wav" and a1.raw["id"] == a1.id
    assert fresh_server.stats()["uploads"] == 4
    for asset in (a1, a2, a3, a4):
        assert link_bytes(asset.link) == content


def test_upload_progress_bar_writes_to_stderr(fresh_server, wav, capsys):
    fresh_client(fresh_server).upload(wav, progress=True)
    shown = capsys.readouterr().err
    fresh_client(fresh_server).upload(wav, progress=False)
    assert "upload tone.wav" in shown and capsys.readouterr().err == ""


@pytest.mark.parametrize("make,pattern", [
    (lambda p: p / "missing.wav", r"`source` file does not exist: '.*missing.wav'"),
    (lambda p: p, r"`source` must be a file, not a directory: "),
    (lambda p: (p / "empty.wav").write_bytes(b"") or p / "empty.wav", r"`source` file is empty \(0 bytes\)"),
    (lambda p: io.BytesIO(b""), r"`source` file object is empty"),
    (lambda p: io.StringIO("text"), r"`source` file object must be opened in binary mode"),
    (lambda p: b"RIFF....", r"`source` must be a path \(str or pathlib.Path\) or a binary file object .*not bytes"),
    (lambda p: 42, r"`source` must be a path .* not int 42"),
])
def test_upload_validation_before_any_request(fresh_server, tmp_path, make, pattern):
    client = fresh_client(fresh_server)
    source = make(tmp_path)
    with pytest.raises(ValidationError, match=pattern):
        client.upload(source, progress=False)
    assert requests_made(fresh_server) == 0


def test_job_on_non_audio_fails_with_the_server_message(fresh_server, tmp_path):
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    client = fresh_client(fresh_server)
    with pytest.raises(JobFailedError) as info:
        client.submit(junk, ["music_detection"], progress=False)
    assert info.value.job.failed and info.value.job.id in str(info.value)
    assert info.value.message and info.value.message == info.value.job.error
    frame = client.jobs_frame()
    assert frame["status"].astype(str).tolist() == ["failed"] and frame["error"].iloc[0] == info.value.message


def test_server_400_is_api_error_not_retried(fresh_server, wav):
    client = fresh_client(fresh_server)
    asset = client.upload(wav, progress=False)
    with pytest.raises(APIError) as info:  # a service model the local server does not compute
        client.create_job(asset, "guitar")
    assert info.value.status == 400 and info.value.message.startswith("POST /job:")
    assert "guitar" in info.value.message and info.value.body["error"]
    assert fresh_server.stats()["requests"]["POST /job"] == 1


def test_upload_link(fresh_server, wav):
    client = fresh_client(fresh_server)
    source = client.upload(wav, progress=False)
    asset = client.upload_link(source.link, name="linked")
    assert asset.id != source.id and asset.name.startswith("linked")
    assert link_bytes(asset.link) == wav.read_bytes()
    with pytest.raises(ValidationError, match=r"`url` must be an http\(s\):// URL, not 'file:///etc/passwd'"):
        client.upload_link("file:///etc/passwd")


# --------------------------------------------------------------------------- jobs
def test_create_get_wait_with_extra_metadata(client, wav):
    asset = client.upload(wav, progress=False)
    job = client.create_job(asset, "music_detection", window=1.0, language="en")
    assert isinstance(job, Job) and job.status in (JobStatus.QUEUED, JobStatus.CREATED)
    assert (job.model, job.format, job.asset_id, job.source_name) == ("music_detection", "json", asset.id, "tone.wav")
    fetched = client.get_job(job.id)
    assert fetched.id == job.id and fetched.metadata["language"] == "en" and fetched.metadata["window"] == 1.0
    done = client.wait(job, poll_interval=0.2, progress=False)
    assert done.completed and done.is_done and not done.failed and done.outputs
    assert done.duration_s is not None and done.duration_s >= 0


def test_create_job_validation_before_any_request(fresh_server):
    client = fresh_client(fresh_server)
    with pytest.raises(ValidationError, match=r"`model` must be one of 'vocals', .* not 'kazoo'"):
        client.create_job("asset123", "kazoo")
    with pytest.raises(ValidationError,
                       match=r"`format` must be one of 'wav', 'mp3', 'flac', 'aiff' for model 'vocals', not 'json'"):
        client.create_job("asset123", "vocals", format="json")
    with pytest.raises(ValidationError, match=r"`asset` must be an Asset or an asset id string, not int 7"):
        client.create_job(7, "vocals")
    with pytest.raises(ValidationError, match=r"`name` is not an extra metadata key"):
        client.create_job("asset123", "vocals", name="drums")
    with pytest.raises(ValidationError, match=r"`callback_url` must be an http\(s\):// URL or None, not 'nope'"):
        client.create_job("asset123", "vocals", callback_url="nope")
    with pytest.raises(ValidationError, match=r"`job` must be a Job or a job id string, not NoneType"):
        client.get_job(None)
    with pytest.raises(ValidationError, match=r"`timeout` must be a positive number of seconds or None, not -1"):
        client.wait("abc", timeout=-1)
    assert requests_made(fresh_server) == 0


def test_create_job_natural_format_and_unknown_asset(client):
    with pytest.raises(APIError) as info:
        client.create_job("no-such-asset-id", "music_detection")
    assert info.value.status == 404 and isinstance(info.value, NotFoundError)
    assert "assetId" in info.value.message


def test_get_job_unknown_is_not_found(client):
    with pytest.raises(NotFoundError) as info:
        client.get_job("does-not-exist")
    assert info.value.status == 404 and "does-not-exist" in str(info.value)
    assert isinstance(info.value, ShakelabError)


def test_wait_raises_job_failed_with_server_message(fresh_server, wav):
    client = fresh_client(fresh_server)
    job = client.create_job(client.upload(wav, progress=False), "vocals")
    fake = {"job": {"id": job.id, "status": "error", "statusInfo": {"code": "E42", "message": "decoder exploded"},
                    "metadata": {"name": "vocals", "format": "wav"}, "assetId": job.asset_id}}
    fresh_server.faults.add(method="GET", path=f"/job/{job.id}", status=200, body=fake, times=1)
    with pytest.raises(JobFailedError) as info:
        client.wait(job.id, poll_interval=0.1, progress=False)
    assert info.value.job.id == job.id and info.value.job.failed
    assert info.value.message == "decoder exploded"
    assert str(info.value) == f"job {job.id} failed: decoder exploded"


def test_wait_timeout_says_how_to_resume(fresh_server, wav):
    client = fresh_client(fresh_server)
    fresh_server.faults.processing_delay = 60
    job = client.create_job(client.upload(wav, progress=False), "music_detection")
    from shakelab.errors import JobTimeoutError

    with pytest.raises(JobTimeoutError) as info:
        client.wait(job, timeout=1.0, poll_interval=0.2, progress=False)
    message = str(info.value)
    assert job.id in message and "still" in message and f"client.wait({job.id!r})" in message
    assert info.value.job.id == job.id and not info.value.job.is_done and info.value.timeout == 1.0
    assert fresh_server.stats()["requests"]["GET /job/{id}"] >= 2


def test_wait_backs_off_without_poll_interval(fresh_server, wav, caplog):
    client = fresh_client(fresh_server)
    fresh_server.faults.processing_delay = 60
    job = client.create_job(client.upload(wav, progress=False), "music_detection")
    from shakelab.errors import JobTimeoutError

    with pytest.raises(JobTimeoutError):
        client.wait(job, timeout=3.0, progress=False)
    polls = fresh_server.stats()["requests"]["GET /job/{id}"]
    # 1 s then 1.5 s: three polls fit in 3 s; a fixed 0.2 s interval would make ~15
    assert 2 <= polls <= 4


# --------------------------------------------------------------------------- submit / outputs
def test_submit_uploads_once_one_job_per_model(fresh_server, wav):
    client = fresh_client(fresh_server)
    jobs = client.submit(wav, ["vocals", "drums", "music_detection"], progress=False)
    assert [j.model for j in jobs] == ["vocals", "drums", "music_detection"]
    assert [j.format for j in jobs] == ["wav", "wav", "json"]
    assert all(j.completed for j in jobs)
    stats = fresh_server.stats()
    assert stats["uploads"] == 1 and stats["jobs"] == 3 and stats["requests"]["POST /job"] == 3
    frame = client.jobs_frame()
    assert tuple(frame.columns) == JOBS_COLUMNS
    assert sorted(frame["job_id"]) == sorted(j.id for j in jobs)
    assert set(frame["status"].astype(str)) == {"completed"} and set(frame["source_name"]) == {"tone.wav"}


def test_submit_without_wait_and_with_format(fresh_server, wav):
    client = fresh_client(fresh_server)
    jobs = client.submit(wav, "bass", format="flac", wait=False, progress=False)
    assert len(jobs) == 1 and jobs[0].format == "flac" and not jobs[0].is_done
    assert client.wait(jobs[0], poll_interval=0.2, progress=False).completed


def test_submit_validates_everything_before_uploading(fresh_server, wav):
    client = fresh_client(fresh_server)
    with pytest.raises(ValidationError,
                       match=r"`format` must be one of 'json', 'txt' for model 'music_detection', not 'wav'"):
        client.submit(wav, ["vocals", "music_detection"], format="wav")
    with pytest.raises(ValidationError, match=r"`models` must be a model name or a non-empty list"):
        client.submit(wav, [])
    with pytest.raises(ValidationError, match=r"`model` must be one of .* not 'kazoo'"):
        client.submit(wav, ["vocals", "kazoo"])
    assert requests_made(fresh_server) == 0


def current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_download_streams_and_renames(fresh_server, wav, tmp_path):
    client = fresh_client(fresh_server)
    (job,) = client.submit(wav, ["vocals"], progress=False)
    dest = tmp_path / "out" / "nested"
    paths = client.download(job.id, dest, progress=False)
    assert [p.name for p in paths] == [o.name for o in job.outputs]
    folder = dest / output_folder(wav)                      # the recording's own folder (the naming rule)
    assert all(p.parent == folder and p.stat().st_size > 0 for p in paths)
    assert sorted(x.name for x in folder.iterdir()) == sorted(p.name for p in paths)  # no .part left behind
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~current_umask() for p in paths)  # not mkstemp's 0600
    assert paths[0].read_bytes() == link_bytes(client.get_job(job.id).outputs[0].link)
    import soundfile as sf

    assert sf.info(str(paths[0])).frames == 3 * SR


def test_download_refuses_unfinished_job(fresh_server, wav, tmp_path):
    client = fresh_client(fresh_server)
    fresh_server.faults.processing_delay = 60
    job = client.create_job(client.upload(wav, progress=False), "vocals")
    with pytest.raises(ValidationError, match=rf"`job` '{job.id}' is still (queued|processing); call client.wait"):
        client.download(job, tmp_path)
    with pytest.raises(ValidationError, match=r"`dest` must be a directory, not a file"):
        client.download(job, wav)


def test_music_detection_frame(client, wav):
    frame = client.music_detection(wav, window=1.0, all_windows=True, progress=False)
    assert tuple(frame.columns) == SEGMENTS_COLUMNS
    assert frame.dtypes.astype(str).tolist() == ["string", "string", "float64", "float64", "float64", "float64",
                                                 "string"]
    assert len(frame) == 3 and frame["start_time"].tolist() == [0.0, 1.0, 2.0]
    detector = client.get_job(frame["job_id"].iloc[0]).raw["shakelab"]["detector"]
    assert set(frame["provenance"]) == {f"local:{detector}:window=1s:all_windows"}
    assert frame["end_time"].iloc[-1] == pytest.approx(3.0)
    assert frame["confidence"].between(0, 1).all() and set(frame["source"]) == {"tone.wav"}
    job_id = frame["job_id"].iloc[0]
    assert client.get_job(job_id).model == "music_detection"
    pd.testing.assert_frame_equal(client.segments(job_id), frame)


def test_music_detection_reuses_an_asset(fresh_server, wav):
    client = fresh_client(fresh_server)
    asset = client.upload(wav, progress=False)
    frame = client.music_detection(asset, progress=False)
    by_id = client.music_detection(asset.id, progress=False)
    assert fresh_server.stats()["uploads"] == 1 and fresh_server.stats()["jobs"] == 2
    assert len(frame) == len(by_id)  # a tone is not music: both answers may well be empty
    job = client.music_detection(asset, wait=False, progress=False)
    assert isinstance(job, Job) and job.model == "music_detection"


def test_music_detection_of_the_demo(client, demo_path):
    """The service's meaning: one merged segment where music is (10-44 s), none for the speech."""
    frame = client.music_detection(demo_path, progress=False)
    import shakelab.audio

    duration = shakelab.audio.info(demo_path).duration
    assert frame[["start_time", "end_time"]].to_numpy().tolist() == [[10.0, pytest.approx(duration, abs=0.01)]]
    assert frame["source"].iloc[0] == demo_path.name
    assert frame["provenance"].iloc[0].startswith("local:") and frame["provenance"].iloc[0].endswith(":window=10s")


def test_local_only_options_are_refused_before_anything_reaches_the_service(wav):
    """`window` and `all_windows` are extensions of the local server: refused, not sent, for the service."""
    from shakelab.client import is_service_url

    service = Client(token="not-a-real-token", base_url="https://groovy.audioshake.ai", max_retries=0)
    for options in ({"window": 2.0}, {"all_windows": True}):
        key = next(iter(options))
        # a request would fail with TransportError (no network here): a ValidationError means nothing was sent
        with pytest.raises(ValidationError, match=rf"`{key}` .*extension of shakelab's local server.*"
                                                  r"https://groovy.audioshake.ai"):
            service.music_detection(wav, progress=False, **options)
        with pytest.raises(ValidationError, match=rf"`{key}`"):
            service.create_job("some-asset-id", "music_detection", **options)
    assert service.provenance(Job.from_payload({"id": "j1", "status": "completed"})) == "audioshake"
    assert is_service_url("https://api.audioshake.ai/x") and not is_service_url("https://audioshake.ai.evil.example")


def test_usage_frame_counts_jobs(fresh_server, wav):
    client = fresh_client(fresh_server)
    client.submit(wav, ["music_detection"], progress=False)
    usage = client.usage()
    assert list(usage.columns) == ["month", "total_jobs", "total_minutes"]
    assert str(usage["month"].dtype) == "period[M]"
    assert usage["total_jobs"].iloc[-1] >= 1 and usage["total_minutes"].iloc[-1] > 0
    assert usage.attrs == {"counts": "jobs"}
    assert fresh_server.stats()["requests"]["GET /usage"] == 1


# --------------------------------------------------------------------------- errors and the token
def test_bad_token_is_authentication_error_without_the_token(server):
    secret = "wrong-token-4f7d0c2b9e"
    client = Client(token=secret, base_url=server.base_url)
    with pytest.raises(AuthenticationError) as info:
        client.get_job("whatever")
    assert info.value.status == 401
    assert secret not in rendered_from_library(info.value) and secret not in repr(info.value.body)


def test_no_token_in_transport_error_traceback_locals():
    secret = "transport-secret-5e6f7a8b"
    client = Client(token=secret, base_url="http://127.0.0.1:9", max_retries=1, backoff=0.01)
    with pytest.raises(TransportError) as info:
        client.create_job("asset123", "vocals")
    assert "POST /job" in str(info.value) and "refused" in str(info.value).lower()
    assert secret not in rendered_from_library(info.value)
    assert secret not in "".join(traceback.format_exception(info.value))


def test_token_never_logged(fresh_server, wav, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)  # every logger: ours, urllib3, the server's
    client = fresh_client(fresh_server)
    fresh_server.faults.add(method="GET", path="/job/*", status=503, times=1)
    fresh_server.faults.add(method="POST", path="/upload", status=429, headers={"Retry-After": "0"}, times=1)
    (job,) = client.submit(wav, ["music_detection"], progress=False)
    client.download(job, tmp_path / "dl", progress=False)
    with pytest.raises(AuthenticationError):
        Client(token="x" + fresh_server.token, base_url=fresh_server.base_url).usage()
    assert any("retry" in r.getMessage() for r in caplog.records)  # the retries were logged...
    text = "\n".join(r.getMessage() + (caplog.text if r.exc_info else "") for r in caplog.records) + caplog.text
    assert fresh_server.token not in text  # ...without the token


def test_token_sent_to_the_api_only_not_to_download_links(fresh_server, wav, tmp_path):
    seen: list[tuple[str, bool]] = []

    def record(resp, *args, **kwargs):
        seen.append((resp.request.path_url.split("?")[0], "Authorization" in resp.request.headers))

    client = fresh_client(fresh_server)
    client.session.hooks["response"].append(record)
    (job,) = client.submit(wav, ["vocals"], progress=False)
    client.download(job, tmp_path, progress=False)
    files = [auth for path, auth in seen if path.startswith("/files/")]
    api = [auth for path, auth in seen if not path.startswith("/files/")]
    assert files == [False] and api and all(api)


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --------------------------------------------------------------------------- ledger
def test_ledger_reuses_uploads_and_jobs(fresh_server, wav, tmp_path):
    from shakelab.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    client = fresh_client(fresh_server, ledger=ledger)
    a1 = client.upload(wav, progress=False)
    (j1,) = client.submit(wav, ["music_detection"], progress=False)
    # a new client (a restarted kernel) with the same ledger
    again = fresh_client(fresh_server, ledger=Ledger(tmp_path / "ledger.sqlite"))
    (j2,) = again.submit(wav, ["music_detection"], progress=False)
    assert j2.id == j1.id and j2.asset_id == a1.id
    assert fresh_server.stats()["uploads"] == 1 and fresh_server.stats()["jobs"] == 1
    (j3,) = again.submit(wav, ["music_detection"], force=True, progress=False)
    assert j3.id != j1.id and fresh_server.stats()["jobs"] == 2
    (j4,) = again.submit(wav, ["music_detection"], window=2.0, progress=False)  # other metadata, other job
    assert j4.id not in (j1.id, j3.id)
    paths = again.download(j1, tmp_path / "dl", progress=False)
    record = ledger.get_job(j1.id)
    assert record["status"] == "completed" and [str(p.resolve()) for p in paths] == record["outputs"]
    assert record["source_path"] == str(wav.resolve())


# --------------------------------------------------------------------------- connect and the CLI
def test_connect_real_service_when_token_set(monkeypatch, capsys):
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", "connect-token-12345678")
    monkeypatch.setenv("AUDIOSHAKE_BASE_URL", "http://127.0.0.1:9")
    client = connect(ledger=None)
    assert isinstance(client, Client) and client.base_url == "http://127.0.0.1:9" and client.ledger is None
    err = capsys.readouterr().err
    assert "AUDIOSHAKE_API_TOKEN is set; using the service at http://127.0.0.1:9" in err and "connect-token" not in err
    connect(ledger=None)
    assert capsys.readouterr().err == ""  # said once


def test_connect_embedded_server(monkeypatch, tmp_path, capsys, wav):
    # conftest: SHAKELAB_LOCAL_SERVER=private, SHAKELAB_SERVER_DIR in tmp_path
    import shakelab
    import shakelab.server

    shakelab.server._stop_embedded()  # an earlier test's private server (another tmp_path)
    client = shakelab.connect()
    try:
        err = capsys.readouterr().err
        assert "no AUDIOSHAKE_API_TOKEN set; using the embedded local server at " + client.base_url in err
        assert "private to this process" in err and str(tmp_path / "local-server") in err
        assert client.service == shakelab.server.start().server_id != client.base_url
        assert client.ledger is not None  # the default ledger (SHAKELAB_LEDGER points into tmp)
        assert shakelab.connect().base_url == client.base_url and capsys.readouterr().err == ""
        usage = client.usage()
        assert list(usage.columns) == ["month", "total_jobs", "total_minutes"]
    finally:
        shakelab.server.start().stop()


def test_cli_detect_and_usage(server, monkeypatch, capsys, wav, demo_path):
    from shakelab.cli import main

    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", server.token)
    monkeypatch.setenv("AUDIOSHAKE_BASE_URL", server.base_url)
    assert main(["detect", str(demo_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == list(SEGMENTS_COLUMNS) and len(out) == 2 and out[1].split()[:3] == [
        "demo.flac", out[1].split()[1], "10.0"]
    import soundfile as sf

    hiss = wav.parent / "hiss.wav"        # noise is no music: a result, not an empty table
    sf.write(hiss, 0.05 * np.random.default_rng(7).standard_normal(3 * SR).astype(np.float32), SR)
    assert main(["detect", str(hiss)]) == 0
    assert capsys.readouterr().out == "no music found in hiss.wav\n"
    assert main(["usage"]) == 0
    out = capsys.readouterr().out
    assert out.split()[:3] == ["month", "total_jobs", "total_minutes"]
    assert main(["detect", str(wav.parent / "missing.wav")]) == 2
    assert "`source` file does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- the browser review
def test_output_folder_mirrors_the_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_folder("a/take1.wav").as_posix() == "a/take1"
    assert output_folder("../data/demo.flac").as_posix() == "data/demo"          # never leaves dest
    assert output_folder(tmp_path / "b" / "take1.wav").as_posix() == "b/take1"  # under cwd: relative
    assert output_folder("/elsewhere/x/take1.wav").as_posix() == "elsewhere/x/take1"
    assert output_folder("/set/a/take1.wav", root="/set").as_posix() == "a/take1"
    assert output_folder("take1.wav").as_posix() == "take1"
    taken: dict = {}
    got = [output_folder(f, taken=taken).as_posix() for f in ("x/t.wav", "x/t.flac", "x/t.wav", "x/t.mp3")]
    assert got == ["x/t", "x/t-2", "x/t", "x/t-3"]
    with pytest.raises(ValidationError, match=r"`folder` must be a relative path inside `dest`, not '../up'"):
        Client(token="t" * 20, base_url="http://127.0.0.1:9").download("job", tmp_path, folder="../up")


def test_download_keeps_two_take1_recordings_apart(fresh_server, tmp_path, monkeypatch):
    """client.download(job, folder) once wrote both recordings' vocals.wav to one name."""
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    for sub, seconds in (("a", 1.0), ("b", 2.0)):
        (tmp_path / sub).mkdir()
        sf.write(tmp_path / sub / "take1.wav", np.zeros(int(seconds * SR), np.float32) + 0.1, SR)
    client = fresh_client(fresh_server)
    jobs = [client.submit(f"{sub}/take1.wav", ["vocals"], progress=False)[0] for sub in ("a", "b")]
    paths = [client.download(job, "out", progress=False)[0] for job in jobs]
    assert [p.as_posix() for p in paths] == ["out/a/take1/vocals.wav", "out/b/take1/vocals.wav"]
    assert [sf.info(p).frames for p in paths] == [SR, 2 * SR]
    assert client.download(jobs[0], "out", progress=False) == [paths[0]]      # same recording, same folder
    assert client.download(jobs[0], "flat", folder="", progress=False) == [Path("flat/vocals.wav")]


def test_jobs_frame_rows_in_submission_order_with_processing_and_audio_seconds(fresh_server, wav):
    client = fresh_client(fresh_server)
    models = ["vocals", "music_detection", "drums", "bass"]
    jobs = client.submit(wav, models, progress=False)
    client.get_job(jobs[0])                                  # seeing a job again does not move it
    frame = client.jobs_frame()
    assert frame["model"].astype(str).tolist() == models
    assert frame["job_id"].tolist() == [j.id for j in jobs]
    assert frame["audio_s"].tolist() == [3.0] * 4            # the recording's length ...
    assert (frame["processing_s"] >= 0).all()                # ... and the service's time are two columns
    assert "duration_s" not in frame.columns


def test_submit_waits_with_one_progress_line(fresh_server, wav, capsys):
    """Stacked per-job tqdm bars once left debris in logs."""
    client = fresh_client(fresh_server)
    jobs = client.submit(wav, ["vocals", "music_detection", "drums"], progress=True)
    err = capsys.readouterr().err
    assert all(j.is_done for j in jobs)                      # it waited (the default)
    assert "3 job(s)" in err and not any(f"job {j.id}" in err for j in jobs)
    client.submit(wav, ["bass"], progress=False)
    assert capsys.readouterr().err == ""


def test_submit_marks_jobs_reused_from_the_ledger(fresh_server, wav, tmp_path):
    from shakelab.ledger import Ledger

    client = fresh_client(fresh_server, ledger=Ledger(tmp_path / "ledger.sqlite"))
    (first,) = client.submit(wav, ["music_detection"], progress=False)
    (again,) = client.submit(wav, ["music_detection"], wait=False, progress=False)
    (waited,) = client.submit(wav, ["music_detection"], progress=False)
    assert not first.reused and again.reused and waited.reused and again.id == first.id
    assert fresh_server.stats()["requests"]["POST /job"] == 1
    jobs = client.submit(wav, ["music_detection", "vocals"], format={"vocals": "flac"}, progress=False)
    assert [j.reused for j in jobs] == [True, False] and jobs[1].format == "flac"


def test_readme_says_submit_waits_by_default():
    """The README's snippet once left out that client.submit blocks until the jobs are done."""
    import inspect

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert inspect.signature(Client.submit).parameters["wait"].default is True
    snippet = readme[readme.index("jobs = client.submit("):]
    assert "waits until all are done (wait=False returns at once)" in snippet.split("client.jobs_frame()")[0]
    assert "**`submit` waits by default**" in readme
