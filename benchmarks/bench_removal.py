"""Quality and speed of ``music_removal`` and ``dialogue`` (``make bench``).

Quality on the music-removal development set (:mod:`tools.removalset`: 12 broadcast-like
programmes of 60 s with their speech, music and noise stems, music at -6/-12/-20 dB under
speech: the 6 ``base`` ones, 2 per level, and 6 ``extra`` ones at -6 dB from other
sources; the ``-6 base`` column is the -6 dB figure on the base two alone), on whole
recordings and on 10-s and 20-s slices cut and spliced back as the smart-mute client does.
Every model runs through ``shakelab.server.processing.run_model`` (the server's code path).
Side by side in the same run:

- **do nothing**: the mixture itself;
- **REPET-SIM**: today's ``vocals`` used as a music remover;
- **oracle**: the ideal ratio mask from the true stems (the ceiling of any mask).

Per row: level change of the speech-only, music-only and noise-only stretches (dB, output
minus input) and the SI-SDR over speech-over-music stretches against the target
(``speech + noise`` for music_removal, ``speech`` for dialogue) at each music level.

Speed: x real time and peak RSS of both models on a 10-minute stereo 44.1 kHz FLAC (the
recording of ``bench_models.py``), each in a fresh subprocess. Figures only, never pass/fail.

``--set DIR`` reuses a built set; ``--no-slices`` and ``--no-speed`` shorten a run.

Last measured (SI-SDR gain over the mixture, whole / 10-s / 20-s slices, with the
five-network fused decision): ``music_removal`` on the base set +2.8/+2.6/+2.7 dB at -6 dB,
+3.5/+2.9/+3.3 at -12, +1.6/+0.1/+1.0 at -20; on all 8 programmes at -6 dB +0.8/+0.3/+0.6 (was
+0.2/+0.1/-0.0 before the second look heard the bed model, -2.4 before the second look);
``dialogue`` +2.8/+2.7/+2.8, +3.5/+3.0/+3.3, +1.9/+0.8/+1.8, all at -6 dB +0.9/+0.6/+0.7.
Music-only stretches 29.6 dB quieter (25.6 on 10-s slices), speech-only 0.0 dB, effects-only
27 dB quieter with ``dialogue``. Speed 9.5x (music_removal) and 9.2x (dialogue) real time,
1.04 GB peak RSS. The table gives means; the per-programme figures are ``removalset.score``'s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _run_model(model: str, y: np.ndarray, sr: int, tmp: Path) -> np.ndarray:
    import soundfile as sf

    from shakelab.server import processing

    src = tmp / "in.wav"
    sf.write(str(src), y, sr, subtype="FLOAT")
    (out,) = processing.run_model(model, src, tmp / "out", "wav")
    return sf.read(str(out), dtype="float32")[0]


def _sliced(fn, y: np.ndarray, sr: int, seconds: float | None) -> np.ndarray:
    """``fn`` on the whole of ``y``, or on each ``seconds`` slice of it, spliced back."""
    if seconds is None:
        return fn(y)
    out = np.empty_like(y)
    step = int(seconds * sr)
    for a in range(0, len(y), step):
        out[a:a + step] = fn(y[a:a + step])
    return out


def _oracle(prog: dict, model: str) -> np.ndarray:
    import librosa

    from shakelab.server import stems

    n_fft, hop = stems._fft_sizes(prog["sr"])
    target = prog["speech"] + prog["noise"] if model == "music_removal" else prog["speech"]
    spec = lambda x: librosa.stft(x, n_fft=n_fft, hop_length=hop)  # noqa: E731
    T, R, X = np.abs(spec(target)), np.abs(spec(prog["mix"] - target)), spec(prog["mix"])
    return librosa.istft(X * np.sqrt(T ** 2 / (T ** 2 + R ** 2 + 1e-12)), hop_length=hop, n_fft=n_fft,
                         length=len(prog["mix"]))


def quality(progs: list[dict], slices: bool) -> None:
    from tools import removalset

    modes = [("whole", None)] + ([("10-s slices", 10.0), ("20-s slices", 20.0)] if slices else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        outputs = {}   # (method, mode) -> [output per programme]
        for prog in progs:
            sr = prog["sr"]
            outputs.setdefault(("do nothing", "whole"), []).append(prog["mix"])
            for model in ("music_removal", "dialogue"):
                outputs.setdefault((f"oracle mask ({model} target)", "whole"), []).append(_oracle(prog, model))
            for mode, seconds in modes:
                for method, model in (("REPET-SIM (vocals)", "vocals"), ("music_removal", "music_removal"),
                                      ("dialogue", "dialogue")):
                    fn = lambda y, m=model, rate=sr: _run_model(m, y, rate, tmp)  # noqa: E731
                    outputs.setdefault((method, mode), []).append(_sliced(fn, prog["mix"], sr, seconds))
            print(f"  scored {prog['name']}", flush=True)
    snrs = removalset.SNRS
    for target in ("music_removal", "dialogue"):
        what = "speech + noise" if target == "music_removal" else "speech"
        print(f"\ntarget: {what} (as `{target}` should give); SI-SDR dB over speech-over-music stretches")
        head = f"{'method':36s} {'input':12s} {'speech dB':>9s} {'music dB':>9s} {'noise dB':>9s} " + \
            " ".join(f"{f'SI-SDR {s}':>11s}" for s in snrs) + f" {'-6 base':>8s} {'sp+noise':>9s}"
        print(head)
        for (method, mode), outs in outputs.items():
            if method.startswith("oracle") and target not in method:
                continue
            rows = [removalset.score(o, p, model=target) for o, p in zip(outs, progs, strict=True)]
            mean = lambda key, rs=rows: float(np.mean([r[key] for r in rs]))  # noqa: E731
            by = [float(np.mean([r["sisdr"] for r, p in zip(rows, progs, strict=True) if p["snr"] == s])) for s in snrs]
            base = float(np.mean([r["sisdr"] for r, p in zip(rows, progs, strict=True)
                                  if p["snr"] == -6 and p["set"] == "base"]))
            print(f"{method:36s} {mode:12s} {mean('speech_db'):9.1f} {mean('music_db'):9.1f} {mean('noise_db'):9.1f} "
                  + " ".join(f"{b:11.1f}" for b in by) + f" {base:8.1f} {mean('sisdr_noise'):9.1f}")


def speed(minutes: float) -> None:
    from bench_models import CHILD, make_recording, run_child

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "ten_minutes.flac"
        duration = make_recording(src, minutes)
        print(f"\nspeed: {duration / 60:.1f} min, stereo, 44100 Hz FLAC")
        print(f"{'model':24s} {'wall s':>8s} {'x real time':>12s} {'peak RSS MB':>12s}")
        for model in ("vocals", "music_removal", "dialogue"):
            out = tmp / f"out_{model}"
            out.mkdir()
            r = run_child(CHILD, model, str(src), str(out), "wav", "")
            print(f"{model:24s} {r['seconds']:8.1f} {duration / r['seconds']:12.1f} {r['rss_mb']:12.0f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", help="a built set (python -m tools.removalset DIR); default: build one")
    ap.add_argument("--no-slices", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args(argv)
    from tools import removalset

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.set or tmp
        if not args.set:
            removalset.build(directory)
        progs = removalset.load(directory)
        print(f"development set: {len(progs)} programmes of {removalset.DURATION:.0f} s "
              f"(music at {', '.join(map(str, removalset.SNRS))} dB under speech)")
        quality(progs, slices=not args.no_slices)
    if not args.no_speed:
        speed(args.minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
