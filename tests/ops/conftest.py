from __future__ import annotations

import shutil

import pytest

from tests.ops.stack import PdsProcesses
from tests.servers._common import require


@pytest.fixture
def processes(tmp_path, prefect_server):
    """The API and (once a test starts them) movers as processes on a SQLite database."""
    stack = PdsProcesses(tmp_path, prefect_server.api_url)
    stack.start_api()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Selenium (Debian's chromium and chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or require("chromium", "chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    service = Service(executable_path=require("chromedriver", "chromium-driver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
