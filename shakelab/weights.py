"""Weights of the local music detector: fetched once by a setup step, never at run time.

The speech/music/noise CNN of inaSpeechSegmenter (MIT licence) ships inside the PyPI wheel
``inaSpeechSegmenter==0.6.8`` as ``inaSpeechSegmenter/keras_speech_music_noise_cnn.hdf5``.
:func:`fetch` takes that wheel from the package registry with ``pip download --no-deps``,
extracts the file, checks its pinned SHA-256 and converts it once to a numpy ``.npz``
(the only file the server reads; no h5py or TensorFlow at run time).

Where: ``$SHAKELAB_MODELS`` if set, else the user cache directory ``shakelab/models/``
(platformdirs, e.g. ``~/.cache/shakelab/models``).

Examples
--------
>>> from shakelab import weights
>>> weights.fetch() == weights.path()   # fetched by `make setup`: nothing to do
True
>>> weights.available(), weights.path().name
(True, 'speech_music_noise_cnn.npz')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from shakelab.errors import ShakelabError, ValidationError

WHEEL_REQUIREMENT = "inaSpeechSegmenter==0.6.8"
WHEEL_MEMBER = "inaSpeechSegmenter/keras_speech_music_noise_cnn.hdf5"
HDF5_NAME = "keras_speech_music_noise_cnn.hdf5"
NPZ_NAME = "speech_music_noise_cnn.npz"
SHA256 = "f04b5e3c86fa2e81666d106b0867350fe7858c7bd006c2a74c27b5b45507e7d8"

__all__ = [
    "SHA256",
    "WHEEL_REQUIREMENT",
    "available",
    "convert",
    "extract",
    "fetch",
    "hdf5_path",
    "models_dir",
    "path",
    "sha256_of",
]


def models_dir() -> Path:
    """Give the directory of the detector weights: ``$SHAKELAB_MODELS`` or the user cache ``shakelab/models``.

    Examples
    --------
    >>> import os
    >>> saved = os.environ.get("SHAKELAB_MODELS")
    >>> os.environ["SHAKELAB_MODELS"] = "/tmp/m"
    >>> str(models_dir())
    '/tmp/m'
    >>> _ = os.environ.pop("SHAKELAB_MODELS") if saved is None else os.environ.update(SHAKELAB_MODELS=saved)
    """
    env = os.environ.get("SHAKELAB_MODELS")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("shakelab")) / "models"


def path() -> Path:
    """Path of the converted weights (``.npz``) the detector loads; it may not exist yet.

    Examples
    --------
    >>> path().name
    'speech_music_noise_cnn.npz'
    """
    return models_dir() / NPZ_NAME


def hdf5_path() -> Path:
    """Path of the original Keras ``.hdf5`` file, as extracted from the wheel.

    Examples
    --------
    >>> hdf5_path().name
    'keras_speech_music_noise_cnn.hdf5'
    """
    return models_dir() / HDF5_NAME


def available() -> bool:
    """Tell whether the converted weights are present (after ``shakelab models fetch``).

    Examples
    --------
    >>> import os, tempfile
    >>> saved = os.environ.get("SHAKELAB_MODELS")
    >>> os.environ["SHAKELAB_MODELS"] = tempfile.mkdtemp()
    >>> available()
    False
    >>> _ = path().write_bytes(b"")
    >>> available()
    True
    >>> _ = os.environ.pop("SHAKELAB_MODELS") if saved is None else os.environ.update(SHAKELAB_MODELS=saved)
    """
    return path().is_file()


def sha256_of(file: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Examples
    --------
    >>> len(sha256_of(__file__))
    64
    """
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract(wheel: str | os.PathLike, dest_dir: str | os.PathLike, *, sha256: str = SHA256) -> Path:
    """Extract the CNN ``.hdf5`` from an inaSpeechSegmenter wheel and verify its SHA-256.

    Raises :class:`~shakelab.errors.ValidationError` naming the wheel when the member is missing or its checksum differs
    (nothing is left behind in ``dest_dir`` then).

    Examples
    --------
    >>> import hashlib, zipfile
    >>> with zipfile.ZipFile("fake.whl", "w") as zf:
    ...     zf.writestr(WHEEL_MEMBER, b"not a model")
    >>> extract("fake.whl", "m", sha256=hashlib.sha256(b"not a model").hexdigest())
    PosixPath('m/keras_speech_music_noise_cnn.hdf5')
    >>> extract("fake.whl", "m")   # the pinned checksum
    Traceback (most recent call last):
    ...
    shakelab.errors.ValidationError: ... in 'fake.whl' has SHA-256 ..., expected ...
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValidationError(f"`wheel` {os.fspath(wheel)!r} is not a readable wheel: {exc}") from exc
    with zf:
        if WHEEL_MEMBER not in zf.namelist():
            raise ValidationError(f"`wheel` {os.fspath(wheel)!r} holds no {WHEEL_MEMBER!r}")
        tmp = dest_dir / (HDF5_NAME + ".part")
        with zf.open(WHEEL_MEMBER) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    got = sha256_of(tmp)
    if got != sha256:
        tmp.unlink()
        raise ValidationError(f"{WHEEL_MEMBER!r} in {os.fspath(wheel)!r} has SHA-256 {got}, expected {sha256}")
    final = dest_dir / HDF5_NAME
    os.replace(tmp, final)
    return final


def convert(hdf5: str | os.PathLike, npz: str | os.PathLike) -> Path:
    """Convert the Keras ``.hdf5`` model to a numpy ``.npz`` (h5py needed here only).

    The archive holds ``model_config`` (the Keras JSON, as a 0-d string array) and, per layer
    with weights, ``<layer name>/<weight name>`` arrays (e.g. ``conv2d_12/kernel``,
    ``batch_normalization_15/moving_mean``) in float32.

    Examples
    --------
    >>> convert(hdf5_path(), "cnn.npz")
    PosixPath('cnn.npz')
    >>> with np.load("cnn.npz") as arrays:
    ...     "model_config" in arrays, arrays["conv2d_12/kernel"].dtype
    (True, dtype('float32'))
    """
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(hdf5, "r") as f:
        config = f.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else str(config)
        arrays["model_config"] = np.array(config)
        group = f.get("model_weights", f)
        for layer in json.loads(config)["config"]["layers"]:
            name = layer["config"]["name"]
            if name not in group:
                continue
            lg = group[name]
            for wname in lg.attrs.get("weight_names", []):
                wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                short = wname.split("/")[-1].split(":")[0]
                arrays[f"{name}/{short}"] = np.asarray(lg[wname], dtype=np.float32)
    npz = Path(npz)
    tmp = npz.with_name(npz.name + ".part.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds like allow_pickle
    os.replace(tmp, npz)
    return npz


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", WHEEL_REQUIREMENT, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("inaSpeechSegmenter-*.whl")) + sorted(dest.glob("inasegmenter*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ShakelabError(f"`pip download --no-deps {WHEEL_REQUIREMENT}` failed "
                            f"(exit {proc.returncode}): {' | '.join(tail)}")
    return wheels[0]


def fetch(force: bool = False, *, wheel: str | os.PathLike | None = None) -> Path:
    """Make the detector weights available in :func:`models_dir`; return the ``.npz`` path.

    A setup step (``shakelab models fetch``, run by ``make setup``); never called by the server.
    Does nothing when the converted weights already exist and the ``.hdf5`` checksum holds,
    unless ``force``. ``wheel`` takes an already downloaded inaSpeechSegmenter wheel instead of
    running ``pip download --no-deps inaSpeechSegmenter==0.6.8``.

    Raises :class:`~shakelab.errors.ShakelabError` when pip fails (no registry, say),
    :class:`~shakelab.errors.ValidationError` (a ``ValueError``) when the checksum differs.

    Examples
    --------
    >>> fetch() == path()   # already there (``make setup``): returned without a download
    True
    """
    out_dir = models_dir()
    npz, h5 = path(), hdf5_path()
    if not force and npz.is_file() and h5.is_file() and sha256_of(h5) == SHA256:
        return npz
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shakelab-wheel-") as tmp:
        whl = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
        h5 = extract(whl, out_dir)
    return convert(h5, npz)
