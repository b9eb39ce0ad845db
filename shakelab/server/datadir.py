"""The local server's data directory: where it is, and the lock that lets one server hold it.

The data dir holds the state of one server (SQLite, stored files, token, link secret). A running
server holds ``server.lock`` (an exclusive ``flock``) with its pid and URL in it, so a second
server on the same dir fails with :class:`DataDirInUse` naming the holder, and
:func:`read_holder` tells anyone (``connect()``, ``shakelab server status``) who runs there.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     fd = lock_data_dir(Path(tmp))
...     holder = read_holder(tmp)
...     os.close(fd)
>>> holder
(None, None)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shakelab.errors import ShakelabError

__all__ = ["DATA_DIR_ENV", "LOCK_NAME", "DataDirInUse", "LocalServerError", "default_data_dir", "lock_data_dir",
           "read_holder"]

#: environment variable naming the local server's data dir (default: the platformdirs user data dir)
DATA_DIR_ENV = "SHAKELAB_SERVER_DIR"


def default_data_dir() -> Path:
    """Return the per-user data directory of the local server.

    ``SHAKELAB_SERVER_DIR`` when set, else the platformdirs user data dir, e.g.
    ``~/.local/share/shakelab/server``.

    Examples
    --------
    >>> default_data_dir().is_absolute()
    True
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("shakelab", appauthor=False)) / "server"


class LocalServerError(ShakelabError, RuntimeError):
    """The local server could not start, or is not running."""


class DataDirInUse(LocalServerError):
    """Another running server (in this or another process) holds the data directory.

    Attributes
    ----------
    data_dir : pathlib.Path
    pid : int or None
        The holder's process id (None while it is still starting).
    url : str or None
        The holder's base URL (None while it is still starting).
    """

    def __init__(self, data_dir: Path, pid: int | None = None, url: str | None = None):
        self.data_dir, self.pid, self.url = Path(data_dir), pid, url
        holder = f"{pid} {url}" if pid is not None else "unknown"
        super().__init__(f"the data dir {str(data_dir)!r} is in use by another running server "
                         f"(pid and URL: {holder}); stop it or pass another `data_dir`")

    def __reduce__(self):
        return type(self), (self.data_dir, self.pid, self.url)


LOCK_NAME = "server.lock"  #: held (flock) by the running server; holds "<pid> <base URL>"


def read_holder(data_dir: str | os.PathLike) -> tuple[int | None, str | None] | None:
    """``(pid, url)`` of the server holding ``data_dir``, or None when no server holds it.

    ``(None, None)`` while the holder is still starting (the lock is taken before the port).

    Examples
    --------
    >>> read_holder("/nonexistent/shakelab") is None      # no lock file: nobody holds it
    True
    """
    import fcntl

    try:
        fd = os.open(Path(data_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _parse_holder(os.pread(fd, 200, 0))
        return None  # we got the lock: nobody holds it (closing the fd releases it again)
    finally:
        os.close(fd)


def _parse_holder(raw: bytes) -> tuple[int | None, str | None]:
    pid, _, url = raw.decode(errors="replace").strip().partition(" ")
    return (int(pid), url.strip() or None) if pid.isdigit() else (None, None)


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's exclusive lock (``server.lock``) or raise :class:`DataDirInUse`; returns its fd.

    The holder writes ``"<pid> <base URL>"`` into it once it listens; closing the fd releases it.
    """
    import fcntl

    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if attempt < 19:  # read_holder() probes take the lock shared for an instant
                time.sleep(0.01)
    pid, url = _parse_holder(os.pread(fd, 200, 0))
    os.close(fd)
    raise DataDirInUse(data_dir, pid, url)
