"""The run protocol both clients share, which widgets, batches and the CLI call.

``start`` (one run per model: a job each, or the targets of one task), ``refresh``, ``poller``,
``download``, ``segments``, ``provenance``, ``recorded`` and ``catalogue``, against the real
local server through each API.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from shakelab import catalog
from shakelab.client import Client
from shakelab.frames import SEGMENTS_COLUMNS
from shakelab.ledger import Ledger
from shakelab.tasks import TasksClient

SR = 16000


@pytest.fixture(params=["jobs", "tasks"])
def api_client(request, fresh_server):
    cls = Client if request.param == "jobs" else TasksClient
    with cls(fresh_server.token, base_url=fresh_server.base_url, ledger=Ledger()) as client:
        yield request.param, client


def _noise(path, seconds=3.0):
    sf.write(path, 0.05 * np.random.default_rng(3).standard_normal(int(seconds * SR)).astype(np.float32), SR)
    return path


def test_start_refresh_poll_download_segments_the_same_on_either_api(api_client, fresh_server, tmp_path):
    api, client = api_client
    wav = _noise(tmp_path / "take.wav")
    assert client.catalogue == catalog.LOCAL_MODELS     # loopback: the local server's models, both APIs
    runs = client.start(wav, ["music_detection", "vocals"], format={"vocals": "flac"}, progress=False)
    assert [r.model for r in runs] == ["music_detection", "vocals"] and not any(r.reused for r in runs)
    stats = fresh_server.stats()
    assert (stats["jobs"], stats["tasks"]) == ((2, 0) if api == "jobs" else (0, 1))
    done = [client.poller(run).run() for run in runs]
    assert [d.id for d in done] == [r.id for r in runs] and all(d.completed for d in done)

    gets = "GET /job/{id}" if api == "jobs" else "GET /tasks/{id}"
    before = fresh_server.stats()["requests"].get(gets, 0)
    fresh = client.refresh(done)
    assert [f.id for f in fresh] == [d.id for d in done] and all(f.completed for f in fresh)
    # the Tasks API answers both targets in one GET of their task
    assert fresh_server.stats()["requests"][gets] - before == (2 if api == "jobs" else 1)

    (path,) = client.download(done[1], tmp_path / "out", folder="", progress=False)
    assert path.name == "vocals.flac" and sf.info(path).format == "FLAC"
    segments = client.segments(done[0])
    assert tuple(segments.columns) == SEGMENTS_COLUMNS and segments.empty      # noise: no music found
    assert client.provenance(done[0]).startswith("local:")
    assert done[0].asset_id == done[1].asset_id is not None and done[1].duration_s is not None


def test_recorded_answers_from_this_apis_records_only(fresh_server, tmp_path):
    wav = _noise(tmp_path / "take.wav")
    ledger = Ledger()
    jobs = Client(fresh_server.token, base_url=fresh_server.base_url, ledger=ledger)
    tasks = TasksClient(fresh_server.token, base_url=fresh_server.base_url, ledger=ledger)
    (job,) = jobs.start(wav, ["vocals"], format="wav", progress=False)
    jobs.poller(job).run()
    requests = sum(fresh_server.stats()["requests"].values())
    assert jobs.recorded(wav, "vocals", "wav").id == job.id
    # the same file, model and format done through the Jobs API is not a Tasks API result
    assert tasks.recorded(wav, "vocals", "wav") is None
    assert sum(fresh_server.stats()["requests"].values()) == requests          # no request either way
    (target,) = tasks.start(wav, ["vocals"], format="wav", progress=False)
    tasks.poller(target).run()
    assert tasks.recorded(wav, "vocals", "wav").id == target.id
    # started again: the ledger's task comes back, nothing is created
    (again,) = tasks.start(wav, ["vocals"], format="wav", progress=False)
    assert again.reused and again.id == target.id and fresh_server.stats()["tasks"] == 1
    jobs.close()
    tasks.close()


def test_a_failed_run_raises_with_the_services_message_on_either_api(api_client, tmp_path):
    from shakelab.errors import JobFailedError

    api, client = api_client
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"plain text, not audio\n" * 40)
    (run,) = client.start(bogus, ["music_detection"], progress=False)
    with pytest.raises(JobFailedError) as caught:
        client.poller(run).run()
    failed = client.refresh(run)
    assert failed.failed and failed.error and failed.error in str(caught.value)
    assert failed.status_text == ("failed" if api == "jobs" else "error")


def test_start_on_the_tasks_api_refuses_a_callback_before_sending(fresh_server, tmp_path):
    from shakelab.errors import ValidationError

    with TasksClient(fresh_server.token, base_url=fresh_server.base_url) as tasks, \
            pytest.raises(ValidationError, match=r"`callback_url` 'https://example.com/h': the Tasks API has no"):
        tasks.start(_noise(tmp_path / "a.wav"), ["vocals"], callback_url="https://example.com/h")
    assert fresh_server.stats()["requests"] == {}
