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
        shakelab.no_such_thing  # noqa: B018 - the attribute access is the test
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
    assert "segments" in dir(shakelab) and "connect" in dir(shakelab)


def test_python_dash_m_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "shakelab", "--help"], check=True, capture_output=True,
                         text=True).stdout
    assert "demo" in out and "serve" in out


def test_version_is_written_once():
    import shakelab
    from importlib.metadata import version

    assert version("shakelab") == shakelab.__version__


def test_built_wheel_runs_the_demo_outside_the_checkout(tmp_path):
    """The wheel is the product: build it, install it in a fresh venv (dependencies borrowed from
    this one, shakelab itself only from the wheel), and run the demo from an unrelated folder."""
    import os
    import sysconfig
    import zipfile
    from pathlib import Path

    import shutil

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"                       # a copy: the build writes egg-info and build/ beside it
    shutil.copytree(root / "shakelab", src / "shakelab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, env=clean)
    (wheel,) = (tmp_path / "dist").glob("shakelab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"shakelab/py.typed", "shakelab/data/demo.flac", "shakelab/__main__.py"} <= set(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", purelib],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, env=clean)
    # then the dependencies, not shakelab: a plain path line does not run this venv's editable finder
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOSHAKE_") and k != "PYTHONPATH"}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), XDG_CACHE_HOME=str(tmp_path / "cache"), TMPDIR=str(tmp_path))
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import shakelab; print(shakelab.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(venv)), where
    help_text = subprocess.run([str(venv / "bin" / "python"), "-m", "shakelab", "--help"], cwd=elsewhere, env=env,
                               check=True, capture_output=True, text=True).stdout
    assert "demo" in help_text
    demo = subprocess.run([str(venv / "bin" / "shakelab"), "demo"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "start_time" in demo.stdout and (elsewhere / "out" / "demo").is_dir()
