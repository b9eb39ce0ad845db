"""The per-user shared local server, with real processes: kernels are ``python -c`` processes
that call ``shakelab.connect()``; the server is the detached ``shakelab serve --background``
they start. Every test stops the server it started and checks with ``ps`` that none is left.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import soundfile as sf

from shakelab.errors import ShakelabError
from shakelab.server import LocalServer, daemon, read_holder

ROOT = Path(__file__).resolve().parents[1]

KERNEL = """
import json, sys
import shakelab
client = shakelab.connect()
out = {"url": client.base_url, "service": client.service}
if len(sys.argv) > 1:
    (job,) = client.submit(sys.argv[1], ["music_detection"], progress=False)
    out["job"] = job.id
    out["status"] = job.status
print(json.dumps(out))
"""


def _serve_processes(data_dir: Path) -> list[int]:
    """Pids of `shakelab serve --background` processes on ``data_dir`` (ps: Linux and macOS)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    needle = f"serve --background --data-dir {data_dir} "
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if needle in line + " "]


def _gone(data_dir: Path, timeout: float = 30.0) -> bool:
    """True once no server process of ``data_dir`` is left (it exits just after letting go of the lock)."""
    deadline = time.monotonic() + timeout
    while _serve_processes(data_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A data dir for a shared server of the test's own; whatever runs on it is stopped at the end."""
    data_dir = (tmp_path / "shared-server").resolve()
    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "shared")
    monkeypatch.setenv("SHAKELAB_SERVER_DIR", str(data_dir))
    yield data_dir
    daemon.stop(data_dir)
    assert _gone(data_dir), _serve_processes(data_dir)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(22050 * 4) / 22050
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 22050)
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOSHAKE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["TMPDIR"] = str(tmp_path / "kernel-tmp")
    (tmp_path / "kernel-tmp").mkdir(exist_ok=True)
    return env


def _kernels(tmp_path: Path, n: int, *args: str) -> list[tuple[dict, str]]:
    """Run ``n`` kernels at once; returns (their JSON line, their stderr) each."""
    procs = [subprocess.Popen([sys.executable, "-c", KERNEL, *args], env=_env(tmp_path), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    results = []
    for proc in procs:
        # communicate() returns only once every copy of the pipes is closed: a server that kept
        # the kernel's stdout or stderr would hold it here until the timeout.
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append((json.loads(out.strip().splitlines()[-1]), err))
    return results


def test_two_kernels_starting_at_once_share_one_server_that_outlives_them(shared, tmp_path):
    (a, err_a), (b, err_b) = _kernels(tmp_path, 2)
    assert a == b and a["service"].startswith("local-")
    said = sorted("started in the background" if "started in the background" in e else
                  "already running" if "already running" in e else e for e in (err_a, err_b))
    assert said == ["already running", "started in the background"]
    for err in (err_a, err_b):  # one line that says where it runs and how to stop it
        line = next(ln for ln in err.splitlines() if "embedded local server" in ln)
        assert a["url"] in line and str(shared) in line and "`shakelab server stop`" in line
    pids = _serve_processes(shared)
    assert len(pids) == 1
    info = daemon.find(shared)  # both kernels have exited; the server still answers
    assert (info.url, info.pid, info.server_id) == (a["url"], pids[0], a["service"]) and info.is_serve
    assert info.record["idle_timeout"] == daemon.DEFAULT_IDLE_TIMEOUT
    assert info.token not in err_a + err_b + (shared / "server.log").read_text()
    if Path(f"/proc/{info.pid}/fd").is_dir():  # Linux: its standard streams are /dev/null and the log
        fds = [os.readlink(f"/proc/{info.pid}/fd/{fd}") for fd in (0, 1, 2)]
        assert fds == [os.devnull, str(shared / "server.log"), str(shared / "server.log")]
    assert list((tmp_path / "kernel-tmp").iterdir()) == []  # no kernel left anything in its temp dir


def test_a_detection_is_paid_once_across_kernels_restarts_and_ports(shared, tmp_path, wav):
    (a, _), = _kernels(tmp_path, 1, str(wav))
    (b, err_b), = _kernels(tmp_path, 1, str(wav))  # another kernel: the ledger finds the job
    assert a["status"] == "completed" and b == a and "already running" in err_b
    assert daemon.stop(shared)[1] == a["url"]
    port = urlsplit(a["url"]).port
    with socket.socket() as blocker:  # the port is taken now: the next start takes another
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        (c, err_c), = _kernels(tmp_path, 1, str(wav))
    assert "started in the background" in err_c
    assert c["url"] != a["url"] and c["service"] == a["service"] and c["job"] == a["job"]
    info = daemon.find(shared)
    usage = requests.get(f"{info.url}/usage", headers={"Authorization": f"Bearer {info.token}"}, timeout=30).json()
    assert sum(m["totalJobs"] for m in usage["usage"]) == 1  # one job, billed once


def test_server_cli_start_status_logs_stop(shared):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "shakelab.cli", "server", *args], capture_output=True,
                              text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})

    started = cli("start", "--idle-timeout", "0")
    assert started.returncode == 0, started.stderr
    assert "started in the background" in started.stdout and "stop it with `shakelab server stop`" in started.stdout
    info = daemon.find(shared)
    status = cli("status")
    assert status.returncode == 0
    assert f"running at {info.url}" in status.stdout and f"pid        {info.pid}" in status.stdout
    assert info.server_id in status.stdout and "idle stop  never" in status.stdout
    logs = cli("logs", "-n", "5")
    assert logs.returncode == 0 and f"listening on {info.url}" in logs.stdout
    again = cli("start")
    assert "already running" in again.stdout and _serve_processes(shared) == [info.pid]
    stopped = cli("stop")
    assert stopped.returncode == 0 and f"stopped (pid {info.pid}, {info.url})" in stopped.stdout
    assert _serve_processes(shared) == [] and read_holder(shared) is None
    assert not (shared / "server.json").exists()
    status = cli("status")
    assert status.returncode == 3 and "not running" in status.stdout
    assert cli("stop").stdout.strip() == f"shakelab local server: not running (data dir {shared})"
    assert "shakelab server stopped" in cli("logs").stdout
    for out in (started, status, logs, again, stopped):
        assert info.token not in out.stdout + out.stderr


def test_idle_shutdown_waits_for_the_running_job(shared, wav):
    from shakelab.client import Client

    info, started = daemon.ensure(shared, idle_timeout=1, test_hooks=True)  # it posts /_faults
    assert started and info.record["idle_timeout"] == 1
    client = Client(info.token, base_url=info.url, service=info.server_id)
    requests.post(f"{info.url}/_faults", json={"processing_delay": 3}, timeout=30,
                  headers={"Authorization": f"Bearer {info.token}"}).raise_for_status()
    (job,) = client.submit(wav, ["music_detection"], wait=False, progress=False)
    client.close()
    # From here on nobody sends a request: the job keeps the server up, then 1 s idle stops it.
    deadline = time.monotonic() + 180
    while read_holder(shared) is not None:
        assert time.monotonic() < deadline, daemon.tail_log(shared)
        time.sleep(0.1)
    assert _gone(shared)
    with sqlite3.connect(f"file:{shared / 'state.sqlite'}?mode=ro", uri=True) as db:
        (status,) = db.execute("SELECT status FROM jobs WHERE id=?", (job.id,)).fetchone()
    assert status == "completed"  # it did not stop in the middle of the job
    assert "shakelab server idle for 1 s: stopped" in daemon.tail_log(shared)


def test_stop_never_signals_a_server_inside_another_program(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "shared")
    with LocalServer(tmp_path / "private", workers=1) as srv:  # like a kernel's private server
        info, started = daemon.ensure(tmp_path / "private")    # found and shared, not replaced
        assert not started and info.url == srv.base_url and info.server_id == srv.server_id
        assert not info.is_serve and f"runs inside process {os.getpid()}" in info.describe(False)
        with pytest.raises(ShakelabError, match=r"not a `shakelab serve`.*restart that kernel"):
            daemon.stop(tmp_path / "private", timeout=0.5)
        assert srv.running
    assert daemon.stop(tmp_path / "private") is None


def test_settings_name_the_variable_and_the_value(monkeypatch):
    import shakelab

    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "both")
    with pytest.raises(ValueError, match="SHAKELAB_LOCAL_SERVER must be 'shared' or 'private', not 'both'"):
        shakelab.connect(ledger=None)
    monkeypatch.setenv("SHAKELAB_IDLE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"SHAKELAB_IDLE_TIMEOUT must be a number of seconds >= 0.*'soon'"):
        daemon.idle_timeout_setting()
    monkeypatch.setenv("SHAKELAB_IDLE_TIMEOUT", "90")
    assert daemon.idle_timeout_setting() == 90.0
    with pytest.raises(ValueError, match=r"`idle_timeout` must be .* not -1"):
        daemon.ensure("/nonexistent-shakelab", idle_timeout=-1)
    with pytest.raises(ValueError, match=r"`port` must be an integer 0-65535, not 70000"):
        daemon.ensure("/nonexistent-shakelab", port=70000)
