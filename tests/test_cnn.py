"""The numpy CNN: features, layers (against a plain Keras-semantics forward pass and, when a
reference environment is present, against inaSpeechSegmenter/TensorFlow), decisions,
aggregation and the fallback when the weights are missing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shakelab import weights
from shakelab.server import bgm, cnn, detectors, processing

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def model():
    m = cnn.load_model()
    if m is None:
        pytest.skip("CNN weights not installed (run `shakelab models fetch`)")
    return m


@pytest.fixture(scope="module")
def arrays():
    if not weights.available():
        pytest.skip("CNN weights not installed (run `shakelab models fetch`)")
    with np.load(weights.path()) as z:
        return {k: z[k] for k in z.files}


def tone_mix(seconds=3.0, seed=0):
    """Sustained harmonic chords (music-like) plus a little noise, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for k, f0 in enumerate([220.0, 277.2, 329.6, 110.0]):
        for h in range(1, 6):
            y += np.sin(2 * np.pi * f0 * h * t + k) / h
    y += 0.01 * rng.standard_normal(len(t))
    return (0.05 * y / np.abs(y).max()).astype(np.float32)


# ----------------------------------------------------------------------------- features
def test_melspec_frames_and_band_of_a_tone():
    t = np.arange(SR) / SR
    y = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    m, e = cnn.melspec(y)
    assert m.shape == ((SR - 400) // 160 + 1, 24) and m.dtype == np.float32
    assert e.shape == (m.shape[0],)
    centres = []
    for row in cnn._FBANK:
        centres.append(np.argmax(row) * SR / 512)
    band = int(np.argmax(m[50]))
    assert abs(centres[band] - 1000) < 150       # the band holding 1 kHz is the loudest


def test_melspec_short_and_silent_input():
    m, e = cnn.melspec(np.zeros(100, np.float32))
    assert m.shape == (0, 24) and e.shape == (0,)
    m, e, spec = cnn.melspec(np.zeros(1600, np.float32), spec=True)
    assert np.all(np.isneginf(m)) and m.shape == (8, 24) and spec.shape == (4, 197)


def test_filterbank_is_24_mel_triangles_of_unit_area():
    fb = cnn._FBANK
    assert fb.shape == (24, 257)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) > 0)           # increasing centre frequencies
    assert peaks[0] * SR / 512 < 200 and peaks[-1] * SR / 512 > 6500


def test_resample_16k_rate_and_channels():
    y = np.zeros((2, 44100), np.float32)
    assert cnn.resample_16k(y, 44100).shape == (16000,)
    with pytest.raises(ValueError, match="sr"):
        cnn.resample_16k(np.zeros(10), 0)


# ----------------------------------------------------------------------------- layers
def _reference_patches(mspec):
    """inaSpeechSegmenter's _get_patches, written plainly (68x21 patches every 2 frames)."""
    m = mspec[:, :21].astype(np.float32)
    w, h, step = 68, 21, 2
    data = np.lib.stride_tricks.sliding_window_view(m, (w, h))[::step, 0].reshape(-1, w * h)
    data = (data - data.mean(axis=1, keepdims=True)) / data.std(axis=1, keepdims=True)
    lfill = [data[:1]] * (w // (2 * step))
    rfill = [data[-1:]] * (w // (2 * step) - 1 + len(m) % 2)
    return np.vstack([*lfill, data, *rfill]).reshape(-1, w, h)


def _keras_forward(arrays, x):
    """A plain forward pass of the Keras Sequential config (slow, one patch at a time)."""
    layers = json.loads(str(arrays["model_config"]))["config"]["layers"]
    x = x.astype(np.float64)
    for layer in layers:
        kind, cfg = layer["class_name"], layer["config"]
        name = cfg["name"]
        if kind == "Reshape":
            x = x.reshape(cfg["target_shape"])
        elif kind == "Conv2D":
            k, b = arrays[f"{name}/kernel"], arrays[f"{name}/bias"]
            kh, kw = k.shape[:2]
            out = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1, k.shape[3]))
            for dy in range(kh):
                for dx in range(kw):
                    out += x[dy:dy + out.shape[0], dx:dx + out.shape[1], :] @ k[dy, dx]
            x = out + b
        elif kind == "BatchNormalization":
            x = ((x - arrays[f"{name}/moving_mean"]) / np.sqrt(arrays[f"{name}/moving_variance"] + cfg["epsilon"])
                 * arrays[f"{name}/gamma"] + arrays[f"{name}/beta"])
        elif kind == "Activation":
            x = np.maximum(x, 0) if cfg["activation"] == "relu" else x
        elif kind == "MaxPooling2D":
            (ph, pw), (sh, sw) = cfg["pool_size"], cfg["strides"]
            if cfg["padding"] == "same":
                oh, ow = -(-x.shape[0] // sh), -(-x.shape[1] // sw)
                th = max((oh - 1) * sh + ph - x.shape[0], 0)
                tw = max((ow - 1) * sw + pw - x.shape[1], 0)
                x = np.pad(x, ((th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)), constant_values=-np.inf)
            oh, ow = (x.shape[0] - ph) // sh + 1, (x.shape[1] - pw) // sw + 1
            x = np.array([[x[i * sh:i * sh + ph, j * sw:j * sw + pw].max(axis=(0, 1)) for j in range(ow)]
                          for i in range(oh)])
        elif kind == "Flatten":
            x = x.reshape(-1)
        elif kind == "Dense":
            x = x @ arrays[f"{name}/kernel"] + arrays[f"{name}/bias"]
            if cfg["activation"] == "softmax":
                x = np.exp(x - x.max())
                x = x / x.sum()
            elif cfg["activation"] == "relu":
                x = np.maximum(x, 0)
    return x


def test_predict_matches_a_plain_keras_forward_pass(model, arrays):
    y = tone_mix(2.0) + np.random.default_rng(3).standard_normal(2 * SR).astype(np.float32) * 0.02
    m, _ = cnn.melspec(y)
    probs, finite = model.predict(m)
    patches = _reference_patches(m)
    assert probs.shape == (len(patches), 3) and finite.all()
    for i in (0, 17, 40, len(patches) - 1):
        ref = _keras_forward(arrays, patches[i])
        assert np.abs(probs[i] - ref).max() < 1e-4, (i, probs[i], ref)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_hop_evaluates_a_subset_of_the_same_patches(model):
    y = tone_mix(3.0) + np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32) * 0.05
    m, _ = cnn.melspec(y)
    full, _ = model.predict(m, hop=1)
    half, _ = model.predict(m, hop=2)
    assert half.shape == full.shape
    assert np.abs(half[::2] - full[::2]).max() < 1e-5            # even steps: computed, same values
    assert np.array_equal(half[1::2][:-1], half[0::2][:len(half[1::2]) - 1])   # odd steps hold the previous
    with pytest.raises(ValueError, match="hop"):
        model.predict(m, hop=0)


def test_short_input_is_padded_like_the_reference(model):
    m, _ = cnn.melspec(tone_mix(0.5))
    probs, _ = model.predict(m)
    assert len(m) < 68 and len(probs) == 34 - (68 - len(m)) // 2


def test_digital_silence_gives_non_finite_patches(model):
    y = tone_mix(3.0)
    y[SR:2 * SR] = 0
    probs, finite = model.predict(cnn.melspec(y)[0])
    assert (~finite).sum() > 0 and np.isnan(probs[~finite]).all() and np.isfinite(probs[finite]).all()


REF_PY = os.environ.get("SHAKELAB_REFERENCE_PYTHON")


@pytest.mark.skipif(not REF_PY, reason="needs SHAKELAB_REFERENCE_PYTHON (an env with inaSpeechSegmenter 0.6.8 + TF)")
def test_matches_the_tensorflow_reference(model, tmp_path):
    rng = np.random.default_rng(11)
    clips = {
        "chords": tone_mix(6.0, seed=1),
        "noise_gap": np.r_[rng.standard_normal(2 * SR) * 0.05, np.zeros(SR // 2), rng.standard_normal(2 * SR) * 0.05],
        "chirp": 0.2 * np.sin(2 * np.pi * np.cumsum(np.linspace(200, 3000, 4 * SR)) / SR),
        "short": tone_mix(0.5, seed=2),
    }
    demo = ROOT / "data" / "demo.flac"
    if demo.is_file():
        y, sr = sf.read(demo, dtype="float32")
        clips["demo"] = cnn.resample_16k(y, sr)
    paths = []
    for name, y in clips.items():
        p = tmp_path / f"{name}.wav"
        sf.write(p, np.clip(y, -1, 1), SR, subtype="PCM_16")
        paths.append(p)
    out = tmp_path / "ref.npz"
    subprocess.run([REF_PY, str(ROOT / "tests" / "reference_ina.py"), str(out)] + [str(p) for p in paths],
                   check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                                                 CUDA_VISIBLE_DEVICES=""))
    ref = np.load(out)
    worst = 0.0
    for i, p in enumerate(paths):
        y, _ = sf.read(p, dtype="float32")
        m, _ = cnn.melspec(y)
        rm = ref[f"mspec_{i}"][:len(m)]
        fin = np.isfinite(rm)
        assert np.array_equal(fin, np.isfinite(m))
        assert np.abs(m[fin] - rm[fin]).max() < 1e-4
        probs, finite = model.predict(m)
        rp = ref[f"probs_{i}"]
        assert probs.shape == rp.shape
        worst = max(worst, float(np.abs(probs[finite] - rp[finite]).max()))
    print(f"max abs difference to the TensorFlow reference: {worst:.2e}")
    assert worst <= 1e-4


# ----------------------------------------------------------------------------- decisions
def test_energy_activity():
    loge = np.r_[np.full(300, -15.0), np.full(300, 1.0), np.full(300, -15.0)]
    act = cnn.energy_activity(loge)
    assert not act[:250].any() and act[350:550].all() and not act[-250:].any()
    assert not cnn.energy_activity(np.full(100, -np.inf)).any()
    assert not cnn.energy_activity(np.full(100, -12.0)).any()     # under the absolute floor


def test_windows_mean_probability():
    w = detectors.windows(0.5, np.array([1, 1, 0, 0, 0.5]), 2.5, window=1.0)
    assert [x["confidence"] for x in w] == [1.0, 0.0, 0.5]
    assert w[-1]["end_time"] == 2.5
    with pytest.raises(ValueError, match="window"):
        detectors.windows(0.02, np.zeros(3), 1.0, window=0)


def test_detect_music_on_the_demo_recording(model):
    """Through the server's one detection pipeline; 2-s windows score their mean probability."""
    from shakelab import audio

    y, sr = audio.load(ROOT / "data" / "demo.flac")
    w = processing.detect_music(y, sr, window=2.0, all_windows=True, detector="cnn")
    assert w[0]["start_time"] == 0.0 and w[-1]["end_time"] == pytest.approx(len(y) / sr, abs=1e-3)
    conf = {x["start_time"]: x["confidence"] for x in w}
    assert all(conf[t] < 0.3 for t in (0.0, 2.0, 4.0, 6.0))          # speech alone
    assert all(conf[t] > 0.7 for t in (12.0, 14.0, 16.0, 18.0))      # music alone
    assert all(conf[t] < 0.3 for t in (24.0, 26.0))                  # silence, noise
    assert all(conf[t] > 0.7 for t in (32.0, 34.0, 36.0, 38.0, 40.0))  # speech over music (-6 dB)
    ten = processing.detect_music(y, sr, all_windows=True, detector="cnn")
    assert [x["start_time"] for x in ten] == [0.0, 10.0, 20.0, 30.0, 40.0]


def test_cue_finds_music_under_speech_on_the_demo(model):
    from shakelab import audio

    y, sr = audio.load(ROOT / "data" / "demo.flac")
    step, plain = cnn.music_probability(y, sr, cue=False)
    step, cued = cnn.music_probability(y, sr, cue=True)
    sl = slice(int(32 / step), int(44 / step))
    assert cued[sl].mean() > plain[sl].mean() and cued[sl].mean() > 0.8
    speech = slice(0, int(10 / step))
    assert cued[speech].mean() < 0.2


def test_silence_and_noise_are_not_music(model):
    rng = np.random.default_rng(5)
    silence = processing.detect_music(np.zeros(3 * SR, np.float32), SR, all_windows=True, detector="cnn")
    assert all(x["confidence"] == 0.0 for x in silence)
    noise = (rng.standard_normal(6 * SR) * 0.05).astype(np.float32)
    assert processing.detect_music(noise, SR, all_windows=True, detector="cnn")[0]["confidence"] < 0.2
    assert processing.detect_music(noise, SR, detector="cnn") == []


def test_detector_interface(model):
    hop, p = cnn.CNNDetector().music_probability(tone_mix(4.0), SR)
    assert hop == 0.02 and p.shape == (200,) and p.min() >= 0 and p.max() <= 1


def test_fallback_without_weights_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SHAKELAB_MODELS", str(tmp_path))
    monkeypatch.setattr(cnn, "_WARNED", False)
    assert not cnn.available()
    with caplog.at_level(logging.WARNING, logger="shakelab.server.cnn"):
        assert detectors.get_detector("auto").name == "features"
        assert detectors.get_detector("auto").name == "features"
    msgs = [r.getMessage() for r in caplog.records if r.name == "shakelab.server.cnn"]
    assert len(msgs) == 1 and "shakelab models fetch" in msgs[0] and "feature-based" in msgs[0]
    with pytest.raises(RuntimeError, match="models fetch"):
        cnn.CNNDetector().music_probability(np.zeros(SR, np.float32), SR)


# ----------------------------------------------------------------------------- background cue
def test_bgm_features_sustained_tones_vs_noise():
    rng = np.random.default_rng(0)
    noise = rng.exponential(1.0, (200, 197)).astype(np.float32)
    tones = noise * 0.01
    tones[:, [20, 40, 60, 80]] += 100.0
    fn, ft = bgm.features(noise), bgm.features(tones)
    assert fn.shape == (200, 9)
    assert ft[:, 4].mean() > fn[:, 4].mean() + 0.3     # tonal_sustained_mid: held notes stand out
    assert ft[:, 3].mean() > fn[:, 3].mean()          # more of the energy is sustained


def test_bgm_probability_is_bounded_and_needs_the_embedding():
    p = bgm.probability(np.zeros((50, 9)), np.full((50, 3), 1 / 3), np.zeros((50, bgm.EMBED_DIM)))
    assert p is not None and p.shape == (50,) and np.all((p >= 0) & (p <= 1))
    assert bgm.params()["W1"].shape[0] == len(bgm.FUSED_NAMES)
    with pytest.raises(ValueError, match="embed"):
        bgm.probability(np.zeros((50, 9)), np.full((50, 3), 1 / 3))


def test_bgm_probability_is_the_network_on_the_standardised_two_second_means():
    rng = np.random.default_rng(3)
    feats, embed = rng.standard_normal((300, 9)), rng.standard_normal((300, bgm.EMBED_DIM))
    probs = rng.dirichlet(np.ones(3), 300)
    prm = bgm.params()
    x = np.concatenate([bgm.design(feats, probs), bgm.context(embed)], axis=1)
    z = (x - prm["mean"]) / prm["scale"]
    want = 1 / (1 + np.exp(-(np.tanh(z @ prm["W1"] + prm["b1"]) @ prm["W2"] + prm["b2"])))
    assert np.allclose(bgm.probability(feats, probs, embed), want, atol=1e-9)
    assert np.allclose(bgm.context(embed)[150], embed[100:200].mean(axis=0))     # a 2-s (100-step) mean


def test_hmm_smooth_votes_down_flickers_and_keeps_blocks():
    flicker = np.r_[np.full(500, 0.2), np.full(5, 0.8), np.full(500, 0.2)]
    assert cnn.hmm_smooth(flicker).max() < 0.5
    block = np.r_[np.full(500, 0.3), np.full(500, 0.7)]
    post = cnn.hmm_smooth(block)
    assert post[:490].max() < 0.5 < post[510:].min()
    assert np.allclose(cnn.hmm_smooth(np.full(20, 0.5)), 0.5) and len(cnn.hmm_smooth(np.zeros(0))) == 0


def test_hmm_counts_one_two_second_mean_once():
    """The fused decision is a 2-s mean: 100 steps of it are one observation, not 100."""
    blip = np.r_[np.full(500, 0.3), np.full(100, 0.9), np.full(500, 0.3)]
    assert cnn.hmm_smooth(blip).max() < 0.5 < cnn.hmm_smooth(blip, evidence=1.0).max()
    block = np.r_[np.full(500, 0.3), np.full(1000, 0.9), np.full(500, 0.3)]
    assert cnn.hmm_smooth(block)[700:1300].min() > 0.5


def test_block_analysis_equals_one_pass(model, monkeypatch):
    rng = np.random.default_rng(9)
    y = np.r_[tone_mix(4.0), rng.standard_normal(3 * SR + 777).astype(np.float32) * 0.05, tone_mix(2.0, seed=4)]
    monkeypatch.setattr(cnn, "BLOCK", 10 ** 9)
    one = cnn.frame_outputs(y, SR)
    monkeypatch.setattr(cnn, "BLOCK", 200)      # 2-s blocks: many seams
    blocks = cnn.frame_outputs(y, SR)
    assert one.probs.shape == blocks.probs.shape == (int(np.ceil(((len(y) - 400) // 160 + 1) / 2)), 3)
    assert np.array_equal(np.isnan(one.probs), np.isnan(blocks.probs))
    assert np.nanmax(np.abs(one.probs - blocks.probs)) < 1e-5     # per-patch sums start elsewhere
    assert np.allclose(one.cue, blocks.cue, atol=1e-5) and np.array_equal(one.active, blocks.active)


def _train_bgm():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_bgm", ROOT / "tools" / "train_bgm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fused_fit_is_deterministic_and_leave_one_source_out_never_sees_a_clips_sources():
    tb = _train_bgm()
    rng = np.random.default_rng(0)
    table = []
    for k, (speech, music) in enumerate([("pyannote", ""), ("flite", ""), ("", "arcade"), ("", "pygame"),
                                         ("pyannote", "arcade"), ("flite", "pygame")]):
        label = int(bool(music))
        n = 500
        probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
        r = {"name": f"c{k}", "condition": "x", "speech": speech, "music": music, "bed": "", "duration": n * 0.02,
             "label": label, "probs": probs, "active": np.ones(n, bool),
             "cue": (rng.standard_normal((n, 9)) + 2 * label).astype(np.float32),
             "embed": rng.standard_normal((n // tb.SUBSAMPLE, bgm.EMBED_DIM)).astype(np.float16)}
        r["sources"] = {f"{key}:{r[key]}" for key in ("speech", "music") if r[key]}
        table.append(r)
    a, b = tb.fit_params(table), tb.fit_params(table)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["W1"].shape == (len(bgm.FUSED_NAMES), tb.HIDDEN * tb.RESTARTS)      # the restarts' units side by side
    p = [tb.track(r, a).mean() for r in table]
    assert min(p[2:]) > 0.5 > max(p[:2])            # the cue columns separate music from speech
    loso = tb.loso_params(table)           # clip 4 (pyannote over arcade) is scored by a fit without both
    unseen = tb.fit_params([table[1], table[3], table[5]])
    assert all(np.array_equal(loso[4][k], unseen[k]) for k in unseen)
    assert not np.array_equal(loso[4]["W1"], a["W1"])
    scores = tb.score(table, [tb.track(r, a) for r in table])
    assert scores["x"][2] == pytest.approx(60.0) and 0 <= scores["x"][1] <= 1


def test_fit_record_names_the_clips_and_inputs_that_differ(tmp_path, capsys):
    tb = _train_bgm()
    d = tmp_path / "set"
    d.mkdir()
    rows = [("000_speech", "flite", ""), ("001_music", "", "arcade"), ("002_speech_music_-12", "flite", "pygame")]
    (d / "manifest.csv").write_text("name,condition,speech,music,chain,bed\n" + "".join(
        f"{n},{n[4:]},{s},{m},clean,\n" for n, s, m in rows))
    for k, (n, _, _) in enumerate(rows):
        sf.write(str(d / f"{n}.wav"), np.full(1600, 0.01 * (k + 1), np.float32), 16000, subtype="PCM_16")
        (d / f"{n}.txt").write_text("" if k == 0 else "0\t0.1\tmusic\n")
    inputs = {"espeak-ng": "a" * 64, "chain mp3": "b" * 64}
    record = tmp_path / "broadcast.sha256"
    tb.write_record(d, record, inputs=inputs)
    assert tb.verify_set(d, record, inputs=inputs)
    assert "all 3 equal" in capsys.readouterr().out
    sf.write(str(d / "001_music.wav"), np.full(1600, 0.5, np.float32), 16000, subtype="PCM_16")   # one sample set
    assert not tb.verify_set(d, record, inputs={**inputs, "chain mp3": "c" * 64})
    out = capsys.readouterr().out
    assert "inputs: 1 of 2 differ from the record (broadcast.sha256): chain mp3" in out
    assert "clips: 1 of 3 differ from the record (broadcast.sha256): 001_music" in out
    assert "differing clips by music: arcade 1" in out
