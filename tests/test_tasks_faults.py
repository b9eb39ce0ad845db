"""TasksClient under the local server's fault injection: the same retry rule as Client (429 with
Retry-After, 503, garbage bodies), lost answers of POST /tasks (exactly one task afterwards), a crash
between sending and the answer, expired links."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from shakelab.errors import MalformedResponseError, RateLimitError, ServerError, UnconfirmedTaskError
from shakelab.ledger import Ledger
from shakelab.models import tag_metadata
from shakelab.tasks import TasksClient
from tests.helpers import request_count as count
from tests.helpers import write_beep

TARGETS = [{"model": "music_detection", "formats": ["json"]}]


@pytest.fixture
def wav(tmp_path):
    return write_beep(tmp_path / "beep.wav")


def make(srv, **kwargs) -> TasksClient:
    kwargs.setdefault("backoff", 0.05)
    return TasksClient(api_key=srv.token, base_url=srv.base_url, **kwargs)


def server_tasks(srv) -> list[dict]:
    """Every task the server holds (its own list, read with plain requests)."""
    resp = requests.get(f"{srv.base_url}/tasks", params={"take": 100}, headers={"x-api-key": srv.token}, timeout=10)
    resp.raise_for_status()
    return resp.json()


@pytest.fixture
def uploaded(fresh_server, wav):
    client = make(fresh_server)
    return client, client.upload(wav, progress=False)


# --------------------------------------------------------------------------- the retry rule
def test_429_retry_after_is_honoured(uploaded, fresh_server, caplog):
    client, asset = uploaded
    caplog.set_level(logging.WARNING, logger="shakelab.tasks")
    task = client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=429, headers={"Retry-After": "1"}, times=1)
    before = count(fresh_server, "GET /tasks/{id}")
    assert client.get_task(task.id).id == task.id
    assert count(fresh_server, "GET /tasks/{id}") == before + 2
    assert [r.args[-1] for r in caplog.records if "retry" in r.msg] == [1.0]


def test_retry_after_longer_than_allowed_raises(uploaded, fresh_server):
    client, _ = uploaded
    fresh_server.faults.add(method="GET", path="/tasks", status=429, headers={"Retry-After": "3600"}, times=1)
    with pytest.raises(RateLimitError) as err:
        client.tasks()
    assert err.value.retry_after == 3600


def test_503_and_garbage_bodies_are_retried_for_reads(uploaded, fresh_server):
    client, asset = uploaded
    task = client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=503, times=2)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=200, body="<html>proxy</html>", times=1)
    assert client.get_task(task.id).id == task.id
    fresh_server.faults.add(method="GET", path="/tasks/*", status=503, times=None)
    client.transport.max_retries = 1
    with pytest.raises(ServerError):
        client.get_task(task.id)
    fresh_server.faults.clear()
    fresh_server.faults.add(method="GET", path="/tasks", status=200, body="[not json", times=None)
    with pytest.raises(MalformedResponseError):
        client.tasks()


def test_wait_survives_transient_errors(uploaded, fresh_server):
    client, asset = uploaded
    task = client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=503, times=6)
    fresh_server.faults.add(method="GET", path="/tasks/*", drop=True, times=2)
    assert client.wait(task, timeout=120, poll_interval=0.2, progress=False).completed


def test_429_on_post_tasks_is_sent_again(uploaded, fresh_server):
    client, asset = uploaded
    fresh_server.faults.add(method="POST", path="/tasks", status=429, headers={"Retry-After": "0"}, times=1)
    task = client.create_task(asset=asset, targets=TARGETS)
    assert [t["id"] for t in server_tasks(fresh_server)] == [task.id]


def test_a_4xx_on_post_tasks_is_not_resent(uploaded, fresh_server):
    client, asset = uploaded
    fresh_server.faults.add(method="POST", path="/tasks", status=400, body={"statusCode": 400, "error": "Bad Request",
                                                                           "message": "Insufficient credits"})
    from shakelab.errors import APIError

    with pytest.raises(APIError, match="Insufficient credits"):
        client.create_task(asset=asset, targets=TARGETS)
    assert count(fresh_server, "POST /tasks") == 1 and server_tasks(fresh_server) == []


# --------------------------------------------------------------------------- lost answers
@pytest.mark.parametrize("fault", [dict(drop=True), dict(status=502), dict(status=None)])
def test_answer_lost_after_the_task_was_created(fresh_server, wav, tmp_path, fault):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    client = make(fresh_server, ledger=ledger)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/tasks", after=True, times=1, **fault)
    task = client.create_task(asset=asset, targets=TARGETS, metadata="mine")
    held = server_tasks(fresh_server)
    assert [t["id"] for t in held] == [task.id]  # exactly one task, and the client returns it
    assert count(fresh_server, "POST /tasks") == 1
    assert task.user_metadata == "mine" and task.attempt is not None
    record = ledger.get_task(task.id)
    assert record["attempt_id"] == task.attempt
    assert ledger.unconfirmed_task_attempts(service=client.service, source_key=f"asset:{asset.id}",
                                            targets=TARGETS, metadata="mine") == []
    assert client.wait(task, timeout=120, progress=False).completed


def test_answer_lost_before_the_task_was_created_is_sent_again(fresh_server, wav, monkeypatch):
    client = make(fresh_server)
    monkeypatch.setattr(client, "find_grace", 0.5)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/tasks", status=503, times=1)  # refused before creating
    task = client.create_task(asset=asset, targets=TARGETS)
    assert [t["id"] for t in server_tasks(fresh_server)] == [task.id]
    assert count(fresh_server, "POST /tasks") == 2


def test_a_task_not_yet_listed_is_waited_for(fresh_server, wav, monkeypatch):
    """The list lags: the first scans do not show the fresh task; the client keeps looking (no second POST)."""
    client = make(fresh_server)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/tasks", after=True, drop=True, times=1)
    fresh_server.faults.add(method="GET", path="/tasks", status=200, body=[], times=2)
    task = client.create_task(asset=asset, targets=TARGETS)
    assert [t["id"] for t in server_tasks(fresh_server)] == [task.id]
    assert count(fresh_server, "POST /tasks") == 1 and count(fresh_server, "GET /tasks") >= 3


def test_unreadable_list_keeps_the_attempt_for_the_next_call(fresh_server, wav, tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    client = make(fresh_server, ledger=ledger, max_retries=0)
    monkeypatch.setattr(client, "find_grace", 0.5)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/tasks", after=True, drop=True, times=1)
    fresh_server.faults.add(method="GET", path="/tasks", status=503, times=None)
    with pytest.raises(UnconfirmedTaskError, match="it may exist"):
        client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.clear()
    (created,) = server_tasks(fresh_server)
    again = make(fresh_server, ledger=ledger).create_task(asset=asset, targets=TARGETS)
    assert again.id == created["id"] and again.reused
    assert count(fresh_server, "POST /tasks") == 1 and len(server_tasks(fresh_server)) == 1


def test_a_crash_between_sending_and_the_answer(fresh_server, wav, tmp_path):
    """The process died after sending: the ledger has the attempt, the service has the task."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    client = make(fresh_server, ledger=ledger)
    asset = client.upload(wav, progress=False)
    ledger.record_task_attempt(attempt_id="crashed-attempt", service=client.service, source_key=f"asset:{asset.id}",
                               targets=TARGETS, metadata=None, source_path=str(wav))
    # what the crashed process had sent (the answer never reached it)
    requests.post(f"{fresh_server.base_url}/tasks", headers={"x-api-key": fresh_server.token}, timeout=10,
                  json={"assetId": asset.id, "targets": TARGETS,
                        "metadata": tag_metadata("crashed-attempt")}).raise_for_status()
    posts = count(fresh_server, "POST /tasks")
    task = make(fresh_server, ledger=ledger).submit(wav, ["music_detection"], progress=False, timeout=120)
    assert task.reused and task.attempt == "crashed-attempt" and task.completed
    assert count(fresh_server, "POST /tasks") == posts and len(server_tasks(fresh_server)) == 1


def test_a_lost_attempt_that_created_nothing_is_forgotten(fresh_server, wav, tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    client = make(fresh_server, ledger=ledger)
    monkeypatch.setattr(client, "find_grace", 0.3)
    asset = client.upload(wav, progress=False)
    ledger.record_task_attempt(attempt_id="never-arrived", service=client.service, source_key=f"asset:{asset.id}",
                               targets=TARGETS, metadata=None)
    task = client.create_task(asset=asset, targets=TARGETS)
    assert not task.reused and [t["id"] for t in server_tasks(fresh_server)] == [task.id]
    assert ledger.unconfirmed_task_attempts(service=client.service, source_key=f"asset:{asset.id}",
                                            targets=TARGETS) == []


def test_scan_stops_at_tasks_older_than_the_attempt(fresh_server, wav, monkeypatch):
    client = make(fresh_server)
    asset = client.upload(wav, progress=False)
    for i in range(3):
        client.create_task(asset=asset, targets=TARGETS, metadata=f"old {i}")
    monkeypatch.setattr("shakelab.tasks._PAGE", 2)
    before = count(fresh_server, "GET /tasks")
    # an attempt made long after every listed task: the first full page is older, the scan stops there
    assert client._scan("absent", time.time() + 3600) is None
    assert count(fresh_server, "GET /tasks") == before + 1


def test_scan_goes_on_past_old_tasks_listed_oldest_first(fresh_server, wav, monkeypatch):
    client = make(fresh_server)
    asset = client.upload(wav, progress=False)
    wanted = client.create_task(asset=asset, targets=TARGETS, metadata="wanted")
    later = [client.create_task(asset=asset, targets=TARGETS, metadata=f"later {i}") for i in range(2)]
    monkeypatch.setattr("shakelab.tasks._PAGE", 2)  # the real pages: [later 1, later 0], [wanted]
    ascending = [dict(t.raw, createdAt=f"2020-01-01T00:00:0{i}Z") for i, t in enumerate(later)]
    fresh_server.faults.add(method="GET", path="/tasks", status=200, body=ascending, times=1)
    before = count(fresh_server, "GET /tasks")
    # the first page (oldest first, all older than the attempt) does not end the scan
    assert client._scan(wanted.attempt, time.time()).id == wanted.id
    assert count(fresh_server, "GET /tasks") == before + 2


# --------------------------------------------------------------------------- links
def test_expired_link_fetches_the_task_again(uploaded, fresh_server, tmp_path):
    client, asset = uploaded
    task = client.wait(client.create_task(asset=asset, targets=TARGETS), timeout=120, progress=False)
    fresh_server.faults.add(method="GET", path="/files/*", status=403, times=1)
    before = count(fresh_server, "GET /tasks/{id}")
    (path,) = client.download(task, tmp_path / "out", folder="", progress=False)
    assert path.name == "music_detection.json" and path.stat().st_size > 0
    assert count(fresh_server, "GET /tasks/{id}") == before + 1


def test_links_are_fetched_without_the_key(uploaded, fresh_server, tmp_path):
    client, asset = uploaded
    task = client.wait(client.create_task(asset=asset, targets=TARGETS), timeout=120, progress=False)
    seen: list = []
    client.transport.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.request))
    client.download(task, tmp_path / "out", progress=False)
    files = [r for r in seen if "/files/" in r.url]
    assert files and all("x-api-key" not in {k.lower() for k in r.headers} for r in files)


# --------------------------------------------------------------------------- more of Client's behaviour
def test_post_tasks_answered_too_late_bills_once(fresh_server, wav):
    client = make(fresh_server, timeout=0.5)
    asset = client.upload(wav, progress=False)
    fresh_server.faults.add(method="POST", path="/tasks", status=None, delay_after=2.0, times=1)
    task = client.create_task(asset=asset, targets=TARGETS)  # read timeout: found in the list, not resent
    assert [t["id"] for t in server_tasks(fresh_server)] == [task.id] and count(fresh_server, "POST /tasks") == 1


def test_post_tasks_retried_when_the_connection_was_refused(wav):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = TasksClient(api_key="ashke_unused_key_123", base_url=f"http://127.0.0.1:{port}", max_retries=2,
                         backoff=0.01)
    from shakelab.errors import TransportError

    with pytest.raises(TransportError) as err:
        client.create_task(asset="a1", targets=TARGETS)
    assert err.value.maybe_sent is False  # refused: never sent, so retried (then given up), no scan


@pytest.mark.parametrize("status", [502, 504])
def test_5xx_on_get_is_retried(uploaded, fresh_server, status):
    client, asset = uploaded
    task = client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=status, times=2)
    assert client.get_task(task.id).id == task.id


def test_500_on_get_is_not_retried(uploaded, fresh_server):
    client, asset = uploaded
    task = client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=500, times=1)
    before = count(fresh_server, "GET /tasks/{id}")
    with pytest.raises(ServerError):
        client.get_task(task.id)
    assert count(fresh_server, "GET /tasks/{id}") == before + 1


def test_slow_and_dropped_reads_are_retried(uploaded, fresh_server):
    client, asset = uploaded
    task = client.create_task(asset=asset, targets=TARGETS)
    client.transport.timeout = 0.5
    fresh_server.faults.add(method="GET", path="/tasks/*", status=None, delay=2.0, times=1)
    fresh_server.faults.add(method="GET", path="/tasks/*", drop=True, times=1)
    assert client.get_task(task.id).id == task.id


def test_wait_tolerates_404_just_after_creation_and_gives_up_later(uploaded, fresh_server, monkeypatch):
    from shakelab.errors import NotFoundError

    client, asset = uploaded
    task = client.create_task(asset=asset, targets=TARGETS)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=404, times=2)
    assert client.wait(task.id, timeout=120, poll_interval=0.1, progress=False).completed
    fresh = client.create_task(asset=asset, targets=TARGETS, metadata="fresh")
    fresh_server.faults.add(method="GET", path="/tasks/*", status=404, times=2)  # the Task object, not yet seen
    assert client.wait(fresh, timeout=120, poll_interval=0.1, progress=False).completed
    monkeypatch.setattr(client, "not_found_grace", 0.3)
    with pytest.raises(NotFoundError):
        client.wait("no-such-task", timeout=30, poll_interval=0.1, progress=False)


def test_upload_retried_after_503_rewinds_the_file(fresh_server, wav):
    client = make(fresh_server)
    fresh_server.faults.add(method="POST", path="/assets", status=503, times=1)
    with open(wav, "rb") as f:
        asset = client.upload(f, progress=False)
    assert count(fresh_server, "POST /assets") == 2
    resp = requests.get(asset.link, timeout=10)
    assert resp.content == wav.read_bytes()  # the whole file arrived the second time


def test_unseekable_upload_is_sent_once(fresh_server, wav):
    import subprocess

    client = make(fresh_server)
    fresh_server.faults.add(method="POST", path="/assets", status=503, times=1)
    with subprocess.Popen(["cat", str(wav)], stdout=subprocess.PIPE) as proc, pytest.raises(ServerError):
        client.upload(proc.stdout, name="pipe.wav", progress=False)
    assert count(fresh_server, "POST /assets") == 1


def test_dropped_download_is_retried_without_partial_files(uploaded, fresh_server, tmp_path):
    client, asset = uploaded
    task = client.wait(client.create_task(asset=asset, targets=[{"model": "bass"}]), timeout=120, progress=False)
    fresh_server.faults.add(method="GET", path="/files/*", drop=True, times=1)
    (path,) = client.download(task, tmp_path / "out", folder="", progress=False)
    assert path.name == "bass.wav" and path.stat().st_size > 1000
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bass.wav"]


def test_key_never_logged(fresh_server, wav, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    client = make(fresh_server, ledger=Ledger(tmp_path / "l.sqlite"))
    fresh_server.faults.add(method="POST", path="/tasks", after=True, drop=True, times=1)
    fresh_server.faults.add(method="GET", path="/tasks/*", status=503, times=1)
    task = client.submit(wav, ["bass"], progress=False, timeout=120)
    client.download(task, tmp_path / "out", progress=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "looking for attempt" in text and fresh_server.token not in text
