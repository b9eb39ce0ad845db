"""Trust: nothing billed twice after a lost answer, errors that travel between processes, no secret
in any message, body or log, timeouts and bounded pools that hold under slow clients and hosts,
a full disk, and `shakelab serve` on a data dir in use.

All against real local servers on loopback; faults come from the server's fault injection, from
small loopback HTTP servers, or from a small tmpfs.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.server
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from shakelab import errors
from shakelab.client import IDEMPOTENCY_HEADER, Client
from shakelab.errors import TransportError, UnconfirmedJobError, ValidationError
from shakelab.ledger import Ledger
from shakelab.server import LocalServer

SR = 8000


def _wav(path: Path, seconds: float = 1.0) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    return path


def _auth(srv) -> dict:
    return {"Authorization": f"Bearer {srv.token}"}


# --------------------------------------------------------------------------- the lost answer
def _lose_next_answer(srv) -> None:
    """The next POST /job is processed (the job exists) but its answer comes after the client gave up."""
    srv.faults.add(method="POST", path="/job", status=None, delay_after=2.0, times=1)


def test_a_rerun_after_a_lost_answer_refuses_and_names_file_model_when_and_force(fresh_server, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url, ledger=ledger, timeout=0.5)
    client.local_idempotency = False  # behave as against the real service, which has no idempotency key
    song = _wav(tmp_path / "song.wav")
    _lose_next_answer(fresh_server)
    with pytest.raises(TransportError):
        client.submit(song, "music_detection", wait=False, progress=False)
    assert fresh_server.store.count("jobs") == 1  # created, answer lost

    again = Client(token=fresh_server.token, base_url=fresh_server.base_url, ledger=ledger)
    again.local_idempotency = False
    with pytest.raises(UnconfirmedJobError) as info:
        again.submit(song, "music_detection", wait=False, progress=False)
    message = str(info.value)
    assert "song.wav" in message and "'music_detection'" in message and "force=True" in message
    assert time.strftime("%Y-%m-%d", time.gmtime()) in message and "UTC" in message
    assert fresh_server.store.count("jobs") == 1 and fresh_server.stats()["requests"]["POST /job"] == 1

    forced = again.submit(song, "music_detection", wait=False, progress=False, force=True)
    assert fresh_server.store.count("jobs") == 2 and forced[0].id
    # forcing settled the old attempt: the next rerun reuses the confirmed job, creates nothing
    third = again.submit(song, "music_detection", wait=False, progress=False)
    assert third[0].id == forced[0].id and fresh_server.store.count("jobs") == 2


def test_a_lost_answer_from_the_local_server_is_replayed_by_its_idempotency_key(fresh_server, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url, ledger=ledger, timeout=0.5)
    assert client.local_idempotency  # loopback: the local-only header is sent
    song = _wav(tmp_path / "song.wav")
    _lose_next_answer(fresh_server)
    with pytest.raises(TransportError):
        client.submit(song, "music_detection", wait=False, progress=False)
    (job,) = Client(token=fresh_server.token, base_url=fresh_server.base_url, ledger=ledger).submit(
        song, "music_detection", wait=False, progress=False)
    assert fresh_server.store.count("jobs") == 1 and fresh_server.stats()["jobs"] == 1
    assert fresh_server.store.jobs_with_status("queued", "processing", "completed")[0]["id"] == job.id


def test_the_server_replays_a_job_for_a_key_seen_before(fresh_server, tmp_path):
    asset = Client(token=fresh_server.token, base_url=fresh_server.base_url).upload(
        _wav(tmp_path / "a.wav"), progress=False)
    body = {"metadata": {"name": "music_detection", "format": "json"}, "assetId": asset.id}
    headers = {**_auth(fresh_server), IDEMPOTENCY_HEADER: "attempt-1"}
    first = requests.post(f"{fresh_server.base_url}/job", json=body, headers=headers, timeout=30)
    second = requests.post(f"{fresh_server.base_url}/job", json=body, headers=headers, timeout=30)
    assert first.status_code == second.status_code == 200
    assert first.json()["job"]["id"] == second.json()["job"]["id"]
    assert second.headers[IDEMPOTENCY_HEADER] == "replayed" and fresh_server.store.count("jobs") == 1
    bad = requests.post(f"{fresh_server.base_url}/job", json=body,
                        headers={**_auth(fresh_server), IDEMPOTENCY_HEADER: "no spaces allowed"}, timeout=30)
    assert bad.status_code == 400 and IDEMPOTENCY_HEADER in bad.json()["message"]
    assert fresh_server.store.count("jobs") == 1


def test_batch_shows_a_lost_answer_as_unconfirmed_and_does_not_resend(fresh_server, tmp_path):
    from shakelab import batch

    ledger = Ledger(tmp_path / "l.sqlite")
    song = _wav(tmp_path / "song.wav")
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url, ledger=ledger, timeout=0.5)
    client.local_idempotency = False
    _lose_next_answer(fresh_server)
    first = batch.run([song], "music_detection", client=client, download_to=tmp_path / "out", progress=False)
    assert list(first.jobs["action"].astype(object)) == ["unconfirmed"] and first.stats["unconfirmed"] == 1
    assert first.jobs["status"].isna().all() and first.stats["failed"] == 0
    rerun = batch.run([song], "music_detection", client=client, download_to=tmp_path / "out", progress=False)
    assert list(rerun.jobs["action"].astype(object)) == ["unconfirmed"]
    assert "force=True" in rerun.jobs["error"].iloc[0]
    assert fresh_server.stats()["requests"]["POST /job"] == 1 and fresh_server.store.count("jobs") == 1


# --------------------------------------------------------------------------- errors that travel
def _worker_auth_failure(base_url: str) -> None:
    Client(token="wrong-token-0123456789", base_url=base_url).usage()


def test_a_workers_authentication_error_crosses_a_process_pool_intact(server):
    with cf.ProcessPoolExecutor(1) as pool, pytest.raises(errors.AuthenticationError) as info:
        pool.submit(_worker_auth_failure, server.base_url).result(timeout=60)
    assert info.value.status == 401 and "Authorization" in info.value.message
    assert "wrong-token-0123456789" not in repr(info.value.__dict__) + str(info.value)


@pytest.mark.parametrize("exc", [
    errors.APIError(400, "bad", {"error": "x"}, "req-1"),
    errors.AuthenticationError(401, "no"),
    errors.NotFoundError(404, "gone", None, "r"),
    errors.RateLimitError(429, "slow", {"e": 1}, "r", retry_after=2.5),
    errors.ServerError(503, "down"),
    errors.JobFailedError("job-1", "not audio"),
    errors.JobTimeoutError("job-1", 30.0),
    errors.UnconfirmedJobError("a.wav", "vocals", "wav", 1.7e9),
    errors.ValidationError("`x` must be 1"),
    errors.TransportError("GET /x failed"),
    errors.MalformedResponseError("GET /job/j1: not JSON", None, "r", status=202),
    errors.BatchCancelled("job-1", "a rerun"),
    errors.NotInLedgerError("`job_id` 'j1' is not in the ledger"),
    errors.WaitTimeoutError("1 submission(s) still running after 5 s"),
], ids=lambda e: type(e).__name__)
def test_every_exception_pickles_with_its_fields(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc) and back.__dict__ == exc.__dict__


# --------------------------------------------------------------------------- secrets
SIGNED = "http://h/files/c1/a.wav?expires=99&signature=0123abcd4567ef89"


def test_secrets_are_scrubbed_from_messages_bodies_and_logs(fresh_server, caplog, tmp_path):
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url, backoff=0.01, max_retries=1)
    caplog.set_level(logging.DEBUG, logger="shakelab.client")
    echo = f"token {fresh_server.token} and {SIGNED}"
    # a 2xx that is not JSON and echoes the token: retried (logged), then raised, with no body
    fresh_server.faults.add(method="GET", path="/usage", status=200, body=echo, times=None,
                            headers={"Content-Type": "text/plain"})
    with pytest.raises(errors.APIError) as info:
        client.usage()
    fresh_server.faults.clear()
    # a 4xx whose JSON body echoes the token and a signed link
    fresh_server.faults.add(method="GET", path="/usage", status=400, times=1,
                            body={"error": "bad", "message": echo, "link": SIGNED, "token": fresh_server.token})
    with pytest.raises(errors.APIError) as info4:
        client.usage()
    everything = " ".join([str(info.value), repr(info.value), repr(info.value.body), str(info4.value),
                           repr(info4.value), repr(info4.value.body), repr(client),
                           *(r.getMessage() for r in caplog.records)])
    assert fresh_server.token not in everything and "0123abcd4567ef89" not in everything
    assert "signature=<hidden>" in repr(info4.value.body) and len(caplog.records) >= 1


def test_scrub_hides_bearer_and_signed_link_parameters():
    errors.register_secret("abcdefgh-registered")
    text = errors.scrub("Bearer xyz.123 at https://s3/x?X-Amz-Signature=ff00&X-Amz-Credential=AK&a=1 "
                        "abcdefgh-registered")
    assert "xyz.123" not in text and "ff00" not in text and "AK&" not in text and "registered" not in text
    assert "a=1" in text


# --------------------------------------------------------------------------- client validation
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), [1.0, float("nan")],
                                   {"deep": float("inf")}])
def test_non_finite_metadata_is_a_validation_error_before_sending(client, server, value):
    before = server.stats()["requests"].get("POST /job", 0)
    with pytest.raises(ValidationError, match=r"`gain` \(extra metadata\) must hold finite numbers"):
        client.create_job("c" + "0" * 24, "music_detection", gain=value)
    assert server.stats()["requests"].get("POST /job", 0) == before


# --------------------------------------------------------------------------- serve: data dir in use
def test_serve_on_a_data_dir_in_use_prints_one_line_and_exits_2(tmp_path):
    with LocalServer(tmp_path / "d", token="busy-token-0123456789") as srv:
        out = subprocess.run([sys.executable, "-m", "shakelab.cli", "serve", "--port", "0", "--data-dir",
                              str(tmp_path / "d")], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert out.returncode == 2, out.stderr
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        assert len(lines) == 1 and srv.base_url in lines[0] and f"pid {os.getpid()}" in lines[0], lines
        assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- slow clients
def _raw(srv) -> socket.socket:
    host, port = srv.base_url.rsplit("//", 1)[1].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def test_half_sent_headers_are_cut_after_the_header_timeout(fresh_server, monkeypatch):
    from shakelab.server import app

    monkeypatch.setattr(app, "HEADER_TIMEOUT", 0.5)
    sock = _raw(fresh_server)
    try:
        sock.sendall(b"GET /usage HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        assert sock.recv(100) == b""  # closed by the server, nothing answered
    finally:
        sock.close()


def test_an_idle_keep_alive_connection_outlives_the_pauses_between_polls(fresh_server):
    """A poll after a pause reuses the client's pooled connection: the server does not close it under it."""
    from shakelab.server.app import HEADER_TIMEOUT, KEEP_ALIVE_TIMEOUT
    from shakelab.transport import MAX_POLL_INTERVAL, Schedule

    assert KEEP_ALIVE_TIMEOUT > MAX_POLL_INTERVAL == Schedule().cap and HEADER_TIMEOUT >= KEEP_ALIVE_TIMEOUT
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url, ledger=None)
    pools = client.transport.session.get_adapter(fresh_server.base_url).poolmanager.pools

    def sockets() -> list:  # the sockets of the pooled (idle) connections
        # urllib3's pool container refuses iteration, not .keys()
        return [conn.sock for key in pools.keys() for conn in pools[key].pool.queue if conn is not None]  # noqa: SIM118

    try:
        client.usage()
        (first,) = sockets()
        assert first is not None
        time.sleep(6.0)  # idle for longer than the 5 s the server used to keep a connection
        client.usage()
        assert sockets() == [first]  # the same socket: the connection was reused, never re-opened
    finally:
        client.close()


def test_a_body_that_stops_arriving_gets_408_and_stores_nothing(fresh_server):
    fresh_server.body_idle_timeout = 0.5
    sock = _raw(fresh_server)
    try:
        head = (f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fresh_server.token}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n").encode()
        sock.sendall(head + b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF')
        answer = b""
        while chunk := sock.recv(4096):  # the server answers, then closes
            answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
    assert fresh_server.store.count("assets") == 0 and not any(fresh_server.store.tmp_dir.iterdir())


def test_a_slow_body_that_keeps_sending_is_never_cut(fresh_server, tmp_path):
    """The body timeout is an idle timeout, not a total limit: 0.3 s between chunks, 0.5 s allowed."""
    fresh_server.body_idle_timeout = 0.5
    data = _wav(tmp_path / "slow.wav").read_bytes()
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.wav"\r\n\r\n'
    body = head + data + b"\r\n--b--\r\n"
    chunks = [body[i:i + len(body) // 6 + 1] for i in range(0, len(body), len(body) // 6 + 1)]

    def slowly():
        for chunk in chunks:
            yield chunk
            time.sleep(0.3)

    r = requests.post(f"{fresh_server.base_url}/upload", data=slowly(), timeout=60,
                      headers={**_auth(fresh_server), "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 200, r.text
    assert fresh_server.store.count("assets") == 1


# --------------------------------------------------------------------------- slow link hosts
class _Trickle(http.server.BaseHTTPRequestHandler):
    release = threading.Event()
    started = threading.Semaphore(0)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"R")
        self.wfile.flush()
        self.started.release()
        self.release.wait(60)

    def log_message(self, *args):
        pass


def test_trickling_links_do_not_hold_up_uploads(fresh_server, tmp_path):
    from shakelab.server import app

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    host.daemon_threads = True
    threading.Thread(target=host.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{host.server_address[1]}/slow.wav"
    n = app.LINK_WORKERS + app.LINK_QUEUE + 6
    results: list[int] = []

    def link():
        r = requests.post(f"{fresh_server.base_url}/upload/link", json={"link": url}, headers=_auth(fresh_server),
                          timeout=120)
        results.append(r.status_code)

    threads = [threading.Thread(target=link) for _ in range(n)]
    try:
        for t in threads:
            t.start()
        for _ in range(app.LINK_WORKERS):
            assert _Trickle.started.acquire(timeout=60)  # the pool is full of trickling downloads
        r = requests.post(f"{fresh_server.base_url}/upload", headers=_auth(fresh_server), timeout=60,
                          files={"file": ("small.wav", _wav(tmp_path / "small.wav").read_bytes(), "audio/wav")})
        assert r.status_code == 200, r.text
        assert results.count(503) >= 1 and len(results) < n  # beyond the queue: refused; the rest still wait
    finally:
        _Trickle.release.set()
        for t in threads:
            t.join(timeout=120)
        host.shutdown()
        host.server_close()
    assert fresh_server.store.count("assets") == 1  # every trickling download broke off short: none stored
    assert not any(fresh_server.store.tmp_dir.iterdir())


# --------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (root only); skips where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path, leave: int, name: str = "filler") -> None:
    """Fill the file system of ``path`` until ``leave`` bytes are free."""
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    try:
        with open(path / name, "wb") as fh:
            fh.write(b"\0" * max(0, free - leave))
    except OSError:  # tmpfs rounds to pages: completely full is what was asked for
        pass


def test_a_full_disk_answers_507_everywhere_and_leaves_nothing(small_disk, tmp_path):
    srv = LocalServer(small_disk / "data", token="disk-token-0123456789", allow_private_links=True)
    srv.isolation = "thread"
    with srv:
        client = Client(token=srv.token, base_url=srv.base_url, max_retries=0)
        asset = client.upload(_wav(tmp_path / "ok.wav", 10.0), progress=False)
        _fill(small_disk, leave=64 * 1024)
        big = _wav(tmp_path / "big.wav", 30.0)  # ~480 kB: does not fit
        r = requests.post(f"{srv.base_url}/upload", headers=_auth(srv), timeout=60,
                          files={"file": ("big.wav", big.read_bytes(), "audio/wav")})
        assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
        assert "disk is full" in r.json()["message"]
        assert srv.store.count("assets") == 1 and not any(srv.store.tmp_dir.iterdir())
        # a stem job whose output cannot be written fails, says why, and leaves no partial file
        r = requests.post(f"{srv.base_url}/job", headers=_auth(srv), timeout=60,
                          json={"metadata": {"name": "vocals", "format": "wav"}, "assetId": asset.id})
        if r.status_code == 507:  # the job row itself did not fit
            assert srv.store.count("jobs") == 0
        else:
            jid = r.json()["job"]["id"]
            for _ in range(1200):  # bounded: a job left "processing" fails the test instead of hanging it
                if srv.store.get_job(jid)["status"] in ("completed", "failed"):
                    break
                time.sleep(0.1)
            final = srv.store.get_job(jid)
            assert final["status"] == "failed" and final["status_code"] == "insufficient_storage", final
            assert "disk is full" in final["status_message"]
            assert not (srv.data_dir / "outputs" / jid).exists() and srv.store.count("assets") == 1
            assert srv.store.usage(1)[0]["totalJobs"] == 0
        # a link whose download does not fit
        host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _big_file_handler(big.read_bytes()))
        threading.Thread(target=host.serve_forever, daemon=True).start()
        try:
            r = requests.post(f"{srv.base_url}/upload/link", headers=_auth(srv), timeout=60,
                              json={"link": f"http://127.0.0.1:{host.server_address[1]}/big.wav"})
        finally:
            host.shutdown()
            host.server_close()
        assert r.status_code == 507 and "disk is full" in r.json()["message"], r.text
        assert srv.store.count("assets") == 1 and not any(srv.store.tmp_dir.iterdir())
        # POST /job when not even the job's row fits
        jobs = srv.store.count("jobs")
        _fill(small_disk, leave=0, name="filler2")
        r = requests.post(f"{srv.base_url}/job", headers=_auth(srv), timeout=60,
                          json={"metadata": {"name": "music_detection", "format": "json"}, "assetId": asset.id})
        assert r.status_code == 507 and "disk is full" in r.json()["message"], r.text
        assert srv.store.count("jobs") == jobs
        (small_disk / "filler2").unlink()
        (small_disk / "filler").unlink()
        assert client.upload(big, progress=False).id  # space again: it works


def _big_file_handler(data: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler
