"""shakelab.TasksClient against the real local server's Tasks API on loopback: uploads, tasks with many
targets, waiting, downloads, pagination, statistics, failed targets, the ledger, connect(api=)."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from shakelab.errors import AuthenticationError, JobFailedError, TaskFailedError, ValidationError
from shakelab.ledger import Ledger
from shakelab.models import Asset, JobStatus, Task
from shakelab.tasks import TasksClient
from tests.helpers import SR, write_beep
from tests.helpers import request_count as requests_to



@pytest.fixture
def wav(tmp_path):
    return write_beep(tmp_path / "take1.wav")


def make(srv, **kwargs) -> TasksClient:
    kwargs.setdefault("backoff", 0.05)
    return TasksClient(api_key=srv.token, base_url=srv.base_url, **kwargs)


def all_requests(srv) -> int:
    return sum(srv.stats()["requests"].values())


@pytest.fixture
def tclient(server):
    client = make(server)
    yield client
    client.close()


# --------------------------------------------------------------------------- construction, secrets
def test_repr_and_errors_never_show_the_key(server, monkeypatch):
    client = TasksClient(api_key="ashke_not_the_right_key_123", base_url=server.base_url, max_retries=0)
    assert "ashke_not" not in repr(client) and "<hidden>" in repr(client)
    with pytest.raises(AuthenticationError) as err:
        client.tasks()
    assert err.value.status == 401 and "ashke_not" not in str(err.value) and "ashke_not" not in repr(err.value)
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(client)


def test_a_base_url_without_a_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("AUDIOSHAKE_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="AUDIOSHAKE_API_KEY"):
        TasksClient(base_url="https://api.audioshake.ai")
    with pytest.raises(ValidationError, match="`base_url` must be an http"):
        TasksClient(api_key="k" * 12, base_url="ftp://x")
    with pytest.raises(ValidationError, match="`timeout`"):
        TasksClient(api_key="k" * 12, base_url="https://api.audioshake.ai", timeout=0)


# --------------------------------------------------------------------------- assets
def test_upload_path_pathlib_and_file_object(tclient, wav):
    a = tclient.upload(str(wav), progress=False)
    b = tclient.upload(wav, progress=False)
    with open(wav, "rb") as f:
        c = tclient.upload(f, progress=False)
    d = tclient.upload(io.BytesIO(wav.read_bytes()), name="memory.wav", progress=False)
    assert all(isinstance(x, Asset) and x.id for x in (a, b, c, d))
    assert (a.name, a.format, d.name) == ("take1.wav", "wav", "memory.wav")
    listed = {x.id for x in tclient.assets()}
    assert {a.id, b.id, c.id, d.id} <= listed


@pytest.mark.parametrize("bad,message", [
    ("no/such/file.wav", "does not exist"), (b"bytes", "must be a path"), (io.StringIO("x"), "binary mode"),
])
def test_upload_refuses_before_any_request(fresh_server, bad, message):
    client = make(fresh_server)
    before = all_requests(fresh_server)
    with pytest.raises(ValidationError, match=message):
        client.upload(bad, progress=False)
    assert all_requests(fresh_server) == before


# --------------------------------------------------------------------------- tasks
def test_create_task_wait_download(tclient, wav, tmp_path):
    asset = tclient.upload(wav, progress=False)
    task = tclient.create_task(asset=asset, targets=[{"model": "bass", "formats": ["wav", "mp3"]},
                                                     {"model": "music_detection", "formats": ["json"]}],
                               metadata={"take": 1})
    assert isinstance(task, Task) and task.asset_id == asset.id and not task.reused
    assert [t.model for t in task.targets] == ["bass", "music_detection"]
    assert task.attempt is not None and task.user_metadata == {"take": 1}
    done = tclient.wait(task, timeout=120, progress=False)
    assert done.is_done and done.completed and done.id == task.id
    assert all(t.status is JobStatus.COMPLETED and t.cost is not None for t in done.targets)
    assert done.cost == sum(t.cost for t in done.targets)
    paths = tclient.download(done, tmp_path / "out", progress=False)
    names = sorted(p.relative_to(tmp_path / "out").as_posix().rsplit("/", 1)[-1] for p in paths)
    assert names == ["bass.mp3", "bass.wav", "music_detection.json"]
    assert all(p.parent.name == "take1" and p.stat().st_size > 0 for p in paths)  # output_folder's rule
    assert json.loads((paths[0].parent / "music_detection.json").read_text()) is not None
    assert not list((tmp_path / "out").rglob("*.part"))


def test_create_task_is_keywords_only_and_validates_first(fresh_server):
    client = make(fresh_server)
    before = all_requests(fresh_server)
    with pytest.raises(TypeError):
        client.create_task("asset-id", [{"model": "bass"}])  # type: ignore[misc]
    for kwargs, message in [
        (dict(targets=[{"model": "bass"}]), "exactly one of `asset`"),
        (dict(asset="a1", url="https://x/a.wav", targets=[{"model": "bass"}]), "not both"),
        (dict(asset="a1", targets=[{"model": "bass", "formats": ["json"]}]), r"targets\[0\].formats"),
        (dict(asset="a1", targets=[{"model": "bass"}] * 2), "repeats target 0"),
        (dict(asset="a1", targets=[{"model": m} for m in ["bass"] * 21]), "1 to 20 targets"),
        (dict(asset="a1", targets=[{"model": "drums", "variant": "high_quality"}]), "variant` is documented only"),
        (dict(asset="a1", targets=[{"model": "bass"}], metadata="x" * 5000), "at most 4096 characters"),
        (dict(asset=3, targets=[{"model": "bass"}]), "`asset` must be an Asset"),
    ]:
        with pytest.raises(ValidationError, match=message):
            client.create_task(**kwargs)
    assert all_requests(fresh_server) == before


def test_submit_one_task_one_target_per_model(tclient, wav):
    task = tclient.submit(wav, ["bass", "drums", "music_detection"], formats={"bass": ["wav", "flac"]},
                          progress=False, timeout=120)
    assert task.completed and [t.model for t in task.targets] == ["bass", "drums", "music_detection"]
    assert [t.formats for t in task.targets] == [("wav", "flac"), ("wav",), ("json",)]
    assert [o.format for o in task.target("bass").outputs] == ["wav", "flac"]
    with pytest.raises(ValidationError, match="`formats` names model"):
        tclient.submit(wav, ["bass"], formats={"vocals": "wav"})
    with pytest.raises(ValidationError, match=r"targets\[0\].formats.*not 'json'"):
        tclient.submit(wav, ["bass"], formats="json")
    with pytest.raises(ValidationError, match="`models`"):
        tclient.submit(wav, [])


def test_submit_reuses_the_ledgers_task(fresh_server, wav, tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = make(fresh_server, ledger=ledger).submit(wav, ["bass"], progress=False, timeout=120)
    posts = requests_to(fresh_server, "POST /tasks")
    uploads = requests_to(fresh_server, "POST /assets")
    again = make(fresh_server, ledger=ledger).submit(wav, ["bass"], progress=False, timeout=120)
    assert again.id == first.id and again.reused and not first.reused
    assert requests_to(fresh_server, "POST /tasks") == posts and requests_to(fresh_server, "POST /assets") == uploads
    other = make(fresh_server, ledger=ledger).submit(wav, ["bass"], metadata="another run", progress=False,
                                                     timeout=120)
    assert other.id != first.id and requests_to(fresh_server, "POST /tasks") == posts + 1
    forced = make(fresh_server, ledger=ledger).submit(wav, ["bass"], force=True, wait=False, progress=False)
    assert forced.id not in (first.id, other.id)


def test_failed_target_raises_after_the_others_finish(fresh_server, wav):
    fresh_server.faults.fail_models = ["drums"]
    client = make(fresh_server)
    task = client.submit(wav, ["bass", "drums"], wait=False, progress=False)
    with pytest.raises(TaskFailedError) as err:
        client.wait(task, timeout=120, progress=False)
    exc = err.value
    assert isinstance(exc, JobFailedError) and exc.task.id == task.id and exc.task.is_done
    assert exc.task.target("bass").completed  # the other target finished before the error was raised
    drums = exc.task.target("drums")
    assert exc.target.id == drums.id and drums.status.failed and drums.error
    assert drums.id in str(exc) and task.id in str(exc) and drums.error in str(exc)
    # the completed target can still be downloaded; the failed one is skipped
    paths = client.download(exc.task, fresh_server.data_dir / "dl", progress=False)
    assert [p.name for p in paths] == ["bass.wav"]


def test_get_task_pagination_and_iterator(fresh_server, wav):
    client = make(fresh_server)
    asset = client.upload(wav, progress=False)
    created = [client.create_task(asset=asset, targets=[{"model": "music_detection"}], metadata=f"n{i}")
               for i in range(5)]
    assert client.get_task(created[0].id).id == created[0].id
    pages = [client.tasks(skip=s, take=2) for s in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [t.id for p in pages for t in p]
    assert listed == [t.id for t in reversed(created)]  # newest first
    assert [t.id for t in client.iter_tasks(page_size=2)] == listed
    assert client.tasks(skip=10) == []
    for kwargs, message in [(dict(take=0), "`take`"), (dict(take=101), "`take`"), (dict(skip=-1), "`skip`"),
                            (dict(take=True), "`take`")]:
        with pytest.raises(ValidationError, match=message):
            client.tasks(**kwargs)


def test_url_source(fresh_server, wav):
    client = make(fresh_server)
    asset = client.upload(wav, progress=False)
    task = client.submit(asset.link, ["music_detection"], progress=False, timeout=120)
    assert task.url == asset.link and task.asset_id is None and task.completed


def test_music_detection_usage_and_distribution(fresh_server, wav):
    client = make(fresh_server)
    segments = client.music_detection(wav, progress=False, timeout=120)
    assert list(segments.columns)[:3] == ["source", "job_id", "start_time"]
    task = next(iter(client._tasks.values()))
    assert set(segments["job_id"]) <= {task.target("music_detection").id}
    usage = client.usage()
    assert list(usage.columns) == ["month", "total_jobs", "total_minutes"]
    assert usage["total_jobs"].sum() == 1 and usage["total_minutes"].sum() == pytest.approx(2 / 60, abs=1e-3)
    assert usage.attrs == {"counts": "targets"}  # the legacy column counts the Tasks API's targets
    dist = client.distribution()
    assert "model" in dist.columns and list(dist["model"]) == ["music_detection"]


def test_wait_validates_and_times_out(fresh_server, wav):
    from shakelab.errors import JobTimeoutError

    client = make(fresh_server)
    with pytest.raises(ValidationError, match="`timeout`"):
        client.wait("t1", timeout=-1)
    with pytest.raises(ValidationError, match="`task` must be a Task"):
        client.wait(3)  # type: ignore[arg-type]
    fresh_server.faults.processing_delay = 30
    task = client.submit(wav, ["bass"], wait=False, progress=False)
    with pytest.raises(JobTimeoutError, match=rf"client.wait\('{task.id}'\)"):
        client.wait(task, timeout=0.5, poll_interval=0.1, progress=False)
    with pytest.raises(ValidationError, match="still processing"):
        client.download(task, progress=False)


# --------------------------------------------------------------------------- the two APIs' ledger records
def test_ledger_says_when_a_file_was_done_through_the_jobs_api(fresh_server, wav, tmp_path, caplog):
    from shakelab.client import Client

    ledger = Ledger(tmp_path / "ledger.sqlite")
    jobs = Client(fresh_server.token, base_url=fresh_server.base_url, ledger=ledger, service="local-x")
    jobs.submit(wav, ["bass"], progress=False, timeout=120)
    caplog.set_level(logging.WARNING, logger="shakelab.tasks")
    tasks = make(fresh_server, ledger=ledger, service="local-x")
    task = tasks.submit(wav, ["bass"], progress=False, timeout=120)
    assert not task.reused  # the Tasks API does not share the Jobs API's results
    said = [r.getMessage() for r in caplog.records if r.name == "shakelab.tasks"]
    assert any("take1.wav was already processed through the Jobs API (1 job: bass; job id " in m
               and "billed again" in m for m in said)
    assert sorted(ledger.assets_frame()["api"]) == ["jobs", "tasks"]  # two uploads, kept apart
    assert ledger.get_task(task.id)["status"] == "completed"
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="shakelab.client")
    jobs.upload(wav, progress=False)  # and the other way round
    said = [r.getMessage() for r in caplog.records if r.name == "shakelab.client"]
    assert any(f"through the Tasks API (1 task: bass; task id {task.id}): the Jobs API cannot reuse them" in m
               for m in said)


def test_the_other_apis_runs_are_named_three_at_most(fresh_server, wav, tmp_path, caplog):
    from shakelab.client import Client

    ledger = Ledger(tmp_path / "ledger.sqlite")
    jobs = Client(fresh_server.token, base_url=fresh_server.base_url, ledger=ledger, service="local-x")
    done = []  # one at a time, so the ledger's order (oldest first) is this one
    for model, fmt in (("bass", "wav"), ("drums", "wav"), ("vocals", "mp3"), ("bass", "mp3"),
                       ("music_detection", None)):
        done += jobs.submit(wav, [model], format=fmt, progress=False, timeout=120)
    caplog.set_level(logging.WARNING, logger="shakelab.tasks")
    tasks = make(fresh_server, ledger=ledger, service="local-x")
    tasks.upload(wav, progress=False)
    tasks.music_detection(wav, progress=False, timeout=120)  # the same content again: said once per client
    (said,) = [r.getMessage() for r in caplog.records if r.name == "shakelab.tasks"]
    ids = [j.id for j in done]
    assert said.startswith("take1.wav was already processed through the Jobs API (5 jobs: bass, drums, vocals and "
                           f"1 more; job ids {', '.join(ids[:3])} and 2 more): the Tasks API cannot reuse them, "
                           "so what runs on it now is billed again"), said
    assert not any(i in said for i in ids[3:]) and "ledger.done_elsewhere" in said


def test_a_long_lived_client_warns_again_when_the_other_api_ran_the_file_again(fresh_server, wav, tmp_path,
                                                                                 caplog):
    from shakelab.client import Client

    ledger = Ledger(tmp_path / "ledger.sqlite")
    jobs = Client(fresh_server.token, base_url=fresh_server.base_url, ledger=ledger, service="local-x")
    tasks = make(fresh_server, ledger=ledger, service="local-x")
    caplog.set_level(logging.WARNING, logger="shakelab.tasks")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "shakelab.tasks"]

    first = jobs.submit(wav, ["bass"], progress=False, timeout=120)[0]
    tasks.upload(wav, progress=False)
    tasks.upload(wav, progress=False)           # nothing new on the Jobs API: one warning
    assert len(said()) == 1 and "(1 job: bass; job id " in said()[0], said()
    second = jobs.submit(wav, ["drums"], progress=False, timeout=120)[0]
    tasks.upload(wav, progress=False)           # the Jobs API ran it again since: said again, with both
    assert len(said()) == 2, said()
    assert f"(2 jobs: bass, drums; job ids {first.id}, {second.id})" in said()[1], said()[1]


# --------------------------------------------------------------------------- connect(api=)
@pytest.mark.parametrize("key,token,api,expected", [
    ("ashke_key_123456", None, None, "TasksClient"), (None, "jwt-token-123456", None, "Client"),
    ("ashke_key_123456", "jwt-token-123456", "tasks", "TasksClient"),
    ("ashke_key_123456", "jwt-token-123456", "jobs", "Client"),
])
def test_connect_picks_the_api_from_the_environment(monkeypatch, key, token, api, expected):
    import shakelab

    for name, value in (("AUDIOSHAKE_API_KEY", key), ("AUDIOSHAKE_API_TOKEN", token)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    client = shakelab.connect(api=api, ledger=None)
    assert type(client).__name__ == expected
    assert client.base_url == ("https://api.audioshake.ai" if expected == "TasksClient"
                               else "https://groovy.audioshake.ai")
    client.close()


def test_connect_with_both_variables_asks_which(monkeypatch):
    import shakelab

    monkeypatch.setenv("AUDIOSHAKE_API_KEY", "ashke_key_123456")
    monkeypatch.setenv("AUDIOSHAKE_API_TOKEN", "jwt-token-123456")
    with pytest.raises(ValidationError, match=r'api="jobs".*api="tasks"|api="tasks".*api="jobs"'):
        shakelab.connect()
    with pytest.raises(ValidationError, match="`api` must be"):
        shakelab.connect(api="legacy")


def test_connect_without_variables_uses_the_local_server(monkeypatch, wav):
    import shakelab

    monkeypatch.delenv("AUDIOSHAKE_API_KEY", raising=False)
    jobs = shakelab.connect()
    tasks = shakelab.connect(api="tasks")
    try:
        assert type(jobs).__name__ == "Client" and isinstance(tasks, shakelab.TasksClient)
        assert tasks.base_url == jobs.base_url and tasks.service == jobs.service  # one local server
        assert tasks.submit(wav, ["music_detection"], progress=False, timeout=120).completed
    finally:
        tasks.close()
        jobs.close()


def test_local_only_options_and_http_urls_are_refused_for_the_service(wav):
    client = TasksClient(api_key="ashke_example_key_1", base_url="https://api.audioshake.ai", max_retries=0)
    with pytest.raises(ValidationError, match=r"window.*local server"):
        client.create_task(asset="a1", targets=[{"model": "music_detection", "window": 5}])
    with pytest.raises(ValidationError, match="public https:// URL"):
        client.create_task(url="http://example.com/a.wav", targets=[{"model": "bass"}])
    with pytest.raises(ValidationError, match=r"all_windows.*local server"):
        client.music_detection(wav, all_windows=True)  # refused before the upload


def test_no_key_means_the_local_servers_tasks_api(monkeypatch):
    monkeypatch.delenv("AUDIOSHAKE_API_KEY", raising=False)
    with TasksClient() as client:
        assert client.base_url.startswith("http://127.0.0.1:") and client.local is not None
        assert client.service == client.local.server_id and isinstance(client.tasks(), list)  # it answers


def test_unknown_task_is_not_found(tclient):
    from shakelab.errors import NotFoundError

    with pytest.raises(NotFoundError):
        tclient.get_task("no-such-task-id")


def test_download_keeps_two_take1_recordings_apart(fresh_server, wav, tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    for folder, hz in (("a", 220), ("b", 440)):
        (tmp_path / folder).mkdir()
        t = np.arange(SR) / SR
        sf.write(tmp_path / folder / "take1.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
    client = make(fresh_server)
    paths = [client.download(client.submit(f"{folder}/take1.wav", ["bass"], progress=False, timeout=120), "out",
                             progress=False)[0] for folder in ("a", "b")]
    assert [p.as_posix() for p in paths] == ["out/a/take1/bass.wav", "out/b/take1/bass.wav"]


def test_distribution_frame_accepts_any_keys():
    from shakelab.frames import distribution_frame

    frame = distribution_frame({"month": "2026-03", "byModel": {"bass": 3}, "totalMinutes": "1.5"})
    assert list(frame.columns) == ["month", "by_model_bass", "total_minutes"]
    assert str(frame["month"].dtype) == "period[M]" and frame.loc[0, "total_minutes"] == "1.5"
    assert len(distribution_frame([])) == 0
    with pytest.raises(ValueError, match="object or a list of objects"):
        distribution_frame("garbage")
    with pytest.raises(ValueError, match="entries must be objects"):
        distribution_frame([1, 2])
