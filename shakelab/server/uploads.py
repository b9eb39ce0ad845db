r"""Uploads into the store, shared by every API: multipart files, downloads of links, names and formats.

A file becomes an asset in two ways: a streamed ``multipart/form-data`` part (:func:`receive_multipart`,
never held in memory, capped while it streams) or a download of a client's URL
(:func:`fetch_link`, through the network safety of :mod:`shakelab.server.network`, in a pool of
its own: :func:`in_link_pool`). :func:`store_upload` then moves the complete file into the store
under a server-chosen name; the client's name is only ever displayed (:func:`clean_name`) and the
format comes from the bytes (:func:`sniff_format`).

Examples
--------
>>> clean_name("../../etc/passwd"), sniff_format(b"fLaC\x00\x00", "x.wav")
('passwd', 'flac')
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.requests import ClientDisconnect

from shakelab.server import network
from shakelab.server.web import MAX_JSON_BYTES, APIProblem, storage_problem, too_large

__all__ = ["LINK_QUEUE", "LINK_WORKERS", "MAX_NAME_CHARS", "SOURCE_TYPES", "clean_name", "fetch_link",
           "in_link_pool", "receive_multipart", "receive_upload", "sniff_format", "store_upload"]

MAX_NAME_CHARS = 200
# Formats a source asset can have: the stored file's extension always comes from this table.
SOURCE_TYPES = {
    "wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "aiff": "audio/aiff", "ogg": "audio/ogg",
    "m4a": "audio/mp4", "aac": "audio/aac", "mp4": "video/mp4", "mov": "video/quicktime",
    "json": "application/json", "txt": "text/plain", "bin": "application/octet-stream",
}
_EXT_ALIASES = {"aif": "aiff", "aifc": "aiff", "oga": "ogg", "opus": "ogg", "wave": "wav", "mpeg": "mp3",
                "mpga": "mp3"}
_CT_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
               "audio/flac": "flac", "audio/x-flac": "flac", "audio/mpeg": "mp3", "audio/mp3": "mp3",
               "audio/aiff": "aiff", "audio/x-aiff": "aiff", "audio/ogg": "ogg", "audio/mp4": "m4a",
               "audio/x-m4a": "m4a", "audio/aac": "aac", "video/mp4": "mp4", "video/quicktime": "mov"}


def clean_name(raw: object, fallback: str = "upload") -> str:
    r"""Make a display name from a client-supplied file name: no directories, no control characters, bounded.

    The name is only ever shown (payloads, Content-Disposition); stored file names are chosen by the server.

    Examples
    --------
    >>> clean_name("../../etc/passwd")
    'passwd'
    >>> clean_name("a\x00b\nc.wav")
    'abc.wav'
    """
    if not isinstance(raw, str):
        return fallback
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    name = re.sub(r"\s+", " ", name)
    if len(name) > MAX_NAME_CHARS:
        _, dot, ext = name.rpartition(".")
        ext = ext[:10] if dot and len(ext) <= 10 else ""
        name = name[: MAX_NAME_CHARS - len(ext) - 1].rstrip() + ("." + ext if ext else "")
    return name or fallback


def sniff_format(head: bytes, name: str = "", content_type: str = "") -> str:
    r"""Name the file's format from its first bytes, else its name's extension, else its content type.

    Always a key of :data:`SOURCE_TYPES` (``'bin'`` when unknown).

    Examples
    --------
    >>> sniff_format(b"fLaC\x00\x00", "x.wav")
    'flac'
    >>> sniff_format(b"hello", "notes.txt")
    'txt'
    """
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or head[:4] in (b"RF64", b"BW64"):
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mov" if head[8:10] == b"qt" else ("mp4" if head[8:12] in (b"isom", b"mp41", b"mp42") else "m4a")
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    ext = _EXT_ALIASES.get(ext, ext)
    if ext in SOURCE_TYPES:
        return ext
    ct = content_type.split(";")[0].strip().lower()
    return _CT_FORMATS.get(ct, "bin")


async def receive_multipart(request: Request, boundary: bytes, tmp: Path, limit: int):
    """Stream a multipart body: the ``file`` part goes to ``tmp`` chunk by chunk (never held in memory).

    Returns ``(tmp_path, size, filename, part_content_type, head_bytes)``.
    """
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "in_file": False, "found": False,
                             "size": 0, "filename": None, "ctype": "", "head": b"", "other": 0}
    fh = None

    def on_part_begin():
        state["headers"] = {}

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        nonlocal fh
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if opts.get(b"name") == b"file" and not state["found"]:
            state["found"] = state["in_file"] = True
            fn = opts.get(b"filename")
            state["filename"] = fn.decode("utf-8", "replace") if fn is not None else None
            state["ctype"] = state["headers"].get(b"content-type", b"").decode("latin-1")
            fh = open(tmp, "wb")  # noqa: SIM115 - closed when the part ends or the upload fails
        else:
            state["in_file"] = False

    def on_part_data(data, start, end):
        n = end - start
        if state["in_file"]:
            state["size"] += n
            if state["size"] > limit:
                raise too_large(limit)
            if len(state["head"]) < 64:
                state["head"] += bytes(data[start:min(end, start + 64)])
            fh.write(data[start:end])
        else:
            state["other"] += n
            if state["other"] > MAX_JSON_BYTES:
                raise APIProblem(413, "body_too_large", "form fields other than `file` must total at most "
                                 f"{MAX_JSON_BYTES} bytes")

    def on_part_end():
        state["in_file"] = False

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end}, max_header_size=64 * 1024)
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except APIProblem:
        _discard(fh, tmp)
        raise
    except ClientDisconnect:
        _discard(fh, tmp)
        raise APIProblem(400, "incomplete_upload", "the client disconnected before the upload finished") from None
    except OSError as exc:  # disk full, data dir gone
        _discard(fh, tmp)
        raise storage_problem(exc, "the upload") from None
    except Exception as exc:
        _discard(fh, tmp)
        raise APIProblem(400, "invalid_request", f"the multipart body with the `file` field could not be parsed: "
                         f"{str(exc)[:200]}") from None
    if fh is not None:
        fh.close()
    if parser.state != MultipartState.END:
        _discard(None, tmp)
        raise APIProblem(400, "incomplete_upload", "the multipart body ended before its closing boundary "
                         f"(--{boundary.decode('latin-1')[:70]}--): the `file` was not sent completely")
    if not state["found"]:
        raise APIProblem(400, "missing_field", "the multipart form has no `file` field: send the audio as "
                         "-F 'file=@song.mp3;type=audio/mpeg'")
    return tmp, state["size"], state["filename"], state["ctype"], state["head"]


def store_upload(ctx: Any, base_url: str, tmp: Path, size: int, filename: str | None, ctype: str,
                  head: bytes, source: str = "upload", display: str | None = None) -> dict:
    """Move a complete temp file into the store under a server-chosen name; returns the upload payload."""
    from shakelab.server.store import new_id  # the store's imports are the server's, not the package's

    fmt = sniff_format(head, filename or "", ctype)
    name = display if display is not None else clean_name(filename)
    asset_id = new_id()
    try:
        dest = ctx.store.asset_dir(asset_id) / f"source.{fmt}"
        os.replace(tmp, dest)
        asset = ctx.store.add_asset(asset_id=asset_id, name=name, fmt=fmt, file_type=SOURCE_TYPES[fmt],
                                    path=dest, size=size, source=source)
    except Exception as exc:
        _discard(None, tmp)
        shutil.rmtree(ctx.store.files_dir / asset_id, ignore_errors=True)
        if isinstance(exc, (OSError, sqlite3.OperationalError)):
            raise storage_problem(exc, "the upload") from None
        raise
    ctx.count_upload()
    return ctx.asset_payload(asset, base_url)


#: ``/upload/link`` downloads run at most this many at once, in a pool of their own (a trickling
#: host never holds the threads that uploads and jobs need); this many more may wait for it. One
#: pool per process, shared by its servers, like the model processes.
LINK_WORKERS = 4
LINK_QUEUE = 16
_link_pool: ThreadPoolExecutor | None = None
_link_pending = 0
_link_lock = threading.Lock()


async def receive_upload(ctx: Any, request: Request, base_url: str) -> dict:
    """Receive a ``multipart/form-data`` upload request into the store (both APIs' upload route).

    Refuses a request that is not multipart (400) or announces more than ``ctx.max_upload_bytes``
    (413) before reading it, then streams it (:func:`receive_multipart`) and stores it
    (:func:`store_upload`, in a thread).

    Returns
    -------
    dict
        The asset payload of :func:`store_upload`.
    """
    from python_multipart.multipart import parse_options_header
    from starlette.concurrency import run_in_threadpool

    ctype = request.headers.get("content-type", "")
    mtype, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if mtype != b"multipart/form-data" or not boundary:
        raise APIProblem(400, "invalid_request", "the upload must be multipart/form-data with a `file` field "
                         f"(curl -F 'file=@song.mp3'), not Content-Type {ctype[:100]!r}")
    limit = ctx.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 1024 * 1024:
        raise too_large(limit, int(length))
    received = await receive_multipart(request, boundary, ctx.store.temp_path(), limit)
    return await run_in_threadpool(store_upload, ctx, base_url, *received)


async def in_link_pool(fn, *args):
    """Run ``fn(*args)`` in the link pool, or answer 503 (with Retry-After) when it is full."""
    global _link_pool, _link_pending

    with _link_lock:
        if _link_pending >= LINK_WORKERS + LINK_QUEUE:
            raise APIProblem(503, "too_many_links", f"{_link_pending} `link` downloads are in progress or "
                             "waiting on this server; retry later", {"Retry-After": "5"})
        if _link_pool is None:
            _link_pool = ThreadPoolExecutor(LINK_WORKERS, thread_name_prefix="shakelab-link")
        _link_pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_link_pool, fn, *args)
    finally:
        with _link_lock:
            _link_pending -= 1


def fetch_link(ctx: Any, base_url: str, link: str, name: str, *, field: str = "link") -> dict:
    """Download ``link`` into the store as an asset named ``name``; returns the asset's payload.

    http/https only, public hosts unless the server allows private links, the server's size
    limit and ``ctx.link_timeout`` (see :func:`shakelab.server.network.download`). Blocking: run
    it through :func:`in_link_pool`.

    Examples
    --------
    >>> fetch_link(srv, srv.base_url, "https://example.com/a.wav", "a.wav")   # doctest: +SKIP
    ... # skipped: the link is fetched from the internet
    {'name': 'a.wav', 'id': 'c...', 'fileType': 'audio/wav', 'format': 'wav', 'link': 'http://...'}
    """
    tmp = ctx.store.temp_path()
    got = network.download(link, tmp, allow_private=ctx.allow_private_links, limit=ctx.max_upload_bytes,
                           timeout=ctx.link_timeout, field=field)
    path_name = urlsplit(got.url).path.rsplit("/", 1)[-1]
    fmt_hint = path_name if "." in path_name else name
    return store_upload(ctx, base_url, tmp, got.size, fmt_hint, got.content_type, got.head, source="link",
                        display=name)


def _discard(fh: Any, tmp: Path) -> None:
    if fh is not None:
        fh.close()
    with contextlib.suppress(OSError):
        tmp.unlink()
