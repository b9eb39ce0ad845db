"""Every curl command of the API page, run verbatim through the real `curl` against the local server.

Only the host and the token are changed (and the page's example URLs for the link to fetch and
the callback, which point at loopback servers of this test, since no test leaves this machine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import run_curl

# The commands of the legacy Jobs API page, copied character for character.
UPLOAD = """curl -X POST "https://groovy.audioshake.ai/upload" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: multipart/form-data" \\
  -H "Accept: application/json" \\
  -F 'file=@song.mp3;type=audio/mpeg'"""

UPLOAD_LINK = """curl -X POST "https://groovy.audioshake.ai/upload/link" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "link": "https://example.com/audio.mp3",
    "name": "song"
  }'"""

CREATE_JOB = """curl -X POST "https://groovy.audioshake.ai/job" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -H "Accept: application/json" \\
  -d '{
    "metadata": {
      "format": "wav",
      "name": "vocals"
    },
    "assetId": "clyxaywtp00ne0jpi4nf435dv",
    "callbackUrl": "https://your-app.com/webhooks"
  }'"""

GET_JOB = """curl -X GET "https://groovy.audioshake.ai/job/<job-id>" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Accept: application/json\""""

MUSIC_DETECTION = """curl -X POST "https://groovy.audioshake.ai/job" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "metadata": {
      "format": "json",
      "name": "music_detection"
    },
    "assetId": "<asset-id>"
  }'"""

USAGE = """curl -X GET "https://groovy.audioshake.ai/usage" \\
  -H "Authorization: Bearer YOUR_API_TOKEN\""""


class _Host(BaseHTTPRequestHandler):
    """Serves /audio.mp3 and records POSTs to /webhooks."""

    audio = b""
    received: ClassVar[list] = []

    def do_GET(self):
        body = self.audio if self.path == "/audio.mp3" else b"missing"
        self.send_response(200 if self.path == "/audio.mp3" else 404)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(json.loads(data))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def curl(command: str, srv, cwd, **ids) -> dict:
    return run_curl(command, srv, cwd, {"https://groovy.audioshake.ai": srv.base_url, "YOUR_API_TOKEN": srv.token,
                                        **ids})


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by `make system-deps`")
def test_page_curl_commands_verbatim(fresh_server, tmp_path):
    sr = 22050
    t = np.arange(3 * sr) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype("float32")
    sf.write(tmp_path / "song.mp3", y, sr, format="MP3")
    handler = type("H", (_Host,), {"audio": (tmp_path / "song.mp3").read_bytes(), "received": []})
    host = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    loop = f"http://127.0.0.1:{host.server_address[1]}"
    try:
        up = curl(UPLOAD, fresh_server, tmp_path)
        assert up["name"] == "song.mp3" and up["format"] == "mp3" and up["fileType"] == "audio/mpeg"

        linked = curl(UPLOAD_LINK, fresh_server, tmp_path, **{"https://example.com": loop})
        assert linked["name"] == "song" and linked["format"] == "mp3"

        job = curl(CREATE_JOB, fresh_server, tmp_path, clyxaywtp00ne0jpi4nf435dv=up["id"],
                   **{"https://your-app.com": loop})["job"]
        assert job["status"] == "queued" and job["metadata"] == {"format": "wav", "name": "vocals"}
        assert set(job) >= {"id", "clientId", "requestId", "metadata", "assetId", "status"}

        detection = curl(MUSIC_DETECTION, fresh_server, tmp_path, **{"<asset-id>": linked["id"]})["job"]
        assert detection["metadata"]["name"] == "music_detection"

        deadline = time.monotonic() + 300
        for jid in (job["id"], detection["id"]):
            while True:
                got = curl(GET_JOB, fresh_server, tmp_path, **{"<job-id>": jid})["job"]
                if got["status"] in ("completed", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert got["status"] == "completed", got["statusInfo"]
            assert got["outputAssets"], got

        usage = curl(USAGE, fresh_server, tmp_path)
        assert usage["usage"][-1]["totalJobs"] == 2
        assert usage["usage"][-1]["totalMinutes"] == pytest.approx(6 / 60, abs=0.01)

        deadline = time.monotonic() + 30
        while not any(p["job"]["status"] == "completed" for p in handler.received) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(p["job"]["id"] == job["id"] and p["job"]["status"] == "completed" for p in handler.received)
    finally:
        host.shutdown()
        host.server_close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by `make system-deps`")
def test_curl_without_token_gets_401_json(fresh_server, tmp_path):
    cmd = USAGE.replace("https://groovy.audioshake.ai", fresh_server.base_url).replace("YOUR_API_TOKEN", "nope")
    out = subprocess.run(["bash", "-c", cmd + " --silent --write-out '\\n%{http_code}'"], capture_output=True,
                         text=True, timeout=30, cwd=tmp_path)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "401"
    assert json.loads(body)["error"] == "unauthorized"
