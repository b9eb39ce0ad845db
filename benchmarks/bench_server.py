"""GET /job/{id} latency of the local server: idle vs. while 4 jobs are processing.

Starts a LocalServer with 4 workers on a temp data dir, measures sequential GET /job/{id}
round trips (one keep-alive session) first with nothing running, then while four stem jobs
run on a generated recording, and prints p50/p99 with the loaded/idle ratio.
Prints figures only; never passes or fails on time.

Usage: python benchmarks/bench_server.py [--seconds 90] [--samples 400]
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
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=90.0, help="length of the recording the jobs process")
    ap.add_argument("--samples", type=int, default=400, help="GET requests per condition (at most)")
    args = ap.parse_args(argv)

    from shakelab.server import LocalServer

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "load.wav"
        make_recording(src, args.seconds)
        with LocalServer(Path(tmp) / "data", token="bench-token", workers=4) as srv:
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

            # idle: one finished-or-queued job, nothing processing
            srv.faults.processing_delay = 3600
            probe_id = job("vocals")
            for _ in range(20):
                timed_get(probe_id)  # warm up
            idle = [timed_get(probe_id)[0] for _ in range(args.samples)]
            srv.faults.processing_delay = 0  # releases the probe job; let it finish before the loaded run
            while timed_get(probe_id)[1]["status"] not in ("completed", "failed"):
                time.sleep(0.2)

            ids = [job(m) for m in ("vocals", "instrumental", "drums", "bass")]
            loaded, wall0 = [], time.perf_counter()
            while len(loaded) < args.samples:
                states = [timed_get(j) for j in ids]
                processing = sum(st["status"] == "processing" for _, st in states)
                if all(st["status"] in ("completed", "failed") for _, st in states):
                    break
                if processing:
                    loaded.extend(ms for ms, _ in states)
            while not all(timed_get(j)[1]["status"] in ("completed", "failed") for j in ids):
                time.sleep(0.5)
            wall = time.perf_counter() - wall0
            statuses = [timed_get(j)[1]["statusInfo"]["code"] for j in ids]

    if not loaded:
        print("the jobs finished before any loaded sample was taken; raise --seconds")
        return 1
    rows = [("idle", idle), ("4 jobs processing", loaded)]
    print(f"GET /job/{{id}} latency, {args.seconds:.0f}-s stereo 44.1 kHz recording, 4 workers, "
          f"jobs {statuses}, {wall:.1f} s for the 4 jobs")
    print(f"{'condition':<20}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'p50 ratio':>11}{'p99 ratio':>11}")
    base50, base99 = percentile(idle, 50), percentile(idle, 99)
    for name, vals in rows:
        p50, p99 = percentile(vals, 50), percentile(vals, 99)
        print(f"{name:<20}{len(vals):>6}{p50:>10.2f}{p99:>10.2f}{statistics.fmean(vals):>10.2f}"
              f"{p50 / base50:>10.1f}x{p99 / base99:>10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
