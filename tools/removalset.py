"""A development set for ``music_removal`` and ``dialogue``, with its speech, music and noise stems kept.

Each **programme** is 60 s of broadcast-like audio laid out in fixed regions (seconds):

======  =====================  ==============================================
0-8     ``speech``             speech alone (a -65 dBFS room floor)
8-18    ``music``              music alone, at full level
18-32   ``speech_music``       speech over the music, ducked to ``snr`` dB
32-40   ``noise``              effects/noise alone (bursts, rumble, hiss)
40-50   ``speech_noise``       speech over noise 15 dB under it
50-60   ``speech_music``       speech over the music again
======  =====================  ==============================================

The targets: ``music_removal`` should give ``speech + noise``, ``dialogue`` should give
``speech``. :func:`score` measures an output against the stems region by region: the level
change of each ``music``/``noise``/``speech`` region (dB, output minus input) and the SI-SDR
of each speech region against its target, beside the mixture's.

Sources: real speech from the pyannote.audio wheel and music from the arcade and pygame
wheels (``tools.devset.sources``, MIT/CC licences of their wheels), synthetic speech
from Debian ``espeak-ng``, noise from numpy; or, with ``synthetic=True``, a numpy chord loop
(:func:`synthetic_music`) instead of the wheels' music, for tests. Nothing is committed.

The first 6 programmes (the ``base`` set, 2 per level of :data:`SNRS`) are followed by
:data:`EXTRA`, 6 more at -6 dB (the ``extra`` set) so that the hardest level rests on 8
recordings, with other sources: real speech from Debian's asterisk prompts (Allison Smith
en/es, June Wallack fr, CC-BY-SA-3.0) and the pyannote sample, flite voices; music from
asterisk-moh-opsound (CC-BY-SA-3.0), asc-music (GPL-2+) and General MIDI songs rendered by
fluidsynth with the TimGM6mb soundfont (``tools.devset``'s genres). Both sets are
development data: the models were tuned looking at them.

Examples
--------
>>> from tools import removalset
>>> removalset.build("out/removalset")          # doctest: +SKIP
PosixPath('out/removalset/manifest.csv')

$ python -m tools.removalset out/removalset
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "EXTRA",
    "REGIONS",
    "SNRS",
    "build",
    "espeak",
    "load",
    "main",
    "programme",
    "score",
    "si_sdr",
    "synthetic_music",
]

SR = 16000
DURATION = 60.0
SNRS = (-6, -12, -20)
# (kind, start, end): the layout of every programme
REGIONS = (("speech", 0.0, 8.0), ("music", 8.0, 18.0), ("speech_music", 18.0, 32.0), ("noise", 32.0, 40.0),
           ("speech_noise", 40.0, 50.0), ("speech_music", 50.0, 60.0))
MARGIN = 0.5  # seconds left out at each region edge (the cross-fades)
SPEECH_DBFS, MUSIC_DBFS, NOISE_DBFS = -20.0, -18.0, -26.0
TEXTS = ("Good evening, and welcome to the programme. Tonight we look at the river towns and their history.",
         "The council met this morning to discuss the new bridge, and the vote will take place next week.",
         "Our reporter spoke to farmers at the market, who say the spring was the wettest in years.",
         "After the break we will hear from the engineers who repaired the old station clock.")
VOICES = (("en-us", "+m3"), ("en-gb", "+f2"), ("en-us", "+f4"), ("en-gb-scotland", "+m1"))
MUSIC_FILES = ("1918.mp3", "funkyrobot.mp3", "house_lo.ogg")
#: the ``extra`` programmes, all at -6 dB: (speech source, music source), the sources of :func:`_extra_sources`
EXTRA = (("asterisk-en", "moh:macroform-cold_day.wav"), ("flite:kal16", "asc:frontiers.mp3"),
         ("pyannote", "gm:jazz"), ("asterisk-fr", "gm:pop"), ("flite:slt", "moh:manolo_camp-morning_coffee.wav"),
         ("asterisk-es", "gm:piano"))


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def _active_rms(y: np.ndarray, sr: int) -> float:
    """RMS over the 50-ms blocks louder than -40 dB re the loudest (a speech level without the pauses)."""
    b = max(1, sr // 20)
    n = len(y) // b * b
    if n == 0:
        return _rms(y)
    e = np.sqrt(np.mean(y[:n].reshape(-1, b).astype(np.float64) ** 2, axis=1))
    keep = e > e.max() * 0.01
    return float(np.sqrt(np.mean(e[keep] ** 2)))


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float32)
    return y[:n] if len(y) >= n else np.tile(y, int(np.ceil(n / max(len(y), 1))))[:n]


def _envelope(n: int, sr: int, spans: list[tuple[float, float, float]], fade: float = 0.3) -> np.ndarray:
    """Gain curve: ``gain`` over each ``(start, end, gain)`` span, 0 elsewhere, raised-cosine fades."""
    g = np.zeros(n, np.float32)
    for start, end, gain in spans:
        g[int(start * sr):int(end * sr)] = gain
    k = max(1, int(fade * sr))
    win = np.hanning(2 * k + 1).astype(np.float32)
    return np.convolve(g, win / win.sum(), mode="same").astype(np.float32)


def synthetic_music(seconds: float, sr: int = SR, *, seed: int = 0) -> np.ndarray:
    """A numpy chord loop with bass, a lead line and drums (sustained notes, a beat), peak about 0.5.

    Examples
    --------
    >>> synthetic_music(2.0, 8000).shape
    (16000,)
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    beat = 60.0 / float(rng.uniform(90, 130))
    root = 110.0 * 2 ** (int(rng.integers(0, 7)) / 12)
    prog = [0, 5, 7, 3] if seed % 2 else [0, 9, 5, 7]
    y = np.zeros(n)
    bar = 4 * beat
    for k in range(int(np.ceil(seconds / bar))):
        a, b = int(k * bar * sr), min(n, int((k + 1) * bar * sr))
        if a >= n:
            break
        tt = t[a:b] - t[a]
        f0 = root * 2 ** (prog[k % 4] / 12)
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt / (2 * bar))
        for ratio in (1.0, 1.26, 1.5, 2.0):   # a major chord and its octave, a few harmonics each
            for h in (1, 2, 3):
                y[a:b] += 0.12 / h * env * np.sin(2 * np.pi * f0 * ratio * h * tt)
        y[a:b] += 0.3 * env * np.sin(2 * np.pi * f0 / 2 * tt)   # bass
        for q in range(8):   # a lead line in eighth notes
            c, d = a + int(q * bar / 8 * sr), min(b, a + int((q + 1) * bar / 8 * sr))
            if c >= d:
                continue
            tq = t[c:d] - t[c]
            fq = f0 * 2 * 2 ** ([0, 4, 7, 12, 7, 4, 2, 0][q] / 12)
            y[c:d] += 0.1 * np.exp(-tq / 0.25) * np.sin(2 * np.pi * fq * tq)
    for k in range(int(seconds / beat) + 1):   # kick on every beat, hat on the off-beats
        a = int(k * beat * sr)
        if a >= n:
            break
        m = min(n - a, int(0.15 * sr))
        tk = np.arange(m) / sr
        y[a:a + m] += 0.5 * np.exp(-tk / 0.04) * np.sin(2 * np.pi * 60 * tk * (1 + np.exp(-tk / 0.02)))
        h = a + int(beat / 2 * sr)
        if h < n:
            m = min(n - h, int(0.05 * sr))
            y[h:h + m] += 0.15 * rng.standard_normal(m) * np.exp(-np.arange(m) / sr / 0.01)
    return (0.5 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def espeak(text: str, voice: str = "en-us", variant: str = "+m3", *, sr: int = SR, speed: int = 160) -> np.ndarray:
    """Synthetic speech from Debian ``espeak-ng`` at ``sr``, leading and trailing silence trimmed.

    Examples
    --------
    >>> espeak("Hello there.", sr=8000).dtype      # doctest: +SKIP
    dtype('float32')
    """
    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("`espeak-ng` not found: install the Debian package espeak-ng (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="shakelab-tts-") as tmp:
        wav = Path(tmp) / "tts.wav"
        subprocess.run([exe, "-v", voice + variant, "-s", str(speed), "-w", str(wav), text], check=True,
                       capture_output=True)
        y, rate = sf.read(str(wav), dtype="float32")
    y = _resample(y, rate, sr)
    nz = np.flatnonzero(np.abs(y) > 1e-4)
    return y[nz[0]:nz[-1] + 1] if len(nz) else y


def _resample(y: np.ndarray, rate: int, sr: int) -> np.ndarray:
    if rate == sr:
        return np.asarray(y, np.float32)
    import soxr

    return soxr.resample(np.asarray(y, np.float32), rate, sr, quality="HQ").astype(np.float32)


def _noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Effects and room noise: pink hiss with slow level changes, a rumble and decaying bursts (knocks, steps)."""
    w = rng.standard_normal(n)
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1]
    pink = np.fft.irfft(np.fft.rfft(w) / np.sqrt(f), n)
    pink *= np.interp(np.arange(n), np.linspace(0, n, 12), rng.uniform(0.3, 1.0, 12))
    rumble = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * (f < 150), n)
    y = pink / _rms(pink) + 0.5 * rumble / _rms(rumble)
    for _ in range(int(n / sr / 1.5)):
        a = int(rng.integers(0, max(1, n - sr // 4)))
        m = min(n - a, sr // 4)
        y[a:a + m] += 4.0 * rng.standard_normal(m) * np.exp(-np.arange(m) / sr / 0.03)
    return (y / _rms(y)).astype(np.float32)


def programme(speech: np.ndarray, music: np.ndarray, *, snr: float, sr: int = SR, seed: int = 0
              ) -> dict[str, np.ndarray]:
    """Lay ``speech`` and ``music`` (mono, at ``sr``, any length: looped or cut) out as :data:`REGIONS`.

    Parameters
    ----------
    speech, music : numpy.ndarray
        Source material; speech is levelled to -20 dBFS (active RMS), music to -18 dBFS in its
        music-only stretch and ``snr`` dB under the speech where both play.
    snr : float
        Music level under speech, dB re the speech (-6, -12, -20 in the set).

    Returns
    -------
    dict
        ``mix``, ``speech``, ``music``, ``noise``: float32 arrays of 60 s; ``mix`` is their sum.

    Examples
    --------
    >>> p = programme(np.random.default_rng(0).standard_normal(8000), synthetic_music(5, 8000), snr=-6, sr=8000)
    >>> sorted(p), p["mix"].shape
    (['mix', 'music', 'noise', 'speech'], (480000,))
    """
    rng = np.random.default_rng(seed)
    n = int(DURATION * sr)
    sp = _fit(speech, n)
    sp = sp * np.float32(10 ** (SPEECH_DBFS / 20) / max(_active_rms(sp, sr), 1e-9))
    spans = [(s, e) for kind, s, e in REGIONS if kind.startswith("speech")]
    speech_env = _envelope(n, sr, [(s, e, 1.0) for s, e in spans], fade=0.05)
    mu = _fit(music, n)
    mu = mu * np.float32(10 ** (MUSIC_DBFS / 20) / max(_rms(mu), 1e-9))
    duck = 10 ** ((SPEECH_DBFS + snr - MUSIC_DBFS) / 20)
    music_env = _envelope(n, sr, [(8.0, 18.0, 1.0), (18.0, 32.0, duck), (50.0, 60.0, duck)])
    no = _noise(n, sr, rng) * np.float32(10 ** (NOISE_DBFS / 20))
    noise_env = _envelope(n, sr, [(32.0, 40.0, 1.0), (40.0, 50.0, 10 ** ((SPEECH_DBFS - 15 - NOISE_DBFS) / 20))])
    floor = rng.standard_normal(n).astype(np.float32) * np.float32(10 ** (-65 / 20))
    out = {"speech": (sp * speech_env).astype(np.float32), "music": (mu * music_env).astype(np.float32),
           "noise": (no * noise_env + floor).astype(np.float32)}
    out["mix"] = (out["speech"] + out["music"] + out["noise"]).astype(np.float32)
    peak = float(np.abs(out["mix"]).max())
    if peak > 0.99:   # scale everything together so that the PCM mix never clips (stems still add up)
        out = {k: (v * np.float32(0.99 / peak)).astype(np.float32) for k, v in out.items()}
    return out


def _extra_speech(source: str, k: int, sr: int, tmp: Path, src: dict[str, Path]) -> np.ndarray:
    """About 45 s of speech from ``source`` of :data:`EXTRA`: asterisk prompts, flite or the pyannote sample."""
    import soundfile as sf

    from tools import devset

    if source == "pyannote":
        y, rate = sf.read(str(src["sample.wav"]), dtype="float32", always_2d=True)
        return _resample(y.mean(axis=1), rate, sr)
    pause = np.zeros(int(0.4 * sr), np.float32)
    if source.startswith("flite:"):
        parts = [devset._flite(t, source[6:], 1.0, 110 if k % 2 else 180, tmp) for t in TEXTS * 2]
        return np.concatenate([np.r_[_resample(p, devset.SR, sr), pause] for p in parts])
    d = devset.ASTERISK_DIR / devset.ASTERISK[source]
    files = sorted(d.glob("*.wav"))
    if not files:
        raise RuntimeError(f"{d} not found: apt-get install asterisk-core-sounds-{source[9:]}-wav")
    rng = np.random.default_rng(100 + k)
    out: list[np.ndarray] = []
    while sum(map(len, out)) < 45 * sr:   # prompts of a few words each, in a fixed random order
        y, rate = sf.read(str(files[int(rng.integers(len(files)))]), dtype="float32", always_2d=True)
        y = _resample(y.mean(axis=1), rate, sr)
        nz = np.flatnonzero(np.abs(y) > 1e-3)
        if len(nz) > sr // 4:
            out += [y[nz[0]:nz[-1] + 1], pause[:int(rng.integers(sr // 10, len(pause)))]]
    return np.concatenate(out)


def _extra_music(source: str, k: int, sr: int, tmp: Path) -> np.ndarray:
    """About 45 s of music from ``source`` of :data:`EXTRA`: asterisk MOH, asc-music or a rendered GM song."""
    import soundfile as sf

    from tools import devset

    kind, name = source.split(":")
    if kind == "gm":
        y = devset._render(devset._genre_song(200 + k, 50.0, name), tmp, devset.SOUNDFONTS[0])
        return _resample(y, devset.SR, sr)
    path = (devset.MOH_DIR if kind == "moh" else devset.ASC_DIR) / name
    if not path.is_file():
        raise RuntimeError(f"{path} not found: apt-get install "
                           f"{'asterisk-moh-opsound-wav' if kind == 'moh' else 'asc-music'}")
    y, rate = sf.read(str(path), dtype="float32", always_2d=True)
    y = _resample(y.mean(axis=1), rate, sr)
    skip = int(20 * sr) % max(1, len(y) - 45 * sr)
    return y[skip:]


def build(out_dir: str | os.PathLike, *, synthetic: bool = False, cache: str | os.PathLike | None = None,
          sr: int = SR, extra: bool = True) -> Path:
    """Write the set: 6 programmes (2 per SNR of :data:`SNRS`), then :data:`EXTRA`; return ``manifest.csv``.

    Files: ``<name>.wav`` (the mix, 16 kHz mono PCM16 unless ``sr``), ``<name>.speech.wav``,
    ``<name>.music.wav``, ``<name>.noise.wav`` (float), and ``manifest.csv`` (``name, snr,
    speech, music, set``: ``base`` or ``extra``). Deterministic. Needs ``espeak-ng``; the wheels'
    music and real speech unless ``synthetic``; the extra programmes (not with ``synthetic``
    or ``extra=False``) need ``flite``, ``fluidsynth``, ``timgm6mb-soundfont``, the asterisk
    sounds (en, fr, es) and MOH, and ``asc-music``.

    Examples
    --------
    >>> build("out/removalset", synthetic=True)      # doctest: +SKIP
    PosixPath('out/removalset/manifest.csv')
    """
    import soundfile as sf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = None
    if not synthetic:
        from tools import devset     # the wheels' sources: a development step, from a checkout

        src = devset.sources(cache)
    rows = []
    for k in range(2 * len(SNRS)):
        snr = SNRS[k % len(SNRS)]
        if src is not None and k % 4 == 1:
            real, rate = sf.read(str(src["sample.wav"]), dtype="float32", always_2d=True)
            speech, speech_name = _resample(real.mean(axis=1), rate, sr), "pyannote sample.wav"
        else:
            voice, variant = VOICES[k % len(VOICES)]
            speech = np.concatenate([np.r_[espeak(t, voice, variant, sr=sr), np.zeros(int(0.4 * sr), np.float32)]
                                     for t in (TEXTS[k % 4], TEXTS[(k + 1) % 4], TEXTS[(k + 2) % 4])])
            speech_name = f"espeak-ng {voice}{variant}"
        if src is None:
            music, music_name = synthetic_music(30.0, sr, seed=k), f"synthetic loop {k}"
        else:
            name = MUSIC_FILES[(k + k // 3) % len(MUSIC_FILES)]
            y, rate = sf.read(str(src[name]), dtype="float32", always_2d=True)
            y = _resample(y.mean(axis=1), rate, sr)
            skip = int((10 + 7 * k) * sr) % max(1, len(y) - 45 * sr)
            music, music_name = y[skip:], name
        rows.append(_write(out, k, programme(speech, music, snr=snr, sr=sr, seed=k), snr, sr,
                           speech=speech_name, music=music_name, set="base"))
    if src is not None and extra:
        with tempfile.TemporaryDirectory(prefix="shakelab-removalset-") as tmp:
            for j, (speech_src, music_src) in enumerate(EXTRA):
                k = 2 * len(SNRS) + j
                speech = _extra_speech(speech_src, k, sr, Path(tmp), src)
                p = programme(speech, _extra_music(music_src, k, sr, Path(tmp)), snr=-6, sr=sr, seed=k)
                rows.append(_write(out, k, p, -6, sr, speech=speech_src, music=music_src, set="extra"))
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "snr", "speech", "music", "set"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def _write(out: Path, k: int, p: dict[str, np.ndarray], snr: int, sr: int, **row: str) -> dict:
    """Write programme ``k`` (mix PCM16, stems float); return its manifest row."""
    import soundfile as sf

    name = f"prog{k}_snr{-snr}"
    sf.write(str(out / f"{name}.wav"), p["mix"], sr, subtype="PCM_16")
    for stem in ("speech", "music", "noise"):
        sf.write(str(out / f"{name}.{stem}.wav"), p[stem], sr, subtype="FLOAT")
    return {"name": name, "snr": snr, **row}


def load(directory: str | os.PathLike) -> list[dict]:
    """The set's programmes: ``[{name, snr, set, mix, speech, music, noise, sr, path}]`` (arrays float32).

    Examples
    --------
    >>> [p["name"] for p in load("out/removalset")][:1]     # doctest: +SKIP
    ['prog0_snr6']
    """
    import soundfile as sf

    d = Path(directory)
    out = []
    with open(d / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            p = {"name": row["name"], "snr": int(row["snr"]), "set": row.get("set", "base"),
                 "path": d / f"{row['name']}.wav"}
            p["mix"], p["sr"] = sf.read(str(p["path"]), dtype="float32")
            for stem in ("speech", "music", "noise"):
                p[stem] = sf.read(str(d / f"{row['name']}.{stem}.wav"), dtype="float32")[0]
            out.append(p)
    return out


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019).

    Examples
    --------
    >>> x = np.sin(np.arange(1000.0))
    >>> round(si_sdr(2 * x, x), 1) > 100
    True
    """
    est = np.asarray(estimate, np.float64)
    ref = np.asarray(reference, np.float64)
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-20)
    target = a * ref
    return float(10 * np.log10((np.dot(target, target) + 1e-20) / (np.dot(est - target, est - target) + 1e-20)))


def _db(y: np.ndarray) -> float:
    return 20 * np.log10(_rms(y) + 1e-12)


def score(output: np.ndarray, prog: dict, *, model: str = "music_removal", sr: int | None = None) -> dict[str, float]:
    """Region-by-region figures of ``output`` (mono, same length as ``prog['mix']``) for ``model``.

    Returns
    -------
    dict
        ``speech_db``, ``music_db``, ``noise_db``: level change of those regions (output minus
        input, dB); ``sisdr``/``sisdr_mix``: SI-SDR over the ``speech_music`` regions of the
        output and of the mixture against the target (``speech + noise`` for ``music_removal``,
        ``speech`` for ``dialogue``); ``sisdr_noise``/``sisdr_noise_mix``: the same over
        ``speech_noise``.

    Examples
    --------
    >>> p = programme(np.random.default_rng(0).standard_normal(8000), synthetic_music(5, 8000), snr=-6, sr=8000)
    >>> round(score(p["mix"], p, sr=8000)["speech_db"], 3)
    0.0
    """
    sr = sr or prog.get("sr", SR)
    output = np.asarray(output, np.float32)
    mix = prog["mix"]
    target = prog["speech"] + prog["noise"] if model == "music_removal" else prog["speech"]

    def cut(kind):
        idx = np.concatenate([np.arange(int((s + MARGIN) * sr), int((e - MARGIN) * sr)) for k, s, e in REGIONS
                              if k == kind])
        return idx[idx < len(mix)]

    res = {}
    for kind in ("speech", "music", "noise"):
        i = cut(kind)
        res[f"{kind}_db"] = float(_db(output[i]) - _db(mix[i]))
    for kind, key in (("speech_music", "sisdr"), ("speech_noise", "sisdr_noise")):
        i = cut(kind)
        res[key] = si_sdr(output[i], target[i])
        res[f"{key}_mix"] = si_sdr(mix[i], target[i])
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.removalset OUT_DIR [--synthetic]``: build the set and print its manifest."""
    import argparse

    ap = argparse.ArgumentParser(description="Build the music-removal development set (stems kept).")
    ap.add_argument("out_dir")
    ap.add_argument("--synthetic", action="store_true", help="numpy music instead of the wheels' songs")
    args = ap.parse_args(argv)
    manifest = build(args.out_dir, synthetic=args.synthetic)
    sys.stdout.write(manifest.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
