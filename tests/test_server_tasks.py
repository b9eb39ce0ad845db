"""The local server's Tasks API (tasks-api.md) against the real server on loopback.

Shapes are checked against the documented payloads in /work/shared/reference/examples/
(copied verbatim to tests/data/, see tests/data/README.md): a task as ``GET /tasks/{id}`` and the
webhook return it, and the statistics answer.
"""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.helpers import hook_receiver, wait_for

DATA = Path(__file__).resolve().parent / "data"
DOCUMENTED_TASK = json.loads((DATA / "tasks-get-documented.json").read_text())
DOCUMENTED_STATISTICS = json.loads((DATA / "tasks-statistics-documented.json").read_text())
TARGET_FIELDS = {"id", "model", "status", "formats", "output", "cost", "error", "duration", "residual",
                 "variant", "language"}


def clip(seconds: float = 2.0, sr: int = 22050) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype("float32")
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def api(srv, method: str, path: str, **kw) -> requests.Response:
    headers = {"x-api-key": srv.token, **kw.pop("headers", {})}
    return requests.request(method, srv.base_url + path, headers=headers, timeout=30, **kw)


def upload(srv, data: bytes | None = None, name: str = "song.wav") -> dict:
    r = api(srv, "POST", "/assets", files={"file": (name, data or clip(), "audio/wav")})
    assert r.status_code == 200, r.text
    return r.json()


def create(srv, **body) -> dict:
    r = api(srv, "POST", "/tasks", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def wait(srv, task_id: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = api(srv, "GET", f"/tasks/{task_id}").json()
        if "completedAt" in task:
            return task
        assert time.monotonic() < deadline, f"task still processing: {task}"
        time.sleep(0.2)


def assert_error(r: requests.Response, status: int, *needles: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["statusCode"] == status and isinstance(body["error"], str) and isinstance(body["message"], str)
    for needle in needles:
        assert needle in body["message"], (needle, body["message"])
    return body


def counts(srv) -> tuple[int, int, int]:
    return srv.tasks.count(), srv.store.count("jobs"), srv.store.count("assets")


# -- auth and error shape ----------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
def test_tasks_api_needs_the_key(server, headers):
    r = requests.get(f"{server.base_url}/tasks", headers=headers, timeout=10)
    body = assert_error(r, 401, "Unauthorized: Missing or incorrect API key")
    assert body["error"] == "Unauthorized" and server.token not in r.text


def test_a_bearer_token_does_not_open_the_tasks_api_nor_a_key_the_jobs_api(server):
    bearer = {"Authorization": f"Bearer {server.token}"}
    assert_error(requests.get(f"{server.base_url}/tasks", headers=bearer, timeout=10), 401, "API key")
    r = requests.get(f"{server.base_url}/usage", headers={"x-api-key": server.token}, timeout=10)
    assert r.status_code == 401
    assert requests.get(f"{server.base_url}/usage", headers=bearer, timeout=10).status_code == 200


def test_unknown_task_and_unknown_route_answer_fastify_errors(server):
    assert_error(api(server, "GET", "/tasks/cnosuchtask0000000000000"), 404, "cnosuchtask")
    assert_error(api(server, "DELETE", "/tasks/cnosuchtask0000000000000"), 405, "DELETE")
    assert_error(api(server, "GET", "/tasks/a/b"), 404, "/tasks/a/b")


# -- assets ------------------------------------------------------------------------------------
def test_assets_upload_and_list(server):
    asset = upload(server, name="My Song.wav")
    assert set(asset) == {"id", "format", "name", "link"}
    assert asset["format"] == "wav" and asset["name"] == "My Song.wav"
    listed = api(server, "GET", "/assets").json()
    assert isinstance(listed, list) and listed[0]["id"] == asset["id"]
    assert set(listed[0]) == {"id", "format", "name", "link"}
    got = requests.get(asset["link"], timeout=10)  # signed: no key
    assert got.status_code == 200 and got.content[:4] == b"RIFF"


def test_asset_upload_without_a_file_field_is_refused(server):
    before = counts(server)
    r = api(server, "POST", "/assets", files={"other": ("x.wav", b"RIFF", "audio/wav")})
    assert_error(r, 400, "`file`")
    assert counts(server) == before


# -- a task from start to finish ---------------------------------------------------------------
def test_task_lifecycle_shapes_costs_and_outputs(server):
    asset = upload(server, clip(3.0))
    task = create(server, assetId=asset["id"], metadata='{"tag": "t1"}', targets=[
        {"model": "music_detection", "formats": ["json", "txt"]},
        {"model": "vocals", "formats": ["wav", "flac"], "variant": "high_quality"},
        {"model": "bass", "formats": ["mp3"], "residual": True}])
    assert "status" not in task and task["assetId"] == asset["id"] and "url" not in task
    assert task["metadata"] == '{"tag": "t1"}' and task["clientId"] == server.store.client_id
    assert [t["status"] for t in task["targets"]] == ["processing"] * 3
    assert all(t["output"] == [] for t in task["targets"])
    assert all(set(t) >= TARGET_FIELDS for t in task["targets"])  # optional fields explicit null
    assert task["targets"][0]["variant"] is None and task["targets"][0]["error"] is None

    done = wait(server, task["id"])
    assert done["completedAt"] >= done["createdAt"] and "status" not in done
    by_model = {t["model"]: t for t in done["targets"]}
    assert [t["status"] for t in done["targets"]] == ["completed"] * 3
    for t in done["targets"]:
        assert t["duration"] == pytest.approx(3.0, abs=0.01) and t["error"] is None
        assert [o["format"] for o in t["output"]] == t["formats"]  # one entry per requested format
    # cost = ceil(3 s / 60) x credits per minute; the task's is the sum
    assert (by_model["music_detection"]["cost"], by_model["vocals"]["cost"], by_model["bass"]["cost"]) == (0.5, 1.5, 1)
    assert done["cost"] == 3.0
    assert by_model["bass"]["residual"] is True and by_model["vocals"]["variant"] == "high_quality"
    names = {(o["name"], o["format"], o["type"]) for t in done["targets"] for o in t["output"]}
    assert names == {("music_detection", "json", "application/json"), ("music_detection", "txt", "text/plain"),
                     ("vocals_high_quality", "wav", "audio/wav"), ("vocals_high_quality", "flac", "audio/flac"),
                     ("bass", "mp3", "audio/mpeg")}
    fetched = {o["format"]: requests.get(o["link"], timeout=30) for t in done["targets"] for o in t["output"]}
    assert all(r.status_code == 200 for r in fetched.values())
    segments = fetched["json"].json()
    documented = json.loads((DATA / "music-detection-documented.json").read_text())
    assert segments and set(segments[0]) == set(documented[0])
    assert len(fetched["txt"].text.splitlines()) == len(segments)
    assert sf.info(io.BytesIO(fetched["flac"].content)).duration == pytest.approx(3.0, abs=0.01)
    assert by_model["music_detection"]["shakelab"]["window"] == 10.0  # local-only detail


def test_a_target_runs_its_model_once_for_all_its_formats(fresh_server):
    """Several formats of a target: one run of the model, each file the same as a run for that format alone."""
    asset = upload(fresh_server, clip(2.0))

    def model_runs() -> int:  # the test hook's count, over HTTP
        r = requests.get(f"{fresh_server.base_url}/_stats", headers={"Authorization": f"Bearer {fresh_server.token}"},
                         timeout=30)
        return r.json()["model_runs"]

    def run(targets: list[dict]) -> tuple[int, dict]:
        before = model_runs()
        done = wait(fresh_server, create(fresh_server, assetId=asset["id"], targets=targets)["id"])
        assert [t["status"] for t in done["targets"]] == ["completed"] * len(targets)
        files = {(t["model"], o["format"]): requests.get(o["link"], timeout=30).content
                 for t in done["targets"] for o in t["output"]}
        return model_runs() - before, files

    wanted = {"bass": ["wav", "flac", "mp3"], "music_detection": ["json", "txt"]}
    runs, together = run([{"model": m, "formats": f} for m, f in wanted.items()])
    assert runs == 2 and list(together) == [(m, f) for m, formats in wanted.items() for f in formats]
    alone = {}
    for model, formats in wanted.items():
        for fmt in formats:
            runs, files = run([{"model": model, "formats": [fmt]}])
            assert runs == 1
            alone.update(files)
    assert together == alone  # byte for byte


def test_a_target_stored_as_a_job_per_format_reads_the_same(fresh_server):
    """A data dir written before one job per target kept a job per format: its targets answer as before."""
    asset = upload(fresh_server, clip(1.0))
    done = wait(fresh_server, create(fresh_server, assetId=asset["id"], targets=[
        {"model": "bass", "formats": ["wav", "flac"]}])["id"])
    (job,) = fresh_server.store.jobs_of_targets([done["targets"][0]["id"]])
    wav, flac = job["outputs"]
    with fresh_server.store.transaction() as db:  # back to the old layout: the flac output in a job of its own
        row = {**dict(db.execute("SELECT * FROM jobs WHERE id=?", (job["id"],)).fetchone()), "id": job["id"] + "f"}
        row.pop("detail", None)
        fresh_server.store.insert_job({**row, "metadata": json.dumps({"name": "bass", "format": "flac"}),
                                       "outputs": json.dumps([flac])})
        db.execute("UPDATE jobs SET metadata=?, outputs=? WHERE id=?",
                   (json.dumps({"name": "bass", "format": "wav"}), json.dumps([wav]), job["id"]))
    again = api(fresh_server, "GET", f"/tasks/{done['id']}").json()
    assert len(fresh_server.store.jobs_of_targets([done["targets"][0]["id"]])) == 2
    strip = [{k: v for k, v in o.items() if k != "link"} for t in (done, again) for o in t["targets"][0]["output"]]
    assert strip[:2] == strip[2:] and [o["format"] for o in again["targets"][0]["output"]] == ["wav", "flac"]
    contents = [requests.get(o["link"], timeout=30).content for t in (done, again) for o in t["targets"][0]["output"]]
    assert contents[:2] == contents[2:]
    assert again["targets"][0]["status"] == "completed" and again["cost"] == done["cost"]


def test_task_shape_matches_the_documented_payload(server):
    asset = upload(server, clip(1.0))
    done = wait(server, create(server, assetId=asset["id"], targets=[
        {"model": "bass", "formats": ["wav"]}, {"model": "drums", "formats": ["wav"]}])["id"])
    assert set(DOCUMENTED_TASK) <= set(done)
    assert "metadata" not in done  # absent task fields are omitted, not null
    assert all(v is not None for v in done.values())
    for documented, ours in zip(DOCUMENTED_TASK["targets"], done["targets"], strict=True):
        assert set(documented) <= set(ours) and ours["model"] == documented["model"]
        for key, value in documented.items():
            if value is not None and key != "output":
                assert isinstance(ours[key], type(value)) or isinstance(value, (int, float)), key
    assert set(DOCUMENTED_TASK["targets"][0]["output"][0]) <= set(done["targets"][0]["output"][0])


def test_while_a_target_processes_completed_at_and_cost_are_absent(fresh_server):
    asset = upload(fresh_server, clip(1.0))
    fresh_server.faults.processing_delay = 60
    try:
        task = create(fresh_server, assetId=asset["id"], targets=[{"model": "bass", "formats": ["wav"]}])
        again = api(fresh_server, "GET", f"/tasks/{task['id']}").json()
        assert "completedAt" not in again and "cost" not in again
        assert again["targets"][0]["status"] == "processing" and again["targets"][0]["cost"] is None
    finally:
        fresh_server.faults.processing_delay = 0
    assert wait(fresh_server, task["id"])["targets"][0]["status"] == "completed"


def test_a_target_that_errors_while_the_others_complete(fresh_server):
    asset = upload(fresh_server, clip(1.0))
    fresh_server.faults.fail_models = {"drums"}
    task = create(fresh_server, assetId=asset["id"], targets=[
        {"model": "bass", "formats": ["wav"]}, {"model": "drums", "formats": ["wav"]},
        {"model": "music_detection", "formats": ["json"]}])
    done = wait(fresh_server, task["id"])
    status = {t["model"]: t["status"] for t in done["targets"]}
    assert status == {"bass": "completed", "drums": "error", "music_detection": "completed"}
    drums = next(t for t in done["targets"] if t["model"] == "drums")
    assert isinstance(drums["error"]["code"], int) and "fault injected" in drums["error"]["message"]
    assert drums["output"] == [] and drums["cost"] == 0
    assert done["cost"] == 1.5  # bass 1 + detection 0.5; the failed target is not billed
    usage = api(fresh_server, "GET", "/tasks/statistics?name=usage").json()
    assert usage[-1]["totalTargets"] == 2


def test_an_undecodable_source_errors_every_target_with_a_message(server):
    asset = upload(server, b"this is not audio at all, only text", name="notes.wav")
    done = wait(server, create(server, assetId=asset["id"], targets=[{"model": "vocals", "formats": ["wav"]}])["id"])
    target = done["targets"][0]
    assert target["status"] == "error" and target["error"]["code"] == 422 and target["error"]["message"]
    assert done["cost"] == 0


def test_local_only_detection_options(server):
    asset = upload(server, clip(2.0))
    done = wait(server, create(server, assetId=asset["id"], targets=[
        {"model": "music_detection", "formats": ["json"], "window": 0.5, "all_windows": True}])["id"])
    target = done["targets"][0]
    assert target["shakelab"] == {"detector": target["shakelab"]["detector"], "window": 0.5, "allWindows": True}
    segments = requests.get(target["output"][0]["link"], timeout=10).json()
    assert len(segments) == 4  # every 0.5-s window of 2 s


# -- validation: a refused request creates nothing ---------------------------------------------
BAD_TASKS = {
    "neither source": ({"targets": [{"model": "bass", "formats": ["wav"]}]}, "`url`"),
    "both sources": ({"assetId": "A", "url": "https://example.com/a.wav",
                      "targets": [{"model": "bass", "formats": ["wav"]}]}, "exactly one"),
    "no targets": ({"assetId": "A"}, "`targets` is required"),
    "empty targets": ({"assetId": "A", "targets": []}, "1 to 20"),
    "21 targets": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav"]}] * 21}, "not 21"),
    "duplicate target": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav"]},
                                                      {"model": "bass", "formats": ["mp3"]}]}, "unique"),
    "unknown model": ({"assetId": "A", "targets": [{"model": "kazoo", "formats": ["wav"]}]}, "`targets[0].model`"),
    "service-only model": ({"assetId": "A", "targets": [{"model": "piano", "formats": ["wav"]}]},
                           "does not run"),
    "format string": ({"assetId": "A", "targets": [{"model": "bass", "format": "wav"}]}, "did you mean `formats`"),
    "formats not a list": ({"assetId": "A", "targets": [{"model": "bass", "formats": "wav"}]}, "array"),
    "bad format": ({"assetId": "A", "targets": [{"model": "music_detection", "formats": ["wav"]}]},
                   "`targets[0].formats[0]`"),
    "mp4 locally": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["mp4"]}]}, "video"),
    "variant of bass": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav"],
                                                      "variant": "high_quality"}]}, "`targets[0].variant`"),
    "unknown variant": ({"assetId": "A", "targets": [{"model": "vocals", "formats": ["wav"],
                                                      "variant": "ultra"}]}, "'high_quality'"),
    "window on stems": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav"], "window": 5}]},
                        "only to 'music_detection'"),
    "bad window": ({"assetId": "A", "targets": [{"model": "music_detection", "formats": ["json"],
                                                 "window": 0}]}, "`targets[0].window`"),
    "metadata object": ({"assetId": "A", "metadata": {"a": 1}, "targets": [{"model": "bass", "formats": ["wav"]}]},
                        "`metadata` must be a string"),
    "metadata too long": ({"assetId": "A", "metadata": "x" * 4097,
                           "targets": [{"model": "bass", "formats": ["wav"]}]}, "4096"),
    "unknown field": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav"]}], "priority": 1},
                      "`priority`"),
    "target not an object": ({"assetId": "A", "targets": ["bass"]}, "`targets[0]` must be an object"),
    "model a number": ({"assetId": "A", "targets": [{"model": 7, "formats": ["wav"]}]}, "not a number 7"),
    "formats of lists": ({"assetId": "A", "targets": [{"model": "bass", "formats": [["wav"]]}]},
                         "`targets[0].formats[0]`"),
    "variant a list": ({"assetId": "A", "targets": [{"model": "vocals", "formats": ["wav"], "variant": ["x"]}]},
                       "`targets[0].variant`"),
    "repeated format": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav", "wav"]}]}, "repeat"),
    "residual a string": ({"assetId": "A", "targets": [{"model": "bass", "formats": ["wav"], "residual": "yes"}]},
                          "`targets[0].residual`"),
    "assetId a number": ({"assetId": 5, "targets": [{"model": "bass", "formats": ["wav"]}]}, "`assetId`"),
    "targets an object": ({"assetId": "A", "targets": {"model": "bass"}}, "`targets` must be an array"),
    "url not http": ({"url": "ftp://example.com/a.wav", "targets": [{"model": "bass", "formats": ["wav"]}]},
                     "`url`"),
}


@pytest.mark.parametrize("case", list(BAD_TASKS))
def test_bad_task_requests_are_refused_and_create_nothing(server, case):
    body, needle = BAD_TASKS[case]
    asset = upload(server, clip(0.5))
    body = json.loads(json.dumps(body).replace('"A"', json.dumps(asset["id"])))
    before = counts(server)
    assert_error(api(server, "POST", "/tasks", json=body), 400, needle)
    assert counts(server) == before


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b'{"assetId": NaN}'])
def test_bad_json_is_a_400(server, raw):
    before = counts(server)
    r = api(server, "POST", "/tasks", data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert counts(server) == before


def test_unknown_asset_is_a_404_and_creates_nothing(server):
    before = counts(server)
    assert_error(create_raw := api(server, "POST", "/tasks", json={
        "assetId": "cnosuchasset000000000000", "targets": [{"model": "bass", "formats": ["wav"]}]}),
        404, "POST /assets")
    assert create_raw.json()["statusCode"] == 404 and counts(server) == before


# -- url sources -------------------------------------------------------------------------------
class _Host(BaseHTTPRequestHandler):
    audio = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(self.audio)))
        self.end_headers()
        self.wfile.write(self.audio)

    def log_message(self, *args):
        pass


@pytest.fixture
def audio_host():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Host,), {"audio": clip(1.0)}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_source_is_fetched_and_echoed(server, audio_host):
    url = f"{audio_host}/music/take1.wav?x=1"
    task = create(server, url=url, targets=[{"model": "bass", "formats": ["wav"]}])
    assert task["url"] == url and "assetId" not in task
    assert wait(server, task["id"])["targets"][0]["duration"] == pytest.approx(1.0, abs=0.01)


def test_url_sources_obey_the_link_rules_of_upload_link(tmp_path, audio_host):
    from shakelab.server import LocalServer

    with LocalServer(tmp_path / "srv", token="k-0123456789") as srv:  # private hosts refused by default
        before = counts(srv)
        r = api(srv, "POST", "/tasks", json={"url": f"{audio_host}/a.wav",
                                             "targets": [{"model": "bass", "formats": ["wav"]}]})
        assert_error(r, 400, "`url`", "--allow-private-links")
        assert counts(srv) == before
        r = api(srv, "POST", "/tasks", json={"url": "http://user:pw@example.com/a.wav",
                                             "targets": [{"model": "bass", "formats": ["wav"]}]})
        assert_error(r, 400, "`url` must not carry credentials")
        assert counts(srv) == before


# -- listing and pagination --------------------------------------------------------------------
def test_tasks_are_listed_newest_first_with_skip_and_take(fresh_server):
    asset = upload(fresh_server, clip(0.5))
    fresh_server.faults.processing_delay = 60  # nothing needs to run for the listing
    try:
        ids = [create(fresh_server, assetId=asset["id"], metadata=str(i),
                      targets=[{"model": "bass", "formats": ["wav"]}])["id"] for i in range(12)]
        newest_first = ids[::-1]
        assert [t["id"] for t in api(fresh_server, "GET", "/tasks").json()] == newest_first[:10]  # take 10
        assert [t["id"] for t in api(fresh_server, "GET", "/tasks?skip=10&take=5").json()] == newest_first[10:]
        assert [t["id"] for t in api(fresh_server, "GET", "/tasks?skip=3&take=2").json()] == newest_first[3:5]
        assert [t["id"] for t in api(fresh_server, "GET", "/tasks?take=100").json()] == newest_first
        assert api(fresh_server, "GET", "/tasks?skip=12").json() == []
    finally:
        fresh_server.faults.processing_delay = 0


@pytest.mark.parametrize("query, name", [("skip=-1", "`skip`"), ("skip=abc", "`skip`"), ("skip=1.5", "`skip`"),
                                         ("take=0", "`take`"), ("take=101", "`take`"), ("take=", "`take`"),
                                         ("take=-5", "`take`"), ("take=99999999999999999999", "`take`")])
def test_pagination_bounds_are_400s_naming_the_parameter(server, query, name):
    body = assert_error(api(server, "GET", f"/tasks?{query}"), 400, name)
    assert body["message"].count("`") == 2  # names the one parameter, with the bad value


# -- statistics --------------------------------------------------------------------------------
def test_statistics_usage_and_distribution(fresh_server):
    asset = upload(fresh_server, clip(3.0))
    wait(fresh_server, create(fresh_server, assetId=asset["id"], targets=[
        {"model": "bass", "formats": ["wav", "mp3"]}, {"model": "music_detection", "formats": ["json"]}])["id"])
    usage = api(fresh_server, "GET", "/tasks/statistics?name=usage").json()
    assert api(fresh_server, "GET", "/tasks/statistics").json() == usage  # usage is the default
    assert [set(m) for m in usage] == [set(DOCUMENTED_STATISTICS[0])] * 3
    assert all(isinstance(m["totalMinutes"], str) for m in usage)
    assert usage[-1]["totalTargets"] == 2  # two targets, whatever their formats
    assert float(usage[-1]["totalMinutes"]) == pytest.approx(2 * 3.0 / 60, abs=0.001)
    assert [m["month"] for m in usage] == sorted(m["month"] for m in usage)
    dist = api(fresh_server, "GET", "/tasks/statistics?name=distribution").json()
    assert {d["model"]: d["totalTargets"] for d in dist} == {"bass": 1, "music_detection": 1}
    assert_error(api(fresh_server, "GET", "/tasks/statistics?name=monthly"), 400, "`name`", "'monthly'")
    # the Jobs API's usage counts its own jobs only
    legacy = requests.get(f"{fresh_server.base_url}/usage", headers={"Authorization": f"Bearer {fresh_server.token}"},
                          timeout=10).json()
    assert legacy["usage"][-1]["totalJobs"] == 0


# -- expired links -----------------------------------------------------------------------------
def test_expired_output_links_answer_403_and_a_new_get_signs_fresh_ones(tmp_path):
    from shakelab.server import LocalServer

    with LocalServer(tmp_path / "srv", token="k-0123456789", link_ttl=1.0) as srv:
        asset = upload(srv, clip(0.5))
        done = wait(srv, create(srv, assetId=asset["id"], targets=[{"model": "bass", "formats": ["wav"]}])["id"])
        link = done["targets"][0]["output"][0]["link"]
        time.sleep(1.5)  # the link's life is over
        r = requests.get(link, timeout=10)
        assert r.status_code == 403 and "expired" in r.json()["message"]
        fresh = api(srv, "GET", f"/tasks/{done['id']}").json()["targets"][0]["output"][0]["link"]
        assert fresh != link and requests.get(fresh, timeout=10).status_code == 200


# -- faults: the answer is lost after the task was created --------------------------------------
@pytest.mark.parametrize("fault", [{"status": None}, {"status": 502}, {"drop": True}])
def test_answer_lost_after_the_task_was_created(fresh_server, fault):
    asset = upload(fresh_server, clip(0.5))
    fresh_server.faults.add(method="POST", path="/tasks", after=True, **fault)
    body = {"assetId": asset["id"], "metadata": "shakelab:attempt-1",
            "targets": [{"model": "bass", "formats": ["wav"]}]}
    if fault.get("status") == 502:
        assert_error(api(fresh_server, "POST", "/tasks", json=body), 502, "fault injected")
    else:
        with pytest.raises(requests.ConnectionError):
            api(fresh_server, "POST", "/tasks", json=body)
    listed = api(fresh_server, "GET", "/tasks?take=1").json()
    assert len(listed) == 1 and listed[0]["metadata"] == "shakelab:attempt-1"  # the task exists
    assert fresh_server.tasks.count() == 1
    wait(fresh_server, listed[0]["id"])


def test_faults_apply_to_the_tasks_routes_over_http(fresh_server):
    r = requests.post(f"{fresh_server.base_url}/_faults", headers={"Authorization": f"Bearer {fresh_server.token}"},
                      json={"add": {"method": "GET", "path": "/tasks/*", "status": 429, "times": 1},
                            "fail_models": ["drums"]}, timeout=10)
    assert r.status_code == 200, r.text
    assert_error(api(fresh_server, "GET", "/tasks/cx"), 429, "fault injected")
    assert_error(api(fresh_server, "GET", "/tasks/cx"), 404)  # used up
    assert fresh_server.faults.fail_models == {"drums"}


def test_requests_are_counted_per_route(fresh_server):
    asset = upload(fresh_server, clip(0.5))
    task = create(fresh_server, assetId=asset["id"], targets=[{"model": "bass", "formats": ["wav"]}])
    api(fresh_server, "GET", f"/tasks/{task['id']}")
    api(fresh_server, "GET", "/tasks/statistics")
    stats = fresh_server.stats()
    assert stats["tasks"] == 1 and stats["jobs"] == 0 and stats["uploads"] == 1
    assert {k: stats["requests"][k] for k in ("POST /assets", "POST /tasks", "GET /tasks/{id}",
                                              "GET /tasks/statistics")} == {
        "POST /assets": 1, "POST /tasks": 1, "GET /tasks/{id}": 1, "GET /tasks/statistics": 1}


# -- webhook -----------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    with hook_receiver(ok_status=204) as httpd:
        yield httpd


def test_webhook_receives_the_task_once_per_finished_target(tmp_path, receiver):
    from shakelab.server import LocalServer

    receiver.handler.fail_first = 1  # the first delivery is retried
    with LocalServer(tmp_path / "srv", token="k-0123456789", webhook=receiver.url) as srv:
        srv.faults.fail_models = {"drums"}
        asset = upload(srv, clip(0.5))
        task = create(srv, assetId=asset["id"], targets=[
            {"model": "bass", "formats": ["wav", "flac"]}, {"model": "drums", "formats": ["wav"]}])
        done = wait(srv, task["id"])
        wait_for(lambda: len(receiver.handler.received) == 2, timeout=60.0)
        time.sleep(0.5)  # nothing more arrives
        # each call is the task as it was when that target finished (a retried one may arrive last)
        calls = sorted(receiver.handler.received, key=lambda c: "completedAt" in c)
        assert len(calls) == 2 and all(c["id"] == task["id"] for c in calls)
        finished = [{t["model"] for t in c["targets"] if t["status"] != "processing"} for c in calls]
        assert all(finished)  # each call follows a finished target
        assert finished[1] == {"bass", "drums"} and calls[1]["completedAt"] == done["completedAt"]
        assert {t["model"]: t["status"] for t in calls[-1]["targets"]} == {"bass": "completed", "drums": "error"}
        assert set(DOCUMENTED_TASK) <= set(calls[-1])


def test_a_dead_webhook_never_blocks_processing(tmp_path):
    from shakelab.server import LocalServer

    with LocalServer(tmp_path / "srv", token="k-0123456789", webhook="http://127.0.0.1:9/nobody") as srv:
        asset = upload(srv, clip(0.5))
        done = wait(srv, create(srv, assetId=asset["id"], targets=[{"model": "bass", "formats": ["wav"]}])["id"])
        assert done["targets"][0]["status"] == "completed"


def test_webhook_url_is_checked(tmp_path):
    from shakelab.server import LocalServer

    with pytest.raises(ValueError, match="`webhook`"):
        LocalServer(tmp_path / "srv", token="k-0123456789", webhook="ftp://example.com/hook")


def test_shakelab_serve_webhook_option(tmp_path, receiver):
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "shakelab.cli", "serve", "--port", "0", "--data-dir",
                             str(tmp_path / "served"), "--token", "k-0123456789", "--webhook", receiver.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        while not lines or not re.search(r"listening on (http://\S+)", lines[0]):
            assert proc.poll() is None, proc.stderr.read()
            lines = [proc.stdout.readline()]
        url = re.search(r"listening on (http://\S+)", lines[0]).group(1)
        assert receiver.url in proc.stdout.readline()  # says where the webhook goes
        srv = type("Served", (), {"base_url": url, "token": "k-0123456789"})()
        asset = upload(srv, clip(0.5))
        task = create(srv, assetId=asset["id"], targets=[{"model": "bass", "formats": ["wav"]}])
        wait(srv, task["id"])
        wait_for(lambda: len(receiver.handler.received) == 1, timeout=60.0)
        assert receiver.handler.received[0]["id"] == task["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


# -- restart -----------------------------------------------------------------------------------
def test_a_restart_resumes_unfinished_targets(tmp_path):
    from shakelab.server import LocalServer

    srv = LocalServer(tmp_path / "srv", token="k-0123456789")
    with srv:
        asset = upload(srv, clip(0.5))
        srv.faults.processing_delay = 60
        task = create(srv, assetId=asset["id"], targets=[{"model": "bass", "formats": ["wav"]}])
    srv.faults.processing_delay = 0
    with srv:
        done = wait(srv, task["id"])
        assert done["targets"][0]["status"] == "completed" and done["createdAt"] == task["createdAt"]
