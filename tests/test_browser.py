"""A real browser: JupyterLab + Chromium run every notebook and use its widgets as a user would.

The tests start one JupyterLab on a loopback ephemeral port with a random token, on copies
of ``notebooks/*.ipynb`` (so the committed notebooks are never saved over), and drive
Debian's Chromium (``/usr/bin/chromium``, ``make system-deps`` installs it) with Playwright:
open each notebook, run all cells, check that none raised, then work its widgets (the
JobSubmitter: a reused job, formats per kind of model, Upload then Clear, Download outputs;
the UsageDashboard's Refresh over a saved history; in the Tasks API notebook, that the widgets
say tasks and targets and that the cross-API warning names 3 runs at most). Any request that would leave loopback is
blocked.

The visual record: every run saves a screenshot of each cell output that holds a plot or a
widget, plus the widgets after each interaction, under ``out/screenshots/<notebook>/`` (the
folder is emptied first, so it always shows the last run). On failure a full-page screenshot
is saved there too.
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


SHOTS = OUT / "screenshots"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1:<free port>, notebook dir = a copy of notebooks/ beside data/."""
    tmp_path = tmp_path_factory.mktemp("lab")
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, nbdir)
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
    # the lab's kernels share one detached local server, as a user's do (its data in this lab's
    # data home, or where test_browser_shared points it); the teardown below stops it
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    # no "get Jupyter news?" prompt (and no news fetch)
    news = settings / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # every cell stays in the page (JupyterLab 4 otherwise detaches cells scrolled out of view)
    tracker = settings / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    jupyter_lab = Path(sys.executable).with_name("jupyter-lab")
    cmd = [str(jupyter_lab), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={nbdir}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")  # noqa: SIM115 - closed by the fixture teardown
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
        from shakelab.server import daemon

        # the detached server the kernels started outlives them by design: not the suite
        daemon.stop(env.get("SHAKELAB_SERVER_DIR") or tmp_path / "xdg-data" / "shakelab" / "server")


def _loopback_only(route):
    host = urlparse(route.request.url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} not found: run `make system-deps` (apt-get install chromium)"
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(lab["tmp"] / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.route("**/*", _loopback_only)
        try:
            yield context
        finally:
            context.close()


class Notebook:
    """One notebook open in JupyterLab: run it, screenshot its outputs, find its widgets."""

    def __init__(self, context, lab, path: Path):
        self.lab, self.name = lab, path.stem
        self.shots = SHOTS / path.stem
        shutil.rmtree(self.shots, ignore_errors=True)
        self.shots.mkdir(parents=True)
        self.page = context.new_page()
        # a workspace of its own, reset: JupyterLab would otherwise reopen the notebooks of the
        # previous test beside this one
        self.page.goto(f"{lab['base']}/lab/workspaces/{path.stem}/tree/{path.name}?reset&token={lab['token']}")
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=300_000)  # a loaded machine is slow
        self.wait_idle()

    # the notebook's panel, found by its path (not "the current widget")
    _PANEL = """(name) => {
        for (const w of window.jupyterapp.shell.widgets('main')) {
            if (w.context && w.context.path === name) return w;
        }
        return null;
    }"""

    def _eval(self, body, timeout=None):
        code = f"(name) => {{ const panel = ({self._PANEL})(name); {body} }}"
        if timeout is None:
            return self.page.evaluate(code, f"{self.name}.ipynb")
        return self.page.wait_for_function(code, arg=f"{self.name}.ipynb", timeout=timeout)

    def wait_idle(self, timeout=600_000):
        self._eval("""const k = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
                      return k && k.status === 'idle';""", timeout=timeout)

    def run_all(self):
        self._eval("""window.jupyterapp.shell.activateById(panel.id);
                      return window.jupyterapp.commands.execute('notebook:run-all-cells');""")
        # done when every code cell has run, or one raised (run-all stops there)
        self._eval("""const k = panel.sessionContext.session.kernel;
                      const cells = panel.content.widgets.filter(c => c.model.type === 'code');
                      const ran = cells.every(c => c.model.executionCount !== null);
                      const failed = panel.node.querySelector(
                          '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
                      return k.status === 'idle'
                          && (ran || (failed !== null && failed.innerText.includes('Error')));""",
                   timeout=900_000)
        errors = self.page.locator(".jp-OutputArea-output", has_text="Traceback")
        assert errors.count() == 0, errors.first.inner_text()[-3000:]

    def shoot_outputs(self):
        """A screenshot of every cell output holding a plot or a widget: ``NN-plot.png``, ``NN-widget.png``."""
        cells = self.page.locator(".jp-Notebook .jp-Cell")
        saved = []
        for i in range(cells.count()):
            area = cells.nth(i).locator(".jp-Cell-outputArea")
            if not area.count():
                continue
            kind = ("widget" if area.locator(".jupyter-widgets, .widget-vbox").count()
                    else "plot" if area.locator("img").count() else None)
            if kind is None:
                continue
            area.scroll_into_view_if_needed()
            self.page.wait_for_timeout(300)  # let images decode and widgets lay out
            path = self.shots / f"{i:02d}-{kind}.png"
            area.screenshot(path=str(path))
            saved.append(path)
        return saved

    def shoot(self, locator, name):
        locator.scroll_into_view_if_needed()
        self.page.wait_for_timeout(300)
        locator.screenshot(path=str(self.shots / f"{name}.png"))

    def fail_shot(self):
        try:
            self.page.screenshot(path=str(self.shots / f"failure-{time.strftime('%Y%m%dT%H%M%S')}.png"),
                                 full_page=True)
        except Exception as exc:  # the original failure matters more
            print(f"could not save a screenshot: {exc}", file=sys.stderr)
        print(self.lab["log"].read_text()[-3000:], file=sys.stderr)


@pytest.fixture
def notebook(browser, lab, request):
    book = Notebook(browser, lab, request.param)
    try:
        yield book
    finally:
        book.page.close()


def _rows(table):
    rows = table.locator("tbody tr")
    return [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]


def _quickstart(book):
    page = book.page
    submitter = page.locator(".shakelab-job-submitter")
    submitter.wait_for(state="visible", timeout=60_000)
    table = submitter.locator(".shakelab-table")
    messages = submitter.locator(".shakelab-messages")
    assert "No jobs yet" in table.inner_text()
    path_input = submitter.locator(".shakelab-path input")

    # 1. what the notebook already ran: reused from the ledger, nothing sent
    path_input.fill("../data/demo.flac")
    path_input.press("Tab")
    submitter.locator(".shakelab-submit").click()
    table.locator(".shakelab-status-reused").wait_for(timeout=120_000)
    (row,) = _rows(table)
    assert row[:5] == ["demo.flac", "music_detection", "json", "reused", "\u2014"], row
    assert "nothing sent" in row[7], row
    page.wait_for_function("""() => document.querySelector('.shakelab-messages').innerText.includes('Nothing sent')""",
                           timeout=60_000)
    assert "Submitted" not in messages.inner_text()
    book.shoot(submitter, "submitter-1-reused")

    # 2. a stem model with music_detection: each its own format, or one choice per kind
    submitter.locator(".shakelab-models select").select_option(["music_detection", "vocals"])
    fmt = submitter.locator(".shakelab-format select")
    page.wait_for_function("""() => document.querySelector('.shakelab-format select').innerText.includes('own')""",
                           timeout=30_000)
    options = [t.replace("\xa0", " ") for t in fmt.locator("option").all_inner_texts()]
    assert options == ["each model's own format (wav, json)", "choose per kind of model"], options
    assert not fmt.is_disabled()
    fmt.select_option(label="choose per kind of model")
    kinds = submitter.locator(".shakelab-family-formats select")
    kinds.first.wait_for(timeout=30_000)
    assert kinds.count() == 2
    kinds.nth(0).select_option("mp3")          # vocals (the models list's order)
    kinds.nth(1).select_option("txt")          # music_detection
    book.shoot(submitter, "submitter-2-per-kind")
    submitter.locator(".shakelab-submit").click()
    page.wait_for_function(
        """() => document.querySelectorAll('.shakelab-table .shakelab-status-completed').length >= 2""",
        timeout=600_000)
    rows = _rows(table)
    assert [r[:4] for r in rows[1:]] == [["demo.flac", "vocals", "mp3", "completed"],
                                         ["demo.flac", "music_detection", "txt", "completed"]], rows
    assert [r[6] for r in rows[1:]] == ["vocals.mp3", "music_detection.txt"], rows
    link = table.locator("tbody tr").nth(1).locator("td a").get_attribute("href")
    assert link.startswith("http://127.0.0.1:"), link   # the local server's signed link
    book.shoot(submitter, "submitter-3-completed")

    # 3. an upload, then a typed path: Clear drops the upload, the table stays
    with page.expect_file_chooser() as chooser:
        submitter.locator(".shakelab-upload").click()
    chooser.value.set_files(str(ROOT / "data" / "demo.flac"))
    submitter.locator(".shakelab-upload-label", has_text="demo.flac").wait_for(timeout=30_000)
    book.shoot(submitter, "submitter-4-uploaded")
    submitter.locator(".shakelab-submit").click()
    submitter.locator(".shakelab-error", has_text="press Clear").wait_for(timeout=30_000)
    submitter.locator(".shakelab-clear").click()
    page.wait_for_function(
        """() => !document.querySelector('.shakelab-upload-label').innerText.includes('demo.flac')""", timeout=30_000)
    assert submitter.locator(".shakelab-clear").is_disabled()
    assert len(_rows(table)) == 3
    book.shoot(submitter, "submitter-5-cleared")
    submitter.locator(".shakelab-submit").click()             # the typed path alone now
    page.wait_for_function("""() => document.querySelectorAll('.shakelab-table .shakelab-status-reused').length >= 3""",
                           timeout=120_000)
    assert [r[3] for r in _rows(table)] == ["reused", "completed", "completed", "reused", "reused"]
    assert submitter.locator(".shakelab-error").count() == 0

    # 4. download: one folder per recording, named after its path
    submitter.locator("button", has_text="Download outputs").click()
    page.wait_for_function("""() => document.querySelector('.shakelab-messages').innerText.includes('Saved')""",
                           timeout=120_000)
    saved = messages.inner_text()
    assert "Saved 3 file(s)" in saved and "data/demo/vocals.mp3" in saved, saved
    assert submitter.locator(".shakelab-error").count() == 0
    book.shoot(submitter, "submitter-6-downloaded")


def _usage_trends(book):
    page = book.page
    dashboards = page.locator(".shakelab-usage-dashboard")
    dashboards.nth(1).wait_for(state="visible", timeout=60_000)
    history = dashboards.nth(1)
    rows = history.locator(".shakelab-usage-table tbody tr")
    assert rows.count() == 36
    scroll = history.locator(".shakelab-usage-scroll")
    box = scroll.bounding_box()
    assert box["height"] < 400, box                  # 36 rows scroll inside the box
    history.locator("button", has_text="Refresh").click()
    page.wait_for_function(
        """() => document.querySelectorAll('.shakelab-usage-dashboard')[1].innerText.includes('merged them')""",
        timeout=60_000)
    text = history.inner_text()
    assert "into the 36-month history" in text and rows.count() >= 36, text
    assert "The local server counts only the runs it made itself" in text, text   # why the last months drop
    book.shoot(history, "dashboard-refreshed")


def _tasks_api(book):
    page = book.page
    # the submitter names its API, the usage chart and table count targets
    header = page.locator(".shakelab-job-submitter .shakelab-header")
    assert header.inner_text().startswith("Submit tasks \u2014 Tasks API, local server http://127.0.0.1:"), \
        header.inner_text()
    assert "No tasks yet" in page.locator(".shakelab-job-submitter .shakelab-table").inner_text()
    table = page.locator(".shakelab-usage-dashboard .shakelab-usage-table thead")
    assert table.inner_text().split() == ["month", "targets", "minutes"], table.inner_text()
    # the other API's runs of the same file, said in one short line: 3 ids at most, the rest counted
    warned = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
                          has_text="was already processed through the")
    assert warned.count() >= 1  # at least the legacy upload of the file the Tasks cells ran
    for i in range(warned.count()):
        for line in (t for t in warned.nth(i).inner_text().splitlines() if "already processed" in t):
            named = line.split(" ids " if " ids " in line else " id ", 1)[1].split(")", 1)[0]
            assert len(named.split(" and ")[0].split(", ")) <= 3 and "billed again" in line, line
        book.shoot(warned.nth(i).locator("xpath=ancestor::div[contains(@class, 'jp-Cell-outputArea')]"),
                   f"warning-{i}")


INTERACTIONS = {"01-quickstart": _quickstart, "03-usage-trends": _usage_trends, "06-tasks-api": _tasks_api}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS], indirect=True)
def test_notebook_in_real_browser(notebook):
    try:
        notebook.run_all()
        shots = notebook.shoot_outputs()
        assert shots, f"{notebook.name}: no plot or widget output to record"
        interact = INTERACTIONS.get(notebook.name)
        if interact is not None:
            interact(notebook)
        assert notebook.page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
    except BaseException:
        notebook.fail_shot()
        raise
