"""GET /job/{id} latency of the local server: idle vs. while 4 jobs are processing.

Starts a LocalServer with 4 workers on a temp data dir, measures sequential GET /job/{id}
round trips (one keep-alive session) first with nothing running, then while four stem jobs
run on a generated recording, once with models in worker processes (the default) and once in
worker threads, and prints p50/p99 with the loaded/idle ratios.
Prints figures only; never passes or fails on time.

Usage: python benchmarks/bench_server.py [--seconds 60] [--samples 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf


def make_recording(path: Path, seconds: float, sr: int = 44100) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    tone = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (110, 220, 330, 440))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.normal(0, 0.3, t.size)
    y = np.stack([tone + beat, tone - beat], axis=1).astype("float32") * 0.5
    sf.write(path, y, sr, subtype="PCM_16")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def measure(src: Path, data_dir: Path, isolation: str, samples: int, idle_too: bool) -> dict:
    """Latencies (ms) of GET /job/{id}: idle (optional) and while 4 stem jobs are processing."""
    from shakelab.server import LocalServer

    srv = LocalServer(data_dir, token="bench-token", workers=4)
    srv.isolation = isolation
    out: dict = {}
    with srv:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {srv.token}"
        with src.open("rb") as fh:
            asset = s.post(f"{srv.base_url}/upload", files={"file": ("load.wav", fh, "audio/wav")}, timeout=60).json()

        def job(model: str) -> str:
            body = {"metadata": {"name": model, "format": "wav"}, "assetId": asset["id"]}
            return s.post(f"{srv.base_url}/job", json=body, timeout=30).json()["job"]["id"]

        def timed_get(jid: str) -> tuple[float, dict]:
            t0 = time.perf_counter()
            r = s.get(f"{srv.base_url}/job/{jid}", timeout=30)
            return (time.perf_counter() - t0) * 1000, r.json()["job"]

        srv.faults.processing_delay = 3600  # a job that stays queued/processing without using the CPU
        probe_id = job("vocals")
        for _ in range(20):
            timed_get(probe_id)  # warm up
        if idle_too:
            out["idle"] = [timed_get(probe_id)[0] for _ in range(samples)]
        srv.faults.processing_delay = 0  # releases the probe job; let it finish before the loaded run
        while timed_get(probe_id)[1]["status"] not in ("completed", "failed"):
            time.sleep(0.2)

        ids = [job(m) for m in ("vocals", "instrumental", "drums", "bass")]
        loaded, wall0 = [], time.perf_counter()
        while len(loaded) < samples:
            states = [timed_get(j) for j in ids]
            if all(st["status"] in ("completed", "failed") for _, st in states):
                break
            if any(st["status"] == "processing" for _, st in states):
                loaded.extend(ms for ms, _ in states)
        while not all(timed_get(j)[1]["status"] in ("completed", "failed") for j in ids):
            time.sleep(0.5)
        out["wall"] = time.perf_counter() - wall0
        out["codes"] = [timed_get(j)[1]["statusInfo"]["code"] for j in ids]
        out["loaded"] = loaded
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the recording the jobs process")
    ap.add_argument("--samples", type=int, default=300, help="GET requests per condition (at most)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "load.wav"
        make_recording(src, args.seconds)
        runs = {iso: measure(src, Path(tmp) / iso, iso, args.samples, idle_too=(iso == "process"))
                for iso in ("process", "thread")}

    idle = runs["process"]["idle"]
    rows = [("idle", idle, "")]
    for iso, run in runs.items():
        if not run["loaded"]:
            print(f"{iso}: the jobs finished before any loaded sample was taken; raise --seconds")
            return 1
        rows.append((f"4 jobs, {iso}es" if iso == "process" else f"4 jobs, {iso}s", run["loaded"],
                     f"{run['wall']:.1f} s {'/'.join(sorted(set(run['codes'])))}"))
    print(f"GET /job/{{id}} latency, one keep-alive client, 4 stem jobs (vocals, instrumental, drums, bass) on a "
          f"{args.seconds:.0f}-s stereo 44.1 kHz recording, 4 workers")
    print(f"{'condition':<22}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'p50 x':>8}{'p99 x':>8}  jobs took")
    base50, base99 = percentile(idle, 50), percentile(idle, 99)
    for name, vals, note in rows:
        p50, p99 = percentile(vals, 50), percentile(vals, 99)
        print(f"{name:<22}{len(vals):>6}{p50:>9.2f}{p99:>9.2f}{statistics.fmean(vals):>9.2f}"
              f"{p50 / base50:>7.1f}x{p99 / base99:>7.1f}x  {note}")
    print("x = ratio to idle, same run. processes: the default (model child processes, niceness +5; the time"
          " includes starting them); threads: models run in the server's own worker threads.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
