"""The ledger: SQLite record of uploads and jobs, shared by threads and processes."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap
import threading

import pandas as pd
import pytest

from shakelab.ledger import Ledger, default_path, file_sha256

BASE = "http://127.0.0.1:9999"


def _job(job_id, *, asset="as1", model="music_detection", fmt="json", status="queued", **extra):
    payload = {"id": job_id, "assetId": asset, "status": status,
               "metadata": {"name": model, "format": fmt, **extra}}
    if status == "completed":
        payload["outputAssets"] = [{"name": f"{model}.{fmt}", "format": fmt, "link": "http://x/o"}]
    if status == "failed":
        payload["statusInfo"] = {"code": 400, "message": "input is not audio"}
    return payload


def test_default_path_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SHAKELAB_LEDGER", str(tmp_path / "x" / "l.sqlite"))
    assert default_path() == tmp_path / "x" / "l.sqlite"
    ledger = Ledger()
    assert ledger.path == tmp_path / "x" / "l.sqlite" and ledger.path.exists()
    monkeypatch.delenv("SHAKELAB_LEDGER")
    import platformdirs

    assert default_path() == (
        __import__("pathlib").Path(platformdirs.user_cache_dir("shakelab", appauthor=False)) / "ledger.sqlite")


def test_wal_and_busy_timeout(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    conn = ledger._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


def test_bad_path_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="`path` must be a file"):
        Ledger(tmp_path)
    with pytest.raises(ValueError, match="`path` must be a str"):
        Ledger(42)


def test_file_sha256_streams_paths_and_file_objects(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc" * 1000)
    import hashlib

    want = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_sha256(p, chunk_size=7) == want
    fh = io.BytesIO(b"zz" + b"abc" * 1000)
    fh.seek(2)
    assert file_sha256(fh) == want
    assert fh.tell() == 2


def test_asset_roundtrip_is_per_service(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    payload = {"name": "a", "id": "as1", "fileType": "audio/wav", "format": "wav", "link": "http://l"}
    assert ledger.lookup_asset(sha256="h1", service=BASE) is None
    ledger.record_asset(sha256="h1", size=12, path="/d/a.wav", service=BASE + "/", payload=payload)
    assert ledger.lookup_asset(sha256="h1", service=BASE) == payload
    assert ledger.lookup_asset(sha256="h1", service="https://groovy.audioshake.ai") is None
    assert ledger.lookup_asset(sha256="h2", service=BASE) is None
    # re-recording the same content replaces, never duplicates
    ledger.record_asset(sha256="h1", size=12, path=None, service=BASE, payload={**payload, "id": "as2"})
    frame = ledger.assets_frame()
    assert list(frame["asset_id"]) == ["as2"]
    assert frame.loc[0, "path"] == "/d/a.wav"
    assert frame.loc[0, "size"] == 12
    assert str(frame["recorded_at"].dtype) == "datetime64[ns, UTC]"


def test_record_asset_rejects_payload_without_id(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="`payload`"):
        ledger.record_asset(sha256="h", size=1, path=None, service=BASE, payload={"name": "a"})


def test_assets_frame_empty_has_columns(tmp_path):
    frame = Ledger(tmp_path / "l.sqlite").assets_frame()
    assert len(frame) == 0
    assert list(frame.columns) == ["asset_id", "name", "sha256", "size", "path", "service", "api", "format",
                                   "recorded_at"]


def test_lookup_job_key_and_failed_jobs(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(asset_id="as1", model="music_detection", format="json", service=BASE)
    assert ledger.lookup_job(metadata={}, **key) is None
    ledger.record_job(_job("j1", status="failed"), service=BASE)
    assert ledger.lookup_job(metadata={}, **key) is None          # failed jobs are not reused
    ledger.record_job({"job": _job("j2")}, service=BASE, source_path="/d/a.wav")  # wrapped form
    found = ledger.lookup_job(metadata={}, **key)
    assert found["job_id"] == "j2" and found["status"] == "queued"
    assert found["payload"]["id"] == "j2" and found["source_path"] == "/d/a.wav"
    # whole metadata (name/format) or only extras, None values ignored: same key
    assert ledger.lookup_job(metadata={"name": "music_detection", "format": "json", "variant": None},
                             **key)["job_id"] == "j2"
    # another format, model, asset, service or extra metadata is another key
    assert ledger.lookup_job(metadata={}, **{**key, "format": "txt"}) is None
    assert ledger.lookup_job(metadata={}, **{**key, "asset_id": "as9"}) is None
    assert ledger.lookup_job(metadata={}, **{**key, "service": "http://other"}) is None
    assert ledger.lookup_job(metadata={"window": 5}, **key) is None
    ledger.record_job(_job("j3", window=5), service=BASE)
    assert ledger.lookup_job(metadata={"window": 5}, **key)["job_id"] == "j3"
    assert ledger.lookup_job(metadata={}, **key)["job_id"] == "j2"
    assert ledger.get_job("j1")["error"] == "input is not audio"


def test_newest_job_wins_and_status_never_regresses(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(asset_id="as1", model="vocals", format="wav", metadata={}, service=BASE)
    ledger.record_job(_job("old", model="vocals", fmt="wav", status="completed"), service=BASE)
    ledger.record_job(_job("new", model="vocals", fmt="wav", status="processing"), service=BASE)
    assert ledger.lookup_job(**key)["job_id"] == "new"
    ledger.record_job(_job("new", model="vocals", fmt="wav", status="completed"), service=BASE)
    # a stale payload seen late must not turn a completed job back into a pending one
    ledger.record_job(_job("new", model="vocals", fmt="wav", status="processing"), service=BASE,
                      source_path="/d/b.wav")
    rec = ledger.lookup_job(**key)
    assert rec["status"] == "completed" and rec["source_path"] == "/d/b.wav"
    assert rec["payload"]["outputAssets"][0]["name"] == "vocals.wav"


def test_stem_variant_payload_is_understood(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    payload = {"id": "j9", "status": "COMPLETED", "sourceAsset": {"id": "as7"},
               "stemMetadata": {"name": "drums", "format": "flac"}}
    ledger.record_job(payload, service=BASE)
    rec = ledger.lookup_job(asset_id="as7", model="drums", format="flac", metadata={}, service=BASE)
    assert rec["job_id"] == "j9" and rec["status"] == "completed"


def test_record_job_rejects_payload_without_id(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="'id'"):
        ledger.record_job({"status": "queued"}, service=BASE)
    with pytest.raises(ValueError, match="`payload`"):
        ledger.record_job(["nope"], service=BASE)


def test_outputs_and_results(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_job(_job("j1", status="completed"), service=BASE)
    ledger.record_outputs("j1", ["/o/a.json"])
    ledger.record_outputs("j1", ["/o/a.json", "/o/b.json"])
    assert ledger.get_job("j1")["outputs"] == ["/o/a.json", "/o/b.json"]
    with pytest.raises(KeyError, match="nope"):
        ledger.record_outputs("nope", ["/o/c"])
    with pytest.raises(ValueError, match="`paths`"):
        ledger.record_outputs("j1", "/o/a.json")
    assert ledger.lookup_result("j1") is None
    ledger.record_result("j1", [{"start_time": 0.0, "end_time": 10.0, "confidence": 0.5}])
    assert ledger.lookup_result("j1")[0]["confidence"] == 0.5


def test_pickles_as_its_path_and_reconnects(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_job(_job("j1"), service=BASE)
    copy = pickle.loads(pickle.dumps(ledger))
    assert copy.path == ledger.path and copy.get_job("j1")["status"] == "queued"


def test_threads_write_at_once(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_job(_job("shared"), service=BASE)
    errors = []

    def work(t):
        try:
            for i in range(40):
                ledger.record_job(_job(f"t{t}-{i}", asset=f"as{i}"), service=BASE)
                ledger.record_outputs("shared", [f"/o/{t}-{i}"])
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(ledger.get_job("shared")["outputs"]) == 160
    n = ledger._conn().execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert n == 161


WRITER = textwrap.dedent("""
    import sys
    from shakelab.ledger import Ledger
    tag, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = Ledger(path)
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()                     # start together
    for i in range(n):
        ledger.record_asset(sha256=f"{tag}-{i}", size=i, path=None, service="http://s",
                            payload={"id": f"as-{tag}-{i}", "name": str(i)})
        ledger.record_job({"id": f"{tag}-{i}", "assetId": f"as-{tag}-{i}", "status": "queued",
                           "metadata": {"name": "vocals", "format": "wav"}}, service="http://s")
        ledger.record_outputs("shared", [f"/o/{tag}/{i}"])
    print("done")
""")


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger.record_job(_job("shared"), service="http://s")
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, tag, str(path), str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    assets = ledger.assets_frame()
    assert len(assets) == 2 * n
    conn = ledger._conn()
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 2 * n + 1
    outputs = ledger.get_job("shared")["outputs"]
    # every read-modify-write of the shared row survived the other process's writes
    assert len(outputs) == 2 * n
    assert set(outputs) == {f"/o/{t}/{i}" for t in "ab" for i in range(n)}


def test_jobs_frame_columns_and_values(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert len(ledger.jobs_frame()) == 0
    ledger.record_job(_job("j1", status="completed"), service=BASE, source_path="/d/a.wav")
    ledger.record_job(_job("j2", model="vocals", fmt="wav", status="failed"), service=BASE)
    ledger.record_outputs("j1", ["/o/a.json"])
    frame = ledger.jobs_frame()
    assert list(frame["job_id"]) == ["j1", "j2"]
    assert list(frame["status"].astype(str)) == ["completed", "failed"]
    assert frame.loc[0, "source_path"] == "/d/a.wav" and pd.isna(frame.loc[1, "source_path"])
    assert frame.loc[0, "output_paths"] == ["/o/a.json"] and frame.loc[1, "output_paths"] == []
    assert "input is not audio" in str(frame.loc[1, "error"])
    for col in ("first_seen", "last_seen"):
        assert str(frame[col].dtype) == "datetime64[ns, UTC]"
    assert list(frame.columns[-5:]) == ["source_path", "output_paths", "service", "first_seen", "last_seen"]


def test_a_version_1_ledger_keeps_its_records_under_service(tmp_path):
    """Ledgers written before the service key (column ``base_url``) open and answer as before."""
    import sqlite3

    path = tmp_path / "v1.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE assets (base_url TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER, path TEXT, name TEXT,
                asset_id TEXT NOT NULL, payload TEXT NOT NULL, recorded_at REAL NOT NULL,
                PRIMARY KEY (base_url, sha256));
            CREATE TABLE jobs (job_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, asset_id TEXT, model TEXT,
                format TEXT, metadata_key TEXT NOT NULL, status TEXT, error TEXT, source_path TEXT,
                payload TEXT NOT NULL, outputs TEXT NOT NULL DEFAULT '[]', result TEXT,
                first_seen REAL NOT NULL, last_seen REAL NOT NULL);
            PRAGMA user_version=1;""")
        db.execute("INSERT INTO assets VALUES ('https://groovy.audioshake.ai', 'h1', 3, '/d/a.wav', 'a.wav', 'as1',"
                   " '{\"id\": \"as1\", \"name\": \"a.wav\"}', 1.0)")
    ledger = Ledger(path)
    assert ledger.lookup_asset(sha256="h1", service="https://groovy.audioshake.ai") == {"id": "as1", "name": "a.wav"}
    assert list(ledger.assets_frame()["service"]) == ["https://groovy.audioshake.ai"]
    ledger.record_job(_job("j1"), service="local-1a2b3c4d5e6f")
    assert ledger.lookup_job(asset_id="as1", model="music_detection", format="json", metadata={},
                             service="local-1a2b3c4d5e6f")["job_id"] == "j1"
    with pytest.raises(ValueError, match="`service` must be a non-empty string"):
        ledger.lookup_asset(sha256="h1", service="")


# --------------------------------------------------------------------------- the Tasks API
def _task(task_id="t1", attempt="att-1", done=False, failed=False, asset="as1"):
    from shakelab.models import tag_metadata

    target = {"id": "tg1", "model": "bass", "formats": ["wav"], "status": "processing", "output": []}
    if done:
        target = {**target, "status": "error" if failed else "completed",
                  "error": {"code": 500, "message": "boom"} if failed else None}
    import datetime as dt

    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload = {"id": task_id, "createdAt": now, "assetId": asset,
               "metadata": tag_metadata(attempt, "mine"), "targets": [target]}
    if done:
        payload["completedAt"] = now
    return payload


TARGETS = [{"model": "bass", "formats": ["wav"]}]


def test_task_attempt_then_settle_then_lookup(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(service=BASE, source_key="asset:as1", targets=TARGETS, metadata="mine")
    ledger.record_task_attempt(attempt_id="att-1", sha256="h1", source_path="/d/a.wav", **key)
    assert [a["attempt_id"] for a in ledger.unconfirmed_task_attempts(**key)] == ["att-1"]
    assert ledger.lookup_task(**key) is None  # no task id yet
    ledger.settle_task_attempt("att-1", _task())
    assert ledger.unconfirmed_task_attempts(**key) == []
    found = ledger.lookup_task(**key)
    assert (found["task_id"], found["attempt_id"], found["status"], found["source_path"]) == (
        "t1", "att-1", "processing", "/d/a.wav")
    # the same request with its targets and formats in another order is the same request
    assert ledger.lookup_task(**{**key, "targets": [{"formats": ["wav"], "model": "bass"}]})["task_id"] == "t1"
    assert ledger.lookup_task(**{**key, "metadata": "other"}) is None
    ledger.record_task(_task(done=True), service=BASE)
    assert ledger.get_task("t1")["status"] == "completed"
    ledger.record_task(_task(), service=BASE)  # a late, older payload never turns it pending again
    assert ledger.get_task("t1")["status"] == "completed"
    ledger.record_task_outputs("t1", ["out/a/bass.wav", "out/a/bass.wav"])
    assert ledger.get_task("t1")["outputs"] == ["out/a/bass.wav"]


def test_failed_or_expired_tasks_are_not_reused(tmp_path):
    import sqlite3

    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(service=BASE, source_key="asset:as1", targets=TARGETS, metadata="mine")
    ledger.record_task(_task("t-failed", "att-f", done=True, failed=True), service=BASE)
    assert ledger.get_task("t-failed")["status"] == "failed" and ledger.lookup_task(**key) is None
    ledger.record_task(_task("t-old", "att-o", done=True), service=BASE)
    assert ledger.lookup_task(**key)["task_id"] == "t-old"
    with sqlite3.connect(ledger.path) as db:  # 72 h later: its results are gone on the service
        db.execute("UPDATE tasks SET created_at=created_at-?, sent_at=sent_at-?", (73 * 3600, 73 * 3600))
    assert ledger.lookup_task(**key) is None


def test_a_fetched_task_settles_its_own_attempt(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(service=BASE, source_key="asset:as1", targets=TARGETS, metadata="mine")
    ledger.record_task_attempt(attempt_id="att-1", **key)
    ledger.record_task(_task(), service=BASE)  # found again in GET /tasks: it carries att-1 in its metadata
    assert ledger.unconfirmed_task_attempts(**key) == [] and ledger.lookup_task(**key)["attempt_id"] == "att-1"


def test_assets_of_the_two_apis_are_kept_apart(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_asset(sha256="h", size=1, path="/d/a.wav", service="local-1", payload={"id": "jobs-asset"})
    assert ledger.lookup_asset(sha256="h", service="local-1", api="tasks") is None
    ledger.record_asset(sha256="h", size=1, path="/d/a.wav", service="local-1", payload={"id": "task-asset"},
                        api="tasks")
    assert ledger.lookup_asset(sha256="h", service="local-1")["id"] == "jobs-asset"
    assert ledger.lookup_asset(sha256="h", service="local-1", api="tasks")["id"] == "task-asset"
    assert list(ledger.assets_frame()["api"]) == ["jobs", "tasks"]
    with pytest.raises(ValueError, match="`api` must be 'jobs' or 'tasks'"):
        ledger.lookup_asset(sha256="h", service="local-1", api="legacy")


def test_done_elsewhere_names_the_other_api(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_asset(sha256="h", size=1, path="/d/a.wav", service="local-1", payload={"id": "as1"})
    ledger.record_job(_job("j1", asset="as1"), service="local-1")
    jobs = ledger.done_elsewhere(sha256="h", api="tasks")
    assert [(d["api"], d["id"], d["models"]) for d in jobs] == [("jobs", "j1", ["music_detection"])]
    assert ledger.done_elsewhere(sha256="h", api="jobs") == []
    ledger.record_task_attempt(attempt_id="att-1", service="local-1", source_key="asset:as9", targets=TARGETS,
                               metadata="mine", sha256="h")
    ledger.settle_task_attempt("att-1", _task(asset="as9"))
    tasks = ledger.done_elsewhere(sha256="h", api="jobs")
    assert [(d["api"], d["id"], d["models"], d["status"]) for d in tasks] == [("tasks", "t1", ["bass"], "processing")]


def test_a_version_3_ledger_gets_the_api_column(tmp_path):
    import sqlite3

    path = tmp_path / "v3.sqlite"
    Ledger(path).record_asset(sha256="h1", size=3, path="/d/a.wav", service="s", payload={"id": "as1"})
    with sqlite3.connect(path) as db:  # back to the schema-3 assets table (no api column)
        db.executescript("""
            CREATE TABLE old AS SELECT service, sha256, size, path, name, asset_id, payload, recorded_at FROM assets;
            DROP TABLE assets; DROP TABLE tasks; ALTER TABLE old RENAME TO assets; PRAGMA user_version=3;""")
    ledger = Ledger(path)
    assert ledger.lookup_asset(sha256="h1", service="s") == {"id": "as1"}
    assert list(ledger.assets_frame()["api"]) == ["jobs"]
    ledger.record_asset(sha256="h1", size=3, path="/d/a.wav", service="s", payload={"id": "as2"}, api="tasks")
    assert ledger.lookup_asset(sha256="h1", service="s", api="tasks") == {"id": "as2"}


def _two_targets(task_id="t2", *, failed="", asset="as2"):
    targets = [{"id": f"{task_id}-{m}", "model": m, "formats": ["wav"], "status": "error" if m == failed else
                "completed", "output": []} for m in ("bass", "drums")]
    return {**_task(task_id, f"att-{task_id}", done=True, asset=asset), "targets": targets}


def test_a_target_is_found_in_a_task_of_several_and_keeps_its_result(tmp_path):
    import sqlite3

    from shakelab.errors import NotInLedgerError

    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(service=BASE, source_key="asset:as2", metadata="mine")
    ledger.record_task_attempt(attempt_id="att-t2", targets=[{"model": "bass", "formats": ["wav"]},
                                                             {"model": "drums", "formats": ["wav"]}], **key)
    ledger.settle_task_attempt("att-t2", _two_targets(failed="bass"))
    drums = {"model": "drums", "formats": ["wav"]}
    assert ledger.lookup_target(target=drums, **key)["target_id"] == "t2-drums"
    assert ledger.lookup_target(target={"model": "bass", "formats": ["wav"]}, **key) is None  # it failed
    assert ledger.lookup_target(target={"model": "drums", "formats": ["flac"]}, **key) is None
    assert ledger.lookup_target(target=drums, **{**key, "metadata": None}) is None
    # the music segments of a target are kept as a job's are
    ledger.record_result("t2-drums", [{"start_time": 0.0, "end_time": 10.0, "confidence": 0.9}])
    assert ledger.lookup_result("t2-drums")[0]["end_time"] == 10.0 and ledger.lookup_result("t2-bass") is None
    with pytest.raises(NotInLedgerError, match="nope"):
        ledger.record_result("nope", [])
    with sqlite3.connect(ledger.path) as db:  # 72 h later: its results are gone on the service
        db.execute("UPDATE tasks SET created_at=created_at-?, sent_at=sent_at-?", (72 * 3600, 72 * 3600))
    assert ledger.lookup_target(target=drums, **key) is None


def test_two_targets_of_one_model_are_told_apart_by_their_variant(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    key = dict(service=BASE, source_key="asset:as3", metadata=None)
    plain = {"model": "vocals", "formats": ["wav"]}
    hq = {**plain, "variant": "high_quality"}
    ledger.record_task_attempt(attempt_id="att-v", targets=[plain, hq], **key)
    ledger.settle_task_attempt("att-v", {"id": "tv", "assetId": "as3", "targets": [
        {"id": "tv-plain", "model": "vocals", "formats": ["wav"], "variant": None, "status": "completed"},
        {"id": "tv-hq", "model": "vocals", "formats": ["wav"], "variant": "high_quality", "status": "completed"}]})
    assert ledger.lookup_target(target=plain, **key)["target_id"] == "tv-plain"
    assert ledger.lookup_target(target=hq, **key)["target_id"] == "tv-hq"


def test_a_version_4_ledger_files_the_targets_of_its_tasks(tmp_path):
    import sqlite3

    path = tmp_path / "v4.sqlite"
    old = Ledger(path)
    old.record_task_attempt(attempt_id="att-t2", service=BASE, source_key="asset:as2", metadata="mine",
                            targets=[{"model": "drums", "formats": ["wav"]}, {"model": "bass", "formats": ["wav"]}])
    old.settle_task_attempt("att-t2", _two_targets())
    old.record_task(_task(done=True), service=BASE)  # a task only fetched (no attempt row of this machine)
    old.close()
    with sqlite3.connect(path) as db:  # back to schema 4: no targets table
        db.executescript("DROP TABLE targets; PRAGMA user_version=4;")
    ledger = Ledger(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    key = dict(service=BASE, metadata="mine")
    assert ledger.lookup_target(source_key="asset:as2", target={"model": "bass", "formats": ["wav"]},
                                **key)["target_id"] == "t2-bass"
    assert ledger.lookup_target(source_key="asset:as1", target={"model": "bass", "formats": ["wav"]},
                                **key)["task_id"] == "t1"
    ledger.record_result("tg1", [])
    assert ledger.lookup_result("tg1") == []
    assert ledger.lookup_task(source_key="asset:as1", targets=TARGETS, **key)["task_id"] == "t1"
