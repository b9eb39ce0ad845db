"""`shakelab serve` as a real subprocess, streamed uploads in flat memory, and broken-off uploads."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import requests

from shakelab.server import LocalServer


def _start_serve(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "shakelab.cli", "serve", "--port", "0", "--data-dir",
                             str(data_dir), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    url = None
    while url is None:
        assert time.monotonic() < deadline and proc.poll() is None, (lines, proc.stderr.read() if proc.poll() else "")
        line = proc.stdout.readline()
        lines.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            url = m.group(1)
    if "--token" not in extra:
        lines.append(proc.stdout.readline())  # the token line (or where it is stored)
    return proc, url, lines


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def test_serve_generates_token_once_and_stores_it_0600(tmp_path):
    data_dir = tmp_path / "served"
    proc, url, lines = _start_serve(data_dir)
    try:
        token_file = data_dir / "token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert token in lines[-1] and "shown only this once" in lines[-1]
        r = requests.get(f"{url}/usage", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and len(r.json()["usage"]) == 3
        assert requests.get(f"{url}/usage", timeout=10).status_code == 401
    finally:
        out, err = _stop(proc)
    assert token not in out + err  # printed once, at start, never again (no access log)

    proc, url, lines = _start_serve(data_dir)
    try:
        assert token not in "".join(lines) and "using the API token stored in" in lines[-1]
        assert requests.get(f"{url}/usage", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    finally:
        out, err = _stop(proc)
    assert token not in out + err


def test_serve_with_explicit_token_never_prints_it(tmp_path):
    proc, url, lines = _start_serve(tmp_path / "d", "--token", "explicit-token-999", "--workers", "1")
    try:
        assert requests.get(f"{url}/usage", headers={"Authorization": "Bearer explicit-token-999"}, timeout=10).ok
    finally:
        out, err = _stop(proc)
    assert "explicit-token-999" not in "".join(lines) + out + err
    assert not (tmp_path / "d" / "token").exists()


def test_serve_refuses_a_busy_port(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        out = subprocess.run([sys.executable, "-m", "shakelab.cli", "serve", "--port", str(port), "--data-dir",
                              str(tmp_path / "d"), "--token", "t"], capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_large_upload_streams_in_flat_memory(fresh_server, tmp_path):
    size = 24 * 1024 * 1024
    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        fh.write(os.urandom(1024 * 1024) * (size // (1024 * 1024)))
    boundary = "flatmemory"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
               "Content-Type: audio/wav\r\n\r\n").encode()
        with src.open("rb") as fh:
            while chunk := fh.read(64 * 1024):
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        r = requests.post(f"{fresh_server.base_url}/upload", data=body(), timeout=120,
                          headers={"Authorization": f"Bearer {fresh_server.token}",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert peak < size / 4, f"upload used {peak / 1e6:.1f} MB of Python memory for a {size / 1e6:.0f} MB file"
    stored = Path(fresh_server.store.get_asset(r.json()["id"])["path"])
    assert stored.stat().st_size == size


def test_upload_broken_off_leaves_no_partial_file(fresh_server):
    port = int(fresh_server.base_url.rsplit(":", 1)[1])
    head = (f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fresh_server.token}\r\n"
            "Content-Type: multipart/form-data; boundary=bb\r\nContent-Length: 1000000\r\n\r\n"
            "--bb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"\0" * 50_000)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while list((fresh_server.data_dir / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((fresh_server.data_dir / "tmp").iterdir()) == []
    assert fresh_server.store.count("assets") == 0
    assert requests.get(f"{fresh_server.base_url}/usage", headers={"Authorization": f"Bearer {fresh_server.token}"},
                        timeout=10).ok


def test_restart_removes_partial_uploads(tmp_path):
    with LocalServer(tmp_path / "d", token="t-partial") as srv:
        pass
    (tmp_path / "d" / "tmp" / "leftover.part").write_bytes(b"x")
    with LocalServer(tmp_path / "d", token="t-partial") as srv:
        assert list((srv.data_dir / "tmp").iterdir()) == []
