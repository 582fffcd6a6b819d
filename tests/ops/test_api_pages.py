"""The pages a person opens first, against a real API process: `/` links to everything, and `/schema`
renders the API's operations in a browser that cannot reach the internet."""

from __future__ import annotations

import os
import shutil
import sys

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.servers._common import free_port, require, spawn, terminate, wait_until


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "PREFECT_"))} | {
        "PDS_DATA_DIR": str(root / "data"),
        "PDS_API_PORT": str(port),
        "PDS_PREFECT_UI_URL": "http://127.0.0.1:4999",
    }
    api = spawn([sys.executable, "-m", "api"], root / "api.log", env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, 120, "the API", log=root / "api.log", process=api)
    yield url
    terminate(api)


@pytest.fixture(scope="module")
def offline_browser():
    """Headless Chromium that resolves no name but 127.0.0.1: a CDN is out of reach."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or require("chromium", "chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=require("chromedriver", "chromium")))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_landing_page_links_monitor_api_docs_stac_and_prefect_without_credentials(api_url):
    page = httpx.get(f"{api_url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for link in ('href="/monitor"', 'href="/schema"', 'href="/stac/"', 'href="http://127.0.0.1:4999"'):
        assert link in page.text


def test_the_api_page_loads_nothing_from_elsewhere(api_url):
    page = httpx.get(f"{api_url}/schema").text
    assert "cdn." not in page and "unpkg" not in page and "fonts.googleapis" not in page
    assert httpx.get(f"{api_url}/schema-assets/swagger-ui-bundle.js").status_code == 200


def test_the_api_page_renders_its_operations_with_no_network(api_url, offline_browser):
    offline_browser.get(f"{api_url}/schema")
    WebDriverWait(offline_browser, 60).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), "no operation rendered"
    )
    paths = {
        e.get_attribute("data-path") for e in offline_browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert {"/health", "/destinations", "/transfers/{transfer_id}"} <= paths, sorted(paths)[:20]
    sources = offline_browser.execute_script(
        "return [...document.scripts].map(s => s.src).concat([...document.styleSheets].map(s => s.href))"
    )
    assert all(not s or s.startswith(api_url) for s in sources), sources
