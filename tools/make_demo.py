"""Build ``data/demo.flac`` (the package's ``shakelab/data/demo.flac``) and ``data/demo_labels.txt``, deterministically.

The demo recording is 44 s of mono audio at 22050 Hz made of labelled sections::

     0.0 - 10.0   speech alone          (pyannote.audio sample, MIT)
    10.0 - 22.0   music alone           (our own MIDI piece, rendered with FluidR3_GM, MIT)
    22.0 - 26.0   silence               (dither at -80 dBFS)
    26.0 - 30.0   noise                 (seeded pink noise, fan-like)
    30.0 - 44.0   speech over music     (speech at -20 dBFS, background music 6 dB lower)

Only used at build time (never at run time); needs:

- ``pip`` (downloads the wheel ``pyannote.audio==3.3.2`` with ``--no-deps`` unless
  ``--wheel`` points at it) for ``pyannote/audio/sample/sample.wav``;
- Debian ``fluidsynth`` and ``fluid-soundfont-gm`` (``/usr/share/sounds/sf2/FluidR3_GM.sf2``).

Usage::

    .venv/bin/python tools/make_demo.py            # writes data/demo.flac, data/demo_labels.txt
    .venv/bin/python tools/make_demo.py --check    # rebuild in a temp dir and compare samples

The MIDI piece is written by this script (a chord loop in A minor with drums, bass, piano
and a lead line for the music-alone section; strings, piano arpeggio and soft drums for the
background section), so its composition is ours and MIT-licensed like the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
DATA = Path(__file__).resolve().parents[1] / "data"  # data/demo.flac links into shakelab/data/
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PYANNOTE_WHEEL = "pyannote.audio==3.3.2"
SAMPLE_MEMBER = "pyannote/audio/sample/sample.wav"
SAMPLE_SHA256 = "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e"

# Sections (seconds) and the ground-truth music intervals written to demo_labels.txt.
SECTIONS = [
    (0.0, 10.0, "speech"),
    (10.0, 22.0, "music"),
    (22.0, 26.0, "silence"),
    (26.0, 30.0, "noise"),
    (30.0, 44.0, "speech+music"),
]
MUSIC_INTERVALS = [(10.0, 22.0), (30.0, 44.0)]
TOTAL = 44.0


# ----------------------------------------------------------------------------- MIDI
def varlen(n: int) -> bytes:
    """Encode ``n`` as a MIDI variable-length quantity (7 bits a byte, high bit = more)."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[int, bytes]], *, bpm: float, division: int = 480) -> None:
    """Write a format-0 Standard MIDI File from ``(tick, message bytes)`` events."""
    tempo = round(60_000_000 / bpm)
    ordered = sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80))  # note-offs first at a tick
    evs = [(0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")), *ordered]
    data = bytearray()
    last = 0
    for tick, msg in evs:
        data += varlen(tick - last) + msg
        last = tick
    data += varlen(division) + b"\xff\x2f\x00"  # one beat of tail, then end of track
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, division)
                     + b"MTrk" + struct.pack(">I", len(data)) + bytes(data))


class Score:
    """Tiny helper collecting note events in beats."""

    def __init__(self, division: int = 480):
        self.div = division
        self.events: list[tuple[int, bytes]] = []

    def program(self, ch: int, prog: int) -> None:
        self.events.append((0, bytes([0xC0 | ch, prog])))

    def volume(self, ch: int, vol: int) -> None:
        self.events.append((0, bytes([0xB0 | ch, 7, vol])))

    def note(self, ch: int, pitch: int, start: float, dur: float, vel: int) -> None:
        t0 = round(start * self.div)
        t1 = round((start + dur) * self.div)
        self.events.append((t0, bytes([0x90 | ch, pitch, vel])))
        self.events.append((t1, bytes([0x80 | ch, pitch, 0])))


# A minor loop: Am - F - C - G, one bar (4 beats) each.
CHORDS = [(57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62)]
BASS = [45, 41, 36, 43]
LEAD = [  # (beat in bar, pitch, duration) per bar, repeated with variation
    [(0, 76, 1.0), (1, 72, 0.5), (1.5, 74, 0.5), (2, 76, 1.5), (3.5, 79, 0.5)],
    [(0, 77, 1.5), (1.5, 76, 0.5), (2, 72, 1.0), (3, 69, 1.0)],
    [(0, 72, 1.0), (1, 74, 0.5), (1.5, 76, 0.5), (2, 79, 2.0)],
    [(0, 74, 1.0), (1, 71, 1.0), (2, 67, 1.0), (3, 71, 1.0)],
]


def piece_foreground(bars: int) -> Score:
    """Music-alone section: drums, fingered bass, piano chords, flute lead."""
    s = Score()
    s.program(0, 0)     # acoustic grand piano
    s.program(1, 33)    # fingered bass
    s.program(2, 73)    # flute
    for b in range(bars):
        t = 4.0 * b
        chord, bass, lead = CHORDS[b % 4], BASS[b % 4], LEAD[b % 4]
        for beat in (0, 1.5, 2, 3):  # syncopated piano comp
            for p in chord:
                s.note(0, p, t + beat, 0.45 if beat != 2 else 0.9, 72)
        for beat, dur in ((0, 1.0), (1.5, 0.5), (2, 1.0), (3, 0.5), (3.5, 0.5)):
            s.note(1, bass if beat != 3.5 else bass + 12, t + beat, dur * 0.9, 100)
        for beat, p, dur in lead:
            s.note(2, p + (0 if b < 4 else 12 * 0), t + beat, dur * 0.95, 90)
        for k in range(8):  # drums on channel 10 (index 9)
            s.note(9, 42, t + 0.5 * k, 0.1, 70 if k % 2 else 90)   # closed hi-hat
        for beat in (0, 2.5):
            s.note(9, 36, t + beat, 0.2, 110)                      # kick
        for beat in (1, 3):
            s.note(9, 38, t + beat, 0.2, 100)                      # snare
    return s


def piece_background(bars: int) -> Score:
    """Background section: string pad, piano arpeggio, soft kick and ride, bass."""
    s = Score()
    s.program(0, 48)    # string ensemble
    s.program(1, 0)     # piano
    s.program(2, 32)    # acoustic bass
    for b in range(bars):
        t = 4.0 * b
        chord, bass = CHORDS[(b + 2) % 4], BASS[(b + 2) % 4]
        for p in chord:
            s.note(0, p - 12 if p > 60 else p, t, 3.95, 70)
        arp = [chord[0], chord[1], chord[2], chord[1] + 12, chord[2] + 12, chord[1] + 12, chord[2], chord[1]]
        for k, p in enumerate(arp):
            s.note(1, p + 12, t + 0.5 * k, 0.5, 75)
        s.note(2, bass - 12, t, 1.9, 95)
        s.note(2, bass - 5, t + 2, 1.9, 90)
        for k in range(4):
            s.note(9, 51, t + k, 0.2, 60)       # ride cymbal
        s.note(9, 36, t, 0.2, 90)
        s.note(9, 36, t + 2, 0.2, 90)
    return s


def render(score: Score, path: Path, *, bpm: float, workdir: Path) -> np.ndarray:
    """Render a score with fluidsynth + FluidR3_GM to mono float32 at ``SR``."""
    mid = workdir / (path.stem + ".mid")
    write_midi(mid, score.events, bpm=bpm)
    wav = workdir / (path.stem + ".wav")
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(wav), "-T", "wav",
                    "-O", "s16", str(SOUNDFONT), str(mid)], check=True, capture_output=True)
    y, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SR, sr
    return y.mean(axis=1)


# ----------------------------------------------------------------------------- sources
def pyannote_sample(wheel: Path | None, workdir: Path) -> tuple[np.ndarray, str]:
    """Return the pyannote.audio sample speech (resampled to ``SR``) and its SHA-256."""
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir),
                        PYANNOTE_WHEEL], check=True)
        wheel = next(workdir.glob("pyannote*audio-3.3.2-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(SAMPLE_MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if SAMPLE_SHA256 and digest != SAMPLE_SHA256:
        raise SystemExit(f"sample.wav SHA-256 {digest} differs from the pinned {SAMPLE_SHA256}")
    tmp = workdir / "sample.wav"
    tmp.write_bytes(raw)
    y, sr = sf.read(tmp, dtype="float32")
    import librosa

    return librosa.resample(y, orig_sr=sr, target_sr=SR, res_type="soxr_hq").astype(np.float32), digest


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def at_db(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** ((db - rms_db(x)) / 20)).astype(np.float32)


def active_rms_db(x: np.ndarray) -> float:
    """RMS over the louder half of 50-ms frames (speech level without its pauses)."""
    n = int(0.05 * SR)
    frames = x[: len(x) // n * n].reshape(-1, n)
    e = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(np.mean(np.sort(e)[len(e) // 2:]) + 1e-12)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    return np.fft.irfft(spec, n).astype(np.float32)


def fade(x: np.ndarray, ms: float = 30.0) -> np.ndarray:
    n = min(int(ms * SR / 1000), len(x) // 2)
    w = np.ones(len(x), np.float32)
    ramp = np.linspace(0, 1, n, dtype=np.float32)
    w[:n] = ramp
    w[len(w) - n:] = ramp[::-1]
    return x * w


def build(wheel: Path | None, workdir: Path) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(20261127)
    speech, digest = pyannote_sample(wheel, workdir)
    s = lambda t: round(t * SR)  # noqa: E731
    out = np.zeros(s(TOTAL), np.float32)

    # 0-10 s: speech alone (sample 6.6-16.6 s), active level -20 dBFS.
    sp1 = speech[s(6.6):s(16.6)]
    gain = 10 ** ((-20 - active_rms_db(speech[s(6.6):])) / 20)
    out[s(0):s(10)] = fade(sp1 * gain)

    # 10-22 s: music alone (120 bpm, 6 bars = 12 s), RMS -20 dBFS.
    fg = render(piece_foreground(6), Path("foreground"), bpm=120, workdir=workdir)
    out[s(10):s(22)] = fade(at_db(fg[: s(12)], -20))

    # 22-26 s: silence (dither at -80 dBFS); 26-30 s: pink noise at -32 dBFS.
    out[s(22):s(26)] = at_db(rng.standard_normal(s(4)).astype(np.float32), -80)
    out[s(26):s(30)] = fade(at_db(pink_noise(s(4), rng), -32), 200)

    # 30-44 s: background music (96 bpm, 6 bars = 15 s, cut to 14 s) with speech (16.6-30 s of the sample)
    bg = render(piece_background(6), Path("background"), bpm=96, workdir=workdir)[: s(14)]
    sp2 = speech[s(16.6):s(30.0)] * gain
    mix = at_db(bg, -26)  # speech's active level is -20 dBFS: music 6 dB under it
    mix[s(0.4):s(0.4) + len(sp2)] += sp2
    out[s(30):s(44)] = fade(mix)

    peak = float(np.max(np.abs(out)))
    if peak > 0.99:
        out *= 0.99 / peak
    return out, digest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="path to pyannote_audio-3.3.2-py2.py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=DATA, help="output directory (default: data/)")
    ap.add_argument("--check", action="store_true", help="rebuild and compare with the committed demo.flac")
    args = ap.parse_args(argv)
    if not SOUNDFONT.is_file():
        raise SystemExit(f"{SOUNDFONT} is missing: apt-get install fluidsynth fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as tmp:
        y, digest = build(args.wheel, Path(tmp))
    print(f"pyannote sample.wav sha256 {digest}")
    if args.check:
        ref, _ = sf.read(DATA / "demo.flac", dtype="float32")
        q = np.round(y * 32767) / 32767
        diff = float(np.max(np.abs(ref - q))) if len(ref) == len(q) else float("inf")
        print(f"max abs difference with data/demo.flac: {diff:.2e}")
        return 0 if diff < 1e-3 else 1
    args.out.mkdir(parents=True, exist_ok=True)
    sf.write(args.out / "demo.flac", y, SR, subtype="PCM_16")
    (args.out / "demo_labels.txt").write_text("".join(f"{a:.6f}\t{b:.6f}\tmusic\n" for a, b in MUSIC_INTERVALS))
    print(f"wrote {args.out / 'demo.flac'} ({len(y) / SR:.1f} s, {(args.out / 'demo.flac').stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
