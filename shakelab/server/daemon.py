"""The per-user local server: one detached ``shakelab serve`` shared by every notebook and terminal.

``shakelab.connect()`` without a token calls :func:`ensure`: it finds the server running on
the user's data dir (checked with a real request), or starts one in its own session that
outlives the kernel, on port 8077 or, when that is taken, on a free port. Two processes that
start it at once end with one server (``start.lock``). The server stops itself after
``SHAKELAB_IDLE_TIMEOUT`` seconds (default 1800) without a request while no job runs, or with
``shakelab server stop``.

Files in the data dir (:func:`shakelab.server.default_data_dir`)::

    server.lock   held by the running server; "<pid> <base URL>" (DataDirInUse reads it)
    server.json   the running ``shakelab serve``'s record: pid, url, server id, idle timeout
    server.log    what the detached server prints and logs (its standard streams)
    start.lock    taken while one process starts the server
    token         the API token the server and connect() share (0600)

``SHAKELAB_LOCAL_SERVER=private`` makes ``connect()`` run a server inside the process instead
(:func:`shakelab.server.start`), stopped with it: what the test suite uses.

Examples
--------
>>> from shakelab.server import daemon
>>> info, started = daemon.ensure()          # doctest: +SKIP
... # skipped here (and in ensure): it starts a detached server that outlives the doctest
>>> info.url, info.server_id                 # doctest: +SKIP
('http://127.0.0.1:8077', 'local-1a2b3c4d5e6f')
>>> daemon.stop()                            # doctest: +SKIP
(4242, 'http://127.0.0.1:8077')
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shakelab.errors import ShakelabError, ValidationError

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_PORT",
    "IDLE_ENV",
    "MODE_ENV",
    "ServerInfo",
    "ensure",
    "find",
    "idle_timeout_setting",
    "mode",
    "stop",
]

MODE_ENV = "SHAKELAB_LOCAL_SERVER"   #: "shared" (default) or "private"
IDLE_ENV = "SHAKELAB_IDLE_TIMEOUT"   #: seconds without requests before the shared server stops; 0 never
DEFAULT_PORT = 8077
DEFAULT_IDLE_TIMEOUT = 1800.0
RECORD_NAME, LOG_NAME, START_LOCK_NAME = "server.json", "server.log", "start.lock"
MAX_LOG_BYTES = 5 * 1024 * 1024      # a longer log is kept once as server.log.1 at the next start


def mode() -> str:
    """Return ``"shared"`` (the per-user server, default) or ``"private"`` (one in this process).

    Read from ``SHAKELAB_LOCAL_SERVER``.

    Examples
    --------
    >>> monkeypatch = getfixture("monkeypatch")   # the environment is restored after
    >>> monkeypatch.delenv(MODE_ENV)
    >>> mode()
    'shared'
    >>> monkeypatch.setenv(MODE_ENV, "Private")
    >>> mode()
    'private'
    """
    value = os.environ.get(MODE_ENV, "").strip().lower() or "shared"
    if value not in ("shared", "private"):
        raise ValidationError(f"{MODE_ENV} must be 'shared' or 'private', not {os.environ[MODE_ENV]!r}")
    return value


def idle_timeout_setting() -> float:
    """Seconds of idleness after which a shared server started now stops (``SHAKELAB_IDLE_TIMEOUT``, default 1800).

    Examples
    --------
    >>> monkeypatch = getfixture("monkeypatch")   # the environment is restored after
    >>> monkeypatch.delenv(IDLE_ENV, raising=False)
    >>> idle_timeout_setting()
    1800.0
    >>> monkeypatch.setenv(IDLE_ENV, "60")
    >>> idle_timeout_setting()
    60.0
    """
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValidationError(f"{IDLE_ENV} must be a number of seconds >= 0 (0: never stop), not {raw!r}")
    return value


def describe_seconds(seconds: float) -> str:
    """``1800`` -> ``'30 min'``, ``2`` -> ``'2 s'``.

    Examples
    --------
    >>> describe_seconds(1800), describe_seconds(90), describe_seconds(2.5)
    ('30 min', '90 s', '2.5 s')
    """
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class ServerInfo:
    """A local server that answered: where it runs and who it is.

    Attributes
    ----------
    url : str
        Its base URL.
    pid : int
        The process serving it.
    server_id : str
        The data dir's stable id (``clientId`` of ``/usage``); the ledger's key for it.
    data_dir : pathlib.Path
    token : str
        The API token (never in the repr).
    record : dict
        ``server.json`` when the process is a ``shakelab serve`` (empty for a server inside
        another program, such as a kernel's private server).
    """

    url: str
    pid: int
    server_id: str
    data_dir: Path
    token: str = field(repr=False)
    record: dict = field(default_factory=dict, repr=False)

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / LOG_NAME

    @property
    def is_serve(self) -> bool:
        """True when a ``shakelab serve`` process runs it (``shakelab server stop`` may signal it)."""
        return self.record.get("pid") == self.pid

    def describe(self, started: bool) -> str:
        """One line: where it runs, whose it is, how it stops."""
        how = "started in the background" if started else "already running"
        idle = self.record.get("idle_timeout") if self.is_serve else None
        if not self.is_serve:
            ends = f"it runs inside process {self.pid} and stops with it"
        elif idle:
            ends = f"stops after {describe_seconds(idle)} idle, or now: `shakelab server stop`"
        else:
            ends = "stop it with `shakelab server stop`"
        return (f"{self.url} ({how}, pid {self.pid}, shared by every notebook and terminal; data in "
                f"{self.data_dir}; {ends})")


# -- the record ------------------------------------------------------------------------------
def write_record(srv, *, idle_timeout: float, background: bool) -> None:
    """Write ``server.json`` for a started :class:`~shakelab.server.LocalServer` run by ``shakelab serve``."""
    from shakelab.server.store import iso

    record = {"pid": os.getpid(), "url": srv.base_url, "server_id": srv.server_id, "idle_timeout": idle_timeout,
              "background": background, "started_at": iso(time.time())}
    tmp = srv.data_dir / f"{RECORD_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, srv.data_dir / RECORD_NAME)


def remove_record(data_dir: Path) -> None:
    """Remove ``server.json`` if this process wrote it."""
    if read_record(data_dir).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (data_dir / RECORD_NAME).unlink()


def read_record(data_dir: Path) -> dict:
    """``server.json`` as a dict ({} when absent or unreadable)."""
    try:
        record = json.loads((Path(data_dir) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def redirect_streams(data_dir: Path) -> None:
    """Detach from the standard streams inherited from whoever started us.

    Standard input reads /dev/null; standard output and error append to ``server.log`` in
    the data dir (0600), so no pipe of a kernel or a terminal stays open because of us.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOG_NAME
    if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
        os.replace(path, path.with_name(LOG_NAME + ".1"))
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


# -- finding, starting, stopping ---------------------------------------------------------------
def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    from shakelab.server.datadir import default_data_dir

    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir()


def find(data_dir: str | os.PathLike | None = None, *, timeout: float = 5.0) -> ServerInfo | None:
    """Find the server running on ``data_dir``, checked with a real request (``GET /usage``), or None.

    None also while a server is still starting (it holds the lock but has not written its URL).

    Raises
    ------
    ShakelabError
        A server holds the data dir but refuses the token stored there (started with ``--token``).

    Examples
    --------
    >>> find("empty") is None
    True
    >>> from shakelab.server.lifecycle import LocalServer
    >>> srv = LocalServer("srv").start()
    >>> info = find("srv")
    >>> info.url == srv.base_url, info.server_id == srv.server_id, info.pid == os.getpid()
    (True, True, True)
    >>> srv.stop()
    """
    import requests

    from shakelab.server.datadir import read_holder

    data_dir = _data_dir(data_dir)
    holder = read_holder(data_dir)
    if holder is None or holder[0] is None or holder[1] is None:
        return None
    pid, url = holder[0], holder[1]
    try:
        token = (data_dir / "token").read_text().strip()
    except OSError:
        token = ""
    with requests.Session() as session:
        session.trust_env = False  # loopback: never through a proxy
        try:
            resp = session.get(f"{url}/usage", headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        except requests.RequestException:
            return None
    if resp.status_code == 401:
        raise ShakelabError(f"the local server at {url} (pid {pid}) holds {str(data_dir)!r} but refuses the "
                            f"token stored in {str(data_dir / 'token')!r} (it was started with its own "
                            "`--token`): set AUDIOSHAKE_API_TOKEN and AUDIOSHAKE_BASE_URL for it, or stop it "
                            "(`shakelab server stop`)")
    try:
        server_id = resp.json()["clientId"] if resp.ok else None
    except (ValueError, KeyError, TypeError):
        server_id = None
    if not isinstance(server_id, str) or not server_id:
        return None
    return ServerInfo(url=url, pid=pid, server_id=server_id, data_dir=data_dir, token=token,
                      record=read_record(data_dir))


@contextmanager
def _start_lock(data_dir: Path, timeout: float) -> Iterator[None]:
    fd = os.open(data_dir / START_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ShakelabError(f"another process has been starting the local server in "
                                        f"{str(data_dir)!r} for over {timeout:g} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def ensure(data_dir: str | os.PathLike | None = None, *, port: int = DEFAULT_PORT,
           idle_timeout: float | None = None, timeout: float = 120.0,
           test_hooks: bool = False) -> tuple[ServerInfo, bool]:
    """Return the running local server of ``data_dir``, started detached when none runs.

    Parameters
    ----------
    data_dir : str or PathLike, optional
        Default: :func:`shakelab.server.default_data_dir`.
    port : int
        Port to try first (a free one when it is taken).
    idle_timeout : float, optional
        Seconds without requests (and no running job) before a server started here stops;
        default :func:`idle_timeout_setting`. A server already running keeps its own.
    timeout : float
        Seconds to wait for the server to answer.
    test_hooks : bool
        A server started here serves ``/_stats`` and ``/_faults`` (``shakelab serve --test-hooks``).

    Returns
    -------
    (ServerInfo, bool)
        The server, and whether this call started it.

    Raises
    ------
    ShakelabError
        The server did not start (with the end of its log), or another process holds the data
        dir without answering.

    Examples
    --------
    >>> info, started = ensure()      # doctest: +SKIP
    ... # skipped: the server it starts is detached and outlives the doctest
    """
    data_dir = _data_dir(data_dir)
    idle = idle_timeout_setting() if idle_timeout is None else idle_timeout
    if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not idle >= 0:
        raise ValidationError(f"`idle_timeout` must be a number of seconds >= 0 (0: never), not {idle!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError(f"`port` must be an integer 0-65535, not {port!r}")
    info = find(data_dir)
    if info is not None:
        return info, False
    from shakelab.server.datadir import read_holder

    data_dir.mkdir(parents=True, exist_ok=True)
    with _start_lock(data_dir, timeout):
        proc = None
        deadline = time.monotonic() + timeout
        while True:
            info = find(data_dir)
            # The server we spawned answers a moment before it writes server.json: wait for it,
            # or the caller sees neither its idle timeout nor that `shakelab server stop` may stop it.
            if info is not None and (proc is None or info.pid != proc.pid or info.is_serve):
                return info, proc is not None and info.pid == proc.pid
            if proc is None and read_holder(data_dir) is None:
                proc = _spawn(data_dir, port, float(idle), test_hooks)
            elif proc is not None and proc.poll() is not None:
                raise ShakelabError(f"the local server did not start (exit status {proc.returncode}); "
                                    f"the end of {data_dir / LOG_NAME}:\n{tail_log(data_dir, 15)}")
            if time.monotonic() > deadline:
                holder = read_holder(data_dir)
                raise ShakelabError(f"the local server in {str(data_dir)!r} did not answer within {timeout:g} s "
                                    f"(pid and URL: {holder}); see `shakelab server logs`, or stop it with "
                                    "`shakelab server stop`")
            time.sleep(0.05)


def _spawn(data_dir: Path, port: int, idle_timeout: float, test_hooks: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shakelab.cli", "serve", "--background", "--data-dir", str(data_dir),
           "--port", str(port), "--idle-timeout", f"{idle_timeout:g}"] + (["--test-hooks"] if test_hooks else [])
    # Its own session: a Ctrl-C or SIGHUP of the kernel's process group does not reach it; no
    # inherited pipe keeps a kernel's (or nbclient's) output open.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=data_dir, start_new_session=True, close_fds=True)
    threading.Thread(target=proc.wait, name="shakelab-server-reaper", daemon=True).start()  # no zombie
    return proc


def stop(data_dir: str | os.PathLike | None = None, *, timeout: float = 30.0) -> tuple[int, str | None] | None:
    """Stop the ``shakelab serve`` running on ``data_dir``; returns its ``(pid, url)``, or None if none ran.

    Sends SIGTERM (it finishes its requests; unfinished jobs resume at the next start) and
    waits until it has let go of the data dir.

    Raises
    ------
    ShakelabError
        The holder is not a ``shakelab serve`` (a private server inside a notebook kernel: stop
        it there), or it did not stop within ``timeout``.

    Examples
    --------
    >>> stop("empty") is None   # none ran
    True
    >>> from shakelab.server.lifecycle import LocalServer
    >>> srv = LocalServer("srv").start()
    >>> stop("srv", timeout=0.2)    # a server in this process is not a `shakelab serve`
    Traceback (most recent call last):
    ...
    shakelab.errors.ShakelabError: the data dir '...' is held by process ..., which is not a `shakelab serve` ...
    >>> srv.stop()
    """
    from shakelab.server.datadir import read_holder

    data_dir = _data_dir(data_dir)
    deadline = time.monotonic() + timeout
    record_by = time.monotonic() + min(5.0, timeout)  # a server just starting writes its record at once
    while True:
        holder = read_holder(data_dir)
        if holder is None:
            return None
        pid, url = holder
        if pid is not None and read_record(data_dir).get("pid") == pid:
            break
        if time.monotonic() > record_by:
            raise ShakelabError(f"the data dir {str(data_dir)!r} is held by process {pid} ({url}), which is not a "
                                "`shakelab serve` (a private server inside a notebook kernel or a Python "
                                "session?): stop it there, or restart that kernel")
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    while read_holder(data_dir) is not None:
        if time.monotonic() > deadline:
            raise ShakelabError(f"the local server (pid {pid}) did not stop within {timeout:g} s; "
                                f"`kill -9 {pid}` ends it (its unfinished jobs resume at the next start)")
        time.sleep(0.05)
    while _alive(pid) and time.monotonic() < deadline:  # it lets go of the lock just before it exits
        time.sleep(0.05)
    return pid, url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail_log(data_dir: str | os.PathLike | None = None, lines: int = 50) -> str:
    r"""Return the last ``lines`` lines of the server's log (``''`` when there is none).

    Examples
    --------
    >>> tail_log("srv")
    ''
    >>> os.makedirs("srv")
    >>> _ = Path("srv", LOG_NAME).write_text("one\ntwo\nthree\n")
    >>> tail_log("srv", lines=2)
    'two\nthree'
    """
    path = _data_dir(data_dir) / LOG_NAME
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
