"""Run the package's doctests (``pytest --doctest-modules shakelab``) isolated like the suite.

A docstring example may call ``shakelab.connect()``: here it gets a private local server in a
temporary data dir (stopped with the process), a temporary ledger and no token, so collecting
and running the doctests never starts the per-user detached server nor touches the user's
files. Each example runs in its own temporary folder holding ``data/demo.flac`` (the packaged
demo recording) and ``song.wav`` (3 s of its music, for fast examples); an example that
mentions ``client`` or ``ledger`` finds a ready ``client = shakelab.connect()`` (in
:mod:`shakelab.tasks`, ``shakelab.connect(api="tasks")``) and its ``ledger``. Test items of
``tests/`` are left to ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SONG_START, SONG_SECONDS = 20, 3  # music, per data/demo_labels.txt


@pytest.fixture(scope="session")
def _song_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundfile as sf

    from shakelab.demo import DEMO_RECORDING

    sr = sf.info(DEMO_RECORDING).samplerate
    y, sr = sf.read(DEMO_RECORDING, start=SONG_START * sr, frames=SONG_SECONDS * sr, dtype="float32")
    path = tmp_path_factory.mktemp("doctest-data") / "song.wav"
    sf.write(path, y, sr)
    return path


@pytest.fixture(autouse=True)
def _isolated_doctest(request: pytest.FixtureRequest) -> None:
    if type(request.node).__name__ != "DoctestItem":
        return
    tmp = request.getfixturevalue("tmp_path")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name in ("AUDIOSHAKE_API_TOKEN", "AUDIOSHAKE_API_KEY", "AUDIOSHAKE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "private")
    monkeypatch.setenv("SHAKELAB_SERVER_DIR", str(tmp / "local-server"))
    monkeypatch.setenv("SHAKELAB_LEDGER", str(tmp / "ledger.sqlite"))

    from shakelab.demo import DEMO_RECORDING

    work = tmp / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "demo.flac").symlink_to(DEMO_RECORDING)
    (work / "song.wav").symlink_to(request.getfixturevalue("_song_clip"))
    monkeypatch.chdir(work)

    dtest = request.node.dtest
    source = "".join(example.source for example in dtest.examples)
    if "client" in source or "ledger" in source:
        import shakelab

        # shakelab.tasks's examples speak of its own client: the local server's Tasks API
        tasks = dtest.name.startswith("shakelab.tasks.")
        client = shakelab.connect(api="tasks") if tasks else shakelab.connect()
        dtest.globs["client"] = client
        dtest.globs["ledger"] = client.ledger
