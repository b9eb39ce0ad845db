"""Development-set builder: plan, synthetic songs, noise and levels (deterministic)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tools import devset


def test_dev_plan_covers_every_condition_for_at_least_15_minutes():
    plan = devset._plan("dev")
    assert sum(s for _, s, _ in plan) >= 15 * 60
    assert {c for c, _, _ in plan} == set(devset.CONDITIONS)
    train = devset._plan("train")
    assert "speech_noise" in {c for c, _, _ in train}
    with pytest.raises(ValueError, match="split"):
        devset.build("unused", split="test")


def test_midi_song_is_valid_and_deterministic():
    a, tempo = devset._song(5, 4.0)
    b, _ = devset._song(5, 4.0)
    assert a == b and a[:4] == b"MThd" and a[14:18] == b"MTrk" and 72 <= tempo < 150
    assert devset._song(6, 4.0)[0] != a
    assert a.endswith(b"\xff\x2f\x00")


def test_noise_and_levels():
    rng = np.random.default_rng(0)
    for kind in ("white", "pink", "brown", "modulated"):
        y = devset._noise(kind, 16000, np.random.default_rng(1))
        assert y.dtype == np.float32 and abs(devset._rms(y) - 1) < 1e-3
        assert np.array_equal(y, devset._noise(kind, 16000, np.random.default_rng(1)))
    y = np.r_[np.zeros(8000), rng.standard_normal(16000)].astype(np.float32)
    out = devset._level(y, -20.0)
    assert abs(20 * np.log10(devset._active_rms(out)) + 20) < 0.1


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not any(Path(s).is_file() for s in devset.SOUNDFONTS),
                    reason="fluidsynth and a General MIDI soundfont are needed")
def test_render_a_song(tmp_path):
    sf2 = next(s for s in devset.SOUNDFONTS if Path(s).is_file())
    y = devset._render(devset._song(3, 3.0)[0], tmp_path, sf2)
    assert len(y) > 2 * devset.SR and devset._rms(y) > 1e-3


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed")
def test_espeak_speech(tmp_path):
    y = devset._espeak("Hello there.", "en-us", "+m3", 160, 50, tmp_path)
    assert 0.3 * devset.SR < len(y) < 3 * devset.SR and np.abs(y).max() > 0.01


def test_broadcast_plan_pairs_every_speech_source_with_every_music_source():
    plan = devset._broadcast_plan()
    assert {p["condition"] for p in plan} == set(devset.BROADCAST_CONDITIONS)
    pairs = {(p["speech"], p["music"]) for p in plan if p["condition"] == "speech_music_-20"}
    assert pairs == {(s, m) for s in devset.SPEECH_SOURCES for m in devset.MUSIC_SOURCES}
    speech = [p for p in plan if p["condition"] == "speech"]
    assert {(p["speech"], p["chain"]) for p in speech} == {(s, c) for s in devset.SPEECH_SOURCES for c in devset.CHAINS}
    beds = [p for p in plan if p["condition"] == "speech_bed"]
    assert {p["bed"] for p in beds} == set(devset.BEDS) and {p["snr_db"] for p in beds} == {-10, -20, -30}
    noise = [p for p in plan if p["condition"] == "noise"]
    assert {(p["bed"], p["chain"]) for p in noise} == {(b, c) for b in devset.NOISE_KINDS for c in devset.CHAINS}
    assert len(plan) * devset.BROADCAST_CLIP <= 90 * 60         # bounded build (88 min with the noise-alone clips)


@pytest.mark.parametrize("kind", devset.CHAINS)
def test_chains_keep_length_and_level_and_are_deterministic(kind):
    y = (devset._noise("pink", 32000, np.random.default_rng(2)) * 0.05).astype(np.float32)
    a = devset.chain(y, kind, np.random.default_rng(3))
    assert len(a) == len(y) and abs(devset._rms(a) / devset._rms(y) - 1) < 0.01
    assert np.array_equal(a, devset.chain(y, kind, np.random.default_rng(3)))


def test_telephone_chain_removes_the_band_above_3400_hz():
    y = devset._noise("white", 32000, np.random.default_rng(4)) * np.float32(0.05)
    z = devset.chain(y, "telephone", np.random.default_rng(0))
    spec = np.abs(np.fft.rfft(z)) ** 2
    f = np.fft.rfftfreq(len(z), 1 / devset.SR)
    assert spec[f > 4500].sum() < 1e-3 * spec[(f > 500) & (f < 3000)].sum()
    with pytest.raises(ValueError, match="kind"):
        devset.chain(y, "vinyl", np.random.default_rng(0))


@pytest.mark.parametrize("kind", [b for b in devset.BEDS if b != "crowd"])
def test_beds_are_unit_rms_and_deterministic(kind):
    a = devset.bed(kind, 16000, np.random.default_rng(5))
    assert a.dtype == np.float32 and abs(devset._rms(a) - 1) < 1e-3
    assert np.array_equal(a, devset.bed(kind, 16000, np.random.default_rng(5)))
    with pytest.raises(ValueError, match="babble"):
        devset.bed("crowd", 16000, np.random.default_rng(5))


def test_genre_songs_differ_and_are_valid_midi():
    songs = {g: devset._genre_song(1, 4.0, g) for g in devset.GENRES}
    assert len(set(songs.values())) == len(devset.GENRES)
    assert all(s[:4] == b"MThd" and s.endswith(b"\xff\x2f\x00") for s in songs.values())
    assert b"\x99" not in songs["piano"]          # no drums (channel 10) on solo piano
