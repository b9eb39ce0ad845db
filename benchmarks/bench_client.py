"""Client figures: peak memory of uploading a large file, and segments_frame speed.

1. Peak RSS of uploading one file (default 1 GiB, a valid WAV) to a local server with
   ``Client.upload`` (streamed multipart) vs plain ``requests.post(files=...)``, each in its own
   fresh subprocess, as the increase of the process's peak RSS (``resource.getrusage``
   ``ru_maxrss``) over its baseline after imports, and, as a cross-check, the largest RSS
   sampled every 5 ms with psutil minus the RSS before the upload. Target for ``Client.upload``: <= 64 MiB above
   baseline whatever the size.
2. ``segments_frame`` on a 1,000,000-segment detection payload vs
   ``pandas.DataFrame.from_records`` on the same list (best of 3). Target: <= 2x.

Prints figures and ratios from the same run; never passes or fails on time or memory.

Usage: python benchmarks/bench_client.py [--size-mb 1024] [--segments 1000000] [--skip-upload]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading
import psutil, requests
import requests_toolbelt, tqdm.auto   # imported up front so that imports do not count as upload memory
from shakelab.client import Client

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB

proc = psutil.Process()
sampled = [proc.memory_info().rss / 2**20]
stop = threading.Event()

def sample():   # a second, independent measure: RSS sampled every 5 ms
    while not stop.wait(0.005):
        sampled.append(proc.memory_info().rss / 2**20)

mode, path, base_url, token = sys.argv[1:5]
baseline = peak_mib()
rss0 = sampled[0]
threading.Thread(target=sample, daemon=True).start()
if mode == "client":
    asset = Client(token=token, base_url=base_url, timeout=600).upload(path, progress=False)
    asset_id = asset.id
else:
    with open(path, "rb") as f:
        r = requests.post(base_url + "/upload", files={"file": ("big.wav", f, "audio/wav")},
                          headers={"Authorization": "Bearer " + token}, timeout=600)
    r.raise_for_status()
    asset_id = r.json()["id"]
stop.set()
print(json.dumps({"baseline_mib": baseline, "peak_mib": peak_mib(), "sampled_delta_mib": max(sampled) - rss0,
                  "asset": asset_id}))
"""


def write_big_wav(path: Path, size_bytes: int, sr: int = 44100, channels: int = 2) -> None:
    """A valid 16-bit PCM WAV of about ``size_bytes`` (silence, written sparse: fast, no RAM)."""
    data_len = (size_bytes - 44) // (2 * channels) * (2 * channels)
    header = b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, sr, sr * channels * 2, channels * 2, 16) + b"data" + struct.pack("<I", data_len)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(44 + data_len)


def run_child(mode: str, path: Path, base_url: str, token: str) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), base_url, token],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} upload failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    return result


def bench_upload(size_mb: int) -> None:
    from shakelab.server import LocalServer

    print(f"upload of a {size_mb} MiB WAV to a local server, each in a fresh subprocess")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.wav"
        write_big_wav(big, size_mb * 1024 * 1024)
        with LocalServer(Path(tmp) / "data", token="bench-token-0123456789",
                         max_upload_bytes=max(2 * 1024**3, big.stat().st_size + 1)) as srv:
            rows = {}
            for mode in ("client", "requests"):
                rows[mode] = r = run_child(mode, big, srv.base_url, srv.token)
                r["delta"] = r["peak_mib"] - r["baseline_mib"]
                label = "Client.upload (streamed)" if mode == "client" else "requests files= (baseline)"
                print(f"  {label:<28} baseline {r['baseline_mib']:7.1f} MiB  peak {r['peak_mib']:7.1f} MiB  "
                      f"above baseline {r['delta']:7.1f} MiB  (sampled RSS: +{r['sampled_delta_mib']:.1f} MiB; "
                      f"{r['seconds']:.1f} s)")
            c, b = rows["client"]["delta"], rows["requests"]["delta"]
            cs, bs = rows["client"]["sampled_delta_mib"], rows["requests"]["sampled_delta_mib"]
            print(f"  above baseline (ru_maxrss): Client.upload {c:.1f} MiB vs requests {b:.1f} MiB; "
                  f"(sampled RSS): {cs:.1f} vs {bs:.1f} MiB")
            print(f"  ratio requests/Client (sampled RSS) = {bs / max(cs, 1.0):.0f}x; memory per file size: "
                  f"Client {max(c, cs) / size_mb:.3f}, requests {max(b, bs) / size_mb:.2f}; target for Client "
                  f"<= 64 MiB above baseline: {'met' if max(c, cs) <= 64 else 'NOT met'}")


def bench_segments(n: int) -> None:
    import pandas as pd

    from shakelab.frames import segments_frame

    print(f"segments_frame on {n:,} segments vs pandas.DataFrame.from_records (best of 3)")
    records = [{"start_time": i * 10.0, "end_time": i * 10.0 + 10.0, "confidence": (i % 100) / 100.0}
               for i in range(n)]

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    ours = best(lambda: segments_frame(records, job="job-1", source="a.wav"))
    base = best(lambda: pd.DataFrame.from_records(records))
    print(f"  segments_frame            {ours:7.3f} s  (typed, validated, 6 columns)")
    print(f"  DataFrame.from_records    {base:7.3f} s  (3 untyped columns)")
    verdict = "met" if ours <= 2 * base else "NOT met"
    print(f"  ratio segments_frame/from_records = {ours / base:.2f}x (target <= 2x: {verdict})")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the uploaded file (MiB)")
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--skip-upload", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_upload:
        bench_upload(args.size_mb)
    bench_segments(args.segments)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
