"""The bad-input corpus: JSON, URLs, multipart, headers, audio content and file names.

Each case is a different mistake (or attack), sent to a real local server; each asserts the
status, that the error names the field (or header) at fault, and that nothing was created: no
asset, no job, no usage, no file left in the data dir. Audio content is the exception the Jobs
API itself makes: a job is created and then fails; there each case asserts that it failed with
``invalid_audio`` naming the file, that nothing was billed and that no output was kept.
"""

from __future__ import annotations

import http.server
import io
import json
import socket
import struct
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import requests

from shakelab.client import Client
from shakelab.errors import ValidationError
from shakelab.server import LocalServer

SR = 8000
FILE_LIMIT = 256 * 1024


def _wav_bytes(seconds: float = 1.0) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * SR)) / SR
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _start(path: Path, private: bool) -> LocalServer:
    srv = LocalServer(path, token="corpus-token-0123456789", allow_private_links=private,
                      max_upload_bytes=FILE_LIMIT)
    srv.body_idle_timeout = 1.0
    srv.start()
    r = requests.post(f"{srv.base_url}/upload", headers=_auth(srv), timeout=30,
                      files={"file": ("good.wav", _wav_bytes(), "audio/wav")})
    srv.good_asset = r.json()["id"]
    return srv


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """Private links refused (the default); a 256 KiB upload limit; a 1 s body idle timeout."""
    srv = _start(tmp_path_factory.mktemp("strict"), private=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def lenient(tmp_path_factory):
    """Private links allowed, so that loopback link hosts can misbehave."""
    srv = _start(tmp_path_factory.mktemp("lenient"), private=True)
    yield srv
    srv.stop()


def _auth(srv) -> dict:
    return {"Authorization": f"Bearer {srv.token}"}


def _snapshot(srv) -> tuple:
    """Everything a request could leave behind."""
    files = sorted(str(p.relative_to(srv.data_dir)) for d in ("files", "tmp", "outputs")
                   if (srv.data_dir / d).exists() for p in (srv.data_dir / d).rglob("*"))
    usage = requests.get(f"{srv.base_url}/usage", headers=_auth(srv), timeout=30).json()["usage"]
    return (srv.store.count("assets"), srv.store.count("jobs"), sum(m["totalJobs"] for m in usage),
            srv.stats()["uploads"], srv.stats()["jobs"], files)


def _refused(srv, send, status: int, field: str) -> dict:
    before = _snapshot(srv)
    r = send()
    status_got, body = (r.status_code, r.json()) if hasattr(r, "status_code") else r
    assert status_got == status, body
    assert set(body) == {"error", "message"} and field in body["message"], body
    assert _snapshot(srv) == before
    return body


def _raw(srv, data: bytes) -> tuple[int, dict]:
    """Send bytes as they are on a new connection; the status and JSON body of the answer."""
    host, port = srv.base_url.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body[:_length(answer)] or b"{}")


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# =========================================================================== JSON
def _job(asset: str, **metadata) -> dict:
    return {"metadata": {"name": "music_detection", "format": "json", **metadata}, "assetId": asset}


JSON_CASES = {
    # name: (path, body (bytes, or a function of the good asset id), status, field named)
    "empty body": ("/job", b"", 400, "body"),
    "whitespace only": ("/job", b"  \n ", 400, "body"),
    "not JSON": ("/job", b"{metadata:", 400, "JSON"),
    "top-level array": ("/job", b"[1, 2]", 400, "JSON object"),
    "top-level string": ("/job", b'"vocals"', 400, "JSON object"),
    "invalid UTF-8": ("/job", b'{"metadata": "\xff\xfe"}', 400, "JSON"),
    "NaN in metadata": ("/job", lambda a: b'{"metadata": {"name": "vocals", "format": "wav", "gain": NaN}, '
                        b'"assetId": "' + a.encode() + b'"}', 400, "`metadata.gain`"),
    "Infinity in metadata": ("/job", lambda a: b'{"metadata": {"name": "vocals", "format": "wav", "x": Infinity},'
                             b' "assetId": "' + a.encode() + b'"}', 400, "`metadata.x`"),
    "-Infinity in a list": ("/job", lambda a: b'{"metadata": {"name": "vocals", "format": "wav", "l": [1, '
                            b'-Infinity]}, "assetId": "' + a.encode() + b'"}', 400, "`metadata.l[1]`"),
    "overflowing float": ("/job", lambda a: b'{"metadata": {"name": "vocals", "format": "wav", "big": 1e400}, '
                          b'"assetId": "' + a.encode() + b'"}', 400, "`metadata.big`"),
    "NaN as assetId": ("/job", b'{"metadata": {"name": "vocals", "format": "wav"}, "assetId": NaN}', 400,
                       "`assetId`"),
    "33 levels deep": ("/job", lambda a: json.dumps(_job(a, deep=json.loads("[" * 33 + "]" * 33))).encode(),
                       400, "nested deeper"),
    "100000 levels deep": ("/job", b'{"metadata": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400,
                           "nested deeper"),
    "5000-digit integer": ("/job", b'{"metadata": {"n": ' + b"9" * 5000 + b"}}", 400, "JSON"),
    "over 1 MiB": ("/job", b'{"metadata": "' + b"a" * (1024 * 1024 + 10) + b'"}', 413, "JSON body"),
    "metadata missing": ("/job", lambda a: json.dumps({"assetId": a}).encode(), 400, "`metadata`"),
    "metadata an array": ("/job", lambda a: json.dumps({"metadata": ["vocals"], "assetId": a}).encode(), 400,
                          "`metadata`"),
    "model missing": ("/job", lambda a: json.dumps({"metadata": {"format": "wav"}, "assetId": a}).encode(),
                      400, "`metadata.name`"),
    "model a number": ("/job", lambda a: json.dumps({"metadata": {"name": 7, "format": "wav"},
                                                     "assetId": a}).encode(), 400, "`metadata.name`"),
    "unknown model": ("/job", lambda a: json.dumps({"metadata": {"name": "kazoo", "format": "wav"},
                                                    "assetId": a}).encode(), 400, "`metadata.name`"),
    "format missing": ("/job", lambda a: json.dumps({"metadata": {"name": "vocals"}, "assetId": a}).encode(),
                       400, "`metadata.format`"),
    "format not allowed": ("/job", lambda a: json.dumps({"metadata": {"name": "vocals", "format": "json"},
                                                         "assetId": a}).encode(), 400, "`metadata.format`"),
    "window out of range": ("/job", lambda a: json.dumps(_job(a, window=0.1)).encode(), 400, "`metadata.window`"),
    "window on a stem model": ("/job", lambda a: json.dumps({"metadata": {"name": "vocals", "format": "wav",
                                                                          "window": 10}, "assetId": a}).encode(),
                               400, "`metadata.window`"),
    "metadata over 16 KiB": ("/job", lambda a: json.dumps(_job(a, notes="n" * 17000)).encode(), 400, "`metadata`"),
    "assetId missing": ("/job", json.dumps({"metadata": {"name": "vocals", "format": "wav"}}).encode(), 400,
                        "`assetId`"),
    "assetId a number": ("/job", json.dumps({"metadata": {"name": "vocals", "format": "wav"},
                                             "assetId": 12}).encode(), 400, "`assetId`"),
    "assetId unknown": ("/job", json.dumps({"metadata": {"name": "vocals", "format": "wav"},
                                            "assetId": "c" + "0" * 24}).encode(), 404, "`assetId`"),
    "link missing": ("/upload/link", b'{"name": "x"}', 400, "`link`"),
    "link a number": ("/upload/link", b'{"link": 5}', 400, "`link`"),
    "name an object": ("/upload/link", b'{"link": "https://example.com/a.wav", "name": {}}', 400, "`name`"),
    "NaN in a link body": ("/upload/link", b'{"link": "https://example.com/a.wav", "x": NaN}', 400, "`x`"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES), ids=str)
def test_bad_json(strict, case):
    path, body, status, field = JSON_CASES[case]
    data = body(strict.good_asset) if callable(body) else body
    _refused(strict, lambda: requests.post(f"{strict.base_url}{path}", data=data, timeout=30,
                                           headers={**_auth(strict), "Content-Type": "application/json"}),
             status, field)


# =========================================================================== URLs
class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """Link hosts that redirect badly or answer errors."""

    ROUTES: ClassVar[dict] = {"/no-location": (302, {}), "/bad-ipv6": (302, {"Location": "http://[::1"}),
        "/to-ftp": (301, {"Location": "ftp://example.com/a.wav"}), "/missing": (404, {}),
        "/blank-location": (307, {"Location": "   "}), "/bad-port": (302, {"Location": "http://h:99999/a"}),
        "/loop": (302, {"Location": "/loop"}), "/server-error": (500, {}),
        "/to-credentials": (302, {"Location": "http://u:p@example.com/a.wav"})}

    def do_GET(self):
        status, headers = self.ROUTES.get(self.path, (404, {}))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def misbehaving():
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    host.daemon_threads = True
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{host.server_address[1]}"
    host.shutdown()
    host.server_close()
    thread.join()


LINK_CASES = {
    # name: (link, status, field named)
    "ftp scheme": ("ftp://example.com/a.wav", 400, "`link`"),
    "file scheme": ("file:///etc/passwd", 400, "`link`"),
    "javascript scheme": ("javascript:alert(1)", 400, "`link`"),
    "no scheme": ("example.com/a.wav", 400, "`link`"),
    "no host": ("http:///a.wav", 400, "`link`"),
    "unclosed IPv6": ("http://[::1/a.wav", 400, "`link`"),
    "not an IPv6 address": ("http://[zz::1]/a.wav", 400, "`link`"),
    "IPv6 without brackets and port": ("http://::1:80/a.wav", 400, "`link`"),
    "port out of range": ("http://example.com:99999/a.wav", 400, "`link`"),
    "port not a number": ("http://example.com:http/a.wav", 400, "`link`"),
    "credentials": ("https://user:pass@example.com/a.wav", 400, "`link`"),
    "space": ("https://example.com/a song.wav", 400, "`link`"),
    "newline (header injection)": ("https://example.com/a.wav\r\nX-Evil: 1", 400, "`link`"),
    "NUL byte": ("https://example.com/a\x00.wav", 400, "`link`"),
    "host label over 63 chars": ("https://" + "a" * 64 + ".com/a.wav", 400, "`link`"),
    "over 8192 chars": ("https://example.com/" + "a" * 8200, 400, "`link`"),
    "loopback (private refused)": ("http://127.0.0.1:9/a.wav", 400, "--allow-private-links"),
    "private 10/8": ("http://10.1.2.3/a.wav", 400, "--allow-private-links"),
    "cloud metadata address": ("http://169.254.169.254/latest/meta-data/", 400, "--allow-private-links"),
    "IPv4-mapped loopback": ("http://[::ffff:127.0.0.1]/a.wav", 400, "--allow-private-links"),
    "IPv6 loopback": ("http://[::1]/a.wav", 400, "--allow-private-links"),
    "unspecified address": ("http://0.0.0.0/a.wav", 400, "--allow-private-links"),
}


@pytest.mark.parametrize("case", sorted(LINK_CASES), ids=str)
def test_bad_link(strict, case):
    link, status, field = LINK_CASES[case]
    body = _refused(strict, lambda: requests.post(f"{strict.base_url}/upload/link", json={"link": link},
                                                  headers=_auth(strict), timeout=30), status, field)
    assert "`link`" in body["message"]


REDIRECT_CASES = {
    "redirect without Location": ("/no-location", "Location"),
    "redirect to a malformed IPv6 URL": ("/bad-ipv6", "`link`"),
    "redirect to ftp": ("/to-ftp", "`link`"),
    "redirect with a blank Location": ("/blank-location", "`link`"),
    "redirect to a bad port": ("/bad-port", "`link`"),
    "redirect to credentials": ("/to-credentials", "`link`"),
    "redirect loop": ("/loop", "redirected more than 5 times"),
    "link answers 404": ("/missing", "HTTP 404"),
    "link answers 500": ("/server-error", "HTTP 500"),
}


@pytest.mark.parametrize("case", sorted(REDIRECT_CASES), ids=str)
def test_bad_link_host(lenient, misbehaving, case):
    path, field = REDIRECT_CASES[case]
    body = _refused(lenient, lambda: requests.post(f"{lenient.base_url}/upload/link",
                                                   json={"link": misbehaving + path}, headers=_auth(lenient),
                                                   timeout=60), 400, field)
    assert "`link`" in body["message"]


CALLBACK_CASES = {
    "callback ftp": ("ftp://example.com/hook", "`callbackUrl`"),
    "callback unclosed IPv6": ("http://[::1/hook", "`callbackUrl`"),
    "callback bad IPv6": ("http://[1:2:3]/hook", "`callbackUrl`"),
    "callback bad port": ("http://example.com:0x50/hook", "`callbackUrl`"),
    "callback credentials": ("https://a:b@example.com/hook", "`callbackUrl`"),
    "callback with a space": ("https://example.com/my hook", "`callbackUrl`"),
    "callback loopback": ("http://127.0.0.1:8080/hook", "--allow-private-links"),
    "callback private": ("http://192.168.0.10/hook", "--allow-private-links"),
    "callback link-local": ("http://169.254.1.1/hook", "--allow-private-links"),
    "callback IPv6 loopback": ("http://[::1]:9/hook", "--allow-private-links"),
    "callback a number": (42, "`callbackUrl`"),
}


@pytest.mark.parametrize("case", sorted(CALLBACK_CASES), ids=str)
def test_bad_callback_url(strict, case):
    url, field = CALLBACK_CASES[case]
    body = _refused(strict, lambda: requests.post(f"{strict.base_url}/job", headers=_auth(strict), timeout=30,
                                                  json={**_job(strict.good_asset), "callbackUrl": url}),
                    400, field)
    assert "`callbackUrl`" in body["message"]


# =========================================================================== multipart
WAV = _wav_bytes(0.5)
_PART = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'

MULTIPART_CASES = {
    # name: (Content-Type, body, status, field named)
    "no Content-Type": (None, _PART + WAV + b"\r\n--b--\r\n", 400, "`file`"),
    "JSON Content-Type": ("application/json", b'{"file": "a.wav"}', 400, "`file`"),
    "urlencoded form": ("application/x-www-form-urlencoded", b"file=a.wav", 400, "`file`"),
    "multipart/mixed": ("multipart/mixed; boundary=b", _PART + WAV + b"\r\n--b--\r\n", 400, "`file`"),
    "no boundary parameter": ("multipart/form-data", _PART + WAV + b"\r\n--b--\r\n", 400, "`file`"),
    "empty boundary": ("multipart/form-data; boundary=", _PART + WAV + b"\r\n--b--\r\n", 400, "`file`"),
    "no closing boundary": ("multipart/form-data; boundary=b", _PART + WAV, 400, "`file`"),
    "closing boundary without --": ("multipart/form-data; boundary=b", _PART + WAV + b"\r\n--b\r\n", 400, "`file`"),
    "cut inside the part headers": ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-da',
                                    400, "`file`"),
    "only the first boundary": ("multipart/form-data; boundary=b", b"--b\r\n", 400, "`file`"),
    "empty body": ("multipart/form-data; boundary=b", b"", 400, "`file`"),
    "no file field": ("multipart/form-data; boundary=b",
                      b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n', 400, "`file`"),
    "field named File": ("multipart/form-data; boundary=b",
                         _PART.replace(b'name="file"', b'name="File"') + WAV + b"\r\n--b--\r\n", 400, "`file`"),
    "part without Content-Disposition": ("multipart/form-data; boundary=b",
                                         b"--b\r\nContent-Type: audio/wav\r\n\r\n" + WAV + b"\r\n--b--\r\n",
                                         400, "`file`"),
    "body under another boundary": ("multipart/form-data; boundary=b",
                                    _PART.replace(b"--b", b"--zz") + WAV + b"\r\n--zz--\r\n", 400, "`file`"),
    "garbage": ("multipart/form-data; boundary=b", b"\x00\x01 not multipart at all", 400, "`file`"),
    "LF line endings": ("multipart/form-data; boundary=b",
                        _PART.replace(b"\r\n", b"\n") + WAV + b"\n--b--\n", 400, "`file`"),
    "header line without colon": ("multipart/form-data; boundary=b",
                                  b'--b\r\nContent-Disposition form-data; name="file"\r\n\r\nx\r\n--b--\r\n',
                                  400, "`file`"),
    "part headers over 64 KiB": ("multipart/form-data; boundary=b",
                                 b"--b\r\nX-Pad: " + b"p" * 70000 + b"\r\n" + _PART[5:] + WAV + b"\r\n--b--\r\n",
                                 400, "`file`"),
    "file over the upload limit": ("multipart/form-data; boundary=b",
                                   _PART + b"\0" * (FILE_LIMIT + 10) + b"\r\n--b--\r\n", 413, "`file`"),
    "other fields over 1 MiB": ("multipart/form-data; boundary=b",
                                b'--b\r\nContent-Disposition: form-data; name="pad"\r\n\r\n' + b"p" * (1024 * 1024 + 10)
                                + b"\r\n" + _PART + WAV + b"\r\n--b--\r\n", 413, "`file`"),
}


@pytest.mark.parametrize("case", sorted(MULTIPART_CASES), ids=str)
def test_bad_multipart(strict, case):
    ctype, body, status, field = MULTIPART_CASES[case]
    headers = {**_auth(strict), **({"Content-Type": ctype} if ctype else {})}
    _refused(strict, lambda: requests.post(f"{strict.base_url}/upload", data=body, headers=headers, timeout=30),
             status, field)


# =========================================================================== headers
def _request(method: str, path: str, headers: list[str], body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1") + body


JOB_BODY = b'{"metadata": {"name": "vocals", "format": "wav"}, "assetId": "c0"}'
HEADER_CASES = {
    # name: (raw request as a function of the server, status, field named)
    "no Authorization": (lambda s: _request("GET", "/usage", ["Host: x"]), 401, "`Authorization`"),
    "wrong token": (lambda s: _request("GET", "/usage", ["Host: x", "Authorization: Bearer nope-0123456789"]),
                    401, "`Authorization"),
    "Basic scheme": (lambda s: _request("GET", "/usage", ["Host: x", f"Authorization: Basic {s.token}"]), 401,
                     "`Authorization"),
    "Bearer without token": (lambda s: _request("GET", "/usage", ["Host: x", "Authorization: Bearer"]), 401,
                             "`Authorization"),
    "token with a suffix": (lambda s: _request("GET", "/usage", ["Host: x", f"Authorization: Bearer {s.token}x"]),
                            401, "`Authorization"),
    "token twice": (lambda s: _request("GET", "/usage", ["Host: x", f"Authorization: Bearer {s.token} {s.token}"]),
                    401, "`Authorization"),
    "token in the query, not the header": (lambda s: _request("GET", f"/usage?token={s.token}", ["Host: x"]), 401,
                                           "`Authorization`"),
    "non-ASCII token": (lambda s: _request("GET", "/usage", ["Host: x", "Authorization: Bearer t\xe9st-token"]),
                        401, "`Authorization"),
    "no Host": (lambda s: _request("GET", "/usage", [f"Authorization: Bearer {s.token}"]), 400, "`headers`"),
    "two Host headers": (lambda s: _request("GET", "/usage",
                                            ["Host: a", "Host: b", f"Authorization: Bearer {s.token}"]),
                         400, "`headers`"),
    "Content-Length not a number": (lambda s: _request("POST", "/job", ["Host: x", f"Authorization: Bearer {s.token}",
                                                                        "Content-Length: ten"], JOB_BODY), 400,
                                    "`headers`"),
    "two different Content-Lengths": (lambda s: _request("POST", "/job", ["Host: x", "Content-Length: 5",
                                                                          "Content-Length: 6",
                                                                          f"Authorization: Bearer {s.token}"],
                                                         JOB_BODY), 400, "`headers`"),
    "Transfer-Encoding gzip": (lambda s: _request("POST", "/job", ["Host: x", "Transfer-Encoding: gzip",
                                                                   f"Authorization: Bearer {s.token}"], JOB_BODY),
                               400, "`headers`"),
    "header name with a space": (lambda s: _request("GET", "/usage", ["Host: x", "Bad Name: 1",
                                                                      f"Authorization: Bearer {s.token}"]), 400,
                                 "`headers`"),
    "header line without colon": (lambda s: _request("GET", "/usage", ["Host: x", "NoColonHere",
                                                                       f"Authorization: Bearer {s.token}"]), 400,
                                  "`headers`"),
    "negative Content-Length": (lambda s: _request("POST", "/job", ["Host: x", "Content-Length: -5",
                                                                    f"Authorization: Bearer {s.token}"]), 400,
                                "`headers`"),
    "unterminated 20 KiB header": (lambda s: f"GET /usage HTTP/1.1\r\nHost: x\r\nX-Pad: {'p' * 20000}".encode(),
                                   400, "`headers`"),
    "chunk size not hex": (lambda s: _request("POST", "/job", ["Host: x", "Transfer-Encoding: chunked",
                                                               f"Authorization: Bearer {s.token}"], b"zz\r\n"),
                           400, "`headers`"),
    "NUL in a header value": (lambda s: _request("GET", "/usage", ["Host: x", "X-A: a\x00b",
                                                                   f"Authorization: Bearer {s.token}"]), 400,
                              "`headers`"),
    "garbage request line": (lambda s: b"HELLO THERE\r\n\r\n", 400, "`headers`"),
    "idempotency key with spaces": (lambda s: _request("POST", "/job", [
        "Host: x", f"Authorization: Bearer {s.token}", "X-Shakelab-Idempotency-Key: a b",
        f"Content-Length: {len(_good_job(s))}"], _good_job(s)), 400, "`X-Shakelab-Idempotency-Key`"),
    "idempotency key too long": (lambda s: _request("POST", "/job", [
        "Host: x", f"Authorization: Bearer {s.token}", "X-Shakelab-Idempotency-Key: " + "k" * 101,
        f"Content-Length: {len(_good_job(s))}"], _good_job(s)), 400, "`X-Shakelab-Idempotency-Key`"),
    "Content-Length over the upload limit": (lambda s: _request("POST", "/upload", [
        "Host: x", f"Authorization: Bearer {s.token}", "Content-Type: multipart/form-data; boundary=b",
        "Content-Length: 1000000000000"], b"--b\r\n"), 413, "`file`"),
    "Content-Length promises more than is sent": (lambda s: _request("POST", "/job", [
        "Host: x", f"Authorization: Bearer {s.token}", "Content-Length: 5000"], JOB_BODY), 408, "request body"),
}


def _good_job(srv) -> bytes:
    return json.dumps(_job(srv.good_asset)).encode()


@pytest.mark.parametrize("case", sorted(HEADER_CASES), ids=str)
def test_bad_headers(strict, case):
    build, status, field = HEADER_CASES[case]
    _refused(strict, lambda: _raw(strict, build(strict)), status, field)


# =========================================================================== audio content
def _wav_header(data_bytes: int, *, rate: int = 44100, channels: int = 1, bits: int = 16, payload: bytes = b"",
                fmt_tag: int = 1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes) + payload)


def _flac() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR * 2, dtype=np.float32) + 0.1, SR, format="FLAC")
    return buf.getvalue()


AUDIO_CASES = {
    # name: (file name, content, model)
    "header says 3 s, no samples": ("three.wav", _wav_header(3 * 44100 * 2), "vocals"),
    "header says 3 s, holds one byte": ("onebyte.wav", _wav_header(3 * 44100 * 2, payload=b"\0"), "vocals"),
    "data chunk of 0 bytes": ("zero.wav", _wav_header(0), "instrumental"),
    "header says 3 s, holds 0.1 s": ("short.wav", _wav_header(3 * 8000 * 2, rate=8000, payload=b"\1\0" * 800),
                                     "vocals"),
    "sample rate 0": ("rate0.wav", _wav_header(1600, rate=0, payload=b"\0" * 1600), "music_detection"),
    "0 channels": ("nochan.wav", _wav_header(1600, channels=0, payload=b"\0" * 1600), "music_detection"),
    "stereo, less than one frame": ("half.wav", _wav_header(3 * 8000 * 4, rate=8000, channels=2, payload=b"\0" * 3),
                                    "vocals"),
    "unknown format tag": ("tag.wav", _wav_header(1600, fmt_tag=0x1234, payload=b"\0" * 1600), "music_detection"),
    "RIFF but AVI": ("movie.wav", b"RIFF\x10\0\0\0AVI LIST" + b"\0" * 200, "music_detection"),
    "WAVE without fmt chunk": ("nofmt.wav", b"RIFF\x24\0\0\0WAVEdata\x10\0\0\0" + b"\0" * 16, "music_detection"),
    "FLAC magic, then junk": ("junk.flac", b"fLaC" + b"\x13" * 300, "music_detection"),
    "FLAC cut in half": ("half.flac", _flac()[: len(_flac()) // 2], "vocals"),
    "OGG magic, then junk": ("junk.ogg", b"OggS" + b"\0" * 300, "music_detection"),
    "ID3 tag, no frames": ("tag.mp3", b"ID3\x04\0\0\0\0\0\x0a" + b"\0" * 10, "music_detection"),
    "MP3 sync bytes, then zeros": ("sync.mp3", b"\xff\xfb\x90\x00" + b"\0" * 400, "music_detection"),
    "AIFF with 0 frames": ("empty.aiff", b"FORM\0\0\0\x2eAIFFCOMM\0\0\0\x12\0\x01\0\0\0\0\0\x10\x40\x0e\xac\x44"
                           + b"\0" * 6 + b"SSND\0\0\0\x08" + b"\0" * 8, "music_detection"),
    "plain text": ("notes.txt", b"these are my notes, not audio\n" * 20, "music_detection"),
    "text named .wav": ("song.wav", b"definitely a song\n" * 20, "vocals"),
    "JSON named .mp3": ("song.mp3", json.dumps({"audio": [0.1, 0.2]}).encode() * 10, "music_detection"),
    "HTML error page named .flac": ("song.flac", b"<html><body>403 Forbidden</body></html>" * 5, "music_detection"),
    "PNG image": ("cover.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300, "music_detection"),
    "ZIP archive": ("album.zip", b"PK\x03\x04" + b"\0" * 300, "music_detection"),
    "random bytes": ("noise.bin", np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
                     "music_detection"),
}


@pytest.mark.parametrize("case", sorted(AUDIO_CASES), ids=str)
def test_bad_audio_content_fails_its_job_and_bills_nothing(lenient, case):
    name, content, model = AUDIO_CASES[case]
    client = Client(token=lenient.token, base_url=lenient.base_url)
    billed = sum(m["totalJobs"] for m in lenient.store.usage(3))
    asset = client.upload(io.BytesIO(content), name=name, progress=False)
    fmt = "json" if model == "music_detection" else "wav"
    r = requests.post(f"{lenient.base_url}/job", headers=_auth(lenient), timeout=30,
                      json={"metadata": {"name": model, "format": fmt}, "assetId": asset.id})
    assert r.status_code == 200, r.text
    jid = r.json()["job"]["id"]
    for _ in range(600):  # bounded: a job that never ends fails the test instead of hanging it
        job = lenient.store.get_job(jid)
        if job["status"] in ("completed", "failed"):
            break
        threading.Event().wait(0.1)
    assert job["status"] == "failed" and job["status_code"] == "invalid_audio", job
    assert repr(name) in job["status_message"] and str(lenient.data_dir) not in job["status_message"]
    assert job["outputs"] == [] and job["input_seconds"] is None
    assert sum(m["totalJobs"] for m in lenient.store.usage(3)) == billed
    assert not (lenient.data_dir / "outputs" / jid).exists()


# =========================================================================== file names
NAME_CASES = {
    # name: (file name sent in the multipart part, the asset name the server keeps)
    "path traversal": ("../../etc/passwd.wav", "passwd.wav"),
    "absolute path": ("/etc/shadow.wav", "shadow.wav"),
    "Windows path": ("C:\\Users\\me\\song.wav", "song.wav"),
    "UNC path": ("\\\\server\\share\\song.wav", "song.wav"),
    "NUL byte": ("so\x00ng.wav", "song.wav"),
    "CR LF (header injection)": ("song.wav\r\nX-Evil: 1", '"song.wav'),  # the line ends the header
    "only dots": ("..", "upload"),
    "dot file": (".hidden.wav", "hidden.wav"),
    "trailing dots and spaces": ("song.wav. . ", "song.wav"),
    "empty": ("", "upload"),
    "only a slash": ("/", "upload"),
    "bidi override": ("evil\u202ewav.exe", "evilwav.exe"),
    "zero-width space": ("so\u200bng.wav", "song.wav"),
    "tabs and runs of spaces": ("my \t  song.wav", "my song.wav"),
    "300 characters": ("a" * 300 + ".wav", "a" * 196 + ".wav"),
    "300 characters, long extension": ("b" * 300 + "." + "x" * 20, "b" * 199),
    "escape sequences": ("\x1b[31mred.wav", "[31mred.wav"),
    "DEL character": ("so\x7fng.wav", "song.wav"),
    "URL-encoded traversal": ("..%2F..%2Fsong.wav", "%2F..%2Fsong.wav"),  # shown, never decoded into a path
    "non-Latin": ("песня 歌.wav", "песня 歌.wav"),
    "emoji": ("🎵.wav", "🎵.wav"),
}


@pytest.mark.parametrize("case", sorted(NAME_CASES), ids=str)
def test_hostile_file_names_are_neutralised(lenient, case):
    """A client's file name is only ever displayed: cleaned, never used as a path (files/<id>/source.<ext>)."""
    sent, kept = NAME_CASES[case]
    before = {p for p in lenient.data_dir.rglob("*")}
    part = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + sent.encode("utf-8") +
            b'"\r\nContent-Type: audio/wav\r\n\r\n' + WAV + b"\r\n--b--\r\n")
    r = requests.post(f"{lenient.base_url}/upload", data=part, timeout=30,
                      headers={**_auth(lenient), "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 200, r.text
    asset = r.json()
    assert asset["name"] == kept
    created = {p for p in lenient.data_dir.rglob("*")} - before
    assert {p.relative_to(lenient.data_dir).as_posix() for p in created if p.is_file()} == {
        f"files/{asset['id']}/source.wav"}
    assert lenient.store.get_asset(asset["id"])["path"] == str(lenient.data_dir / "files" / asset["id"] / "source.wav")


CLIENT_NAME_CASES = {
    # name: (source, name=, the parameter the ValidationError names)
    "missing file": (lambda d: d / "nope.wav", None, "`source`"),
    "a directory": (lambda d: d, None, "`source`"),
    "an empty file": (lambda d: _touch(d / "empty.wav"), None, "`source`"),
    "NUL in the path": (lambda d: str(d / "a\x00b.wav"), None, "`source`"),
    "path too long": (lambda d: str(d / ("x" * 5000 + ".wav")), None, "`source`"),
    "a text-mode file object": (lambda d: open(_write(d / "t.wav")), None, "`source`"),  # noqa: SIM115 - the value under test
    "an int": (lambda d: 42, None, "`source`"),
    "bytes instead of a path": (lambda d: b"/tmp/a.wav", None, "`source`"),
    "empty name=": (lambda d: _write(d / "ok.wav"), "", "`name`"),
    "name= not a string": (lambda d: _write(d / "ok2.wav"), 5, "`name`"),
}


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _write(path: Path) -> Path:
    path.write_bytes(WAV)
    return path


@pytest.mark.parametrize("case", sorted(CLIENT_NAME_CASES), ids=str)
def test_bad_sources_are_refused_before_sending(strict, tmp_path, case):
    make, name, field = CLIENT_NAME_CASES[case]
    source = make(tmp_path)
    client = Client(token=strict.token, base_url=strict.base_url)
    before = (_snapshot(strict), strict.stats()["requests"].get("POST /upload", 0))
    try:
        with pytest.raises(ValidationError, match=field):
            client.upload(source, name=name, progress=False)
    finally:
        if hasattr(source, "close"):
            source.close()
    assert (_snapshot(strict), strict.stats()["requests"].get("POST /upload", 0)) == before


DOWNLOAD_CASES = {
    "traversal in the name": "/files/{id}/..%2F..%2Fstate.sqlite?expires=9999999999&signature=00",
    "no signature": "/files/{id}/source.wav",
    "forged signature": "/files/{id}/source.wav?expires=9999999999&signature=" + "0" * 64,
    "expires not a number": "/files/{id}/source.wav?expires=soon&signature=" + "0" * 64,
    "traversal as the asset id": "/files/..%2F..%2Ftoken/x?expires=9999999999&signature=00",
}


@pytest.mark.parametrize("case", sorted(DOWNLOAD_CASES), ids=str)
def test_bad_download_links(strict, case):
    path = DOWNLOAD_CASES[case].format(id=strict.good_asset)
    _refused(strict, lambda: requests.get(strict.base_url + path, timeout=30), 403, "signature")
