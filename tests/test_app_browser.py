"""End to end in a real headless Chromium: open the app, run the explorer on a built-in model, see the heatmap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import app_browser
from tests.app_browser import INSTALL_HINT, prompt_link, run_explorer, serve_app, wait_idle
from tests.app_fixtures import build_store


def require_chromium() -> str:
    """Chromium's path; without one: fail under CI (``$CI`` set), else skip, saying how to install it."""
    path = app_browser.chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Chromium for the end-to-end test of the web app: {INSTALL_HINT}")
        pytest.skip(f"no Chromium for the end-to-end test of the web app; {INSTALL_HINT}")
    return path


@pytest.fixture
def chromium() -> str:
    return require_chromium()


def test_missing_chromium_fails_under_ci_and_skips_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_browser, "chromium_path", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        require_chromium()


def test_explorer_heatmap_in_chromium(chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with serve_app(tmp_path / "results.duckdb") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("heading", name="Runs", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("No results store at").wait_for(timeout=30_000)  # a clear message, not a traceback
            run_explorer(page)
            heatmap = page.locator(".js-plotly-plot").first
            heatmap.wait_for(timeout=30_000)
            assert page.locator(".js-plotly-plot .heatmaplayer").count() >= 1
            page.get_by_text("subject 'Thargol Tesbrammon Silwen' (found)").wait_for(timeout=10_000)
            assert page.get_by_test_id("stException").count() == 0
            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        finally:
            browser.close()


def test_links_to_a_run_and_a_prompt_and_back_in_chromium(chromium: str, tmp_path: Path) -> None:
    """A shared URL opens a prompt of a run; a link to another page changes the URL; Back returns."""
    from playwright.sync_api import sync_playwright

    store = tmp_path / "results.duckdb"
    build_store(store, n_prompts=2)
    link = prompt_link(store)
    with serve_app(store) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{url}/?run={link['run']}")
            page.get_by_role("heading", name="Runs", exact=True).first.wait_for(timeout=60_000)
            wait_idle(page)
            page.get_by_text("Open in Prompts →").click()
            page.get_by_role("heading", name="Prompts", exact=True).first.wait_for(timeout=60_000)
            wait_idle(page)
            assert "/prompts" in page.url and f"run={link['run']}" in page.url
            page.go_back()
            page.get_by_role("heading", name="Runs", exact=True).first.wait_for(timeout=60_000)
            assert "/prompts" not in page.url and f"run={link['run']}" in page.url
            page.goto(f"{url}/prompts?run={link['run']}&prompt={link['prompt']}")  # a shared link
            page.get_by_text("Top-k predictions after a knockout").wait_for(timeout=90_000)
            page.get_by_text(f"Prompt {link['prompt']}: 'Thargol").wait_for(timeout=10_000)
            assert page.get_by_test_id("stException").count() == 0
        finally:
            browser.close()
