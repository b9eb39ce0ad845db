"""A real browser, two notebooks in one JupyterLab, one shared local server.

``notebooks/03-usage-trends.ipynb`` and a small notebook that submits one job run in two
kernels of the same JupyterLab (the ``lab`` fixture of ``test_browser.py``, with
``SHAKELAB_LOCAL_SERVER=shared`` and a data dir in the test's tmp_path). The first kernel
starts the detached per-user server, the second finds it; the job submitted in the second
notebook appears in the first notebook's ``UsageDashboard`` after *Refresh*. The server,
which outlives the kernels by design, is stopped by the test, and ``ps`` shows none left.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

import nbformat
import pytest

from test_browser import CHROMIUM, CHROMIUM_ARGS, OUT, ROOT, _loopback_only, lab  # noqa: F401 (fixture)
from test_server_daemon import _gone, _serve_processes

SUBMIT_CELLS = [
    "import shakelab\n\nclient = shakelab.connect()",
    '(job,) = client.submit("../data/demo.flac", ["music_detection"], format="txt", progress=False)\n'
    'print("job", job.id, job.status)',
]


@pytest.fixture
def shared_lab(request, monkeypatch, tmp_path):
    """The ``lab`` fixture, its kernels sharing one detached server that the test stops at the end."""
    from shakelab.server import daemon

    data_dir = (tmp_path / "shared-server").resolve()
    monkeypatch.setenv("SHAKELAB_LOCAL_SERVER", "shared")
    monkeypatch.setenv("SHAKELAB_SERVER_DIR", str(data_dir))
    try:
        lab_info = request.getfixturevalue("lab")  # started with the environment above
        nbdir = lab_info["tmp"] / "notebooks"
        shutil.copy(ROOT / "notebooks" / "03-usage-trends.ipynb", nbdir)
        book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in SUBMIT_CELLS], metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
        nbformat.write(book, nbdir / "submit.ipynb")
        yield {**lab_info, "data_dir": data_dir}
    finally:
        daemon.stop(data_dir)
        assert _gone(data_dir), f"server processes left: {_serve_processes(data_dir)}"


_KERNEL_IDLE = """(path) => {
    for (const w of window.jupyterapp.shell.widgets('main')) {
        if (w.context && w.context.path === path) {
            const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return !!k && k.status === 'idle';
        }
    }
    return false;
}"""


def _activate(page, path: str) -> None:
    """Open ``path`` in JupyterLab, or bring its tab to the front."""
    page.evaluate("async (path) => { await window.jupyterapp.commands.execute('docmanager:open', {path}); }", path)


def _open_and_run(page, path: str) -> None:
    """Open ``path`` as the current tab of JupyterLab, wait for its kernel, run every cell."""
    _activate(page, path)
    page.wait_for_function(_KERNEL_IDLE, arg=path, timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


_TABLE_JOBS_ABOVE = """(n) => {
    const d = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .shakelab-usage-dashboard');
    const rows = d ? [...d.querySelectorAll('.shakelab-usage-table tbody tr')] : [];
    return rows.reduce((sum, r) => sum + parseInt(r.querySelectorAll('td')[1].innerText, 10), 0) > n;
}"""


def _jobs_in_table(dashboard) -> int:
    rows = dashboard.locator(".shakelab-usage-table tbody tr")
    return sum(int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(rows.count()))


def test_job_from_one_notebook_shows_in_the_other_dashboard(shared_lab, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} not found: run `make system-deps` (apt-get install chromium)"
    jlab = shared_lab
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.route("**/*", _loopback_only)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            page.goto(f"{jlab['base']}/lab?token={jlab['token']}")
            page.wait_for_function("() => window.jupyterapp && ['docmanager:open', 'notebook:run-all-cells']"
                                   ".every(c => window.jupyterapp.commands.hasCommand(c))", timeout=120_000)

            # notebook 03 starts the shared server and shows the dashboards
            _open_and_run(page, "03-usage-trends.ipynb")
            dashboard = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .shakelab-usage-dashboard").first
            dashboard.locator(".shakelab-usage-table").wait_for(timeout=600_000)
            before = _jobs_in_table(dashboard)
            assert before >= 1  # the notebook's own detection

            # a second notebook, another kernel: it finds the running server and submits a job
            _open_and_run(page, "submit.ipynb")
            panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']",
                          has_text=re.compile(r"^job ")).wait_for(timeout=300_000)
            outputs = panel.locator(".jp-OutputArea-output").all_inner_texts()
            assert any("embedded local server" in o and "already running" in o for o in outputs), outputs
            assert any(o.strip().startswith("job ") and o.strip().endswith(" completed") for o in outputs), outputs

            # back in notebook 03: Refresh shows it
            _activate(page, "03-usage-trends.ipynb")
            dashboard = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .shakelab-usage-dashboard").first
            dashboard.locator("button", has_text="Refresh").click()
            page.wait_for_function(_TABLE_JOBS_ABOVE, arg=before, timeout=60_000)  # the refreshed table
            assert _jobs_in_table(dashboard) == before + 1
            assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
            assert len(_serve_processes(jlab["data_dir"])) == 1  # one server for both kernels
        except BaseException:
            OUT.mkdir(exist_ok=True)
            shot = OUT / f"test_browser_shared-{time.strftime('%Y%m%dT%H%M%S')}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot saved to {shot}", file=sys.stderr)
            except Exception as exc:  # the original failure matters more
                print(f"could not save a screenshot: {exc}", file=sys.stderr)
            print(jlab["log"].read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            context.close()
