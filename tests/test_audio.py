"""shakelab.audio: load/info, the streamed min/max envelope and the bounded mel spectrogram."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from shakelab import audio

SR = 8000


def tone(seconds=2.0, sr=SR, freq=440.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    ramp = np.linspace(0.1, 1.0, t.size)  # rising amplitude: min/max differ per bin
    return (amp * ramp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, y, sr=SR, **kw):
    sf.write(str(path), y, sr, **kw)
    return path


def test_info_and_load(tmp_path):
    p = write(tmp_path / "a.wav", tone(1.5), subtype="PCM_16")
    i = audio.info(p)
    assert (i.samplerate, i.channels, i.frames, i.duration) == (SR, 1, 12000, 1.5)
    y, sr = audio.load(p)
    assert sr == SR and y.dtype == np.float32 and y.shape == (12000,)
    with pytest.raises(ValueError, match="not a readable audio file"):
        audio.info(write_text(tmp_path / "x.wav"))


def write_text(p):
    p.write_text("not audio")
    return p


def test_envelope_array_known_answer():
    env = audio.envelope(np.array([0.0, 1.0, -1.0, 0.5, 0.25, -0.5]), bins=3, sr=2)
    assert env.lo.tolist() == [0.0, -1.0, -0.5]
    assert env.hi.tolist() == [1.0, 0.5, 0.25]
    assert env.times.tolist() == [0.0, 1.0, 2.0]
    assert (env.samplerate, env.frames, env.duration) == (2, 6, 3.0)


def test_envelope_uneven_bins_cover_every_sample():
    y = np.arange(10, dtype=np.float32)
    env = audio.envelope((y, 10), bins=3)  # edges 0, 3, 6, 10
    assert env.lo.tolist() == [0, 3, 6] and env.hi.tolist() == [2, 5, 9]


def test_envelope_bins_capped_and_stereo_averaged():
    env = audio.envelope(np.array([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]), bins=100, sr=3)
    assert len(env.lo) == 3 and env.lo.tolist() == [0.0, 0.5, 0.5]


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("blocksize", [777, 4096, 1 << 18])
def test_streamed_envelope_equals_in_memory(tmp_path, subtype, blocksize):
    p = write(tmp_path / "a.wav", tone(3.0), subtype=subtype)
    y, sr = audio.load(p)
    streamed = audio.envelope(p, bins=101, blocksize=blocksize)
    whole = audio.envelope((y, sr), bins=101)
    np.testing.assert_array_equal(streamed.lo, whole.lo)
    np.testing.assert_array_equal(streamed.hi, whole.hi)
    np.testing.assert_array_equal(streamed.times, whole.times)
    assert streamed.frames == len(y) and streamed.samplerate == sr


def test_streamed_envelope_stereo(tmp_path):
    left, right = tone(2.0), -0.5 * tone(2.0, freq=300)
    p = write(tmp_path / "st.flac", np.stack([left, right], axis=1), subtype="PCM_16")
    y, sr = audio.load(p)
    env = audio.envelope(p, bins=50, blocksize=1000)
    ref = audio.envelope((y, sr), bins=50)
    np.testing.assert_allclose(env.lo, ref.lo, atol=1e-6)
    np.testing.assert_allclose(env.hi, ref.hi, atol=1e-6)


@pytest.mark.parametrize("ext, kw", [
    ("wav", {"subtype": "PCM_16"}), ("flac", {}), ("aiff", {"subtype": "PCM_16"}),
    ("ogg", {"subtype": "VORBIS"}),
    # libsndfile's default MP3 encoding settings give frames mpg123 calls malformed
    # ("part2_3_length too large"); chunked reads of such a file then decode different
    # samples than one whole read. Constant bitrate at a mid compression level is sound.
    ("mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III", "bitrate_mode": "CONSTANT",
             "compression_level": 0.5}),
])
def test_formats(tmp_path, ext, kw):
    p = write(tmp_path / f"a.{ext}", tone(2.0), **kw)
    y, sr = audio.load(p)
    assert sr == SR and abs(len(y) / sr - 2.0) < 0.1
    env = audio.envelope(p, bins=40, blocksize=3000)
    ref = audio.envelope((y, sr), bins=40)
    assert len(env.lo) == 40
    np.testing.assert_allclose(env.hi, ref.hi, atol=1e-4)
    assert 0.3 < float(env.hi.max()) <= 0.6  # the tone's peak survives the codec


def test_envelope_never_holds_the_file(tmp_path):
    seconds = 60
    p = write(tmp_path / "long.wav", np.zeros(seconds * 44100, np.float32), sr=44100,
              subtype="PCM_16")
    decoded = seconds * 44100 * 4  # bytes as float32
    tracemalloc.start()
    try:
        audio.envelope(p, bins=2000, blocksize=1 << 15)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < decoded / 20, f"peak {peak} bytes for a {decoded}-byte signal"


def test_iter_blocks_sizes_and_total(tmp_path):
    p = write(tmp_path / "a.wav", tone(1.0), subtype="PCM_16")
    sizes = [len(b) for _, b in audio.iter_blocks(p, blocksize=3000)]
    assert sizes == [3000, 3000, 2000]
    offsets = [o for o, _ in audio.iter_blocks(p, blocksize=3000)]
    assert offsets == [0, 3000, 6000]


@pytest.mark.parametrize("kwargs, needle", [
    ({"bins": 0}, "`bins` must be a positive integer"),
    ({"bins": 2.5}, "`bins` must be a positive integer"),
])
def test_envelope_bad_bins(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        audio.envelope(np.zeros(10), sr=10, **kwargs)


def test_envelope_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="`sr` must be a positive sample rate"):
        audio.envelope(np.zeros(10), bins=2)
    with pytest.raises(ValueError, match="must be a path, a numpy array"):
        audio.envelope(42, bins=2)
    with pytest.raises(ValueError, match="not a readable audio file"):
        audio.envelope(write_text(tmp_path / "x.wav"), bins=2)


def test_melspectrogram_peak_band_and_column_budget(tmp_path):
    y = tone(60.0, freq=1000.0, amp=0.5)
    p = write(tmp_path / "a.wav", y, subtype="FLOAT")
    S, edges, sr = audio.melspectrogram(p, n_mels=64, max_columns=50)
    assert sr == SR and S.shape[0] == 64 and S.shape[1] <= 50
    assert len(edges) == S.shape[1] + 1 and np.all(np.diff(edges) > 0)
    assert edges[0] == 0.0 and abs(edges[-1] - 60.0) < 0.3
    import librosa

    centers = librosa.mel_frequencies(n_mels=64, fmax=SR / 2)
    band = int(np.argmax(S.mean(axis=1)))
    assert abs(centers[band] - 1000.0) < 80
    S2, edges2, _ = audio.melspectrogram((y, SR), n_mels=64, max_columns=50)
    np.testing.assert_allclose(S2, S, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(edges2, edges)


def test_melspectrogram_short_signal_uses_plain_hop():
    S, edges, _sr = audio.melspectrogram((np.zeros(SR, np.float32), SR), n_mels=16)
    assert S.shape == (16, 1 + (SR - 2048) // 512)
    assert edges[1] == pytest.approx(512 / SR)
