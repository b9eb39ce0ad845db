"""Benchmark: plot_detection on a 1-hour 44.1 kHz mono 16-bit WAV, side by side in one run.

Three contenders, each in its own subprocess (so peak RSS is its own):

- floor: a bare streamed read of the file with soundfile, in blocks (float32, and int16);
- shakelab: ``plot_detection(path, segments, threshold=0.5)`` + ``savefig`` PNG;
- librosa: ``librosa.load(path)`` (its default 22.05 kHz, as a notebook user writes it)
  + ``librosa.display.waveshow`` + ``savefig`` PNG.

Wall time is measured inside each child after its imports (a notebook has them loaded
already); the child's start-up including imports is printed too. Peak RSS is the child's
``ru_maxrss``. The file is read once before timing so every contender starts from a warm
page cache. Prints figures and ratios; never passes or fails on time.

Usage: ``python benchmarks/bench_plot.py [--minutes 60] [--repeat 3] [--skip-librosa]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SR = 44100


def make_wav(path: Path, minutes: float) -> None:
    """Alternate 5-minute sections of noisy 'speech' and tonal 'music', written in blocks."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    total = int(minutes * 60 * SR)
    block = SR * 10
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / SR
            y = 0.05 * rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
            if int(t[0] // 300) % 2 == 1:
                y += 0.3 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 330 * t)
            f.write(y.astype(np.float32))


def make_segments(minutes: float) -> list[dict]:
    out = []
    for i in range(int(minutes * 6)):
        s = i * 10.0
        music = int(s // 300) % 2 == 1
        conf = 0.85 + 0.1 * ((i * 7) % 3) / 2 if music else 0.05 + 0.1 * ((i * 5) % 4) / 3
        out.append({"start_time": s, "end_time": s + 10.0, "confidence": round(conf, 3)})
    return out


# --------------------------------------------------------------------------- children
def child(kind: str, wav: str, segs: str, png: str) -> None:
    import resource

    import numpy as np  # noqa: F401
    import soundfile as sf

    if kind in ("shakelab", "librosa"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    if kind == "shakelab":
        from shakelab.plot import plot_detection
    if kind == "librosa":
        import librosa
        import librosa.display
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if kind.startswith("floor"):
        dtype = "int16" if kind == "floor-int16" else "float32"
        n = 0
        for block in sf.blocks(wav, blocksize=1 << 18, dtype=dtype):
            n += len(block)
    elif kind == "shakelab":
        segments = json.loads(Path(segs).read_text())
        fig, ax = plt.subplots(figsize=(12, 3), layout="constrained")
        plot_detection(wav, segments, threshold=0.5, ax=ax)
        fig.savefig(png, dpi=100)
    elif kind == "librosa":
        y, sr = librosa.load(wav)
        fig, ax = plt.subplots(figsize=(12, 3), layout="constrained")
        librosa.display.waveshow(y, sr=sr, ax=ax)
        fig.savefig(png, dpi=100)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak, "rss_after_imports_mb": rss_imports}))


def run(kind: str, wav: Path, segs: Path, png: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(wav), str(segs), str(png)],
                         capture_output=True, text=True, check=False)
    total = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = total
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the fast contenders (median)")
    ap.add_argument("--skip-librosa", action="store_true")
    ap.add_argument("--keep", help="directory to keep the PNGs in")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "WAV", "SEGS", "PNG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    with tempfile.TemporaryDirectory(prefix="bench_plot_") as tmp:
        tmp = Path(tmp)
        wav, segs = tmp / "hour.wav", tmp / "segments.json"
        t0 = time.perf_counter()
        make_wav(wav, args.minutes)
        segs.write_text(json.dumps(make_segments(args.minutes)))
        print(f"file: {args.minutes:g} min, 44.1 kHz mono PCM_16, {wav.stat().st_size / 1e6:.0f} MB "
              f"(generated in {time.perf_counter() - t0:.1f} s); cores: {os.cpu_count()}, "
              f"load avg: {os.getloadavg()[0]:.2f}")
        run("floor-float32", wav, segs, tmp / "x.png")  # warm the page cache
        kinds = ["floor-float32", "floor-int16", "shakelab"]
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        for _ in range(max(1, args.repeat)):
            for k in kinds:
                results[k].append(run(k, wav, segs, tmp / f"{k}.png"))
        if not args.skip_librosa:
            results["librosa"] = [run("librosa", wav, segs, tmp / "librosa.png")]

        def med(k: str, field: str) -> float:
            vals = sorted(r[field] for r in results[k])
            return vals[len(vals) // 2]

        print(f"{'contender':<34}{'wall s':>8}{'peak RSS MB':>13}{'RSS imports MB':>16}{'process s':>11}")
        names = {"floor-float32": "floor: streamed read (float32)",
                 "floor-int16": "floor: streamed read (int16)",
                 "shakelab": "shakelab plot_detection + PNG",
                 "librosa": "librosa load + waveshow + PNG"}
        for k in results:
            print(f"{names[k]:<34}{med(k, 'wall_s'):>8.2f}{med(k, 'peak_rss_mb'):>13.0f}"
                  f"{med(k, 'rss_after_imports_mb'):>16.0f}{med(k, 'process_s'):>11.2f}")
        ours = med("shakelab", "wall_s")
        for floor in ("floor-float32", "floor-int16"):
            print(f"ratio shakelab / {names[floor]}: {ours / med(floor, 'wall_s'):.2f}x wall")
        if "librosa" in results:
            print(f"ratio librosa / shakelab: {med('librosa', 'wall_s') / ours:.1f}x wall, "
                  f"{med('librosa', 'peak_rss_mb') / med('shakelab', 'peak_rss_mb'):.1f}x peak RSS")
        print(f"targets: shakelab <= 2x the float32 floor -> "
              f"{'met' if ours <= 2 * med('floor-float32', 'wall_s') else 'NOT met'}; "
              f"peak RSS <= 200 MB -> {'met' if med('shakelab', 'peak_rss_mb') <= 200 else 'NOT met'}")
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for k in ("shakelab", "librosa"):
                if (tmp / f"{k}.png").exists():
                    (keep / f"{k}.png").write_bytes((tmp / f"{k}.png").read_bytes())


if __name__ == "__main__":
    main()
