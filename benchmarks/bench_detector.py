"""Music detector benchmark: speed (x real time, one core) and quality per condition.

Prints figures, never passes or fails on them. Side by side in the same run: the CNN with the
background-music cue (the local server's detector when the weights are installed), the CNN
alone, and the feature-based detector (``shakelab.server.detectors.FeatureDetector``, the
fallback) when that module is present.

Speed: ``data/demo.flac`` tiled to ``--minutes`` of audio, decoded once; "load included"
times a cold model load (``.npz`` read + batch-norm folding) plus detection, "load excluded"
the detection alone with the model already in memory. BLAS is pinned to one thread.

Quality: the development set of :mod:`tools.devset` (built into ``--devset`` when missing;
needs espeak-ng, fluidsynth and timgm6mb-soundfont), each detector writing its native step
(20 ms for the CNN, 0.5 s for the feature detector) as windows, scored by
:func:`shakelab.evaluation.evaluate_dirs`: frame (10 ms) and 10-s window precision, recall,
F1 and false-positive rate per condition.

    python benchmarks/bench_detector.py [--minutes 5] [--devset out/devset] [--no-quality]

Broadcast split (``--broadcast``, :func:`tools.devset.build` with ``split="broadcast"``):
the fused detector scored leave-one-source-out (``tools/train_bgm.py``: each clip by a decision
fitted without its speech source, music source and noise bed), beside the shipped decision
(fitted on all clips: in-sample, for reference), the CNN alone and the feature-based detector
(not fitted on this split), per condition and, for the LOSO column, per speech source, music
source, chain and bed. Every column is computed as the server computes it (every 20 ms step,
energy gate, the HMM for the fused decision, the 1-s mean for the CNN alone, the CNN at the
server's patch hop). The CNN's outputs are cached beside the set (``<set>.frames.npz``).

Targets (issue 16, leave-one-source-out): speech-only false positives <= 3 %, noise <= 3 %,
music alone >= 97 %, speech over music >= 90 % at -12 dB and >= 80 % at -20 dB, >= 50x real
time on one core (model load included).
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shakelab import audio, weights  # noqa: E402
from shakelab.server import cnn, detectors, processing  # noqa: E402


def feature_detector():
    try:
        from shakelab.server.detectors import FeatureDetector

        return FeatureDetector()
    except Exception as exc:  # the fallback detector may not exist in this checkout
        print(f"(feature-based detector unavailable: {exc})")
        return None


def speed(minutes: float) -> None:
    y, sr = audio.load(ROOT / "data" / "demo.flac", sr=16000)
    y = np.tile(y, int(np.ceil(minutes * 60 * sr / len(y))))[:int(minutes * 60 * sr)]
    secs = len(y) / sr
    print(f"speed on {secs / 60:.1f} min of audio (16 kHz mono, decoded beforehand), one BLAS thread")
    processing.detect_music(y[:sr * 5], sr, detector="cnn")   # warm imports (scipy, soxr)
    rows = []

    def timed(fn):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    hop_ms = cnn.PATCH_HOP * cnn.PRED_S * 1000
    for label, kw in ((f"CNN + cue (hop {hop_ms:.0f} ms, server default)", {}),
                      ("CNN + cue, every patch (hop 20 ms)", {"hop": 1}),
                      (f"CNN alone (hop {hop_ms:.0f} ms)", {"cue": False})):
        def cold(kw=kw):
            cnn._MODEL = None                       # cold load: .npz read + folding
            processing.detect_music(y, sr, detector=cnn.CNNDetector(**kw))  # the server's pipeline
        incl = timed(cold)
        excl = timed(lambda kw=kw: processing.detect_music(y, sr, detector=cnn.CNNDetector(**kw)))
        rows.append((label, incl, excl))

    def load():
        cnn._MODEL = None
        cnn.load_model()
    load_t = timed(load)
    det = feature_detector()
    if det is not None:
        t = timed(lambda: det.music_probability(y, sr))
        rows.append(("feature-based detector", t, t))
    print("  x real time = audio seconds / CPU seconds of this process (one thread: one core);"
          " wall-clock figure in brackets (the machine is shared)")
    print(f"  {'detector':40s} {'load included':>20s} {'load excluded':>20s}")
    for label, (wi, ci), (we, ce) in rows:
        print(f"  {label:40s} {secs / ci:9.1f} [{secs / wi:6.1f}]  {secs / ce:9.1f} [{secs / we:6.1f}]")
    print(f"  model load alone: {load_t[1] * 1000:.0f} ms CPU [{load_t[0] * 1000:.0f} ms wall]")


def write_estimates(devset: Path, out: Path, how: str) -> float:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    det = feature_detector() if how == "features" else None
    total = busy = 0.0
    for wav in sorted(devset.glob("*.wav")):
        y, sr = sf.read(str(wav), dtype="float32")
        dur = len(y) / sr
        t0 = time.process_time()
        if how == "features":
            hop, p = det.music_probability(y, sr)
            w = detectors.windows(hop, p, dur, window=hop)
        else:
            step, p = cnn.music_probability(y, sr, cue=(how == "cnn+cue"))
            w = detectors.windows(step, p, dur, window=step)
        busy += time.process_time() - t0
        total += dur
        (out / f"{wav.stem}.json").write_text(json.dumps(w))
    return total / busy


def quality(devset: Path) -> None:
    from tools import devset as ds
    from shakelab.evaluation import evaluate_dirs

    if not (devset / "manifest.csv").is_file():
        print(f"building the development set into {devset} ...")
        ds.build(devset)
    hows = ["cnn+cue", "cnn"] + (["features"] if feature_detector() is not None else [])
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for how in hows:
            xrt = write_estimates(devset, Path(tmp) / how, how)
            tables[how] = evaluate_dirs(devset, Path(tmp) / how, threshold=0.5)  # every frame, with its probability
            print(f"  {how}: {xrt:.0f}x real time (CPU) over the dev set")
    first = tables[hows[0]]
    print(f"\nquality on {devset} ({first.loc['all', 'seconds'] / 60:.1f} min); "
          "music conditions: recall (F1), others: false-positive rate; frame = 10 ms, window = 10 s")
    head = f"  {'condition':18s}" + "".join(f" {h + ' frame':>17s} {h + ' window':>17s}" for h in hows)
    print(head)
    for cond in first.index:
        line = f"  {cond:18s}"
        for h in hows:
            r = tables[h].loc[cond]
            for lvl in ("frame", "window"):
                if cond == "all":
                    cell = f"F1 {r[lvl + '_f1']:.3f}"
                elif np.isnan(r[lvl + "_recall"]):
                    cell = f"FPR {r[lvl + '_fpr']:.3f}"
                else:
                    cell = f"R {r[lvl + '_recall']:.3f} (F1 {r[lvl + '_f1']:.2f})"
                line += f" {cell:>17s}"
        print(line)
    t = tables[hows[0]]
    print(f"\n  dev split, CNN + cue: frame F1 {t.loc['all', 'frame_f1']:.3f}")


def broadcast(devset: Path) -> None:
    """Per-condition and leave-one-source-out tables on the broadcast split."""
    from tools import devset as ds
    from shakelab.server import bgm

    from tools import train_bgm

    if not (devset / "manifest.csv").is_file():
        print(f"building the broadcast split into {devset} ...")
        ds.build(devset, split="broadcast")
    table = train_bgm.frame_table(devset)          # CNN outputs, cached beside the set
    t0 = time.process_time()
    loso = [train_bgm.track(r, p) for r, p in zip(table, train_bgm.loso_params(table), strict=True)]
    fit_s = time.process_time() - t0
    shipped = [train_bgm.track(r, bgm.params()) for r in table]
    alone = [train_bgm.track(r, None, hmm=False) for r in table]
    cols = {"fused, LOSO": train_bgm.score(table, loso),
            "fused, shipped (fitted on all)": train_bgm.score(table, shipped),
            "CNN alone": train_bgm.score(table, alone)}
    det = feature_detector()
    if det is not None:
        feats = _feature_tracks(devset, table, det)
        cols["feature-based"] = train_bgm.score(table, feats, step=0.5)
    minutes = sum(v[2] for v in cols["CNN alone"].values()) / 60
    print(f"\nbroadcast split {devset} ({minutes:.0f} min, {len(table)} clips; {fit_s:.0f} s CPU for the "
          "leave-one-source-out fits): share of time called music, 10 ms / 10-s windows")
    print("  (music conditions: recall; others: false-positive rate; windows by the server's rule, "
          "shakelab.server.decision: best 2-s mean >= 0.5)")
    print(f"  {'condition':18s}" + "".join(f" {h:>30s}" for h in cols))
    for g in cols["CNN alone"]:
        print(f"  {g:18s}" + "".join(f" {c[g][0]:>21.3f} / {c[g][1]:.3f}" for c in cols.values()))
    for by in ("speech", "music", "chain", "bed"):
        sub = {}
        for cond in ("speech", "speech_bed", "speech_music_-12", "speech_music_-20", "music"):
            rows = [(r, p) for r, p in zip(table, loso, strict=True) if r["condition"] == cond and r[by]]
            if rows:
                sub[cond] = train_bgm.score([r for r, _ in rows], [p for _, p in rows], by=by)
        groups = sorted({g for v in sub.values() for g in v})
        print(f"\n  fused, LOSO, 10 ms, by {by}:" + "".join(f" {c:>16s}" for c in sub))
        for g in groups:
            print(f"    {g:14s}" + "".join(f" {sub[c][g][0]:>16.3f}" if g in sub[c] else f" {'':>16s}" for c in sub))
    t = cols["fused, LOSO"]
    checks = [("speech-only FP", t["speech"][0], "<=", 0.03), ("noise FP", t["noise"][0], "<=", 0.03),
              ("music alone", t["music"][0], ">=", 0.97),
              ("speech over music -12 dB", t["speech_music_-12"][0], ">=", 0.90),
              ("speech over music -20 dB", t["speech_music_-20"][0], ">=", 0.80)]
    print("\ntargets (issue 16), fused detector, leave-one-source-out, 10 ms:")
    for name, v, op, goal in checks:
        ok = v <= goal if op == "<=" else v >= goal
        print(f"  {name:26s} {v:.3f} ({op} {goal:.2f}) {'met' if ok else 'NOT met'}")


def _feature_tracks(devset: Path, table: list[dict], det) -> list[np.ndarray]:
    import soundfile as sf

    cache = devset.parent / f"{devset.name}.features.npz"
    key = str(sorted((r["name"], (devset / f"{r['name']}.wav").stat().st_mtime_ns) for r in table))
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return [z[f"t{i}"] for i in range(len(table))]
    out = []
    for r in table:
        y, sr = sf.read(str(devset / f"{r['name']}.wav"), dtype="float32")
        out.append(det.music_probability(y, sr)[1])
    np.savez(cache, key=np.array(key), **{f"t{i}": t for i, t in enumerate(out)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--devset", type=Path, default=ROOT / "out" / "devset")
    p.add_argument("--broadcast", type=Path, default=ROOT / "out" / "broadcast")
    p.add_argument("--no-quality", action="store_true")
    args = p.parse_args(argv)
    if not weights.available():
        print("CNN weights not installed: run `shakelab models fetch` (make setup); nothing to benchmark")
        return 0
    speed(args.minutes)
    if not args.no_quality:
        try:
            quality(args.devset)
            broadcast(args.broadcast)
        except RuntimeError as exc:       # espeak-ng / fluidsynth / soundfont / Debian sources missing
            print(f"quality skipped: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
