"""The ``shakelab`` command.

Subcommands: ``serve`` (the local Jobs API), ``server start | status | stop | logs`` (the
per-user local server that ``connect()`` shares), ``demo`` (the main job, offline), ``detect``
(music detection of a file, as a table), ``usage``, ``batch`` (many files x models),
``evaluate`` (detection quality against labels), ``models fetch`` (detector weights).

Examples
--------
$ shakelab serve --port 8077
$ shakelab server status
$ shakelab demo
$ shakelab detect data/demo.flac
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from shakelab.server import DataDirInUse, serve

    try:
        serve(host=args.host, port=args.port, data_dir=args.data_dir, token=args.token,
              workers=args.workers, allow_private_links=args.allow_private_links,
              max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), link_ttl=args.link_ttl,
              idle_timeout=args.idle_timeout, background=args.background, test_hooks=args.test_hooks,
              webhook=args.webhook)
    except DataDirInUse as exc:  # one line, no traceback: who holds it and where
        where = f"at {exc.url} (pid {exc.pid})" if exc.url else f"(pid {exc.pid or 'unknown'})"
        print(f"shakelab serve: a server already runs on this data dir {where}; stop it or pass "
              "another --data-dir", file=sys.stderr)
        return 2
    except OSError as exc:  # port in use, unwritable data dir
        print(f"shakelab serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _data_dir(args: argparse.Namespace) -> Path:
    """Resolve the ``--data-dir`` given, else give the per-user local server's."""
    from shakelab.server import default_data_dir

    return args.data_dir.expanduser().resolve() if args.data_dir else default_data_dir()


def _server_start(args: argparse.Namespace) -> int:
    from shakelab.server import daemon

    info, started = daemon.ensure(args.data_dir, idle_timeout=args.idle_timeout)
    print(f"shakelab local server: {info.describe(started)}")
    return 0


def _server_status(args: argparse.Namespace) -> int:
    from shakelab.server import daemon, read_holder

    data_dir = _data_dir(args)
    info = daemon.find(data_dir)
    if info is None:
        holder = read_holder(data_dir)
        if holder is None:
            print(f"shakelab local server: not running (data dir {data_dir})")
        else:
            print(f"shakelab local server: process {holder[0]} holds {data_dir} but does not answer at "
                  f"{holder[1]} (starting, or stuck: `shakelab server logs`, `shakelab server stop`)")
        return 3
    rec = info.record if info.is_serve else {}
    print(f"shakelab local server: running at {info.url}")
    print(f"  pid        {info.pid}" + ("" if info.is_serve else " (a server inside another program)"))
    print(f"  server id  {info.server_id}")
    print(f"  data dir   {info.data_dir}")
    if rec:
        print(f"  since      {rec.get('started_at')}")
        idle = rec.get("idle_timeout")
        stop = daemon.describe_seconds(idle) + " without requests or running jobs" if idle else "never"
        print(f"  idle stop  {stop}")
        if rec.get("background"):
            print(f"  log        {info.log_path}")
    return 0


def _server_stop(args: argparse.Namespace) -> int:
    from shakelab.server import daemon

    data_dir = _data_dir(args)
    stopped = daemon.stop(data_dir)
    if stopped is None:
        print(f"shakelab local server: not running (data dir {data_dir})")
    else:
        print(f"shakelab local server: stopped (pid {stopped[0]}, {stopped[1]})")
    return 0


def _server_logs(args: argparse.Namespace) -> int:
    import time

    from shakelab.server import daemon

    data_dir = _data_dir(args)
    path = data_dir / daemon.LOG_NAME
    if not path.exists():
        print(f"shakelab server logs: no log yet ({path})", file=sys.stderr)
        return 1
    text = daemon.tail_log(data_dir, args.lines)
    if text:
        print(text, flush=True)
    if args.follow:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            while True:  # until Ctrl-C
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from shakelab.demo import run

    run(out_dir=args.out)
    return 0


def _detect(args: argparse.Namespace) -> int:
    import shakelab

    client = shakelab.connect()
    frame = client.music_detection(args.path)
    if frame.empty:  # the service returns only segments where music is present
        print(f"no music found in {args.path.name}")
    else:
        print(frame.to_string(index=False))
    return 0


def _usage(args: argparse.Namespace) -> int:
    import shakelab

    print(shakelab.connect().usage().to_string(index=False))
    return 0


def _batch(args: argparse.Namespace) -> int:
    from shakelab.batch import main

    return main(args)


def _evaluate(args: argparse.Namespace) -> int:
    from shakelab.evaluation import main

    return main(args)


def _models_fetch(args: argparse.Namespace) -> int:
    from shakelab.weights import fetch

    path = fetch(force=args.force, wheel=args.wheel)
    print(f"detector weights ready: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``shakelab`` command."""
    parser = argparse.ArgumentParser(prog="shakelab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the local AudioShake Jobs API server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8077)
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default: user data dir)")
    p.add_argument("--token", default=None, help="API token (default: generated once, stored in the data dir)")
    p.add_argument("--workers", type=int, default=2, help="jobs processed at once")
    p.add_argument("--allow-private-links", action="store_true",
                   help="let /upload/link and callbacks reach private and loopback addresses")
    p.add_argument("--max-upload-mb", type=float, default=2048, help="largest accepted upload (MiB)")
    p.add_argument("--link-ttl", type=float, default=3600, help="seconds a download link stays valid")
    p.add_argument("--webhook", default=None, metavar="URL",
                   help="Tasks API: POST the task to URL each time one of its targets finishes")
    p.add_argument("--idle-timeout", type=float, default=0, metavar="SECONDS",
                   help="stop after this long without requests or running jobs (default 0: never)")
    p.add_argument("--background", action="store_true",
                   help="run as the detached per-user server: log to DATA_DIR/server.log, no standard "
                        "streams, a free port when --port is taken (what `shakelab server start` runs)")
    p.add_argument("--test-hooks", action="store_true",
                   help="also serve the test hooks GET /_stats and POST /_faults (fault injection)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("server", help="the per-user local server shared by notebooks: start, status, stop, logs")
    ssub = p.add_subparsers(dest="server_command", required=True)
    for name, func, text in (("start", _server_start, "start it in the background (connect() does this too)"),
                             ("status", _server_status, "where it runs (exit status 3 when it does not)"),
                             ("stop", _server_stop, "stop it (unfinished jobs resume at the next start)"),
                             ("logs", _server_logs, "the end of its log")):
        s = ssub.add_parser(name, help=text)
        s.add_argument("--data-dir", type=Path, default=None,
                       help="its data dir (default: SHAKELAB_SERVER_DIR, else the user data dir)")
        s.set_defaults(func=func)
        if name == "start":
            s.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                           help="stop after this long idle (default: SHAKELAB_IDLE_TIMEOUT, else 1800; 0: never)")
        if name == "logs":
            s.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
            s.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")

    p = sub.add_parser("demo", help="run the main job offline: upload, detect, separate, download")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.set_defaults(func=_demo)

    p = sub.add_parser("detect", help="music detection of one file: its music segments, as a table")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_detect)

    p = sub.add_parser("usage", help="usage of the last three months")
    p.set_defaults(func=_usage)

    p = sub.add_parser("batch", help="run models over a folder of recordings, resumable")
    p.add_argument("source", help="folder, glob or file")
    p.add_argument("--models", required=True, help="comma-separated model names")
    p.add_argument("--format", default=None)
    p.add_argument("--out", type=Path, default=Path("out/batch"))
    p.add_argument("--concurrency", type=int, default=4)
    p.set_defaults(func=_batch)

    p = sub.add_parser("evaluate", help="precision/recall/F1 of detections against reference labels")
    p.add_argument("ref_dir", type=Path, help="reference labels (<name>.txt/.json), optional manifest.csv")
    p.add_argument("est_dir", type=Path, help="detections (<name>.json/.txt)")
    p.add_argument("--threshold", type=float, default=None,
                   help="count only estimate segments with at least this confidence (default: every returned "
                        "segment is music, as the service means it; give one for all-window estimates)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("models", help="manage the local detector's weights")
    msub = p.add_subparsers(dest="models_command", required=True)
    f = msub.add_parser("fetch", help="take the weights from the package registry into the user cache")
    f.add_argument("--force", action="store_true", help="download and convert again")
    f.add_argument("--wheel", type=Path, default=None,
                   help="use this inaSpeechSegmenter-0.6.8 wheel instead of `pip download`")
    f.set_defaults(func=_models_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``shakelab`` command; return its exit status (2 for a refused argument).

    Examples
    --------
    >>> main(["evaluate", "no-such-ref-dir", "no-such-est-dir"])  # the message goes to stderr
    2
    """
    args = build_parser().parse_args(argv)
    from shakelab.errors import ShakelabError

    try:
        return int(args.func(args) or 0)
    except (ShakelabError, ValueError, FileNotFoundError) as exc:
        print(f"shakelab {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
