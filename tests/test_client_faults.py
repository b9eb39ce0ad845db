"""The client's retry rule against the local server's fault injection: 429 (Retry-After seconds and
HTTP-date), 503, slow answers vs the timeout, dropped connections, garbage bodies, 404-then-found,
payload variants, expired links, and no duplicate job on a POST /job that may have reached the server."""

from __future__ import annotations

import email.utils
import io
import logging
import threading
import time
from urllib.parse import urlsplit

import pytest

from shakelab.client import Client
from shakelab.errors import (APIError, RateLimitError, ServerError, TransportError)
from shakelab.models import JobStatus
from tests.helpers import request_count as count
from tests.helpers import write_beep



@pytest.fixture
def wav(tmp_path):
    return write_beep(tmp_path / "beep.wav")


def make_client(srv, **kwargs) -> Client:
    kwargs.setdefault("backoff", 0.05)
    return Client(token=srv.token, base_url=srv.base_url, **kwargs)


def retry_delays(caplog) -> list[float]:
    """The delays the client announced before each retry (its own log records)."""
    return [r.args[-1] for r in caplog.records if r.name == "shakelab.client" and "retry" in r.msg]


@pytest.fixture
def job(fresh_server, wav):
    """A queued job on the fresh server (and the client that made it)."""
    client = make_client(fresh_server)
    return client, client.create_job(client.upload(wav, progress=False), "music_detection")


# --------------------------------------------------------------------------- 429
def test_429_retry_after_seconds_is_honoured(job, fresh_server, caplog):
    client, created = job
    caplog.set_level(logging.WARNING, logger="shakelab.client")
    fresh_server.faults.add(method="GET", path="/job/*", status=429, headers={"Retry-After": "1"}, times=1)
    assert client.get_job(created.id).id == created.id
    assert count(fresh_server, "GET /job/{id}") == 2
    assert retry_delays(caplog) == [1.0]  # the service's wait, not the 0.05 s backoff


def test_429_retry_after_http_date_is_honoured(job, fresh_server, caplog):
    client, created = job
    caplog.set_level(logging.WARNING, logger="shakelab.client")
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    fresh_server.faults.add(method="GET", path="/job/*", status=429, headers={"Retry-After": when}, times=1)
    assert client.get_job(created.id).id == created.id
    (delay,) = retry_delays(caplog)
    assert 0.0 < delay <= 2.0
    assert count(fresh_server, "GET /job/{id}") == 2


def test_429_past_the_cap_raises_rate_limit_error(job, fresh_server):
    client, created = job
    fresh_server.faults.add(method="GET", path="/job/*", status=429, headers={"Retry-After": "120"}, times=1)
    with pytest.raises(RateLimitError) as info:
        client.get_job(created.id)
    assert info.value.retry_after == 120.0 and info.value.status == 429
    assert "max_retry_after=60" in str(info.value)
    assert count(fresh_server, "GET /job/{id}") == 1  # gave up at once instead of sleeping 2 minutes


def test_429_every_time_gives_up_after_max_retries(job, fresh_server):
    client, created = job
    client.max_retries = 2
    fresh_server.faults.add(method="GET", path="/job/*", status=429, headers={"Retry-After": "0"}, times=None)
    with pytest.raises(RateLimitError) as info:
        client.get_job(created.id)
    assert info.value.retry_after == 0.0
    assert count(fresh_server, "GET /job/{id}") == 3


def test_429_without_retry_after_backs_off(job, fresh_server, caplog):
    client, _created = job
    caplog.set_level(logging.WARNING, logger="shakelab.client")
    fresh_server.faults.add(method="GET", path="/usage", status=429, headers={"X-Other": "1"}, times=2)
    assert len(client.usage()) >= 0
    d1, d2 = retry_delays(caplog)
    assert 0.025 <= d1 <= 0.05 and 0.05 <= d2 <= 0.1  # backoff * 2**attempt, jitter 0.5-1


# --------------------------------------------------------------------------- 5xx
@pytest.mark.parametrize("status", [502, 503, 504])
def test_5xx_on_get_is_retried_with_backoff(job, fresh_server, status):
    client, created = job
    fresh_server.faults.add(method="GET", path="/job/*", status=status, times=2)
    assert client.get_job(created.id).id == created.id
    assert count(fresh_server, "GET /job/{id}") == 3


def test_5xx_every_time_raises_server_error(job, fresh_server):
    client, created = job
    client.max_retries = 1
    fresh_server.faults.add(method="GET", path="/job/*", status=503, times=None)
    with pytest.raises(ServerError) as info:
        client.get_job(created.id)
    assert info.value.status == 503 and "fault injected" in info.value.message
    assert count(fresh_server, "GET /job/{id}") == 2


def test_500_is_not_retried(job, fresh_server):
    client, created = job
    fresh_server.faults.add(method="GET", path="/job/*", status=500, times=1)
    with pytest.raises(ServerError):
        client.get_job(created.id)
    assert count(fresh_server, "GET /job/{id}") == 1


# --------------------------------------------------------------------------- POST /job: never twice
def test_post_job_503_is_not_resent(fresh_server, wav):
    client = make_client(fresh_server)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", status=503, times=1)
    with pytest.raises(ServerError):
        client.create_job(asset, "vocals")
    assert count(fresh_server, "POST /job") == 1


def test_post_job_429_is_sent_again_after_retry_after(fresh_server, wav):
    """A 429 means the service refused the request unprocessed: sending it again bills once."""
    client = make_client(fresh_server)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", status=429, headers={"Retry-After": "0"}, times=2)
    job = client.create_job(asset, "vocals")
    assert count(fresh_server, "POST /job") == 3
    assert fresh_server.stats()["jobs"] == 1 and job.id


def test_post_job_429_past_the_cap_raises_without_a_job(fresh_server, wav):
    client = make_client(fresh_server)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", status=429, headers={"Retry-After": "600"}, times=1)
    with pytest.raises(RateLimitError) as info:
        client.create_job(asset, "vocals")
    assert info.value.retry_after == 600.0
    assert count(fresh_server, "POST /job") == 1 and fresh_server.stats()["jobs"] == 0


def test_post_job_read_timeout_is_not_resent(fresh_server, wav):
    """The request reaches the server, which answers too late: the client must not send it again.

    (The local server's ``delay`` fault sleeps *before* handling, and the handler then sees the
    client gone, so no job results here; the property under test is the single POST.)"""
    client = make_client(fresh_server, timeout=0.5)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", status=None, delay=1.5, times=1)
    with pytest.raises(TransportError, match=r"POST /job failed: .*(timed out|Timeout)"):
        client.create_job(asset, "vocals")
    assert count(fresh_server, "POST /job") == 1
    assert fresh_server.stats()["jobs"] <= 1


def test_post_job_answered_too_late_is_not_resent_and_bills_once(fresh_server, wav):
    """The job is created on the server but the answer misses the client's timeout: one job, no resend."""
    client = make_client(fresh_server, timeout=0.5)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", status=None, delay_after=1.5, times=1)
    with pytest.raises(TransportError, match=r"POST /job failed: .*(timed out|Timeout)"):
        client.create_job(asset, "vocals")
    time.sleep(1.5)  # let the held answer go out
    assert count(fresh_server, "POST /job") == 1
    assert fresh_server.stats()["jobs"] == 1


def test_post_job_dropped_connection_is_not_resent(fresh_server, wav):
    client = make_client(fresh_server)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", drop=True, times=1)
    with pytest.raises(TransportError, match="POST /job failed"):
        client.create_job(asset, "vocals")
    assert count(fresh_server, "POST /job") == 1


def test_post_job_garbage_body_is_not_resent(fresh_server, wav):
    client = make_client(fresh_server)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/job", status=200, body="<html>oops</html>", times=1)
    with pytest.raises(APIError, match=r"POST /job: the service answered a body that is not JSON \(17 bytes") as info:
        client.create_job(asset, "vocals")
    assert "oops" not in str(info.value) and info.value.body is None  # a body may echo secrets: never kept
    assert count(fresh_server, "POST /job") == 1


def test_post_job_retried_when_the_connection_was_refused(fresh_server, wav):
    """Connection refused means nothing was sent: safe to retry, and exactly one job results."""
    from shakelab.server import LocalServer

    client = make_client(fresh_server, backoff=0.3, max_retries=6)
    asset = client.upload(wav, progress=False)
    port = urlsplit(fresh_server.base_url).port
    fresh_server.stop()
    revived: list[LocalServer] = []

    def revive():
        revived.append(LocalServer(fresh_server.data_dir, token=fresh_server.token, port=port,
                                   allow_private_links=True).start())

    timer = threading.Timer(0.8, revive)
    timer.start()
    try:
        created = client.create_job(asset, "music_detection")
        timer.join()
        srv = revived[0]
        assert created.asset_id == asset.id
        assert srv.stats()["jobs"] == 1 and count(srv, "POST /job") == 1
    finally:
        timer.join()
        for srv in revived:
            srv.stop()


# --------------------------------------------------------------------------- transport faults on GET
def test_slow_answer_past_timeout_is_retried(job, fresh_server):
    client, created = job
    client.timeout = 0.5
    fresh_server.faults.add(method="GET", path="/job/*", status=None, delay=1.5, times=1)
    assert client.get_job(created.id).id == created.id
    assert count(fresh_server, "GET /job/{id}") == 2


def test_slow_answer_within_timeout_is_waited_for(job, fresh_server):
    client, created = job
    client.timeout = 5
    fresh_server.faults.add(method="GET", path="/job/*", status=None, delay=0.5, times=1)
    assert client.get_job(created.id).id == created.id
    assert count(fresh_server, "GET /job/{id}") == 1


def test_dropped_connection_on_get_is_retried(job, fresh_server):
    client, created = job
    fresh_server.faults.add(method="GET", path="/job/*", drop=True, times=2)
    assert client.get_job(created.id).id == created.id
    assert count(fresh_server, "GET /job/{id}") == 3


def test_garbage_body_on_get_is_retried_then_reported(job, fresh_server):
    client, created = job
    fresh_server.faults.add(method="GET", path="/job/*", status=200, body=b"\x00\xffnot json", times=1)
    assert client.get_job(created.id).id == created.id
    client.max_retries = 1
    fresh_server.faults.add(method="GET", path="/job/*", status=200, body="{truncated", times=None)
    with pytest.raises(APIError, match=r"not JSON \(10 bytes") as info:
        client.get_job(created.id)
    assert "truncated" not in str(info.value)


def test_html_error_page_is_reported_with_its_text(job, fresh_server):
    client, created = job
    fresh_server.faults.add(method="GET", path="/job/*", status=418, body="<h1>I am a teapot</h1>",
                            headers={"Content-Type": "text/html"}, times=1)
    with pytest.raises(APIError) as info:
        client.get_job(created.id)
    assert info.value.status == 418 and "I am a teapot" in info.value.message


# --------------------------------------------------------------------------- wait
def test_wait_tolerates_initial_404(fresh_server, wav):
    client = make_client(fresh_server)
    fresh_server.faults.not_found_for = 1.5
    created = client.create_job(client.upload(wav, progress=False), "music_detection")
    done = client.wait(created, poll_interval=0.3, progress=False)
    assert done.completed and count(fresh_server, "GET /job/{id}") >= 3


def test_wait_survives_transient_errors(fresh_server, wav):
    client = make_client(fresh_server, max_retries=0)
    created = client.create_job(client.upload(wav, progress=False), "music_detection")
    fresh_server.faults.add(method="GET", path="/job/*", status=503, times=2)
    fresh_server.faults.add(method="GET", path="/job/*", drop=True, times=1)
    done = client.wait(created, poll_interval=0.1, progress=False)
    assert done.completed and count(fresh_server, "GET /job/{id}") >= 4


def test_wait_on_unknown_job_gives_up_after_the_grace(fresh_server):
    from shakelab.errors import NotFoundError

    client = make_client(fresh_server)
    client.not_found_grace = 0.5
    with pytest.raises(NotFoundError):
        client.wait("never-created", poll_interval=0.2, progress=False)
    assert count(fresh_server, "GET /job/{id}") >= 2


# --------------------------------------------------------------------------- payload variants
@pytest.mark.parametrize("variant", ["stemAssets", "nested"])
def test_payload_variants_parse_and_download(fresh_server, wav, tmp_path, variant):
    client = make_client(fresh_server)
    created = client.create_job(client.upload(wav, progress=False), "vocals", format="flac")
    fresh_server.faults.variant = variant
    done = client.wait(created, poll_interval=0.2, progress=False)
    raw = done.raw
    assert ("stemAssets" in raw) if variant == "stemAssets" else ("outputAssets" in raw["sourceAsset"])
    assert "outputAssets" not in raw
    assert (done.model, done.format, done.status) == ("vocals", "flac", JobStatus.COMPLETED)
    assert [o.name for o in done.outputs] == ["vocals.flac"]
    (path,) = client.download(done, tmp_path, progress=False)
    assert path.name == "vocals.flac" and path.stat().st_size > 0


# --------------------------------------------------------------------------- uploads
def test_upload_retried_after_503_rewinds_the_file(fresh_server, wav):
    client = make_client(fresh_server)
    fresh_server.faults.add(method="POST", path="/upload", status=503, times=1)
    asset = client.upload(wav, progress=False)
    assert count(fresh_server, "POST /upload") == 2 and fresh_server.stats()["uploads"] == 1
    import requests

    assert requests.get(asset.link, timeout=10).content == wav.read_bytes()


def test_upload_of_file_object_retried_after_drop(fresh_server, wav):
    client = make_client(fresh_server)
    fresh_server.faults.add(method="POST", path="/upload", drop=True, times=1)
    buf = io.BytesIO(wav.read_bytes())
    asset = client.upload(buf, name="beep.wav", progress=False)
    assert count(fresh_server, "POST /upload") == 2
    import requests

    assert requests.get(asset.link, timeout=10).content == wav.read_bytes()


class _Pipe(io.RawIOBase):
    """A binary stream that cannot seek (like a socket or a pipe)."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        chunk = self._buf.read(len(b))
        b[:len(chunk)] = chunk
        return len(chunk)


def test_unseekable_upload_is_sent_once(fresh_server, wav):
    client = make_client(fresh_server)
    fresh_server.faults.add(method="POST", path="/upload", status=503, times=1)
    with pytest.raises(ServerError):
        client.upload(_Pipe(wav.read_bytes()), name="pipe.wav", progress=False)
    assert count(fresh_server, "POST /upload") == 1
    asset = client.upload(_Pipe(wav.read_bytes()), name="pipe.wav", progress=False)
    assert asset.name == "pipe.wav"


# --------------------------------------------------------------------------- usage and downloads
def test_usage_falls_back_to_post_on_405(fresh_server):
    client = make_client(fresh_server)
    fresh_server.faults.add(method="GET", path="/usage", status=405, times=1)
    frame = client.usage()
    assert list(frame.columns) == ["month", "total_jobs", "total_minutes"]
    assert count(fresh_server, "GET /usage") == 1 and count(fresh_server, "POST /usage") == 1


def test_expired_links_are_refreshed_once(tmp_path, wav):
    from shakelab.server import LocalServer

    with LocalServer(tmp_path / "srv", token="ttl-token-0123456789", link_ttl=1.0) as srv:
        client = make_client(srv)
        (vocals,) = client.submit(wav, ["vocals"], progress=False)
        # a beep is not music: all_windows (local-only) makes the answer hold a window to read
        (detection,) = client.submit(wav, ["music_detection"], all_windows=True, progress=False)
        time.sleep(1.5)  # every link in these jobs has expired now
        polls = count(srv, "GET /job/{id}")
        (path,) = client.download(vocals, tmp_path / "out", progress=False)
        assert count(srv, "GET /job/{id}") == polls + 1  # exactly one re-fetch for fresh links
        assert path.stat().st_size > 0 and path.name == "vocals.wav"
        frame = client.segments(detection)
        assert count(srv, "GET /job/{id}") == polls + 2
        assert len(frame) == 1 and frame["job_id"].iloc[0] == detection.id


def test_dropped_download_is_retried_without_partial_files(fresh_server, wav, tmp_path):
    client = make_client(fresh_server)
    (done,) = client.submit(wav, ["vocals"], progress=False)
    fresh_server.faults.add(method="GET", path="/files/*", drop=True, times=1)
    (_path,) = client.download(done, tmp_path / "a", folder="", progress=False)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["vocals.wav"]
    client.max_retries = 1
    fresh_server.faults.add(method="GET", path="/files/*", drop=True, times=None)
    with pytest.raises(TransportError):
        client.download(done, tmp_path / "b", folder="", progress=False)
    assert list((tmp_path / "b").iterdir()) == []  # nothing half-written left behind
