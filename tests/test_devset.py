"""Development-set builder: plan, synthetic songs, noise and levels (deterministic)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shakelab import devset


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
