"""The web app in a real headless Chromium (Debian's ``chromium``, driven by Playwright): a served app for
the end-to-end test, and the screenshots of docs/app (``python -m tests.app_browser STORE docs/app``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from infoflow.app.launcher import streamlit_command

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "install Debian's chromium: apt-get install -y chromium"
PLOT = ".js-plotly-plot"


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(store: Path, timeout: float = 90) -> Iterator[str]:
    """``infoflow app``'s Streamlit command on a free port; yields its URL once healthy."""
    port = free_port()
    command, env = streamlit_command(store, port, "127.0.0.1")
    env |= {"INFOFLOW_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{port}"
    # output to a file, not a pipe: a full pipe would block the server
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_healthy(url, process, log, timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_healthy(url: str, process: subprocess.Popen, log: IO[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"streamlit did not start on {url}: {log.read()[-2000:]}")
        time.sleep(0.3)


def open_page(page, name: str) -> None:
    """Click a page in the sidebar and wait for its title."""
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).first.wait_for(timeout=30_000)
    page.wait_for_timeout(300)


def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until the script has finished running (no 'Running...' status widget)."""
    page.wait_for_timeout(500)
    page.get_by_test_id("stStatusWidget").wait_for(state="detached", timeout=timeout)
    page.wait_for_timeout(700)


def run_explorer(page) -> None:
    open_page(page, "Explorer")
    page.get_by_role("button", name="Run explorer").click()
    page.get_by_text("Heatmap: knockout of last ← each token").wait_for(timeout=90_000)
    wait_idle(page)


def prompt_link(store: Path) -> dict[str, str]:
    """The query parameters of the Prompts page for the store's first heatmap run and its first prompt."""
    from infoflow.store import ResultsStore

    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs()
        run_id = str(runs.loc[runs["kind"] == "heatmap", "run_id"].iloc[0])
        prompt = int(results.frame(run_id)["prompt_id"].min())
    return {"run": run_id, "prompt": str(prompt)}


def screenshots(store: Path, folder: Path) -> list[Path]:
    """A PNG of every page (explorer, hidden attention and features after a live run) into ``folder``."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with serve_app(store) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        page = browser.new_page(viewport={"width": 1500, "height": 1900})
        page.goto(url)
        page.get_by_role("heading", name="Runs", exact=True).first.wait_for(timeout=60_000)
        wait_idle(page)
        shots = {  # page: (button pressed, what shows that the page is drawn)
            "Runs": (None, "Open in Prompts →"), "Prompts": (None, "Top-k predictions after a knockout"),
            "Compare info flow": (None, PLOT), "Heatmaps": (None, PLOT), "Recall methods": (None, "indirect effect"),
            "Explorer": ("Run explorer", PLOT),
            "Hidden attention": ("Compute", PLOT), "Mamba features": ("Run", "Effect of knocking out"),
            "Launch": ("Start run", "See it on the Runs"),
        }  # fmt: skip
        for name, (button, ready) in shots.items():
            open_page(page, name)
            wait_idle(page)
            if name == "Prompts":  # a prompt opened: its heatmap and the top-k after a knockout
                page.goto(f"{page.url.split('?')[0]}?{urllib.parse.urlencode(prompt_link(store))}")
            if button is not None:
                page.get_by_role("button", name=button, exact=True).click()
            drawn = page.locator(ready) if ready == PLOT else page.get_by_text(ready)
            drawn.first.wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            page.wait_for_timeout(2000)  # plotly draws its charts after the script has finished
            path = folder / f"{name.lower().replace(' ', '-')}.png"
            page.screenshot(path=str(path), full_page=True)
            written.append(path)
        browser.close()
    return written


if __name__ == "__main__":
    os.environ.setdefault("INFOFLOW_THREADS", "1")
    for written_path in screenshots(Path(sys.argv[1]), Path(sys.argv[2])):
        print(written_path)
