"""The documented Dask path, for real: ``batch.run(..., executor=dask_client.get_executor())`` on a
``dask.distributed.LocalCluster`` with worker processes, against the real local server.

Each worker process builds its own client from ``AUDIOSHAKE_API_TOKEN`` (a Client never pickles
its token) and opens the same ledger path, so a batch resumes across Dask exactly as with threads.
"""

from __future__ import annotations

import logging
import os

import pytest

from shakelab import batch
from shakelab.client import Client
from shakelab.ledger import Ledger

from test_batch import make_audio

distributed = pytest.importorskip("distributed", reason="the [dask] extra is part of [test]")


@pytest.fixture
def dask_client(fresh_server, monkeypatch):
    """A two-process LocalCluster whose workers see the local server's token in their environment."""
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", fresh_server.token)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _client(server) -> Client:
    return Client(token=server.token, base_url=server.base_url, ledger=Ledger())


def test_batch_runs_on_dask_worker_processes_and_reruns_for_free(fresh_server, dask_client, tmp_path):
    files = make_audio(tmp_path / "rec", 4)
    client = _client(fresh_server)
    worker_pids = set(dask_client.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids

    with distributed.get_task_stream(client=dask_client) as stream:
        result = batch.run(tmp_path / "rec", ["music_detection"], client=client,
                           executor=dask_client.get_executor(), concurrency=4, progress=False)
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert len(stream.data) == len(files)                     # every file's work ran on a Dask worker
    assert sorted(result.jobs["source"]) == sorted(str(f) for f in files)
    assert (result.jobs["action"] == "submitted").all()
    assert fresh_server.stats()["jobs"] == len(files) and fresh_server.stats()["uploads"] == len(files)
    assert set(result.segments["source"]) <= {str(f) for f in files}

    again = batch.run(tmp_path / "rec", ["music_detection"], client=client,
                      executor=dask_client.get_executor(), progress=False)
    assert (again.jobs["action"] == "skipped").all()
    assert fresh_server.stats()["jobs"] == len(files) and fresh_server.stats()["uploads"] == len(files)


def test_dask_batch_resumes_jobs_left_in_flight(fresh_server, dask_client, tmp_path):
    """Jobs submitted by an earlier run that died are polled by the Dask workers, never paid again."""
    files = make_audio(tmp_path / "rec", 3)
    client = _client(fresh_server)
    fresh_server.faults.processing_delay = 60.0            # nothing finishes before the "crash"
    in_flight = [client.submit(f, ["music_detection"], wait=False, progress=False)[0].id for f in files]
    assert fresh_server.stats()["jobs"] == len(files)
    fresh_server.faults.clear()                             # the waiting jobs now run

    result = batch.run(tmp_path / "rec", ["music_detection"], client=client,
                       executor=dask_client.get_executor(), progress=False)
    assert result.ok, result.failed[["source", "error"]].to_string()
    assert sorted(result.jobs["job_id"]) == sorted(in_flight)
    assert (result.jobs["action"] == "resumed").all()
    assert fresh_server.stats()["jobs"] == len(files) and fresh_server.stats()["uploads"] == len(files)
