"""Shared fixtures: a real local Jobs API server on loopback, and a client for it.

No test talks to the internet; no test mocks shakelab's own code.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test may see a real token, the user's ledger, the user's cache or the user's local server.

    ``connect()`` runs a private server inside the test process (or the kernel a test starts),
    on a data dir in the test's tmp_path; tests of the shared server ask for it explicitly.
    """
    monkeypatch.delenv("AUDIOSHAKE_API_TOKEN", raising=False)
    monkeypatch.delenv("AUDIOSHAKE_BASE_URL", raising=False)
    monkeypatch.delenv("SHAKELAB_IDLE_TIMEOUT", raising=False)
    monkeypatch.setenv("SHAKELAB_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "private")
    monkeypatch.setenv("SHAKELAB_SERVER_DIR", str(tmp_path / "local-server"))
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One local server for the session (ephemeral port, temp data dir, private links allowed, test hooks)."""
    from shakelab.server import LocalServer

    srv = LocalServer(data_dir=tmp_path_factory.mktemp("server"), token="test-token-0123456789",
                      port=0, workers=2, allow_private_links=True, test_hooks=True)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of the test's own, for tests that count jobs, inject faults or restart."""
    from shakelab.server import LocalServer

    srv = LocalServer(data_dir=tmp_path / "server", token="fresh-token-0123456789",
                      port=0, workers=2, allow_private_links=True, test_hooks=True)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    """A :class:`shakelab.Client` for the session server."""
    from shakelab.client import Client

    return Client(token=server.token, base_url=server.base_url)


@pytest.fixture(scope="session")
def demo_path():
    """The demo recording shipped in data/."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "data" / "demo.flac"
