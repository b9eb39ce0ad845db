"""The local server's lifecycle: :class:`LocalServer` (store, workers, uvicorn in a thread), the data dir lock.

:class:`LocalServer` opens the store, starts the job workers and callback sender, binds the
socket and runs uvicorn on the ASGI app of :mod:`shakelab.server.app` (the gate and one router
per API) in a background thread; :meth:`LocalServer.stop` ends them in reverse. One server holds
a data dir at a time (``server.lock``, :class:`DataDirInUse`). :func:`start` keeps one private
server per process (``connect()`` with ``SHAKELAB_LOCAL_SERVER=private``); :func:`serve` runs one
in the foreground for ``shakelab serve``. The running server is the ``ctx`` every router is built
on (see :mod:`shakelab.server.app` for how a second API is mounted).

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp, LocalServer(tmp, token="t0k3n") as srv:
...     srv.base_url.startswith("http://127.0.0.1:"), srv.stats()["jobs"]
(True, 0)
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from shakelab.server.datadir import (DATA_DIR_ENV, LOCK_NAME, DataDirInUse, LocalServerError, default_data_dir,
                                     lock_data_dir, read_holder)
from shakelab.server.faults import Faults

from shakelab.errors import ValidationError

__all__ = ["DATA_DIR_ENV", "LOCK_NAME", "DataDirInUse", "LocalServer", "LocalServerError", "default_data_dir",
           "read_holder", "serve", "start"]

log = logging.getLogger("shakelab.server")


class LocalServer:
    """The local Jobs API server, run in a background thread.

    Parameters
    ----------
    data_dir : str or PathLike
        State directory (SQLite database, stored files, secrets); created if missing.
    token : str, optional
        The bearer token clients must send. ``None`` uses the token stored in ``data_dir/token``,
        generating one (file mode 0600) the first time.
    host : str
        Interface to bind; loopback by default.
    port : int
        TCP port; 0 picks a free one (read it back from :attr:`base_url`).
    workers : int
        Jobs processed at once.
    allow_private_links : bool
        Let ``/upload/link`` and callbacks reach private, loopback and link-local hosts.
    max_upload_bytes : int
        Largest accepted file; larger uploads answer 413 while streaming.
    link_ttl : float
        Seconds a download link stays valid.
    test_hooks : bool
        Mount the test hooks ``GET /_stats`` and ``POST /_faults`` (the test suite does); without
        them those paths answer 404. :attr:`faults` and :meth:`stats` work in process either way.
    webhook : str, optional
        The Tasks API's webhook (the service's per-account dashboard setting): the task object is
        POSTed to this URL each time one of its targets finishes (completed or error), from a
        background sender with 3 retries (0.5, 1, 2 s); never blocks processing. Loopback and
        private hosts are allowed (the operator chose it).

    Attributes
    ----------
    base_url : str
        ``"http://127.0.0.1:PORT"`` once started.
    token : str
    data_dir : pathlib.Path
    faults : shakelab.server.faults.Faults
        Fault injection switches (429s, drops, payload variants, delays).
    token_generated : bool
        True when this instance created the stored token.

    Examples
    --------
    >>> import requests, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> srv = LocalServer(tmp.name, token="t0k3n").start()
    >>> requests.get(f"{srv.base_url}/usage", headers={"Authorization": "Bearer t0k3n"}, timeout=10).status_code
    200
    >>> srv.stats()["requests"], srv       # doctest: +ELLIPSIS
    ({'GET /usage': 1}, LocalServer('...', http://127.0.0.1:..., workers=2))
    >>> srv.stop(); tmp.cleanup()
    """

    link_timeout = 120.0  #: seconds allowed for one ``/upload/link`` download
    #: where models run: "process" (child processes: the API never waits on the GIL and a
    #: crashing decoder cannot take the server down) or "thread" (in the worker threads)
    isolation = "process"

    def __init__(self, data_dir: str | os.PathLike, token: str | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, workers: int = 2, allow_private_links: bool = False,
                 max_upload_bytes: int = 2 * 1024**3, link_ttl: float = 3600.0, test_hooks: bool = False,
                 webhook: str | None = None):
        if not isinstance(data_dir, (str, os.PathLike)):
            raise ValidationError(f"`data_dir` must be a path, not {type(data_dir).__name__}")
        if token is not None and (not isinstance(token, str) or not token.strip() or len(token) > 4096
                                  or any(c in token for c in "\r\n ")):
            raise ValidationError("`token` must be a non-empty string without spaces or line breaks")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValidationError(f"`port` must be an integer 0-65535, not {port!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValidationError(f"`workers` must be a positive integer, not {workers!r}")
        if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
            raise ValidationError(f"`max_upload_bytes` must be a positive integer, not {max_upload_bytes!r}")
        if isinstance(link_ttl, bool) or not isinstance(link_ttl, (int, float)) or link_ttl <= 0:
            raise ValidationError(f"`link_ttl` must be a positive number of seconds, not {link_ttl!r}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host, self.port = host, port
        self.workers = workers
        self.allow_private_links = bool(allow_private_links)
        self.max_upload_bytes = max_upload_bytes
        self.link_ttl = float(link_ttl)
        self.test_hooks = bool(test_hooks)
        if webhook is not None:
            from shakelab.server.api_tasks import check_webhook

            webhook = check_webhook(webhook)
        self.webhook = webhook
        self.faults = Faults()
        self.token_generated = False
        if token is None:
            from shakelab.server.store import read_or_create_secret

            self.data_dir.mkdir(parents=True, exist_ok=True)
            token, self.token_generated = read_or_create_secret(self.data_dir / "token")
        self.token = token
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._uv: Any = None
        self._lock_fd: int | None = None
        # the parts of a running server (None while stopped); the routers' ``ctx`` reads them
        self.store: Any = None
        self.worker: Any = None
        self.signer: Any = None
        self.callbacks: Any = None
        self.tasks: Any = None  # the Tasks API's TasksStore
        self.webhooks: Any = None  # the sender of the Tasks API's webhook
        self._reset_stats()

    def __repr__(self) -> str:  # never shows the token
        state = self.base_url if self.running else "stopped"
        return f"LocalServer({str(self.data_dir)!r}, {state}, workers={self.workers})"

    # -- stats ------------------------------------------------------------------------------
    def _reset_stats(self) -> None:
        self._stats_lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._uploads = 0
        self._jobs = 0
        self._tasks = 0
        self._last_activity = time.monotonic()

    def count_request(self, key: str) -> None:
        """Count one request under ``key`` (``"GET /job/{id}"``); the gate calls it for every request."""
        with self._stats_lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            self._last_activity = time.monotonic()

    def idle_seconds(self) -> float:
        """Seconds since the last request arrived; 0 while a job is queued or running.

        What the idle shutdown of ``shakelab serve --idle-timeout`` measures.

        Examples
        --------
        >>> LocalServer("/nonexistent/shakelab", token="t").idle_seconds() < 60   # nothing asked yet
        True
        """
        worker, now = self.worker, time.monotonic()
        if worker is not None and (worker.active or worker.queued):
            with self._stats_lock:
                self._last_activity = now
        return now - self._last_activity

    def count_upload(self) -> None:
        """Count one stored upload."""
        with self._stats_lock:
            self._uploads += 1

    def count_job(self) -> None:
        """Count one created job."""
        with self._stats_lock:
            self._jobs += 1

    def count_task(self) -> None:
        """Count one task created through ``POST /tasks``."""
        with self._stats_lock:
            self._tasks += 1

    def stats(self) -> dict[str, Any]:
        """Return the counts since :meth:`start`: ``{"uploads", "jobs", "tasks", "model_runs", "requests": {...}}``.

        ``jobs`` counts ``POST /job`` of the Jobs API, ``tasks`` ``POST /tasks`` of the Tasks API,
        ``model_runs`` the runs of a model (one per job; a Tasks target runs once for all its formats).
        Requests are keyed by method and route template (``"GET /job/{id}"``, ``"GET /tasks/{id}"``);
        every request that reached the server counts, including 401s and injected faults.

        Examples
        --------
        >>> LocalServer("/nonexistent/shakelab", token="t").stats()   # see the class example for a running one
        {'uploads': 0, 'jobs': 0, 'tasks': 0, 'model_runs': 0, 'requests': {}}
        """
        worker = self.worker
        with self._stats_lock:
            return {"uploads": self._uploads, "jobs": self._jobs, "tasks": self._tasks,
                    "model_runs": worker.model_runs if worker is not None else 0, "requests": dict(self._requests)}

    # -- payloads ---------------------------------------------------------------------------
    def asset_payload(self, asset: dict, base_url: str) -> dict[str, Any]:
        """``{name, id, fileType, format, link}`` with a freshly signed link."""
        return {"name": asset["name"], "id": asset["id"], "fileType": asset["file_type"],
                "format": asset["format"], "link": self.signer.make(base_url, asset["id"], asset["name"])}

    def job_payload(self, job: dict, base_url: str | None = None, *, variant: str | None = None) -> dict[str, Any]:
        """Build the job's API object (fresh links); ``variant`` reshapes it like older service responses."""
        from shakelab.server.store import iso

        base_url = base_url or self.base_url
        source = self.store.get_asset(job["asset_id"])
        outputs = [a for a in (self.store.get_asset(i) for i in job["outputs"]) if a is not None]
        payload: dict[str, Any] = {
            "id": job["id"], "clientId": job["client_id"], "requestId": job["request_id"],
            "metadata": job["metadata"], "assetId": job["asset_id"], "status": job["status"],
            "createdAt": iso(job["created_at"]), "startedAt": iso(job["started_at"]),
            "updatedAt": iso(job["updated_at"]),
            "sourceAsset": self.asset_payload(source, base_url) if source else None,
            "statusInfo": {"code": job["status_code"], "message": job["status_message"]},
            "callbackUrl": job["callback_url"],
            "outputAssets": [self.asset_payload(a, base_url) for a in outputs],
        }
        if job.get("detail"):  # local-only: how music detection was computed (detector, window, allWindows)
            payload["shakelab"] = job["detail"]
        if variant == "stemAssets":
            payload["stemAssets"] = payload.pop("outputAssets")
            payload["stemMetadata"] = payload.pop("metadata")
        elif variant == "nested":
            outs = payload.pop("outputAssets")
            if payload["sourceAsset"] is not None:
                payload["sourceAsset"]["outputAssets"] = outs
        return payload

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Tell whether the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def server_id(self) -> str:
        """Return the data dir's stable id (the ``clientId`` of ``/usage``); the ledger files the server under it."""
        if self.store is None:
            raise LocalServerError("the server is not running: start() it first")
        return self.store.client_id

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalServer:
        """Open the store, resume unfinished jobs and serve in a background thread; returns self."""
        with self._lock:
            if self.running:
                return self
            self._reset_stats()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_data_dir(self.data_dir)
            try:
                self._start_locked(timeout)
            except BaseException:
                self._stop_locked()
                raise
            return self

    def _start_locked(self, timeout: float) -> None:
        import uvicorn

        from shakelab.server.app import KEEP_ALIVE_TIMEOUT, MAX_CONNECTIONS, Gate, create_app, header_timeout_protocol
        from shakelab.server.links import LinkSigner
        from shakelab.server import api_tasks
        from shakelab.server.callbacks import CallbackSender
        from shakelab.server.store import Store, read_or_create_secret
        from shakelab.server.tasks_store import TasksStore
        from shakelab.server.worker import Worker

        self.store = Store(self.data_dir)
        self.tasks = TasksStore(self.store)
        secret, _ = read_or_create_secret(self.data_dir / "link-secret")
        self.signer = LinkSigner(secret, ttl=self.link_ttl)
        self.callbacks = CallbackSender(allow_private=self.allow_private_links)
        self.worker = Worker(self.store, workers=self.workers, faults=self.faults,
                             payload=lambda job: {"job": self.job_payload(job)}, callbacks=self.callbacks,
                             isolation=self.isolation)
        if self.webhook is not None:
            self.webhooks = CallbackSender(allow_private=True)
            self.worker.on_finish = lambda job: api_tasks.target_finished(self, job)
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        app = Gate(create_app(self, test_hooks=self.test_hooks), self)
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1, server_header=False,
                                timeout_keep_alive=KEEP_ALIVE_TIMEOUT, http=header_timeout_protocol(),
                                limit_concurrency=MAX_CONNECTIONS)
        self._uv = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uv.run, kwargs={"sockets": [sock]},
                                        name=f"shakelab-server-{self.port}", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                self._uv.should_exit = True
                sock.close()
                raise LocalServerError(f"the local server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        fd = self._lock_fd
        assert fd is not None  # taken by start()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.base_url}\n".encode(), 0)
        self.worker.start()

    def stop(self) -> None:
        """Stop serving and stop the workers; unfinished jobs are resumed by the next start on this data dir."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._uv is not None:
            self._uv.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        self._shutdown_parts()

    def _shutdown_parts(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        for sender in (self.callbacks, self.webhooks):
            if sender is not None:
                sender.stop()
        if self.store is not None:
            self.store.close()
        self.worker = self.callbacks = self.webhooks = self.tasks = self.store = None
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the data dir lock

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it uvicorn's separate header/body writes meet
    # the client's delayed ACK and every small answer takes ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


_embedded: LocalServer | None = None
_embedded_lock = threading.Lock()


def start(data_dir: str | os.PathLike | None = None, token: str | None = None, port: int = 0,
          workers: int = 2) -> LocalServer:
    """Start the process-wide private server in a background thread (or return the running one).

    What ``connect()`` uses with ``SHAKELAB_LOCAL_SERVER=private``; by default it shares the
    per-user server of :mod:`shakelab.server.daemon` instead.

    Parameters
    ----------
    data_dir : str or PathLike, optional
        Defaults to :func:`default_data_dir` (``SHAKELAB_SERVER_DIR``, else the user data dir).
    token : str, optional
        Defaults to the token stored in the data dir (generated once).
    port : int
        0 picks a free port.
    workers : int
        Jobs processed at once.

    Returns
    -------
    LocalServer
        Running; ``base_url`` and ``token`` are what a client needs. Stopped at interpreter exit.

    Raises
    ------
    DataDirInUse
        Another server holds the data dir (its ``pid`` and ``url`` are on the exception).

    Examples
    --------
    >>> srv = start()   # what connect() uses here (SHAKELAB_LOCAL_SERVER=private)
    >>> srv is start(), srv.running
    (True, True)
    """
    global _embedded
    with _embedded_lock:
        if _embedded is not None and _embedded.running:
            return _embedded
        srv = LocalServer(data_dir if data_dir is not None else default_data_dir(), token, port=port,
                          workers=workers)
        srv.start()
        if srv.isolation == "process":
            from shakelab.server.pool import prewarm

            prewarm(workers)  # a notebook's first job should not wait for librosa's imports
        if _embedded is None:
            atexit.register(_stop_embedded)
        _embedded = srv
        return srv


def _stop_embedded() -> None:
    if _embedded is not None:
        _embedded.stop()


def serve(host: str = "127.0.0.1", port: int = 8077, data_dir: str | os.PathLike | None = None,
          token: str | None = None, workers: int = 2, allow_private_links: bool = False,
          max_upload_bytes: int = 2 * 1024**3, link_ttl: float = 3600.0, *, idle_timeout: float = 0.0,
          background: bool = False, test_hooks: bool = False, webhook: str | None = None) -> None:
    """Run the server in the foreground until Ctrl-C, SIGTERM or idle shutdown (``shakelab serve``).

    With no ``token`` the one stored in the data dir is used; when it is generated here it is
    printed once, never again (later runs say where it is stored). While it runs, the data dir
    holds its record (``server.json``: pid, URL, server id, idle timeout), which
    ``shakelab server status | stop`` and ``connect()`` read.

    Parameters
    ----------
    idle_timeout : float
        Stop after this many seconds without a request while no job is queued or running;
        0 never stops.
    background : bool
        The detached per-user server (:func:`shakelab.server.daemon.ensure` starts it so):
        standard input from /dev/null, output and log into ``<data dir>/server.log``, the
        token never printed, and a free port when ``port`` is taken.
    test_hooks : bool
        Mount ``GET /_stats`` and ``POST /_faults`` (``shakelab serve --test-hooks``).
    webhook : str, optional
        The Tasks API's webhook URL (see :class:`LocalServer`).

    Examples
    --------
    >>> serve(port=8077)    # doctest: +SKIP
    ... # skipped: it blocks until Ctrl-C
    """
    from shakelab.server import daemon

    if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) or not idle_timeout >= 0:
        raise ValidationError(f"`idle_timeout` must be a number of seconds >= 0 (0: never), not {idle_timeout!r}")
    data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
    if background:
        daemon.redirect_streams(data_dir)
    srv = LocalServer(data_dir, token, host=host, port=port,
                      workers=workers, allow_private_links=allow_private_links,
                      max_upload_bytes=max_upload_bytes, link_ttl=link_ttl, test_hooks=test_hooks,
                      webhook=webhook)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        srv.start()
    except OSError as exc:
        if not background or port == 0:
            raise
        log.info("%s; taking a free port instead", exc)
        srv.port = 0
        srv.start()
    print(f"shakelab local Jobs API and Tasks API listening on {srv.base_url} (data dir {srv.data_dir})",
          flush=True)
    if srv.webhook is not None:
        print(f"Tasks API webhook: {srv.webhook} (a POST of the task each time one of its targets finishes)",
              flush=True)
    if srv.token_generated and not background:
        print(f"generated API token (stored in {srv.data_dir / 'token'}, shown only this once): {srv.token}",
              flush=True)
    elif token is None:
        print(f"using the API token stored in {srv.data_dir / 'token'}", flush=True)
    daemon.write_record(srv, idle_timeout=float(idle_timeout), background=background)
    if background and srv.isolation == "process":
        from shakelab.server.pool import prewarm

        prewarm(workers)  # the first job of a notebook should not wait for librosa's imports
    if idle_timeout:
        print(f"stops after {daemon.describe_seconds(idle_timeout)} without requests or running jobs", flush=True)
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    reason = "stopped"
    try:
        while not stop.wait(0.5) and srv.running:
            if idle_timeout and srv.idle_seconds() >= idle_timeout:
                reason = f"idle for {daemon.describe_seconds(idle_timeout)}: stopped"
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        srv.stop()
        daemon.remove_record(srv.data_dir)
        print(f"shakelab server {reason}", flush=True)
