"""The Tasks API reference page's calls, run through the real `curl` against the local server.

tasks-api.md lists its calls as a table (method, path, request); they are written here as curl
commands against `https://api.audioshake.ai` with `x-api-key: YOUR_API_KEY`, and only the host and
the key are changed (and the example URL of a `url` source, which points at a loopback server of
this test, since no test leaves this machine).
"""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import run_curl

CREATE_ASSET = """curl -X POST "https://api.audioshake.ai/assets" \\
  -H "x-api-key: YOUR_API_KEY" \\
  -F "file=@song.mp3\""""

LIST_ASSETS = """curl -X GET "https://api.audioshake.ai/assets" \\
  -H "x-api-key: YOUR_API_KEY\""""

CREATE_TASK = """curl -X POST "https://api.audioshake.ai/tasks" \\
  -H "x-api-key: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "assetId": "<asset-id>",
    "targets": [
      {"model": "vocals", "formats": ["wav", "mp3"]},
      {"model": "music_detection", "formats": ["json"]}
    ]
  }'"""

CREATE_TASK_URL = """curl -X POST "https://api.audioshake.ai/tasks" \\
  -H "x-api-key: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "url": "https://example.com/audio.mp3",
    "targets": [{"model": "bass", "formats": ["wav"]}],
    "metadata": "my-own-reference"
  }'"""

GET_TASK = """curl -X GET "https://api.audioshake.ai/tasks/<task-id>" \\
  -H "x-api-key: YOUR_API_KEY\""""

LIST_TASKS = """curl -X GET "https://api.audioshake.ai/tasks?skip=0&take=10" \\
  -H "x-api-key: YOUR_API_KEY\""""

USAGE = """curl -X GET "https://api.audioshake.ai/tasks/statistics?name=usage" \\
  -H "x-api-key: YOUR_API_KEY\""""

DISTRIBUTION = """curl -X GET "https://api.audioshake.ai/tasks/statistics?name=distribution" \\
  -H "x-api-key: YOUR_API_KEY\""""


class _Host(BaseHTTPRequestHandler):
    audio = b""

    def do_GET(self):
        ok = self.path == "/audio.mp3"
        body = self.audio if ok else b"missing"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def curl(command: str, srv, cwd, **ids):
    return run_curl(command, srv, cwd, {"https://api.audioshake.ai": srv.base_url, "YOUR_API_KEY": srv.token, **ids})


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by `make system-deps`")
def test_tasks_page_calls_verbatim(fresh_server, tmp_path):
    sr = 22050
    t = np.arange(3 * sr) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype("float32")
    sf.write(tmp_path / "song.mp3", y, sr, format="MP3")
    handler = type("H", (_Host,), {"audio": (tmp_path / "song.mp3").read_bytes()})
    host = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    loop = f"http://127.0.0.1:{host.server_address[1]}"
    try:
        asset = curl(CREATE_ASSET, fresh_server, tmp_path)
        assert asset["name"] == "song.mp3" and asset["format"] == "mp3" and set(asset) >= {"id", "format", "name"}
        assert [a["id"] for a in curl(LIST_ASSETS, fresh_server, tmp_path)] == [asset["id"]]

        task = curl(CREATE_TASK, fresh_server, tmp_path, **{"<asset-id>": asset["id"]})
        assert task["assetId"] == asset["id"] and [t["status"] for t in task["targets"]] == ["processing"] * 2
        by_url = curl(CREATE_TASK_URL, fresh_server, tmp_path, **{"https://example.com": loop})
        assert by_url["url"] == f"{loop}/audio.mp3" and by_url["metadata"] == "my-own-reference"

        deadline = time.monotonic() + 300
        for tid in (task["id"], by_url["id"]):
            while True:
                got = curl(GET_TASK, fresh_server, tmp_path, **{"<task-id>": tid})
                if "completedAt" in got or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert all(t["status"] == "completed" for t in got["targets"]), got
            assert all(len(t["output"]) == len(t["formats"]) for t in got["targets"])

        listed = curl(LIST_TASKS, fresh_server, tmp_path)
        assert [t["id"] for t in listed] == [by_url["id"], task["id"]]  # newest first

        usage = curl(USAGE, fresh_server, tmp_path)
        assert usage[-1]["totalTargets"] == 3 and float(usage[-1]["totalMinutes"]) == pytest.approx(9 / 60, abs=0.01)
        dist = curl(DISTRIBUTION, fresh_server, tmp_path)
        assert {d["model"] for d in dist} == {"vocals", "music_detection", "bass"}
    finally:
        host.shutdown()
        host.server_close()
