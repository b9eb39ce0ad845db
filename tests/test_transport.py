"""The client core on its own: Transport (auth hooks, errors, the rate gate) and Poller, against the
real local server (the same core a second client, the Tasks API's, is built on)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from shakelab.client import Client
from shakelab.errors import (
    APIError, AuthenticationError, BatchCancelled, JobFailedError, JobTimeoutError, MalformedResponseError,
    NotFoundError,
)
from shakelab.models import Job, JobStatus
from shakelab.transport import (
    ApiKeyAuth, BearerAuth, Poller, RateGate, Schedule, Secret, Transport, parse_retry_after, poll,
)

SR = 22050


@pytest.fixture
def wav(tmp_path):
    import soundfile as sf

    path = tmp_path / "beep.wav"
    t = np.arange(2 * SR) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), SR)
    return path


def test_bearer_transport_talks_to_the_jobs_api(fresh_server):
    transport = Transport(fresh_server.base_url, BearerAuth(fresh_server.token))
    with transport.session:
        usage = transport.request("GET", "/usage")
    assert isinstance(usage, dict) and "usage" in usage
    assert fresh_server.token not in repr(transport) + repr(vars(transport))


def test_api_key_auth_sends_the_header_and_never_shows_the_key(fresh_server, caplog):
    key = "ashke_example-key-0123456789"
    seen: list[dict] = []
    transport = Transport(fresh_server.base_url, ApiKeyAuth(key), max_retries=0)
    transport.session.hooks["response"].append(lambda resp, *a, **k: seen.append(dict(resp.request.headers)))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as info:   # the Jobs API wants a Bearer token: 401
        transport.request("GET", "/usage")
    assert seen[0]["x-api-key"] == key and "Authorization" not in seen[0]
    shown = str(info.value) + repr(info.value.body) + repr(transport) + caplog.text
    assert key not in shown
    assert repr(ApiKeyAuth(Secret(key))) == "ApiKeyAuth(<hidden>)"


def test_a_garbled_2xx_is_a_malformed_response_error(job_on_server):
    client, job, srv = job_on_server
    client.max_retries = 0
    srv.faults.add(method="GET", path="/job/*", status=200, body="{truncated", times=1)
    with pytest.raises(MalformedResponseError) as info:
        client.get_job(job.id)
    assert isinstance(info.value, APIError) and isinstance(info.value, ValueError)
    assert info.value.status == 200 and "not JSON" in info.value.message


def test_the_gate_is_the_one_backoff_of_a_429(job_on_server):
    """A gated 429 is waited out at the gate (once), not by the transport's own sleep on top."""
    client, job, srv = job_on_server
    srv.faults.add(method="GET", path="/job/*", status=429, headers={"Retry-After": "0.5"}, times=1)
    gate = RateGate()
    with client.transport.gated(gate) as used:
        assert used is gate and client.transport.gate is gate
        with client.transport.gated(RateGate()) as nested:   # a second batch on the same client shares it
            assert nested is gate
        assert client.get_job(job.id).id == job.id
    assert gate.hits == 1 and len(gate.pauses) == 1 and gate.waited_s >= 0.25
    assert client.transport.gate is None


@pytest.fixture
def job_on_server(fresh_server, wav):
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url, backoff=0.05)
    job = client.create_job(client.upload(wav, progress=False), "music_detection")
    yield client, job, fresh_server
    client.close()


def test_poller_steps_one_fetch_at_a_time(job_on_server):
    client, job, srv = job_on_server
    states: list[str] = []
    poller = Poller(lambda: client.get_job(job.id), lambda j: j.status, subject=job,
                    schedule=Schedule(first=0.05, growth=1.0, cap=0.05),
                    on_update=lambda j: states.append(j.status_text))
    before = srv.stats()["requests"].get("GET /job/{id}", 0)
    result = None
    while result is None:
        result = poller.step()
        assert srv.stats()["requests"]["GET /job/{id}"] - before == poller.polls   # one GET per step
        if result is None:
            threading.Event().wait(poller.next_delay())
    assert result.completed and states[-1] == "completed" and poller.last is result


def test_poll_deadline_says_the_job_runs_on_and_how_to_resume(job_on_server):
    client, job, srv = job_on_server
    srv.faults.processing_delay = 60
    slow = client.create_job(job.asset_id, "vocals")
    with pytest.raises(JobTimeoutError) as info:
        poll(lambda: client.get_job(slow.id), lambda j: j.status, subject=slow, timeout=0.3,
             schedule=Schedule(first=0.1), resume_hint=f"tasks.wait({slow.id!r})")
    message = str(info.value)
    assert slow.id in message and "still" in message and f"tasks.wait({slow.id!r})" in message
    assert info.value.job.id == slow.id and not info.value.job.is_done


def test_cancel_event_raises_batch_cancelled_not_a_timeout(job_on_server):
    client, job, srv = job_on_server
    srv.faults.processing_delay = 60
    slow = client.create_job(job.asset_id, "vocals")
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        with pytest.raises(BatchCancelled) as info:
            client.poller(slow, cancel=cancel).run()    # pauses of 1 s and more: cancelled mid-pause
    finally:
        timer.cancel()
    assert not isinstance(info.value, JobTimeoutError)
    assert info.value.job.id == slow.id and "keeps running" in str(info.value)


def test_a_404_is_survived_for_the_grace_only(fresh_server):
    client = Client(token=fresh_server.token, base_url=fresh_server.base_url)
    poller = client.poller("never-created", poll_interval=0.05)
    poller.not_found_grace = 0.2
    with pytest.raises(NotFoundError):
        poller.run()
    assert poller.polls >= 2


def test_failed_state_and_the_tasks_api_classifier():
    """The classifier is any state -> JobStatus: a Tasks API task is done when completedAt is set."""
    failed = Job.from_payload({"id": "j1", "status": "error", "statusInfo": {"message": "not audio"}})
    with pytest.raises(JobFailedError, match="not audio"):
        poll(lambda: failed, lambda j: j.status)
    tasks = iter([{"id": "t1", "targets": [{"status": "processing"}]},
                  {"id": "t1", "completedAt": "2026-03-25T03:16:17.442Z", "targets": [{"status": "completed"}]}])
    done = poll(lambda: next(tasks), lambda t: JobStatus.COMPLETED if t.get("completedAt") else JobStatus.PROCESSING,
                schedule=Schedule(first=0.01))
    assert done["completedAt"]
    assert [JobStatus(s).failed for s in ("error", "failed", "completed", "processing")] == [True, True, False, False]


def test_one_retry_after_parser():
    from shakelab import batch, client

    assert client.parse_retry_after is parse_retry_after and batch.RateGate is RateGate
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None
