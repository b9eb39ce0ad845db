"""Helpers shared by several test files (fixtures live in conftest.py; these are plain functions)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np

SR = 22050


def write_beep(path: Path, seconds: float = 2.0, hz: float = 330.0) -> Path:
    """Write a mono sine of ``seconds`` at ``hz`` (amplitude 0.3) as a WAV file, and return its path."""
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
    return path


def request_count(srv, key: str) -> int:
    """How many requests of ``key`` (e.g. ``"POST /tasks"``) the server has counted (``/_stats``)."""
    return srv.stats()["requests"].get(key, 0)


def wait_for(predicate, timeout: float = 30.0) -> None:
    """Poll ``predicate`` every 50 ms until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextlib.contextmanager
def http_server(handler) -> Iterator[ThreadingHTTPServer]:
    """Serve ``handler`` on an ephemeral loopback port in a thread, for the ``with`` block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Receiver(BaseHTTPRequestHandler):
    """Records each POSTed JSON body; answers 500 to the first ``fail_first`` of them."""

    received: ClassVar[list] = []
    fail_first = 0
    ok_status = 204

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        cls.received.append(json.loads(data))
        self.send_response(cls.ok_status)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def hook_receiver(ok_status: int = 204) -> Iterator[ThreadingHTTPServer]:
    """A loopback webhook/callback receiver: ``.url``, and ``.handler.received`` (bodies) / ``.handler.fail_first``."""
    handler = type("Receiver", (_Receiver,), {"received": [], "fail_first": 0, "ok_status": ok_status})
    with http_server(handler) as httpd:
        httpd.handler = handler  # type: ignore[attr-defined]
        httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"  # type: ignore[attr-defined]
        yield httpd


def run_curl(command: str, srv, cwd, replace: dict[str, str]) -> dict:
    """Run a documented curl command against ``srv`` (each ``replace`` key by its value) and return its JSON."""
    for old, new in replace.items():
        command = command.replace(old, new)
    out = subprocess.run(["bash", "-c", command + " --silent --show-error --fail-with-body"], cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return json.loads(out.stdout)
