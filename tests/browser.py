"""JupyterLab in headless Chromium, for the browser tests: start a server, open a notebook, run it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

SETTINGS_DIR = Path(__file__).resolve().parents[1] / "jupyter" / "user-settings"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium reaches out to Google's hosts at start unless told not to; this machine's closed
# network refuses those connections, so they are turned off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


TOKEN = "labkit-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(root: Path, token: str = TOKEN) -> Iterator[str]:
    """Run JupyterLab on a free local port over `root`; yield its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}"]
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(SETTINGS_DIR)}
    log = open(root / "jupyter.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (root / "jupyter.log").read_text()) from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_all_cells(page, tries: int = 4) -> None:
    """Run every cell of the open notebook through JupyterLab's Run menu.

    On a loaded machine the kernel can report idle before it takes requests, so the click is
    repeated until a cell shows it started ([*] or an execution count).
    """
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    started = ("() => [...document.querySelectorAll('.jp-InputArea-prompt')]"
               ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))")
    for attempt in range(tries):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function(started, timeout=30_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def open_notebook_and_run(browser, lab_url: str, notebook: str):
    """A new page with `notebook` open and all its cells run; the caller closes the page.

    Each notebook gets a workspace of its own, reset, so notebooks other tests opened are not
    restored beside it; and JupyterLab's "Select Kernel" dialog, which a loaded machine can show
    before the kernel list arrives, is answered with the proposed kernel (the notebook names it).
    """
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    kernel_dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    page.add_locator_handler(kernel_dialog,
                             lambda dialog: dialog.locator("button", has_text="Select").click())
    workspace = Path(notebook).stem.replace("_", "-")
    page.goto(f"{lab_url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    with suppress(PlaywrightTimeout):  # the dialog can come before the handler is watching
        kernel_dialog.locator("button", has_text="Select").click(timeout=10_000)
    run_all_cells(page)
    return page


def open_panel(browser, lab_url: str, notebook: str, last_output: str, title: str,
               timeout: int = 120_000):
    """Run `notebook` and return (page, panel): the panel is the widget box under the `title`
    heading, looked up once `last_output` (the exercise check's text in the last cell) has shown,
    when the kernel is free to answer the panel's clicks."""
    page = open_notebook_and_run(browser, lab_url, notebook)
    page.get_by_text(last_output).wait_for(state="attached", timeout=300_000)
    panel = page.locator(".widget-vbox", has=page.locator("h3", has_text=title)).last
    panel.wait_for(state="visible", timeout=timeout)
    return page, panel
