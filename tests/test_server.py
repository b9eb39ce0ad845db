"""The local Jobs API over real HTTP on loopback: endpoints, errors, auth, links, faults, stats.

Tests that need finished jobs (real audio processing) live in test_server_jobs.py.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import requests
import soundfile as sf

from shakelab.server import LocalServer
from shakelab.server.app import clean_name, sniff_format, stats_key
from shakelab.server.faults import Faults
from shakelab.server.links import LinkSigner


def wav_bytes(seconds: float = 1.0, sr: int = 8000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32"), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def auth(srv) -> dict:
    return {"Authorization": f"Bearer {srv.token}"}


def upload(srv, data: bytes | None = None, filename: str = "tone.wav", ctype: str = "audio/wav") -> dict:
    data = wav_bytes() if data is None else data
    r = requests.post(f"{srv.base_url}/upload", files={"file": (filename, data, ctype)}, headers=auth(srv), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def post_job(srv, body, **kw):
    return requests.post(f"{srv.base_url}/job", json=body, headers=auth(srv), timeout=30, **kw)


def assert_error(r, status: int, code: str, *needles: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    for n in needles:
        assert n in body["message"], (n, body["message"])
    return body


@pytest.fixture
def quiet_server(tmp_path):
    """A server whose jobs stay queued (long processing delay), for payload and error tests."""
    srv = LocalServer(tmp_path / "srv", token="quiet-token-123", workers=1, allow_private_links=True).start()
    srv.faults.processing_delay = 600
    yield srv
    srv.stop()


# -- start, base_url, repr ------------------------------------------------------------------
def test_local_server_binds_real_port_and_hides_token(fresh_server):
    assert fresh_server.base_url.startswith("http://127.0.0.1:")
    port = int(fresh_server.base_url.rsplit(":", 1)[1])
    assert port > 0
    assert fresh_server.token not in repr(fresh_server)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_token_generated_once_and_stored_0600(tmp_path):
    srv = LocalServer(tmp_path / "d")
    assert srv.token_generated and len(srv.token) >= 32
    token_file = tmp_path / "d" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    again = LocalServer(tmp_path / "d")
    assert again.token == srv.token and not again.token_generated


def test_constructor_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        LocalServer(tmp_path, token="t", workers=0)
    with pytest.raises(ValueError, match="port"):
        LocalServer(tmp_path, token="t", port=70000)
    with pytest.raises(ValueError, match="link_ttl"):
        LocalServer(tmp_path, token="t", link_ttl=0)
    with pytest.raises(ValueError, match="token"):
        LocalServer(tmp_path, token="two words")


def test_context_manager_stops_server(tmp_path):
    with LocalServer(tmp_path / "cm", token="cm-token") as srv:
        url = srv.base_url
        assert requests.get(f"{url}/usage", headers=auth(srv), timeout=10).status_code == 200
    assert not srv.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/usage", timeout=2)


def test_start_reuses_embedded_server(tmp_path):
    from shakelab import server as mod
    from shakelab.server import lifecycle

    first = mod.start(data_dir=tmp_path / "embedded", token="embedded-token")
    try:
        assert mod.start() is first
        assert requests.get(f"{first.base_url}/usage", headers=auth(first), timeout=10).status_code == 200
    finally:
        first.stop()
        lifecycle._embedded = None


# -- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [("POST", "/upload"), ("POST", "/upload/link"), ("POST", "/job"),
                                         ("GET", "/job/cxyz"), ("GET", "/usage"), ("POST", "/usage"),
                                         ("GET", "/_stats"), ("POST", "/_faults"), ("GET", "/nowhere")])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dGVzdA==", "test-token-0123456789"])
def test_every_endpoint_requires_the_token(server, method, path, header):
    headers = {} if header is None else {"Authorization": header}
    r = requests.request(method, f"{server.base_url}{path}", headers=headers, timeout=10)
    body = assert_error(r, 401, "unauthorized", "Authorization")
    assert server.token not in json.dumps(body)
    assert r.headers["WWW-Authenticate"] == "Bearer"


# -- upload ---------------------------------------------------------------------------------
def test_upload_returns_asset_and_signed_link_works_without_auth(server):
    data = wav_bytes(0.5)
    asset = upload(server, data, "song.wav")
    assert set(asset) == {"name", "id", "fileType", "format", "link"}
    assert asset["name"] == "song.wav" and asset["format"] == "wav" and asset["fileType"] == "audio/wav"
    assert len(asset["id"]) == 25
    r = requests.get(asset["link"], timeout=10)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"].startswith("audio/wav")


def test_upload_format_is_sniffed_from_content(server):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, "float32"), 8000, format="FLAC")
    asset = upload(server, buf.getvalue(), "mislabelled.mp3", "audio/mpeg")
    assert asset["format"] == "flac" and asset["fileType"] == "audio/flac"


@pytest.mark.parametrize("filename", ["../../../etc/passwd", "..\\..\\win.ini", "a" * 5000 + ".wav",
                                      "ünï cødé ♫.wav", "new\nline\x00nul.wav", "", ".hidden", "/abs/path.wav"])
def test_odd_filenames_never_reach_the_file_system(server, filename):
    asset = upload(server, wav_bytes(0.1), filename)
    name = asset["name"]
    assert "/" not in name and "\\" not in name and "\n" not in name and "\x00" not in name
    assert 0 < len(name) <= 200
    stored = server.store.get_asset(asset["id"])
    path = Path(stored["path"])
    assert path.parent == server.data_dir / "files" / asset["id"]
    assert path.name == "source.wav"
    assert requests.get(asset["link"], timeout=10).status_code == 200


def test_upload_without_file_field_or_multipart_is_rejected(server):
    r = requests.post(f"{server.base_url}/upload", files={"other": ("x.wav", b"abc")}, headers=auth(server), timeout=10)
    assert_error(r, 400, "missing_field", "`file`")
    r = requests.post(f"{server.base_url}/upload", data=b"raw bytes", headers=auth(server), timeout=10)
    assert_error(r, 400, "invalid_request", "multipart/form-data")
    r = requests.post(f"{server.base_url}/upload", data=b"--zz\r\ngarbage", timeout=10,
                      headers={**auth(server), "Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 400 and set(r.json()) == {"error", "message"}


def test_zero_byte_and_non_audio_uploads_are_accepted(server):
    empty = upload(server, b"", "empty.wav")
    assert empty["format"] == "wav"
    text = upload(server, b"hello, not audio", "notes.txt", "text/plain")
    assert text["format"] == "txt" and text["fileType"] == "text/plain"


def test_upload_over_limit_is_413_and_leaves_nothing(tmp_path):
    with LocalServer(tmp_path / "small", token="small-token", max_upload_bytes=1000) as srv:
        for size in (5000, 3 * 1024 * 1024):  # streamed past the limit; refused from Content-Length
            r = requests.post(f"{srv.base_url}/upload", files={"file": ("big.wav", b"\0" * size)},
                              headers=auth(srv), timeout=30)
            assert_error(r, 413, "file_too_large", "1000 bytes")
        assert upload(srv, b"\0" * 1000, "fits.bin")["format"] == "bin"
        assert srv.store.count("assets") == 1
        assert list((srv.data_dir / "tmp").iterdir()) == []


def test_curl_style_upload_with_expect_100_continue(server):
    """A chunked body (no Content-Length) streams through the parser too."""
    boundary = "XyZ"
    data = wav_bytes(0.2)

    def gen():
        yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.wav\"\r\n".encode()
        yield b"Content-Type: audio/wav\r\n\r\n"
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = requests.post(f"{server.base_url}/upload", data=gen(), timeout=10,
                      headers={**auth(server), "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert requests.get(r.json()["link"], timeout=10).content == data


# -- upload/link ----------------------------------------------------------------------------
class _Files(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def do_GET(self):
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_host():
    """A loopback HTTP server for /upload/link; set routes: path -> (status, headers, body)."""
    handler = type("H", (_Files,), {"routes": {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    httpd.routes = handler.routes
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_upload_link_fetches_follows_redirects_and_names(server, file_host):
    data = wav_bytes(0.3)
    file_host.routes["/audio.wav"] = (200, {"Content-Type": "audio/wav"}, data)
    file_host.routes["/moved"] = (302, {"Location": "/audio.wav"}, b"")
    r = requests.post(f"{server.base_url}/upload/link", json={"link": f"{file_host.url}/moved", "name": "song"},
                      headers=auth(server), timeout=30)
    assert r.status_code == 200, r.text
    asset = r.json()
    assert asset["name"] == "song" and asset["format"] == "wav" and asset["fileType"] == "audio/wav"
    assert requests.get(asset["link"], timeout=10).content == data


def test_upload_link_bad_inputs(server, file_host):
    url = f"{server.base_url}/upload/link"
    assert_error(requests.post(url, json={"name": "x"}, headers=auth(server), timeout=10), 400, "missing_field",
                 "`link`")
    assert_error(requests.post(url, json={"link": 5}, headers=auth(server), timeout=10), 400, "invalid_field", "`link`")
    assert_error(requests.post(url, json={"link": "ftp://h/x.wav"}, headers=auth(server), timeout=10),
                 400, "invalid_link", "http or https")
    assert_error(requests.post(url, json={"link": "file:///etc/passwd"}, headers=auth(server), timeout=10),
                 400, "invalid_link", "file:///etc/passwd")
    assert_error(requests.post(url, json={"link": f"{file_host.url}/x", "name": ["a"]}, headers=auth(server),
                               timeout=10), 400, "invalid_field", "`name`")
    assert_error(requests.post(url, json={"link": f"{file_host.url}/absent.wav"}, headers=auth(server), timeout=10),
                 400, "link_failed", "404")
    assert_error(requests.post(url, data="{not json", headers=auth(server), timeout=10), 400, "invalid_json")


def test_upload_link_refuses_private_hosts_unless_allowed(tmp_path, file_host):
    file_host.routes["/a.wav"] = (200, {}, wav_bytes(0.1))
    with LocalServer(tmp_path / "strict", token="strict-token") as srv:
        for link in (f"{file_host.url}/a.wav", "http://localhost:9/a.wav", "http://169.254.169.254/latest",
                     "http://10.0.0.1/a.wav", "http://[::1]:9/a.wav", "http://0.0.0.0/a.wav"):
            r = requests.post(f"{srv.base_url}/upload/link", json={"link": link, "name": "a"}, headers=auth(srv),
                              timeout=10)
            assert_error(r, 400, "invalid_link", "--allow-private-links")
        assert srv.store.count("assets") == 0


def test_upload_link_size_cap(tmp_path, file_host):
    file_host.routes["/big.wav"] = (200, {}, b"\0" * 5000)
    with LocalServer(tmp_path / "cap", token="cap-token", max_upload_bytes=1000, allow_private_links=True) as srv:
        r = requests.post(f"{srv.base_url}/upload/link", json={"link": f"{file_host.url}/big.wav"}, headers=auth(srv),
                          timeout=10)
        assert_error(r, 413, "file_too_large")
        assert list((srv.data_dir / "tmp").iterdir()) == []


# -- jobs: validation and payload -------------------------------------------------------------
def test_create_job_payload_is_the_page_shape(quiet_server):
    asset = upload(quiet_server)
    r = post_job(quiet_server, {"metadata": {"format": "wav", "name": "vocals"}, "assetId": asset["id"],
                                "callbackUrl": "https://your-app.com/webhooks"})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    for key in ("id", "clientId", "requestId", "metadata", "assetId", "status", "createdAt", "startedAt",
                "updatedAt", "sourceAsset", "statusInfo", "callbackUrl", "outputAssets"):
        assert key in job
    assert job["status"] == "queued" and job["assetId"] == asset["id"]
    assert job["metadata"] == {"format": "wav", "name": "vocals"}
    assert job["callbackUrl"] == "https://your-app.com/webhooks"
    assert job["sourceAsset"]["id"] == asset["id"] and job["outputAssets"] == []
    assert job["createdAt"].endswith("Z")
    got = requests.get(f"{quiet_server.base_url}/job/{job['id']}", headers=auth(quiet_server), timeout=10).json()["job"]
    assert got["id"] == job["id"] and got["clientId"] == job["clientId"]
    assert got["status"] in ("queued", "processing")


def test_links_are_fresh_on_each_get(tmp_path):
    with LocalServer(tmp_path / "fresh", token="fresh-links", link_ttl=3600) as srv:
        srv.faults.processing_delay = 600
        asset = upload(srv)
        job = post_job(srv, {"metadata": {"name": "vocals", "format": "wav"}, "assetId": asset["id"]}).json()["job"]
        first = requests.get(f"{srv.base_url}/job/{job['id']}", headers=auth(srv), timeout=10).json()["job"]
        time.sleep(1.1)
        second = requests.get(f"{srv.base_url}/job/{job['id']}", headers=auth(srv), timeout=10).json()["job"]
        assert first["sourceAsset"]["link"] != second["sourceAsset"]["link"]
        e1 = float(first["sourceAsset"]["link"].split("expires=")[1].split("&")[0])
        e2 = float(second["sourceAsset"]["link"].split("expires=")[1].split("&")[0])
        assert e2 - e1 >= 1.0


BAD_JOBS = [
    ({"assetId": "A"}, "missing_field", "`metadata`"),
    ({"metadata": "vocals", "assetId": "A"}, "invalid_field", "`metadata`"),
    ({"metadata": {"format": "wav"}, "assetId": "A"}, "missing_field", "`metadata.name`"),
    ({"metadata": {"name": 7, "format": "wav"}, "assetId": "A"}, "invalid_field", "`metadata.name`"),
    ({"metadata": {"name": "kazoo", "format": "wav"}, "assetId": "A"}, "unknown_model", "'kazoo'"),
    ({"metadata": {"name": "guitar", "format": "wav"}, "assetId": "A"}, "unknown_model", "does not run"),
    ({"metadata": {"name": "vocals"}, "assetId": "A"}, "missing_field", "`metadata.format`"),
    ({"metadata": {"name": "vocals", "format": "json"}, "assetId": "A"}, "unsupported_format", "'wav', 'mp3'"),
    ({"metadata": {"name": "music_detection", "format": "wav"}, "assetId": "A"}, "unsupported_format", "'json', 'txt'"),
    ({"metadata": {"name": "vocals", "format": ["wav"]}, "assetId": "A"}, "unsupported_format", "`metadata.format`"),
    ({"metadata": {"name": "music_detection", "format": "json", "window": "ten"}, "assetId": "A"}, "invalid_field",
     "`metadata.window`"),
    ({"metadata": {"name": "vocals", "format": "wav", "window": 5}, "assetId": "A"}, "invalid_field", "window"),
    ({"metadata": {"name": "vocals", "format": "wav"}}, "missing_field", "`assetId`"),
    ({"metadata": {"name": "vocals", "format": "wav"}, "assetId": 12}, "invalid_field", "`assetId`"),
    ({"metadata": {"name": "vocals", "format": "wav"}, "assetId": "A", "callbackUrl": "javascript:alert(1)"},
     "invalid_field", "`callbackUrl`"),
    ({"metadata": {"name": "vocals", "format": "wav"}, "assetId": "A", "callbackUrl": 3}, "invalid_field",
     "`callbackUrl`"),
]


@pytest.mark.parametrize("body,code,needle", BAD_JOBS)
def test_bad_job_requests_name_the_field(server, body, code, needle):
    before = server.store.count("jobs")
    assert_error(post_job(server, body), 400, code, needle)
    assert server.store.count("jobs") == before


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'"string"'])
def test_job_body_must_be_a_json_object(server, raw):
    r = requests.post(f"{server.base_url}/job", data=raw, headers={**auth(server), "Content-Type": "application/json"},
                      timeout=10)
    assert_error(r, 400, "invalid_json")


def test_unknown_asset_and_job_are_404(server):
    r = post_job(server, {"metadata": {"name": "vocals", "format": "wav"}, "assetId": "cnotanasset000000000000000"})
    assert_error(r, 404, "asset_not_found", "cnotanasset000000000000000")
    r = requests.get(f"{server.base_url}/job/cnosuchjob", headers=auth(server), timeout=10)
    assert_error(r, 404, "job_not_found", "cnosuchjob")


def test_wrong_method_and_unknown_route_are_json(server):
    assert_error(requests.delete(f"{server.base_url}/job", headers=auth(server), timeout=10), 405,
                 "method_not_allowed")
    assert_error(requests.get(f"{server.base_url}/jobs", headers=auth(server), timeout=10), 404, "not_found")


def test_huge_json_body_is_413(server):
    r = requests.post(f"{server.base_url}/job", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                      headers={**auth(server), "Content-Type": "application/json"}, timeout=30)
    assert_error(r, 413, "body_too_large")


# -- usage ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_usage_lists_three_months_ending_now(fresh_server, method):
    r = requests.request(method, f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["clientId"] == fresh_server.store.client_id
    months = [u["month"] for u in body["usage"]]
    assert len(months) == 3 and months == sorted(months)
    assert months[-1] == time.strftime("%Y-%m", time.gmtime())
    assert all(u["totalJobs"] == 0 and u["totalMinutes"] == 0 for u in body["usage"])


def test_usage_store_counts_completed_jobs_by_month(tmp_path):
    from datetime import UTC, datetime

    from shakelab.server.store import Store

    store = Store(tmp_path / "s")
    a = store.add_asset(name="x", fmt="wav", file_type="audio/wav", path=tmp_path / "x", size=1, source="upload")
    for secs, status in ((90.0, "completed"), (30.0, "completed"), (600.0, "failed")):
        job = store.add_job(metadata={"name": "vocals", "format": "wav"}, asset_id=a["id"], callback_url=None)
        store.update_job(job["id"], status=status, code=status, message="", input_seconds=secs)
    now = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
    usage = store.usage(3, now=now)
    assert [u["month"] for u in usage] == ["2025-11", "2025-12", "2026-01"]
    this_month = store.usage(1)[0]
    assert this_month["totalJobs"] == 2 and this_month["totalMinutes"] == pytest.approx(2.0)
    store.close()


# -- signed links ---------------------------------------------------------------------------
def test_link_expires_with_403(tmp_path):
    with LocalServer(tmp_path / "ttl", token="ttl-token", link_ttl=1) as srv:
        asset = upload(srv)
        assert requests.get(asset["link"], timeout=10).status_code == 200
        time.sleep(1.1)  # links last exactly link_ttl seconds
        assert_error(requests.get(asset["link"], timeout=10), 403, "link_expired", "fresh link")


def test_tampered_or_unsigned_links_are_403(server):
    asset = upload(server)
    link = asset["link"]
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    assert_error(requests.get(forged, timeout=10), 403, "invalid_signature")
    assert_error(requests.get(link.split("?")[0], timeout=10), 403, "invalid_signature")
    other = upload(server)
    swapped = link.replace(asset["id"], other["id"])
    assert_error(requests.get(swapped, timeout=10), 403, "invalid_signature")
    later = link.replace("expires=", "expires=9")
    assert_error(requests.get(later, timeout=10), 403, "invalid_signature")


def test_link_signer_unit():
    signer = LinkSigner("k", ttl=10)
    url = signer.make("http://h:1", "cid", "a b/c.wav", now=100.0)
    assert url.startswith("http://h:1/files/cid/a%20b_c.wav?expires=110&signature=")
    sig = url.rsplit("=", 1)[1]
    assert signer.check("cid", "110", sig, now=105) == "ok"
    assert signer.check("cid", "110", sig, now=110.001) == "expired"
    assert signer.check("cid", "111", sig, now=105) == "invalid"
    assert signer.check("cid", "110.0", sig, now=105) == "invalid"  # the signed text, not the number
    assert signer.check("cid", None, sig) == "invalid"
    assert signer.check("cid", "1e3", sig) == "invalid"
    assert LinkSigner("other", ttl=10).check("cid", "110", sig, now=105) == "invalid"
    frac = LinkSigner("k", ttl=0.5).make("http://h:1", "cid", "x", now=100.25)
    assert "expires=100.75&" in frac


def test_links_survive_restart(tmp_path):
    with LocalServer(tmp_path / "r", token="restart-links") as srv:
        asset = upload(srv)
    with LocalServer(tmp_path / "r", token="restart-links", port=0) as srv2:
        port = srv2.base_url.rsplit(":", 1)[1]
        link = asset["link"].replace(asset["link"].split("/files/")[0], f"http://127.0.0.1:{port}")
        assert requests.get(link, timeout=10).status_code == 200


# -- faults ---------------------------------------------------------------------------------
def test_fault_429_then_normal(fresh_server):
    fresh_server.faults.add(method="GET", path="/usage", status=429, times=2)
    url = f"{fresh_server.base_url}/usage"
    r1 = requests.get(url, headers=auth(fresh_server), timeout=10)
    r2 = requests.get(url, headers=auth(fresh_server), timeout=10)
    r3 = requests.get(url, headers=auth(fresh_server), timeout=10)
    assert (r1.status_code, r2.status_code, r3.status_code) == (429, 429, 200)
    assert r1.headers["Retry-After"] == "1" and r1.json()["error"] == "injected_fault"
    assert fresh_server.stats()["requests"]["GET /usage"] == 3


def test_fault_garbage_body_and_custom_headers(fresh_server):
    fresh_server.faults.add(method="*", path="/usage", status=200, body="<html>garbage", times=1,
                            headers={"X-Test": "1"})
    r = requests.post(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10)
    assert r.status_code == 200 and r.text == "<html>garbage" and r.headers["X-Test"] == "1"
    with pytest.raises(ValueError):
        r.json()
    fresh_server.faults.add(path="/usage", status=503, body={"oops": 1}, times=1)
    r = requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10)
    assert r.status_code == 503 and r.json() == {"oops": 1}


def test_fault_drop_closes_connection(fresh_server):
    fresh_server.faults.add(method="GET", path="/usage", status=None, drop=True, times=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10)
    assert requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10).status_code == 200


def test_fault_delay_then_normal_answer(fresh_server):
    fresh_server.faults.add(method="GET", path="/usage", status=None, delay=0.5, times=1)
    with pytest.raises(requests.Timeout):
        requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=0.2)
    fresh_server.faults.add(method="GET", path="/usage", status=None, delay=0.3, times=1)
    assert requests.get(f"{fresh_server.base_url}/usage", headers=auth(fresh_server), timeout=10).status_code == 200


def test_faults_over_http_variant_and_not_found(fresh_server):
    url, h = fresh_server.base_url, auth(fresh_server)
    assert requests.post(f"{url}/_faults", json={"processing_delay": 600}, headers=h, timeout=10).status_code == 200
    assert requests.post(f"{url}/_faults", json={"not_found_for": 30}, headers=h, timeout=10).status_code == 200
    asset = upload(fresh_server)
    body = {"metadata": {"name": "vocals", "format": "wav"}, "assetId": asset["id"]}
    job = post_job(fresh_server, body).json()["job"]
    assert_error(requests.get(f"{url}/job/{job['id']}", headers=h, timeout=10), 404, "job_not_found")
    requests.post(f"{url}/_faults", json={"not_found_for": 0, "variant": "stemAssets"}, headers=h, timeout=10)
    got = requests.get(f"{url}/job/{job['id']}", headers=h, timeout=10).json()["job"]
    assert "stemAssets" in got and "stemMetadata" in got and "outputAssets" not in got and "metadata" not in got
    requests.post(f"{url}/_faults", json={"variant": "nested"}, headers=h, timeout=10)
    got = requests.get(f"{url}/job/{job['id']}", headers=h, timeout=10).json()["job"]
    assert "outputAssets" not in got and got["sourceAsset"]["outputAssets"] == []
    requests.post(f"{url}/_faults", json={"add": {"method": "GET", "path": "/job/*", "status": 500}}, headers=h,
                  timeout=10)
    assert requests.get(f"{url}/job/{job['id']}", headers=h, timeout=10).status_code == 500
    requests.post(f"{url}/_faults", json={"clear": True}, headers=h, timeout=10)
    assert fresh_server.faults.variant is None and fresh_server.faults.processing_delay == 0
    assert_error(requests.post(f"{url}/_faults", json={"bogus": 1}, headers=h, timeout=10), 400, "invalid_request",
                 "bogus")
    assert_error(requests.post(f"{url}/_faults", json={"variant": "weird"}, headers=h, timeout=10), 400,
                 "invalid_request", "variant")
    assert_error(requests.post(f"{url}/_faults", json={"add": {"status": "x"}}, headers=h, timeout=10), 400,
                 "invalid_request", "status")


def test_test_hooks_are_mounted_only_when_asked_for(tmp_path):
    with LocalServer(tmp_path / "plain", token="plain-token") as srv:
        h = {"Authorization": "Bearer plain-token"}
        for method, path in (("GET", "/_stats"), ("POST", "/_faults")):
            assert_error(requests.request(method, f"{srv.base_url}{path}", json={"clear": True}, headers=h,
                                          timeout=10), 404, "not_found", path)
            assert_error(requests.request(method, f"{srv.base_url}{path}", timeout=10), 401, "unauthorized",
                         "Authorization")
        srv.faults.add(method="GET", path="/usage", status=503)  # in process, faults work all the same
        assert requests.get(f"{srv.base_url}/usage", headers=h, timeout=10).status_code == 503
        assert "GET /_stats" not in srv.stats()["requests"] and srv.stats()["requests"]["GET (other)"] == 2


def test_a_second_api_mounts_beside_the_jobs_api_with_its_own_auth(tmp_path, monkeypatch):
    """The mounting API of shakelab.server.app: one more module with build_router(ctx), x-api-key auth."""
    import sys
    import types

    from fastapi import APIRouter, Depends

    from shakelab.server import app as app_mod
    from shakelab.server.auth import ApiKeyAuth

    def build_router(ctx):
        router = APIRouter(dependencies=[Depends(ApiKeyAuth(ctx.token))])

        @router.get("/things/{thing_id}")
        async def thing(thing_id: str):
            return {"id": thing_id, "assets": ctx.store.count("assets")}

        return router

    second = types.ModuleType("shakelab_second_api")
    second.build_router = build_router  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, second.__name__, second)
    monkeypatch.setattr(app_mod, "API_MODULES", (*app_mod.API_MODULES, second.__name__))
    with LocalServer(tmp_path / "two", token="two-token") as srv:
        url, key, bearer = srv.base_url, {"x-api-key": "two-token"}, {"Authorization": "Bearer two-token"}
        assert requests.get(f"{url}/things/a1", headers=key, timeout=10).json() == {"id": "a1", "assets": 0}
        r = requests.get(f"{url}/things/a1", headers=bearer, timeout=10)
        assert_error(r, 401, "unauthorized", "x-api-key")
        assert "WWW-Authenticate" not in r.headers and "two-token" not in r.text
        assert_error(requests.get(f"{url}/things/a1", headers={"x-api-key": "nope"}, timeout=10), 401,
                     "unauthorized", "invalid key")
        assert_error(requests.get(f"{url}/usage", headers=key, timeout=10), 401, "unauthorized", "Authorization")
        assert requests.get(f"{url}/usage", headers=bearer, timeout=10).status_code == 200
        srv.faults.add(method="GET", path="/things/*", status=503)  # faults reach the second API's paths too
        assert_error(requests.get(f"{url}/things/b2", headers=key, timeout=10), 503, "injected_fault")
        assert srv.stats()["requests"]["GET /things/{id}"] == 4
        r = requests.get(f"{url}/nowhere", headers=bearer, timeout=10)  # the 404 lists both APIs' endpoints
        assert_error(r, 404, "not_found", "POST /upload", "GET /things/{id}")


def test_faults_unit_matching():
    f = Faults()
    f.add(method="POST", path="/upload*", status=503, times=None)
    assert f.take("GET", "/upload") is None
    assert f.take("post", "/upload/link").status == 503
    assert f.take("POST", "/upload").status == 503  # times=None: until cleared
    f.clear()
    assert f.take("POST", "/upload") is None
    with pytest.raises(ValueError, match="times"):
        f.add(times=0)
    with pytest.raises(ValueError, match="processing_delay"):
        f.processing_delay = -1


# -- stats ----------------------------------------------------------------------------------
def test_stats_count_since_start_in_process_and_over_http(fresh_server):
    asset = upload(fresh_server)
    upload(fresh_server)
    post_job(fresh_server, {"metadata": {"name": "vocals", "format": "wav"}, "assetId": asset["id"]})
    post_job(fresh_server, {"metadata": {"name": "kazoo", "format": "wav"}, "assetId": asset["id"]})
    for _ in range(3):
        requests.get(f"{fresh_server.base_url}/job/cnope", headers=auth(fresh_server), timeout=10)
    stats = fresh_server.stats()
    assert stats["uploads"] == 2 and stats["jobs"] == 1
    assert stats["requests"]["POST /upload"] == 2
    assert stats["requests"]["POST /job"] == 2
    assert stats["requests"]["GET /job/{id}"] == 3
    over_http = requests.get(f"{fresh_server.base_url}/_stats", headers=auth(fresh_server), timeout=10).json()
    assert over_http["uploads"] == 2 and over_http["requests"]["GET /job/{id}"] == 3


# -- helpers --------------------------------------------------------------------------------
def test_helpers():
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name(None, "x") == "x"
    assert len(clean_name("é" * 400 + ".flac")) == 200 and clean_name("é" * 400 + ".flac").endswith(".flac")
    assert sniff_format(wav_bytes(0.01)[:64]) == "wav"
    assert sniff_format(b"ID3\x03", "") == "mp3"
    assert sniff_format(b"", "x.AIF") == "aiff"
    assert sniff_format(b"", "x", "audio/x-flac") == "flac"
    assert sniff_format(b"", "x.exe") == "bin"
    assert stats_key("GET", "/files/abc/x.wav") == "GET /files/{id}"
    assert stats_key("PUT", "/etc") == "PUT (other)"


def test_token_never_in_logs(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    with LocalServer(tmp_path / "log", token="very-secret-token-42") as srv:
        requests.get(f"{srv.base_url}/usage", headers=auth(srv), timeout=10)
        requests.get(f"{srv.base_url}/usage", headers={"Authorization": "Bearer nope"}, timeout=10)
        requests.get(f"{srv.base_url}/boom", headers=auth(srv), timeout=10)
    assert "very-secret-token-42" not in caplog.text


def test_one_running_server_per_data_dir(tmp_path):
    from shakelab.server import DataDirInUse

    with LocalServer(tmp_path / "shared", token="lock-token") as first:
        with pytest.raises(DataDirInUse, match="in use by another running server") as info:
            LocalServer(tmp_path / "shared", token="lock-token").start()
        assert first.base_url in str(info.value) and "lock-token" not in str(info.value)
        assert requests.get(f"{first.base_url}/usage", headers=auth(first), timeout=10).ok
    with LocalServer(tmp_path / "shared", token="lock-token") as again:  # released by stop()
        assert again.running


def test_failed_start_releases_everything(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        srv = LocalServer(tmp_path / "b", token="busy-token", port=busy.getsockname()[1])
        with pytest.raises(OSError, match="cannot listen"):
            srv.start()
        assert srv.store is None and not srv.running
    finally:
        busy.close()
    with LocalServer(tmp_path / "b", token="busy-token") as ok:  # the data dir lock was released
        assert ok.running


def test_start_refuses_a_data_dir_in_use_naming_its_holder(tmp_path, monkeypatch):
    """No more private temp dir when the default is taken: the error names who holds it (pid, URL)."""
    import pickle

    from shakelab import server as mod
    from shakelab.server import lifecycle

    monkeypatch.setenv("SHAKELAB_SERVER_DIR", str(tmp_path / "default"))
    holder = LocalServer(mod.default_data_dir(), token="holder-token").start()
    try:
        assert holder.data_dir == (tmp_path / "default").resolve()
        assert mod.read_holder(holder.data_dir) == (os.getpid(), holder.base_url)
        with pytest.raises(mod.DataDirInUse) as info:
            mod.start(token="mine-token")
        assert (info.value.pid, info.value.url) == (os.getpid(), holder.base_url)
        assert f"{os.getpid()} {holder.base_url}" in str(info.value)
        again = pickle.loads(pickle.dumps(info.value))
        assert (again.pid, again.url, str(again)) == (info.value.pid, info.value.url, str(info.value))
        assert lifecycle._embedded is None or not lifecycle._embedded.running
        assert sorted(p.name for p in tmp_path.iterdir()) == ["default"]  # nothing made elsewhere
    finally:
        holder.stop()
    assert mod.read_holder(holder.data_dir) is None


def test_bearer_scheme_is_case_insensitive(server):
    for header in (f"bearer {server.token}", f"BEARER {server.token}"):
        assert requests.get(f"{server.base_url}/usage", headers={"Authorization": header}, timeout=10).ok
    for header in (f"Bearer {server.token}x", f"Bearer{server.token}", f"Token {server.token}", server.token[:-1]):
        r = requests.get(f"{server.base_url}/usage", headers={"Authorization": header}, timeout=10)
        assert r.status_code == 401


def test_download_link_supports_head_and_ranges(server):
    data = wav_bytes(0.5)
    asset = upload(server, data, "ranged.wav")
    head = requests.head(asset["link"], timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert "ranged.wav" in head.headers["content-disposition"]
    part = requests.get(asset["link"], headers={"Range": "bytes=4-11"}, timeout=10)
    assert part.status_code == 206 and part.content == data[4:12]


def test_upload_link_time_cap(tmp_path):
    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\0" * 1000)
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    host.daemon_threads = True
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        with LocalServer(tmp_path / "slow", token="slow-token", allow_private_links=True) as srv:
            srv.link_timeout = 1.0
            r = requests.post(f"{srv.base_url}/upload/link", headers=auth(srv), timeout=30,
                              json={"link": f"http://127.0.0.1:{host.server_address[1]}/slow.wav", "name": "slow"})
            assert_error(r, 408, "link_timeout", "1 s")
            assert srv.store.count("assets") == 0
            assert list((srv.data_dir / "tmp").iterdir()) == []
    finally:
        host.shutdown()
        host.server_close()


def test_upload_link_broken_off_by_host_is_400(server):
    class Liar(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "50000")
            self.end_headers()
            self.wfile.write(b"\0" * 100)  # then closes: fewer bytes than promised

        def log_message(self, *args):
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        before = server.store.count("assets")
        r = requests.post(f"{server.base_url}/upload/link", headers=auth(server), timeout=30,
                          json={"link": f"http://127.0.0.1:{host.server_address[1]}/short.wav"})
        assert_error(r, 400, "link_failed", "broke off")
        assert server.store.count("assets") == before
    finally:
        host.shutdown()
        host.server_close()


def test_public_addresses_are_pinned():
    from shakelab.server.network import public_addresses

    assert public_addresses("http://93.184.215.14:8080/a.wav", allow_private=False) == (
        "93.184.215.14", 8080, ["93.184.215.14"])
    assert public_addresses("https://127.0.0.1/x", allow_private=True) == ("127.0.0.1", 443, None)
    with pytest.raises(ValueError, match="private"):
        public_addresses("http://192.168.1.10/x", allow_private=False)
    with pytest.raises(ValueError, match="invalid port"):
        public_addresses("http://h:99999/x", allow_private=True)


def test_server_modules_import_each_other_without_a_cycle():
    """Every import between shakelab/server modules, lazy ones included, goes one way."""
    import ast

    root = Path(__file__).resolve().parents[1] / "shakelab" / "server"
    modules = {f.stem for f in root.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for f in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name == "shakelab.server":  # `from shakelab.server import x`: module x, or the package
                    deps |= {a.name if a.name in modules else "__init__" for a in node.names}
                elif name.startswith("shakelab.server."):
                    deps.add(name.split(".")[2])
        graph[f.stem] = deps & modules - {f.stem}
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import cycle: {' -> '.join((*path[path.index(mod):], mod))}"
        if mod not in done:
            for dep in sorted(graph[mod]):
                visit(dep, (*path, mod))
            done.add(mod)

    for mod in sorted(graph):
        visit(mod, ())
    assert "detectors" not in graph["cnn"] and "removal" not in graph["stems"]
