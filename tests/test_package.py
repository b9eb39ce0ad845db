"""The package surface: light import, lazy re-exports, submodules as attributes."""

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_is_light_and_names_resolve_lazily():
    out = _run(
        "import sys, shakelab\n"
        "heavy = [m for m in ('pandas', 'matplotlib', 'librosa', 'ipywidgets', 'fastapi') if m in sys.modules]\n"
        "print(heavy)\n"
        "print(shakelab.segments.merge.__module__, shakelab.Client.__module__, shakelab.plot_usage.__module__)\n"
    )
    assert out.splitlines() == ["[]", "shakelab.segments shakelab.client shakelab.plot"]


def test_unknown_attribute_is_an_attribute_error():
    import shakelab

    try:
        shakelab.no_such_thing
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
    assert "segments" in dir(shakelab) and "connect" in dir(shakelab)
