"""A real browser: JupyterLab + Chromium run the quickstart and submit a job from the widget.

The test starts JupyterLab on a loopback ephemeral port with a random token, on a copy of
``notebooks/01-quickstart.ipynb`` (so the committed notebook is never saved over), and
drives Debian's Chromium (``/usr/bin/chromium``, ``make system-deps`` installs it) with
Playwright: open the notebook, run all cells, type a data/ file into the JobSubmitter's
path field, press Submit and wait for the status table to read ``completed``. Any request
that would leave loopback is blocked. On failure a screenshot is saved under ``out/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "out"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1:<free port>, notebook dir = a copy of notebooks/ beside data/."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    shutil.copy(ROOT / "notebooks" / "01-quickstart.ipynb", nbdir)
    (tmp_path / "data").symlink_to(ROOT / "data")          # ../data/demo.flac, as in the repo
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOSHAKE_") and k != "MPLBACKEND"}
    env.update({
        "SHAKELAB_LEDGER": str(tmp_path / "ledger.sqlite"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),         # embedded server data, jupyter data
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "TMPDIR": str(tmp_path),
    })
    # no "get Jupyter news?" prompt (and no news fetch)
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    jupyter_lab = Path(sys.executable).with_name("jupyter-lab")
    cmd = [str(jupyter_lab), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={nbdir}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, cwd=nbdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}: "
                                   f"{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not answer within 120 s: "
                                   f"{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "log": tmp_path / "jupyter.log", "tmp": tmp_path}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _loopback_only(route):
    host = urlparse(route.request.url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def test_quickstart_widget_submits_job_in_real_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} not found: run `make system-deps` (apt-get install chromium)"
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.route("**/*", _loopback_only)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            page.goto(f"{lab['base']}/lab/tree/01-quickstart.ipynb?token={lab['token']}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            # the kernel is up once JupyterLab reports it idle
            page.wait_for_function(
                """() => {
                    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                    return k && k.status === 'idle';
                }""", timeout=120_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # the last cell shows the JobSubmitter once every cell above has run
            submitter = page.locator(".shakelab-job-submitter")
            submitter.wait_for(state="visible", timeout=600_000)
            assert "No jobs yet" in submitter.locator(".shakelab-table").inner_text()
            path_input = submitter.locator(".shakelab-path input")
            path_input.fill("../data/demo.flac")
            path_input.press("Tab")
            # txt: a job the notebook's own cells did not run (no reuse from the ledger)
            submitter.locator(".shakelab-format select").select_option("txt")
            submitter.locator(".shakelab-submit").click()

            table = submitter.locator(".shakelab-table")
            table.locator(".shakelab-status-table").wait_for(timeout=60_000)
            table.locator(".shakelab-status-completed").wait_for(timeout=300_000)
            rows = table.locator("tbody tr")
            assert rows.count() == 1
            cells = rows.nth(0).locator("td").all_inner_texts()
            assert cells[:4] == ["demo.flac", "music_detection", "txt", "completed"], cells
            assert cells[6] == "music_detection.txt", cells
            link = rows.nth(0).locator("td a").get_attribute("href")
            assert link.startswith("http://127.0.0.1:"), link   # the local server's signed link
            assert submitter.locator(".shakelab-error").count() == 0
            # no cell of the run raised
            assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
        except BaseException:
            OUT.mkdir(exist_ok=True)
            shot = OUT / f"test_browser-{time.strftime('%Y%m%dT%H%M%S')}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot saved to {shot}", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - the original failure matters more
                print(f"could not save a screenshot: {exc}", file=sys.stderr)
            print(lab["log"].read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            context.close()
