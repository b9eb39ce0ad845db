"""Run the package's doctests (``pytest --doctest-modules shakelab``) isolated like the suite.

A docstring example may call ``shakelab.connect()``: here it gets a private local server in a
temporary data dir (stopped with the process), a temporary ledger and no token, so collecting
and running the doctests never starts the per-user detached server nor touches the user's
files. Test items of ``tests/`` are left to ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_doctest(request: pytest.FixtureRequest) -> None:
    if type(request.node).__name__ != "DoctestItem":
        return
    tmp = request.getfixturevalue("tmp_path")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name in ("AUDIOSHAKE_API_TOKEN", "AUDIOSHAKE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "private")
    monkeypatch.setenv("SHAKELAB_SERVER_DIR", str(tmp / "local-server"))
    monkeypatch.setenv("SHAKELAB_LEDGER", str(tmp / "ledger.sqlite"))
