"""Every notebook in notebooks/ runs top to bottom, offline, without a token.

Each notebook is executed with nbclient in a fresh kernel whose working directory is
notebooks/ (as in ``make lab``) and whose environment has no ``AUDIOSHAKE_API_TOKEN``, so
``shakelab.connect()`` starts the embedded local server (a private one inside the kernel, in
the test's tmp_path: nothing outlives the test). The committed notebooks must carry
no outputs (small diffs): that is checked too. Execution happens on a copy in memory; the
files on disk are never rewritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def _kernel_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUDIOSHAKE_") and k not in ("MPLBACKEND", "JPY_SESSION_NAME")}
    env["SHAKELAB_LEDGER"] = str(tmp_path / "ledger.sqlite")
    env["SHAKELAB_LOCAL_SERVER"] = "private"             # a server inside the kernel, gone with it
    env["SHAKELAB_SERVER_DIR"] = str(tmp_path / "local-server")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    env["TMPDIR"] = str(tmp_path)                        # the notebooks' temporary folders
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def test_notebooks_exist():
    names = [p.name for p in PATHS]
    for expected in ("01-quickstart.ipynb", "02-music-detection.ipynb", "03-usage-trends.ipynb",
                     "04-batch-research.ipynb", "05-smart-mute.ipynb", "06-tasks-api.ipynb"):
        assert expected in names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
    assert book.cells[0].cell_type == "markdown", "a notebook opens with prose"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_offline(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    env = _kernel_env(tmp_path)
    # nbclient starts the kernel with this process's environment
    for key in [k for k in os.environ if k not in env]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert "embedded local server" in text, "connect() must have chosen the local server"
    assert "Traceback" not in text
    # the kernel has exited: it left nothing in its temporary directory (TMPDIR is tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir()
                  if not p.name.startswith(("ledger.sqlite", "local-server", "xdg-data")))
    assert left == [], f"the kernel left {left} in its temporary directory"
