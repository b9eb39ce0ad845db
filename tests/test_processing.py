"""Tests of shakelab.server.processing, detectors and stems: real audio in, real files out.

Short generated audio (a few seconds) except where length matters (the demo recording, a
30-s detection sequence, block processing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shakelab.frames import segments_frame
from shakelab.server import decision, detectors, processing, stems

SR = 22050
DATA = Path(__file__).resolve().parents[1] / "data"


# ----------------------------------------------------------------------------- generators
def speech_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Syllables: harmonics with gliding f0 through changing formants, fricatives, pauses."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr), np.float32)
    t = 0.0
    while t < seconds - 0.4:
        dur = rng.uniform(0.12, 0.3)
        n = int(dur * sr)
        f0 = rng.uniform(100, 180) * np.linspace(1, rng.uniform(0.8, 1.25), n)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        src = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f0.max() < sr / 2 - 200)
        formants = rng.uniform([300, 900, 2200], [800, 2000, 3000])
        f = np.fft.rfftfreq(n, 1 / sr)
        weight = sum(1 / (1 + ((f - fi) / 80) ** 2) for fi in formants) + 0.02
        syl = np.fft.irfft(np.fft.rfft(src) * weight, n) * np.sin(np.pi * np.linspace(0, 1, n)) ** 0.7
        if rng.random() < 0.4:
            m = int(0.06 * sr)
            syl[:m] += np.diff(rng.standard_normal(m + 1)) * 0.3 * np.linspace(1, 0, m)
        i = int(t * sr)
        out[i:i + n] += (syl / (np.abs(syl).max() + 1e-9) * rng.uniform(0.3, 0.6)).astype(np.float32)
        t += dur + (rng.uniform(0.02, 0.08) if rng.random() < 0.7 else rng.uniform(0.2, 0.5))
    return out


def tone(freq: float, seconds: float, sr: int, partials: int = 5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return sum(np.sin(2 * np.pi * freq * k * t) / k ** 1.5 for k in range(1, partials + 1)).astype(np.float32)


def music_like(seconds: float, sr: int, seed: int = 1, *, drums: bool = True) -> np.ndarray:
    """A chord loop with a bass note, and kick/snare on the beat at 120 bpm."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    chords = [[57, 60, 64], [53, 57, 60], [48, 52, 55], [55, 59, 62]]
    for b in range(math.ceil(seconds / 2.0)):
        a, e = int(b * 2.0 * sr), min(n, int((b + 1) * 2.0 * sr))
        tt = np.arange(e - a) / sr
        for p in chords[b % 4] + [chords[b % 4][0] - 24]:
            f = 440 * 2 ** ((p - 69) / 12)
            out[a:e] += sum(np.sin(2 * np.pi * f * k * tt) / k ** 1.5 for k in range(1, 6)) * np.exp(-tt * 0.8) * 0.2
    if drums:
        for k in range(int(seconds / 0.5)):
            a = int(k * 0.5 * sr)
            m = min(int(0.08 * sr), n - a)
            tt = np.arange(m) / sr
            out[a:a + m] += (np.sin(2 * np.pi * 60 * tt) * np.exp(-tt * 40) if k % 2 == 0
                             else rng.standard_normal(m) * np.exp(-tt * 50) * 0.5)
    return (out / np.abs(out).max() * 0.5).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = SR, **kw) -> Path:
    sf.write(path, y.T if y.ndim == 2 else y, sr, **kw)
    return path


@pytest.fixture(scope="module")
def sequence() -> tuple[np.ndarray, int]:
    """10 s speech-like, 10 s music, 10 s silence."""
    y = np.concatenate([speech_like(10, SR), music_like(10, SR), np.zeros(10 * SR, np.float32)])
    return y, SR


@pytest.fixture(scope="module")
def demo() -> tuple[np.ndarray, int]:
    y, sr = sf.read(DATA / "demo.flac", dtype="float32")
    return y, sr


def demo_labels() -> list[tuple[float, float]]:
    rows = [line.split("\t") for line in (DATA / "demo_labels.txt").read_text().splitlines() if line.strip()]
    return [(float(a), float(b)) for a, b, _ in rows]


# ----------------------------------------------------------------------------- probe
def test_probe_reads_the_demo_header():
    info = processing.probe(DATA / "demo.flac")
    assert (info.samplerate, info.channels, info.format) == (22050, 1, "flac")
    assert info.duration == pytest.approx(44.0, abs=1e-3)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "AIFF", "OGG", "MP3"])
def test_probe_accepts_each_input_format(tmp_path, fmt):
    p = write(tmp_path / f"x.{fmt.lower()}", np.stack([tone(220, 1.0, SR)] * 2) * 0.2, format=fmt)
    info = processing.probe(p)
    assert info.channels == 2 and info.samplerate == SR
    assert info.duration == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("name,data,what", [
    ("notes.txt", b"shopping list\n", "it holds plain text"),
    ("fake.mp3", b"this is not audio at all" * 10, "it holds plain text (despite its .mp3 name)"),
    ("noise.mp3", bytes(range(256)) * 4, "it holds bytes of no known audio format (despite its .mp3 name)"),
    ("tagged.mp3", b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 64,
     "it starts like an MP3 file (ID3 tag) but its audio cannot be decoded"),
])
def test_probe_says_in_one_layer_what_the_file_is_and_what_reads(tmp_path, name, data, what):
    """The review found three nested messages and a false "possibly a pipe?" for a fake .mp3."""
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ValueError) as info:
        processing.probe(p)
    message = str(info.value)
    assert message == (f"{str(p)!r} is not a readable audio file: {what}; "
                       "readable: WAV, FLAC, AIFF, OGG, MP3 (AAC/M4A/MP4 with ffmpeg)")
    assert "pipe" not in message and "Error opening" not in message


def test_probe_rejects_empty_missing_and_non_audio(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        processing.probe(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    with pytest.raises(ValueError, match=r"'.*notes.wav' is not a readable audio file: it holds plain text "
                                         r"\(despite its .wav name\); readable: WAV, FLAC"):
        processing.probe(text)
    with pytest.raises(ValueError, match="does not exist"):
        processing.probe(tmp_path / "missing.flac")
    header_only = write(tmp_path / "zero.wav", np.zeros(0, np.float32))
    with pytest.raises(ValueError, match=r"no audio|0 frames"):
        processing.probe(header_only)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "AIFF", "MP3"])
def test_probe_rejects_a_truncated_file(tmp_path, fmt):
    full = write(tmp_path / f"full.{fmt.lower()}", music_like(3.0, SR), format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    processing.probe(full)  # the complete file is fine
    with pytest.raises(ValueError, match="truncated"):
        processing.probe(cut)


# ----------------------------------------------------------------------------- the decision rule
def test_a_short_jingle_makes_its_window_music():
    """3 s of music inside 10 s of speech: the window is music (its mean probability is 0.3)."""
    hop = 0.02
    p = np.full(1000, 0.05)            # 20 s of speech
    p[200:350] = 0.95                  # a 3-s jingle at 4-7 s
    assert p[:500].mean() < 0.5
    (seg,) = decision.music_segments(hop, p, 20.0)
    assert (seg["start_time"], seg["end_time"]) == (0.0, 10.0)
    assert seg["confidence"] == pytest.approx(0.95)
    # scattered frames (here 1 s in all, never 2 s in a row) do not make music
    q = np.full(500, 0.05)
    q[::10] = 0.95
    assert decision.music_segments(hop, q, 10.0) == []


def test_adjacent_music_windows_merge_with_a_duration_weighted_confidence():
    hop = 0.5
    p = np.r_[np.full(20, 0.9), np.full(20, 0.6), np.zeros(20), np.full(8, 0.8)]  # 10 + 10 + 10 + 4 s
    assert decision.music_segments(hop, p, 34.0) == [
        {"start_time": 0.0, "end_time": 20.0, "confidence": 0.75},
        {"start_time": 30.0, "end_time": 34.0, "confidence": 0.8}]
    every = decision.music_segments(hop, p, 34.0, all_windows=True)
    assert [w["confidence"] for w in every] == [0.9, 0.6, 0.0, 0.8]
    # all windows at >= 0.5 are exactly the answer's windows
    music = [w for w in every if w["confidence"] >= decision.MUSIC_PROBABILITY]
    assert [(w["start_time"], w["end_time"]) for w in music] == [(0, 10), (10, 20), (30, 34)]
    assert decision.music_segments(hop, np.zeros(68), 34.0) == []
    with pytest.raises(ValueError, match="`window`"):
        decision.music_segments(hop, p, 34.0, window=0)


# ----------------------------------------------------------------------------- detection
def test_windows_average_the_track_and_cover_the_duration():
    w = detectors.windows(0.5, np.array([1, 1, 0, 0, 0.5]), 2.5, window=1.0)
    assert w == [{"start_time": 0.0, "end_time": 1.0, "confidence": 1.0},
                 {"start_time": 1.0, "end_time": 2.0, "confidence": 0.0},
                 {"start_time": 2.0, "end_time": 2.5, "confidence": 0.5}]
    with pytest.raises(ValueError, match="window"):
        detectors.windows(0.5, np.ones(4), 2.0, window=0)


@pytest.mark.parametrize("name", ["auto", "features"])
def test_detect_music_finds_the_music_block_of_a_generated_sequence(sequence, monkeypatch, name):
    monkeypatch.setenv("SHAKELAB_DETECTOR", name)
    y, sr = sequence
    w = processing.detect_music(y, sr, all_windows=True)
    assert [(s["start_time"], s["end_time"]) for s in w] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    speech, music, silence = (s["confidence"] for s in w)
    assert music > 0.7, w
    assert speech < 0.5 and silence < 0.1, w
    # the answer: only the music window, with its score
    assert processing.detect_music(y, sr) == [w[1]]


@pytest.mark.parametrize("name", ["auto", "features"])
def test_detect_music_on_the_demo_matches_its_labels(demo, monkeypatch, name):
    monkeypatch.setenv("SHAKELAB_DETECTOR", name)
    y, sr = demo
    w = processing.detect_music(y, sr, all_windows=True)
    assert [s["start_time"] for s in w] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert w[-1]["end_time"] == pytest.approx(44.0)  # last window shorter
    conf = [s["confidence"] for s in w]
    assert conf[0] < 0.5  # speech alone
    assert conf[1] > 0.8  # music alone
    assert conf[2] >= 0.5  # music until 22 s: 2 s of it make the window music
    assert conf[3] > 0.6 and conf[4] > 0.6  # speech over music
    # the answer: music from 10 s to the end, one merged segment; nothing for the speech
    (answer,) = processing.detect_music(y, sr)
    assert (answer["start_time"], answer["end_time"]) == (10.0, pytest.approx(44.0))
    weighted = sum(c * d for c, d in zip(conf[1:], (10, 10, 10, 4), strict=False))
    assert answer["confidence"] == pytest.approx(weighted / 34, abs=1e-4)
    # at 2-s resolution: every window fully inside a labelled section gets it right
    fine = processing.detect_music(y, sr, window=2.0, all_windows=True)
    music = demo_labels()
    inside = lambda s, a, b: s["start_time"] >= a and s["end_time"] <= b  # noqa: E731
    for s in fine:
        if any(inside(s, a + 1, b - 1) for a, b in music):
            assert s["confidence"] > 0.5, s
        elif any(inside(s, a + 1, b - 1) for a, b in [(0, 10), (22, 30)]):
            assert s["confidence"] < 0.5, s


def test_feature_detector_scores_speech_music_noise_and_silence():
    det = detectors.get_detector("features")
    assert det.name == "features"
    rng = np.random.default_rng(3)
    pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(8 * SR)) / np.sqrt(np.arange(4 * SR + 1) + 1.0), 8 * SR)
    clips = {"speech": speech_like(8, SR, seed=5), "music": music_like(8, SR, seed=6),
             "noise": (pink / np.abs(pink).max() * 0.1).astype(np.float32), "silence": np.zeros(8 * SR, np.float32)}
    mean = {k: float(det.music_probability(v, SR)[1].mean()) for k, v in clips.items()}
    assert mean["music"] > 0.7, mean
    assert max(mean["speech"], mean["noise"], mean["silence"]) < 0.3, mean
    assert mean["silence"] == 0.0


def test_feature_matrix_has_the_documented_shape_and_is_not_constant(sequence):
    y, sr = sequence
    X, level = detectors.feature_matrix(y, sr)
    assert X.shape == (60, len(detectors.FEATURE_NAMES))
    assert np.isfinite(X).all()
    speech, music = X[4:16].mean(axis=0), X[24:36].mean(axis=0)
    i = detectors.FEATURE_NAMES.index
    assert speech[i("low_energy")] > music[i("low_energy")]
    assert music[i("beat")] > speech[i("beat")]
    assert level[45:].max() < detectors.SILENCE_DB


def test_detect_music_validates_its_arguments():
    with pytest.raises(ValueError, match="`window`"):
        processing.detect_music(np.zeros(1000, np.float32), 8000, window=-1)
    with pytest.raises(ValueError, match="`y`"):
        processing.detect_music(np.zeros(0, np.float32), 8000)
    with pytest.raises(ValueError, match="`sr`"):
        processing.detect_music(np.zeros(1000, np.float32), 0)
    with pytest.raises(ValueError, match=r"SHAKELAB_DETECTOR|`name`"):
        detectors.get_detector("nonsense")


def test_get_detector_auto_is_cnn_with_weights_else_features(monkeypatch):
    from shakelab.server import cnn

    monkeypatch.delenv("SHAKELAB_DETECTOR", raising=False)
    assert detectors.get_detector().name == ("cnn" if cnn.available() else "features")


# ----------------------------------------------------------------------------- run_model
@pytest.mark.parametrize("fmt", ["json", "txt"])
def test_run_model_music_detection_writes_the_music_segments(tmp_path, sequence, fmt):
    y, sr = sequence
    src = write(tmp_path / "seq.flac", y, sr)
    paths = processing.run_model("music_detection", src, tmp_path / "out", fmt)
    assert paths == [tmp_path / "out" / f"music_detection.{fmt}"]
    text = paths[0].read_text()
    if fmt == "json":
        rows = json.loads(text)
    else:
        rows = [dict(zip(("start_time", "end_time", "confidence"), map(float, line.split("\t")), strict=True))
                for line in text.splitlines()]
    assert [(r["start_time"], r["end_time"]) for r in rows] == [(10.0, 20.0)]  # speech and silence: nothing
    assert rows[0]["confidence"] > 0.7
    (path,), detail = processing.run_detection(src, tmp_path / "all", fmt, options={"all_windows": True})
    assert detail == {"detector": detectors.get_detector().name, "window": 10.0, "allWindows": True}
    every = segments_frame(path)
    assert every["start_time"].tolist() == [0.0, 10.0, 20.0]
    assert every["confidence"].iloc[1] == pytest.approx(rows[0]["confidence"], abs=1e-4)


def test_run_model_window_option(tmp_path, sequence):
    y, sr = sequence
    src = write(tmp_path / "seq.wav", y[: 25 * sr], sr)
    (path,) = processing.run_model("music_detection", src, tmp_path, "json",
                                   options={"window": 4, "all_windows": True, "variant": "x"})
    rows = json.loads(path.read_text())
    assert [r["start_time"] for r in rows] == [0, 4, 8, 12, 16, 20, 24]
    assert rows[-1]["end_time"] == pytest.approx(25.0)
    # the answer on the 4-s grid: the music (10-20 s) touches windows 8-12 .. 16-20, merged
    (path,) = processing.run_model("music_detection", src, tmp_path, "json", options={"window": 4})
    (music,) = json.loads(path.read_text())
    assert music["start_time"] in (8.0, 12.0) and music["end_time"] in (20.0, 24.0)
    for bad in (0, -3, "ten", float("nan"), True):
        with pytest.raises(ValueError, match="`window`"):
            processing.run_model("music_detection", src, tmp_path, "json", options={"window": bad})
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="`all_windows`"):
            processing.run_model("music_detection", src, tmp_path, "json", options={"all_windows": bad})


def test_run_model_rejects_unknown_model_format_and_undecodable_input(tmp_path):
    src = write(tmp_path / "a.wav", tone(220, 1.0, SR) * 0.2)
    with pytest.raises(ValueError, match="`model` must be one of"):
        processing.run_model("guitar", src, tmp_path, "wav")
    with pytest.raises(ValueError, match="`format` must be one of 'wav', 'mp3', 'flac', 'aiff'"):
        processing.run_model("vocals", src, tmp_path, "json")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ValueError, match=r"junk\.mp3"):
        processing.run_model("drums", junk, tmp_path, "wav")
    assert not (tmp_path / "drums.wav").exists()


# ----------------------------------------------------------------------------- stems
@pytest.fixture(scope="module")
def stereo_src(tmp_path_factory) -> Path:
    """3 s of stereo music with a speech-like voice panned left, 22050 Hz, 24-bit."""
    d = tmp_path_factory.mktemp("stems")
    m = music_like(3.0, SR)
    v = speech_like(3.0, SR, seed=9)
    y = np.stack([m * 0.6 + v * 0.6, m * 0.6 + v * 0.2])
    return write(d / "mix.wav", y, SR, subtype="PCM_24")


@pytest.mark.parametrize("model", ["vocals", "instrumental", "drums", "bass", "other"])
@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "aiff"])
def test_each_stem_model_and_format_keeps_duration_rate_and_channels(tmp_path, stereo_src, model, fmt):
    (path,) = processing.run_model(model, stereo_src, tmp_path, fmt)
    assert path == tmp_path / f"{model}.{fmt}"
    src, out = sf.info(str(stereo_src)), sf.info(str(path))
    assert (out.samplerate, out.channels) == (src.samplerate, src.channels)
    assert out.frames == src.frames
    assert out.format == {"wav": "WAV", "mp3": "MP3", "flac": "FLAC", "aiff": "AIFF"}[fmt]
    y, _ = sf.read(str(path), dtype="float32")
    assert np.sqrt(np.mean(y ** 2)) > 1e-4  # not silent


def test_mp3_stems_are_well_formed_and_near_the_wav(tmp_path, stereo_src):
    """A sound MP3 decodes the same in blocks as in one piece, and stays close to the lossless stem."""
    (mp3,) = processing.run_model("instrumental", stereo_src, tmp_path / "m", "mp3")
    (wav,) = processing.run_model("instrumental", stereo_src, tmp_path / "w", "wav")
    whole, _ = sf.read(str(mp3), dtype="float32")
    blocks = np.concatenate(list(sf.blocks(str(mp3), blocksize=4096, dtype="float32")))
    assert np.abs(whole - blocks).max() < 1e-6
    ref, _ = sf.read(str(wav), dtype="float32")
    # MP3 delays the signal by its encoder padding; compare levels, not samples
    assert abs(np.sqrt(np.mean(whole ** 2)) / np.sqrt(np.mean(ref ** 2)) - 1) < 0.1
    assert mp3.stat().st_size > 3 * 22050 * 2 * 2 // 8  # about 256 kbit/s, not libsndfile's 32 kbit/s default


@pytest.mark.parametrize("sr", [16000, 44100])
def test_mono_input_gives_mono_stems_at_its_rate(tmp_path, sr):
    src = write(tmp_path / "m.flac", music_like(2.0, sr), sr)
    (path,) = processing.run_model("drums", src, tmp_path, "flac")
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (sr, 1, 2 * sr)


def _read(tmp_path, src, model):
    (path,) = processing.run_model(model, src, tmp_path, "wav")
    return sf.read(str(path), dtype="float64", always_2d=True)[0].T


def test_stems_add_up_to_the_mix_and_differ(tmp_path, stereo_src):
    mix = sf.read(str(stereo_src), dtype="float64", always_2d=True)[0].T
    s = {m: _read(tmp_path, stereo_src, m) for m in stems.STEMS}
    assert np.abs(s["vocals"] + s["instrumental"] - mix).max() < 1e-3
    assert np.abs(s["vocals"] + s["drums"] + s["bass"] + s["other"] - mix).max() < 1e-3
    for a in stems.STEMS:
        for b in stems.STEMS:
            if a < b:
                assert np.abs(s[a] - s[b]).max() > 0.01, (a, b)
    assert np.abs(s["vocals"][0] - s["vocals"][1]).max() > 0.01  # stereo kept, not duplicated mono


def test_bass_is_below_250_hz_and_other_above(tmp_path, stereo_src):
    def low_share(x):
        spec = np.abs(np.fft.rfft(x.mean(axis=0))) ** 2
        f = np.fft.rfftfreq(x.shape[1], 1 / SR)
        return spec[f < 250].sum() / spec.sum()

    mix = sf.read(str(stereo_src), dtype="float64", always_2d=True)[0].T
    bass, other = _read(tmp_path, stereo_src, "bass"), _read(tmp_path, stereo_src, "other")
    assert low_share(bass) > 0.95
    assert low_share(other) < 0.1
    assert low_share(mix) < low_share(bass)


def test_drums_energy_sits_on_the_hits(tmp_path):
    # a sustained chord with clicks every 0.5 s: the drums stem keeps the clicks, not the chord
    n = 4 * SR
    chord = (tone(220, 4.0, SR) + tone(277.2, 4.0, SR) + tone(329.6, 4.0, SR)) * 0.1
    clicks = np.zeros(n, np.float32)
    rng = np.random.default_rng(0)
    hits = np.arange(0, n, SR // 2)
    for h in hits:
        m = min(int(0.03 * SR), n - h)
        clicks[h:h + m] = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.005 * SR)) * 0.5
    src = write(tmp_path / "dr.wav", chord + clicks)
    drums = _read(tmp_path, src, "drums")[0]
    other = _read(tmp_path, src, "other")[0]
    near = np.zeros(n, bool)
    for h in hits:
        near[max(0, h - int(0.02 * SR)): h + int(0.05 * SR)] = True
    share_on_hits = (drums[near] ** 2).sum() / (drums ** 2).sum()
    assert share_on_hits > 0.7  # hits are 14% of the time
    assert (other[~near] ** 2).sum() > 10 * (drums[~near] ** 2).sum()


def test_vocals_take_the_voice_not_the_loop(tmp_path):
    # 12 s: a repeating 2-s loop, with a non-repeating voice only in the middle 4 s
    loop = music_like(12.0, SR, drums=False) * 0.5
    voice = np.zeros_like(loop)
    voice[4 * SR:8 * SR] = speech_like(4.0, SR, seed=4) * 0.5
    src = write(tmp_path / "v.wav", loop + voice)
    vocals = _read(tmp_path, src, "vocals")[0]
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    with_voice, without = rms(vocals[4 * SR + SR // 2:8 * SR - SR // 2]), rms(vocals[SR:3 * SR])
    assert with_voice > 3 * without
    corr = np.corrcoef(vocals[4 * SR:8 * SR], voice[4 * SR:8 * SR])[0, 1]
    assert corr > 0.5


def test_block_processing_is_seamless_and_exact_length(tmp_path):
    y = music_like(5.0, SR) + 0.01
    src = write(tmp_path / "b.wav", np.stack([y, y * 0.5]), subtype="FLOAT")
    whole = stems.separate(src, tmp_path / "whole.wav", "instrumental", "wav")
    blocks = stems.separate(src, tmp_path / "blocks.wav", "instrumental", "wav", block_seconds=1.3,
                            overlap_seconds=0.3)
    a = sf.read(str(whole), dtype="float64")[0]
    b = sf.read(str(blocks), dtype="float64")[0]
    assert a.shape == b.shape == (5 * SR, 2)
    # no clicks at block joins: the largest sample step is not bigger than the input's
    assert np.abs(np.diff(b, axis=0)).max() < 1.5 * np.abs(np.diff(np.stack([y, y * 0.5], 1), axis=0)).max()
    assert np.corrcoef(a[:, 0], b[:, 0])[0, 1] > 0.9


def test_separate_validates_stem_format_and_mp3_limits(tmp_path):
    src = write(tmp_path / "hi.wav", tone(440, 0.5, 96000) * 0.1, 96000)
    with pytest.raises(ValueError, match="`stem`"):
        stems.separate(src, tmp_path / "x.wav", "piano", "wav")
    with pytest.raises(ValueError, match="`format`"):
        stems.separate(src, tmp_path / "x.ogg", "bass", "ogg")
    with pytest.raises(ValueError, match="96000 Hz"):
        stems.separate(src, tmp_path / "x.mp3", "bass", "mp3")
    out = stems.separate(src, tmp_path / "x.flac", "bass", "flac")
    assert sf.info(str(out)).samplerate == 96000


def test_load_mono_streams_to_the_target_rate(tmp_path):
    y = np.stack([tone(300, 3.0, 44100), tone(300, 3.0, 44100)]) * 0.3
    src = write(tmp_path / "s.wav", y, 44100)
    z = processing.load_mono(src, 8000)
    assert len(z) == pytest.approx(3 * 8000, abs=2)
    spec = np.abs(np.fft.rfft(z))
    assert np.fft.rfftfreq(len(z), 1 / 8000)[spec.argmax()] == pytest.approx(300, abs=1)
