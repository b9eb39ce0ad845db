"""The client of AudioShake's Tasks API (``api.audioshake.ai``), and of the local server's Tasks API.

:class:`TasksClient` is the second thin client on the one transport of :mod:`shakelab.transport`
(session, ``x-api-key`` auth, the retry rule, ``Retry-After``), the one poll loop
(:class:`~shakelab.transport.Poller`), the errors of :mod:`shakelab.errors` and the ledger of
:mod:`shakelab.ledger`; it adds only what the Tasks API has: a method per endpoint
(``upload`` = ``POST /assets``, ``assets``, ``create_task``, ``get_task``, ``tasks``,
``usage`` / ``distribution`` = ``GET /tasks/statistics``) plus what a notebook wants
(``wait``, ``submit``, ``download``, ``music_detection``, ``segments``).

Never billed twice, even when an answer is lost
-----------------------------------------------
``POST /tasks`` has no idempotency key, but the API echoes a task's ``metadata`` and lists tasks
(``GET /tasks``, newest first). So every task this client creates carries an attempt id of its
own in ``metadata``: the JSON string ``{"shakelab": {"attempt": "<id>"}, "user": <your
metadata>}`` (:func:`shakelab.models.tag_metadata`; ``task.user_metadata`` gives yours back).

1. The attempt is recorded in the ledger *before* the request is sent.
2. When the answer is lost (connection dropped or reset after sending, read timeout, 5xx, a
   garbled body), the client looks for the attempt in ``GET /tasks`` before anything else: a
   bounded scan (at most :attr:`TasksClient.scan_pages` pages of 100), newest first, stopping
   at a page whose tasks are all older than the attempt (a page listed in the other order, which
   the reference does not rule out, does not stop it), repeated for up to
   :attr:`TasksClient.find_grace` seconds while a fresh task is not yet listed. Found: that task
   is returned (and recorded). Not found: nothing was created, and the request is sent again
   (with the same attempt id), at most ``max_retries`` times. When ``GET /tasks`` cannot be
   read either, the attempt stays recorded and :class:`~shakelab.errors.UnconfirmedTaskError`
   is raised: the next ``create_task`` / ``submit`` of the same request looks for it first.
3. After a crash (a kernel restart between sending and the answer), the same request finds
   the ledger's unconfirmed attempt and looks for it the same way before creating another.
4. ``submit`` returns a recorded task of the same request (same file, same targets, same
   metadata) instead of creating one, while the service keeps its results (72 h); an upload
   of the same content is reused while the asset lives (72 h, less an hour's margin).

Examples
--------
In a notebook, ``shakelab.connect(api="tasks")`` gives a client (the local server's Tasks API when
no ``AUDIOSHAKE_API_KEY`` is set). Here, a private local server in a temporary folder:

>>> import shutil, tempfile
>>> import numpy as np, soundfile as sf
>>> from shakelab.server import LocalServer
>>> folder = tempfile.mkdtemp()
>>> server = LocalServer(data_dir=f"{folder}/server", token="example-key-0123456789", port=0, workers=1)
>>> server = server.start()
>>> sf.write(f"{folder}/take1.wav", np.zeros(22050, dtype="float32"), 22050)
>>> client = TasksClient(api_key=server.token, base_url=server.base_url)
>>> task = client.submit(f"{folder}/take1.wav", ["bass"], formats="flac", progress=False)
>>> task.completed, [(t.model, t.status.value, t.cost) for t in task.targets]
(True, [('bass', 'completed', 1.0)])
>>> task.user_metadata is None and task.attempt is not None   # shakelab's tag, none of yours
True
>>> [p.name for p in client.download(task, f"{folder}/out", progress=False)]
['bass.flac']
>>> client.close(); server.stop(); shutil.rmtree(folder)
"""

from __future__ import annotations

import json as _json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from shakelab import catalog
from shakelab.client import (
    BASE_URL_ENV, _download_to, _local_server, _refused, _ServiceClient, is_service_url, output_folder,
)
from shakelab.errors import (
    APIError, AuthenticationError, JobTimeoutError, MalformedResponseError, NotFoundError,
    ShakelabError, TaskFailedError, UnconfirmedTaskError, ValidationError, scrubbed_logger,
)
from shakelab.models import (
    Asset, JobStatus, Target, Task, TaskOutput, check_targets, check_task_request, tag_metadata,
)
from shakelab.transport import BEFORE_SEND, ApiKeyAuth, Poller, Schedule, is_loopback

__all__ = ["DEFAULT_BASE_URL", "KEY_ENV", "TasksClient"]

log = scrubbed_logger("shakelab.tasks")

DEFAULT_BASE_URL = "https://api.audioshake.ai"
KEY_ENV = "AUDIOSHAKE_API_KEY"
#: a task is looked for in pages of this many (the most ``take`` allows)
_PAGE = 100
#: tolerated difference between this machine's clock and the service's, seconds
_CLOCK_SLACK = 300.0


def _task_id(task: Any) -> str:
    if isinstance(task, Task):
        return task.id
    if isinstance(task, str) and task.strip():
        return task.strip()
    raise ValidationError(f"`task` must be a Task or a task id string, not {type(task).__name__} {task!r:.80}")


def _user_metadata(metadata: Any) -> Any:
    """Check the caller's metadata: any JSON value (a string is kept as it is)."""
    if metadata is None:
        return None
    try:
        _json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationError(f"`metadata` must be a string or a JSON value (dict, list, number), not "
                              f"{type(metadata).__name__} {metadata!r:.100}") from None
    return metadata


class TasksClient(_ServiceClient):
    """A client for AudioShake's Tasks API (or the local server's Tasks API).

    Parameters
    ----------
    api_key : str, optional
        Default: ``AUDIOSHAKE_API_KEY``. Sent as ``x-api-key``; never shown in any repr, message
        or log record. With neither a key nor a ``base_url`` (nor ``AUDIOSHAKE_BASE_URL``), the
        client talks to the embedded local server's Tasks API, as ``shakelab.connect()`` does.
    base_url : str, optional
        Default: ``AUDIOSHAKE_BASE_URL``, else ``https://api.audioshake.ai``.
    timeout, max_retries, max_retry_after, backoff, max_backoff
        The transport's (see :class:`shakelab.Client`: the same rule).
    ledger : shakelab.ledger.Ledger, optional
        Records uploads and tasks (apart from the Jobs API's), so that nothing is uploaded or
        billed twice and a lost answer is found again (the module docstring says how).
    service : str, optional
        The key the ledger files records under (default: ``base_url``; a local server's id).

    Raises
    ------
    ValidationError
        A ``base_url`` without a key, or a malformed option.

    Examples
    --------
    >>> client = TasksClient(api_key="ashke_example_key", base_url="http://127.0.0.1:8077")
    >>> client
    TasksClient(base_url='http://127.0.0.1:8077', api_key=<hidden>)
    >>> client.close()
    """

    #: which API this client speaks (the ledger keeps the two apart)
    api = "tasks"
    _name = "TasksClient"
    _credential = "api_key"
    _auth = ApiKeyAuth
    _default_url = DEFAULT_BASE_URL
    _upload_path = "/assets"
    _unpicklable = "a TasksClient cannot be pickled (it holds the API key); build a new one where needed"
    _log = log
    #: seconds a lost task is looked for in ``GET /tasks`` while it may not be listed yet
    find_grace = 10.0
    #: most pages of 100 tasks one look scans
    scan_pages = 10
    #: seconds ``wait`` tolerates a 404 for a task it has not seen yet
    not_found_grace = 60.0

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None, timeout: float = 30.0,
                 max_retries: int = 4, max_retry_after: float = 60.0, backoff: float = 0.5,
                 max_backoff: float = 8.0, ledger: Any = None, service: str | None = None):
        if api_key is None:
            api_key = os.environ.get(KEY_ENV) or None
        self.local = None
        if api_key is None and base_url is None and not os.environ.get(BASE_URL_ENV):
            self.local = _local_server()
            api_key, base_url = self.local.token, self.local.url
            service = service or self.local.server_id
        if api_key is None:
            raise ValidationError(f"no API key: pass `api_key=` or set the {KEY_ENV} environment variable "
                                  "(with neither, and no base_url, the local server's Tasks API is used)")
        super().__init__(api_key, base_url=base_url, timeout=timeout, max_retries=max_retries,
                         max_retry_after=max_retry_after, backoff=backoff, max_backoff=max_backoff, ledger=ledger,
                         service=service)
        self._tasks: dict[str, Task] = {}

    @property
    def _for_service(self) -> bool:
        return is_service_url(self.base_url)

    def _remember(self, task: Task) -> Task:
        with self._lock:
            self._tasks[task.id] = task
        self._ledger_call("record_task", task.raw, service=self.service,
                          source_path=self._asset_paths.get(task.asset_id or ""))
        return task

    def _parse_task(self, payload: Any, what: str) -> Task:
        try:
            return Task.from_payload(payload)
        except ValueError as exc:
            raise MalformedResponseError(f"{what} answered a payload that is not a task: {exc}") from None

    # ------------------------------------------------------------------ assets
    def upload(self, source: Any, *, name: str | None = None, progress: bool = True) -> Asset:
        """Upload a file (``POST /assets``, streamed multipart, field ``file``) and return its :class:`Asset`.

        The same rules as :meth:`shakelab.Client.upload`: a path, ``pathlib.Path`` or binary file
        object; flat memory whatever the size; with a ledger, the same content uploaded through
        the Tasks API less than 71 hours ago is reused (assets live 72 h).

        Parameters
        ----------
        source : str, pathlib.Path or binary file object
        name : str, optional
            File name announced to the service (default: the file's name).
        progress : bool, default True

        Returns
        -------
        Asset
            ``id``, ``format``, ``name`` (and ``link`` when the service sends it).

        Examples
        --------
        >>> import shakelab
        >>> client = shakelab.TasksClient()   # no key, no base_url: the local server's Tasks API
        >>> asset = client.upload("data/demo.flac", progress=False)
        >>> asset.format, asset.name
        ('flac', 'demo.flac')
        """
        return self._upload(source, name=name, progress=progress)

    def _parse_asset(self, payload: Any) -> Asset:
        try:
            return Asset.from_payload(payload)
        except ValueError as exc:
            raise MalformedResponseError(f"POST /assets answered a payload that is not an asset: {exc}") from None

    def assets(self) -> list[Asset]:
        """List the account's assets (``GET /assets``, a bare JSON array).

        Returns
        -------
        list of Asset

        Examples
        --------
        >>> asset = client.upload("song.wav", progress=False)
        >>> [(a.format, a.name) for a in client.assets() if a.id == asset.id]
        [('wav', 'song.wav')]
        """
        payload = self._request("GET", "/assets")
        if isinstance(payload, Mapping) and isinstance(payload.get("assets"), list):
            payload = payload["assets"]
        if not isinstance(payload, list):
            raise MalformedResponseError(f"GET /assets answered {type(payload).__name__}, not a JSON array")
        try:
            return [Asset.from_payload(item) for item in payload]
        except ValueError as exc:
            raise MalformedResponseError(f"GET /assets answered an entry that is not an asset: {exc}") from None

    # ------------------------------------------------------------------ tasks
    def create_task(self, *, asset: Asset | str | None = None, url: str | None = None, targets: Any,
                    metadata: Any = None, force: bool = False) -> Task:
        """Create one task (``POST /tasks``): 1 to 20 targets on one source. Never billed twice.

        Keywords only: the source is ``asset=`` (an uploaded :class:`Asset` or its id) or
        ``url=`` (a public ``https://`` URL), exactly one; nothing is guessed from one string.
        The task's ``metadata`` carries this client's attempt id beside yours (module docstring),
        so a lost answer is found again in ``GET /tasks`` instead of creating a second task.

        Parameters
        ----------
        asset : Asset or str, optional
        url : str, optional
        targets : list of dict
            ``[{"model": "vocals", "formats": ["wav"], "variant": "high_quality"}, ...]``, checked
            by :func:`shakelab.models.check_targets` before anything is sent.
        metadata : str or JSON value, optional
            Yours; ``task.user_metadata`` gives it back.
        force : bool, default False
            Do not look for an earlier attempt of this request whose answer was lost.

        Returns
        -------
        Task
            Every target ``processing``. ``reused`` is True when an earlier attempt's task was
            found instead (nothing was sent).

        Raises
        ------
        ValidationError
            Before any request: both or neither source, bad targets, metadata too long.
        UnconfirmedTaskError
            The answer was lost and ``GET /tasks`` could not be read to find the task.

        Examples
        --------
        >>> asset = client.upload("song.wav", progress=False)
        >>> targets = [{"model": "bass", "formats": ["wav", "mp3"]}]
        >>> task = client.create_task(asset=asset, targets=targets)
        >>> task.asset_id == asset.id, [(t.model, t.status.value) for t in task.targets]
        (True, [('bass', 'processing')])
        >>> [t.formats for t in client.wait(task, progress=False).targets]
        [('wav', 'mp3')]
        """
        if not isinstance(force, bool):
            raise ValidationError(f"`force` must be True or False, not {force!r}")
        asset_id = None
        if asset is not None:
            if not isinstance(asset, (Asset, str)):
                raise ValidationError(f"`asset` must be an Asset or an asset id string, not "
                                      f"{type(asset).__name__} {asset!r:.80}")
            asset_id = asset.id if isinstance(asset, Asset) else asset
        user = _user_metadata(metadata)
        body = check_task_request(asset_id=asset_id, url=url, targets=targets, local=not self._for_service,
                                  metadata=tag_metadata(uuid.uuid4().hex, user))
        source_key = f"asset:{body['assetId']}" if "assetId" in body else f"url:{body['url']}"
        key = dict(service=self.service, source_key=source_key, targets=body["targets"], metadata=user)
        if not force and self.ledger is not None:
            found = self._recover(key)
            if found is not None:
                return replace(found, reused=True)
        attempt = uuid.uuid4().hex
        body["metadata"] = tag_metadata(attempt, user)
        check_task_request(asset_id=asset_id, url=url, targets=body["targets"], metadata=body["metadata"],
                           local=not self._for_service)  # the length with this attempt's tag
        aid = body.get("assetId", "")
        if self.ledger is not None:
            try:  # before sending: a crash from here on leaves the attempt to be found again
                self.ledger.record_task_attempt(attempt_id=attempt, sha256=self._asset_sha.get(aid),
                                                source_path=self._asset_paths.get(aid), force=force, **key)
            except Exception as exc:  # without the record a lost answer could not be found after a crash
                raise ShakelabError(f"the ledger could not record the task before POST /tasks "
                                    f"({type(exc).__name__}: {exc}); pass ledger=None to send without it") from None
        sent_at = time.time()
        resends = 0
        while True:
            try:
                payload = self._request("POST", "/tasks", json=body, retry=BEFORE_SEND)
                task = self._parse_task(payload, "POST /tasks")
                break
            except BaseException as exc:
                if _refused(exc):  # a 4xx or never sent: nothing was created
                    self._ledger_call("settle_task_attempt", attempt, None)
                    raise
                if not isinstance(exc, (ShakelabError, OSError)):
                    raise  # KeyboardInterrupt and the like: the attempt stays recorded, to be found again
                log.warning("POST /tasks: %s; the task may exist: looking for attempt %s in GET /tasks", exc, attempt)
                found = self._find(attempt, sent_at, lost=exc)
                if found is not None:
                    task = found
                    break
                if resends >= self.max_retries:
                    self._ledger_call("settle_task_attempt", attempt, None)
                    raise
                resends += 1
                delay = self.transport.backoff_delay(resends - 1)
                log.warning("GET /tasks lists no task of attempt %s after %.0f s: nothing was created; sending "
                            "POST /tasks again (%d/%d) in %.2f s", attempt, self.find_grace, resends,
                            self.max_retries, delay)
                time.sleep(delay)
        self._ledger_call("settle_task_attempt", attempt, task.raw, service=self.service)
        return self._remember(task)

    def _recover(self, key: dict) -> Task | None:
        """Look for the tasks of earlier attempts of this request whose answer never arrived."""
        for lost in self._ledger_call("unconfirmed_task_attempts", **key) or []:
            log.warning("an earlier POST /tasks of this request (attempt %s) never got its answer: looking for it "
                        "in GET /tasks before creating another", lost["attempt_id"])
            found = self._find(lost["attempt_id"], lost["sent_at"], lost=None)
            if found is not None:
                self._ledger_call("settle_task_attempt", lost["attempt_id"], found.raw, service=self.service)
                return self._remember(found)
            self._ledger_call("settle_task_attempt", lost["attempt_id"], None)
        return None

    def _find(self, attempt: str, sent_at: float, *, lost: BaseException | None) -> Task | None:
        """Find the task tagged ``attempt`` in ``GET /tasks``, retried up to :attr:`find_grace` s; None: absent.

        Raises :class:`UnconfirmedTaskError` when the list could not be read at all.
        """
        errors: list[BaseException] = []
        listed = False

        def scan() -> Task | None:
            nonlocal listed
            found = self._scan(attempt, sent_at)
            listed = True
            return found

        poller: Poller[Task | None] = Poller(
            scan, lambda t: JobStatus.PROCESSING if t is None else JobStatus.COMPLETED, subject=attempt,
            schedule=Schedule(first=0.25, growth=2.0, cap=2.0), timeout=self.find_grace, seen=True,
            on_error=errors.append)
        try:
            return poller.run()
        except JobTimeoutError:
            if listed:
                return None
            cause: BaseException | None = lost if lost is not None else (errors[-1] if errors else None)
        except APIError as exc:  # a 401/403/404 on the list: it cannot be read at all
            cause = exc
        raise UnconfirmedTaskError(attempt, sent_at, cause, recorded=self.ledger is not None)

    def _scan(self, attempt: str, sent_at: float) -> Task | None:
        """One bounded scan of ``GET /tasks`` (:attr:`scan_pages` pages) for the task tagged ``attempt``.

        The list's order is unconfirmed (newest first, likely): a page listed newest first whose
        tasks are all older than the attempt ends the scan; a page in the other order does not.
        """
        for page in range(self.scan_pages):
            batch = self.tasks(skip=page * _PAGE, take=_PAGE)
            for task in batch:
                if task.attempt == attempt:
                    return task
            if len(batch) < _PAGE:
                return None
            times = [t.created_at.timestamp() for t in batch if t.created_at is not None]
            newest_first = len(times) == len(batch) and times == sorted(times, reverse=True)
            if newest_first and times[0] < sent_at - _CLOCK_SLACK:
                return None  # a whole page older than the attempt: it is not further down
        return None

    def get_task(self, task: Task | str) -> Task:
        """Fetch the task's current state (``GET /tasks/{id}``).

        Examples
        --------
        >>> task = client.submit("song.wav", ["bass"], wait=False, progress=False)
        >>> client.get_task(task.id).id == task.id
        True
        >>> client.wait(task, progress=False).is_done, client.get_task(task.id).is_done
        (True, True)
        """
        tid = _task_id(task)
        fetched = self._parse_task(self._request("GET", f"/tasks/{quote(tid, safe='')}"), f"GET /tasks/{tid}")
        return self._remember(fetched)

    def tasks(self, *, skip: int = 0, take: int = 10) -> list[Task]:
        """One page of the account's tasks (``GET /tasks?skip=&take=``; newest first on the service).

        Parameters
        ----------
        skip : int, default 0
            Tasks to skip (>= 0).
        take : int, default 10
            Page size, 1 to 100.

        Returns
        -------
        list of Task

        Examples
        --------
        >>> first = client.submit("song.wav", ["bass"], progress=False)
        >>> second = client.submit("song.wav", ["drums"], progress=False)
        >>> [t.id for t in client.tasks(take=2)] == [second.id, first.id]   # newest first
        True
        """
        for pname, value, low, high in (("skip", skip, 0, None), ("take", take, 1, 100)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
                bounds = ">= 0" if high is None else "from 1 to 100"
                raise ValidationError(f"`{pname}` must be a whole number {bounds}, not {value!r}")
        payload = self._request("GET", "/tasks", params={"skip": skip, "take": take})
        if isinstance(payload, Mapping) and isinstance(payload.get("tasks"), list):
            payload = payload["tasks"]
        if not isinstance(payload, list):
            raise MalformedResponseError(f"GET /tasks answered {type(payload).__name__}, not a JSON array")
        return [self._parse_task(item, "GET /tasks") for item in payload]

    def iter_tasks(self, *, page_size: int = 100) -> Iterator[Task]:
        """Every task of the account, page after page (``GET /tasks``), until a short page.

        Examples
        --------
        >>> task = client.submit("song.wav", ["bass"], progress=False)
        >>> ids = [t.id for t in client.iter_tasks(page_size=2)]
        >>> task.id in ids, len(ids) == len(set(ids))   # every page read, none twice
        (True, True)
        """
        skip = 0
        while True:
            batch = self.tasks(skip=skip, take=page_size)
            yield from batch
            if len(batch) < page_size:
                return
            skip += len(batch)

    # ------------------------------------------------------------------ waiting
    def poller(self, task: Task | Target | str, *, timeout: float | None = None, poll_interval: float | None = None,
               cancel: threading.Event | None = None, first_delay: float = 0.0) -> Poller[Any]:
        """Build the :class:`~shakelab.transport.Poller` that :meth:`wait` runs (widgets drive its ``step``).

        Done when ``completedAt`` is set; a failed target raises :class:`~shakelab.errors.TaskFailedError`
        then, never before the other targets finished. Given a :class:`Target` (a run of
        :meth:`start`), it polls that target (done when it ends; a failure raises
        ``JobFailedError`` with its ``error.message``), as ``Client.poller`` polls a job.
        """
        if isinstance(task, Target):
            return self._run_poller(task, timeout=timeout, poll_interval=poll_interval, cancel=cancel,
                                    first_delay=first_delay)
        tid = _task_id(task)
        for pname, value in (("timeout", timeout), ("poll_interval", poll_interval)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValidationError(f"`{pname}` must be a positive number of seconds or None, not {value!r}")
        if isinstance(task, Task) and not task.is_done:
            task = tid  # seen only once done (as Client.poller): a 404 just after creation is tolerated

        def classify(t: Task) -> JobStatus:
            if not t.is_done:
                return JobStatus.PROCESSING
            return JobStatus.ERROR if t.failed_targets else JobStatus.COMPLETED

        schedule = Schedule(first=poll_interval, growth=1.0, cap=poll_interval) if poll_interval else None
        return Poller(lambda: self.get_task(tid), classify, subject=task, schedule=schedule, timeout=timeout,
                      not_found_grace=self.not_found_grace, seen=isinstance(task, Task), cancel=cancel,
                      failure=TaskFailedError, resume_hint=f"client.wait({tid!r})", first_delay=first_delay)

    def wait(self, task: Task | str, *, timeout: float | None = None, poll_interval: float | None = None,
             progress: bool = True, cancel: threading.Event | None = None) -> Task:
        """Poll a task until ``completedAt`` is set (every target ended).

        The same loop as :meth:`shakelab.Client.wait`: polls back off from 1 s to 15 s, a 404
        just after creation is tolerated, transient errors are survived until the deadline.

        Parameters
        ----------
        task : Task or str
        timeout : float, optional
            Seconds in all; then :class:`~shakelab.errors.JobTimeoutError` (the task keeps running).
        poll_interval : float, optional
            Fixed seconds between polls.
        progress : bool, default True
            One ``tqdm`` line with the targets' statuses.
        cancel : threading.Event, optional

        Returns
        -------
        Task
            Done, every target ``completed``.

        Raises
        ------
        TaskFailedError
            A target ended ``error``/``failed``: raised once the task is done (the other targets
            finished), with each failed target's ``error.message`` and the task and target ids.
        JobTimeoutError

        Examples
        --------
        >>> task = client.submit("song.wav", ["vocals", "drums"], wait=False, progress=False)
        >>> done = client.wait(task, timeout=600, progress=False)
        >>> done.id == task.id, done.completed, [t.status.value for t in done.targets]
        (True, True, ['completed', 'completed'])
        """
        from tqdm.auto import tqdm

        poller = self.poller(task, timeout=timeout, poll_interval=poll_interval, cancel=cancel)
        bar = tqdm(total=None, desc=f"task {_task_id(task)}", bar_format="{desc} [{elapsed}]{postfix}",
                   disable=not progress, leave=False)
        poller.on_update = lambda t: bar.set_postfix_str(
            ", ".join(f"{x.name} {x.status_text}" for x in t.targets), refresh=True)
        poller.on_error = lambda exc: log.warning("polling task %s: %s; still waiting", _task_id(task), exc)
        try:
            return poller.run()
        finally:
            bar.close()

    # ------------------------------------------------------------------ conveniences
    def _source_of(self, source: Any, progress: bool) -> dict:
        """``asset=`` or ``url=`` for :meth:`create_task` from what ``submit`` was given (uploads a file)."""
        if isinstance(source, Asset):
            return {"asset": source}
        if isinstance(source, str) and re.match(r"(?i)^https?://", source):
            return {"url": source}
        return {"asset": self.upload(source, progress=progress)}

    def submit(self, source: Any, models: str | Iterable[str], *, formats: str | Mapping[str, Any] | None = None,
               wait: bool = True, timeout: float | None = None, metadata: Any = None, force: bool = False,
               progress: bool = True, **options: Any) -> Task:
        """Upload once and create ONE task with one target per model, optionally waiting.

        Parameters
        ----------
        source : str, pathlib.Path, binary file object, Asset, or an ``https://`` URL
            A file is uploaded (:meth:`upload`); a URL is passed as the task's ``url``.
        models : str or list of str
            One target each (1 to 20, no model twice).
        formats : str or dict, optional
            One format for every model, or a dict model -> format (or list of formats); models it
            omits get their natural one (json for music_detection, wav for stems).
        wait : bool, default True
        timeout : float, optional
        metadata : str or JSON value, optional
        force : bool, default False
            Create a new task even when the ledger has one for the same request.
        **options
            Target keys for every target: ``residual``, ``variant``, ``language``; the local
            server also reads ``window`` and ``all_windows`` of ``music_detection``.

        Returns
        -------
        Task
            ``reused=True`` when the ledger had this very request (same source, targets and
            metadata, results still kept): nothing was sent.

        Raises
        ------
        ValidationError
            Before anything is sent or uploaded.
        TaskFailedError
            With ``wait=True``, when a target failed (after every target ended).

        Examples
        --------
        >>> formats = {"vocals": ["wav", "mp3"]}   # drums: its natural wav
        >>> task = client.submit("song.wav", ["vocals", "drums"], formats=formats, progress=False)
        >>> [(t.model, t.status.value, [o.format for o in t.outputs]) for t in task.targets]
        [('vocals', 'completed', ['wav', 'mp3']), ('drums', 'completed', ['wav'])]
        >>> again = client.submit("song.wav", ["vocals", "drums"], formats=formats, progress=False)
        >>> again.reused, again.id == task.id   # the ledger had this very request: nothing sent
        (True, True)
        """
        names = [models] if isinstance(models, str) else list(models) if isinstance(models, Iterable) else None
        if not names:
            raise ValidationError(f"`models` must be a model name or a non-empty list of them, not {models!r}")
        if formats is not None and not isinstance(formats, (str, Mapping)):
            raise ValidationError(f"`formats` must be None, a format name or a dict model -> format(s), "
                                  f"not {formats!r}")
        chosen = dict(formats) if isinstance(formats, Mapping) else {m: formats for m in names}
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValidationError(f"`formats` names model(s) {unknown!r} that are not in `models` {names!r}")
        targets = []
        for model in names:
            value = chosen.get(model)
            target = {"model": model, **options}
            if value is not None:
                target["formats"] = [value] if isinstance(value, str) else value
            targets.append(target)
        targets = check_targets(targets, local=not self._for_service)
        user = _user_metadata(metadata)
        if isinstance(source, str) and re.match(r"(?i)^https?://", source):
            check_task_request(url=source, targets=targets, local=not self._for_service)
        where = self._source_of(source, progress)
        task = None
        if self.ledger is not None and not force:
            task = self._reuse(where, targets, user)
        if task is None:
            task = self.create_task(**where, targets=targets, metadata=user, force=force)
        if not wait:
            return task
        done = self.wait(task, timeout=timeout, progress=progress)
        return replace(done, reused=task.reused)

    def _reuse(self, where: dict, targets: list, user: Any) -> Task | None:
        asset = where.get("asset")
        source_key = f"asset:{asset.id if isinstance(asset, Asset) else asset}" if asset is not None \
            else f"url:{where['url']}"
        record = self._ledger_call("lookup_task", service=self.service, source_key=source_key, targets=targets,
                                   metadata=user)
        if not record:
            return None
        try:
            previous = self.get_task(record["task_id"])
        except NotFoundError:
            return None
        if previous.failed_targets:
            return None
        log.info("reusing task %s (the same request, from the ledger): nothing sent", previous.id)
        return replace(previous, reused=True)

    # ------------------------------------------------------------------ outputs
    def _done(self, task: Any) -> Task:
        current = task if isinstance(task, Task) and task.is_done else self.get_task(task)
        if not current.is_done:
            raise ValidationError(f"`task` {current.id!r} is still processing "
                                  f"({', '.join(f'{t.name} {t.status_text}' for t in current.targets)}); "
                                  f"call client.wait({current.id!r}) before fetching its outputs")
        return current

    def _fetch(self, task: Task, target_id: str | None, fmt: str | None, index: int,
               consume: Any) -> tuple[Task, Any]:
        """GET one output's link (no key); a 403/404 (expired) fetches the task once for fresh links."""
        refreshed = False
        while True:
            target = next((t for t in task.targets if t.id == target_id), None)
            outputs = target.outputs if target is not None else []
            output = next((o for o in outputs if o.format == fmt), None) if fmt else None
            if output is None and index < len(outputs):
                output = outputs[index]
            if output is None or not output.link:
                raise MalformedResponseError(f"target {target_id} of task {task.id} has no link for its "
                                             f"{fmt or index} output", getattr(output, "raw", None))
            try:
                resp = self._request("GET", urljoin(self.base_url + "/", output.link), auth=False, stream=True)
            except (AuthenticationError, NotFoundError) as exc:
                if refreshed:
                    raise
                log.info("link of %s (task %s) answered %s: expired; fetching the task for fresh links",
                         output.name, task.id, exc.status)
                refreshed = True
                task = self.get_task(task)
                continue
            try:
                return task, consume(resp)
            finally:
                resp.close()

    @staticmethod
    def _file_name(output: TaskOutput, target: Target, index: int) -> str:
        name = output.name or target.name or "output"
        name = Path(name.replace("\\", "/")).name
        if not name or name in (".", ".."):
            name = f"{target.model or 'output'}-{index}"
        fmt = output.format or (target.formats[index] if index < len(target.formats) else None)
        return name if not fmt or name.endswith(f".{fmt}") else f"{name}.{fmt}"

    def download(self, task: Task | str, dest: str | os.PathLike = ".", *, folder: str | os.PathLike | None = None,
                 progress: bool = True) -> list[Path]:
        """Download every output of every completed target into a folder of ``dest`` for its recording.

        The same naming rule as :meth:`shakelab.Client.download` (:func:`shakelab.client.output_folder`):
        ``a/take1.wav`` -> ``dest/a/take1/bass.wav``; an output is ``<name>.<format>`` (the Tasks
        API names outputs without extension: ``vocals_high_quality.mp3``). Links are fetched
        without the key; a 403 (an expired link) fetches the task again for fresh links. Files are
        written under a temporary name and renamed when complete. Failed targets are skipped
        (with a warning); when none completed, :class:`~shakelab.errors.TaskFailedError` is raised.

        Parameters
        ----------
        task : Task or str
        dest : str or pathlib.Path, default "."
        folder : str or pathlib.Path, optional
            The recording's folder inside ``dest`` (``""``: ``dest`` itself).
        progress : bool, default True

        Returns
        -------
        list of pathlib.Path
            In target order, then format order.

        Examples
        --------
        >>> import os, shutil
        >>> os.mkdir("a")
        >>> _ = shutil.copy("song.wav", "a/take1.wav")
        >>> task = client.submit("a/take1.wav", ["bass"], progress=False)
        >>> client.download(task, "out/", progress=False)
        [PosixPath('out/a/take1/bass.wav')]
        """
        dest_dir = self._check_dest(dest, folder)
        if isinstance(task, Target):  # one run of start(): that target's outputs only
            current, run = self._run_state(task)
            if run.failed:
                raise TaskFailedError(current, [run])
            completed = [run]
        else:
            current = self._done(task)
            completed = [t for t in current.targets if t.completed]
        if not completed:
            raise TaskFailedError(current)
        for failed in current.failed_targets:
            log.warning("target %s (%s) of task %s failed (%s): nothing to download for it", failed.id,
                        failed.name, current.id, failed.error)
        dest_dir = self._into(dest_dir, folder, current)
        paths: list[Path] = []
        for target in completed:
            for index, output in enumerate(target.outputs):
                name = self._file_name(output, target, index)

                def fetch(consume: Any, target_id: str | None = target.id, fmt: str | None = output.format,
                          i: int = index) -> Any:
                    nonlocal current
                    current, result = self._fetch(current, target_id, fmt, i, consume)
                    return result

                paths.append(_download_to(dest_dir, name, fetch, transport=self.transport, progress=progress,
                                          logger=log))
        self._ledger_call("record_task_outputs", current.id, [str(p.resolve()) for p in paths])
        return paths

    def _output_folder(self, task: Task) -> Path:
        key = task.asset_id or task.url or task.id
        with self._lock:
            source = self._asset_sources.get(key)
        if source is None:
            record = self._ledger_call("get_task", task.id) or {}
            source = record.get("source_path")
        if source is None and task.url:
            source = Path(urlsplit(task.url).path).name or urlsplit(task.url).netloc
        if source is None:
            asset = self._assets.get(task.asset_id or "")
            source = (asset.name if asset is not None else None) or task.id
        with self._lock:
            return output_folder(source, taken=self._folders, key=key)

    def provenance(self, target: Target) -> str | None:
        """Where a ``music_detection`` target's segments come from, for the ``provenance`` column.

        ``"audioshake"`` for the service; for the local server ``"local:<detector>:window=<w>s"``
        from what the server reports in the target (``shakelab`` field), else None.
        """
        from shakelab.frames import provenance

        if self._for_service:
            return provenance()
        detail = target.raw.get("shakelab")
        if not isinstance(detail, Mapping) or not isinstance(detail.get("detector"), str):
            return None
        window = target.raw.get("window", detail.get("window"))
        return provenance(detail["detector"], window=10.0 if window is None else float(window),
                          all_windows=bool(target.raw.get("all_windows", detail.get("allWindows", False))))

    def segments(self, task: Task | str):
        """Fetch the segments DataFrame of a done task's ``music_detection`` target (its json or txt output).

        Returns
        -------
        pandas.DataFrame
            See :func:`shakelab.frames.segments_frame`; ``job_id`` is the target's id.

        Examples
        --------
        >>> task = client.submit("song.wav", ["music_detection"], progress=False)
        >>> frame = client.segments(task)
        >>> frame.columns.tolist()
        ['source', 'job_id', 'start_time', 'end_time', 'duration', 'confidence', 'provenance']
        >>> set(frame["job_id"]) == {task.target("music_detection").id}
        True
        """
        from shakelab.frames import segments_frame

        if isinstance(task, Target):  # a music_detection run of start()
            current, target = self._run_state(task)
        else:
            current = self._done(task)
            try:
                target = current.target("music_detection")
            except KeyError as exc:
                raise ValidationError(f"`task` {current.id!r}: {exc.args[0]}") from None
        if target.failed:
            raise TaskFailedError(current, [target])
        index = next((i for i, o in enumerate(target.outputs) if o.format in ("json", "txt")), 0)
        fmt = target.outputs[index].format if index < len(target.outputs) else None
        current, content = self._fetch(current, target.id, fmt, index, lambda resp: resp.content)
        target = next(t for t in current.targets if t.id == target.id)
        asset = self._assets.get(current.asset_id or "")  # the recording's name, as Client.segments gives it
        source = (asset.name if asset is not None else None) or current.url
        try:
            return segments_frame(content, job=target.id, source=source, provenance=self.provenance(target))
        except ValueError as exc:
            raise MalformedResponseError(f"music_detection output of task {current.id} is malformed: {exc}",
                                         content[:2000]) from None

    def music_detection(self, source: Any, *, wait: bool = True, timeout: float | None = None,
                        progress: bool = True, **options: Any):
        """Music detection of a file as a segments DataFrame: upload + one task + wait + fetch.

        Parameters
        ----------
        source : str, pathlib.Path, binary file object, Asset or https URL
        wait : bool, default True
            ``False`` returns the :class:`Task` at once (then ``client.wait`` and ``client.segments``).
        timeout : float, optional
        **options
            The local server also reads ``window`` (seconds) and ``all_windows``; both are
            refused, before sending, for the AudioShake service.

        Returns
        -------
        pandas.DataFrame
            One row per music segment (see :func:`shakelab.frames.segments_frame`).

        Examples
        --------
        >>> import shakelab
        >>> client = shakelab.connect(api="tasks")
        >>> client.music_detection("song.wav", progress=False)[["source", "start_time", "end_time"]]
             source  start_time  end_time
        0  song.wav         0.0       3.0
        """
        task = self.submit(source, ["music_detection"], formats="json", wait=wait, timeout=timeout,
                           progress=progress, **options)
        return self.segments(task) if wait else task

    def jobs_frame(self):
        """Frame the tasks this client created or fetched, one row per target (:func:`shakelab.frames.jobs_frame`).

        Examples
        --------
        >>> task = client.submit("song.wav", ["vocals", "drums"], progress=False)
        >>> frame = client.jobs_frame()
        >>> frame[["model", "status"]]
            model     status
        0  vocals  completed
        1   drums  completed
        >>> frame["task_id"].tolist() == [task.id] * 2, frame["target_id"].tolist() == [t.id for t in task.targets]
        (True, True)
        """
        from shakelab.frames import jobs_frame

        with self._lock:
            tasks = list(self._tasks.values())
            audio_s = dict(self._audio_s)
        return jobs_frame(tasks, audio_s=audio_s)

    # ------------------------------------------------------------------ runs (what Client shares)
    @property
    def catalogue(self) -> dict[str, tuple[str, ...]]:
        """The models this client can run, with their formats: the local server's on loopback, else the Tasks API's.

        Examples
        --------
        >>> "vocals_lead" in TasksClient(api_key="k", base_url="https://api.audioshake.ai").catalogue
        True
        """
        return catalog.LOCAL_MODELS if is_loopback(self.base_url) else catalog.TASKS_MODELS

    def start(self, source: Any, models: str | Iterable[str], *, format: str | Mapping[str, Any] | None = None,
              force: bool = False, progress: bool = True, callback_url: str | None = None,
              **options: Any) -> list[Target]:
        """Start ``models`` on ``source`` without waiting: ONE task, its targets returned in the order of ``models``.

        The call widgets and batches make on either client (``Client.start`` returns one job per
        model). Each target has the ``id``, ``model``, ``status_text``, ``is_done``, ``failed``,
        ``error``, ``outputs``, ``asset_id`` and ``reused`` a job has; :meth:`refresh`,
        :meth:`poller`, :meth:`download`, :meth:`segments` and :meth:`provenance` take it.

        Parameters
        ----------
        source, models, force, progress, **options
            As :meth:`submit`; ``format`` is its ``formats`` (a format, or a dict model -> format(s)).
        callback_url : str, optional
            Refused: the Tasks API has no per-task callback (one webhook per account).

        Examples
        --------
        >>> runs = client.start("song.wav", ["vocals", "drums"], progress=False)
        >>> [r.model for r in runs], len({r.task_id for r in runs})   # one task, a target per model
        (['vocals', 'drums'], 1)
        >>> [client.poller(r, timeout=600).run().status_text for r in runs]
        ['completed', 'completed']
        >>> [r.status_text for r in client.refresh(runs)]
        ['completed', 'completed']
        """
        if callback_url:
            raise ValidationError(f"`callback_url` {callback_url!r}: the Tasks API has no per-task callback; it posts "
                                  "every finished target to the account's one webhook (`shakelab serve --webhook "
                                  "URL` on the local server)")
        names = [models] if isinstance(models, str) else list(models) if isinstance(models, Iterable) else []
        task = self.submit(source, names or models, formats=format, wait=False, force=force, progress=progress,
                           **options)
        return [replace(task.target(model), reused=task.reused) for model in names]

    def _run_state(self, run: Target) -> tuple[Task, Target]:
        """Fetch the task of a run now; return it and the run's newest state in it."""
        if not run.task_id:
            raise ValidationError(f"`run` target {run.id!r} does not say its task (no task_id)")
        task = self.get_task(run.task_id)
        fresh = next((t for t in task.targets if t.id == run.id), None)
        if fresh is None:
            raise MalformedResponseError(f"task {task.id} no longer lists its target {run.id}", task.raw)
        return task, replace(fresh, reused=run.reused)

    def refresh(self, runs: Any) -> Any:
        """Return the newest state of a run of :meth:`start` (a Target), or of each run of a list (a GET per task).

        Examples
        --------
        >>> runs = client.start("song.wav", ["vocals", "drums"], progress=False)
        >>> fresh = client.refresh(runs)
        >>> [(r.model, r.id == run.id) for r, run in zip(fresh, runs)]
        [('vocals', True), ('drums', True)]
        >>> client.wait(runs[0].task_id, progress=False).completed
        True
        """
        if not isinstance(runs, (list, tuple)):
            return self._run_state(runs)[1]
        tasks: dict[str, Task] = {}
        fresh = []
        for run in runs:
            if run.task_id not in tasks:
                tasks[run.task_id], state = self._run_state(run)
            else:
                state = next(t for t in tasks[run.task_id].targets if t.id == run.id)
                state = replace(state, reused=run.reused)
            fresh.append(state)
        return fresh

    def downloaded(self, run: Target) -> list[str]:
        """Return the paths the ledger recorded for a run's downloaded outputs (earlier sessions too), else [].

        Examples
        --------
        >>> task = client.submit("song.wav", ["vocals"], progress=False)
        >>> (target,) = task.targets
        >>> client.downloaded(target)
        []
        >>> paths = client.download(task, "out/", progress=False)
        >>> client.downloaded(target) == [str(p.resolve()) for p in paths]
        True
        """
        record = self._ledger_call("get_task", run.task_id) or {}
        names = {self._file_name(output, run, i) for i, output in enumerate(run.outputs)}
        return [p for p in record.get("outputs") or [] if Path(p).name in names]

    def _run_poller(self, run: Target, *, timeout: float | None, poll_interval: float | None,
                    cancel: threading.Event | None, first_delay: float) -> Poller[Target]:
        schedule = Schedule(first=poll_interval, growth=1.0, cap=poll_interval) if poll_interval else None
        return Poller(lambda: self.refresh(run), lambda t: t.status, subject=run, schedule=schedule,
                      first_delay=first_delay, timeout=timeout, not_found_grace=self.not_found_grace,
                      seen=True, cancel=cancel, resume_hint=f"client.wait({run.task_id!r})")

    def recorded(self, source: str | os.PathLike, model: str, format: str, *,
                 sha256: str | None = None) -> Target | None:
        """Return the target the ledger has for this file, model and format (in a task of any targets), or None.

        No request; only the Tasks API's records, within the 72 hours the service keeps results
        (``Client.recorded`` answers from the Jobs API's). The target is as last seen: a
        finished one needs no request at all (``batch.run`` skips it).

        Examples
        --------
        >>> client.recorded("song.wav", "vocals", "wav") is None
        True
        >>> task = client.submit("song.wav", ["vocals", "drums"], formats="wav", progress=False)
        >>> client.recorded("song.wav", "drums", "wav").id == task.target("drums").id
        True
        """
        from shakelab.ledger import file_sha256

        if self.ledger is None:
            return None
        asset = self._ledger_call("lookup_asset", sha256=sha256 or file_sha256(source), service=self.service,
                                  api=self.api)
        record = asset and self._ledger_call("lookup_target", service=self.service, source_key=f"asset:{asset['id']}",
                                             target={"model": model, "formats": [format]}, metadata=None)
        if not record or not record.get("payload"):
            return None
        task = Task.from_payload(record["payload"])
        return next((t for t in task.targets if t.id == record["target_id"]), None)

    # ------------------------------------------------------------------ statistics
    def _statistics(self, name: str) -> Any:
        return self._request("GET", "/tasks/statistics", params={"name": name})

    def usage(self):
        """Usage per month (``GET /tasks/statistics?name=usage``), ``totalMinutes`` parsed from its string.

        Returns
        -------
        pandas.DataFrame
            The columns of :func:`shakelab.frames.usage_frame`: ``month`` (period[M]), ``total_jobs``
            (int64: the month's ``totalTargets``; a target is what a legacy job was),
            ``total_minutes`` (float64); ``attrs["counts"]`` is ``"targets"``, so plots and the
            usage dashboard say targets.

        Examples
        --------
        >>> usage = client.usage()   # the local server: the last 3 months, zeros included
        >>> usage.columns.tolist(), str(usage["month"].dtype), len(usage), usage.attrs
        (['month', 'total_jobs', 'total_minutes'], 'period[M]', 3, {'counts': 'targets'})
        """
        from shakelab.frames import usage_frame

        payload = self._statistics("usage")
        try:
            return usage_frame(payload, counts="targets")
        except ValueError as exc:
            raise MalformedResponseError(f"GET /tasks/statistics?name=usage answered a malformed payload: {exc}",
                                         payload) from None

    def distribution(self):
        """Fetch the ``distribution`` statistics (``GET /tasks/statistics?name=distribution``) as a DataFrame.

        Its shape is undocumented: one row per entry of the answer (a single object is one row),
        every key a column, snake_case.

        Examples
        --------
        >>> task = client.submit("song.wav", ["bass"], progress=False)
        >>> frame = client.distribution()   # the local server: a row per model, most used first
        >>> frame.columns.tolist(), "bass" in set(frame["model"])
        (['model', 'total_targets', 'total_minutes'], True)
        """
        from shakelab.frames import distribution_frame

        payload = self._statistics("distribution")
        try:
            return distribution_frame(payload)
        except ValueError as exc:
            raise MalformedResponseError(f"GET /tasks/statistics?name=distribution answered a malformed "
                                         f"payload: {exc}", payload) from None

